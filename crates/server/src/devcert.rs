//! `rxgate cert dev`: a local development CA and a server certificate it signed, so TLS with
//! sslmode=verify-full can be tried and tested without a real PKI. Not for production.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rxgate_common::{Error, Result};
use time::{Duration, OffsetDateTime};

/// The files `rxgate cert dev` writes.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// CA certificate: give it to clients as `sslrootcert`.
    pub ca_cert: PathBuf,
    /// CA private key (0600): it can sign certificates every client trusting the CA accepts.
    pub ca_key: PathBuf,
    /// Server certificate: `[pgwire.tls] cert`.
    pub server_cert: PathBuf,
    /// Server private key (0600): `[pgwire.tls] key`.
    pub server_key: PathBuf,
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::internal(format!("certificate generation failed: {e}"))
}

/// Creates `ca.crt`, `ca.key`, `server.crt`, `server.key` in `out`. Existing files are kept
/// unless `force`: replacing a CA breaks every client that trusts the old one.
pub fn create(out: &Path, hosts: &[String], days: u32, force: bool) -> Result<DevCerts> {
    if hosts.is_empty() {
        return Err(Error::invalid("at least one --host is needed"));
    }
    if days == 0 {
        return Err(Error::invalid("--days must be at least 1"));
    }
    let files = DevCerts {
        ca_cert: out.join("ca.crt"),
        ca_key: out.join("ca.key"),
        server_cert: out.join("server.crt"),
        server_key: out.join("server.key"),
    };
    if !force {
        for p in [&files.ca_cert, &files.ca_key, &files.server_cert, &files.server_key] {
            if p.exists() {
                return Err(Error::invalid(format!(
                    "{} exists (use --force to replace the CA and certificate)",
                    p.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::invalid(format!("cannot create {}: {e}", out.display())))?;

    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);

    let ca_key = KeyPair::generate().map_err(cert_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    ca.distinguished_name.push(DnType::OrganizationName, "rxgate development");
    ca.distinguished_name.push(DnType::CommonName, "rxgate development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(i64::from(days) * 10);
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_error)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(cert_error)?;
    let mut server = CertificateParams::new(hosts.to_vec()).map_err(|e| Error::invalid(format!("bad --host: {e}")))?;
    server.distinguished_name.push(DnType::OrganizationName, "rxgate development");
    server.distinguished_name.push(DnType::CommonName, hosts[0].clone());
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = now + Duration::days(i64::from(days));
    let server_cert = server.signed_by(&server_key, &issuer).map_err(cert_error)?;

    let write_public = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| Error::invalid(format!("cannot write {}: {e}", p.display())))
    };
    rxgate_auth::write_private_atomically(&files.ca_key, issuer.key().serialize_pem().as_bytes())?;
    write_public(&files.ca_cert, &ca_cert.pem())?;
    rxgate_auth::write_private_atomically(&files.server_key, server_key.serialize_pem().as_bytes())?;
    write_public(&files.server_cert, &server_cert.pem())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_ca_and_a_server_certificate_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = create(dir.path(), &hosts, 30, false).unwrap();
        for key in [&files.ca_key, &files.server_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
            assert!(std::fs::read_to_string(key).unwrap().contains("PRIVATE KEY"));
        }
        for cert in [&files.ca_cert, &files.server_cert] {
            assert!(std::fs::read_to_string(cert).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        }
        // A second run refuses to replace the CA, unless forced.
        let again = create(dir.path(), &hosts, 30, false).unwrap_err();
        assert!(again.message.contains("exists"), "{}", again.message);
        create(dir.path(), &hosts, 30, true).unwrap();
    }
}

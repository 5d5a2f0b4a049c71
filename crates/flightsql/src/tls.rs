//! TLS for the Flight SQL listener: the same PEM certificate and key as the PostgreSQL
//! listener, and optionally a CA whose client certificates the server asks for.
//!
//! **Invariant:** TLS fails closed. Files that cannot be read, parsed or paired stop the bind
//! with an error; with TLS configured the port never speaks plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rxgate_common::{Error, Result};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Where the TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightTlsConfig {
    /// PEM file: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// PEM file of CA certificates: clients are asked for a certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients that present no certificate (otherwise a certificate
    /// is optional, and verified when presented).
    pub client_cert_required: bool,
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("TLS setup failed: {what}"))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(format!("cannot read {what} {}: {e}", path.display())))
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(format!("{}: not a PEM certificate file ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

/// Loads and checks the files, and builds tonic's TLS configuration from them.
pub(crate) fn load(config: &FlightTlsConfig) -> Result<ServerTlsConfig> {
    let cert_pem = read_pem(&config.cert, "certificate")?;
    let key_pem = read_pem(&config.key, "private key")?;
    let ca_pem = config.client_ca.as_ref().map(|p| read_pem(p, "client CA").map(|pem| (p, pem))).transpose()?;
    check(&cert_pem, &key_pem, ca_pem.as_ref().map(|(p, pem)| (p.as_path(), pem.as_slice())), config)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));
    if let Some((_, pem)) = ca_pem {
        tls = tls.client_ca_root(Certificate::from_pem(pem)).client_auth_optional(!config.client_cert_required);
    }
    Ok(tls)
}

/// Builds a rustls configuration from the material (what tonic will do), so every problem
/// is found now, with a message naming the file.
fn check(cert_pem: &[u8], key_pem: &[u8], ca: Option<(&Path, &[u8])>, config: &FlightTlsConfig) -> Result<()> {
    let chain = certificates(cert_pem, &config.cert)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| tls_error(format!("{}: no usable private key ({e})", config.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some((path, pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, path)? {
                roots.add(cert).map_err(|e| tls_error(format!("{}: unusable CA certificate ({e})", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        tls_error(format!(
            "certificate {} and key {} do not work together: {e}",
            config.cert.display(),
            config.key.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn good_and_bad_material() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let other = KeyPair::generate().unwrap();
        let c = write(dir.path(), "c.pem", &cert.pem());
        let k = write(dir.path(), "k.pem", &key.serialize_pem());
        let o = write(dir.path(), "o.pem", &other.serialize_pem());
        let cfg = |cert: &Path, key: &Path, ca: Option<&Path>| FlightTlsConfig {
            cert: cert.into(),
            key: key.into(),
            client_ca: ca.map(Into::into),
            client_cert_required: false,
        };
        load(&cfg(&c, &k, None)).unwrap();
        load(&cfg(&c, &k, Some(&c))).unwrap();
        let msg = |r: Result<ServerTlsConfig>| r.expect_err("must fail").message;
        assert!(msg(load(&cfg(&c, &o, None))).contains("do not work together"));
        assert!(msg(load(&cfg(&k, &k, None))).contains("TLS setup failed"));
        assert!(msg(load(&cfg(&c, &k, Some(&k)))).contains("no certificate"));
        assert!(msg(load(&cfg(Path::new("/nonexistent/c.pem"), &k, None))).contains("cannot read certificate"));
    }
}

//! TLS for the PostgreSQL listener (rustls with the aws-lc-rs provider).
//!
//! **Invariant:** TLS fails closed. A configured certificate or key that cannot be read,
//! parsed or paired is an error at bind time, so the server never starts without the TLS it
//! was asked for, and never falls back to plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use rxgate_common::{Error, Result};
use tokio_rustls::TlsAcceptor;
use x509_certificate::{DigestAlgorithm, SignatureAlgorithm, X509Certificate};

/// Where the server certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// A ready TLS setup.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel-binding data for SCRAM-SHA-256-PLUS, when the
    /// certificate's signature algorithm defines it.
    pub(crate) channel_binding: Option<Vec<u8>>,
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("TLS setup failed: {what}"))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(format!("cannot read {what} {}: {e}", path.display())))
}

/// Loads the certificate chain and key and builds the acceptor.
pub(crate) fn load(config: &TlsConfig) -> Result<Tls> {
    let cert_pem = read_pem(&config.cert, "certificate")?;
    let key_pem = read_pem(&config.key, "private key")?;
    build(&cert_pem, &key_pem, &config.cert, &config.key)
}

fn build(cert_pem: &[u8], key_pem: &[u8], cert_path: &Path, key_path: &Path) -> Result<Tls> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(format!("{}: not a PEM certificate file ({e})", cert_path.display())))?;
    if chain.is_empty() {
        return Err(tls_error(format!("{}: no certificate in the file", cert_path.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| tls_error(format!("{}: no usable private key ({e})", key_path.display())))?;
    let channel_binding = end_point_binding(&chain[0]);
    if channel_binding.is_none() {
        tracing::warn!(
            cert = %cert_path.display(),
            "the certificate's signature algorithm defines no tls-server-end-point hash: SCRAM-SHA-256-PLUS is not offered"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            tls_error(format!(
                "certificate {} and key {} do not work together: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    // PostgreSQL 17 direct TLS (sslnegotiation=direct) requires this ALPN protocol.
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(server)), channel_binding })
}

/// RFC 5929 `tls-server-end-point`: the hash of the DER certificate, with the hash function of
/// its signature algorithm (SHA-256 for MD5 and SHA-1). `None` when there is no such hash
/// (Ed25519, RSA-PSS, unknown algorithms), as PostgreSQL does.
fn end_point_binding(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let parsed = X509Certificate::from_der(cert.as_ref()).ok()?;
    let algorithm = match parsed.signature_algorithm()? {
        SignatureAlgorithm::RsaSha1 | SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => {
            &digest::SHA256
        }
        SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => &digest::SHA384,
        SignatureAlgorithm::RsaSha512 => &digest::SHA512,
        SignatureAlgorithm::NoSignature(DigestAlgorithm::Sha256) => &digest::SHA256,
        _ => return None,
    };
    Some(digest::digest(algorithm, cert.as_ref()).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn self_signed() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn good_pair_loads_with_channel_binding() {
        let (cert, key) = self_signed();
        let tls = build(cert.as_bytes(), key.as_bytes(), Path::new("c"), Path::new("k")).unwrap();
        // rcgen signs with ECDSA P-256 / SHA-256: the binding is a SHA-256 digest of the DER.
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(tls.channel_binding.unwrap(), digest::digest(&digest::SHA256, der.as_ref()).as_ref());
    }

    #[test]
    fn bad_setups_fail_with_a_clear_error() {
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let msg = |r: Result<Tls>| r.err().expect("must fail").message;
        assert!(msg(build(cert.as_bytes(), other_key.as_bytes(), Path::new("c"), Path::new("k")))
            .contains("do not work together"));
        assert!(msg(build(b"", key.as_bytes(), Path::new("c"), Path::new("k"))).contains("no certificate"));
        assert!(msg(build(cert.as_bytes(), b"", Path::new("c"), Path::new("k"))).contains("no usable private key"));
        assert!(
            msg(build(key.as_bytes(), cert.as_bytes(), Path::new("c"), Path::new("k"))).contains("TLS setup failed")
        );
        let missing = TlsConfig { cert: "/nonexistent/server.crt".into(), key: "/nonexistent/server.key".into() };
        let m = msg(load(&missing));
        assert!(m.contains("cannot read certificate /nonexistent/server.crt"), "{m}");
    }
}

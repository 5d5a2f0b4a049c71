//! HTTPS for the operations listener: the `[pgwire.tls]` certificate and key (rustls with
//! the aws-lc-rs provider, ALPN `http/1.1`), and an accept loop for axum that hands over
//! connections once their TLS handshake is done.
//!
//! **Invariant:** TLS fails closed, as on the other listeners: a certificate or key that
//! cannot be read, parsed or paired stops the server at bind time; a listener configured
//! with TLS never answers in plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use rxgate_common::{Error, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    /// The server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("[http] TLS setup failed: {what}"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(format!("cannot read {what} {}: {e}", path.display())))
}

/// Loads the certificate and key into an acceptor.
pub(crate) fn acceptor(tls: &HttpTls) -> Result<TlsAcceptor> {
    let (cert_pem, key_pem) = (read(&tls.cert, "certificate")?, read(&tls.key, "private key")?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(format!("{}: not a PEM certificate file ({e})", tls.cert.display())))?;
    if chain.is_empty() {
        return Err(tls_error(format!("{}: no certificate in the file", tls.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_error(format!("{}: no usable private key ({e})", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            tls_error(format!(
                "certificate {} and key {} do not work together: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener for `axum::serve`: a task accepts TCP connections and runs each handshake
/// on its own task (a slow client delays nobody); finished ones come out of `accept`.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "http TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, addr, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

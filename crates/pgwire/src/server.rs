//! The PostgreSQL listener: accepts connections and runs each on its own task, so a failing
//! or panicking connection never takes the server down. TLS and authentication are set up at
//! bind time; a TLS setup that fails stops the bind (fail closed).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use rxgate_auth::UserDirectory;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::auth::{AuthConfig, Gatekeeper, Startup};
use crate::handler::{Connection, Handlers};
use crate::tls::{self, TlsConfig};

/// Time a client has to finish TLS negotiation, startup and authentication.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The connection's write buffer is flushed to the socket once it holds this much: large
/// results go out in large writes (tokio-util's default is 8 KiB).
const WRITE_BUFFER: usize = 256 * 1024;

/// Connections beyond `max_connections` that may be in the middle of being told so (53300);
/// further ones are closed without a word.
const MAX_REFUSING: u32 = 32;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Address to listen on (`127.0.0.1:15432` by default).
    pub listen: String,
    /// Server certificate and key; `None` serves plaintext only.
    pub tls: Option<TlsConfig>,
    /// Authentication method, TLS requirement and connection limits.
    pub auth: AuthConfig,
}

/// A bound PostgreSQL-wire server.
pub struct PgServer {
    engine: Engine,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gatekeeper>,
}

impl PgServer {
    /// Binds the listener (port 0 picks a free port; see [`PgServer::local_addr`]). Fails when
    /// the TLS certificate or key cannot be used, or when TLS is required but not configured.
    pub async fn bind(engine: Engine, config: &PgServerConfig, users: Arc<UserDirectory>) -> Result<Self> {
        let tls = match &config.tls {
            Some(t) => Some(tls::load(t)?),
            None if config.auth.tls_required => {
                return Err(Error::invalid(
                    "TLS setup failed: TLS is required but no certificate and key are configured",
                ));
            }
            None => None,
        };
        let (acceptor, binding) = match tls {
            Some(t) => (Some(t.acceptor), t.channel_binding),
            None => (None, None),
        };
        let gate = Arc::new(Gatekeeper::new(users, config.auth.clone(), binding, engine.audit().clone()));
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
        Ok(Self { engine, listener, tls: acceptor, gate })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Whether clients can negotiate TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves; open connections finish on their own tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let refusing = Arc::new(AtomicU32::new(0));
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let slot = self.gate.limits().try_global();
                    let refusal = match slot {
                        Some(_) => None,
                        None => {
                            if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
                                refusing.fetch_sub(1, Ordering::AcqRel);
                                tracing::warn!(%peer, "connection dropped: too many connections");
                                continue;
                            }
                            Some(RefusalGuard(refusing.clone()))
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let startup = Startup::new(self.gate.clone(), slot.is_some());
                    let conn = Connection::new(self.engine.clone(), peer);
                    let handlers = Arc::new(Handlers::new(conn, startup, self.gate.cancels().clone()));
                    let tls = self.tls.clone();
                    let open = self.gate.limits().open();
                    tokio::spawn(async move {
                        // The slots live as long as the connection's task.
                        let _slot = slot;
                        let _refusal = refusal;
                        tracing::debug!(%peer, open, "connection opened");
                        if let Err(e) = serve_connection(socket, tls, handlers).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
    }

    /// The authentication settings in force.
    pub fn auth_config(&self) -> &AuthConfig {
        self.gate.config()
    }
}

/// One connection: TLS negotiation, then pgwire's message handling, message by message, as
/// pgwire's `process_socket` does, except that a message that cannot be decoded is answered
/// with FATAL 08P01 (protocol violation) before the connection closes, as PostgreSQL does,
/// and that the write buffer is larger.
async fn serve_connection(tcp: TcpStream, tls: Option<TlsAcceptor>, handlers: Arc<Handlers>) -> std::io::Result<()> {
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(()),
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    let Some(mut socket) = negotiated else { return Ok(()) };
    socket.set_backpressure_boundary(WRITE_BUFFER);
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    loop {
        let starting =
            matches!(socket.state(), PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress);
        // pgwire's decoder panics on some truncated messages (a Bind shorter than its counts):
        // that is a malformed message too.
        let read = AssertUnwindSafe(socket.next()).catch_unwind();
        let next = if starting {
            tokio::select! {
                _ = &mut deadline => Ok(None),
                m = read => m,
            }
        } else {
            read.await
        };
        let undecodable = match next {
            Ok(None | Some(Ok(PgWireFrontendMessage::Terminate(_)))) => break,
            Ok(Some(Ok(m))) => Ok(m),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Err(_) => Err("malformed message".to_string()),
        };
        let message = match undecodable {
            Ok(m) => m,
            Err(e) => {
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), format!("invalid frontend message: {e}"));
                tracing::debug!(error = %e, "closing a connection on a message that cannot be decoded");
                let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                break;
            }
        };
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let outcome = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(e) = outcome {
            process_error(&mut socket, e, extended_query).await?;
        }
    }
    Ok(())
}

struct RefusalGuard(Arc<AtomicU32>);

impl Drop for RefusalGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

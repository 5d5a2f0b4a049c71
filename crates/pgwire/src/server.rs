//! The PostgreSQL listener: accepts connections and runs each on its own task, so a failing
//! or panicking connection never takes the server down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::tokio::process_socket;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;
use tokio::net::TcpListener;

use crate::handler::{Connection, Handlers};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Address to listen on (`127.0.0.1:15432` by default).
    pub listen: String,
}

/// A bound PostgreSQL-wire server.
pub struct PgServer {
    engine: Engine,
    listener: TcpListener,
}

impl PgServer {
    /// Binds the listener (port 0 picks a free port; see [`PgServer::local_addr`]).
    pub async fn bind(engine: Engine, config: &PgServerConfig) -> Result<Self> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
        Ok(Self { engine, listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves; open connections finish on their own tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
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
                    let _ = socket.set_nodelay(true);
                    let handlers = Arc::new(Handlers::new(Connection::new(self.engine.clone(), peer)));
                    tokio::spawn(async move {
                        tracing::debug!(%peer, "connection opened");
                        if let Err(e) = process_socket(socket, None, handlers).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
    }
}

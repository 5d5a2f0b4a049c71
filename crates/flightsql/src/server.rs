//! The Flight SQL listener: binds (TLS is loaded and checked first), then serves the service
//! with tonic until shutdown. Each connection and each call runs on its own task, so a failing
//! or panicking call never takes the server down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, TryStreamExt};
use rxgate_auth::UserDirectory;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::auth::{SessionLimits, Sessions};
use crate::coalesce::Coalesced;
use crate::doget::Routed;
use crate::gate::Gate;
use crate::service::{FlightSqlServiceImpl, Shared};
use crate::tickets::Tickets;
use crate::tls::{self, FlightTlsConfig};

/// How often expired tokens and tickets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long running calls may take to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest gRPC message accepted (parameter batches of a DoPut, say).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct FlightSqlConfig {
    /// Address to listen on (`127.0.0.1:50051` by default; port 0 picks a free port).
    pub listen: String,
    /// TLS material; `None` serves plaintext gRPC.
    pub tls: Option<FlightTlsConfig>,
    /// Token lifetimes and session limits.
    pub sessions: SessionLimits,
    /// How long a ticket may wait for its DoGet.
    pub ticket_ttl: Duration,
}

impl Default for FlightSqlConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            tls: None,
            sessions: SessionLimits {
                idle_timeout: Duration::from_secs(3600),
                lifetime: Duration::from_secs(24 * 3600),
                max_sessions: 1000,
                max_sessions_per_user: None,
                reserved_admin_sessions: 3,
                auth_timeout: Duration::from_secs(10),
            },
            ticket_ttl: Duration::from_secs(300),
        }
    }
}

/// A bound Flight SQL server.
pub struct FlightSqlServer {
    listener: TcpListener,
    builder: Server,
    tls: bool,
    shared: Arc<Shared>,
}

impl FlightSqlServer {
    /// Loads TLS (failing on unusable material) and binds the listener.
    pub async fn bind(engine: Engine, config: &FlightSqlConfig, users: Arc<UserDirectory>) -> Result<Self> {
        // tonic's TLS builds rustls configurations with the process-wide provider; make it the
        // same aws-lc-rs provider everything else uses (another crate may have installed it).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = Server::builder().tcp_nodelay(true).http2_keepalive_interval(Some(Duration::from_secs(60)));
        if let Some(t) = &config.tls {
            builder =
                builder.tls_config(tls::load(t)?).map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?;
        }
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {} (Flight SQL): {e}", config.listen)))?;
        let shared = Arc::new(Shared {
            sessions: Sessions::new(users, engine, config.sessions.clone()),
            tickets: Tickets::new(config.ticket_ttl),
        });
        Ok(Self { listener, builder, tls: config.tls.is_some(), shared })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Whether the port speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Self { listener, mut builder, shared, .. } = self;
        let sweeper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                loop {
                    every.tick().await;
                    shared.sessions.sweep();
                    shared.tickets.sweep();
                }
            })
        };
        let service = Routed::new(Gate(FlightSqlServiceImpl::new(shared)), MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).map_ok(Coalesced::new);
        // tonic's shutdown is graceful: it waits for running calls, and a DoGet of a large
        // result may run for long. Calls get SHUTDOWN_GRACE to finish, then the server stops.
        let shutdown = shutdown.shared();
        let served = builder.add_service(service).serve_with_incoming_shutdown(incoming, shutdown.clone());
        let grace = async {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::info!("flight sql: calls still running after the shutdown grace period are dropped");
        };
        let served = tokio::select! {
            r = served => r,
            _ = grace => Ok(()),
        };
        sweeper.abort();
        served.map_err(|e| Error::internal(format!("Flight SQL server failed: {e}")))
    }
}

//! The operations HTTP listener (`[http] listen`, default 127.0.0.1:8080): health probes,
//! Prometheus metrics and the web console. A frontend like pgwire and Flight SQL: it only
//! translates; every statement it runs goes through `EngineSession::plan`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rxgate_auth::UserDirectory;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;

pub mod console;
pub use console::ConsoleConfig;

/// What the HTTP listener needs to know.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (`host:port`; port 0 lets the OS pick one).
    pub listen: String,
    /// The web console (`/console/`).
    pub console: ConsoleConfig,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine: every statement goes through its sessions.
    pub engine: Engine,
    /// The users who may log in to the console.
    pub users: Arc<UserDirectory>,
}

/// A bound, not yet running, HTTP listener.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    app: Router,
}

impl HttpServer {
    /// Binds the listener; an address that cannot be bound stops the server (fail closed).
    pub async fn bind(engine: Engine, config: &HttpConfig, users: Arc<UserDirectory>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("[http] listen {}: {e}", config.listen)))?;
        let state = AppState { engine, users };
        Ok(Self { listener, app: router(state, &config.console) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::invalid(format!("http listener: {e}")))
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        axum::serve(self.listener, self.app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::invalid(format!("http listener: {e}")))
    }
}

/// Every route of the listener.
fn router(state: AppState, console: &ConsoleConfig) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .nest_service("/console", console::router(state.engine.clone(), state.users.clone(), console))
        .with_state(state)
}

/// Liveness: the process is serving. Checks no dependency (Kubernetes' convention).
async fn livez() -> &'static str {
    "ok\n"
}

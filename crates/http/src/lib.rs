//! The operations HTTP listener (`[http] listen`, default 127.0.0.1:8080): health probes,
//! Prometheus metrics and the web console. A frontend like pgwire and Flight SQL: it only
//! translates; every statement it runs goes through `EngineSession::plan`.
//!
//! - `/livez`: the process is serving; checks no dependency.
//! - `/readyz`: the catalog database and the warehouse store answer, each within
//!   `readiness_timeout`; 503 naming the check that failed otherwise.
//! - `/metrics`: the process's metrics registry (`rxgate_common::metrics`) in the Prometheus
//!   text format; behind a bearer token when `[http] metrics_token` is set.
//!
//! With the `[pgwire.tls]` certificate (unless `[http] tls = false`) the listener speaks
//! HTTPS only.

mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rxgate_auth::UserDirectory;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;

pub use tls::HttpTls;

/// What the HTTP listener needs to know.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address (`host:port`; port 0 lets the OS pick one).
    pub listen: String,
    /// Bearer token `/metrics` requires (`[http] metrics_token`, `RXGATE_METRICS_TOKEN`);
    /// `None`: open.
    pub metrics_token: Option<String>,
    /// How long each `/readyz` check may take (`[http] readiness_timeout_ms`).
    pub readiness_timeout: Duration,
    /// HTTPS with this certificate and key; `None`: plain HTTP.
    pub tls: Option<HttpTls>,
}

impl HttpConfig {
    /// Plain HTTP on `listen`, metrics open, 2 s readiness checks.
    pub fn new(listen: impl Into<String>) -> Self {
        Self { listen: listen.into(), metrics_token: None, readiness_timeout: Duration::from_secs(2), tls: None }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine: every statement goes through its sessions.
    pub engine: Engine,
    /// The users who may log in to the console.
    pub users: Arc<UserDirectory>,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Arc<str>>,
    /// The bound on each readiness check.
    pub readiness_timeout: Duration,
    /// The runtime the engine (queries, the catalog pool, object stores) runs on. The
    /// listener itself runs on a thread of its own, so probes and scrapes answer while query
    /// work keeps every worker busy; handlers spawn engine work here.
    pub engine_runtime: tokio::runtime::Handle,
}

/// A bound, not yet running, HTTP listener.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
}

impl HttpServer {
    /// Binds the listener; an address that cannot be bound, or a TLS certificate or key that
    /// cannot be used, stops the server (fail closed).
    pub async fn bind(engine: Engine, config: &HttpConfig, users: Arc<UserDirectory>) -> Result<Self> {
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("[http] listen {}: {e}", config.listen)))?;
        let state = AppState {
            engine,
            users,
            metrics_token: config.metrics_token.as_deref().map(Arc::from),
            readiness_timeout: config.readiness_timeout,
            engine_runtime: tokio::runtime::Handle::current(),
        };
        Ok(Self { listener, tls, app: router(state) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::invalid(format!("http listener: {e}")))
    }

    /// Whether the listener speaks HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The base URL clients use (`http://addr` or `https://addr`).
    pub fn base_url(&self) -> Result<String> {
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// Serves until `shutdown` completes, on a thread with a runtime of its own (see
    /// [`AppState::engine_runtime`]): queries that keep the engine's workers busy do not delay
    /// `/livez` or a scrape.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let failed = |e: std::io::Error| Error::invalid(format!("http listener: {e}"));
        let listener = self.listener.into_std().map_err(failed)?;
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("rxgate-http".into())
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(serve(listener, self.tls, self.app, shutdown)));
                let _ = done.send(served.map_err(failed));
            })
            .map_err(failed)?;
        finished.await.unwrap_or_else(|_| Err(Error::invalid("http listener: its thread ended")))
    }
}

/// The accept loop (plain or TLS) until `shutdown`.
async fn serve(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    }
}

/// Every route of the listener.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: the process is serving. Checks no dependency (Kubernetes' convention).
async fn livez() -> &'static str {
    "ok\n"
}

/// Readiness: the catalog database answers a trivial query and the warehouse store a
/// listing of its root, each within the timeout (run together). 200 `{"status":"ready",…}`,
/// else 503 with each check's result, the failed ones with their (redacted) reason.
async fn readyz(State(state): State<AppState>) -> Response {
    let limit = state.readiness_timeout;
    // The checks use the engine's pools and stores: they run on the engine's runtime.
    let (rt, engine) = (&state.engine_runtime, &state.engine);
    let (e1, e2) = (engine.clone(), engine.clone());
    let (catalog, warehouse) = tokio::join!(
        bounded("catalog", limit, on_engine(rt, async move { e1.lakehouse().check_catalog().await })),
        bounded("warehouse", limit, on_engine(rt, async move { e2.lakehouse().check_warehouse().await })),
    );
    let checks = [catalog, warehouse];
    let ready = checks.iter().all(|(_, e)| e.is_none());
    let mut body = format!("{{\"status\":\"{}\",\"checks\":{{", if ready { "ready" } else { "unready" });
    for (i, (what, error)) in checks.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        match error {
            None => body.push_str(&format!("\"{what}\":\"ok\"")),
            Some(e) => {
                tracing::warn!(check = what, error = %e, "readiness check failed");
                body.push_str(&format!("\"{what}\":\"failed: {}\"", json_escape(e)));
            }
        }
    }
    body.push_str("}}\n");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Runs `check` on the engine's runtime; dropping the returned future (a check past its time
/// limit) aborts it.
async fn on_engine(
    rt: &tokio::runtime::Handle,
    check: impl Future<Output = Result<()>> + Send + 'static,
) -> Result<()> {
    let task = rt.spawn(check);
    let _abort = AbortOnDrop(task.abort_handle());
    task.await.unwrap_or_else(|e| Err(Error::internal(format!("readiness check: {e}"))))
}

/// Aborts a task when the future awaiting it is dropped (a check past its time limit).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One readiness check under the time limit: its name and, when it failed, why.
async fn bounded(
    what: &'static str,
    limit: Duration,
    check: impl Future<Output = Result<()>>,
) -> (&'static str, Option<String>) {
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => (what, None),
        Ok(Err(e)) => (what, Some(e.message.lines().next().unwrap_or_default().to_string())),
        Err(_) => (what, Some(format!("no answer within {} ms", limit.as_millis()))),
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The Prometheus text format of the metrics registry. With a token configured, a request
/// without `Authorization: Bearer <token>` (or with another token) is 401.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or_default();
        if !same(given.trim().as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"rxgate metrics\"")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    let text = rxgate_common::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Compares in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }
}

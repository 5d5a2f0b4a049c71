//! The web console under `/console/`: a login with the users file's accounts, one HTML shell
//! with a nav, and a JSON API its JavaScript reads.
//!
//! - `GET /console/` the shell (303 to the login page without a live session),
//!   `GET /console/login` the login page, `POST /console/login` (JSON or form: `user`,
//!   `password`; 401 when refused), `POST /console/logout`, `GET /console/assets/<file>`.
//! - `GET /console/api/{me,overview,queries,history,catalog,table,reports/city,reports/top}`
//!   and `POST /console/api/kill`: 401 without a live session cookie; `kill` and `logout`
//!   also want the session's CSRF token in `X-CSRF-Token` (403 otherwise).
//!
//! **Invariant:** every row the console shows comes from a statement the logged-in user's
//! `EngineSession` planned (`EngineSession::plan`): grants, masks, row filters and the audit
//! trail apply exactly as for psql. There is no second policy path, and values from the
//! browser reach SQL only as `$n` parameters (identifiers only after a check against the
//! user's own catalog listing and a strict character set).
//!
//! Assets are compiled into the binary (`include_str!`); nothing is fetched at run time. Every
//! answer carries `Content-Security-Policy: default-src 'self'` (no inline script or style),
//! `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and `Cache-Control: no-store`.

mod api;
mod assets;
mod sessions;
mod sql;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::{AppState, Peer};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode as Http;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub use sessions::ConsoleConfig;
use sessions::{ConsoleSession, LoginError, Sessions};

/// What every console handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    sessions: Arc<Sessions>,
    /// The engine's runtime: logins and statements run there, not on the listener's thread.
    engine_runtime: tokio::runtime::Handle,
}

/// The console's routes, to be nested under `/console` (an empty router when disabled).
pub fn router(state: &AppState, config: &ConsoleConfig) -> Router {
    if !config.enabled {
        return Router::new();
    }
    let sessions =
        Sessions::new(state.users.clone(), state.engine.clone(), config.clone(), state.engine_runtime.clone());
    let console = Console { sessions: Arc::new(sessions), engine_runtime: state.engine_runtime.clone() };
    Router::new()
        .route("/", get(shell))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{file}", get(assets::serve))
        .route("/api/me", get(api::me))
        .route("/api/overview", get(api::overview))
        .route("/api/queries", get(api::queries))
        .route("/api/kill", post(api::kill))
        .route("/api/history", get(api::history))
        .route("/api/catalog", get(api::catalog))
        .route("/api/table", get(api::table))
        .route("/api/reports/city", get(api::report_city))
        .route("/api/reports/top", get(api::report_top))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

/// The headers every console answer carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The client's address, when the listener recorded it.
fn peer(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0 .0)
}

/// Why a request was refused before it reached its handler's work.
pub(crate) enum Refusal {
    /// No live session cookie: 401.
    NotLoggedIn,
    /// A change without the session's CSRF token: 403.
    NoCsrfToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, sqlstate, message) = match self {
            Refusal::NotLoggedIn => (Http::UNAUTHORIZED, "28000", "log in first"),
            Refusal::NoCsrfToken => (Http::FORBIDDEN, "42501", "missing or wrong CSRF token"),
        };
        (status, Json(json!({ "error": { "sqlstate": sqlstate, "message": message } }))).into_response()
    }
}

/// The live session of the request's cookie, or 401.
pub(crate) fn authenticated(console: &Console, headers: &HeaderMap) -> Result<Arc<ConsoleSession>, Refusal> {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    sessions::cookie_id(cookie).and_then(|id| console.sessions.session(id)).ok_or(Refusal::NotLoggedIn)
}

/// Requests that change something must also send the session's CSRF token.
pub(crate) fn csrf_ok(session: &ConsoleSession, headers: &HeaderMap) -> Result<(), Refusal> {
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if sessions::same_token(sent, &session.csrf) {
        Ok(())
    } else {
        Err(Refusal::NoCsrfToken)
    }
}

async fn shell(State(console): State<Console>, headers: HeaderMap) -> Response {
    match authenticated(&console, &headers) {
        Ok(_) => assets::html(assets::INDEX_HTML),
        Err(_) => Redirect::to("/console/login").into_response(),
    }
}

async fn login_page() -> Response {
    assets::html(assets::LOGIN_HTML)
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

/// `POST /console/login`: JSON (`{"user": …, "password": …}`) or a form.
async fn login(State(console): State<Console>, request: Request) -> Response {
    let peer = peer(&request);
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = if json {
        Json::<LoginBody>::from_request(request, &()).await.map(|Json(b)| b).map_err(IntoResponse::into_response)
    } else {
        Form::<LoginBody>::from_request(request, &()).await.map(|Form(b)| b).map_err(IntoResponse::into_response)
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => return r,
    };
    let sessions = console.sessions.clone();
    let login = console.engine_runtime.spawn(async move { sessions.login(&body.user, body.password, peer).await });
    let outcome = match login.await {
        Ok(outcome) => outcome,
        Err(e) => Err(LoginError::Failed(rxgate_common::Error::internal(format!("console login: {e}")))),
    };
    match outcome {
        Ok((id, session)) => {
            let mut response = Json(json!({
                "user": session.principal.user,
                "roles": session.principal.roles,
                "admin": session.admin,
                "csrf": session.csrf,
            }))
            .into_response();
            let cookie = HeaderValue::from_str(&sessions::set_cookie(&id)).expect("hex cookie");
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(LoginError::Refused(message)) => {
            (Http::UNAUTHORIZED, Json(json!({ "error": { "sqlstate": "28P01", "message": message } }))).into_response()
        }
        Err(LoginError::Full(message)) => {
            (Http::SERVICE_UNAVAILABLE, Json(json!({ "error": { "sqlstate": "53300", "message": message } })))
                .into_response()
        }
        Err(LoginError::Failed(e)) => (Http::INTERNAL_SERVER_ERROR, Json(sql::error_json(&e))).into_response(),
    }
}

/// `POST /console/logout`: ends the session and clears the cookie.
async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    let session = match authenticated(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = csrf_ok(&session, &headers) {
        return r.into_response();
    }
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if let Some(id) = sessions::cookie_id(cookie) {
        console.sessions.logout(id);
    }
    let mut response = Json(json!({ "ok": true })).into_response();
    let clear = HeaderValue::from_str(&sessions::clear_cookie()).expect("cookie");
    response.headers_mut().insert(header::SET_COOKIE, clear);
    response
}

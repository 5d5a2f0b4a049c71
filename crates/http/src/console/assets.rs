//! The console's HTML, JavaScript and CSS, compiled into the binary (no CDN, nothing fetched
//! at run time). `crates/http/assets/console/` holds the sources.

use axum::extract::Path;
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The shell: nav and one section per page.
pub(crate) const INDEX_HTML: &str = include_str!("../../assets/console/index.html");
/// The login page.
pub(crate) const LOGIN_HTML: &str = include_str!("../../assets/console/login.html");

/// `(name, content type, body)` of every file under `/console/assets/`.
const FILES: &[(&str, &str, &str)] = &[
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/console.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/chart.js")),
    ("login.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/login.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../../assets/console/console.css")),
];

/// An HTML page.
pub(crate) fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response()
}

/// `GET /console/assets/{file}`: public (the login page needs them), never user data.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, HeaderValue::from_static(kind))], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

//! Shared vocabulary of rxgate: status codes, the error type every crate returns, and the
//! identity of a session. Nothing here knows about protocols, catalogs or policies.

mod error;
pub mod metrics;
mod redact;
mod session;

pub use error::{grpc, Error, Result, StatusCode};

/// Fails the process on purpose at a named point when `RXGATE_FAILPOINT` names it; crash
/// tests use it to prove a write stopped at that point leaves its table as it was
/// (`ingest.before_commit`, `write.before_commit`, `compact.before_commit`, `expire.after_commit`).
pub fn failpoint(name: &str) {
    if std::env::var("RXGATE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("rxgate: failpoint {name} reached, aborting");
        std::process::abort();
    }
}
pub use redact::{redact_secrets, redact_uri, REDACTED};
pub use session::{Channel, Identity};

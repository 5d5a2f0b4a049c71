//! Shared vocabulary of rxgate: status codes, the error type every crate returns, and the
//! identity of a session. Nothing here knows about protocols, catalogs or policies.

mod error;
mod redact;
mod session;

pub use error::{grpc, Error, Result, StatusCode};
pub use redact::{redact_secrets, redact_uri, REDACTED};
pub use session::{Channel, Identity};

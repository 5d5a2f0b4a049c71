//! PostgreSQL wire-protocol frontend. It translates only: messages in, engine calls, rows out.
//! Plans come from [`rxgate_engine::EngineSession::plan`], never from here.

mod auth;
mod cancel;
mod copy;
mod encode;
mod errors;
mod handler;
mod server;
mod tls;

pub use auth::{AuthConfig, AuthMethod};
pub use errors::sqlstate;
pub use server::{PgServer, PgServerConfig};
pub use tls::TlsConfig;

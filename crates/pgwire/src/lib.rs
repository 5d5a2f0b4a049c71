//! PostgreSQL wire-protocol frontend. It translates only: messages in, engine calls, rows out.
//! Plans come from [`rxgate_engine::EngineSession::plan`], never from here.

mod errors;
mod handler;
mod server;

pub use errors::sqlstate;
pub use server::{PgServer, PgServerConfig};

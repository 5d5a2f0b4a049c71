//! Arrow Flight SQL frontend. It translates only: Flight SQL commands in, engine calls,
//! Arrow record batches out. Plans come from [`rxgate_engine::EngineSession::plan`], never from
//! here; users and passwords from [`rxgate_auth::UserDirectory`], the same store pgwire uses.
//!
//! - `auth`: Handshake (basic → bearer token), token lifetime and revocation, one engine
//!   session per token.
//! - `tickets`: opaque, single-use, expiring tickets bound to the user; one per output
//!   partition of a plan, so clients can fetch partitions in parallel.
//! - `service`: the `FlightSqlService` RPCs (statements, prepared statements with DoPut
//!   parameters, updates, metadata, cancellation).
//! - `metadata`: catalog listings via SQL over information_schema, SqlInfo, XDBC types.
//! - `gate`: clean errors for malformed requests, and GetSchema, in front of the dispatcher.
//! - `status`: the one StatusCode → gRPC code table.
//! - `encode`: DoGet's IPC messages, written straight from the engine's batches.
//! - `doget`: serves DoGet with a codec that writes those messages straight into tonic's
//!   send buffer; every other RPC goes to arrow-flight's generated service.
//! - `wire`: results leave as plain Arrow strings (the engine reads views).
//! - `tls`, `server`: the listener; `coalesce` gathers h2's per-frame writes into large ones.

mod auth;
mod coalesce;
mod doget;
mod encode;
mod gate;
mod metadata;
mod prepared;
mod server;
mod service;
mod status;
mod tickets;
mod tls;
mod wire;

pub use auth::SessionLimits;
pub use server::{FlightSqlConfig, FlightSqlServer};
pub use status::grpc_code;
pub use tls::FlightTlsConfig;

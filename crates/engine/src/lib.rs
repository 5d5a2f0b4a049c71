//! The query engine: one DataFusion `SessionContext` per session over the lakehouse, and the
//! single entry point every frontend uses to turn SQL into a plan and a plan into batches.
//!
//! **Invariant:** frontends (pgwire, Flight SQL, CLI) never build plans or contexts themselves;
//! [`EngineSession::plan`] is the one door, so whatever it enforces holds for every path.

mod activity;
mod audit;
mod bounded;
mod commands;
mod cursor;
mod deadline;
mod engine;
mod executor;
mod hive;
pub mod limits;
mod memwatch;
mod metrics;
mod pgcompat;
mod planned;
mod secure;
mod session;
pub mod statement;
mod system;
mod topk;
mod views;
/// The session's PostgreSQL parameters (`rxgate_pgcompat::settings`), under their old path.
pub use rxgate_pgcompat::settings;

pub use audit::{audit_schema, AuditLog, AuditRecord, AUDIT_FILE};
pub use commands::copy_in::CopyIn;
pub use commands::ingest::IngestMode;
pub use cursor::{CopyFormat, CopyOptions};
pub use deadline::CancelToken;
pub use engine::{Engine, EngineConfig, BUILTIN_POLICY};
pub use limits::StatementLimits;
pub use planned::{Planned, QueryOutput, StatementInfo};
pub use secure::{Applied, PolicyStatus, PolicyStore};
pub use session::partitioned::PartitionedQuery;
pub use session::{EngineSession, SessionCanceller};
pub use statement::{Command, SessionCommand, Statement};
pub use system::{set_login_throttle_source, LoginThrottleRow, LoginThrottleSource};

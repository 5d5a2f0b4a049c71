//! The query engine: one DataFusion `SessionContext` per session over the lakehouse, and the
//! single entry point every frontend uses to turn SQL into a plan and a plan into batches.
//!
//! **Invariant:** frontends (pgwire, Flight SQL, CLI) never build plans or contexts themselves;
//! [`EngineSession::plan`] is the one door, so whatever it enforces holds for every path.

mod deadline;
mod engine;
mod pgcompat;
mod session;
pub mod settings;

pub use engine::{Engine, EngineConfig};
pub use session::{EngineSession, Planned, QueryOutput, SessionCommand};

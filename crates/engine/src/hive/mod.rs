//! Hive's function library (with Hive's date formats), installed into every session by
//! [`crate::Engine::session`]. Hive's statements are in `crate::statement` (grammar) and
//! `crate::commands` (SHOW, DESCRIBE, external tables).

mod datefmt;
mod functions;

use datafusion::prelude::SessionContext;

/// Installs the Hive functions into a session.
pub(crate) fn install(ctx: &SessionContext) {
    functions::register(ctx);
}

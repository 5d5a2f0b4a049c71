//! Hive's function library (crate rxgate-hive-functions), installed into every session by
//! [`crate::Engine::session`]. Hive's statements are in `crate::statement` (grammar) and
//! `crate::commands` (SHOW, DESCRIBE, external tables).

use datafusion::prelude::SessionContext;

/// Installs the Hive functions into a session.
pub(crate) fn install(ctx: &SessionContext) {
    rxgate_hive_functions::register(ctx);
}

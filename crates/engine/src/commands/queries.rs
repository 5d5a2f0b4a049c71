//! Statements on running statements: `CALL system.kill_query('<id>')` cancels one (it ends
//! with 57014, its plan and pool memory dropped). Its owner may kill it, and admin roles any
//! (42501 otherwise); an id that names no running statement is 22023. The work is the
//! activity registry's (`crate::activity`), which `pg_cancel_backend` and
//! `pg_terminate_backend` use too.

use rxgate_common::Result;

use super::tag;
use crate::activity::{Activity, Viewer};
use crate::planned::{Planned, QueryOutput};
use crate::statement::{Command, QueryCommand};

/// Plans the statement: who may kill what is decided when it runs (the statement may end
/// in between).
pub(crate) fn plan(cmd: QueryCommand) -> Planned {
    Planned::Command(Command::Queries(cmd), None)
}

/// Runs it as `viewer`.
pub(crate) fn execute(activity: &Activity, cmd: &QueryCommand, viewer: &Viewer) -> Result<QueryOutput> {
    match cmd {
        QueryCommand::Kill { query_id } => {
            activity.kill_query(query_id, viewer)?;
            tag("CALL")
        }
    }
}

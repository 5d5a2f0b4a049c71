//! `CALL [catalog.]system.kill_query('<query id>')` (Trino's procedure; also
//! `query_id => '<id>'`), read with the CALL argument reader of `maintenance`.

use rxgate_common::Result;

use super::maintenance::{call_args, Arg};
use super::Cur;
use crate::statement::dialect::syntax;
use crate::statement::QueryCommand;

/// The procedures read here.
pub(super) const PROCEDURES: &[&str] = &["kill_query"];

/// `CALL …system.kill_query(…)`, from the CALL keyword.
pub(super) fn call(c: &mut Cur) -> Result<QueryCommand> {
    c.kw("call");
    let name = c.name().map_err(syntax)?;
    if !matches!(name.as_slice(), [.., s, p] if s == "system" && p == "kill_query") {
        return Err(syntax(format!("unknown procedure {}", name.join("."))));
    }
    let (positional, named) = call_args(c, "system.kill_query")?;
    let mut args = positional.into_iter().map(|v| ("query_id".to_string(), v)).chain(named);
    let query_id = match (args.next(), args.next()) {
        (Some((k, Arg::Str(id))), None) if k == "query_id" => id,
        _ => return Err(syntax("system.kill_query takes one argument: the query id as a string")),
    };
    c.end().map_err(syntax)?;
    Ok(QueryCommand::Kill { query_id })
}

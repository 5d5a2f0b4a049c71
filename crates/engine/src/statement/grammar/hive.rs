//! Hive's `SHOW DATABASES|SCHEMAS|TABLES`, `SHOW CREATE TABLE`, `USE`, `DESCRIBE`, and the
//! policy admin statements `SHOW GRANTS [FOR name]`, `SHOW POLICIES`.

use super::{Cur, Parsed};
use crate::statement::{AdminCommand, HiveCommand};

/// `SHOW GRANTS [FOR name]`, `SHOW POLICIES`.
pub(super) fn admin(c: &mut Cur) -> Parsed<AdminCommand> {
    c.expect_kw("SHOW")?;
    if c.kw("POLICIES") {
        return Ok(AdminCommand::ShowPolicies);
    }
    c.expect_kw("GRANTS")?;
    if c.kw("FOR") {
        return Ok(AdminCommand::ShowGrants(Some(c.expect_ident()?)));
    }
    Ok(AdminCommand::ShowGrants(None))
}

/// `[LIKE] 'pattern'`, optional.
fn like(c: &mut Cur) -> Parsed<Option<String>> {
    let had_like = c.kw("LIKE");
    match c.string() {
        Some(s) => Ok(Some(s)),
        None if had_like => Err(format!("LIKE needs a pattern string at {}", c.here())),
        None => Ok(None),
    }
}

/// The Hive statements.
pub(super) fn statement(c: &mut Cur) -> Parsed<HiveCommand> {
    if c.kw("SHOW") {
        if c.kw("DATABASES") || c.kw("SCHEMAS") {
            return Ok(HiveCommand::ShowDatabases { like: like(c)? });
        }
        if c.kw("TABLES") {
            let database = if c.kw("IN") || c.kw("FROM") { Some(c.expect_ident()?) } else { None };
            return Ok(HiveCommand::ShowTables { database, like: like(c)? });
        }
        c.expect_kw("CREATE")?;
        c.expect_kw("TABLE")?;
        return Ok(HiveCommand::ShowCreateTable(c.name()?));
    }
    if c.kw("USE") {
        return Ok(HiveCommand::Use(c.expect_ident()?));
    }
    if !(c.kw("DESCRIBE") || c.kw("DESC")) {
        return Err(format!("unexpected {}", c.here()));
    }
    c.kw("TABLE");
    let option = c.pos;
    let detail = c.kw("FORMATTED") || c.kw("EXTENDED");
    // `DESCRIBE formatted` describes a table called formatted.
    let detail = if detail && c.at_end() {
        c.pos = option;
        false
    } else {
        detail
    };
    Ok(HiveCommand::Describe { table: c.name()?, detail })
}

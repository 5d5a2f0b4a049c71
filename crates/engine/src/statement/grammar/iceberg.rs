//! Iceberg DBA statements: `CALL [catalog.]system.rollback_to_snapshot|set_current_snapshot|
//! rollback_to_timestamp(…)` (Spark's and Trino's argument forms, named arguments too), Trino's
//! `ALTER TABLE t EXECUTE rollback_to_snapshot(id)`, schema evolution (`ADD COLUMN[S]`,
//! `RENAME COLUMN`, `DROP COLUMN`) and partition evolution (`ADD|DROP PARTITION FIELD`).

use datafusion::sql::sqlparser::tokenizer::Token;
use iceberg::spec::Transform;
use rxgate_catalog::iceberg_admin::evolve::{self, PartitionChange, SchemaChange};
use rxgate_common::{Error, Result, StatusCode};

use super::maintenance::{call_args, Arg};
use super::Cur;
use crate::statement::{bad_time_travel, parse_timestamp, IcebergCommand, RollbackTarget};

fn syntax(m: impl Into<String>) -> Error {
    crate::statement::dialect::syntax(m.into())
}

/// The Iceberg statements (the rule is chosen by `super::rule`).
pub(super) fn statement(c: &mut Cur) -> Result<IcebergCommand> {
    if c.kw("call") {
        return parse_call(c);
    }
    c.kw("alter");
    c.kw("table");
    let table = c.name().map_err(syntax)?;
    let cmd = if c.kw("execute") {
        parse_execute(c, table)?
    } else if c.kws(&["add", "partition", "field"]) {
        let (column, transform) = parse_partition_term(c)?;
        let name = if c.kw("as") { c.ident() } else { None };
        IcebergCommand::Partition { table, change: PartitionChange::Add { column, transform, name } }
    } else if c.kws(&["add", "columns"]) {
        if !c.tok(&Token::LParen) {
            return Err(syntax("ADD COLUMNS needs a parenthesised column list"));
        }
        let mut changes = vec![];
        loop {
            changes.push(parse_column(c)?);
            if c.tok(&Token::Comma) {
                continue;
            }
            if c.tok(&Token::RParen) {
                break;
            }
            return Err(syntax("expected , or ) in ADD COLUMNS"));
        }
        IcebergCommand::Schema { table, changes }
    } else if c.kws(&["add", "column"]) {
        IcebergCommand::Schema { table, changes: vec![parse_column(c)?] }
    } else if c.kws(&["drop", "partition", "field"]) {
        let (name, transform) = parse_partition_term(c)?;
        let transform = (transform != Transform::Identity
            || c.pos > 0 && c.toks.get(c.pos - 1) == Some(&Token::RParen))
        .then_some(transform);
        IcebergCommand::Partition { table, change: PartitionChange::Drop { name, transform } }
    } else if c.kw("write") {
        parse_write_order(c, table)?
    } else if c.kws(&["drop", "column"]) {
        let name = c.ident().ok_or_else(|| syntax("DROP COLUMN needs a column name"))?;
        IcebergCommand::Schema { table, changes: vec![SchemaChange::DropColumn(name)] }
    } else if c.kws(&["rename", "column"]) {
        match (c.ident(), c.kw("to"), c.ident()) {
            (Some(from), true, Some(to)) => {
                IcebergCommand::Schema { table, changes: vec![SchemaChange::RenameColumn { from, to }] }
            }
            _ => return Err(syntax("expected RENAME COLUMN a TO b")),
        }
    } else {
        return Err(syntax(format!("unexpected {}", c.here())));
    };
    if c.at_end() {
        Ok(cmd)
    } else {
        Err(syntax("unexpected text at the end of the statement"))
    }
}

/// Spark's `WRITE [DISTRIBUTED BY PARTITION] [LOCALLY] ORDERED BY c [ASC|DESC] [NULLS FIRST|LAST],
/// …` (parenthesised or not) and `WRITE UNORDERED`, after `WRITE`.
fn parse_write_order(c: &mut Cur, table: Vec<String>) -> Result<IcebergCommand> {
    if c.kw("unordered") {
        return Ok(IcebergCommand::SortOrder { table, keys: vec![] });
    }
    c.kws(&["distributed", "by", "partition"]);
    c.kw("locally");
    if !c.kws(&["ordered", "by"]) {
        return Err(syntax("expected WRITE ORDERED BY columns or WRITE UNORDERED"));
    }
    let parenthesised = c.tok(&Token::LParen);
    let mut keys = vec![];
    loop {
        let column = c.ident().ok_or_else(|| syntax("ORDERED BY needs a column"))?;
        let descending = if c.kw("desc") {
            true
        } else {
            c.kw("asc");
            false
        };
        let nulls_first = if c.kws(&["nulls", "first"]) {
            true
        } else if c.kws(&["nulls", "last"]) {
            false
        } else {
            !descending
        };
        keys.push(evolve::SortKey { column, descending, nulls_first });
        if !c.tok(&Token::Comma) {
            break;
        }
    }
    if parenthesised && !c.tok(&Token::RParen) {
        return Err(syntax("ORDERED BY ( … ) is not closed"));
    }
    Ok(IcebergCommand::SortOrder { table, keys })
}

/// `name type [COMMENT 'text']`.
fn parse_column(c: &mut Cur) -> Result<SchemaChange> {
    let name = c.ident().ok_or_else(|| syntax("expected a column name"))?;
    let mut ty = String::new();
    let mut depth = 0;
    while let Some(t) = c.peek() {
        if depth == 0 && (super::is_kw(t, "comment") || matches!(t, Token::Comma | Token::RParen)) {
            break;
        }
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if !ty.is_empty() && matches!(t, Token::Word(_)) {
            ty.push(' ');
        }
        ty.push_str(&t.to_string());
        c.pos += 1;
    }
    if ty.is_empty() {
        return Err(syntax(format!("column {name} needs a type")));
    }
    evolve::parse_type(&ty)?;
    let comment =
        if c.kw("comment") { Some(c.string().ok_or_else(|| syntax("COMMENT needs a string"))?) } else { None };
    Ok(SchemaChange::AddColumn { name, ty, comment })
}

/// `col`, `years(col)`, `bucket(16, col)`, `truncate(4, col)` → (column, transform).
fn parse_partition_term(c: &mut Cur) -> Result<(String, Transform)> {
    let head = c.ident().ok_or_else(|| syntax("expected a partition field"))?;
    if !c.tok(&Token::LParen) {
        return Ok((head, Transform::Identity));
    }
    let arg = match c.integer() {
        Some(n) => {
            if !c.tok(&Token::Comma) {
                return Err(syntax(format!("{head}(n, column) expected")));
            }
            Some(n)
        }
        None => None,
    };
    let column = c.ident().ok_or_else(|| syntax(format!("{head}(…) needs a column")))?;
    let arg = match (arg, c.tok(&Token::Comma)) {
        (None, true) => c.integer(), // Trino's bucket(col, n)
        (a, _) => a,
    };
    if !c.tok(&Token::RParen) {
        return Err(syntax(format!("{head}(…) is not closed")));
    }
    let n = |a: Option<i64>| -> Result<u32> {
        a.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| syntax(format!("{head} needs a positive width")))
    };
    let transform = match head.as_str() {
        "identity" => Transform::Identity,
        "years" | "year" => Transform::Year,
        "months" | "month" => Transform::Month,
        "days" | "day" | "date" => Transform::Day,
        "hours" | "hour" | "date_hour" => Transform::Hour,
        "bucket" => Transform::Bucket(n(arg)?),
        "truncate" => Transform::Truncate(n(arg)?),
        other => return Err(Error::new(StatusCode::Unsupported, format!("unknown partition transform {other}"))),
    };
    Ok((column, transform))
}

/// Trino's `ALTER TABLE t EXECUTE rollback_to_snapshot(id)`.
fn parse_execute(c: &mut Cur, table: Vec<String>) -> Result<IcebergCommand> {
    let proc = c.ident().ok_or_else(|| syntax("EXECUTE needs a procedure"))?;
    if proc != "rollback_to_snapshot" {
        return Err(Error::new(StatusCode::Unsupported, format!("ALTER TABLE EXECUTE {proc} is not supported")));
    }
    let ok = c.tok(&Token::LParen);
    if matches!(c.peek(), Some(Token::Word(_))) {
        // snapshot_id => n
        c.pos += 1;
        c.tok(&Token::RArrow);
    }
    let id = c.integer();
    match (ok, id, c.tok(&Token::RParen)) {
        (true, Some(id), true) => Ok(IcebergCommand::Rollback {
            table,
            target: RollbackTarget::Snapshot { id, ancestor_only: true },
            returns_row: false,
        }),
        _ => Err(syntax("expected rollback_to_snapshot(snapshot_id)")),
    }
}

fn parse_call(c: &mut Cur) -> Result<IcebergCommand> {
    let name = c.name().map_err(syntax)?;
    let proc = match name.as_slice() {
        [s, p] | [_, s, p] if s == "system" => p.clone(),
        _ => return Err(Error::new(StatusCode::Unsupported, format!("unknown procedure {}", name.join(".")))),
    };
    let known = ["rollback_to_snapshot", "set_current_snapshot", "rollback_to_timestamp"];
    if !known.contains(&proc.as_str()) {
        return Err(Error::new(StatusCode::Unsupported, format!("procedure system.{proc} is not supported")));
    }
    parse_call_args(c, &proc)
}

fn parse_call_args(c: &mut Cur, proc: &str) -> Result<IcebergCommand> {
    let (positional, named) = call_args(c, &format!("system.{proc}"))?;
    if !c.at_end() {
        return Err(syntax("unexpected text after CALL"));
    }
    // Trino: (schema, table, id); Spark: (table, id); named: table =>, snapshot_id =>, timestamp =>.
    let mut table: Option<Vec<String>> = None;
    let mut value: Option<Arg> = None;
    match positional.len() {
        0 => {}
        2 => {
            let mut it = positional.into_iter();
            if let Some(Arg::Str(t)) = it.next() {
                table = Some(t.split('.').map(str::to_string).collect());
            }
            value = it.next();
        }
        3 => {
            let mut it = positional.into_iter();
            if let (Some(Arg::Str(s)), Some(Arg::Str(t))) = (it.next(), it.next()) {
                table = Some(vec![s, t]);
            }
            value = it.next();
        }
        _ => return Err(syntax(format!("system.{proc}('db.table', value) expected"))),
    }
    for (k, v) in named {
        match (k.as_str(), v) {
            ("table", Arg::Str(t)) => table = Some(t.split('.').map(str::to_string).collect()),
            ("snapshot_id" | "timestamp", v) => value = Some(v),
            (other, _) => return Err(syntax(format!("unknown argument {other} of system.{proc}"))),
        }
    }
    let table =
        table.filter(|t| !t.is_empty()).ok_or_else(|| syntax(format!("system.{proc} needs a table name string")))?;
    let target = match (proc, value) {
        ("rollback_to_timestamp", Some(Arg::Time(ms))) => RollbackTarget::Timestamp(ms),
        ("rollback_to_timestamp", Some(Arg::Str(s))) => RollbackTarget::Timestamp(
            parse_timestamp(&s).ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?,
        ),
        ("rollback_to_snapshot", Some(Arg::Int(id))) => RollbackTarget::Snapshot { id, ancestor_only: true },
        ("set_current_snapshot", Some(Arg::Int(id))) => RollbackTarget::Snapshot { id, ancestor_only: false },
        _ => {
            return Err(syntax(format!(
                "system.{proc} needs a table and a {}",
                if proc == "rollback_to_timestamp" { "timestamp" } else { "snapshot id" }
            )))
        }
    };
    Ok(IcebergCommand::Rollback { table, target, returns_row: true })
}

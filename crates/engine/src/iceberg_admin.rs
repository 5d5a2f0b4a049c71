//! Iceberg DBA statements (issue 6 §6), all planned by [`crate::EngineSession::plan`]:
//!
//! - **Metadata tables**: Trino's `t$snapshots|history|files|manifests|partitions` (quoted:
//!   `health."prescriber_drug$files"`) resolve in the catalog itself; Spark's
//!   `health.prescriber_drug.files` after FROM/JOIN is rewritten to Trino's name ([`rewrite`]).
//! - **Time travel**: `t [FOR] VERSION|SYSTEM_VERSION AS OF <snapshot id>` and
//!   `t [FOR] TIMESTAMP|SYSTEM_TIME AS OF '<ts>' | TIMESTAMP '<ts>' | <epoch seconds>` (Spark
//!   3.3 and Trino) become a reference to `"t@v=<id>"` / `"t@ts=<ms>"` aliased `t`, resolved
//!   by the lakehouse catalog to the table pinned at that snapshot. Naive timestamps are UTC.
//!   The rewrite works on tokens, so literals, quoted identifiers and comments are untouched.
//! - **Rollback**: `CALL [catalog.]system.rollback_to_snapshot('db.t', id)`,
//!   `system.set_current_snapshot('db.t', id)`, `system.rollback_to_timestamp('db.t', TIMESTAMP
//!   '…')` (Spark; Trino's three-argument `('db', 't', id)` too; named arguments `table =>`,
//!   `snapshot_id =>`, `timestamp =>`) and Trino's `ALTER TABLE t EXECUTE
//!   rollback_to_snapshot(id)`.
//! - **Schema evolution**: `ALTER TABLE t ADD COLUMN c type [COMMENT '…']` (and `ADD COLUMNS
//!   (c type, …)`), `RENAME COLUMN a TO b`, `DROP COLUMN c`.
//! - **Partition evolution**: `ALTER TABLE t ADD PARTITION FIELD col|years(col)|months(col)|
//!   days(col)|hours(col)|bucket(n, col)|truncate(w, col) [AS name]`, `DROP PARTITION FIELD
//!   name|expression`.
//!
//! Other `ALTER TABLE` forms (Hive's `ADD|DROP PARTITION (k='v')`, …) are not claimed.
//!
//! **Policy.** Changes and rollbacks are for administrators (42501); a table the session
//! cannot see is absent first (42P01, no existence leak). Metadata tables are governed in
//! `secure.rs`: only principals who see the base table whole (no mask, no row filter, every
//! column) get them; others get 42P01, because file paths, partition values and record counts
//! would reveal filtered rows. A time-travelled table gets the base table's masks and filters.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use iceberg::spec::Transform;
use rxgate_catalog::iceberg_admin::evolve::{self, PartitionChange, SchemaChange};
use rxgate_catalog::iceberg_admin::{MetadataKind, TableView};
use rxgate_common::{Error, Result, StatusCode};

use crate::session::{Planned, QueryOutput, SessionCommand};

/// Where a rollback goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// A snapshot; `ancestor_only` for rollback_to_snapshot, not for set_current_snapshot.
    Snapshot {
        /// Snapshot id.
        id: i64,
        /// Must be an ancestor of the current snapshot.
        ancestor_only: bool,
    },
    /// The snapshot current at a time (epoch millis).
    Timestamp(i64),
}

/// An Iceberg DBA statement the engine runs itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcebergCommand {
    /// `ALTER TABLE t ADD|RENAME|DROP COLUMN …`.
    Schema {
        /// Table name parts as written.
        table: Vec<String>,
        /// Changes, committed together.
        changes: Vec<SchemaChange>,
    },
    /// `ALTER TABLE t ADD|DROP PARTITION FIELD …`.
    Partition {
        /// Table name parts as written.
        table: Vec<String>,
        /// The change.
        change: PartitionChange,
    },
    /// `CALL system.rollback_to_snapshot(…)` and friends, `ALTER TABLE t EXECUTE …`.
    Rollback {
        /// Table name parts.
        table: Vec<String>,
        /// Target.
        target: RollbackTarget,
        /// CALL returns a row (previous_snapshot_id, current_snapshot_id); EXECUTE does not.
        returns_row: bool,
    },
}

// ------------------------------------------------------------------------------------------
// Tokens
// ------------------------------------------------------------------------------------------

fn tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()
}

fn meaningful(t: &Token) -> bool {
    !matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Byte offset of a 1-based (line, column) location, columns counted in chars.
fn offset(sql: &str, line: u64, column: u64) -> usize {
    let mut l = 1;
    let mut c = 1;
    for (i, ch) in sql.char_indices() {
        if l == line && c == column {
            return i;
        }
        if ch == '\n' {
            l += 1;
            c = 1;
        } else {
            c += 1;
        }
    }
    sql.len()
}

fn is_kw(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

fn word(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) => Some(&w.value),
        _ => None,
    }
}

/// A name part as the planner sees it: unquoted words are lower-cased.
fn name_part(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
        Token::Word(w) if w.quote_style == Some('"') => Some(w.value.clone()),
        _ => None,
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Words that end a table reference (so the word after a table is not its alias).
const CLAUSE_WORDS: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "offset",
    "fetch",
    "having",
    "window",
    "qualify",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "union",
    "except",
    "intersect",
    "lateral",
    "for",
    "tablesample",
];

/// Words after which a comma no longer separates table references.
const FROM_ENDS: &[&str] = &[
    "where", "group", "order", "having", "limit", "offset", "fetch", "window", "qualify", "select",
    "on", "using", "union", "except", "intersect", "values", "set", "returning",
];

// ------------------------------------------------------------------------------------------
// Rewrite: time travel and Spark's metadata table names
// ------------------------------------------------------------------------------------------

/// Parses a point in time: RFC 3339, `YYYY-MM-DD[ HH:MM:SS[.f]][±HH[:MM]| UTC]` (naive = UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix('Z'))
        .unwrap_or(s);
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
    ] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

fn bad_time_travel(m: impl Into<String>) -> Error {
    Error::new(StatusCode::InvalidArgument, m)
}

/// Rewrites time travel clauses and Spark's `db.t.<metadata table>` names into the names the
/// lakehouse catalog resolves. Text without them is returned unchanged. `catalog` is the
/// session's catalog name (`rxgate.db.t` is an ordinary table name).
pub(crate) fn rewrite<'a>(sql: &'a str, catalog: &str) -> Result<Cow<'a, str>> {
    let lower = sql.to_ascii_lowercase();
    let maybe_travel = lower.contains(" as of") || lower.contains("\nas of");
    let maybe_meta = MetadataKind::ALL.iter().any(|k| lower.contains(k.name()));
    if !maybe_travel && !maybe_meta {
        return Ok(Cow::Borrowed(sql));
    }
    let Some(all) = tokens(sql) else {
        return Ok(Cow::Borrowed(sql));
    };
    let toks: Vec<&TokenWithSpan> = all.iter().filter(|t| meaningful(&t.token)).collect();
    let start = |t: &TokenWithSpan| offset(sql, t.span.start.line, t.span.start.column);
    let end = |t: &TokenWithSpan| offset(sql, t.span.end.line, t.span.end.column);
    let mut edits: Vec<(usize, usize, String)> = vec![];
    let mut i = 0;
    // Inside a FROM list (a comma there starts another table reference).
    let mut in_from = false;
    while i < toks.len() {
        let t = &toks[i].token;
        if is_kw(t, "from") || is_kw(t, "join") {
            in_from = true;
        } else if FROM_ENDS.iter().any(|w| is_kw(t, w)) {
            in_from = false;
        }
        let opens_table =
            is_kw(t, "from") || is_kw(t, "join") || (in_from && matches!(t, Token::Comma));
        if !opens_table {
            i += 1;
            continue;
        }
        // A name after FROM/JOIN/`,`: word (. word)*, not a function call.
        let mut j = i + 1;
        let mut parts: Vec<usize> = vec![];
        while j < toks.len() && name_part(&toks[j].token).is_some() {
            parts.push(j);
            if toks.get(j + 1).is_some_and(|n| n.token == Token::Period) {
                j += 2;
            } else {
                j += 1;
                break;
            }
        }
        if parts.is_empty()
            || toks
                .get(j)
                .is_some_and(|n| matches!(n.token, Token::LParen | Token::Period))
        {
            i += 1;
            continue;
        }
        let names: Vec<String> = parts
            .iter()
            .map(|&p| name_part(&toks[p].token).unwrap_or_default())
            .collect();
        let last = *parts.last().expect("non-empty");
        // Spark: db.t.snapshots (or catalog.db.t.snapshots).
        let spark_meta = match names.len() {
            3 => names[0] != catalog,
            4 => names[0] == catalog,
            _ => false,
        };
        if spark_meta {
            if let Some(kind) = MetadataKind::parse(&names[names.len() - 1]) {
                let table_tok = parts[parts.len() - 2];
                let text = quote(&format!("{}${}", names[names.len() - 2], kind.name()));
                edits.push((start(toks[table_tok]), end(toks[last]), text));
                i = j;
                continue;
            }
        }
        // Time travel: [FOR] VERSION|SYSTEM_VERSION|TIMESTAMP|SYSTEM_TIME AS OF value.
        let mut k = j;
        let has_for = toks.get(k).is_some_and(|t| is_kw(&t.token, "for"));
        if has_for {
            k += 1;
        }
        let kind = toks
            .get(k)
            .and_then(|t| word(&t.token))
            .map(|w| w.to_ascii_uppercase());
        let kind = match kind.as_deref() {
            Some("VERSION" | "TIMESTAMP") => kind,
            Some("SYSTEM_VERSION" | "SYSTEM_TIME") if has_for => kind,
            _ => None,
        };
        let as_of = toks.get(k + 1).is_some_and(|t| is_kw(&t.token, "as"))
            && toks.get(k + 2).is_some_and(|t| is_kw(&t.token, "of"));
        let (Some(kind), true) = (kind, as_of) else {
            i += 1;
            continue;
        };
        let mut v = k + 3;
        let version = matches!(kind.as_str(), "VERSION" | "SYSTEM_VERSION");
        if !version && toks.get(v).is_some_and(|t| is_kw(&t.token, "timestamp")) {
            v += 1;
        }
        let negative = toks.get(v).is_some_and(|t| t.token == Token::Minus);
        if negative {
            v += 1;
        }
        let value = toks.get(v).map(|t| &t.token);
        let table = names.last().cloned().unwrap_or_default();
        let view = match (version, value) {
            (true, Some(Token::Number(n, _))) => {
                let n = if negative { format!("-{n}") } else { n.clone() };
                TableView::Version(n.parse().map_err(|_| bad_time_travel(format!("invalid snapshot id {n}")))?)
            }
            (true, Some(Token::SingleQuotedString(s))) => TableView::Version(s.trim().parse().map_err(|_| {
                Error::new(StatusCode::Unsupported, format!("VERSION AS OF '{s}': only snapshot ids are supported, not branch or tag names"))
            })?),
            (false, Some(Token::SingleQuotedString(s))) => {
                TableView::Timestamp(parse_timestamp(s).ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?)
            }
            (false, Some(Token::Number(n, _))) if !negative => TableView::Timestamp(
                n.parse::<i64>().map_err(|_| bad_time_travel(format!("invalid timestamp {n}")))?.saturating_mul(1000),
            ),
            _ => {
                return Err(Error::new(
                    StatusCode::SyntaxError,
                    format!("syntax error: {kind} AS OF needs a {}", if version { "snapshot id" } else { "timestamp" }),
                ))
            }
        };
        // The word after the clause is the table's alias, unless it starts a clause.
        let next = toks.get(v + 1).map(|t| &t.token);
        let has_alias = match next {
            Some(Token::Word(w)) if w.quote_style.is_some() => true,
            Some(Token::Word(w)) => !CLAUSE_WORDS.contains(&w.value.to_ascii_lowercase().as_str()),
            _ => false,
        };
        let mut text = quote(&format!("{table}{}", view.suffix()));
        if !has_alias {
            text.push_str(&format!(" AS {}", quote(&table)));
        }
        edits.push((start(toks[last]), end(toks[v]), text));
        i = v + 1;
    }
    if edits.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out = sql.to_string();
    for (s, e, text) in edits.into_iter().rev() {
        out.replace_range(s..e, &text);
    }
    Ok(Cow::Owned(out))
}

// ------------------------------------------------------------------------------------------
// Statements
// ------------------------------------------------------------------------------------------

struct Cur {
    toks: Vec<Token>,
    pos: usize,
}

impl Cur {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }
    fn kw(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| is_kw(t, kw)) {
            self.pos += 1;
            return true;
        }
        false
    }
    fn tok(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            return true;
        }
        false
    }
    fn ident(&mut self) -> Option<String> {
        let n = name_part(self.peek()?)?;
        self.pos += 1;
        Some(n)
    }
    fn name(&mut self) -> Option<Vec<String>> {
        let mut parts = vec![self.ident()?];
        while self.tok(&Token::Period) {
            parts.push(self.ident()?);
        }
        (parts.len() <= 3).then_some(parts)
    }
    fn string(&mut self) -> Option<String> {
        match self.peek()? {
            Token::SingleQuotedString(s) => {
                let s = s.clone();
                self.pos += 1;
                Some(s)
            }
            _ => None,
        }
    }
    fn integer(&mut self) -> Option<i64> {
        let negative = self.tok(&Token::Minus);
        match self.peek()? {
            Token::Number(n, _) => {
                let v: i64 = n.parse().ok()?;
                self.pos += 1;
                Some(if negative { -v } else { v })
            }
            _ => None,
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
}

fn syntax(m: impl Into<String>) -> Error {
    Error::new(
        StatusCode::SyntaxError,
        format!("syntax error: {}", m.into()),
    )
}

/// Recognises the Iceberg DBA statements. `None`: not one of ours (every other statement,
/// including other ALTER TABLE forms); `Some(Err)`: ours, but malformed.
pub(crate) fn parse(sql: &str) -> Option<Result<IcebergCommand>> {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()?
        .to_ascii_uppercase();
    if !matches!(first.as_str(), "CALL" | "ALTER") {
        return None;
    }
    let toks: Vec<Token> = tokens(sql)?
        .into_iter()
        .map(|t| t.token)
        .filter(meaningful)
        .collect();
    let mut toks = toks;
    while toks.last() == Some(&Token::SemiColon) {
        toks.pop();
    }
    let mut c = Cur { toks, pos: 0 };
    if c.kw("call") {
        return parse_call(&mut c);
    }
    c.kw("alter");
    if !c.kw("table") {
        return None;
    }
    let table = c.name()?;
    let cmd = if c.kw("execute") {
        parse_execute(&mut c, table)
    } else if c.kw("add") {
        if c.kw("partition") {
            if !c.kw("field") {
                return None; // Hive's ADD PARTITION (k='v')
            }
            parse_partition_term(&mut c).map(|(column, transform)| {
                let name = if c.kw("as") { c.ident() } else { None };
                IcebergCommand::Partition {
                    table,
                    change: PartitionChange::Add {
                        column,
                        transform,
                        name,
                    },
                }
            })
        } else if c.kw("columns") {
            if !c.tok(&Token::LParen) {
                return Some(Err(syntax("ADD COLUMNS needs a parenthesised column list")));
            }
            let mut changes = vec![];
            loop {
                match parse_column(&mut c) {
                    Ok(ch) => changes.push(ch),
                    Err(e) => return Some(Err(e)),
                }
                if c.tok(&Token::Comma) {
                    continue;
                }
                if c.tok(&Token::RParen) {
                    break;
                }
                return Some(Err(syntax("expected , or ) in ADD COLUMNS")));
            }
            Ok(IcebergCommand::Schema { table, changes })
        } else if c.kw("column") {
            parse_column(&mut c).map(|ch| IcebergCommand::Schema {
                table,
                changes: vec![ch],
            })
        } else {
            return None;
        }
    } else if c.kw("drop") {
        if c.kw("partition") {
            if !c.kw("field") {
                return None;
            }
            parse_partition_term(&mut c).map(|(name, transform)| {
                let transform = (transform != Transform::Identity
                    || c.pos > 0 && c.toks.get(c.pos - 1) == Some(&Token::RParen))
                .then_some(transform);
                IcebergCommand::Partition {
                    table,
                    change: PartitionChange::Drop { name, transform },
                }
            })
        } else if c.kw("column") {
            match c.ident() {
                Some(name) => Ok(IcebergCommand::Schema {
                    table,
                    changes: vec![SchemaChange::DropColumn(name)],
                }),
                None => Err(syntax("DROP COLUMN needs a column name")),
            }
        } else {
            return None;
        }
    } else if c.kw("rename") {
        if !c.kw("column") {
            return None; // RENAME TO (a table rename) is not ours
        }
        match (c.ident(), c.kw("to"), c.ident()) {
            (Some(from), true, Some(to)) => Ok(IcebergCommand::Schema {
                table,
                changes: vec![SchemaChange::RenameColumn { from, to }],
            }),
            _ => Err(syntax("expected RENAME COLUMN a TO b")),
        }
    } else {
        return None;
    };
    Some(cmd.and_then(|cmd| {
        if c.at_end() {
            Ok(cmd)
        } else {
            Err(syntax("unexpected text at the end of the statement"))
        }
    }))
}

/// `name type [COMMENT 'text']`.
fn parse_column(c: &mut Cur) -> Result<SchemaChange> {
    let name = c.ident().ok_or_else(|| syntax("expected a column name"))?;
    let mut ty = String::new();
    let mut depth = 0;
    while let Some(t) = c.peek() {
        if depth == 0 && (is_kw(t, "comment") || matches!(t, Token::Comma | Token::RParen)) {
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
    let comment = if c.kw("comment") {
        Some(c.string().ok_or_else(|| syntax("COMMENT needs a string"))?)
    } else {
        None
    };
    Ok(SchemaChange::AddColumn { name, ty, comment })
}

/// `col`, `years(col)`, `bucket(16, col)`, `truncate(4, col)` → (column, transform).
fn parse_partition_term(c: &mut Cur) -> Result<(String, Transform)> {
    let head = c
        .ident()
        .ok_or_else(|| syntax("expected a partition field"))?;
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
    let column = c
        .ident()
        .ok_or_else(|| syntax(format!("{head}(…) needs a column")))?;
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
        other => {
            return Err(Error::new(
                StatusCode::Unsupported,
                format!("unknown partition transform {other}"),
            ))
        }
    };
    Ok((column, transform))
}

/// Trino's `ALTER TABLE t EXECUTE rollback_to_snapshot(id)`.
fn parse_execute(c: &mut Cur, table: Vec<String>) -> Result<IcebergCommand> {
    let proc = c
        .ident()
        .ok_or_else(|| syntax("EXECUTE needs a procedure"))?;
    if proc != "rollback_to_snapshot" {
        return Err(Error::new(
            StatusCode::Unsupported,
            format!("ALTER TABLE EXECUTE {proc} is not supported"),
        ));
    }
    let ok = c.tok(&Token::LParen);
    if c.peek().and_then(word).is_some() {
        // snapshot_id => n
        c.pos += 1;
        c.tok(&Token::RArrow);
    }
    let id = c.integer();
    match (ok, id, c.tok(&Token::RParen)) {
        (true, Some(id), true) => Ok(IcebergCommand::Rollback {
            table,
            target: RollbackTarget::Snapshot {
                id,
                ancestor_only: true,
            },
            returns_row: false,
        }),
        _ => Err(syntax("expected rollback_to_snapshot(snapshot_id)")),
    }
}

/// One CALL argument value.
enum Arg {
    Str(String),
    Int(i64),
    Time(i64),
}

fn parse_call(c: &mut Cur) -> Option<Result<IcebergCommand>> {
    let name = c.name()?;
    let proc = match name.as_slice() {
        [s, p] | [_, s, p] if s == "system" => p.clone(),
        _ => {
            return Some(Err(Error::new(
                StatusCode::Unsupported,
                format!("unknown procedure {}", name.join(".")),
            )))
        }
    };
    let known = [
        "rollback_to_snapshot",
        "set_current_snapshot",
        "rollback_to_timestamp",
    ];
    if !known.contains(&proc.as_str()) {
        return Some(Err(Error::new(
            StatusCode::Unsupported,
            format!("procedure system.{proc} is not supported"),
        )));
    }
    Some(parse_call_args(c, &proc))
}

fn parse_call_args(c: &mut Cur, proc: &str) -> Result<IcebergCommand> {
    if !c.tok(&Token::LParen) {
        return Err(syntax(format!("system.{proc}(…) expected")));
    }
    let mut positional: Vec<Arg> = vec![];
    let mut named: Vec<(String, Arg)> = vec![];
    if !c.tok(&Token::RParen) {
        loop {
            let key = if matches!(c.toks.get(c.pos + 1), Some(Token::RArrow)) {
                let k = c.ident().ok_or_else(|| syntax("argument name expected"))?;
                c.pos += 1;
                Some(k)
            } else {
                None
            };
            let value = if c.kw("timestamp") {
                let s = c
                    .string()
                    .ok_or_else(|| syntax("TIMESTAMP needs a string"))?;
                Arg::Time(
                    parse_timestamp(&s)
                        .ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?,
                )
            } else if let Some(s) = c.string() {
                Arg::Str(s)
            } else if let Some(n) = c.integer() {
                Arg::Int(n)
            } else {
                return Err(syntax(format!("unexpected argument of system.{proc}")));
            };
            match key {
                Some(k) => named.push((k, value)),
                None => positional.push(value),
            }
            if c.tok(&Token::Comma) {
                continue;
            }
            if c.tok(&Token::RParen) {
                break;
            }
            return Err(syntax(format!("expected , or ) in system.{proc}(…)")));
        }
    }
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
    let table = table
        .filter(|t| !t.is_empty())
        .ok_or_else(|| syntax(format!("system.{proc} needs a table name string")))?;
    let target = match (proc, value) {
        ("rollback_to_timestamp", Some(Arg::Time(ms))) => RollbackTarget::Timestamp(ms),
        ("rollback_to_timestamp", Some(Arg::Str(s))) => RollbackTarget::Timestamp(
            parse_timestamp(&s)
                .ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?,
        ),
        ("rollback_to_snapshot", Some(Arg::Int(id))) => RollbackTarget::Snapshot {
            id,
            ancestor_only: true,
        },
        ("set_current_snapshot", Some(Arg::Int(id))) => RollbackTarget::Snapshot {
            id,
            ancestor_only: false,
        },
        _ => {
            return Err(syntax(format!(
                "system.{proc} needs a table and a {}",
                if proc == "rollback_to_timestamp" {
                    "timestamp"
                } else {
                    "snapshot id"
                }
            )))
        }
    };
    Ok(IcebergCommand::Rollback {
        table,
        target,
        returns_row: true,
    })
}

// ------------------------------------------------------------------------------------------
// Planning and execution
// ------------------------------------------------------------------------------------------

fn table_parts(cmd: &IcebergCommand) -> &[String] {
    match cmd {
        IcebergCommand::Schema { table, .. }
        | IcebergCommand::Partition { table, .. }
        | IcebergCommand::Rollback { table, .. } => table,
    }
}

/// `schema.table` of a name as the session resolves it, if the session can see that table.
fn visible_table(ctx: &SessionContext, parts: &[String]) -> Result<String> {
    let state = ctx.state();
    let options = state.config().options();
    let (catalog, current) = (
        options.catalog.default_catalog.clone(),
        options.catalog.default_schema.clone(),
    );
    let missing = || {
        Error::new(
            StatusCode::TableNotFound,
            format!("relation \"{}\" does not exist", parts.join(".")),
        )
    };
    let (schema, table) = match parts {
        [t] => (current, t.clone()),
        [s, t] => (s.clone(), t.clone()),
        [c, s, t] if *c == catalog => (s.clone(), t.clone()),
        _ => return Err(missing()),
    };
    let visible = ctx
        .catalog(&catalog)
        .and_then(|c| c.schema(&schema))
        .is_some_and(|s| {
            rxgate_catalog::iceberg_admin::split_table_name(&table)
                .1
                .is_none()
                && s.table_exist(&table)
        });
    if !visible {
        return Err(missing());
    }
    Ok(format!("{schema}.{table}"))
}

/// Plans an Iceberg DBA statement: the table must be visible to the session (else 42P01), and
/// the session an administrator's (else 42501).
pub(crate) fn plan(ctx: &SessionContext, cmd: IcebergCommand, is_admin: bool) -> Result<Planned> {
    let name = visible_table(ctx, table_parts(&cmd))?;
    if !is_admin {
        let what = match &cmd {
            IcebergCommand::Schema { .. } | IcebergCommand::Partition { .. } => "ALTER TABLE",
            IcebergCommand::Rollback { .. } => "rolling back a table",
        };
        return Err(Error::new(
            StatusCode::PermissionDenied,
            format!("permission denied for table {name}: {what} is for administrators"),
        ));
    }
    Ok(Planned::Command(SessionCommand::Iceberg(cmd)))
}

/// Result schema: CALL returns (previous_snapshot_id, current_snapshot_id).
pub(crate) fn schema(cmd: &IcebergCommand) -> Option<SchemaRef> {
    match cmd {
        IcebergCommand::Rollback {
            returns_row: true, ..
        } => Some(Arc::new(Schema::new(vec![
            Field::new("previous_snapshot_id", DataType::Int64, true),
            Field::new("current_snapshot_id", DataType::Int64, false),
        ]))),
        _ => None,
    }
}

/// Runs an Iceberg DBA statement (planned by [`plan`], so permitted).
pub(crate) async fn execute(ctx: &SessionContext, cmd: &IcebergCommand) -> Result<QueryOutput> {
    let name = visible_table(ctx, table_parts(cmd))?;
    let lake = crate::hive::lakehouse(ctx)
        .ok_or_else(|| Error::internal("no lakehouse in this session"))?;
    // External (Hive) tables and system tables have no Iceberg metadata to change.
    if let Err(e) = lake.load_table(&name).await {
        return Err(match e.code {
            StatusCode::TableNotFound => Error::new(
                StatusCode::Unsupported,
                format!(
                    "{name} is not an Iceberg table: column, partition field and snapshot \
                     changes apply to Iceberg tables only"
                ),
            ),
            _ => e,
        });
    }
    let tag = |t: &str| Ok(QueryOutput::Command { tag: t.to_string() });
    match cmd {
        IcebergCommand::Schema { changes, .. } => {
            let id = evolve::evolve_schema(&lake, &name, changes).await?;
            tracing::info!(table = %name, schema_id = id, "schema evolved");
            tag("ALTER TABLE")
        }
        IcebergCommand::Partition { change, .. } => {
            let id = evolve::evolve_partition(&lake, &name, change).await?;
            tracing::info!(table = %name, spec_id = id, "partition spec evolved");
            tag("ALTER TABLE")
        }
        IcebergCommand::Rollback {
            target,
            returns_row,
            ..
        } => {
            let moved = match target {
                RollbackTarget::Snapshot { id, ancestor_only } => {
                    evolve::set_current_snapshot(&lake, &name, *id, *ancestor_only).await?
                }
                RollbackTarget::Timestamp(ms) => {
                    evolve::rollback_to_timestamp(&lake, &name, *ms).await?
                }
            };
            tracing::info!(table = %name, from = ?moved.previous_snapshot_id, to = moved.current_snapshot_id, "current snapshot moved");
            if !returns_row {
                return tag("ALTER TABLE EXECUTE");
            }
            let schema = schema(cmd).expect("CALL has a schema");
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![moved.previous_snapshot_id])),
                    Arc::new(Int64Array::from(vec![moved.current_snapshot_id])),
                ],
            )
            .map_err(|e| Error::internal(e.to_string()))?;
            let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
            Ok(QueryOutput::Rows {
                schema,
                stream: Box::pin(stream),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> String {
        rewrite(sql, "rxgate").unwrap().into_owned()
    }

    #[test]
    fn time_travel_is_rewritten_outside_literals() {
        assert_eq!(rw("SELECT 1"), "SELECT 1");
        assert_eq!(
            rw("SELECT count(*) FROM health.t FOR VERSION AS OF 42"),
            "SELECT count(*) FROM health.\"t@v=42\" AS \"t\""
        );
        assert_eq!(
            rw("SELECT * FROM t VERSION AS OF 42 x WHERE a = 1"),
            "SELECT * FROM \"t@v=42\" x WHERE a = 1"
        );
        assert_eq!(
            rw("select * from t for system_version as of 7 as y"),
            "select * from \"t@v=7\" as y"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR TIMESTAMP AS OF '2024-01-01 00:00:00' WHERE x"),
            "SELECT * FROM \"t@ts=1704067200000\" AS \"t\" WHERE x"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR TIMESTAMP AS OF TIMESTAMP '2024-01-01T00:00:00Z'\nJOIN u ON true"),
            "SELECT * FROM \"t@ts=1704067200000\" AS \"t\"\nJOIN u ON true"
        );
        assert_eq!(
            rw("SELECT * FROM t TIMESTAMP AS OF 1704067200"),
            "SELECT * FROM \"t@ts=1704067200000\" AS \"t\""
        );
        assert_eq!(
            rw("SELECT * FROM \"T\" FOR VERSION AS OF 1, u"),
            "SELECT * FROM \"T@v=1\" AS \"T\", u"
        );
        // Untouched: literals, comments, non-table positions.
        for sql in [
            "SELECT 'FROM t FOR VERSION AS OF 1'",
            "SELECT 1 -- FROM t FOR VERSION AS OF 1",
            "SELECT 1 /* FROM t VERSION AS OF 1 */",
            "SELECT \"from t version as of 1\"",
            "SELECT x FROM t WHERE y = 'a as of b'",
        ] {
            assert_eq!(rw(sql), sql);
        }
        assert_eq!(
            rewrite("SELECT * FROM t FOR VERSION AS OF 'main'", "rxgate")
                .unwrap_err()
                .code,
            StatusCode::Unsupported
        );
        assert_eq!(
            rewrite("SELECT * FROM t FOR TIMESTAMP AS OF 'soon'", "rxgate")
                .unwrap_err()
                .code,
            StatusCode::InvalidArgument
        );
    }

    #[test]
    fn spark_metadata_names() {
        assert_eq!(
            rw("SELECT * FROM health.t.snapshots"),
            "SELECT * FROM health.\"t$snapshots\""
        );
        assert_eq!(
            rw("SELECT * FROM rxgate.health.t.files f"),
            "SELECT * FROM rxgate.health.\"t$files\" f"
        );
        assert_eq!(
            rw("SELECT * FROM rxgate.health.files"),
            "SELECT * FROM rxgate.health.files"
        );
        assert_eq!(
            rw("SELECT files FROM health.t"),
            "SELECT files FROM health.t"
        );
        // A three-part column in a select list is not a table name.
        assert_eq!(
            rw("SELECT a, health.t.files FROM health.t"),
            "SELECT a, health.t.files FROM health.t"
        );
        assert_eq!(
            rw("SELECT * FROM u, health.t.history WHERE f(a, health.t.files)"),
            "SELECT * FROM u, health.\"t$history\" WHERE f(a, health.t.files)"
        );
        assert_eq!(
            rw("SELECT * FROM health.\"t$history\""),
            "SELECT * FROM health.\"t$history\""
        );
    }

    #[test]
    fn statements() {
        let p = |s: &str| parse(s).map(|r| r.map_err(|e| e.code));
        let t = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(p("SELECT 1"), None);
        assert_eq!(p("ALTER TABLE t ADD PARTITION (k='v')"), None);
        assert_eq!(p("ALTER TABLE t DROP PARTITION (k='v')"), None);
        assert_eq!(p("ALTER TABLE t RENAME TO u"), None);
        assert_eq!(
            p("ALTER TABLE health.t ADD COLUMN note varchar COMMENT 'n'"),
            Some(Ok(IcebergCommand::Schema {
                table: t(&["health", "t"]),
                changes: vec![SchemaChange::AddColumn {
                    name: "note".into(),
                    ty: "varchar".into(),
                    comment: Some("n".into())
                }]
            }))
        );
        assert_eq!(
            p("alter table t add columns (a decimal(10, 2), b double precision);"),
            Some(Ok(IcebergCommand::Schema {
                table: t(&["t"]),
                changes: vec![
                    SchemaChange::AddColumn {
                        name: "a".into(),
                        ty: "decimal(10,2)".into(),
                        comment: None
                    },
                    SchemaChange::AddColumn {
                        name: "b".into(),
                        ty: "double precision".into(),
                        comment: None
                    },
                ]
            }))
        );
        assert_eq!(
            p("ALTER TABLE t RENAME COLUMN a TO \"B\""),
            Some(Ok(IcebergCommand::Schema {
                table: t(&["t"]),
                changes: vec![SchemaChange::RenameColumn {
                    from: "a".into(),
                    to: "B".into()
                }]
            }))
        );
        assert_eq!(
            p("ALTER TABLE t DROP COLUMN a"),
            Some(Ok(IcebergCommand::Schema {
                table: t(&["t"]),
                changes: vec![SchemaChange::DropColumn("a".into())]
            }))
        );
        assert_eq!(
            p("ALTER TABLE t ADD PARTITION FIELD years(d) AS y"),
            Some(Ok(IcebergCommand::Partition {
                table: t(&["t"]),
                change: PartitionChange::Add {
                    column: "d".into(),
                    transform: Transform::Year,
                    name: Some("y".into())
                }
            }))
        );
        assert_eq!(
            p("ALTER TABLE t ADD PARTITION FIELD bucket(16, id)"),
            Some(Ok(IcebergCommand::Partition {
                table: t(&["t"]),
                change: PartitionChange::Add {
                    column: "id".into(),
                    transform: Transform::Bucket(16),
                    name: None
                }
            }))
        );
        assert_eq!(
            p("ALTER TABLE t DROP PARTITION FIELD state"),
            Some(Ok(IcebergCommand::Partition {
                table: t(&["t"]),
                change: PartitionChange::Drop {
                    name: "state".into(),
                    transform: None
                }
            }))
        );
        assert_eq!(
            p("ALTER TABLE t DROP PARTITION FIELD days(d)"),
            Some(Ok(IcebergCommand::Partition {
                table: t(&["t"]),
                change: PartitionChange::Drop {
                    name: "d".into(),
                    transform: Some(Transform::Day)
                }
            }))
        );
        assert_eq!(
            p("CALL system.rollback_to_snapshot('health.t', 12)"),
            Some(Ok(IcebergCommand::Rollback {
                table: t(&["health", "t"]),
                target: RollbackTarget::Snapshot {
                    id: 12,
                    ancestor_only: true
                },
                returns_row: true
            }))
        );
        assert_eq!(
            p("CALL rxgate.system.set_current_snapshot(table => 'health.t', snapshot_id => 12)"),
            Some(Ok(IcebergCommand::Rollback {
                table: t(&["health", "t"]),
                target: RollbackTarget::Snapshot {
                    id: 12,
                    ancestor_only: false
                },
                returns_row: true
            }))
        );
        assert_eq!(
            p("CALL system.rollback_to_snapshot('health', 't', 12)"),
            Some(Ok(IcebergCommand::Rollback {
                table: t(&["health", "t"]),
                target: RollbackTarget::Snapshot {
                    id: 12,
                    ancestor_only: true
                },
                returns_row: true
            }))
        );
        assert_eq!(
            p("CALL system.rollback_to_timestamp('health.t', TIMESTAMP '2024-01-01 00:00:00')"),
            Some(Ok(IcebergCommand::Rollback {
                table: t(&["health", "t"]),
                target: RollbackTarget::Timestamp(1_704_067_200_000),
                returns_row: true
            }))
        );
        assert_eq!(
            p("ALTER TABLE health.t EXECUTE rollback_to_snapshot(12)"),
            Some(Ok(IcebergCommand::Rollback {
                table: t(&["health", "t"]),
                target: RollbackTarget::Snapshot {
                    id: 12,
                    ancestor_only: true
                },
                returns_row: false
            }))
        );
        assert_eq!(
            p("CALL system.expire_snapshots('t')"),
            Some(Err(StatusCode::Unsupported))
        );
        assert_eq!(
            p("ALTER TABLE t ADD COLUMN x"),
            Some(Err(StatusCode::SyntaxError))
        );
        assert_eq!(
            p("ALTER TABLE t ADD COLUMN x struct"),
            Some(Err(StatusCode::InvalidArgument))
        );
    }
}

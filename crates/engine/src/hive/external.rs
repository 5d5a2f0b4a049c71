//! Hive's external-table statements (issue 6 §4):
//! - `CREATE EXTERNAL TABLE [IF NOT EXISTS] [db.]t (cols) [COMMENT 'c'] [PARTITIONED BY (cols)]
//!   [ROW FORMAT DELIMITED FIELDS TERMINATED BY 'c'] STORED AS PARQUET|CSV|TEXTFILE
//!   LOCATION 'url' [TBLPROPERTIES|OPTIONS ('k'='v', …)]`;
//! - `DROP TABLE [IF EXISTS] t [PURGE]` of an external table: the definition only, never a
//!   file (a DROP of anything else is not ours and goes on to the SQL planner);
//! - `MSCK [REPAIR] TABLE t [ADD|DROP|SYNC PARTITIONS]` (also Spark's `ALTER TABLE t RECOVER
//!   PARTITIONS`);
//! - `SHOW PARTITIONS t [PARTITION (k='v', …)]`;
//! - `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (k='v', …) [LOCATION 'url'] …` and
//!   `ALTER TABLE t DROP [IF EXISTS] PARTITION (k='v', …) [, PARTITION (…)] [PURGE]`. Only the
//!   partition-spec form `PARTITION (` is claimed (never Iceberg's `ADD PARTITION FIELD`).
//!
//! The definitions live in the catalog database (`rxgate_catalog::external`). Tables are
//! named and resolved through the session's catalog like any query: a table the principal
//! is not granted is absent (42P01). Creating, dropping and altering external tables and
//! MSCK are for administrators (42501).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::external::{
    discover_partitions, location_has_files, object_store, protected_locations, ExternalColumn, ExternalFormat, ExternalTableDef, HivePartition,
};
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use super::{HiveCommand, IcebergMetadata};
use crate::session::{Planned, QueryOutput, SessionCommand};

/// A partition spec as written: `(key, value)` pairs.
pub type Spec = Vec<(String, String)>;

/// An external-table statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalCommand {
    /// `CREATE EXTERNAL TABLE`; `table` is resolved to `[schema, table]` when planned.
    Create {
        /// Name parts.
        table: Vec<String>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Data columns.
        columns: Vec<ExternalColumn>,
        /// `PARTITIONED BY` columns.
        partition_columns: Vec<ExternalColumn>,
        /// `STORED AS`.
        format: String,
        /// `LOCATION`.
        location: String,
        /// `TBLPROPERTIES`, `OPTIONS`, `ROW FORMAT DELIMITED …` and `COMMENT`.
        properties: BTreeMap<String, String>,
    },
    /// `DROP TABLE` of an external table.
    Drop {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `MSCK REPAIR TABLE t [ADD|DROP|SYNC PARTITIONS]`.
    Repair {
        /// Name parts.
        table: Vec<String>,
        /// Register partitions found on storage.
        add: bool,
        /// Unregister partitions whose directory holds no file.
        drop: bool,
    },
    /// `SHOW PARTITIONS t [PARTITION (…)]`.
    ShowPartitions {
        /// Name parts.
        table: Vec<String>,
        /// Partial spec the partitions must match.
        spec: Spec,
    },
    /// `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (…) [LOCATION '…'] …`.
    AddPartitions {
        /// Name parts.
        table: Vec<String>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Specs with their optional location.
        partitions: Vec<(Spec, Option<String>)>,
    },
    /// `ALTER TABLE t DROP [IF EXISTS] PARTITION (…) [, PARTITION (…)]`.
    DropPartitions {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// Partial specs; every partition matching one is dropped.
        specs: Vec<Spec>,
    },
}

impl ExternalCommand {
    fn table(&self) -> &[String] {
        match self {
            Self::Create { table, .. }
            | Self::Drop { table, .. }
            | Self::Repair { table, .. }
            | Self::ShowPartitions { table, .. }
            | Self::AddPartitions { table, .. }
            | Self::DropPartitions { table, .. } => table,
        }
    }

    fn table_mut(&mut self) -> &mut Vec<String> {
        match self {
            Self::Create { table, .. }
            | Self::Drop { table, .. }
            | Self::Repair { table, .. }
            | Self::ShowPartitions { table, .. }
            | Self::AddPartitions { table, .. }
            | Self::DropPartitions { table, .. } => table,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum T {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Dot,
    Comma,
    LParen,
    RParen,
    Eq,
    Other(String),
}

struct P {
    toks: Vec<T>,
    pos: usize,
}

type Parsed<X> = std::result::Result<X, String>;

impl P {
    fn peek(&self) -> Option<&T> {
        self.toks.get(self.pos)
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(T::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn kws(&mut self, kws: &[&str]) -> bool {
        let save = self.pos;
        for k in kws {
            if !self.kw(k) {
                self.pos = save;
                return false;
            }
        }
        true
    }

    fn expect_kw(&mut self, kw: &str) -> Parsed<()> {
        if self.kw(kw) {
            Ok(())
        } else {
            Err(format!("expected {kw} at {}", self.here()))
        }
    }

    fn tok(&mut self, t: T) -> bool {
        if self.peek() == Some(&t) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, t: T, what: &str) -> Parsed<()> {
        if self.tok(t) {
            Ok(())
        } else {
            Err(format!("expected {what} at {}", self.here()))
        }
    }

    fn here(&self) -> String {
        match self.peek() {
            None => "end of statement".into(),
            Some(T::Word(w) | T::Quoted(w) | T::Num(w) | T::Other(w)) => format!("\"{w}\""),
            Some(T::Str(s)) => format!("'{s}'"),
            Some(t) => format!("{t:?}"),
        }
    }

    fn ident(&mut self) -> Parsed<String> {
        let name = match self.peek() {
            Some(T::Word(w)) => w.to_lowercase(),
            Some(T::Quoted(q)) => q.clone(),
            _ => return Err(format!("expected a name at {}", self.here())),
        };
        self.pos += 1;
        Ok(name)
    }

    fn name(&mut self) -> Parsed<Vec<String>> {
        let mut parts = vec![self.ident()?];
        while self.tok(T::Dot) {
            parts.push(self.ident()?);
        }
        if parts.len() > 3 {
            return Err(format!("improper qualified name: {}", parts.join(".")));
        }
        Ok(parts)
    }

    fn string(&mut self) -> Parsed<String> {
        match self.peek() {
            Some(T::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(format!("expected a string literal at {}", self.here())),
        }
    }

    /// A partition value: `'text'`, a number, `true`, `DATE 'x'`.
    fn value(&mut self) -> Parsed<String> {
        if self.kw("DATE") || self.kw("TIMESTAMP") {
            return self.string();
        }
        match self.peek().cloned() {
            Some(T::Str(s) | T::Num(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(T::Other(o)) if o == "-" => {
                self.pos += 1;
                match self.peek().cloned() {
                    Some(T::Num(n)) => {
                        self.pos += 1;
                        Ok(format!("-{n}"))
                    }
                    _ => Err(format!("expected a number at {}", self.here())),
                }
            }
            Some(T::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(format!("expected a partition value at {}", self.here())),
        }
    }

    /// `(k = v, …)`.
    fn spec(&mut self) -> Parsed<Spec> {
        self.expect(T::LParen, "(")?;
        let mut spec = vec![];
        loop {
            let k = self.ident()?;
            self.expect(T::Eq, "=")?;
            spec.push((k, self.value()?));
            if !self.tok(T::Comma) {
                break;
            }
        }
        self.expect(T::RParen, ")")?;
        Ok(spec)
    }

    /// A Hive type: `string`, `decimal(10,2)`, `varchar(20)`, `double precision`.
    fn hive_type(&mut self) -> Parsed<String> {
        let base = match self.peek() {
            Some(T::Word(w)) => w.to_lowercase(),
            _ => return Err(format!("expected a type at {}", self.here())),
        };
        self.pos += 1;
        if base == "double" && self.kw("PRECISION") {
            return Ok("double".into());
        }
        if matches!(self.peek(), Some(T::Other(o)) if o == "<") {
            return Err(format!("type {base}<…> is not supported for external tables"));
        }
        if self.tok(T::LParen) {
            let mut args = vec![];
            loop {
                match self.peek().cloned() {
                    Some(T::Num(n)) => {
                        self.pos += 1;
                        args.push(n);
                    }
                    _ => return Err(format!("expected a number at {}", self.here())),
                }
                if !self.tok(T::Comma) {
                    break;
                }
            }
            self.expect(T::RParen, ")")?;
            return Ok(format!("{base}({})", args.join(",")));
        }
        Ok(base)
    }

    /// `(name type [COMMENT 'c'], …)`.
    fn columns(&mut self) -> Parsed<Vec<ExternalColumn>> {
        self.expect(T::LParen, "(")?;
        let mut cols = vec![];
        loop {
            let name = self.ident()?;
            let hive_type = self.hive_type()?;
            let comment = if self.kw("COMMENT") { Some(self.string()?) } else { None };
            cols.push(ExternalColumn { name, hive_type, comment });
            if !self.tok(T::Comma) {
                break;
            }
        }
        self.expect(T::RParen, ")")?;
        Ok(cols)
    }

    /// `('k' = 'v', …)`.
    fn properties(&mut self, into: &mut BTreeMap<String, String>) -> Parsed<()> {
        self.expect(T::LParen, "(")?;
        if self.tok(T::RParen) {
            return Ok(());
        }
        loop {
            let k = match self.peek().cloned() {
                Some(T::Str(s)) => {
                    self.pos += 1;
                    s
                }
                _ => {
                    // OPTIONS (header 'true') and (format.delimiter ',') are written unquoted.
                    let mut parts = vec![self.ident()?];
                    while self.tok(T::Dot) {
                        parts.push(self.ident()?);
                    }
                    parts.join(".")
                }
            };
            self.tok(T::Eq);
            let v = self.value()?;
            into.insert(k.to_lowercase(), v);
            if !self.tok(T::Comma) {
                break;
            }
        }
        self.expect(T::RParen, ")")?;
        Ok(())
    }

    fn at_end(&self) -> bool {
        self.pos == self.toks.len()
    }

    fn end(&self) -> Parsed<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(format!("unexpected {}", self.here()))
        }
    }
}

fn tokens(sql: &str) -> Option<Vec<T>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut out: Vec<T> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => T::Word(w.value),
            Token::Word(w) => T::Quoted(w.value),
            Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => T::Str(s),
            Token::Number(n, _) => T::Num(n),
            Token::Period => T::Dot,
            Token::Comma => T::Comma,
            Token::LParen => T::LParen,
            Token::RParen => T::RParen,
            Token::Eq => T::Eq,
            Token::SemiColon => T::Other(";".into()),
            other => T::Other(other.to_string()),
        })
        .collect();
    if out.last() == Some(&T::Other(";".into())) {
        out.pop();
    }
    Some(out)
}

/// Recognises the external-table statements. `None`: not one of them (another planner's);
/// `Some(Err)`: one of them, malformed (42601).
pub(crate) fn parse(sql: &str) -> Option<Result<ExternalCommand>> {
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next()?.to_ascii_uppercase();
    if !matches!(first.as_str(), "CREATE" | "DROP" | "MSCK" | "SHOW" | "ALTER") {
        return None;
    }
    let toks = tokens(sql)?;
    let mut p = P { toks, pos: 0 };
    let syntax = |m: String| Some(Err(Error::new(StatusCode::SyntaxError, format!("syntax error: {m}"))));
    let parsed: Parsed<ExternalCommand> = if p.kws(&["CREATE", "EXTERNAL", "TABLE"]) {
        parse_create(&mut p)
    } else if p.kws(&["DROP", "TABLE"]) {
        let if_exists = p.kws(&["IF", "EXISTS"]);
        let Ok(table) = p.name() else { return None };
        p.kw("PURGE");
        if !p.at_end() {
            return None;
        }
        Ok(ExternalCommand::Drop { table, if_exists })
    } else if p.kw("MSCK") {
        (|| {
            p.kw("REPAIR");
            p.expect_kw("TABLE")?;
            let table = p.name()?;
            let (add, drop) = if p.kw("ADD") {
                (true, false)
            } else if p.kw("DROP") {
                (false, true)
            } else if p.kw("SYNC") {
                (true, true)
            } else {
                (true, false)
            };
            if !p.at_end() {
                p.expect_kw("PARTITIONS")?;
            }
            p.end()?;
            Ok(ExternalCommand::Repair { table, add, drop })
        })()
    } else if p.kws(&["SHOW", "PARTITIONS"]) {
        (|| {
            let table = p.name()?;
            let spec = if p.kw("PARTITION") { p.spec()? } else { vec![] };
            p.end()?;
            Ok(ExternalCommand::ShowPartitions { table, spec })
        })()
    } else if p.kws(&["ALTER", "TABLE"]) {
        let Ok(table) = p.name() else { return None };
        // Spark's (and EMR Hive's) spelling of MSCK REPAIR TABLE.
        if p.kws(&["RECOVER", "PARTITIONS"]) && p.at_end() {
            return Some(Ok(ExternalCommand::Repair { table, add: true, drop: false }));
        }
        // Only `ADD|DROP [IF [NOT] EXISTS] PARTITION (`: Iceberg's `ADD PARTITION FIELD`
        // and column changes belong to other statements.
        let adding = p.kw("ADD");
        if !adding && !p.kw("DROP") {
            return None;
        }
        let guarded = if adding { p.kws(&["IF", "NOT", "EXISTS"]) } else { p.kws(&["IF", "EXISTS"]) };
        if !(p.is_kw("PARTITION") && p.toks.get(p.pos + 1) == Some(&T::LParen)) {
            return None;
        }
        if adding {
            (|| {
                let mut partitions = vec![];
                while p.kw("PARTITION") {
                    let spec = p.spec()?;
                    let location = if p.kw("LOCATION") { Some(p.string()?) } else { None };
                    partitions.push((spec, location));
                }
                p.end()?;
                Ok(ExternalCommand::AddPartitions { table, if_not_exists: guarded, partitions })
            })()
        } else {
            (|| {
                let mut specs = vec![];
                loop {
                    p.expect_kw("PARTITION")?;
                    specs.push(p.spec()?);
                    if !p.tok(T::Comma) {
                        break;
                    }
                }
                p.kw("PURGE");
                p.end()?;
                Ok(ExternalCommand::DropPartitions { table, if_exists: guarded, specs })
            })()
        }
    } else {
        return None;
    };
    match parsed {
        Ok(cmd) => Some(Ok(cmd)),
        Err(m) => syntax(m),
    }
}

fn parse_create(p: &mut P) -> Parsed<ExternalCommand> {
    let if_not_exists = p.kws(&["IF", "NOT", "EXISTS"]);
    let table = p.name()?;
    let columns = p.columns()?;
    let (mut partition_columns, mut format, mut location) = (vec![], None, None);
    let mut properties = BTreeMap::new();
    while !p.at_end() {
        if p.kw("COMMENT") {
            properties.insert("comment".into(), p.string()?);
        } else if p.kws(&["PARTITIONED", "BY"]) {
            partition_columns = p.columns()?;
        } else if p.kws(&["ROW", "FORMAT"]) {
            if p.kw("DELIMITED") {
                loop {
                    if p.kws(&["FIELDS", "TERMINATED", "BY"]) {
                        properties.insert("field.delim".into(), p.string()?);
                        if p.kws(&["ESCAPED", "BY"]) {
                            properties.insert("escape.delim".into(), p.string()?);
                        }
                    } else if p.kws(&["LINES", "TERMINATED", "BY"]) {
                        let lines = p.string()?;
                        if lines != "\n" && lines != "\\n" {
                            return Err("only LINES TERMINATED BY '\\n' is supported".into());
                        }
                    } else if p.kws(&["NULL", "DEFINED", "AS"]) {
                        properties.insert("serialization.null.format".into(), p.string()?);
                    } else {
                        break;
                    }
                }
            } else if p.kw("SERDE") {
                properties.insert("serde".into(), p.string()?);
                if p.kws(&["WITH", "SERDEPROPERTIES"]) {
                    p.properties(&mut properties)?;
                }
            } else {
                return Err(format!("expected DELIMITED or SERDE at {}", p.here()));
            }
        } else if p.kws(&["STORED", "AS"]) {
            format = Some(match p.peek() {
                Some(T::Word(w)) => w.to_ascii_uppercase(),
                _ => return Err(format!("expected a file format at {}", p.here())),
            });
            p.pos += 1;
        } else if p.kw("LOCATION") {
            location = Some(p.string()?);
        } else if p.kw("TBLPROPERTIES") || p.kw("OPTIONS") {
            p.properties(&mut properties)?;
        } else {
            return Err(format!("unexpected {}", p.here()));
        }
    }
    let format = format.ok_or("STORED AS PARQUET|CSV is required")?;
    let location = location.ok_or("LOCATION is required for an external table")?;
    Ok(ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties })
}

// ------------------------------------------------------------------------------------------
// Planning
// ------------------------------------------------------------------------------------------

fn lakehouse(ctx: &SessionContext) -> Result<Lakehouse> {
    ctx.state()
        .config()
        .get_extension::<IcebergMetadata>()
        .map(|m| m.0.clone())
        .ok_or_else(|| Error::new(StatusCode::Internal, "the session has no lakehouse"))
}

fn denied(what: &str) -> Error {
    Error::new(StatusCode::PermissionDenied, format!("permission denied: {what} is for administrators"))
}

/// `[t]` → the session's current schema; `[db, t]`; `[catalog, db, t]`.
fn qualify(ctx: &SessionContext, parts: &[String]) -> Result<(String, String)> {
    let state = ctx.state();
    let options = state.config().options();
    match parts {
        [t] => Ok((options.catalog.default_schema.clone(), t.clone())),
        [s, t] => Ok((s.clone(), t.clone())),
        [c, s, t] if *c == options.catalog.default_catalog => Ok((s.clone(), t.clone())),
        _ => Err(super::no_relation(parts)),
    }
}

/// Plans an external-table statement. `Ok(None)`: not ours after all (a DROP TABLE of a
/// table that is not an external table). `admin`: whether the session's principal holds an
/// admin role.
pub(crate) async fn plan(ctx: &SessionContext, cmd: ExternalCommand, admin: bool) -> Result<Option<Planned>> {
    let lake = lakehouse(ctx)?;
    let mut cmd = cmd;
    let (schema, table) = qualify(ctx, cmd.table())?;
    match &cmd {
        ExternalCommand::Create { .. } => {
            if !admin {
                return Err(denied("CREATE EXTERNAL TABLE"));
            }
            // The engine's own schemas are not namespaces to create tables in.
            if matches!(schema.as_str(), "pg_catalog" | "information_schema" | "system") {
                return Err(Error::new(StatusCode::PermissionDenied, format!("schema {schema} is reserved")));
            }
        }
        ExternalCommand::Drop { if_exists, .. } => {
            // Only an external table the session can see is ours; `IF EXISTS` of a table the
            // session cannot see does nothing (as PostgreSQL); anything else goes on.
            let visible = super::resolve(ctx, cmd.table()).await.is_ok();
            if !visible && *if_exists {
                return Ok(Some(Planned::Command(SessionCommand::Accept("DROP TABLE".into()))));
            }
            if !visible || lake.external().get(&schema, &table).await?.is_none() {
                return Ok(None);
            }
            if !admin {
                return Err(denied("DROP TABLE"));
            }
        }
        other => {
            // The table must be visible to the session, and external.
            super::resolve(ctx, cmd.table()).await?;
            if lake.external().get(&schema, &table).await?.is_none() {
                return Err(Error::new(
                    StatusCode::Unsupported,
                    format!("{schema}.{table} is not an external table (partitions are for Hive-style external tables)"),
                ));
            }
            let what = match other {
                ExternalCommand::Repair { .. } => Some("MSCK REPAIR TABLE"),
                ExternalCommand::AddPartitions { .. } | ExternalCommand::DropPartitions { .. } => Some("ALTER TABLE"),
                _ => None,
            };
            if let Some(what) = what {
                if !admin {
                    return Err(denied(what));
                }
            }
        }
    }
    *cmd.table_mut() = vec![schema, table];
    Ok(Some(Planned::Command(SessionCommand::Hive(HiveCommand::External(cmd)))))
}

/// Result schema (`SHOW PARTITIONS`: `partition`; MSCK: `action`, `partition`); the other
/// statements return no rows.
pub(crate) fn schema(cmd: &ExternalCommand) -> SchemaRef {
    let names: &[&str] = match cmd {
        ExternalCommand::ShowPartitions { .. } => &["partition"],
        ExternalCommand::Repair { .. } => &["action", "partition"],
        _ => &[],
    };
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()))
}

// ------------------------------------------------------------------------------------------
// Execution
// ------------------------------------------------------------------------------------------

fn rows(cmd: &ExternalCommand, rows: Vec<Vec<String>>) -> Result<QueryOutput> {
    let schema = schema(cmd);
    let columns = (0..schema.fields().len())
        .map(|i| Arc::new(rows.iter().map(|r| Some(r[i].clone())).collect::<StringArray>()) as _)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::new(StatusCode::Internal, e.to_string()))?;
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
    Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
}

fn tag(t: &str) -> Result<QueryOutput> {
    Ok(QueryOutput::Command { tag: t.to_string() })
}

/// A location as a directory URL ending in `/` (a plain path becomes `file:///abs/`).
fn directory_url(location: &str) -> Result<String> {
    let mut loc = location.trim().to_string();
    if loc.is_empty() {
        return Err(Error::invalid("LOCATION must not be empty"));
    }
    if !loc.ends_with('/') {
        loc.push('/');
    }
    let url = ListingTableUrl::parse(&loc)?;
    Ok(url.as_str().to_string())
}

async fn definition(lake: &Lakehouse, cmd: &ExternalCommand) -> Result<Arc<ExternalTableDef>> {
    let [schema, table] = cmd.table() else { return Err(Error::new(StatusCode::Internal, "unresolved name")) };
    lake.external().get(schema, table).await?.ok_or_else(|| super::no_relation(cmd.table()))
}

/// Resolves a spec against the partition columns: every key known; values canonical.
/// `complete`: every partition column must be given (ADD); else a partial spec (DROP, SHOW).
fn resolve_spec(def: &ExternalTableDef, spec: &Spec, complete: bool) -> Result<Vec<Option<String>>> {
    let mut values: Vec<Option<String>> = vec![None; def.partition_columns.len()];
    for (k, v) in spec {
        let i = def
            .partition_columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(k))
            .ok_or_else(|| Error::invalid(format!("{k} is not a partition column of {}", def.qualified())))?;
        values[i] = Some(def.canonical_value(i, v)?);
    }
    if complete && values.iter().any(Option::is_none) {
        let names: Vec<&str> = def.partition_columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::invalid(format!("a partition spec must give every partition column ({})", names.join(", "))));
    }
    Ok(values)
}

fn matches(values: &[String], spec: &[Option<String>]) -> bool {
    values.iter().zip(spec).all(|(v, s)| s.as_ref().is_none_or(|s| s == v))
}

/// Runs an external-table statement planned by [`plan`].
pub(crate) async fn execute(ctx: &SessionContext, cmd: &ExternalCommand) -> Result<QueryOutput> {
    let lake = lakehouse(ctx)?;
    match cmd {
        ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties } => {
            let [schema, name] = table.as_slice() else { return Err(Error::new(StatusCode::Internal, "unresolved name")) };
            // External locations are confined: under `[external] allowed_locations`, never
            // over the warehouse or an Iceberg table (whose policy is matched by name).
            // Checked as written first, before anything parses or lists it.
            let protected = protected_locations(&lake).await?;
            let confine = lake.external().location_policy();
            confine.check(location, &protected)?;
            let def = ExternalTableDef {
                namespace: schema.clone(),
                name: name.clone(),
                columns: columns.clone(),
                partition_columns: partition_columns.clone(),
                format: ExternalFormat::parse(format)?,
                location: directory_url(location)?,
                properties: properties.clone(),
            };
            def.validate()?;
            // The location must be on a store the server knows (file://, or one configured).
            let url = ListingTableUrl::parse(&def.location)?;
            object_store(&ctx.runtime_env(), &url.object_store())?;
            confine.check(&def.location, &protected)?;
            let ns = NamespaceIdent::from_strs(schema.split('.'))?;
            let catalog = lake.catalog();
            let exists = |what: &str| Error::new(StatusCode::AlreadyExists, format!("relation \"{schema}.{name}\" already exists{what}"));
            if catalog.namespace_exists(&ns).await? && catalog.table_exists(&TableIdent::new(ns.clone(), name.clone())).await? {
                if *if_not_exists {
                    return tag("CREATE TABLE");
                }
                return Err(exists(" (an Iceberg table)"));
            }
            if !catalog.namespace_exists(&ns).await? {
                if let Err(e) = catalog.create_namespace(&ns, Default::default()).await {
                    // Another session may have created it meanwhile.
                    if !catalog.namespace_exists(&ns).await? {
                        return Err(e.into());
                    }
                }
            }
            if !lake.external().create(&def).await? && !*if_not_exists {
                return Err(exists(""));
            }
            if def.properties.get("discover.partitions").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let store = object_store(&ctx.runtime_env(), &url.object_store())?;
                let found = discover_partitions(&store, &def).await?;
                for p in &found {
                    confine.check(&p.location, &protected)?;
                }
                lake.external().add_partitions(&def, &found, true).await?;
            }
            tag("CREATE TABLE")
        }
        ExternalCommand::Drop { table, if_exists } => {
            let [schema, name] = table.as_slice() else { return Err(Error::new(StatusCode::Internal, "unresolved name")) };
            // The files stay: an external table's data is not ours.
            if !lake.external().drop_table(schema, name).await? && !*if_exists {
                return Err(super::no_relation(table));
            }
            tag("DROP TABLE")
        }
        ExternalCommand::ShowPartitions { spec, .. } => {
            let def = definition(&lake, cmd).await?;
            if def.partition_columns.is_empty() {
                return Err(Error::invalid(format!("table {} is not partitioned", def.qualified())));
            }
            let wanted = resolve_spec(&def, spec, false)?;
            let names = lake
                .external()
                .partitions(&def)
                .await?
                .into_iter()
                .filter(|p| matches(&p.values, &wanted))
                .map(|p| vec![def.partition_name(&p.values)])
                .collect();
            rows(cmd, names)
        }
        ExternalCommand::Repair { add, drop, .. } => {
            let def = definition(&lake, cmd).await?;
            if def.partition_columns.is_empty() {
                return rows(cmd, vec![]);
            }
            let url = ListingTableUrl::parse(&def.location)?;
            let store = object_store(&ctx.runtime_env(), &url.object_store())?;
            let registered = lake.external().partitions(&def).await?;
            let mut out = vec![];
            if *add {
                let found = discover_partitions(&store, &def).await?;
                let missing: Vec<HivePartition> =
                    found.into_iter().filter(|f| !registered.iter().any(|r| r.values == f.values)).collect();
                let protected = protected_locations(&lake).await?;
                let confine = lake.external().location_policy();
                for p in &missing {
                    confine.check(&p.location, &protected)?;
                }
                lake.external().add_partitions(&def, &missing, true).await?;
                out.extend(missing.iter().map(|p| vec!["added".to_string(), def.partition_name(&p.values)]));
            }
            if *drop {
                let mut gone = vec![];
                for p in &registered {
                    let store = object_store(&ctx.runtime_env(), &ListingTableUrl::parse(&p.location)?.object_store())?;
                    if !location_has_files(&store, &p.location).await? {
                        gone.push(def.partition_name(&p.values));
                    }
                }
                lake.external().drop_partitions(&def, &gone).await?;
                out.extend(gone.into_iter().map(|n| vec!["dropped".to_string(), n]));
            }
            tracing::info!(table = %def.qualified(), changes = out.len(), "MSCK REPAIR TABLE");
            rows(cmd, out)
        }
        ExternalCommand::AddPartitions { if_not_exists, partitions, .. } => {
            let def = definition(&lake, cmd).await?;
            let protected = protected_locations(&lake).await?;
            let confine = lake.external().location_policy();
            let mut parts = vec![];
            for (spec, location) in partitions {
                let values: Vec<String> = resolve_spec(&def, spec, true)?.into_iter().flatten().collect();
                let location = match location {
                    Some(l) => {
                        confine.check(l, &protected)?;
                        directory_url(l)?
                    }
                    None => def.partition_location(&values),
                };
                confine.check(&location, &protected)?;
                parts.push(HivePartition { values, location });
            }
            lake.external().add_partitions(&def, &parts, *if_not_exists).await?;
            tag("ALTER TABLE")
        }
        ExternalCommand::DropPartitions { if_exists, specs, .. } => {
            let def = definition(&lake, cmd).await?;
            let registered = lake.external().partitions(&def).await?;
            let mut names = vec![];
            for spec in specs {
                let wanted = resolve_spec(&def, spec, false)?;
                let hit: Vec<String> =
                    registered.iter().filter(|p| matches(&p.values, &wanted)).map(|p| def.partition_name(&p.values)).collect();
                if hit.is_empty() && !*if_exists {
                    let text: Vec<String> = spec.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
                    return Err(Error::new(
                        StatusCode::TableNotFound,
                        format!("no partition of {} matches ({})", def.qualified(), text.join(", ")),
                    ));
                }
                names.extend(hit);
            }
            names.sort();
            names.dedup();
            lake.external().drop_partitions(&def, &names).await?;
            tag("ALTER TABLE")
        }
    }
}

// ------------------------------------------------------------------------------------------
// DESCRIBE FORMATTED and SHOW CREATE TABLE
// ------------------------------------------------------------------------------------------

/// The definition of an external table the session has already resolved.
pub(super) async fn described(ctx: &SessionContext, schema: &str, table: &str) -> Result<Option<Arc<ExternalTableDef>>> {
    if matches!(schema, "pg_catalog" | "information_schema" | "system") {
        return Ok(None);
    }
    let Ok(lake) = lakehouse(ctx) else { return Ok(None) };
    lake.external().get(schema, table).await
}

/// DESCRIBE FORMATTED's partition section and details of an external table (partition
/// columns the session does not see are left out).
pub(super) fn describe_rows(def: &ExternalTableDef, visible: &Schema, rows: &mut Vec<Vec<Option<String>>>, partitions: bool) {
    let row = super::row;
    if partitions {
        let cols: Vec<&ExternalColumn> =
            def.partition_columns.iter().filter(|c| visible.field_with_name(&c.name).is_ok()).collect();
        if !cols.is_empty() {
            rows.push(row("", "", ""));
            rows.push(row("# Partition Information", "", ""));
            rows.push(row("# col_name", "data_type", "comment"));
            for c in cols {
                rows.push(row(&c.name, &c.hive_type, c.comment.as_deref().unwrap_or("")));
            }
        }
        return;
    }
    rows.push(row("Table Type", "EXTERNAL_TABLE", ""));
    rows.push(row("Location", &def.location, ""));
    rows.push(row("Provider", "hive", ""));
    rows.push(row("Format", &def.format.name().to_lowercase(), ""));
    if !def.properties.is_empty() {
        rows.push(row("", "", ""));
        rows.push(row("# Table Properties", "", ""));
        for (k, v) in &def.properties {
            rows.push(row(k, v, ""));
        }
    }
}

/// Hive DDL recreating an external table (columns the session sees).
pub(super) fn show_create(def: &ExternalTableDef, visible: &Schema) -> String {
    let quote = super::quote_ident;
    let col = |c: &ExternalColumn| {
        let mut s = format!("  {} {}", quote(&c.name), c.hive_type);
        if let Some(comment) = &c.comment {
            s.push_str(&format!(" COMMENT {}", super::quote_str(comment)));
        }
        s
    };
    let visible_col = |c: &&ExternalColumn| visible.field_with_name(&c.name).is_ok();
    let columns: Vec<String> = def.columns.iter().filter(visible_col).map(col).collect();
    let mut ddl = format!("CREATE EXTERNAL TABLE {}.{} (\n{})\n", quote(&def.namespace), quote(&def.name), columns.join(",\n"));
    if let Some(c) = def.properties.get("comment") {
        ddl.push_str(&format!("COMMENT {}\n", super::quote_str(c)));
    }
    let parts: Vec<String> = def.partition_columns.iter().filter(visible_col).map(col).collect();
    if !parts.is_empty() {
        ddl.push_str(&format!("PARTITIONED BY (\n{})\n", parts.join(",\n")));
    }
    ddl.push_str(&format!("STORED AS {}\n", def.format.name()));
    ddl.push_str(&format!("LOCATION {}", super::quote_str(&def.location)));
    let props: Vec<String> = def
        .properties
        .iter()
        .filter(|(k, _)| *k != "comment")
        .map(|(k, v)| format!("  {}={}", super::quote_str(k), super::quote_str(v)))
        .collect();
    if !props.is_empty() {
        ddl.push_str(&format!("\nTBLPROPERTIES (\n{})", props.join(",\n")));
    }
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> ExternalCommand {
        parse(sql).expect("ours").expect("parses")
    }

    #[test]
    fn parses_create_external_table() {
        let cmd = ok("CREATE EXTERNAL TABLE IF NOT EXISTS \"health\".\"rx\" (npi BIGINT COMMENT 'id', cost DECIMAL(10, 2), name STRING) \
                      PARTITIONED BY (delivery_date DATE, state STRING) STORED AS PARQUET LOCATION '/data/rx' \
                      TBLPROPERTIES ('skip.header.line.count'='1');");
        let ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties } = cmd else {
            panic!("not a create")
        };
        assert_eq!(table, vec!["health", "rx"]);
        assert!(if_not_exists);
        assert_eq!(columns.len(), 3);
        assert_eq!(columns[0].comment.as_deref(), Some("id"));
        assert_eq!(columns[1].hive_type, "decimal(10,2)");
        assert_eq!(partition_columns.iter().map(|c| c.hive_type.as_str()).collect::<Vec<_>>(), vec!["date", "string"]);
        assert_eq!((format.as_str(), location.as_str()), ("PARQUET", "/data/rx"));
        assert_eq!(properties.get("skip.header.line.count").map(String::as_str), Some("1"));
        let ExternalCommand::Create { properties, .. } = ok("CREATE EXTERNAL TABLE t (a INT) ROW FORMAT DELIMITED FIELDS TERMINATED BY '|' \
             STORED AS TEXTFILE LOCATION 'file:///x/' OPTIONS (header 'true')") else { panic!() };
        assert_eq!(properties.get("field.delim").map(String::as_str), Some("|"));
        assert_eq!(properties.get("header").map(String::as_str), Some("true"));
        // Ours, but malformed: a syntax error, not someone else's statement.
        assert!(matches!(parse("CREATE EXTERNAL TABLE t (a INT) LOCATION '/x'"), Some(Err(_))));
        assert!(matches!(parse("CREATE EXTERNAL TABLE t (a array<int>) STORED AS PARQUET LOCATION '/x'"), Some(Err(_))));
        assert!(parse("CREATE TABLE t (a INT)").is_none());
    }

    #[test]
    fn parses_partition_statements() {
        let spec = |s: &[(&str, &str)]| s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Spec>();
        assert_eq!(ok("MSCK REPAIR TABLE health.rx"), ExternalCommand::Repair { table: vec!["health".into(), "rx".into()], add: true, drop: false });
        assert_eq!(ok("msck repair table rx sync partitions"), ExternalCommand::Repair { table: vec!["rx".into()], add: true, drop: true });
        assert_eq!(ok("MSCK TABLE rx DROP PARTITIONS"), ExternalCommand::Repair { table: vec!["rx".into()], add: false, drop: true });
        assert_eq!(ok("SHOW PARTITIONS rx PARTITION (state='CA')"), ExternalCommand::ShowPartitions { table: vec!["rx".into()], spec: spec(&[("state", "CA")]) });
        assert_eq!(
            ok("ALTER TABLE rx ADD IF NOT EXISTS PARTITION (delivery_date='2024-01-01', state='CA') LOCATION '/d/x' PARTITION (delivery_date=DATE '2024-02-01', state='NY')"),
            ExternalCommand::AddPartitions {
                table: vec!["rx".into()],
                if_not_exists: true,
                partitions: vec![
                    (spec(&[("delivery_date", "2024-01-01"), ("state", "CA")]), Some("/d/x".into())),
                    (spec(&[("delivery_date", "2024-02-01"), ("state", "NY")]), None),
                ],
            }
        );
        assert_eq!(
            ok("ALTER TABLE rx DROP IF EXISTS PARTITION (state='CA'), PARTITION (state='NY') PURGE"),
            ExternalCommand::DropPartitions { table: vec!["rx".into()], if_exists: true, specs: vec![spec(&[("state", "CA")]), spec(&[("state", "NY")])] }
        );
        assert_eq!(ok("ALTER TABLE rx RECOVER PARTITIONS"), ExternalCommand::Repair { table: vec!["rx".into()], add: true, drop: false });
        assert_eq!(ok("DROP TABLE IF EXISTS a.b"), ExternalCommand::Drop { table: vec!["a".into(), "b".into()], if_exists: true });
        // Not ours: Iceberg partition evolution, column changes, other SHOW / DROP forms.
        assert!(parse("ALTER TABLE rx ADD PARTITION FIELD bucket(16, npi)").is_none());
        assert!(parse("ALTER TABLE rx DROP PARTITION FIELD state").is_none());
        assert!(parse("ALTER TABLE rx ADD COLUMN x INT").is_none());
        assert!(parse("SHOW TABLES").is_none());
        assert!(parse("DROP TABLE a, b").is_none());
        assert!(parse("DROP VIEW v").is_none());
    }
}

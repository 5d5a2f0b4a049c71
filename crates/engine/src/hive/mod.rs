//! Hive-compatible SQL for DBAs and analysts, installed into every session by
//! [`crate::Engine::session`]:
//! - backtick-quoted identifiers (`` `health`.`prescriber_drug` ``), turned into
//!   double-quoted ones before parsing ([`backticks`]); Hive identifiers are
//!   case-insensitive, so their text is lower-cased;
//! - `SHOW DATABASES|SCHEMAS [LIKE 'p*']`, `SHOW TABLES [IN|FROM db] [LIKE 'p*']`
//!   (`*` any text, `|` alternatives, case-insensitive), `USE db` (the session's `search_path`),
//!   `DESCRIBE [FORMATTED|EXTENDED] t` and `SHOW CREATE TABLE t` ([`parse`], [`execute`]);
//! - Hive's functions ([`functions`]).
//!
//! **Invariant:** every listing and description is built from the session's own catalog
//! (the policy's `SecuredCatalog`), never from the lakehouse: what a session may not query
//! is absent, and describing it fails exactly like describing a table that does not exist.
//! The lakehouse is consulted only for the Iceberg metadata (location, partition spec,
//! properties) of a table the session's catalog has already resolved, and only the partition
//! fields over columns the session sees are shown.

pub(crate) mod external;

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use crate::session::{Planned, QueryOutput, SessionCommand};

/// A Hive statement the engine answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiveCommand {
    /// `SHOW DATABASES|SCHEMAS [[LIKE] 'pattern']`.
    ShowDatabases {
        /// Hive wildcard pattern.
        like: Option<String>,
    },
    /// `SHOW TABLES [IN|FROM db] [[LIKE] 'pattern']`.
    ShowTables {
        /// The database (schema); the session's current one when absent.
        database: Option<String>,
        /// Hive wildcard pattern.
        like: Option<String>,
    },
    /// `USE db`: planned as `SET search_path = db` once db is known to be visible.
    Use(String),
    /// `DESCRIBE [FORMATTED|EXTENDED] [db.]t`.
    Describe {
        /// The name's parts as written (`[t]`, `[db, t]` or `[catalog, db, t]`).
        table: Vec<String>,
        /// FORMATTED / EXTENDED: partition spec, location, format, properties.
        detail: bool,
    },
    /// `SHOW CREATE TABLE [db.]t`.
    ShowCreateTable(Vec<String>),
    /// External tables: CREATE/DROP, MSCK, SHOW PARTITIONS, ALTER TABLE … PARTITION (external.rs).
    External(external::ExternalCommand),
}

/// The lakehouse, kept in the session's config for the Iceberg metadata of DESCRIBE
/// FORMATTED and SHOW CREATE TABLE.
#[derive(Debug)]
struct IcebergMetadata(Lakehouse);

/// The session's lakehouse (Iceberg DBA statements commit through it).
pub(crate) fn lakehouse(ctx: &SessionContext) -> Option<Lakehouse> {
    ctx.state().config().get_extension::<IcebergMetadata>().map(|m| m.0.clone())
}

/// Installs the Hive functions into a session and gives it the lakehouse handle that the
/// table descriptions read Iceberg metadata from.
pub(crate) fn install(ctx: &SessionContext, lake: &Lakehouse) {
    rxgate_hive_functions::register(ctx);
    ctx.state_ref().write().config_mut().set_extension(Arc::new(IcebergMetadata(lake.clone())));
}

// ------------------------------------------------------------------------------------------
// Backticks
// ------------------------------------------------------------------------------------------

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Turns Hive's backtick-quoted identifiers into PostgreSQL's double-quoted ones (lower-cased,
/// as Hive identifiers are case-insensitive; ``` `` ``` is a literal backtick). Text without a
/// backtick outside string literals, quoted identifiers and comments is returned unchanged,
/// so PostgreSQL clients are never affected.
pub(crate) fn backticks(sql: &str) -> Cow<'_, str> {
    if !sql.contains('`') {
        return Cow::Borrowed(sql);
    }
    let chars: Vec<char> = sql.chars().collect();
    let n = chars.len();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut changed = false;
    let mut i = 0;
    // Copies chars[i..] up to and including the closing `quote` (doubled = escaped).
    let copy_quoted = |out: &mut String, mut i: usize, quote: char, backslash: bool| -> usize {
        out.push(chars[i]);
        i += 1;
        while i < n {
            let ch = chars[i];
            out.push(ch);
            i += 1;
            if backslash && ch == '\\' && i < n {
                out.push(chars[i]);
                i += 1;
            } else if ch == quote {
                if i < n && chars[i] == quote {
                    out.push(quote);
                    i += 1;
                } else {
                    break;
                }
            }
        }
        i
    };
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' => {
                // E'…' strings take backslash escapes.
                let escapes =
                    i > 0 && matches!(chars[i - 1], 'e' | 'E') && (i < 2 || !is_word_char(chars[i - 2]));
                i = copy_quoted(&mut out, i, '\'', escapes);
            }
            '"' => i = copy_quoted(&mut out, i, '"', false),
            '-' if next == Some('-') => {
                while i < n && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                // PostgreSQL block comments nest.
                let mut depth = 0;
                while i < n {
                    match (chars[i], chars.get(i + 1).copied()) {
                        ('/', Some('*')) => {
                            depth += 1;
                            out.push_str("/*");
                            i += 2;
                        }
                        ('*', Some('/')) => {
                            depth -= 1;
                            out.push_str("*/");
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (ch, _) => {
                            out.push(ch);
                            i += 1;
                        }
                    }
                }
            }
            '$' if i == 0 || !is_word_char(chars[i - 1]) => {
                // Dollar quoting: $tag$ … $tag$ (not $1, a parameter).
                let mut j = i + 1;
                while j < n && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let is_quote = j < n && chars[j] == '$' && !next.is_some_and(|d| d.is_ascii_digit());
                if !is_quote {
                    out.push(c);
                    i += 1;
                    continue;
                }
                let tag: Vec<char> = chars[i..=j].to_vec();
                let body_start = j + 1;
                let mut k = body_start;
                let end = loop {
                    if k + tag.len() > n {
                        break n;
                    }
                    if chars[k..k + tag.len()] == tag[..] {
                        break k + tag.len();
                    }
                    k += 1;
                };
                out.extend(&chars[i..end]);
                i = end;
            }
            '`' => {
                let mut name = String::new();
                let mut j = i + 1;
                let mut closed = false;
                while j < n {
                    if chars[j] == '`' {
                        if chars.get(j + 1) == Some(&'`') {
                            name.push('`');
                            j += 2;
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    name.push(chars[j]);
                    j += 1;
                }
                if !closed {
                    // Left as it is: the parser reports the stray backtick.
                    out.extend(&chars[i..]);
                    break;
                }
                out.push('"');
                out.push_str(&name.to_lowercase().replace('"', "\"\""));
                out.push('"');
                changed = true;
                i = j + 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(sql)
    }
}

// ------------------------------------------------------------------------------------------
// Statements
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An unquoted word: upper-case for keywords, lower-case as a name.
    Word(String),
    /// A double-quoted identifier, exact.
    Quoted(String),
    Str(String),
    Dot,
    Semi,
    Other,
}

struct Cursor {
    toks: Vec<Tok>,
    pos: usize,
}

impl Cursor {
    fn peek_kw(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn kw(&mut self, options: &[&str]) -> Option<String> {
        let w = self.peek_kw()?;
        if options.contains(&w.as_str()) {
            self.pos += 1;
            return Some(w);
        }
        None
    }

    fn ident(&mut self) -> Option<String> {
        let name = match self.toks.get(self.pos)? {
            Tok::Word(w) => w.to_lowercase(),
            Tok::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(name)
    }

    fn name(&mut self) -> Option<Vec<String>> {
        let mut parts = vec![self.ident()?];
        while self.toks.get(self.pos) == Some(&Tok::Dot) {
            self.pos += 1;
            parts.push(self.ident()?);
        }
        (parts.len() <= 3).then_some(parts)
    }

    /// `[LIKE] 'pattern'`, optional.
    fn like(&mut self) -> Option<Option<String>> {
        let had_like = self.kw(&["LIKE"]).is_some();
        match self.toks.get(self.pos) {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Some(Some(s.clone()))
            }
            _ if had_like => None,
            _ => Some(None),
        }
    }

    fn at_end(&self) -> bool {
        self.pos == self.toks.len()
    }
}

/// Recognises the Hive statements, which sqlparser's PostgreSQL dialect does not know.
/// Anything else (including every PostgreSQL statement) is `None`.
pub(crate) fn parse(sql: &str) -> Option<HiveCommand> {
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next()?.to_ascii_uppercase();
    if !matches!(first.as_str(), "SHOW" | "USE" | "DESCRIBE" | "DESC") {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let toks: Vec<Tok> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => Tok::Word(w.value),
            Token::Word(w) => Tok::Quoted(w.value),
            Token::SingleQuotedString(s) => Tok::Str(s),
            Token::Period => Tok::Dot,
            Token::SemiColon => Tok::Semi,
            _ => Tok::Other,
        })
        .collect();
    let mut toks = toks;
    if toks.last() == Some(&Tok::Semi) {
        toks.pop();
    }
    let mut c = Cursor { toks, pos: 0 };
    let cmd = match c.kw(&["SHOW", "USE", "DESCRIBE", "DESC"])?.as_str() {
        "SHOW" => match c.kw(&["DATABASES", "SCHEMAS", "TABLES", "CREATE"])?.as_str() {
            "DATABASES" | "SCHEMAS" => HiveCommand::ShowDatabases { like: c.like()? },
            "TABLES" => {
                let database = match c.kw(&["IN", "FROM"]) {
                    Some(_) => Some(c.ident()?),
                    None => None,
                };
                HiveCommand::ShowTables { database, like: c.like()? }
            }
            _ => {
                c.kw(&["TABLE"])?;
                HiveCommand::ShowCreateTable(c.name()?)
            }
        },
        "USE" => HiveCommand::Use(c.ident()?),
        _ => {
            c.kw(&["TABLE"]);
            let option = c.pos;
            let detail = c.kw(&["FORMATTED", "EXTENDED"]).is_some();
            // `DESCRIBE formatted` describes a table called formatted.
            let detail = if detail && c.at_end() {
                c.pos = option;
                false
            } else {
                detail
            };
            HiveCommand::Describe { table: c.name()?, detail }
        }
    };
    c.at_end().then_some(cmd)
}

/// Plans a Hive statement: `USE db` becomes `SET search_path` (after checking the session may
/// see db); the others run when executed.
pub(crate) fn plan(ctx: &SessionContext, cmd: HiveCommand) -> Result<Planned> {
    match cmd {
        HiveCommand::Use(db) => {
            if !visible_schemas(ctx).contains(&db) {
                return Err(no_database(&db));
            }
            Ok(Planned::Command(SessionCommand::Set { name: "search_path".into(), value: Some(db) }))
        }
        other => Ok(Planned::Command(SessionCommand::Hive(other))),
    }
}

/// Result schema of a Hive statement (Hive's column names).
pub(crate) fn schema(cmd: &HiveCommand) -> SchemaRef {
    let names: &[&str] = match cmd {
        HiveCommand::ShowDatabases { .. } => &["database_name"],
        HiveCommand::ShowTables { .. } => &["tab_name"],
        HiveCommand::Describe { .. } => &["col_name", "data_type", "comment"],
        HiveCommand::ShowCreateTable(_) => &["createtab_stmt"],
        HiveCommand::Use(_) => &[],
        HiveCommand::External(cmd) => return external::schema(cmd),
    };
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()))
}

/// Runs a Hive statement against the session's catalog.
pub(crate) async fn execute(ctx: &SessionContext, cmd: &HiveCommand) -> Result<QueryOutput> {
    let rows: Vec<Vec<Option<String>>> = match cmd {
        HiveCommand::ShowDatabases { like } => visible_schemas(ctx)
            .into_iter()
            .filter(|s| like.as_deref().is_none_or(|p| hive_like(p, s)))
            .map(|s| vec![Some(s)])
            .collect(),
        HiveCommand::ShowTables { database, like } => show_tables(ctx, database.as_deref())?
            .into_iter()
            .filter(|t| like.as_deref().is_none_or(|p| hive_like(p, t)))
            .map(|t| vec![Some(t)])
            .collect(),
        HiveCommand::Describe { table, detail } => describe(ctx, table, *detail).await?,
        HiveCommand::ShowCreateTable(table) => vec![vec![Some(show_create_table(ctx, table).await?)]],
        HiveCommand::Use(_) => return Err(Error::new(StatusCode::Internal, "USE is planned as SET")),
        HiveCommand::External(cmd) => return external::execute(ctx, cmd).await,
    };
    let schema = schema(cmd);
    let columns = (0..schema.fields().len())
        .map(|i| Arc::new(rows.iter().map(|r| r[i].clone()).collect::<StringArray>()) as _)
        .collect();
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::new(StatusCode::Internal, e.to_string()))?;
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
    Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
}

fn no_database(db: &str) -> Error {
    Error::new(StatusCode::TableNotFound, format!("database \"{db}\" does not exist"))
}

fn no_relation(parts: &[String]) -> Error {
    Error::new(StatusCode::TableNotFound, format!("relation \"{}\" does not exist", parts.join(".")))
}

/// The schemas the session's catalog shows (policy-filtered), plus information_schema.
fn visible_schemas(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let options = state.config().options();
    let mut names = ctx.catalog(&options.catalog.default_catalog).map(|c| c.schema_names()).unwrap_or_default();
    if options.catalog.information_schema && !names.iter().any(|n| n == "information_schema") {
        names.push("information_schema".into());
    }
    names.sort();
    names.dedup();
    names
}

fn show_tables(ctx: &SessionContext, database: Option<&str>) -> Result<Vec<String>> {
    let state = ctx.state();
    let options = state.config().options();
    let (catalog, current) = (options.catalog.default_catalog.clone(), options.catalog.default_schema.clone());
    let db = database.unwrap_or(&current);
    if !visible_schemas(ctx).iter().any(|s| s == db) {
        // The current schema may hold nothing this session can see: then it lists nothing.
        return match database {
            Some(db) => Err(no_database(db)),
            None => Ok(vec![]),
        };
    }
    let schema = state.schema_for_ref(TableReference::full(catalog.as_str(), db, "_"))?;
    let mut names = schema.table_names();
    names.sort();
    Ok(names)
}

/// Hive's SHOW pattern: `*` any text, `|` separates alternatives, case-insensitive (`%` is
/// taken as `*` too).
pub(crate) fn hive_like(pattern: &str, name: &str) -> bool {
    fn glob(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*' | '%', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some((c, rest)) => s.first().is_some_and(|f| f == c) && glob(rest, &s[1..]),
        }
    }
    let name: Vec<char> = name.to_lowercase().chars().collect();
    pattern.split('|').any(|alt| {
        let p: Vec<char> = alt.trim().to_lowercase().chars().collect();
        glob(&p, &name)
    })
}

/// A table resolved through the session's catalog.
struct Resolved {
    schema: String,
    table: String,
    provider: Arc<dyn TableProvider>,
}

/// Resolves `[t]`, `[db, t]` or `[catalog, db, t]` the way a query would: through the
/// session's (policy-filtered) catalog. Missing and invisible tables give the same error.
async fn resolve(ctx: &SessionContext, parts: &[String]) -> Result<Resolved> {
    let state = ctx.state();
    let options = state.config().options();
    let (catalog, current) = (options.catalog.default_catalog.clone(), options.catalog.default_schema.clone());
    let (schema, table) = match parts {
        [t] => (current, t.clone()),
        [s, t] => (s.clone(), t.clone()),
        [c, s, t] if *c == catalog => (s.clone(), t.clone()),
        _ => return Err(no_relation(parts)),
    };
    if !visible_schemas(ctx).contains(&schema) {
        return Err(no_relation(parts));
    }
    let provider = state
        .schema_for_ref(TableReference::full(catalog.as_str(), schema.as_str(), table.as_str()))
        .map_err(|_| no_relation(parts))?
        .table(&table)
        .await?
        .ok_or_else(|| no_relation(parts))?;
    Ok(Resolved { schema, table, provider })
}

/// The Iceberg table behind a resolved lakehouse table, if it is one.
async fn iceberg_table(ctx: &SessionContext, r: &Resolved) -> Result<Option<iceberg::table::Table>> {
    if matches!(r.schema.as_str(), "pg_catalog" | "information_schema" | "system") {
        return Ok(None);
    }
    let Some(meta) = ctx.state().config().get_extension::<IcebergMetadata>() else { return Ok(None) };
    match meta.0.load_table(&format!("{}.{}", r.schema, r.table)).await {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.code == StatusCode::TableNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Hive's name of an Arrow type (`string`, `bigint`, `array<string>`, `decimal(10,2)`, …).
pub(crate) fn hive_type(t: &DataType) -> String {
    use DataType::*;
    match t {
        Null => "void".into(),
        Boolean => "boolean".into(),
        Int8 => "tinyint".into(),
        Int16 | UInt8 => "smallint".into(),
        Int32 | UInt16 => "int".into(),
        Int64 | UInt32 => "bigint".into(),
        UInt64 => "decimal(20,0)".into(),
        Float16 | Float32 => "float".into(),
        Float64 => "double".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => format!("decimal({p},{s})"),
        Utf8 | LargeUtf8 | Utf8View => "string".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "binary".into(),
        Date32 | Date64 => "date".into(),
        Timestamp(_, None) => "timestamp".into(),
        Timestamp(_, Some(_)) => "timestamp with local time zone".into(),
        Time32(_) | Time64(_) => "string".into(),
        Interval(_) | Duration(_) => "interval".into(),
        List(f) | LargeList(f) | FixedSizeList(f, _) | ListView(f) | LargeListView(f) => {
            format!("array<{}>", hive_type(f.data_type()))
        }
        Struct(fields) => format!(
            "struct<{}>",
            fields.iter().map(|f| format!("{}:{}", f.name(), hive_type(f.data_type()))).collect::<Vec<_>>().join(",")
        ),
        Map(entries, _) => match entries.data_type() {
            Struct(kv) if kv.len() == 2 => format!("map<{},{}>", hive_type(kv[0].data_type()), hive_type(kv[1].data_type())),
            other => hive_type(other),
        },
        Dictionary(_, v) => hive_type(v),
        other => other.to_string().to_lowercase(),
    }
}

fn row(a: &str, b: &str, c: &str) -> Vec<Option<String>> {
    vec![Some(a.to_string()), Some(b.to_string()), Some(c.to_string())]
}

/// A partition field over a column the session sees: (column, Iceberg transform).
fn partition_fields(table: &iceberg::table::Table, visible: &Schema) -> Vec<(String, String)> {
    let md = table.metadata();
    md.default_partition_spec()
        .fields()
        .iter()
        .filter_map(|pf| {
            let source = md.current_schema().field_by_id(pf.source_id)?.name.clone();
            let transform = pf.transform.to_string();
            (transform != "void" && visible.field_with_name(&source).is_ok()).then_some((source, transform))
        })
        .collect()
}

fn file_format(table: &iceberg::table::Table) -> String {
    table.metadata().properties().get("write.format.default").cloned().unwrap_or_else(|| "parquet".into()).to_lowercase()
}

async fn describe(ctx: &SessionContext, parts: &[String], detail: bool) -> Result<Vec<Vec<Option<String>>>> {
    let r = resolve(ctx, parts).await?;
    let schema = r.provider.schema();
    let mut rows: Vec<Vec<Option<String>>> = schema
        .fields()
        .iter()
        .map(|f| vec![Some(f.name().clone()), Some(hive_type(f.data_type())), f.metadata().get("doc").cloned()])
        .collect();
    if !detail {
        return Ok(rows);
    }
    let iceberg = iceberg_table(ctx, &r).await?;
    let hive = if iceberg.is_none() { external::described(ctx, &r.schema, &r.table).await? } else { None };
    if let Some(def) = &hive {
        external::describe_rows(def, &schema, &mut rows, true);
    }
    if let Some(t) = &iceberg {
        let fields = partition_fields(t, &schema);
        if !fields.is_empty() {
            rows.push(row("", "", ""));
            rows.push(row("# Partition Information", "", ""));
            rows.push(row("# col_name", "data_type", "comment"));
            for (col, transform) in fields {
                let ty = schema.field_with_name(&col).map(|f| hive_type(f.data_type())).unwrap_or_default();
                rows.push(row(&col, &ty, &format!("transform: {transform}")));
            }
        }
    }
    rows.push(row("", "", ""));
    rows.push(row("# Detailed Table Information", "", ""));
    rows.push(row("Database", &r.schema, ""));
    rows.push(row("Table", &r.table, ""));
    match &iceberg {
        Some(t) => {
            let md = t.metadata();
            rows.push(row("Table Type", "ICEBERG", ""));
            rows.push(row("Location", md.location(), ""));
            rows.push(row("Provider", "iceberg", ""));
            rows.push(row("Format", &file_format(t), ""));
            rows.push(row("Format Version", &(md.format_version() as u8).to_string(), ""));
            let snapshot = md.current_snapshot_id().map(|s| s.to_string()).unwrap_or_else(|| "none".into());
            rows.push(row("Current Snapshot", &snapshot, ""));
            rows.push(row("Snapshots", &md.snapshots().len().to_string(), ""));
            let updated = chrono::DateTime::from_timestamp_millis(md.last_updated_ms())
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            rows.push(row("Last Updated", &updated, ""));
            if let Some(loc) = t.metadata_location() {
                rows.push(row("Metadata Location", loc, ""));
            }
            let mut props: Vec<(&String, &String)> = md.properties().iter().collect();
            props.sort();
            rows.push(row("", "", ""));
            rows.push(row("# Table Properties", "", ""));
            for (k, v) in props {
                rows.push(row(k, v, ""));
            }
        }
        None if hive.is_some() => external::describe_rows(hive.as_deref().expect("checked"), &schema, &mut rows, false),
        None => {
            let kind = match r.provider.table_type() {
                TableType::Base => "TABLE",
                TableType::View => "VIEW",
                TableType::Temporary => "TEMPORARY",
            };
            let kind = if matches!(r.schema.as_str(), "pg_catalog" | "information_schema") { "SYSTEM TABLE" } else { kind };
            rows.push(row("Table Type", kind, ""));
        }
    }
    Ok(rows)
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Hive string literal.
fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn show_create_table(ctx: &SessionContext, parts: &[String]) -> Result<String> {
    let r = resolve(ctx, parts).await?;
    let schema = r.provider.schema();
    let iceberg = iceberg_table(ctx, &r).await?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut c = format!("  {} {}", quote_ident(f.name()), hive_type(f.data_type()));
            if let Some(doc) = f.metadata().get("doc") {
                c.push_str(&format!(" COMMENT {}", quote_str(doc)));
            }
            c
        })
        .collect();
    let name = format!("{}.{}", quote_ident(&r.schema), quote_ident(&r.table));
    let Some(t) = iceberg else {
        if let Some(def) = external::described(ctx, &r.schema, &r.table).await? {
            return Ok(external::show_create(&def, &schema));
        }
        return Ok(format!("CREATE TABLE {name} (\n{})", columns.join(",\n")));
    };
    let md = t.metadata();
    let mut ddl = format!("CREATE EXTERNAL TABLE {name} (\n{})\n", columns.join(",\n"));
    // Hive keeps the table comment in the `comment` property and shows it as a clause.
    if let Some(comment) = md.properties().get("comment") {
        ddl.push_str(&format!("COMMENT {}\n", quote_str(comment)));
    }
    let spec: Vec<String> = partition_fields(&t, &schema)
        .into_iter()
        .map(|(col, transform)| {
            let col = quote_ident(&col);
            match transform.split_once('[') {
                _ if transform == "identity" => col,
                Some((f, arg)) => format!("{f}({}, {col})", arg.trim_end_matches(']')),
                None => format!("{transform}({col})"),
            }
        })
        .collect();
    if !spec.is_empty() {
        ddl.push_str(&format!("PARTITIONED BY SPEC ({})\n", spec.join(", ")));
    }
    ddl.push_str("STORED BY ICEBERG\n");
    ddl.push_str(&format!("STORED AS {}\n", file_format(&t).to_uppercase()));
    ddl.push_str(&format!("LOCATION {}\n", quote_str(md.location())));
    let mut props: Vec<(String, String)> =
        md.properties().iter().filter(|(k, _)| *k != "comment").map(|(k, v)| (k.clone(), v.clone())).collect();
    props.push(("format-version".into(), (md.format_version() as u8).to_string()));
    props.sort();
    let props: Vec<String> = props.iter().map(|(k, v)| format!("  {}={}", quote_str(k), quote_str(v))).collect();
    ddl.push_str(&format!("TBLPROPERTIES (\n{})", props.join(",\n")));
    Ok(ddl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backticks_become_double_quotes_outside_literals() {
        assert_eq!(backticks("SELECT 1"), "SELECT 1");
        assert!(matches!(backticks("SELECT '`'"), Cow::Borrowed(_)));
        assert_eq!(backticks("SELECT * FROM `health`.`Prescriber_Drug`"), "SELECT * FROM \"health\".\"prescriber_drug\"");
        assert_eq!(backticks("SELECT `a b`, '`x`', \"`y`\" FROM t"), "SELECT \"a b\", '`x`', \"`y`\" FROM t");
        assert_eq!(backticks("SELECT 'it''s `x`', `c`"), "SELECT 'it''s `x`', \"c\"");
        assert_eq!(backticks(r"SELECT E'\' `x`', `c`"), r#"SELECT E'\' `x`', "c""#);
        assert_eq!(backticks("SELECT $$ `x` $$, $tag$ `y` $tag$, `z`"), "SELECT $$ `x` $$, $tag$ `y` $tag$, \"z\"");
        assert_eq!(backticks("SELECT $1, `z` -- `c`\n/* `d` /* `e` */ */ FROM t"), "SELECT $1, \"z\" -- `c`\n/* `d` /* `e` */ */ FROM t");
        assert_eq!(backticks("SELECT `we``ird`, `q\"`"), "SELECT \"we`ird\", \"q\"\"\"");
        assert_eq!(backticks("SELECT `open"), "SELECT `open");
    }

    #[test]
    fn recognises_hive_statements() {
        use HiveCommand::*;
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse("SHOW DATABASES"), Some(ShowDatabases { like: None }));
        assert_eq!(parse("show schemas like 'h*';"), Some(ShowDatabases { like: Some("h*".into()) }));
        assert_eq!(parse("SHOW TABLES"), Some(ShowTables { database: None, like: None }));
        assert_eq!(parse("SHOW TABLES IN health 'c*|t*'"), Some(ShowTables { database: Some("health".into()), like: Some("c*|t*".into()) }));
        assert_eq!(parse("SHOW TABLES FROM \"Health\" LIKE 'p*'"), Some(ShowTables { database: Some("Health".into()), like: Some("p*".into()) }));
        assert_eq!(parse("USE Health"), Some(Use("health".into())));
        assert_eq!(parse("DESCRIBE health.prescriber_drug"), Some(Describe { table: v(&["health", "prescriber_drug"]), detail: false }));
        assert_eq!(parse("desc formatted city_report"), Some(Describe { table: v(&["city_report"]), detail: true }));
        assert_eq!(parse("DESCRIBE TABLE EXTENDED rxgate.health.t"), Some(Describe { table: v(&["rxgate", "health", "t"]), detail: true }));
        assert_eq!(parse("DESCRIBE formatted"), Some(Describe { table: v(&["formatted"]), detail: false }));
        assert_eq!(parse("SHOW CREATE TABLE \"health\".\"t\""), Some(ShowCreateTable(v(&["health", "t"]))));
        // Not ours: PostgreSQL's SHOW, queries, malformed statements.
        assert_eq!(parse("SHOW search_path"), None);
        assert_eq!(parse("SHOW ALL"), None);
        assert_eq!(parse("SELECT 1"), None);
        assert_eq!(parse("SHOW TABLES IN"), None);
        assert_eq!(parse("SHOW TABLES LIKE"), None);
        assert_eq!(parse("DESCRIBE SELECT 1"), None);
        assert_eq!(parse("USE a b"), None);
        assert_eq!(parse("DESCRIBE a.b.c.d"), None);
    }

    #[test]
    fn hive_patterns() {
        assert!(hive_like("p*", "prescriber_drug"));
        assert!(hive_like("P*", "prescriber_drug"));
        assert!(!hive_like("p*", "city_report"));
        assert!(hive_like("c*|t*", "top_prescribers"));
        assert!(hive_like("*report", "city_report"));
        assert!(hive_like("city_report", "city_report"));
        assert!(!hive_like("city", "city_report"));
        assert!(hive_like("%drug%", "prescriber_drug"));
    }

    #[test]
    fn hive_type_names() {
        use datafusion::arrow::datatypes::TimeUnit;
        assert_eq!(hive_type(&DataType::Utf8), "string");
        assert_eq!(hive_type(&DataType::Int64), "bigint");
        assert_eq!(hive_type(&DataType::Decimal128(10, 2)), "decimal(10,2)");
        assert_eq!(hive_type(&DataType::Timestamp(TimeUnit::Microsecond, None)), "timestamp");
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        assert_eq!(hive_type(&list), "array<string>");
    }
}

//! Hive's SHOW and DESCRIBE for DBAs and analysts: `SHOW DATABASES|SCHEMAS [LIKE 'p*']`,
//! `SHOW TABLES [IN|FROM db] [LIKE 'p*']` (`*` any text, `|` alternatives,
//! case-insensitive), `USE db` (the session's `search_path`), `DESCRIBE [FORMATTED|EXTENDED]
//! t` and `SHOW CREATE TABLE t`.
//!
//! **Invariant:** every listing and description is built from the session's own catalog
//! (the policy's `SecuredCatalog`), never from the lakehouse: what a session may not query
//! is absent, and describing it fails exactly like describing a table that does not exist.
//! The lakehouse is consulted only for the Iceberg metadata (location, partition spec,
//! properties) of a table the session's catalog has already resolved, and only the partition
//! fields over columns the session sees are shown.

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::logical_expr::TableType;
use datafusion::prelude::SessionContext;
use rxgate_catalog::external::{ExternalColumn, ExternalTableDef};
use rxgate_common::{Error, Result, StatusCode};
use std::sync::Arc;

use super::{is_engine_schema, lakehouse, resolve, text_rows, text_schema, visible_schemas, Resolved};
use crate::planned::{Planned, QueryOutput};
use crate::statement::{Command, HiveCommand, SessionCommand};

/// Plans a Hive statement: `USE db` becomes `SET search_path` (after checking the session may
/// see db); the others run when executed.
pub(crate) fn plan(ctx: &SessionContext, cmd: HiveCommand) -> Result<Planned> {
    match cmd {
        HiveCommand::Use(db) => {
            if !visible_schemas(ctx).contains(&db) {
                return Err(no_database(&db));
            }
            let set = SessionCommand::Set { name: "search_path".into(), value: Some(db) };
            Ok(Planned::Command(Command::Session(set), None))
        }
        other => {
            let schema = Some(schema(&other));
            Ok(Planned::Command(Command::Hive(other), schema))
        }
    }
}

/// Result schema of a Hive statement (Hive's column names).
fn schema(cmd: &HiveCommand) -> SchemaRef {
    text_schema(match cmd {
        HiveCommand::ShowDatabases { .. } => &["database_name"],
        HiveCommand::ShowTables { .. } => &["tab_name"],
        HiveCommand::Describe { .. } => &["col_name", "data_type", "comment"],
        HiveCommand::ShowCreateTable(_) => &["createtab_stmt"],
        HiveCommand::Use(_) => &[],
    })
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
        HiveCommand::Use(_) => return Err(Error::internal("USE is planned as SET")),
    };
    text_rows(schema(cmd), &rows)
}

fn no_database(db: &str) -> Error {
    Error::new(StatusCode::TableNotFound, format!("database \"{db}\" does not exist"))
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

/// The Iceberg table behind a resolved lakehouse table, if it is one.
async fn iceberg_table(ctx: &SessionContext, r: &Resolved) -> Result<Option<iceberg::table::Table>> {
    if is_engine_schema(&r.schema) {
        return Ok(None);
    }
    match lakehouse(ctx)?.load_table(&r.qualified()).await {
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
            Struct(kv) if kv.len() == 2 => {
                format!("map<{},{}>", hive_type(kv[0].data_type()), hive_type(kv[1].data_type()))
            }
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
    table
        .metadata()
        .properties()
        .get("write.format.default")
        .cloned()
        .unwrap_or_else(|| "parquet".into())
        .to_lowercase()
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
    let hive = if iceberg.is_none() { described(ctx, &r.schema, &r.table).await? } else { None };
    if let Some(def) = &hive {
        describe_rows(def, &schema, &mut rows, true);
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
        None if hive.is_some() => describe_rows(hive.as_deref().expect("checked"), &schema, &mut rows, false),
        None => {
            let kind = match r.provider.table_type() {
                TableType::Base => "TABLE",
                TableType::View => "VIEW",
                TableType::Temporary => "TEMPORARY",
            };
            let kind =
                if matches!(r.schema.as_str(), "pg_catalog" | "information_schema") { "SYSTEM TABLE" } else { kind };
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
    if let (TableType::View, Some(definition)) = (r.provider.table_type(), r.provider.get_table_definition()) {
        return Ok(definition.to_string());
    }
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
        if let Some(def) = described(ctx, &r.schema, &r.table).await? {
            return Ok(show_create(&def, &schema));
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

// ------------------------------------------------------------------------------------------
// External tables in DESCRIBE FORMATTED and SHOW CREATE TABLE
// ------------------------------------------------------------------------------------------

/// The definition of an external table the session has already resolved.
async fn described(ctx: &SessionContext, schema: &str, table: &str) -> Result<Option<Arc<ExternalTableDef>>> {
    if is_engine_schema(schema) {
        return Ok(None);
    }
    let Ok(lake) = lakehouse(ctx) else { return Ok(None) };
    lake.external().get(schema, table).await
}

/// DESCRIBE FORMATTED's partition section and details of an external table (partition
/// columns the session does not see are left out).
fn describe_rows(def: &ExternalTableDef, visible: &Schema, rows: &mut Vec<Vec<Option<String>>>, partitions: bool) {
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
fn show_create(def: &ExternalTableDef, visible: &Schema) -> String {
    let quote = quote_ident;
    let col = |c: &ExternalColumn| {
        let mut s = format!("  {} {}", quote(&c.name), c.hive_type);
        if let Some(comment) = &c.comment {
            s.push_str(&format!(" COMMENT {}", quote_str(comment)));
        }
        s
    };
    let visible_col = |c: &&ExternalColumn| visible.field_with_name(&c.name).is_ok();
    let columns: Vec<String> = def.columns.iter().filter(visible_col).map(col).collect();
    let mut ddl =
        format!("CREATE EXTERNAL TABLE {}.{} (\n{})\n", quote(&def.namespace), quote(&def.name), columns.join(",\n"));
    if let Some(c) = def.properties.get("comment") {
        ddl.push_str(&format!("COMMENT {}\n", quote_str(c)));
    }
    let parts: Vec<String> = def.partition_columns.iter().filter(visible_col).map(col).collect();
    if !parts.is_empty() {
        ddl.push_str(&format!("PARTITIONED BY (\n{})\n", parts.join(",\n")));
    }
    ddl.push_str(&format!("STORED AS {}\n", def.format.name()));
    ddl.push_str(&format!("LOCATION {}", quote_str(&def.location)));
    let props: Vec<String> = def
        .properties
        .iter()
        .filter(|(k, _)| *k != "comment")
        .map(|(k, v)| format!("  {}={}", quote_str(k), quote_str(v)))
        .collect();
    if !props.is_empty() {
        ddl.push_str(&format!("\nTBLPROPERTIES (\n{})", props.join(",\n")));
    }
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

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

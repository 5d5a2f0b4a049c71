//! Catalog metadata commands. Catalogs, schemas, tables and table types are read with SQL over
//! `information_schema`, planned by the session's own [`EngineSession::plan`], and table schemas
//! (GetTables `include_schema`) are the schemas of `SELECT * FROM t` planned the same way: so
//! whatever the engine hides from a session (policies, later) is hidden here too.
//! arrow-flight's builders then apply the client's filters and give the exact result schemas
//! of the Flight SQL specification. SqlInfo and the XDBC type list are static facts about the
//! server.
//!
//! Key commands (primary, exported, imported keys, cross reference) answer with no rows: the
//! lakehouse has no constraints. Their schemas are the specification's, field for field.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo,
    XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable, Searchable, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};
use futures::TryStreamExt;
use rxgate_engine::{CancelToken, EngineSession, QueryOutput};
use tonic::Status;

use crate::status::{df_status, internal, to_status};

/// The server's version, reported as FlightSqlServerVersion.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Schemas shown as "SYSTEM TABLE" rather than "TABLE".
const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "pg_catalog"];

/// Runs a catalog query through the session and collects its (small) result.
async fn rows(session: &EngineSession, sql: &str) -> Result<Vec<RecordBatch>, Status> {
    let planned = session.plan(sql).await.map_err(to_status)?;
    match session.execute_with(&planned, None, &CancelToken::new()).await.map_err(to_status)? {
        QueryOutput::Rows { stream, .. } => stream.try_collect().await.map_err(df_status),
        _ => Ok(vec![]),
    }
}

/// Column `i` of every batch, as strings (NULL stays `None`).
fn strings(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<String>>, Status> {
    let mut out = vec![];
    for b in batches {
        let col = cast(b.column(i), &DataType::Utf8).map_err(internal)?;
        let col = col.as_any().downcast_ref::<StringArray>().ok_or_else(|| internal("not a string column"))?;
        out.extend((0..col.len()).map(|r| col.is_valid(r).then(|| col.value(r).to_string())));
    }
    Ok(out)
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `WHERE` conditions narrowing catalog queries early (the builders filter again, exactly).
fn conditions(parts: &[(&str, Option<&str>, bool)]) -> String {
    let conds: Vec<String> = parts
        .iter()
        .filter_map(|(col, value, pattern)| {
            value.map(
                |v| if *pattern { format!("{col} LIKE {}", literal(v)) } else { format!("{col} = {}", literal(v)) },
            )
        })
        .collect();
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// The table type a client sees for an information_schema row.
fn table_type_expr() -> String {
    let systems = SYSTEM_SCHEMAS.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ");
    format!(
        "CASE WHEN table_schema IN ({systems}) THEN 'SYSTEM TABLE' WHEN table_type = 'BASE TABLE' THEN 'TABLE' \
         ELSE table_type END"
    )
}

/// GetCatalogs.
pub(crate) async fn catalogs(session: &EngineSession, cmd: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let batches = rows(session, "SELECT DISTINCT catalog_name FROM information_schema.schemata").await?;
    let mut builder: GetCatalogsBuilder = cmd.into_builder();
    for name in strings(&batches, 0)?.into_iter().flatten() {
        builder.append(name);
    }
    builder.build().map_err(internal)
}

/// GetDbSchemas.
pub(crate) async fn db_schemas(session: &EngineSession, cmd: CommandGetDbSchemas) -> Result<RecordBatch, Status> {
    let sql = format!(
        "SELECT catalog_name, schema_name FROM information_schema.schemata{}",
        conditions(&[
            ("catalog_name", cmd.catalog.as_deref(), false),
            ("schema_name", cmd.db_schema_filter_pattern.as_deref(), true),
        ])
    );
    let batches = rows(session, &sql).await?;
    let mut builder: GetDbSchemasBuilder = cmd.into_builder();
    for (c, s) in strings(&batches, 0)?.into_iter().zip(strings(&batches, 1)?) {
        if let (Some(c), Some(s)) = (c, s) {
            builder.append(c, s);
        }
    }
    builder.build().map_err(internal)
}

/// GetTables, with each table's schema as the session would see `SELECT *` from it when
/// `include_schema` is set.
pub(crate) async fn tables(session: &EngineSession, cmd: CommandGetTables) -> Result<RecordBatch, Status> {
    let sql = format!(
        "SELECT table_catalog, table_schema, table_name, {} AS table_type FROM information_schema.tables{}",
        table_type_expr(),
        conditions(&[
            ("table_catalog", cmd.catalog.as_deref(), false),
            ("table_schema", cmd.db_schema_filter_pattern.as_deref(), true),
            ("table_name", cmd.table_name_filter_pattern.as_deref(), true),
        ])
    );
    let batches = rows(session, &sql).await?;
    let wanted_types = cmd.table_types.clone();
    let include_schema = cmd.include_schema;
    let mut builder: GetTablesBuilder = cmd.into_builder();
    let cols: Vec<Vec<Option<String>>> = (0..4).map(|i| strings(&batches, i)).collect::<Result<_, _>>()?;
    let empty = Schema::empty();
    let rows = cols[0].iter().zip(&cols[1]).zip(&cols[2]).zip(&cols[3]);
    for (((c, s), t), ty) in rows {
        let (Some(c), Some(s), Some(t), Some(ty)) = (c, s, t, ty) else {
            continue;
        };
        if !wanted_types.is_empty() && !wanted_types.contains(ty) {
            continue;
        }
        let schema = if include_schema {
            match table_schema(session, c, s, t).await {
                Ok(schema) => schema,
                // A table that cannot be planned (broken metadata, say) is listed without
                // columns rather than failing the whole listing.
                Err(e) => {
                    tracing::warn!(table = %format!("{c}.{s}.{t}"), error = %e.message(), "no schema for table");
                    Arc::new(empty.clone())
                }
            }
        } else {
            Arc::new(empty.clone())
        };
        builder.append(c, s, t, ty, &schema).map_err(internal)?;
    }
    builder.build().map_err(internal)
}

/// The schema of `SELECT * FROM catalog.schema.table`, planned (not run) by the session.
async fn table_schema(session: &EngineSession, c: &str, s: &str, t: &str) -> Result<SchemaRef, Status> {
    let planned =
        session.plan(&format!("SELECT * FROM {}.{}.{}", ident(c), ident(s), ident(t))).await.map_err(to_status)?;
    planned.schema().map(|s| crate::wire::wire_schema(&s)).ok_or_else(|| internal("a SELECT without a result schema"))
}

/// GetTableTypes.
pub(crate) async fn table_types(session: &EngineSession, cmd: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let sql = format!("SELECT DISTINCT {} FROM information_schema.tables", table_type_expr());
    let batches = rows(session, &sql).await?;
    let mut builder = cmd.into_builder();
    for ty in strings(&batches, 0)?.into_iter().flatten() {
        builder.append(ty);
    }
    builder.build().map_err(internal)
}

/// The schema of GetPrimaryKeys, as the specification gives it.
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of GetExportedKeys, GetImportedKeys and GetCrossReference.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An empty batch of `schema`.
pub(crate) fn empty(schema: SchemaRef) -> RecordBatch {
    let columns: Vec<ArrayRef> = schema.fields().iter().map(|f| arrow::array::new_empty_array(f.data_type())).collect();
    RecordBatch::try_new(schema, columns).expect("empty columns match their schema")
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What GetSqlInfo answers: enough for the ADBC driver (server name/version, transactions,
/// cancellation) and the JDBC driver's DatabaseMetaData.
pub(crate) fn sql_info() -> &'static SqlInfoData {
    static DATA: OnceLock<SqlInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "rxgate");
        b.append(SqlInfo::FlightSqlServerVersion, VERSION);
        // The Arrow IPC format version (Schema.fbs MetadataVersion V5).
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        b.append(SqlInfo::FlightSqlServerCancel, true);
        b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
        b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
        b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
        b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        // Unquoted identifiers are folded to lower case; quoted ones keep their case.
        b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlQuotedIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32);
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
        b.append(SqlInfo::SqlKeywords, strs(KEYWORDS));
        b.append(SqlInfo::SqlNumericFunctions, strs(NUMERIC_FUNCTIONS));
        b.append(SqlInfo::SqlStringFunctions, strs(STRING_FUNCTIONS));
        b.append(SqlInfo::SqlSystemFunctions, strs(&["current_user", "current_database", "current_schema", "version"]));
        b.append(SqlInfo::SqlDatetimeFunctions, strs(DATETIME_FUNCTIONS));
        b.append(SqlInfo::SqlSearchStringEscape, "\\");
        b.append(SqlInfo::SqlExtraNameCharacters, "");
        b.append(SqlInfo::SqlSupportsColumnAliasing, true);
        b.append(SqlInfo::SqlNullPlusNullIsNull, true);
        b.append(SqlInfo::SqlSupportsConvert, HashMap::<i32, Vec<i32>>::new());
        b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
        b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
        b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
        // Bitmasks: GROUP BY unrelated | beyond select.
        b.append(SqlInfo::SqlSupportedGroupBy, 0b11i32);
        b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
        // Minimum | core grammar; ANSI-92 entry level.
        b.append(SqlInfo::SqlSupportedGrammar, 0b11i32);
        b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b1i32);
        b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
        b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32);
        b.append(SqlInfo::SqlSchemaTerm, "schema");
        b.append(SqlInfo::SqlProcedureTerm, "procedure");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlCatalogAtStart, true);
        b.append(SqlInfo::SqlSchemasSupportedActions, 0b111i32);
        b.append(SqlInfo::SqlCatalogsSupportedActions, 0b111i32);
        b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
        b.append(SqlInfo::SqlSelectForUpdateSupported, false);
        b.append(SqlInfo::SqlStoredProceduresSupported, false);
        // Subqueries in comparisons | EXISTS | IN | quantified comparisons.
        b.append(SqlInfo::SqlSupportedSubqueries, 0b1111i32);
        b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
        // UNION | UNION ALL.
        b.append(SqlInfo::SqlSupportedUnions, 0b11i32);
        for limit in [
            SqlInfo::SqlMaxBinaryLiteralLength,
            SqlInfo::SqlMaxCharLiteralLength,
            SqlInfo::SqlMaxColumnsInGroupBy,
            SqlInfo::SqlMaxColumnsInIndex,
            SqlInfo::SqlMaxColumnsInOrderBy,
            SqlInfo::SqlMaxColumnsInSelect,
            SqlInfo::SqlMaxColumnsInTable,
            SqlInfo::SqlMaxConnections,
            SqlInfo::SqlMaxCursorNameLength,
            SqlInfo::SqlMaxIndexLength,
            SqlInfo::SqlMaxProcedureNameLength,
            SqlInfo::SqlMaxRowSize,
            SqlInfo::SqlMaxStatementLength,
            SqlInfo::SqlMaxStatements,
            SqlInfo::SqlMaxTablesInSelect,
        ] {
            // 0: no known limit.
            b.append(limit, 0i64);
        }
        for name_limit in [
            SqlInfo::SqlMaxColumnNameLength,
            SqlInfo::SqlDbSchemaNameLength,
            SqlInfo::SqlMaxCatalogNameLength,
            SqlInfo::SqlMaxTableNameLength,
            SqlInfo::SqlMaxUsernameLength,
        ] {
            b.append(name_limit, 63i64);
        }
        b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
        b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
        b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
        b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
        // Forward-only result sets.
        b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32);
        b.append(SqlInfo::SqlBatchUpdatesSupported, false);
        b.append(SqlInfo::SqlSavepointsSupported, false);
        b.append(SqlInfo::SqlNamedParametersSupported, false);
        b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
        b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
        b.build().expect("static SqlInfo data is valid")
    })
}

const KEYWORDS: &[&str] = &[
    "ANALYZE", "ARRAY", "CASCADE", "DESCRIBE", "EXPLAIN", "FILTER", "GROUPS", "ILIKE", "LIMIT", "OFFSET", "QUALIFY",
    "RESET", "SHOW", "STRUCT", "UNNEST", "WINDOW",
];

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp", "floor", "ln", "log",
    "log10", "log2", "mod", "pi", "power", "radians", "random", "round", "sign", "sin", "sqrt", "tan", "trunc",
];

const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
];

const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
];

/// What GetXdbcTypeInfo answers: the SQL types the engine offers, with their Arrow meaning.
pub(crate) fn xdbc_info() -> &'static XdbcTypeInfoData {
    static DATA: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let ty = |name: &str, data_type: XdbcDataType, size: Option<i32>, radix: Option<i32>| XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: None,
            literal_suffix: None,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: false,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: radix.map(|_| false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: radix,
            interval_precision: None,
        };
        let quoted = |mut t: XdbcTypeInfo| {
            t.literal_prefix = Some("'".into());
            t.literal_suffix = Some("'".into());
            t
        };
        b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None));
        b.append(ty("TINYINT", XdbcDataType::XdbcTinyint, Some(3), Some(10)));
        b.append(ty("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), Some(10)));
        b.append(ty("INTEGER", XdbcDataType::XdbcInteger, Some(10), Some(10)));
        b.append(ty("BIGINT", XdbcDataType::XdbcBigint, Some(19), Some(10)));
        b.append(ty("REAL", XdbcDataType::XdbcReal, Some(24), Some(2)));
        b.append(ty("DOUBLE", XdbcDataType::XdbcDouble, Some(53), Some(2)));
        let mut decimal = ty("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), Some(10));
        decimal.create_params = Some(vec!["precision".into(), "scale".into()]);
        decimal.minimum_scale = Some(0);
        decimal.maximum_scale = Some(38);
        b.append(decimal);
        let mut varchar = quoted(ty("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX), None));
        varchar.case_sensitive = true;
        b.append(varchar);
        b.append(quoted(ty("BYTEA", XdbcDataType::XdbcVarbinary, Some(i32::MAX), None)));
        // XDBC_SUBCODE_DATE is the same number as YEAR (1) in the specification.
        let mut date = quoted(ty("DATE", XdbcDataType::XdbcDate, Some(10), None));
        date.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeYear);
        b.append(date);
        let mut time = quoted(ty("TIME", XdbcDataType::XdbcTime, Some(15), None));
        time.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTime);
        b.append(time);
        let mut ts = quoted(ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(26), None));
        ts.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp);
        b.append(ts);
        let mut tstz = quoted(ty("TIMESTAMPTZ", XdbcDataType::XdbcTimestamp, Some(32), None));
        tstz.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone);
        b.append(tstz);
        b.append(quoted(ty("INTERVAL", XdbcDataType::XdbcInterval, None, None)));
        b.build().expect("static XDBC type data is valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_metadata_builds() {
        let info = sql_info().record_batch(vec![SqlInfo::FlightSqlServerName as u32]).unwrap();
        assert_eq!(info.num_rows(), 1);
        assert!(xdbc_info().record_batch(None).unwrap().num_rows() >= 10);
        assert_eq!(empty(foreign_keys_schema()).num_columns(), 13);
    }

    #[test]
    fn filters_become_escaped_sql() {
        assert_eq!(
            conditions(&[("a", Some("x'y"), false), ("b", None, true), ("c", Some("p%"), true)]),
            " WHERE a = 'x''y' AND c LIKE 'p%'"
        );
        assert_eq!(conditions(&[("a", None, false)]), "");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}

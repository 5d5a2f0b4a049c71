//! Hive-style external tables: definitions and partitions kept in the catalog database (the
//! same SQLite file or PostgreSQL database as the Iceberg SQL catalog), files left where they
//! are.
//!
//! - [`ExternalTableDef`]: columns and partition columns with their Hive types, format
//!   (Parquet or CSV), location (an object-store URL) and properties (CSV header, delimiter).
//! - [`ExternalCatalog`]: the two tables `rxgate_external_tables` and
//!   `rxgate_external_partitions`, and an in-process cache of the definitions that the
//!   DataFusion catalog lists synchronously (refreshed whenever a session opens; partitions
//!   are always read from the database, so a partition added by another process is seen by
//!   the next query).
//! - [`ExternalTableProvider`] (table.rs): the DataFusion table. It reads only the registered
//!   partitions (as Hive does), prunes them with the query's filters on partition columns,
//!   lists their files through the session's object stores and scans them with DataFusion's
//!   own Parquet/CSV file scan, partition values as typed columns.
//! - [`discover_partitions`]: the `key=value/` directories under a table's location, for
//!   `MSCK REPAIR TABLE`.
//! - [`LocationPolicy`] (locations.rs): external locations are confined to the configured
//!   `[external] allowed_locations` and never overlap the warehouse or an Iceberg table;
//!   checked when a location is registered and again when a partition is scanned.

mod locations;
mod table;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use rxgate_common::{Error, Result, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::registry::{db_error, DefinitionTable, Definitions};

pub use locations::{LocationPolicy, NormalizedLocation};
pub use table::{discover_partitions, location_has_files, object_store, ExternalTableProvider};

/// Hive's name for a NULL partition value.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A column of an external table, with its Hive type as written (`string`, `decimal(10,2)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalColumn {
    /// Column name (lower case unless quoted).
    pub name: String,
    /// Hive type name, lower case.
    pub hive_type: String,
    /// `COMMENT '…'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The file format of an external table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalFormat {
    /// Apache Parquet.
    Parquet,
    /// Delimited text (`,` unless `field.delim` says otherwise).
    Csv,
}

impl ExternalFormat {
    /// `PARQUET` / `CSV` (also Hive's `TEXTFILE`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PARQUET" => Ok(Self::Parquet),
            "CSV" | "TEXTFILE" => Ok(Self::Csv),
            other => {
                Err(Error::new(StatusCode::Unsupported, format!("STORED AS {other} is not supported (PARQUET or CSV)")))
            }
        }
    }

    /// Upper-case name as in `STORED AS`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Parquet => "PARQUET",
            Self::Csv => "CSV",
        }
    }
}

/// The definition of one external table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTableDef {
    /// Schema (Iceberg namespace) it lives in.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Data columns, in file order.
    pub columns: Vec<ExternalColumn>,
    /// Partition columns (`PARTITIONED BY`), in directory order.
    pub partition_columns: Vec<ExternalColumn>,
    /// File format.
    pub format: ExternalFormat,
    /// The table's directory as a URL ending in `/` (`file:///…/`, `s3://b/p/`, `gs://…`).
    pub location: String,
    /// `TBLPROPERTIES` and `OPTIONS`, keys lower case.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl ExternalTableDef {
    /// Checks names and types: no duplicates, every type known, at least one data column.
    pub fn validate(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(Error::invalid("an external table needs at least one column"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in self.columns.iter().chain(&self.partition_columns) {
            arrow_type(&c.hive_type)?;
            if !seen.insert(c.name.to_lowercase()) {
                return Err(Error::invalid(format!(
                    "column \"{}\" specified more than once (partition columns are declared only in PARTITIONED BY)",
                    c.name
                )));
            }
        }
        self.csv_delimiter()?;
        Ok(())
    }

    /// `namespace.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The schema of the files (data columns only).
    pub fn file_schema(&self) -> Result<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, arrow_type(&c.hive_type)?, true)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The partition columns as fields.
    pub fn partition_fields(&self) -> Result<Vec<FieldRef>> {
        self.partition_columns
            .iter()
            .map(|c| Ok(Arc::new(Field::new(&c.name, arrow_type(&c.hive_type)?, true))))
            .collect()
    }

    /// The table's schema: data columns, then partition columns (Hive's order).
    pub fn table_schema(&self) -> Result<SchemaRef> {
        let mut fields: Vec<FieldRef> = self.file_schema()?.fields().iter().cloned().collect();
        fields.extend(self.partition_fields()?);
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Whether CSV files start with a header line (`skip.header.line.count` ≥ 1, or the
    /// `header` option).
    pub fn csv_header(&self) -> bool {
        let p = |k: &str| self.properties.get(k).map(|v| v.trim().to_ascii_lowercase());
        if let Some(n) = p("skip.header.line.count") {
            return n.parse::<u32>().unwrap_or(0) >= 1;
        }
        matches!(p("header").or(p("format.has_header")).as_deref(), Some("true" | "1" | "yes"))
    }

    /// The CSV field delimiter (`field.delim`, `separator.char`, `delimiter`; default `,`).
    pub fn csv_delimiter(&self) -> Result<u8> {
        let v = ["field.delim", "separator.char", "separatorchar", "delimiter", "format.delimiter"]
            .iter()
            .find_map(|k| self.properties.get(*k));
        let Some(v) = v else { return Ok(b',') };
        let v = match v.as_str() {
            "\\t" => "\t",
            "\\u0001" | "\\001" => "\u{1}",
            other => other,
        };
        match v.as_bytes() {
            [b] => Ok(*b),
            _ => Err(Error::invalid(format!("the field delimiter must be one character, not {v:?}"))),
        }
    }

    /// The directory of a partition under the table's location (`k=v/k2=v2/`, escaped).
    pub fn partition_location(&self, values: &[String]) -> String {
        // The escaped name holds `%` literally: in a URL it is `%25`.
        format!("{}{}/", self.location, self.partition_name(values).replace('%', "%25"))
    }

    /// Hive's partition name: `delivery_date=2024-01-01/state=CA` (values path-escaped).
    pub fn partition_name(&self, values: &[String]) -> String {
        self.partition_columns
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{}={}", escape_path_name(&c.name), escape_path_name(v)))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Checks a partition value against its column's type and gives its canonical text
    /// (`2024-1-5` → `2024-01-05`, `007` → `7`); Hive's default partition stays as it is.
    pub fn canonical_value(&self, column: usize, value: &str) -> Result<String> {
        let c = &self.partition_columns[column];
        if value == DEFAULT_PARTITION {
            return Ok(value.to_string());
        }
        let ty = arrow_type(&c.hive_type)?;
        let scalar = ScalarValue::Utf8(Some(value.to_string())).cast_to(&ty).map_err(|_| bad_value(c, value))?;
        if scalar.is_null() {
            return Err(bad_value(c, value));
        }
        Ok(match ty {
            DataType::Utf8 | DataType::Timestamp(..) | DataType::Decimal128(..) => value.to_string(),
            _ => scalar.to_string(),
        })
    }

    /// The typed partition values of a registered partition.
    pub fn partition_scalars(&self, values: &[String]) -> Result<Vec<ScalarValue>> {
        self.partition_columns
            .iter()
            .zip(values)
            .map(|(c, v)| {
                let ty = arrow_type(&c.hive_type)?;
                if v == DEFAULT_PARTITION {
                    return Ok(ScalarValue::try_from(&ty)?);
                }
                ScalarValue::Utf8(Some(v.clone())).cast_to(&ty).map_err(|_| bad_value(c, v))
            })
            .collect()
    }
}

fn bad_value(c: &ExternalColumn, value: &str) -> Error {
    Error::invalid(format!("partition value '{value}' is not a valid {} for column {}", c.hive_type, c.name))
}

/// One registered partition: its values (canonical text, in partition-column order) and its
/// directory URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HivePartition {
    /// Values, one per partition column.
    pub values: Vec<String>,
    /// Directory URL, ending in `/`.
    pub location: String,
}

/// The Arrow type of a Hive type name.
pub fn arrow_type(hive: &str) -> Result<DataType> {
    let t = hive.trim().to_ascii_lowercase();
    let (base, args) = match t.split_once('(') {
        Some((b, rest)) => (b.trim(), Some(rest.trim_end_matches(')').trim())),
        None => (t.as_str(), None),
    };
    Ok(match base {
        "string" | "varchar" | "char" | "text" => DataType::Utf8,
        "tinyint" => DataType::Int8,
        "smallint" => DataType::Int16,
        "int" | "integer" => DataType::Int32,
        "bigint" => DataType::Int64,
        "float" | "real" => DataType::Float32,
        "double" | "double precision" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "binary" => DataType::Binary,
        "decimal" | "numeric" => {
            let (p, s) = match args {
                None => (10, 0),
                Some(a) => {
                    let mut it = a.split(',').map(|x| x.trim().parse::<u8>());
                    let p = it.next().and_then(|r| r.ok()).unwrap_or(10);
                    let s = it.next().and_then(|r| r.ok()).unwrap_or(0);
                    (p, s as i8)
                }
            };
            if p == 0 || p > 38 || s as u8 > p {
                return Err(Error::invalid(format!("invalid type {hive}")));
            }
            DataType::Decimal128(p, s)
        }
        _ => {
            return Err(Error::new(
                StatusCode::Unsupported,
                format!("type \"{hive}\" is not supported for external tables"),
            ))
        }
    })
}

/// Hive's escaping of a partition path name (`FileUtils.escapePathName`): `/`, `=`, `%`, …
/// and control characters become `%XX`.
pub fn escape_path_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let escape = (ch as u32) < 0x20
            || matches!(
                ch,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '\u{7f}' | '{' | '[' | ']' | '^'
            );
        if escape {
            out.push_str(&format!("%{:02X}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    out
}

/// The inverse of [`escape_path_name`].
pub fn unescape_path_name(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a partition name `k=v/k2=v2` into its unescaped values, in the order of `columns`.
pub fn parse_partition_name(name: &str, columns: &[ExternalColumn]) -> Option<Vec<String>> {
    let parts: Vec<&str> = name.trim_matches('/').split('/').collect();
    if parts.len() != columns.len() {
        return None;
    }
    parts
        .iter()
        .zip(columns)
        .map(|(p, c)| {
            let (k, v) = p.split_once('=')?;
            unescape_path_name(k).eq_ignore_ascii_case(&c.name).then(|| unescape_path_name(v))
        })
        .collect()
}

/// The DataFusion table of the external table `namespace.name`, if there is one: its
/// definition and partitions as the catalog database holds them now.
pub async fn table_provider(
    lake: &crate::Lakehouse,
    namespace: &str,
    name: &str,
) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
    let external = lake.external();
    let df = |e: Error| datafusion::error::DataFusionError::External(Box::new(e));
    let Some(def) = external.get(namespace, name).await.map_err(df)? else { return Ok(None) };
    let partitions = external.partitions(&def).await.map_err(df)?;
    let warehouse = vec![("the warehouse".to_string(), lake.config().warehouse.clone())];
    let provider =
        ExternalTableProvider::try_new(def, partitions).map_err(df)?.confined(external.location_policy(), warehouse);
    Ok(Some(Arc::new(provider)))
}

/// The locations an external table must not overlap: the warehouse and every Iceberg table's
/// location (`(what, location)`, for [`LocationPolicy::check`]).
pub async fn protected_locations(lake: &crate::Lakehouse) -> Result<Vec<(String, String)>> {
    let catalog = lake.catalog();
    let mut out = vec![("the warehouse".to_string(), lake.config().warehouse.clone())];
    let mut pending = catalog.list_namespaces(None).await?;
    while let Some(ns) = pending.pop() {
        pending.extend(catalog.list_namespaces(Some(&ns)).await.unwrap_or_default());
        for ident in catalog.list_tables(&ns).await? {
            let table = catalog.load_table(&ident).await?;
            let name = format!("Iceberg table {}.{}", ident.namespace().join("."), ident.name());
            out.push((name, table.metadata().location().to_string()));
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The registry in the catalog database
// ------------------------------------------------------------------------------------------

const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS rxgate_external_tables (
    catalog_name VARCHAR(255) NOT NULL,
    table_namespace VARCHAR(255) NOT NULL,
    table_name VARCHAR(255) NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (catalog_name, table_namespace, table_name))";

const CREATE_PARTITIONS: &str = "CREATE TABLE IF NOT EXISTS rxgate_external_partitions (
    catalog_name VARCHAR(255) NOT NULL,
    table_namespace VARCHAR(255) NOT NULL,
    table_name VARCHAR(255) NOT NULL,
    partition_name VARCHAR(2000) NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (catalog_name, table_namespace, table_name, partition_name))";

impl crate::registry::Definition for ExternalTableDef {
    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

/// The external-table registry: definitions and partitions in the catalog database, and a
/// cache of the definitions for synchronous listing. Shared by every session of a process.
pub struct ExternalCatalog {
    defs: Definitions<ExternalTableDef>,
    locations: RwLock<Arc<LocationPolicy>>,
}

impl std::fmt::Debug for ExternalCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCatalog").field("catalog", &self.defs.catalog).finish()
    }
}

impl ExternalCatalog {
    /// A registry on `pool` for the catalog `catalog` (the Iceberg SQL catalog's name).
    pub(crate) fn new(pool: AnyPool, postgres: bool, catalog: &str) -> Self {
        let kind = DefinitionTable {
            table: "rxgate_external_tables",
            columns: ("table_namespace", "table_name"),
            what: "external table",
            create: &[CREATE_TABLES, CREATE_PARTITIONS],
        };
        Self { defs: Definitions::new(pool, postgres, catalog, kind), locations: RwLock::default() }
    }

    /// Sets `[external] allowed_locations` (until called, no location is allowed).
    pub fn set_allowed_locations(&self, prefixes: &[String]) -> Result<()> {
        let policy = Arc::new(LocationPolicy::new(prefixes)?);
        *self.locations.write().expect("locations lock") = policy;
        Ok(())
    }

    /// Where external tables may point.
    pub fn location_policy(&self) -> Arc<LocationPolicy> {
        self.locations.read().expect("locations lock").clone()
    }

    /// Re-reads every definition from the database into the cache.
    pub async fn refresh(&self) -> Result<()> {
        self.defs.refresh().await
    }

    /// The cached external table names of a namespace.
    pub fn names(&self, namespace: &str) -> Vec<String> {
        self.defs.names(namespace)
    }

    /// The namespaces holding cached external tables.
    pub fn namespaces(&self) -> Vec<String> {
        self.defs.namespaces()
    }

    /// Every cached definition.
    pub fn all(&self) -> Vec<Arc<ExternalTableDef>> {
        self.defs.all()
    }

    /// The cached definition of a table.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ExternalTableDef>> {
        self.defs.cached(namespace, name)
    }

    /// The definition of a table, read from the database (the cache follows).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<ExternalTableDef>>> {
        self.defs.get(namespace, name).await
    }

    /// Stores a new definition. `false` when the table already exists.
    pub async fn create(&self, def: &ExternalTableDef) -> Result<bool> {
        def.validate()?;
        self.defs.insert(def, false).await
    }

    /// Removes a definition and its partitions (never any file). `false` when it did not exist.
    pub async fn drop_table(&self, namespace: &str, name: &str) -> Result<bool> {
        self.defs.delete(namespace, name, &["rxgate_external_partitions"]).await
    }

    /// The registered partitions of a table, sorted by name.
    pub async fn partitions(&self, def: &ExternalTableDef) -> Result<Vec<HivePartition>> {
        self.defs.ready().await?;
        if def.partition_columns.is_empty() {
            return Ok(vec![HivePartition { values: vec![], location: def.location.clone() }]);
        }
        let rows = sqlx::query(&self.defs.sql(
            "SELECT partition_name, location FROM rxgate_external_partitions \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? ORDER BY partition_name",
        ))
        .bind(self.defs.catalog.clone())
        .bind(def.namespace.clone())
        .bind(def.name.clone())
        .fetch_all(&self.defs.pool)
        .await
        .map_err(db_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(db_error)?;
            let location: String = row.try_get(1).map_err(db_error)?;
            match parse_partition_name(&name, &def.partition_columns) {
                Some(values) => out.push(HivePartition { values, location }),
                None => tracing::error!(table = %def.qualified(), partition = %name, "unreadable partition skipped"),
            }
        }
        Ok(out)
    }

    /// Registers partitions; with `if_not_exists` existing ones are skipped, else one that
    /// exists fails the whole statement (nothing is added). Returns how many were added.
    pub async fn add_partitions(
        &self,
        def: &ExternalTableDef,
        parts: &[HivePartition],
        if_not_exists: bool,
    ) -> Result<usize> {
        self.defs.ready().await?;
        if def.partition_columns.is_empty() {
            return Err(Error::invalid(format!("table {} is not partitioned", def.qualified())));
        }
        let mut tx = self.defs.pool.begin().await.map_err(db_error)?;
        let mut added = 0;
        for p in parts {
            let name = def.partition_name(&p.values);
            let exists = sqlx::query(&self.defs.sql(
                "SELECT 1 FROM rxgate_external_partitions \
                 WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND partition_name = ?",
            ))
            .bind(self.defs.catalog.clone())
            .bind(def.namespace.clone())
            .bind(def.name.clone())
            .bind(name.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .is_some();
            if exists {
                if if_not_exists {
                    continue;
                }
                return Err(Error::new(
                    StatusCode::AlreadyExists,
                    format!("partition {name} of {} already exists", def.qualified()),
                ));
            }
            sqlx::query(&self.defs.sql(
                "INSERT INTO rxgate_external_partitions (catalog_name, table_namespace, table_name, partition_name, location) \
                 VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(self.defs.catalog.clone())
            .bind(def.namespace.clone())
            .bind(def.name.clone())
            .bind(name.clone())
            .bind(p.location.clone())
            .execute(&mut *tx)
            .await
            .map_err(|e| match e {
                // Another session registered it meanwhile.
                sqlx::Error::Database(d) if d.is_unique_violation() => Error::new(
                    StatusCode::AlreadyExists,
                    format!("partition {name} of {} already exists", def.qualified()),
                ),
                e => db_error(e),
            })?;
            added += 1;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(added)
    }

    /// Unregisters partitions by name (files stay). Returns how many were removed.
    pub async fn drop_partitions(&self, def: &ExternalTableDef, names: &[String]) -> Result<usize> {
        self.defs.ready().await?;
        let mut tx = self.defs.pool.begin().await.map_err(db_error)?;
        let mut dropped = 0;
        for name in names {
            let done = sqlx::query(&self.defs.sql(
                "DELETE FROM rxgate_external_partitions \
                 WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND partition_name = ?",
            ))
            .bind(self.defs.catalog.clone())
            .bind(def.namespace.clone())
            .bind(def.name.clone())
            .bind(name.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            dropped += done.rows_affected() as usize;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> ExternalTableDef {
        let col = |n: &str, t: &str| ExternalColumn { name: n.into(), hive_type: t.into(), comment: None };
        ExternalTableDef {
            namespace: "health".into(),
            name: "t".into(),
            columns: vec![col("npi", "bigint"), col("cost", "decimal(10,2)")],
            partition_columns: vec![col("delivery_date", "date"), col("state", "string")],
            format: ExternalFormat::Parquet,
            location: "file:///data/t/".into(),
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn partition_names_round_trip_with_hive_escaping() {
        let d = def();
        let values = vec!["2024-01-01".to_string(), "A/B=C".to_string()];
        let name = d.partition_name(&values);
        assert_eq!(name, "delivery_date=2024-01-01/state=A%2FB%3DC");
        assert_eq!(parse_partition_name(&name, &d.partition_columns), Some(values.clone()));
        assert_eq!(d.partition_location(&values), "file:///data/t/delivery_date=2024-01-01/state=A%252FB%253DC/");
        assert_eq!(parse_partition_name("state=CA/delivery_date=2024-01-01", &d.partition_columns), None);
        assert_eq!(unescape_path_name("100%"), "100%");
    }

    #[test]
    fn values_are_checked_and_canonical() {
        let d = def();
        assert_eq!(d.canonical_value(0, "2024-01-05").unwrap(), "2024-01-05");
        assert!(d.canonical_value(0, "yesterday").is_err());
        assert_eq!(d.canonical_value(1, "CA").unwrap(), "CA");
        assert_eq!(d.canonical_value(0, DEFAULT_PARTITION).unwrap(), DEFAULT_PARTITION);
        let s = d.partition_scalars(&["2024-01-05".into(), DEFAULT_PARTITION.into()]).unwrap();
        assert_eq!(s[0].data_type(), DataType::Date32);
        assert!(s[1].is_null());
    }

    #[test]
    fn types_and_validation() {
        assert_eq!(arrow_type("DECIMAL(12, 2)").unwrap(), DataType::Decimal128(12, 2));
        assert_eq!(arrow_type("varchar(20)").unwrap(), DataType::Utf8);
        assert!(arrow_type("map<string,int>").is_err());
        let mut d = def();
        d.validate().unwrap();
        assert_eq!(d.table_schema().unwrap().fields().len(), 4);
        d.columns.push(ExternalColumn { name: "state".into(), hive_type: "string".into(), comment: None });
        assert!(d.validate().is_err());
        let mut d = def();
        d.properties.insert("skip.header.line.count".into(), "1".into());
        d.properties.insert("field.delim".into(), "|".into());
        assert!(d.csv_header());
        assert_eq!(d.csv_delimiter().unwrap(), b'|');
    }
}

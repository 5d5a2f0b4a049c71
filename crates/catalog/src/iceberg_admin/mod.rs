//! Iceberg DBA features on the lakehouse: metadata tables ([`inspect`]), time travel (a table
//! pinned at a snapshot), rollback, schema and partition evolution ([`evolve`]).
//!
//! The engine reaches the special views of a table through names its statement rewrite
//! produces, resolved by [`crate::LakehouseCatalogProvider`]:
//! - `t$snapshots`, `t$history`, `t$files`, `t$manifests`, `t$partitions`: Trino's metadata
//!   table names (Spark's `db.t.snapshots` is rewritten to them);
//! - `t@v=<snapshot id>` and `t@ts=<epoch millis>`: `t FOR VERSION AS OF <id>` and
//!   `t FOR TIMESTAMP AS OF '<ts>'`.
//!
//! [`split_table_name`] gives the base table of such a name, so the policy is decided on the
//! base table.

pub mod evolve;
pub mod inspect;

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use iceberg::table::Table;
use rxgate_common::{Error, StatusCode};

/// A metadata table of an Iceberg table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    /// One row per snapshot.
    Snapshots,
    /// One row per entry of the snapshot log (the table's current-snapshot history).
    History,
    /// One row per live data file of the current snapshot.
    Files,
    /// One row per manifest of the current snapshot.
    Manifests,
    /// One row per partition (per spec) of the current snapshot.
    Partitions,
}

impl MetadataKind {
    /// Every kind, in documentation order.
    pub const ALL: [MetadataKind; 5] = [Self::Snapshots, Self::History, Self::Files, Self::Manifests, Self::Partitions];

    /// The name after `$` (Trino) or the last name part (Spark).
    pub fn name(self) -> &'static str {
        match self {
            Self::Snapshots => "snapshots",
            Self::History => "history",
            Self::Files => "files",
            Self::Manifests => "manifests",
            Self::Partitions => "partitions",
        }
    }

    /// The kind called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a special table name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableView {
    /// A metadata table.
    Metadata(MetadataKind),
    /// The table as of a snapshot id.
    Version(i64),
    /// The table as of a point in time (epoch milliseconds).
    Timestamp(i64),
}

impl TableView {
    /// The name suffix that asks for this view of a table.
    pub fn suffix(&self) -> String {
        match self {
            Self::Metadata(k) => format!("${}", k.name()),
            Self::Version(id) => format!("@v={id}"),
            Self::Timestamp(ms) => format!("@ts={ms}"),
        }
    }
}

/// Splits `t$snapshots`, `t@v=1`, `t@ts=1700000000000` into the base table name and the view;
/// any other name is returned whole with `None`.
pub fn split_table_name(name: &str) -> (&str, Option<TableView>) {
    if let Some((base, kind)) = name.rsplit_once('$') {
        if let Some(k) = MetadataKind::parse(kind) {
            if !base.is_empty() {
                return (base, Some(TableView::Metadata(k)));
            }
        }
    }
    if let Some((base, at)) = name.rsplit_once('@') {
        if !base.is_empty() {
            if let Some(id) = at.strip_prefix("v=").and_then(|v| v.parse().ok()) {
                return (base, Some(TableView::Version(id)));
            }
            if let Some(ms) = at.strip_prefix("ts=").and_then(|v| v.parse().ok()) {
                return (base, Some(TableView::Timestamp(ms)));
            }
        }
    }
    (name, None)
}

fn df_error(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The snapshot that was current at `ms` (epoch millis): the last snapshot-log entry at or
/// before it, as Spark and Trino resolve `FOR TIMESTAMP AS OF`.
pub fn snapshot_at(table: &Table, ms: i64) -> rxgate_common::Result<i64> {
    let md = table.metadata();
    md.history()
        .iter()
        .filter(|l| l.timestamp_ms <= ms)
        .max_by_key(|l| l.timestamp_ms)
        .map(|l| l.snapshot_id)
        .ok_or_else(|| {
            let when = chrono::DateTime::from_timestamp_millis(ms)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| ms.to_string());
            Error::new(
                StatusCode::InvalidArgument,
                format!("table {} has no snapshot at or before {when}", table.identifier()),
            )
        })
}

/// The table as Spark and Trino read its current state: with the **current** schema.
/// iceberg-rust 0.10 scans with the schema of the snapshot it reads, so after `ADD`/`RENAME`/
/// `DROP COLUMN` (which add a schema, not a snapshot) the current snapshot still names the
/// old schema and a query of the new column names fails. This returns the table with its
/// current snapshot re-labelled, in memory only, to the current schema id; iceberg's reader
/// then maps data files to it by field id (renamed columns keep their data, added ones read
/// NULL, dropped ones disappear). Time travel keeps the snapshot's own schema.
pub fn with_current_schema(table: Table) -> rxgate_common::Result<Table> {
    let md = table.metadata();
    let Some(snapshot) = md.current_snapshot() else { return Ok(table) };
    let (id, schema_id) = (snapshot.snapshot_id(), md.current_schema_id());
    if snapshot.schema_id() == Some(schema_id) {
        return Ok(table);
    }
    let internal = |e: serde_json::Error| Error::internal(format!("table metadata: {e}"));
    let mut json = serde_json::to_value(md).map_err(internal)?;
    if let Some(snapshots) = json.get_mut("snapshots").and_then(|s| s.as_array_mut()) {
        for s in snapshots.iter_mut().filter(|s| s.get("snapshot-id").and_then(|v| v.as_i64()) == Some(id)) {
            s["schema-id"] = serde_json::Value::from(schema_id);
        }
    }
    let relabelled: iceberg::spec::TableMetadata = serde_json::from_value(json).map_err(internal)?;
    let mut builder =
        Table::builder().identifier(table.identifier().clone()).file_io(table.file_io().clone()).metadata(relabelled);
    builder = builder.runtime(iceberg::Runtime::try_current()?);
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    Ok(builder.build()?)
}

/// The provider of a special view of `table` (already loaded).
pub async fn view_provider(
    table: Table,
    view: TableView,
    data_cache: Arc<crate::storage::FileCache>,
) -> DfResult<Arc<dyn TableProvider>> {
    let snapshot = match view {
        TableView::Metadata(kind) => return inspect::metadata_table(&table, kind).await.map_err(df_error),
        TableView::Version(id) => id,
        TableView::Timestamp(ms) => snapshot_at(&table, ms).map_err(df_error)?,
    };
    if table.metadata().snapshot_by_id(snapshot).is_none() {
        return Err(df_error(Error::new(
            StatusCode::InvalidArgument,
            format!("table {} has no snapshot {snapshot}", table.identifier()),
        )));
    }
    let provider = crate::LakehouseTable::try_new_at(table, snapshot, data_cache)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(Arc::new(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_names() {
        assert_eq!(split_table_name("t"), ("t", None));
        assert_eq!(split_table_name("t$snapshots"), ("t", Some(TableView::Metadata(MetadataKind::Snapshots))));
        assert_eq!(split_table_name("a$b$files"), ("a$b", Some(TableView::Metadata(MetadataKind::Files))));
        assert_eq!(split_table_name("t$nope"), ("t$nope", None));
        assert_eq!(split_table_name("$files"), ("$files", None));
        assert_eq!(split_table_name("t@v=42"), ("t", Some(TableView::Version(42))));
        assert_eq!(split_table_name("t@ts=1700000000000"), ("t", Some(TableView::Timestamp(1_700_000_000_000))));
        assert_eq!(split_table_name("t@v=x"), ("t@v=x", None));
        for v in [TableView::Version(-3), TableView::Timestamp(5), TableView::Metadata(MetadataKind::History)] {
            assert_eq!(split_table_name(&format!("x{}", v.suffix())), ("x", Some(v)));
        }
    }
}

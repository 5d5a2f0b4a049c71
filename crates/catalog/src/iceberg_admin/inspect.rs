//! Iceberg metadata tables, computed from the table metadata and the current snapshot's
//! manifests when a query resolves them, with Spark's column names:
//! - `snapshots`: committed_at, snapshot_id, parent_id, operation, manifest_list, summary;
//! - `history`: made_current_at, snapshot_id, parent_id, is_current_ancestor;
//! - `files`: content, file_path, file_format, spec_id, partition, record_count,
//!   file_size_in_bytes, sort_order_id (live data and delete files of the current snapshot);
//! - `manifests`: content, path, length, partition_spec_id, added_snapshot_id, the
//!   added/existing/deleted data and delete file counts;
//! - `partitions`: partition, spec_id, record_count, file_count,
//!   total_data_file_size_in_bytes, position/equality delete counts, last_updated_at,
//!   last_updated_snapshot_id.
//!
//! `summary` and `partition` are JSON text (`{"delivery_date":"2024-01-31"}`): PostgreSQL
//! clients have no common decoding for Arrow maps and structs. Timestamps are `timestamptz`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use iceberg::spec::{
    DataContentType, Literal, ManifestContentType, ManifestStatus, PrimitiveLiteral, PrimitiveType, Struct, StructType,
    TableMetadata, Type,
};
use iceberg::table::Table;
use rxgate_common::{Error, Result, StatusCode};

use super::MetadataKind;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of a metadata table.
pub fn schema(kind: MetadataKind) -> SchemaRef {
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    let fields = match kind {
        MetadataKind::Snapshots => vec![
            f("committed_at", ts_type(), false),
            f("snapshot_id", DataType::Int64, false),
            f("parent_id", DataType::Int64, true),
            f("operation", DataType::Utf8, true),
            f("manifest_list", DataType::Utf8, true),
            f("summary", DataType::Utf8, true),
        ],
        MetadataKind::History => vec![
            f("made_current_at", ts_type(), false),
            f("snapshot_id", DataType::Int64, false),
            f("parent_id", DataType::Int64, true),
            f("is_current_ancestor", DataType::Boolean, false),
        ],
        MetadataKind::Files => vec![
            f("content", DataType::Int32, false),
            f("file_path", DataType::Utf8, false),
            f("file_format", DataType::Utf8, false),
            f("spec_id", DataType::Int32, false),
            f("partition", DataType::Utf8, true),
            f("record_count", DataType::Int64, false),
            f("file_size_in_bytes", DataType::Int64, false),
            f("sort_order_id", DataType::Int32, true),
        ],
        MetadataKind::Manifests => vec![
            f("content", DataType::Int32, false),
            f("path", DataType::Utf8, false),
            f("length", DataType::Int64, false),
            f("partition_spec_id", DataType::Int32, false),
            f("added_snapshot_id", DataType::Int64, false),
            f("added_data_files_count", DataType::Int32, false),
            f("existing_data_files_count", DataType::Int32, false),
            f("deleted_data_files_count", DataType::Int32, false),
            f("added_delete_files_count", DataType::Int32, false),
            f("existing_delete_files_count", DataType::Int32, false),
            f("deleted_delete_files_count", DataType::Int32, false),
        ],
        MetadataKind::Partitions => vec![
            f("partition", DataType::Utf8, true),
            f("spec_id", DataType::Int32, false),
            f("record_count", DataType::Int64, false),
            f("file_count", DataType::Int32, false),
            f("total_data_file_size_in_bytes", DataType::Int64, false),
            f("position_delete_record_count", DataType::Int64, false),
            f("position_delete_file_count", DataType::Int32, false),
            f("equality_delete_record_count", DataType::Int64, false),
            f("equality_delete_file_count", DataType::Int32, false),
            f("last_updated_at", ts_type(), true),
            f("last_updated_snapshot_id", DataType::Int64, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// A metadata table of `table` as an in-memory table (computed now).
pub async fn metadata_table(table: &Table, kind: MetadataKind) -> Result<Arc<dyn TableProvider>> {
    let batch = batch(table, kind).await?;
    let schema = batch.schema();
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The rows of a metadata table of `table`.
pub async fn batch(table: &Table, kind: MetadataKind) -> Result<RecordBatch> {
    let schema = schema(kind);
    let columns = match kind {
        MetadataKind::Snapshots => snapshots(table.metadata())?,
        MetadataKind::History => history(table.metadata()),
        MetadataKind::Files => files(table).await?,
        MetadataKind::Manifests => manifests(table).await?,
        MetadataKind::Partitions => partitions(table).await?,
    };
    RecordBatch::try_new(schema, columns).map_err(|e| Error::new(StatusCode::Internal, e.to_string()))
}

fn micros(ms: i64) -> i64 {
    ms.saturating_mul(1000)
}

fn timestamps(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values.into_iter().map(|v| v.map(micros))).with_timezone("UTC"))
}

fn snapshots(md: &TableMetadata) -> Result<Vec<ArrayRef>> {
    let mut snaps: Vec<_> = md.snapshots().collect();
    snaps.sort_by_key(|s| (s.timestamp_ms(), s.sequence_number()));
    let summary = |s: &iceberg::spec::Snapshot| -> Result<String> {
        let props: BTreeMap<&String, &String> = s.summary().additional_properties.iter().collect();
        serde_json::to_string(&props).map_err(|e| Error::internal(e.to_string()))
    };
    Ok(vec![
        timestamps(snaps.iter().map(|s| Some(s.timestamp_ms()))),
        Arc::new(Int64Array::from_iter_values(snaps.iter().map(|s| s.snapshot_id()))),
        Arc::new(Int64Array::from_iter(snaps.iter().map(|s| s.parent_snapshot_id()))),
        Arc::new(StringArray::from_iter(snaps.iter().map(|s| Some(s.summary().operation.as_str().to_string())))),
        Arc::new(StringArray::from_iter(snaps.iter().map(|s| Some(s.manifest_list().to_string())))),
        Arc::new(StringArray::from(snaps.iter().map(|s| summary(s).map(Some)).collect::<Result<Vec<_>>>()?)),
    ])
}

/// Ids of the current snapshot and its ancestors.
pub fn current_ancestors(md: &TableMetadata) -> HashSet<i64> {
    let mut out = HashSet::new();
    let mut next = md.current_snapshot_id();
    while let Some(id) = next {
        if !out.insert(id) {
            break;
        }
        next = md.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    out
}

fn history(md: &TableMetadata) -> Vec<ArrayRef> {
    let log = md.history();
    let ancestors = current_ancestors(md);
    vec![
        timestamps(log.iter().map(|l| Some(l.timestamp_ms))),
        Arc::new(Int64Array::from_iter_values(log.iter().map(|l| l.snapshot_id))),
        Arc::new(Int64Array::from_iter(
            log.iter().map(|l| md.snapshot_by_id(l.snapshot_id).and_then(|s| s.parent_snapshot_id())),
        )),
        Arc::new(BooleanArray::from_iter(log.iter().map(|l| Some(ancestors.contains(&l.snapshot_id))))),
    ]
}

/// One live file of the current snapshot, with its spec and the snapshot that added it.
struct LiveFile {
    spec_id: i32,
    data_file: iceberg::spec::DataFile,
    snapshot_id: Option<i64>,
}

async fn live_files(table: &Table) -> Result<Vec<LiveFile>> {
    let md = table.metadata();
    let Some(current) = md.current_snapshot() else {
        return Ok(vec![]);
    };
    let list = table.manifest_list_reader(current).load().await?;
    let mut out = vec![];
    for mf in list.entries() {
        let manifest = mf.load_manifest(table.file_io()).await?;
        for e in manifest.entries() {
            if e.status() == ManifestStatus::Deleted {
                continue;
            }
            out.push(LiveFile {
                spec_id: mf.partition_spec_id,
                data_file: e.data_file().clone(),
                snapshot_id: e.snapshot_id(),
            });
        }
    }
    Ok(out)
}

/// A partition tuple as JSON text, with the spec's field names (`None` when unpartitioned).
fn partition_json(md: &TableMetadata, spec_id: i32, partition: &Struct) -> Option<String> {
    let spec = md.partition_spec_by_id(spec_id)?;
    if spec.fields().is_empty() {
        return None;
    }
    let types: Option<StructType> = spec.partition_type(md.current_schema()).ok();
    let mut obj = serde_json::Map::new();
    for (i, pf) in spec.fields().iter().enumerate() {
        let ty = types.as_ref().and_then(|t| t.fields().get(i)).map(|f| f.field_type.as_ref().clone());
        let value = partition.fields().get(i).and_then(|v| v.as_ref());
        obj.insert(pf.name.clone(), literal_json(ty.as_ref(), value));
    }
    Some(serde_json::Value::Object(obj).to_string())
}

fn literal_json(ty: Option<&Type>, value: Option<&Literal>) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(p) = value.and_then(|v| v.as_primitive_literal()) else {
        return J::Null;
    };
    let prim = match ty {
        Some(Type::Primitive(p)) => Some(p),
        _ => None,
    };
    match (prim, p) {
        (Some(PrimitiveType::Date), PrimitiveLiteral::Int(days)) => {
            let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(days))));
            d.map(|d| J::String(d.to_string())).unwrap_or(J::Null)
        }
        (Some(PrimitiveType::Timestamp | PrimitiveType::Timestamptz), PrimitiveLiteral::Long(us)) => {
            chrono::DateTime::from_timestamp_micros(us).map(|d| J::String(d.naive_utc().to_string())).unwrap_or(J::Null)
        }
        (_, PrimitiveLiteral::Boolean(b)) => J::Bool(b),
        (_, PrimitiveLiteral::Int(i)) => J::from(i),
        (_, PrimitiveLiteral::Long(i)) => J::from(i),
        (_, PrimitiveLiteral::Float(f)) => J::from(f.0),
        (_, PrimitiveLiteral::Double(f)) => J::from(f.0),
        (_, PrimitiveLiteral::String(s)) => J::String(s),
        (_, other) => J::String(format!("{other:?}")),
    }
}

fn content_code(c: DataContentType) -> i32 {
    c as i32
}

async fn files(table: &Table) -> Result<Vec<ArrayRef>> {
    let md = table.metadata();
    let files = live_files(table).await?;
    Ok(vec![
        Arc::new(Int32Array::from_iter_values(files.iter().map(|f| content_code(f.data_file.content_type())))),
        Arc::new(StringArray::from_iter_values(files.iter().map(|f| f.data_file.file_path()))),
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.data_file.file_format().to_string().to_uppercase()),
        )),
        Arc::new(Int32Array::from_iter_values(files.iter().map(|f| f.spec_id))),
        Arc::new(StringArray::from_iter(files.iter().map(|f| partition_json(md, f.spec_id, f.data_file.partition())))),
        Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.data_file.record_count() as i64))),
        Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.data_file.file_size_in_bytes() as i64))),
        Arc::new(Int32Array::from_iter(files.iter().map(|f| f.data_file.sort_order_id()))),
    ])
}

async fn manifests(table: &Table) -> Result<Vec<ArrayRef>> {
    let md = table.metadata();
    let list = match md.current_snapshot() {
        Some(current) => table.manifest_list_reader(current).load().await?.entries().to_vec(),
        None => vec![],
    };
    let count = |v: Option<u32>| v.unwrap_or(0) as i32;
    let by = |data: bool, pick: fn(&iceberg::spec::ManifestFile) -> Option<u32>| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(list.iter().map(|m| {
            if (m.content == ManifestContentType::Data) == data {
                count(pick(m))
            } else {
                0
            }
        })))
    };
    Ok(vec![
        Arc::new(Int32Array::from_iter_values(list.iter().map(|m| m.content as i32))),
        Arc::new(StringArray::from_iter_values(list.iter().map(|m| m.manifest_path.as_str()))),
        Arc::new(Int64Array::from_iter_values(list.iter().map(|m| m.manifest_length))),
        Arc::new(Int32Array::from_iter_values(list.iter().map(|m| m.partition_spec_id))),
        Arc::new(Int64Array::from_iter_values(list.iter().map(|m| m.added_snapshot_id))),
        by(true, |m| m.added_files_count),
        by(true, |m| m.existing_files_count),
        by(true, |m| m.deleted_files_count),
        by(false, |m| m.added_files_count),
        by(false, |m| m.existing_files_count),
        by(false, |m| m.deleted_files_count),
    ])
}

#[derive(Default)]
struct PartitionStats {
    records: i64,
    files: i32,
    bytes: i64,
    pos_records: i64,
    pos_files: i32,
    eq_records: i64,
    eq_files: i32,
    last: Option<(i64, i64)>,
}

async fn partitions(table: &Table) -> Result<Vec<ArrayRef>> {
    let md = table.metadata();
    let mut stats: BTreeMap<(i32, Option<String>), PartitionStats> = BTreeMap::new();
    let committed: HashMap<i64, i64> = md.snapshots().map(|s| (s.snapshot_id(), s.timestamp_ms())).collect();
    for f in live_files(table).await? {
        let key = (f.spec_id, partition_json(md, f.spec_id, f.data_file.partition()));
        let s = stats.entry(key).or_default();
        let (records, size) = (f.data_file.record_count() as i64, f.data_file.file_size_in_bytes() as i64);
        match f.data_file.content_type() {
            DataContentType::Data => {
                s.records += records;
                s.files += 1;
                s.bytes += size;
            }
            DataContentType::PositionDeletes => {
                s.pos_records += records;
                s.pos_files += 1;
            }
            DataContentType::EqualityDeletes => {
                s.eq_records += records;
                s.eq_files += 1;
            }
        }
        if let Some(id) = f.snapshot_id {
            let at = committed.get(&id).copied().unwrap_or(0);
            if s.last.is_none_or(|(t, _)| at > t) {
                s.last = Some((at, id));
            }
        }
    }
    let rows: Vec<(&(i32, Option<String>), &PartitionStats)> = stats.iter().collect();
    Ok(vec![
        Arc::new(StringArray::from_iter(rows.iter().map(|(k, _)| k.1.clone()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(k, _)| k.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.records))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, s)| s.files))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.bytes))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.pos_records))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, s)| s.pos_files))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.eq_records))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, s)| s.eq_files))),
        timestamps(rows.iter().map(|(_, s)| s.last.map(|l| l.0))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|(_, s)| s.last.map(|l| l.1)))),
    ])
}

/// The partitions of the current snapshot's live data files, each as its fields' `(name,
/// value)` in spec order (dates and timestamps as text, NULL as `None`), sorted and without
/// repeats: what Hive 4's `SHOW PARTITIONS` lists for an Iceberg table. An unpartitioned
/// table has none.
pub async fn partition_values(table: &Table) -> Result<Vec<Vec<(String, Option<String>)>>> {
    let md = table.metadata();
    let mut out: std::collections::BTreeSet<Vec<(String, Option<String>)>> = Default::default();
    for f in live_files(table).await? {
        if f.data_file.content_type() != DataContentType::Data {
            continue;
        }
        let Some(spec) = md.partition_spec_by_id(f.spec_id) else { continue };
        if spec.fields().is_empty() {
            continue;
        }
        let types: Option<StructType> = spec.partition_type(md.current_schema()).ok();
        let tuple = spec
            .fields()
            .iter()
            .enumerate()
            .map(|(i, pf)| {
                let ty = types.as_ref().and_then(|t| t.fields().get(i)).map(|f| f.field_type.as_ref().clone());
                let value = f.data_file.partition().fields().get(i).and_then(|v| v.as_ref());
                let text = match literal_json(ty.as_ref(), value) {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                };
                (pf.name.clone(), text)
            })
            .collect();
        out.insert(tuple);
    }
    Ok(out.into_iter().collect())
}

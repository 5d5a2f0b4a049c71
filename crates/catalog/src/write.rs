//! The one table writer: batches in a table's Arrow schema become sorted, sized Parquet data
//! files under the table's location, split by the table's partition spec (transforms
//! included), ready for one atomic commit (`commit`). The pipeline and SQL writes share it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataFile, DataFileFormat, Literal, NullOrder, PartitionKey, SortDirection, Struct};
use iceberg::table::Table;
use iceberg::transform::{create_transform_function, BoxedTransformFunction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rxgate_common::{Error, Result};

/// The Arrow schema (with Iceberg field ids) that batches for `table` must have.
pub fn table_arrow_schema(table: &Table) -> Result<arrow::datatypes::SchemaRef> {
    Ok(Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?))
}

type Fanout =
    FanoutWriter<DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>>;

/// One partition's slice of a batch, on its way to a worker.
type Slice = (PartitionKey, RecordBatch);

/// The table's Iceberg sort order, resolved to columns of its Arrow schema.
type SortSpec = Arc<Vec<(usize, SortOptions)>>;

/// A sorted table's worker sorts a partition's rows once this many are buffered (and at close);
/// each run is written in order, so its row groups and pages have narrow min/max ranges.
const SORT_RUN_ROWS: usize = 1 << 20;
/// ... or once its partitions together hold this many rows (it then writes the largest).
const SORT_WORKER_ROWS: usize = 4 << 20;

/// A writer task: where its slices go, and the files it wrote.
type Worker = (tokio::sync::mpsc::Sender<Slice>, tokio::task::JoinHandle<Result<Vec<DataFile>>>);

/// Writes batches (in the table's Arrow schema) as Parquet data files, one or more per
/// partition value, without committing them.
///
/// Parquet encoding is CPU-bound, so partition values are spread over one worker task per
/// core; each worker owns the open files of its partitions. Bounded channels keep memory flat.
/// A table with an Iceberg sort order has each partition's rows sorted by it before they are
/// written (in runs of up to [`SORT_RUN_ROWS`]), which is what lets Parquet statistics and the
/// page index skip data for filters on the sort columns.
pub struct TableWriter {
    table: Table,
    workers: Vec<Worker>,
    /// Per partition field: the source column and its transform.
    partition_columns: Vec<(usize, BoxedTransformFunction)>,
    converter: Option<RowConverter>,
    rows: u64,
}

impl TableWriter {
    /// Prepares a writer for the table's default partition spec (any transform iceberg
    /// computes: identity, year/month/day/hour, bucket, truncate; void fields are skipped).
    pub fn new(table: &Table) -> Result<Self> {
        Self::sized(table, None)
    }

    /// A writer whose files roll over at `target_size` bytes (default: the table's
    /// `write.target-file-size-bytes`, else 128 MiB).
    pub fn sized(table: &Table, target_size: Option<u64>) -> Result<Self> {
        let md = table.metadata();
        let target = target_size
            .or_else(|| md.properties().get("write.target-file-size-bytes").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(crate::maintenance::compact::DEFAULT_TARGET_FILE_SIZE)
            .max(1);
        let schema = md.current_schema().clone();
        let spec = md.default_partition_spec();
        let mut partition_columns = vec![];
        for field in spec.fields() {
            let index = column_index(&schema, field.source_id, "partition source")?;
            partition_columns.push((index, create_transform_function(&field.transform)?));
        }
        let n = if partition_columns.is_empty() {
            1
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        };
        let sort = sort_spec(table)?;
        let run = uuid::Uuid::new_v4();
        let workers = (0..n)
            .map(|i| {
                let fanout = Self::fanout(table, format!("rx-{run}-w{i}"), target)?;
                let (tx, rx) = tokio::sync::mpsc::channel::<Slice>(4);
                let handle = match &sort {
                    None => tokio::spawn(Self::work(fanout, rx)),
                    Some(sort) => tokio::spawn(Self::work_sorted(fanout, rx, sort.clone())),
                };
                Ok((tx, handle))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { table: table.clone(), workers, partition_columns, converter: None, rows: 0 })
    }

    fn fanout(table: &Table, prefix: String, target_size: u64) -> Result<Fanout> {
        let md = table.metadata();
        let mut props = WriterProperties::builder()
            .set_compression(compression(md.properties())?)
            // Row groups of 64 Ki rows: the unit a bloom filter or statistics can skip.
            .set_max_row_group_row_count(Some(64 * 1024))
            // Iceberg's default page size in rows: finer page-index pruning.
            .set_data_page_row_count_limit(20_000);
        for column in bloom_filter_columns(md.properties()) {
            let path = ColumnPath::from(column);
            props = props
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), 0.01)
                .set_column_bloom_filter_ndv(path, 32 * 1024);
        }
        let props = props.build();
        let parquet = ParquetWriterBuilder::new(props, md.current_schema().clone());
        let names = DefaultFileNameGenerator::new(prefix, None, DataFileFormat::Parquet);
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            usize::try_from(target_size).unwrap_or(usize::MAX),
            table.file_io().clone(),
            DefaultLocationGenerator::new(md)?,
            names,
        );
        Ok(FanoutWriter::new(DataFileWriterBuilder::new(rolling)))
    }

    async fn work(mut fanout: Fanout, mut rx: tokio::sync::mpsc::Receiver<Slice>) -> Result<Vec<DataFile>> {
        while let Some((key, batch)) = rx.recv().await {
            fanout.write(key, batch).await?;
        }
        Ok(fanout.close().await?)
    }

    /// A worker for a sorted table: buffers each partition's slices, sorts and writes them in
    /// runs (see [`SORT_RUN_ROWS`], [`SORT_WORKER_ROWS`]).
    async fn work_sorted(
        mut fanout: Fanout,
        mut rx: tokio::sync::mpsc::Receiver<Slice>,
        sort: SortSpec,
    ) -> Result<Vec<DataFile>> {
        let mut parts: Vec<(PartitionKey, Vec<RecordBatch>, usize)> = vec![];
        let mut buffered = 0usize;
        while let Some((key, batch)) = rx.recv().await {
            let i = match parts.iter().position(|(k, ..)| k.data() == key.data()) {
                Some(i) => i,
                None => {
                    parts.push((key, vec![], 0));
                    parts.len() - 1
                }
            };
            buffered += batch.num_rows();
            parts[i].2 += batch.num_rows();
            parts[i].1.push(batch);
            if parts[i].2 >= SORT_RUN_ROWS || buffered >= SORT_WORKER_ROWS {
                let j = if parts[i].2 >= SORT_RUN_ROWS {
                    i
                } else {
                    (0..parts.len()).max_by_key(|&j| parts[j].2).expect("a partition")
                };
                let (key, batches, rows) = &mut parts[j];
                buffered -= *rows;
                *rows = 0;
                write_sorted(&mut fanout, key, std::mem::take(batches), &sort).await?;
            }
        }
        for (key, batches, _) in parts {
            write_sorted(&mut fanout, &key, batches, &sort).await?;
        }
        Ok(fanout.close().await?)
    }

    async fn send(&mut self, worker: usize, slice: Slice) -> Result<()> {
        let (tx, _) = &self.workers[worker];
        if tx.send(slice).await.is_ok() {
            return Ok(());
        }
        // The worker stopped early: surface its error.
        let (_, handle) = self.workers.remove(worker);
        match handle.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(Error::internal("partition writer stopped early")),
            Err(e) => Err(Error::internal(format!("partition writer failed: {e}"))),
        }
    }

    /// Splits a batch by partition value and hands each slice to its partition's worker.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let md = self.table.metadata();
        let spec = md.default_partition_spec().as_ref().clone();
        let schema = md.current_schema().clone();
        if self.partition_columns.is_empty() {
            let key = PartitionKey::new(spec, schema, Struct::empty());
            return self.send(0, (key, batch)).await;
        }
        let cols: Vec<ArrayRef> = self
            .partition_columns
            .iter()
            .map(|(i, transform)| transform.transform(batch.column(*i).clone()))
            .collect::<std::result::Result<_, _>>()?;
        if self.converter.is_none() {
            let fields = cols.iter().map(|c| SortField::new(c.data_type().clone())).collect();
            self.converter = Some(RowConverter::new(fields).map_err(|e| Error::internal(e.to_string()))?);
        }
        let rows = self
            .converter
            .as_ref()
            .expect("converter")
            .convert_columns(&cols)
            .map_err(|e| Error::internal(e.to_string()))?;
        let mut groups: HashMap<arrow::row::Row<'_>, Vec<u32>> = HashMap::new();
        for i in 0..batch.num_rows() {
            groups.entry(rows.row(i)).or_default().push(i as u32);
        }
        let mut groups: Vec<(u64, Vec<u32>)> = groups
            .into_iter()
            .map(|(row, idx)| {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(row.as_ref(), &mut h);
                (std::hash::Hasher::finish(&h), idx)
            })
            .collect();
        groups.sort_by_key(|(_, idx)| idx[0]);
        for (hash, idx) in groups {
            let first = idx[0] as usize;
            let values = cols.iter().map(|c| literal_at(c, first)).collect::<Result<Vec<_>>>()?;
            let key = PartitionKey::new(spec.clone(), schema.clone(), Struct::from_iter(values));
            let slice =
                take_record_batch(&batch, &UInt32Array::from(idx)).map_err(|e| Error::internal(e.to_string()))?;
            let worker = (hash % self.workers.len() as u64) as usize;
            self.send(worker, (key, slice)).await?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes every open file and returns the data files, not yet committed.
    pub async fn close(self) -> Result<Vec<DataFile>> {
        let mut files = vec![];
        for (tx, handle) in self.workers {
            drop(tx);
            files.extend(handle.await.map_err(|e| Error::internal(format!("partition writer failed: {e}")))??);
        }
        Ok(files)
    }
}

/// The position in the table's Arrow schema of the top-level field `field_id` (`what` names it
/// in the error).
fn column_index(schema: &iceberg::spec::Schema, field_id: i32, what: &str) -> Result<usize> {
    schema
        .as_struct()
        .fields()
        .iter()
        .position(|f| f.id == field_id)
        .ok_or_else(|| Error::internal(format!("{what} column (field id {field_id}) missing")))
}

/// The columns and directions of the table's default sort order; `None` when unsorted.
fn sort_spec(table: &Table) -> Result<Option<SortSpec>> {
    let md = table.metadata();
    let order = md.default_sort_order();
    if order.is_unsorted() {
        return Ok(None);
    }
    let schema = md.current_schema();
    let mut columns = vec![];
    for field in &order.fields {
        if field.transform != iceberg::spec::Transform::Identity {
            return Err(Error::invalid(format!(
                "{}: sort transform {} is not supported for writes",
                table.identifier(),
                field.transform
            )));
        }
        let idx = column_index(schema, field.source_id, "sort")?;
        let options = SortOptions {
            descending: field.direction == SortDirection::Descending,
            nulls_first: field.null_order == NullOrder::First,
        };
        columns.push((idx, options));
    }
    Ok(Some(Arc::new(columns)))
}

/// Sorts one partition's buffered rows and writes them in order.
async fn write_sorted(
    fanout: &mut Fanout,
    key: &PartitionKey,
    batches: Vec<RecordBatch>,
    sort: &SortSpec,
) -> Result<()> {
    let Some(first) = batches.first() else { return Ok(()) };
    let all = concat_batches(&first.schema(), &batches).map_err(|e| Error::internal(e.to_string()))?;
    drop(batches);
    let columns: Vec<SortColumn> =
        sort.iter().map(|&(i, options)| SortColumn { values: all.column(i).clone(), options: Some(options) }).collect();
    let order = lexsort_to_indices(&columns, None).map_err(|e| Error::internal(e.to_string()))?;
    drop(columns);
    let sorted = take_record_batch(&all, &order).map_err(|e| Error::internal(e.to_string()))?;
    drop(all);
    const WRITE_ROWS: usize = 64 * 1024;
    let mut offset = 0;
    while offset < sorted.num_rows() {
        let len = WRITE_ROWS.min(sorted.num_rows() - offset);
        fanout.write(key.clone(), sorted.slice(offset, len)).await?;
        offset += len;
    }
    Ok(())
}

/// The partition value at row `i` of a transformed partition column.
fn literal_at(col: &ArrayRef, i: usize) -> Result<Option<Literal>> {
    if col.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match col.data_type() {
        DataType::Date32 => Literal::date(col.as_primitive::<Date32Type>().value(i)),
        DataType::Int32 => Literal::int(col.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Literal::long(col.as_primitive::<Int64Type>().value(i)),
        DataType::Boolean => Literal::bool(col.as_boolean().value(i)),
        DataType::Utf8 => Literal::string(col.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Literal::string(col.as_string::<i64>().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            Literal::timestamp(col.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            Literal::timestamptz(col.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Decimal128(..) => Literal::decimal(col.as_primitive::<Decimal128Type>().value(i)),
        other => return Err(Error::invalid(format!("partition column type {other} is not supported"))),
    }))
}

/// The live data files of a table's current snapshot: `(path, record count)`.
pub async fn live_data_files(table: &Table) -> Result<Vec<(String, u64)>> {
    Ok(live_entries(table).await?.into_iter().map(|(_, f)| (f.file_path().to_string(), f.record_count())).collect())
}

/// The live data files of a table's current snapshot with the partition spec id each was
/// written under; a table with delete files is refused (0A000: rewrites would lose them).
pub(crate) async fn live_entries(table: &Table) -> Result<Vec<(i32, iceberg::spec::DataFile)>> {
    let md = table.metadata();
    let Some(current) = md.current_snapshot() else { return Ok(vec![]) };
    let list = table.manifest_list_reader(current).load().await?;
    let mut out = vec![];
    for mf in list.entries() {
        if mf.content != iceberg::spec::ManifestContentType::Data {
            return Err(Error::new(
                rxgate_common::StatusCode::Unsupported,
                format!("{}: tables with delete files cannot be rewritten yet", table.identifier()),
            ));
        }
        let manifest = mf.load_manifest(table.file_io()).await?;
        for e in manifest.entries() {
            if e.status() != iceberg::spec::ManifestStatus::Deleted {
                out.push((mf.partition_spec_id, e.data_file().clone()));
            }
        }
    }
    Ok(out)
}

/// Reads one data file whole, as batches of `target` (the table's Arrow schema): columns
/// matched by Iceberg field id (so renamed columns keep their data), columns added since the
/// file was written read as NULL.
pub async fn read_data_file(
    storage: &crate::storage::StoreRegistry,
    path: &str,
    target: &arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
    let bytes = storage.read(path).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::new(rxgate_common::StatusCode::StorageUnavailable, format!("{path}: {e}")))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::new(rxgate_common::StatusCode::StorageUnavailable, format!("{path}: {e}")))?;
    let field_id = |f: &arrow::datatypes::Field| f.metadata().get(PARQUET_FIELD_ID_META_KEY).cloned();
    let mut out = vec![];
    for batch in reader {
        let batch =
            batch.map_err(|e| Error::new(rxgate_common::StatusCode::StorageUnavailable, format!("{path}: {e}")))?;
        let file_schema = batch.schema();
        let mut columns = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let id = field_id(field);
            let found = file_schema
                .fields()
                .iter()
                .position(|f| id.is_some() && field_id(f) == id)
                // A file without field ids (not written by an Iceberg writer): by name.
                .or_else(|| {
                    let no_ids = file_schema.fields().iter().all(|f| field_id(f).is_none());
                    no_ids.then(|| file_schema.index_of(field.name()).ok()).flatten()
                });
            columns.push(match found {
                Some(i) if batch.column(i).data_type() == field.data_type() => batch.column(i).clone(),
                Some(i) => arrow::compute::cast(batch.column(i), field.data_type())
                    .map_err(|e| Error::internal(format!("{path}: column {}: {e}", field.name())))?,
                None => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            });
        }
        out.push(
            RecordBatch::try_new_with_options(
                target.clone(),
                columns,
                &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )
            .map_err(|e| Error::internal(format!("{path}: {e}")))?,
        );
    }
    Ok(out)
}

/// The codec Iceberg's `write.parquet.compression-codec` (and `…-level`) asks for; zstd
/// level 1 when unset. Snappy decodes several times faster than zstd, zstd files are smaller.
fn compression(properties: &HashMap<String, String>) -> Result<Compression> {
    let level = properties.get("write.parquet.compression-level").map(|l| l.parse::<i32>());
    let codec = properties.get("write.parquet.compression-codec").map(|c| c.to_ascii_lowercase());
    let bad = |what: String| Error::invalid(format!("table property {what} is not supported"));
    Ok(match codec.as_deref().unwrap_or("zstd") {
        "zstd" => {
            let level = match level {
                Some(Ok(l)) => l,
                Some(Err(_)) => return Err(bad("write.parquet.compression-level".into())),
                None => 1,
            };
            Compression::ZSTD(ZstdLevel::try_new(level).map_err(|_| bad(format!("zstd level {level}")))?)
        }
        "snappy" => Compression::SNAPPY,
        "lz4" | "lz4_raw" => Compression::LZ4_RAW,
        "gzip" => Compression::GZIP(Default::default()),
        "uncompressed" | "none" => Compression::UNCOMPRESSED,
        other => return Err(bad(format!("write.parquet.compression-codec = {other}"))),
    })
}

/// The columns Iceberg's table properties ask bloom filters for
/// (`write.parquet.bloom-filter-enabled.column.<name> = true`).
fn bloom_filter_columns(properties: &HashMap<String, String>) -> Vec<String> {
    const PREFIX: &str = "write.parquet.bloom-filter-enabled.column.";
    let mut columns: Vec<String> = properties
        .iter()
        .filter(|(k, v)| k.starts_with(PREFIX) && v.eq_ignore_ascii_case("true"))
        .map(|(k, _)| k[PREFIX.len()..].to_string())
        .collect();
    columns.sort();
    columns
}

#[cfg(test)]
mod property_tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn codec_follows_icebergs_table_properties() {
        assert_eq!(compression(&props(&[])).unwrap(), Compression::ZSTD(ZstdLevel::try_new(1).unwrap()));
        assert_eq!(compression(&props(&[("write.parquet.compression-codec", "SNAPPY")])).unwrap(), Compression::SNAPPY);
        let zstd3 = props(&[("write.parquet.compression-codec", "zstd"), ("write.parquet.compression-level", "3")]);
        assert_eq!(compression(&zstd3).unwrap(), Compression::ZSTD(ZstdLevel::try_new(3).unwrap()));
        assert!(compression(&props(&[("write.parquet.compression-codec", "lzo")])).is_err());
    }

    #[test]
    fn bloom_filters_only_for_columns_set_true() {
        let p = props(&[
            ("write.parquet.bloom-filter-enabled.column.npi", "true"),
            ("write.parquet.bloom-filter-enabled.column.drug_name", "false"),
            ("write.parquet.compression-codec", "snappy"),
        ]);
        assert_eq!(bloom_filter_columns(&p), vec!["npi".to_string()]);
    }
}

//! Partitioned Parquet writes through iceberg-rust, followed by one atomic commit that
//! replaces a delivery's partition.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataFile, DataFileFormat, Literal, NullOrder, PartitionKey, SortDirection, Struct};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rxgate_catalog::{replace_partition, CommitOutcome, Lakehouse, PartitionReplace};
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
pub struct PartitionedWriter {
    table: Table,
    workers: Vec<Worker>,
    partition_columns: Vec<usize>,
    converter: Option<RowConverter>,
    rows: u64,
}

impl PartitionedWriter {
    /// Prepares a writer for the table's default partition spec (identity transforms).
    pub fn new(table: &Table) -> Result<Self> {
        let md = table.metadata();
        let schema = md.current_schema().clone();
        let spec = md.default_partition_spec();
        let mut partition_columns = vec![];
        for field in spec.fields() {
            if field.transform != iceberg::spec::Transform::Identity {
                // Name the table and the field: the pipeline writes several tables.
                let table_name = table.identifier();
                return Err(Error::invalid(format!(
                    "{table_name}: partition field {} uses the transform {}, which rxgate cannot write \
                     (only identity partitions); drop it (ALTER TABLE {table_name} DROP PARTITION FIELD {}) \
                     to write this table",
                    field.name, field.transform, field.name
                )));
            }
            partition_columns.push(column_index(&schema, field.source_id, "partition source")?);
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
                let fanout = Self::fanout(table, format!("rx-{run}-w{i}"))?;
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

    fn fanout(table: &Table, prefix: String) -> Result<Fanout> {
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
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            parquet,
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
        let cols: Vec<ArrayRef> = self.partition_columns.iter().map(|&i| batch.column(i).clone()).collect();
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

fn literal_at(col: &ArrayRef, i: usize) -> Result<Option<Literal>> {
    if col.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match col.data_type() {
        DataType::Date32 => Literal::date(col.as_primitive::<Date32Type>().value(i)),
        DataType::Int32 => Literal::int(col.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Literal::long(col.as_primitive::<Int64Type>().value(i)),
        DataType::Utf8 => Literal::string(col.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Literal::string(col.as_string::<i64>().value(i)),
        other => return Err(Error::invalid(format!("partition column type {other} is not supported"))),
    }))
}

/// Fails the process on purpose at a named point when `RXGATE_FAILPOINT` names it; used by
/// crash tests to prove a half-done ingest leaves the table as it was.
pub fn failpoint(name: &str) {
    if std::env::var("RXGATE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("rxgate: failpoint {name} reached, aborting");
        std::process::abort();
    }
}

/// Writes `batches` into `table_name` and atomically replaces the partition
/// `delivery_date = date` with them (an empty input removes the partition's data).
pub async fn replace_delivery(
    lake: &Lakehouse,
    table_name: &str,
    date: chrono::NaiveDate,
    batches: impl IntoIterator<Item = RecordBatch>,
    properties: HashMap<String, String>,
) -> Result<CommitOutcome> {
    let table = lake.load_table(table_name).await?;
    let mut writer = PartitionedWriter::new(&table)?;
    for b in batches {
        writer.write(b).await?;
    }
    let files = writer.close().await?;
    commit_delivery(lake, table_name, date, files, properties).await
}

/// Commits already-written data files as the new content of one delivery's partition.
pub async fn commit_delivery(
    lake: &Lakehouse,
    table_name: &str,
    date: chrono::NaiveDate,
    files: Vec<DataFile>,
    mut properties: HashMap<String, String>,
) -> Result<CommitOutcome> {
    failpoint("ingest.before_commit");
    properties.insert("rxgate.delivery-date".into(), date.to_string());
    let replace = PartitionReplace {
        field: "delivery_date".into(),
        value: Literal::date(crate::batch::epoch_days(date)),
        new_files: files,
        properties,
    };
    replace_partition(lake, table_name, &replace).await
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

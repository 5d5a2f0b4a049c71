//! File pruning by Parquet bloom filters, before a scan opens any file.
//!
//! Iceberg prunes files by partition values and column bounds, but a point lookup on a column
//! that is not the partition key (`WHERE npi = '…'` on a table partitioned by state) keeps
//! every file: each holds a wide range of values. DataFusion's Parquet scan would then open
//! every file — convert its footer to an Arrow schema twice, build pruning predicates, read its
//! bloom filters — only to find that one file holds the value. Profiled on W3's npi lookup
//! (benches/profiles/w9-lookup-*), opening the files was over half of the server's time.
//!
//! Here the planned files are checked first: for each equality (`c = v`, `v = c`,
//! `c IN (v, …)`) on a string, integer or date column, the column's bloom filter in every row
//! group of the file is consulted, and a file none of whose row groups may hold any of the
//! values is dropped from the scan. The filters are read once per file (through the runtime's
//! footer cache for the offsets) and kept in memory: Iceberg data files never change.
//! A file without bloom filters for the column is kept, as is any file on an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Schema};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use futures::StreamExt;
use iceberg::scan::FileScanTask;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::bloom_filter::Sbbf;

/// How many files' filters are fetched at once on a cold cache (a remote store's latency).
const FETCH_CONCURRENCY: usize = 32;

/// The bloom filters of one column of one file, per row group (`None`: that row group has none).
type ColumnBlooms = Arc<Vec<Option<Sbbf>>>;

/// Bloom filters read so far, by file and column; at most `budget` bytes of bitsets.
#[derive(Debug)]
pub struct BloomFilters {
    budget: u64,
    entries: Mutex<HashMap<String, ColumnBlooms>>,
    bytes: AtomicU64,
    pruned: AtomicU64,
}

impl BloomFilters {
    /// A cache of at most `budget` bytes; past it, entries are dropped to make room.
    pub fn new(budget: u64) -> Self {
        Self { budget, entries: Mutex::default(), bytes: AtomicU64::new(0), pruned: AtomicU64::new(0) }
    }

    /// Bytes of bloom filters held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Files dropped from scans so far.
    pub fn files_pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    fn get(&self, key: &str) -> Option<ColumnBlooms> {
        self.entries.lock().expect("bloom cache lock").get(key).cloned()
    }

    fn put(&self, key: String, blooms: ColumnBlooms) {
        let size: u64 = blooms.iter().flatten().map(|b| b.num_blocks() as u64 * 32).sum::<u64>() + 64;
        if size > self.budget {
            return;
        }
        let mut entries = self.entries.lock().expect("bloom cache lock");
        if self.bytes.load(Ordering::Relaxed) + size > self.budget {
            // Immutable entries, cheap to re-read: drop about half rather than track recency.
            let victims: Vec<String> = entries.keys().step_by(2).cloned().collect();
            for k in victims {
                if let Some(old) = entries.remove(&k) {
                    let freed = old.iter().flatten().map(|b| b.num_blocks() as u64 * 32).sum::<u64>() + 64;
                    self.bytes.fetch_sub(freed, Ordering::Relaxed);
                }
            }
        }
        if entries.insert(key, blooms).is_none() {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// `tasks` without the files whose bloom filters rule out every value an equality in
    /// `filters` asks for. `schema` is the table's (it gives the columns' types).
    pub async fn prune(
        &self,
        state: &dyn Session,
        schema: &Schema,
        filters: &[Expr],
        tasks: Vec<FileScanTask>,
    ) -> Vec<FileScanTask> {
        let points = point_values(filters, schema);
        if points.is_empty() || tasks.len() < 2 {
            return tasks;
        }
        let footers = state.runtime_env().cache_manager.get_file_metadata_cache();
        let hint = state.table_options().parquet.global.metadata_size_hint;
        let checks = futures::stream::iter(tasks.into_iter().map(|task| {
            let footers = footers.clone();
            let points = &points;
            async move {
                let keep = self.may_match(state, &task, points, footers, hint).await.unwrap_or(true);
                (task, keep)
            }
        }))
        .buffered(FETCH_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let before = checks.len();
        let kept: Vec<FileScanTask> = checks.into_iter().filter(|(_, keep)| *keep).map(|(t, _)| t).collect();
        self.pruned.fetch_add((before - kept.len()) as u64, Ordering::Relaxed);
        kept
    }

    /// False only when, for some column, no row group's bloom filter may hold any of its values.
    async fn may_match(
        &self,
        state: &dyn Session,
        task: &FileScanTask,
        points: &[(String, Vec<Probe>)],
        footers: Arc<dyn FileMetadataCache>,
        hint: Option<usize>,
    ) -> datafusion::common::Result<bool> {
        let url = ListingTableUrl::parse(&task.data_file_path)?;
        let store = state.runtime_env().object_store(url.object_store())?;
        // The same ObjectMeta the scan builds, so the footer cache hits.
        let meta = PartitionedFile::new(url.prefix().to_string(), task.file_size_in_bytes).object_meta;
        let mut metadata = None;
        for (column, probes) in points {
            let key = format!("{}#{column}", task.data_file_path);
            let blooms = match self.get(&key) {
                Some(b) => b,
                None => {
                    if metadata.is_none() {
                        metadata = Some(
                            DFParquetMetadata::new(store.as_ref(), &meta)
                                .with_metadata_size_hint(hint)
                                .with_file_metadata_cache(Some(footers.clone()))
                                .fetch_metadata()
                                .await?,
                        );
                    }
                    let md = metadata.as_ref().expect("metadata just read");
                    let blooms = Arc::new(read_blooms(store.as_ref(), &meta.location, md, column).await?);
                    self.put(key, blooms.clone());
                    blooms
                }
            };
            if blooms.is_empty() || blooms.iter().any(Option::is_none) {
                continue;
            }
            let excluded = blooms.iter().flatten().all(|b| probes.iter().all(|p| !p.check(b)));
            if excluded {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The bloom filters of `column` in each row group of a file (empty: no such column).
async fn read_blooms(
    store: &dyn ObjectStore,
    location: &Path,
    md: &parquet::file::metadata::ParquetMetaData,
    column: &str,
) -> datafusion::common::Result<Vec<Option<Sbbf>>> {
    let descr = md.file_metadata().schema_descr();
    let Some(index) = (0..descr.num_columns()).find(|&i| descr.column(i).path().parts() == [column.to_string()]) else {
        return Ok(vec![]);
    };
    let mut out = Vec::with_capacity(md.num_row_groups());
    for rg in md.row_groups() {
        let chunk = rg.column(index);
        let (Some(offset), Some(length)) = (chunk.bloom_filter_offset(), chunk.bloom_filter_length()) else {
            out.push(None);
            continue;
        };
        let (offset, length) = (offset as u64, length as u64);
        let bytes = store.get_range(location, offset..offset + length).await?;
        out.push(Some(Sbbf::from_bytes(&bytes)?));
    }
    Ok(out)
}

/// One value to look for, in the representation Parquet hashes.
#[derive(Debug, Clone, PartialEq)]
enum Probe {
    Bytes(String),
    I32(i32),
    I64(i64),
}

impl Probe {
    fn check(&self, bloom: &Sbbf) -> bool {
        match self {
            Probe::Bytes(s) => bloom.check(s.as_str()),
            Probe::I32(v) => bloom.check(v),
            Probe::I64(v) => bloom.check(v),
        }
    }

    /// `value` as the column of type `column` stores it; `None` when unsure.
    fn of(value: &ScalarValue, column: &DataType) -> Option<Self> {
        match (column, value) {
            (
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8,
                ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            ) => Some(Probe::Bytes(s.clone())),
            (DataType::Int32, ScalarValue::Int32(Some(v))) => Some(Probe::I32(*v)),
            (DataType::Int32, ScalarValue::Int64(Some(v))) => i32::try_from(*v).ok().map(Probe::I32),
            (DataType::Date32, ScalarValue::Date32(Some(v))) => Some(Probe::I32(*v)),
            (DataType::Int64, ScalarValue::Int64(Some(v))) => Some(Probe::I64(*v)),
            (DataType::Int64, ScalarValue::Int32(Some(v))) => Some(Probe::I64(i64::from(*v))),
            _ => None,
        }
    }
}

/// The column and values of `c = v`, `v = c`, `c IN (v, …)`, or a disjunction of these on one
/// column (as DataFusion rewrites short IN lists).
fn equalities(e: &Expr) -> Option<(&str, Vec<&ScalarValue>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => Some((&c.name, vec![v])),
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let (a, mut va) = equalities(left)?;
            let (b, vb) = equalities(right)?;
            (a == b).then(|| {
                va.extend(vb);
                (a, va)
            })
        }
        Expr::InList(list) if !list.negated => {
            let Expr::Column(c) = list.expr.as_ref() else { return None };
            let values = list
                .list
                .iter()
                .map(|item| match item {
                    Expr::Literal(v, _) => Some(v),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((&c.name, values))
        }
        _ => None,
    }
}

/// Per column, the values the conjuncts of `filters` require it to equal one of.
fn point_values(filters: &[Expr], schema: &Schema) -> Vec<(String, Vec<Probe>)> {
    let mut out: Vec<(String, Vec<Probe>)> = vec![];
    let mut conjuncts = vec![];
    for f in filters {
        datafusion::logical_expr::utils::split_conjunction(f).into_iter().for_each(|e| conjuncts.push(e));
    }
    for e in conjuncts {
        let Some((column, values)) = equalities(e) else { continue };
        let Ok(field) = schema.field_with_name(column) else { continue };
        let probes: Option<Vec<Probe>> = values.iter().map(|v| Probe::of(v, field.data_type())).collect();
        if let Some(probes) = probes.filter(|p| !p.is_empty()) {
            out.push((column.to_string(), probes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::prelude::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("npi", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Float64, true),
        ])
    }

    #[test]
    fn equalities_and_in_lists_become_probes() {
        let filters = vec![
            col("npi").eq(lit("123")).and(lit(5i64).eq(col("n"))),
            col("d").eq(lit(1.5)),
            col("n").in_list(vec![lit(1i64), lit(2i64)], false),
            col("npi").in_list(vec![lit("a")], true),
            col("npi").gt(lit("x")),
            col("npi").eq(lit("p")).or(col("npi").eq(lit("q"))),
            col("npi").eq(lit("p")).or(col("n").eq(lit(1i64))),
        ];
        let p = point_values(&filters, &schema());
        assert_eq!(
            p,
            vec![
                ("npi".to_string(), vec![Probe::Bytes("123".into())]),
                ("n".to_string(), vec![Probe::I64(5)]),
                ("n".to_string(), vec![Probe::I64(1), Probe::I64(2)]),
                ("npi".to_string(), vec![Probe::Bytes("p".into()), Probe::Bytes("q".into())]),
            ]
        );
    }

    #[test]
    fn a_bloom_filter_rules_out_absent_values_only() {
        let mut b = Sbbf::new_with_ndv_fpp(100, 0.01).unwrap();
        b.insert("1438820098");
        b.insert(&42i64);
        assert!(Probe::Bytes("1438820098".into()).check(&b));
        assert!(Probe::I64(42).check(&b));
        let misses = (0..1000).filter(|i| Probe::Bytes(format!("x{i}")).check(&b)).count();
        assert!(misses < 50, "{misses} false positives in 1000");
    }
}

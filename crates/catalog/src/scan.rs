//! The read path of an Iceberg table: Iceberg plans the files (manifest and partition pruning,
//! column-metric pruning), DataFusion reads them with its own Parquet scan.
//!
//! iceberg-datafusion's `IcebergTableScan` decodes every file of a query in one stream, so a
//! query uses one core however many files it reads. Here the planned files are spread over
//! `target_partitions` file groups of a `DataSourceExec`, which brings everything DataFusion's
//! Parquet reader has: parallel decoding, byte-range splitting of large files, row-group and
//! page pruning from the pushed-down filters, and the runtime's Parquet footer cache (keyed by
//! path and size; Iceberg data files never change). The row count of the planned files is
//! exact, so `count(*)` without a filter is answered from the manifests.
//!
//! Strings are read as `Utf8View`, as DataFusion's own Parquet tables are: a dictionary-encoded
//! column then decodes to views into its dictionary page instead of copying every value, which
//! halved the dashboard filters' scan time at scale 1 (`benches/README.md`). The protocols take
//! views as they are (pgwire) or turn them back into plain strings at their edge (Flight SQL).
//!
//! The Parquet files are read by column *name*. That is only the same as Iceberg's field-id
//! projection while no column was ever renamed, or dropped and re-added under its old name,
//! and while the snapshot has no delete files: otherwise the table falls back to iceberg's own
//! scan, which projects by field id and applies deletes.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, Statistics};
use datafusion::datasource::file_format::parquet::transform_schema_to_view;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{cast, Column};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFileFormat, TableMetadata};
use iceberg::table::Table;
use iceberg_datafusion::physical_plan::convert_filters_to_predicate;
use iceberg_datafusion::IcebergStaticTableProvider;

use crate::storage::FileCache;

/// A DataFusion table over one snapshot of an Iceberg table (the current one unless pinned).
#[derive(Debug, Clone)]
pub struct LakehouseTable {
    table: Table,
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    /// iceberg's own scan: used when reading by name would be wrong (see the module doc) and
    /// for snapshots with delete files.
    fallback: IcebergStaticTableProvider,
    by_name: bool,
    /// Whole data files kept in memory across scans (Iceberg data files never change); a
    /// cache with no budget reads the store directly.
    data_cache: Arc<FileCache>,
}

impl LakehouseTable {
    /// The table at its current snapshot, its data files read through `data_cache`.
    pub async fn try_new(table: Table, data_cache: Arc<FileCache>) -> iceberg::Result<Self> {
        let fallback = IcebergStaticTableProvider::try_new_from_table(table.clone()).await?;
        Ok(Self::with(table, None, fallback, data_cache))
    }

    /// The table pinned at `snapshot_id` (time travel), with that snapshot's schema.
    pub async fn try_new_at(table: Table, snapshot_id: i64, data_cache: Arc<FileCache>) -> iceberg::Result<Self> {
        let fallback = IcebergStaticTableProvider::try_new_from_table_snapshot(table.clone(), snapshot_id).await?;
        Ok(Self::with(table, Some(snapshot_id), fallback, data_cache))
    }

    fn with(
        table: Table,
        snapshot_id: Option<i64>,
        fallback: IcebergStaticTableProvider,
        data_cache: Arc<FileCache>,
    ) -> Self {
        let schema = Arc::new(transform_schema_to_view(&fallback.schema()));
        let by_name = names_are_field_ids(table.metadata());
        Self { table, snapshot_id, schema, fallback, by_name, data_cache }
    }

    /// The Iceberg table this reads.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Whether scans read Parquet by column name (the parallel path).
    pub fn reads_by_name(&self) -> bool {
        self.by_name
    }

    /// iceberg's own scan, its plain strings cast to the table's view types.
    async fn fallback_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self.fallback.scan(state, projection, filters, limit).await?;
        let target = match projection {
            Some(p) => self.schema.project(p)?,
            None => self.schema.as_ref().clone(),
        };
        let input = plan.schema();
        if input.fields().iter().zip(target.fields()).all(|(a, b)| a.data_type() == b.data_type()) {
            return Ok(plan);
        }
        let exprs = input
            .fields()
            .iter()
            .zip(target.fields())
            .enumerate()
            .map(|(i, (from, to))| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(from.name(), i));
                Ok((cast(column, &input, to.data_type().clone())?, to.name().clone()))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }

    async fn plan_tasks(&self, filters: &[Expr]) -> iceberg::Result<Vec<FileScanTask>> {
        let mut scan = self.table.scan().select_all();
        if let Some(id) = self.snapshot_id {
            scan = scan.snapshot_id(id);
        }
        if let Some(predicate) = convert_filters_to_predicate(&plain_string_literals(filters)) {
            scan = scan.with_filter(predicate);
        }
        scan.build()?.plan_files().await?.try_collect().await
    }
}

#[async_trait]
impl TableProvider for LakehouseTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.by_name {
            return self.fallback_scan(state, projection, filters, limit).await;
        }
        let tasks = self.plan_tasks(filters).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        let tasks = self.data_cache.blooms().prune(state, &self.schema, filters, tasks).await;
        let Some(files) = ParquetFiles::from_tasks(&tasks)? else {
            return self.fallback_scan(state, projection, filters, limit).await;
        };
        if files.files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let target = state.config_options().execution.target_partitions.max(1);
        let mut statistics = Statistics::new_unknown(&self.schema);
        statistics.num_rows = files.rows.map_or(Precision::Absent, Precision::Exact);
        statistics.total_byte_size = Precision::Inexact(files.bytes as usize);

        let mut options = state.table_options().parquet.clone();
        // The files' Arrow schema has Utf8 strings: decode them as views, as the table schema says.
        options.global.schema_force_view_types = true;
        let hint = options.global.metadata_size_hint;
        // What ParquetFormat::create_physical_plan does, with the store read through the data
        // file cache: the runtime's footer cache, the options' metadata size hint.
        let store = state.runtime_env().object_store(&files.store)?;
        let store = self.data_cache.store(files.store.as_str(), store);
        let footers = state.runtime_env().cache_manager.get_file_metadata_cache();
        let mut source = ParquetSource::new(TableSchema::from_file_schema(self.schema.clone()))
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(store, footers)));
        if let Some(hint) = hint {
            source = source.with_metadata_size_hint(hint);
        }
        let groups = files.groups(target);
        let config = FileScanConfigBuilder::new(files.store, Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Iceberg prunes files with them and the Parquet scan prunes row groups; DataFusion
        // still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// The filters with view-string literals (`presc_state = Utf8View('CA')`, as type coercion
/// makes them against the view columns) turned into plain ones, which iceberg understands:
/// it drops a predicate on a literal it cannot convert, and with it partition and file pruning.
pub(crate) fn plain_string_literals(filters: &[Expr]) -> Vec<Expr> {
    filters
        .iter()
        .map(|f| {
            f.clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Literal(ScalarValue::Utf8View(v), meta) => {
                            Transformed::yes(Expr::Literal(ScalarValue::Utf8(v), meta))
                        }
                        e => Transformed::no(e),
                    })
                })
                .map_or_else(|_| f.clone(), |t| t.data)
        })
        .collect()
}

/// The planned data files of one scan, in one object store.
struct ParquetFiles {
    store: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    /// Exact when every task is a whole file with a known record count.
    rows: Option<usize>,
    bytes: u64,
}

impl ParquetFiles {
    /// `None` when the tasks need iceberg's own reader: delete files, a format other than
    /// Parquet, or files spread over several stores.
    fn from_tasks(tasks: &[FileScanTask]) -> DfResult<Option<Self>> {
        let mut store: Option<ObjectStoreUrl> = None;
        let mut files = Vec::with_capacity(tasks.len());
        let mut rows = Some(0usize);
        let mut bytes = 0u64;
        for task in tasks {
            if !task.deletes.is_empty() || task.data_file_format != DataFileFormat::Parquet {
                return Ok(None);
            }
            let url = ListingTableUrl::parse(&task.data_file_path)?;
            let this_store = url.object_store();
            match &store {
                None => store = Some(this_store),
                Some(s) if s.as_str() != this_store.as_str() => return Ok(None),
                Some(_) => {}
            }
            let mut file = PartitionedFile::new(url.prefix().to_string(), task.file_size_in_bytes);
            let whole = task.start == 0 && task.length == task.file_size_in_bytes;
            if !whole {
                file = file.with_range(task.start as i64, (task.start + task.length) as i64);
            }
            rows = match (rows, task.record_count, whole) {
                (Some(sum), Some(n), true) => Some(sum + n as usize),
                _ => None,
            };
            bytes += task.length;
            files.push(file);
        }
        let store = store.unwrap_or_else(ObjectStoreUrl::local_filesystem);
        Ok(Some(Self { store, files, rows, bytes }))
    }

    /// Spreads the files over at most `target` groups of about equal bytes (largest first,
    /// each to the lightest group). DataFusion may split large files further.
    fn groups(&self, target: usize) -> Vec<FileGroup> {
        let n = target.min(self.files.len()).max(1);
        let mut order: Vec<&PartitionedFile> = self.files.iter().collect();
        order.sort_by_key(|f| std::cmp::Reverse(scan_len(f)));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
        for file in order {
            let lightest = groups.iter_mut().min_by_key(|(b, _)| *b).expect("at least one group");
            lightest.0 += scan_len(file);
            lightest.1.push(file.clone());
        }
        groups.into_iter().filter(|(_, g)| !g.is_empty()).map(|(_, g)| FileGroup::new(g)).collect()
    }
}

fn scan_len(file: &PartitionedFile) -> u64 {
    match &file.range {
        Some(r) => (r.end - r.start) as u64,
        None => file.object_meta.size,
    }
}

/// True when every column name of every schema the table ever had always meant the same field
/// id, so that reading files by name reads the fields Iceberg means.
fn names_are_field_ids(metadata: &TableMetadata) -> bool {
    let mut by_name: HashMap<String, i32> = HashMap::new();
    let mut by_id: HashMap<i32, String> = HashMap::new();
    for schema in metadata.schemas_iter() {
        for field in schema.as_struct().fields() {
            if *by_name.entry(field.name.clone()).or_insert(field.id) != field.id {
                return false;
            }
            if *by_id.entry(field.id).or_insert_with(|| field.name.clone()) != field.name {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> PartitionedFile {
        PartitionedFile::new(path.to_string(), size)
    }

    #[test]
    fn groups_balance_bytes_and_never_exceed_target() {
        let files = ParquetFiles {
            store: ObjectStoreUrl::local_filesystem(),
            files: vec![file("a", 100), file("b", 60), file("c", 50), file("d", 10)],
            rows: None,
            bytes: 220,
        };
        let groups = files.groups(2);
        assert_eq!(groups.len(), 2);
        let sizes: Vec<u64> = groups.iter().map(|g| g.iter().map(scan_len).sum()).collect();
        assert_eq!(sizes.iter().sum::<u64>(), 220);
        assert!(sizes.iter().all(|s| *s == 110), "{sizes:?}");
        assert_eq!(files.groups(8).len(), 4, "never more groups than files");
    }

    #[test]
    fn view_string_literals_still_prune_files() {
        use datafusion::logical_expr::{col, lit};
        let view = col("presc_state").eq(lit(ScalarValue::Utf8View(Some("CA".into()))));
        assert!(convert_filters_to_predicate(std::slice::from_ref(&view)).is_none(), "iceberg drops it");
        let plain = plain_string_literals(&[view]);
        assert_eq!(plain, vec![col("presc_state").eq(lit("CA"))]);
        assert!(convert_filters_to_predicate(&plain).is_some());
    }
}

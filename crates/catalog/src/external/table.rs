//! The DataFusion table of an external table, and partition discovery on storage.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{project_schema, DFSchema};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectMeta, ObjectStore};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};

use super::{unescape_path_name, ExternalFormat, ExternalTableDef, HivePartition, LocationPolicy};

/// The location policy a table's partitions are checked against, and the protected
/// locations (name, location) they must not overlap.
type Confinement = (Arc<LocationPolicy>, Vec<(String, String)>);

/// An external table as DataFusion sees it: the definition and the partitions registered
/// when the query was planned.
#[derive(Debug)]
pub struct ExternalTableProvider {
    def: Arc<ExternalTableDef>,
    partitions: Vec<HivePartition>,
    schema: SchemaRef,
    file_schema: SchemaRef,
    /// Where its partitions may be read from, and what they must not overlap.
    confine: Option<Confinement>,
}

impl ExternalTableProvider {
    /// A table over `partitions` (for an unpartitioned table, one holding its location).
    pub fn try_new(def: Arc<ExternalTableDef>, partitions: Vec<HivePartition>) -> rxgate_common::Result<Self> {
        let schema = def.table_schema()?;
        let file_schema = def.file_schema()?;
        Ok(Self { def, partitions, schema, file_schema, confine: None })
    }

    /// Reads only partitions whose location `policy` allows and that overlap none of
    /// `protected` (a location registered before the policy, or by another gateway, is
    /// refused at scan time with 42501).
    pub fn confined(mut self, policy: Arc<LocationPolicy>, protected: Vec<(String, String)>) -> Self {
        self.confine = Some((policy, protected));
        self
    }

    /// The definition.
    pub fn definition(&self) -> &Arc<ExternalTableDef> {
        &self.def
    }

    fn partition_names(&self) -> Vec<&str> {
        self.def.partition_columns.iter().map(|c| c.name.as_str()).collect()
    }

    fn format(&self, state: &dyn Session) -> DfResult<Arc<dyn FileFormat>> {
        Ok(match self.def.format {
            ExternalFormat::Parquet => {
                Arc::new(ParquetFormat::default().with_options(state.table_options().parquet.clone()))
            }
            ExternalFormat::Csv => Arc::new(
                CsvFormat::default()
                    .with_options(state.table_options().csv.clone())
                    .with_has_header(self.def.csv_header())
                    .with_delimiter(self.def.csv_delimiter().map_err(|e| DataFusionError::Plan(e.message))?),
            ),
        })
    }

    /// The registered partitions the filters on partition columns keep.
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<&HivePartition>> {
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(self.partitions.iter().collect());
        };
        if self.partitions.is_empty() {
            return Ok(vec![]);
        }
        let fields = self.def.partition_fields().map_err(|e| DataFusionError::Plan(e.message))?;
        let schema = Arc::new(Schema::new(fields.clone()));
        let columns = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let text: StringArray = self
                    .partitions
                    .iter()
                    .map(|p| (p.values[i] != super::DEFAULT_PARTITION).then(|| p.values[i].clone()))
                    .collect();
                if text.null_count() == text.len() {
                    return Ok(new_null_array(f.data_type(), text.len()));
                }
                Ok(cast(&text, f.data_type())?)
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.partitions.len())),
        )?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let expr = state.create_physical_expr(predicate, &df_schema)?;
        let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let keep = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("partition predicate is not boolean".into()))?;
        Ok(self
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.is_valid(*i) && keep.value(*i))
            .map(|(_, p)| p)
            .collect())
    }
}

/// A partition's directory: its object store and prefix.
fn directory(location: &str) -> DfResult<(ObjectStoreUrl, StorePath)> {
    let url = ListingTableUrl::parse(location)?;
    Ok((url.object_store(), url.prefix().clone()))
}

/// The object store of a URL, with a clear error when none is configured for it.
pub fn object_store(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    url: &ObjectStoreUrl,
) -> DfResult<Arc<dyn ObjectStore>> {
    runtime.object_store(url).map_err(|_| {
        DataFusionError::External(Box::new(rxgate_common::Error::new(
            rxgate_common::StatusCode::StorageUnavailable,
            format!("no object store is configured for {}", url.as_str()),
        )))
    })
}

/// Hive skips files and directories whose name starts with `_` or `.` (`_SUCCESS`, `.crc`).
fn hidden(prefix: &StorePath, path: &StorePath) -> bool {
    let Some(rest) = path.prefix_match(prefix) else { return true };
    rest.into_iter().any(|part| part.as_ref().starts_with('_') || part.as_ref().starts_with('.'))
}

/// The data files under a directory (recursively, hidden files skipped).
async fn list_files(store: &Arc<dyn ObjectStore>, prefix: &StorePath) -> DfResult<Vec<ObjectMeta>> {
    let listed: Vec<ObjectMeta> = store.list(Some(prefix)).try_collect().await?;
    Ok(listed.into_iter().filter(|m| !hidden(prefix, &m.location) && m.size > 0).collect())
}

#[async_trait]
impl TableProvider for ExternalTableProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let names = self.partition_names();
        let (partition_filters, other_filters): (Vec<Expr>, Vec<Expr>) =
            filters.iter().cloned().partition(|f| !names.is_empty() && expr_applicable_for_cols(&names, f));
        let kept = self.prune(state, &partition_filters)?;
        if let Some((policy, protected)) = &self.confine {
            for p in &kept {
                policy.check(&p.location, protected).map_err(|e| DataFusionError::External(Box::new(e)))?;
            }
        }
        // List the kept partitions' files, a few directories at a time.
        let runtime = state.runtime_env().clone();
        let mut listed: Vec<(ObjectStoreUrl, Vec<PartitionedFile>)> = vec![];
        for chunk in kept.chunks(16) {
            let lists = chunk.iter().map(|p| list_partition(&runtime, &self.def, p));
            listed.extend(futures::future::try_join_all(lists).await?);
        }
        let mut by_store: BTreeMap<String, (ObjectStoreUrl, Vec<PartitionedFile>)> = BTreeMap::new();
        for (url, files) in listed {
            if files.is_empty() {
                continue;
            }
            by_store.entry(url.as_str().to_string()).or_insert_with(|| (url, vec![])).1.extend(files);
        }
        if by_store.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(&self.schema, projection)?)));
        }
        let format = self.format(state)?;
        let target = state.config_options().execution.target_partitions.max(1);
        // The limit is only safe to pass to the scan when no filter runs above it.
        let limit = if other_filters.is_empty() { limit } else { None };
        let mut plans = vec![];
        for (_, (url, mut files)) in by_store {
            // Spread the files over the target partitions, largest first.
            files.sort_by(|a, b| b.object_meta.size.cmp(&a.object_meta.size).then(a.path().cmp(b.path())));
            let n = target.min(files.len());
            let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, vec![])).collect();
            for f in files {
                let g = groups.iter_mut().min_by_key(|g| g.0).expect("at least one group");
                g.0 += f.object_meta.size;
                g.1.push(f);
            }
            let groups: Vec<FileGroup> = groups.into_iter().map(|g| FileGroup::new(g.1)).collect();
            let table_schema = TableSchema::new(
                self.file_schema.clone(),
                self.def.partition_fields().map_err(|e| DataFusionError::Plan(e.message))?,
            );
            let config = FileScanConfigBuilder::new(url, format.file_source(table_schema))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(format.create_physical_plan(state, config).await?);
        }
        if plans.len() == 1 {
            return Ok(plans.remove(0));
        }
        UnionExec::try_new(plans)
    }
}

/// The files of one partition, with its values.
async fn list_partition(
    runtime: &Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    def: &ExternalTableDef,
    p: &HivePartition,
) -> DfResult<(ObjectStoreUrl, Vec<PartitionedFile>)> {
    let (url, prefix) = directory(&p.location)?;
    let store = object_store(runtime, &url)?;
    let values = def.partition_scalars(&p.values).map_err(|e| DataFusionError::Plan(e.message))?;
    let files = list_files(&store, &prefix).await?;
    let files =
        files.into_iter().map(|m| PartitionedFile::new_from_meta(m).with_partition_values(values.clone())).collect();
    Ok((url, files))
}

/// Whether a directory holds at least one data file (for `MSCK … DROP PARTITIONS`).
pub async fn location_has_files(store: &Arc<dyn ObjectStore>, location: &str) -> rxgate_common::Result<bool> {
    let (_, prefix) = directory(location)?;
    let mut listing = store.list(Some(&prefix));
    while let Some(m) = listing.next().await {
        let m = m.map_err(DataFusionError::from)?;
        if !hidden(&prefix, &m.location) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The partitions present on storage: directories `k1=v1/…/kn=vn/` under the table's
/// location, keys in the order of `PARTITIONED BY`, values checked against the column
/// types (a directory that does not fit is skipped with a warning, as Hive's
/// `hive.msck.path.validation=skip`). Values are canonical; each partition's location is the
/// directory found.
pub async fn discover_partitions(
    store: &Arc<dyn ObjectStore>,
    def: &ExternalTableDef,
) -> rxgate_common::Result<Vec<HivePartition>> {
    if def.partition_columns.is_empty() {
        return Ok(vec![]);
    }
    let (_, root) = directory(&def.location)?;
    // (directory, values so far)
    let mut level: Vec<(StorePath, Vec<String>)> = vec![(root, vec![])];
    for (depth, column) in def.partition_columns.iter().enumerate() {
        let mut next = vec![];
        for (dir, values) in level {
            let listed = store.list_with_delimiter(Some(&dir)).await.map_err(DataFusionError::from)?;
            for sub in listed.common_prefixes {
                let Some(name) = sub.filename() else { continue };
                let Some((k, v)) = name.split_once('=') else { continue };
                if !unescape_path_name(k).eq_ignore_ascii_case(&column.name) {
                    continue;
                }
                let raw = unescape_path_name(v);
                match def.canonical_value(depth, &raw) {
                    Ok(value) => {
                        let mut values = values.clone();
                        values.push(value);
                        next.push((sub.clone(), values));
                    }
                    Err(e) => {
                        tracing::warn!(table = %def.qualified(), directory = %sub, error = %e.message, "partition directory skipped")
                    }
                }
            }
        }
        level = next;
    }
    let base = ListingTableUrl::parse(&def.location)?;
    let (root_url, root_prefix) = (base.as_str().to_string(), base.prefix().clone());
    let mut found: Vec<HivePartition> = level
        .into_iter()
        .map(|(dir, values)| {
            // The directory's URL: the table's URL with the part below its prefix appended.
            let below: Vec<String> = dir
                .prefix_match(&root_prefix)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            let mut location = root_url.clone();
            if !location.ends_with('/') {
                location.push('/');
            }
            for part in below {
                location.push_str(&part.replace('%', "%25"));
                location.push('/');
            }
            HivePartition { values, location }
        })
        .collect();
    found.sort_by(|a, b| a.values.cmp(&b.values));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::{ExternalColumn, ExternalFormat};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::object_store::local::LocalFileSystem;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    fn write(dir: &std::path::Path, rows: i64) {
        std::fs::create_dir_all(dir).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("npi", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(dir.join("part-0.parquet")).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    }

    #[tokio::test]
    async fn discovers_partitions_and_scans_only_those_the_filters_keep() {
        let root = std::env::temp_dir().join(format!("rxgate-external-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (d, s, n) in [
            ("2024-01-01", "CA", 3),
            ("2024-01-01", "NY", 4),
            ("2024-02-01", "CA", 5),
            ("2024-03-01", crate::external::DEFAULT_PARTITION, 2),
        ] {
            write(&root.join(format!("delivery_date={d}/state={s}")), n);
        }
        std::fs::create_dir_all(root.join("delivery_date=not-a-date/state=CA")).unwrap();
        let col = |n: &str, t: &str| ExternalColumn { name: n.into(), hive_type: t.into(), comment: None };
        let def = ExternalTableDef {
            namespace: "health".into(),
            name: "t".into(),
            columns: vec![col("npi", "bigint")],
            partition_columns: vec![col("delivery_date", "date"), col("state", "string")],
            format: ExternalFormat::Parquet,
            location: format!("file://{}/", root.display()),
            properties: Default::default(),
        };
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let found = discover_partitions(&store, &def).await.unwrap();
        let values: Vec<Vec<String>> = found.iter().map(|p| p.values.clone()).collect();
        assert_eq!(
            values,
            vec![
                vec!["2024-01-01", "CA"],
                vec!["2024-01-01", "NY"],
                vec!["2024-02-01", "CA"],
                vec!["2024-03-01", crate::external::DEFAULT_PARTITION],
            ]
        );
        assert_eq!(found[1].location, format!("file://{}/delivery_date=2024-01-01/state=NY/", root.display()));
        assert!(location_has_files(&store, &found[0].location).await.unwrap());

        let ctx = SessionContext::new();
        // The third partition is not registered: it is not read. Hive's default partition is NULL.
        let registered = vec![found[0].clone(), found[1].clone(), found[3].clone()];
        let provider = ExternalTableProvider::try_new(Arc::new(def), registered).unwrap();
        ctx.register_table("t", Arc::new(provider)).unwrap();
        let count = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
            }
        };
        assert_eq!(count("SELECT count(*) FROM t").await, 9);
        assert_eq!(count("SELECT count(*) FROM t WHERE state IS NULL").await, 2);
        assert_eq!(count("SELECT count(*) FROM t WHERE state = 'NY'").await, 4);
        assert_eq!(count("SELECT count(*) FROM t WHERE delivery_date = DATE '2024-01-01' AND state = 'CA'").await, 3);
        assert_eq!(count("SELECT count(*) FROM t WHERE delivery_date > DATE '2024-01-15'").await, 2);
        let plan = ctx.sql("SELECT npi FROM t WHERE state = 'NY'").await.unwrap().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        assert!(text.contains("state=NY/part-0.parquet") && !text.contains("state=CA"), "{text}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

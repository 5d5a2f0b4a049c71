//! The `system` schema: `system.audit_log`, the audit trail read back from its JSON-lines
//! files; `system.storage_requests`, the object-store request counters; `system.data_cache`,
//! the data file cache's counters. Like every lakehouse schema it is governed by the policy:
//! only roles granted it (the demo policy: `admin`) can list or read it.

use std::any::Any;
use std::io::BufReader;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};

use rxgate_catalog::storage::{request_counts_schema, StoreRegistry};

use crate::audit::{audit_schema, AuditLog, AUDIT_FILE};

/// The `system` schema of a session.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    audit: Arc<AuditLog>,
    storage: Arc<StoreRegistry>,
}

impl SystemSchema {
    pub(crate) fn new(audit: Arc<AuditLog>, storage: Arc<StoreRegistry>) -> Self {
        Self { audit, storage }
    }

    /// Every audit record on disk, oldest file first.
    fn audit_batches(&self) -> DfResult<Vec<RecordBatch>> {
        let Some(dir) = self.audit.dir() else { return Ok(vec![]) };
        let mut rotated: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n = name.strip_prefix("audit.")?.strip_suffix(".jsonl")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        rotated.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
        let mut files: Vec<std::path::PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
        files.push(dir.join(AUDIT_FILE));
        let mut batches = vec![];
        for path in files {
            let Ok(file) = std::fs::File::open(&path) else { continue };
            let reader = ReaderBuilder::new(audit_schema())
                .with_batch_size(8192)
                .build(BufReader::new(file))
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
            for batch in reader {
                batches.push(batch.map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?);
            }
        }
        Ok(batches)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let storage = self.storage.clone();
        let table: Arc<dyn TableProvider> = match name {
            "audit_log" => Arc::new(MemTable::try_new(audit_schema(), vec![self.audit_batches()?])?),
            "storage_requests" => Arc::new(Counters {
                schema: request_counts_schema(),
                batch: Box::new(move || storage.request_counts_batch().map_err(|e| DataFusionError::External(Box::new(e)))),
            }),
            "data_cache" => Arc::new(Counters { schema: data_cache_schema(), batch: Box::new(move || data_cache_batch(&storage)) }),
            _ => return Ok(None),
        };
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// The tables of the `system` schema.
const TABLES: [&str; 3] = ["audit_log", "storage_requests", "data_cache"];

fn data_cache_schema() -> SchemaRef {
    let field = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(["budget_bytes", "bytes", "hits", "misses", "evictions"].map(field).to_vec()))
}

/// `system.data_cache`: one row, the data file cache's budget and counters.
fn data_cache_batch(storage: &StoreRegistry) -> DfResult<RecordBatch> {
    let cache = storage.data_cache();
    let s = cache.stats();
    let columns = [cache.budget(), s.bytes, s.hits, s.misses, s.evictions]
        .map(|v| Arc::new(UInt64Array::from(vec![v])) as ArrayRef)
        .to_vec();
    Ok(RecordBatch::try_new(data_cache_schema(), columns)?)
}

/// A table of counters read at each execution (not at planning), so a prepared statement
/// re-executed shows the current counts.
struct Counters {
    schema: SchemaRef,
    batch: Box<dyn Fn() -> DfResult<RecordBatch> + Send + Sync>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").field("schema", &self.schema).finish()
    }
}

#[async_trait]
impl TableProvider for Counters {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::View
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::prelude::Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let batch = (self.batch)()?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?.scan(state, projection, filters, limit).await
    }
}

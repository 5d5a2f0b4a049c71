//! The `system` schema: `system.audit_log`, the audit trail read back from its JSON-lines
//! files, and `system.storage_requests`, the object-store request counters. Like every lakehouse schema it is governed by the policy: only roles granted it
//! (the demo policy: `admin`) can list or read it.

use std::any::Any;
use std::io::BufReader;
use std::sync::Arc;

use async_trait::async_trait;
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
        rotated.sort_by(|a, b| b.0.cmp(&a.0));
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
        vec!["audit_log".into(), "storage_requests".into()]
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = match name {
            "audit_log" => MemTable::try_new(audit_schema(), vec![self.audit_batches()?])?,
            "storage_requests" => return Ok(Some(Arc::new(StorageRequests(self.storage.clone())))),
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(name, "audit_log" | "storage_requests")
    }
}

/// `system.storage_requests`: the counters as of each execution (not of planning), so a
/// prepared statement re-executed shows the current counts.
#[derive(Debug)]
struct StorageRequests(Arc<StoreRegistry>);

#[async_trait]
impl TableProvider for StorageRequests {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        request_counts_schema()
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
        let batch = self.0.request_counts_batch().map_err(|e| DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(request_counts_schema(), vec![vec![batch]])?.scan(state, projection, filters, limit).await
    }
}

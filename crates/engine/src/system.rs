//! The `system` schema: `system.audit_log`, the audit trail read back from its JSON-lines
//! files; `system.storage_requests`, the object-store request counters; `system.data_cache`,
//! the data file cache's counters; `system.login_throttle`, the failed-login counters of
//! the frontends (users and client addresses being delayed or locked out);
//! `system.maintenance_history`, every maintenance action on the catalog's tables (expiry,
//! orphan removal, compaction), from the catalog database; `system.backups`, every backup
//! create, verify, restore and prune, and `system.backup_status`, the last successful
//! backup per target and its age; `system.metrics`, every series of the metrics registry
//! (what `/metrics` shows), and `system.metrics_history`, its samples of the last hour. Like every lakehouse schema it is governed by the policy:
//! only roles granted it (the demo policy: `admin`) can list or read it.

use std::any::Any;
use std::io::BufReader;
use std::sync::Arc;

use async_trait::async_trait;
use std::sync::RwLock;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
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
    lake: rxgate_catalog::Lakehouse,
}

impl SystemSchema {
    pub(crate) fn new(audit: Arc<AuditLog>, lake: rxgate_catalog::Lakehouse) -> Self {
        Self { audit, storage: lake.storage().clone(), lake }
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
                batch: Box::new(move || {
                    storage.request_counts_batch().map_err(|e| DataFusionError::External(Box::new(e)))
                }),
            }),
            "data_cache" => {
                Arc::new(Counters { schema: data_cache_schema(), batch: Box::new(move || data_cache_batch(&storage)) })
            }
            "login_throttle" => {
                Arc::new(Counters { schema: login_throttle_schema(), batch: Box::new(login_throttle_batch) })
            }
            "maintenance_history" => {
                let rows = rxgate_catalog::maintenance::history::list(&self.lake)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let batch = maintenance_history_batch(&rows)?;
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
            }
            "backups" | "backup_status" => {
                let rows = rxgate_catalog::backup::history::list(&self.lake)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let batch = if name == "backups" { backups_batch(&rows)? } else { backup_status_batch(&rows)? };
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
            }
            "metrics" => Arc::new(Counters {
                schema: crate::metrics::metrics_schema(),
                batch: Box::new(crate::metrics::metrics_batch),
            }),
            "metrics_history" => Arc::new(Counters {
                schema: crate::metrics::history_schema(),
                batch: Box::new(crate::metrics::history_batch),
            }),
            _ => return Ok(None),
        };
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// The tables of the `system` schema.
const TABLES: [&str; 9] = [
    "audit_log",
    "storage_requests",
    "data_cache",
    "login_throttle",
    "maintenance_history",
    "backups",
    "backup_status",
    "metrics",
    "metrics_history",
];

/// `system.backups`: every recorded backup create, verify, restore and prune.
fn backups_batch(rows: &[rxgate_catalog::backup::history::BackupRecord]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    type Rec = rxgate_catalog::backup::history::BackupRecord;
    let text =
        |f: &dyn Fn(&Rec) -> &str| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) };
    let int =
        |f: &dyn Fn(&Rec) -> i64| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Int64Array>()) };
    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("started_at", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("files_copied", DataType::Int64, false),
        Field::new("bytes_copied", DataType::Int64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        text(&|r| &r.label),
        text(&|r| &r.kind),
        text(&|r| &r.target),
        Arc::new(rows.iter().map(|r| Some(r.started_ms)).collect::<TimestampMillisecondArray>()),
        int(&|r| r.duration_ms),
        int(&|r| r.files),
        int(&|r| r.bytes),
        int(&|r| r.files_copied),
        int(&|r| r.bytes_copied),
        text(&|r| &r.outcome),
        text(&|r| &r.detail),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

/// `system.backup_status`: per target, the last successful backup, when it finished and its
/// age in seconds now.
fn backup_status_batch(rows: &[rxgate_catalog::backup::history::BackupRecord]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    let last = rxgate_catalog::backup::history::last_successes(rows);
    let now = chrono::Utc::now().timestamp_millis();
    let schema = Arc::new(Schema::new(vec![
        Field::new("target", DataType::Utf8, false),
        Field::new("last_label", DataType::Utf8, false),
        Field::new("last_backup_at", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("age_seconds", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(last.iter().map(|(t, _, _)| Some(t.as_str())).collect::<StringArray>()),
        Arc::new(last.iter().map(|(_, l, _)| Some(l.as_str())).collect::<StringArray>()),
        Arc::new(last.iter().map(|(_, _, at)| Some(*at)).collect::<TimestampMillisecondArray>()),
        Arc::new(last.iter().map(|(_, _, at)| Some((now - at) / 1000)).collect::<Int64Array>()),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

/// `system.maintenance_history` of the recorded actions.
fn maintenance_history_batch(rows: &[rxgate_catalog::maintenance::history::HistoryEntry]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    let text = |f: &dyn Fn(&rxgate_catalog::maintenance::history::HistoryEntry) -> String| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&rxgate_catalog::maintenance::history::HistoryEntry) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("started_at", DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("snapshot_id", DataType::Int64, true),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("bytes_removed", DataType::Int64, false),
        Field::new("files_written", DataType::Int64, false),
        Field::new("bytes_written", DataType::Int64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        text(&|r| r.table.clone()),
        text(&|r| r.action.clone()),
        Arc::new(rows.iter().map(|r| Some(r.started_ms)).collect::<TimestampMillisecondArray>()),
        int(&|r| Some(r.duration_ms)),
        int(&|r| r.snapshot_id),
        int(&|r| Some(r.files_removed)),
        int(&|r| Some(r.bytes_removed)),
        int(&|r| Some(r.files_written)),
        int(&|r| Some(r.bytes_written)),
        text(&|r| r.outcome.clone()),
        text(&|r| r.detail.clone()),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

/// One row of `system.login_throttle`: a user name or client address with failed logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginThrottleRow {
    /// `user` or `address`.
    pub scope: String,
    /// The user name or the address.
    pub key: String,
    /// Failed logins counted.
    pub failures: u64,
    /// Delay the next login attempt waits, in milliseconds.
    pub delay_ms: u64,
    /// Seconds of lock-out left; 0 when not locked out.
    pub locked_secs: u64,
    /// RFC 3339 time of the last failure.
    pub last_failure: String,
}

/// What gives the rows of `system.login_throttle`.
pub type LoginThrottleSource = Arc<dyn Fn() -> Vec<LoginThrottleRow> + Send + Sync>;

/// The process's login throttle, as the frontends registered it (they own it: it lives with
/// the users directory). Process-wide like the storage counters.
static LOGIN_THROTTLE: RwLock<Option<LoginThrottleSource>> = RwLock::new(None);

/// Registers where `system.login_throttle` reads its rows (the last registration wins).
pub fn set_login_throttle_source(source: LoginThrottleSource) {
    *LOGIN_THROTTLE.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
}

fn login_throttle_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let number = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        text("scope"),
        text("key"),
        number("failures"),
        number("delay_ms"),
        number("locked_secs"),
        text("last_failure"),
    ]))
}

/// `system.login_throttle`: the keys with failed logins now (none when no frontend runs).
fn login_throttle_batch() -> DfResult<RecordBatch> {
    let source = LOGIN_THROTTLE.read().unwrap_or_else(|p| p.into_inner()).clone();
    let rows = source.map(|f| f()).unwrap_or_default();
    let text =
        |f: fn(&LoginThrottleRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let number =
        |f: fn(&LoginThrottleRow) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        text(|r| r.scope.as_str()),
        text(|r| r.key.as_str()),
        number(|r| r.failures),
        number(|r| r.delay_ms),
        number(|r| r.locked_secs),
        text(|r| r.last_failure.as_str()),
    ];
    Ok(RecordBatch::try_new(login_throttle_schema(), columns)?)
}

fn data_cache_schema() -> SchemaRef {
    let field = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(
        ["budget_bytes", "bytes", "hits", "misses", "evictions", "bloom_filter_bytes", "bloom_pruned_files"]
            .map(field)
            .to_vec(),
    ))
}

/// `system.data_cache`: one row, the data file cache's budget and counters, and the bloom
/// filters kept for file pruning (`rxgate_catalog::bloom`).
fn data_cache_batch(storage: &StoreRegistry) -> DfResult<RecordBatch> {
    let cache = storage.data_cache();
    let s = cache.stats();
    let blooms = cache.blooms();
    let columns = [cache.budget(), s.bytes, s.hits, s.misses, s.evictions, blooms.bytes(), blooms.files_pruned()]
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

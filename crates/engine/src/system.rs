//! The `system` schema: `system.audit_log`, the audit trail read back from its JSON-lines
//! files; `system.storage_requests`, the object-store request counters; `system.data_cache`,
//! the data file cache's counters; `system.login_throttle`, the failed-login counters of
//! the frontends (users and client addresses being delayed or locked out);
//! `system.maintenance_history`, every maintenance action on the catalog's tables (expiry,
//! orphan removal, compaction), from the catalog database; `system.backups`, every backup
//! create, verify, restore and prune, and `system.backup_status`, the last successful
//! backup per target and its age; `system.memory`, the query pool's limit and reservation;
//! `system.metrics`, every series of the metrics registry (what `/metrics` shows), and
//! `system.metrics_history`, its samples of the last hour.
//! Like every lakehouse schema it is governed by the policy: only roles granted it (the demo
//! policy: `admin`) can list or read it. The exceptions are the monitoring tables
//! `system.queries` (running statements), `system.sessions` and `system.query_history` (the
//! last statements, from the audit trail): every user reads them, and sees only the rows of
//! its own statements and sessions unless it has an admin role ([`self_filtered`]).

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

use datafusion::execution::memory_pool::MemoryPool;

use crate::activity::{Activity, QueryRow, SessionRow, Viewer};
use crate::audit::{audit_schema, AuditLog, AUDIT_FILE};
use crate::secure::Guard;

/// The `system` schema of a session.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    audit: Arc<AuditLog>,
    storage: Arc<StoreRegistry>,
    lake: rxgate_catalog::Lakehouse,
    monitoring: Arc<Monitoring>,
}

/// What the monitoring tables read: the activity registry, who the session is (its guard
/// says whether it is an admin now), how many statements the history shows, the query pool.
pub(crate) struct Monitoring {
    pub(crate) activity: Arc<Activity>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) history_size: usize,
    pub(crate) pool: Arc<dyn MemoryPool>,
}

impl std::fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitoring").field("history_size", &self.history_size).finish()
    }
}

/// The `system` tables every user may read: they show only the reader's own rows (all to
/// an admin role), filtered where they are built, so the policy's grants do not apply.
pub(crate) fn self_filtered(schema: &str, table: &str) -> bool {
    schema == "system" && SELF_FILTERED.contains(&table)
}

const SELF_FILTERED: [&str; 3] = ["queries", "sessions", "query_history"];

impl SystemSchema {
    pub(crate) fn new(audit: Arc<AuditLog>, lake: rxgate_catalog::Lakehouse, monitoring: Monitoring) -> Self {
        Self { audit, storage: lake.storage().clone(), lake, monitoring: Arc::new(monitoring) }
    }

    /// The audit files, oldest first.
    fn audit_files(&self) -> std::io::Result<Vec<std::path::PathBuf>> {
        audit_files(&self.audit)
    }
}

/// The audit files, oldest first.
fn audit_files(audit: &AuditLog) -> std::io::Result<Vec<std::path::PathBuf>> {
    let Some(dir) = audit.dir() else { return Ok(vec![]) };
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
    Ok(files)
}

impl SystemSchema {
    /// Every audit record on disk, oldest file first.
    fn audit_batches(&self) -> DfResult<Vec<RecordBatch>> {
        let mut batches = vec![];
        for path in self.audit_files()? {
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
            "queries" => {
                let m = self.monitoring.clone();
                Arc::new(Counters {
                    schema: queries_schema(),
                    batch: Box::new(move || queries_batch(&m.activity.queries(&m.guard.viewer()))),
                })
            }
            "sessions" => {
                let m = self.monitoring.clone();
                Arc::new(Counters {
                    schema: sessions_schema(),
                    batch: Box::new(move || sessions_batch(&m.activity.sessions(&m.guard.viewer()))),
                })
            }
            "query_history" => {
                let (audit, m) = (self.audit.clone(), self.monitoring.clone());
                Arc::new(Counters {
                    schema: query_history_schema(),
                    batch: Box::new(move || query_history_batch(&audit, &m)),
                })
            }
            "memory" => {
                let m = self.monitoring.clone();
                Arc::new(Counters { schema: memory_schema(), batch: Box::new(move || memory_batch(m.pool.as_ref())) })
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
const TABLES: [&str; 13] = [
    "queries",
    "sessions",
    "query_history",
    "memory",
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

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None), nullable)
}

fn epoch_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("pid", DataType::Int32, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("client_addr", DataType::Utf8, true),
        ts_field("started", false),
        Field::new("elapsed_ms", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows_sent", DataType::Int64, false),
        Field::new("memory_bytes", DataType::Int64, false),
        Field::new("query", DataType::Utf8, false),
    ]))
}

/// `system.queries`: the running statements the reader may see. `memory_bytes` is what the
/// statement's session holds in the query pool (a session runs one statement at a time over
/// pgwire; a Flight SQL session's concurrent results share it).
fn queries_batch(rows: &[QueryRow]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Int32Array, Int64Array, TimestampMillisecondArray};
    let text =
        |f: &dyn Fn(&QueryRow) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(f))) };
    let int = |f: &dyn Fn(&QueryRow) -> i64| -> ArrayRef { Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) };
    let columns: Vec<ArrayRef> = vec![
        text(&|r| &r.query_id),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.pid))),
        text(&|r| &r.user),
        text(&|r| r.protocol),
        Arc::new(rows.iter().map(|r| r.client_addr.map(|a| a.to_string())).collect::<StringArray>()),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| epoch_ms(r.started)))),
        int(&|r| r.elapsed.as_millis() as i64),
        text(&|r| r.state),
        int(&|r| r.rows as i64),
        int(&|r| r.memory as i64),
        text(&|r| &r.text),
    ];
    Ok(RecordBatch::try_new(queries_schema(), columns)?)
}

fn sessions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("session_id", DataType::Int64, false),
        Field::new("pid", DataType::Int32, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("client_addr", DataType::Utf8, true),
        Field::new("application_name", DataType::Utf8, false),
        ts_field("started", false),
        Field::new("state", DataType::Utf8, false),
        Field::new("running_queries", DataType::Int64, false),
        Field::new("memory_bytes", DataType::Int64, false),
        Field::new("last_query", DataType::Utf8, true),
    ]))
}

/// `system.sessions`: the open sessions the reader may see.
fn sessions_batch(rows: &[SessionRow]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Int32Array, Int64Array, TimestampMillisecondArray};
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.session_id as i64))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.pid))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.user.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.protocol))),
        Arc::new(rows.iter().map(|r| r.client_addr.map(|a| a.to_string())).collect::<StringArray>()),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.application_name.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| epoch_ms(r.started)))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| if r.running > 0 { "active" } else { "idle" }))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.running as i64))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.memory as i64))),
        Arc::new(rows.iter().map(|r| r.last_query.clone()).collect::<StringArray>()),
    ];
    Ok(RecordBatch::try_new(sessions_schema(), columns)?)
}

fn memory_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pool_limit_bytes", DataType::Int64, true),
        Field::new("pool_reserved_bytes", DataType::Int64, false),
        Field::new("resident_bytes", DataType::Int64, true),
    ]))
}

/// `system.memory`: one row, the query pool's limit and what all statements reserve from
/// it now, and the process's resident memory.
fn memory_batch(pool: &dyn MemoryPool) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::Int64Array;
    use datafusion::execution::memory_pool::MemoryLimit;
    let limit = match pool.memory_limit() {
        MemoryLimit::Finite(n) => Some(n as i64),
        _ => None,
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![limit])),
        Arc::new(Int64Array::from(vec![pool.reserved() as i64])),
        Arc::new(Int64Array::from(vec![crate::memwatch::resident_bytes().map(|b| b as i64)])),
    ];
    Ok(RecordBatch::try_new(memory_schema(), columns)?)
}

fn query_history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, true),
        Field::new("user", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("client_addr", DataType::Utf8, true),
        ts_field("started", true),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes_scanned", DataType::Int64, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error_code", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, false),
    ]))
}

/// `system.query_history`: the last `[monitoring] query_history_size` statements of the
/// audit trail the reader may see (its own; an admin's all), oldest first. `error_code`
/// is the SQLSTATE. For a non-admin, `bytes_scanned` of a statement read through a mask
/// or a row filter is NULL: how much was read depends on rows the policy hides.
fn query_history_batch(audit: &AuditLog, m: &Monitoring) -> DfResult<RecordBatch> {
    let viewer: Viewer = m.guard.viewer();
    let keep = m.history_size;
    let mut last: std::collections::VecDeque<serde_json::Value> = std::collections::VecDeque::new();
    for path in audit_files(audit)? {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v["kind"] != "statement" || !(viewer.admin || v["user"].as_str() == Some(viewer.user.as_str())) {
                continue;
            }
            last.push_back(v);
            if last.len() > keep {
                last.pop_front();
            }
        }
    }
    let str_of = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_string);
    let hidden = |v: &serde_json::Value| {
        let nonempty = |k: &str| v[k].as_array().is_some_and(|a| !a.is_empty());
        !viewer.admin && (nonempty("masks") || nonempty("row_filters"))
    };
    use datafusion::arrow::array::{Float64Array, Int64Array, TimestampMillisecondArray};
    let columns: Vec<ArrayRef> = vec![
        Arc::new(last.iter().map(|v| str_of(v, "query_id")).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| Some(str_of(v, "user").unwrap_or_default())).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| Some(str_of(v, "protocol").unwrap_or_default())).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| str_of(v, "client_addr")).collect::<StringArray>()),
        Arc::new(
            last.iter()
                .map(|v| {
                    v["time"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp_millis())
                })
                .collect::<TimestampMillisecondArray>(),
        ),
        Arc::new(last.iter().map(|v| Some(v["duration_ms"].as_f64().unwrap_or(0.0))).collect::<Float64Array>()),
        Arc::new(last.iter().map(|v| Some(v["rows"].as_i64().unwrap_or(0))).collect::<Int64Array>()),
        Arc::new(
            last.iter().map(|v| if hidden(v) { None } else { v["bytes_scanned"].as_i64() }).collect::<Int64Array>(),
        ),
        Arc::new(last.iter().map(|v| Some(str_of(v, "outcome").unwrap_or_default())).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| str_of(v, "sqlstate")).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| str_of(v, "error")).collect::<StringArray>()),
        Arc::new(last.iter().map(|v| Some(str_of(v, "statement").unwrap_or_default())).collect::<StringArray>()),
    ];
    Ok(RecordBatch::try_new(query_history_schema(), columns)?)
}

//! The audit trail: one JSON line per statement and per login attempt, appended to
//! `AUDIT_DIR/audit.jsonl` and rotated by size (`audit.1.jsonl` is the newest rotated file).
//! Admins query it as `system.audit_log` (the `system` schema is governed by the policy like
//! any other).
//! The directory is created 0700 and the files 0600, whatever the process umask.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use rxgate_common::{Channel, Error, Identity};
use serde::Serialize;

/// One audit record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339 UTC time the statement started or the login was decided.
    pub time: String,
    /// `statement` or `login`.
    pub kind: &'static str,
    /// User name (as given, for a failed login).
    pub user: String,
    /// Effective roles.
    pub roles: Vec<String>,
    /// Client address, when there is a network peer.
    pub client_addr: Option<String>,
    /// `pgwire`, `flightsql` or `cli`.
    pub protocol: &'static str,
    /// The statement text (empty for logins).
    pub statement: String,
    /// Tables the statement read (`schema.table`).
    pub tables: Vec<String>,
    /// Columns it named (`table.column`, as qualified in the plan).
    pub columns: Vec<String>,
    /// Masks applied (`schema.table.column: mask`).
    pub masks: Vec<String>,
    /// Row filters applied (`schema.table: predicate`).
    pub row_filters: Vec<String>,
    /// Rows returned to the client.
    pub rows: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: f64,
    /// `ok`, `error` or `incomplete` (the client stopped reading).
    pub outcome: &'static str,
    /// Error status code name (`PermissionDenied`, `Cancelled`, …) when not ok.
    pub error_code: Option<String>,
    /// Error message when not ok.
    pub error: Option<String>,
    /// The table a write changed (`schema.table`); `rows` is then the rows it affected.
    pub written_table: Option<String>,
    /// The snapshot a write committed.
    pub snapshot_id: Option<i64>,
}

/// Arrow schema of `system.audit_log` (the JSON lines, read back).
pub fn audit_schema() -> SchemaRef {
    let list = |n: &str| Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true);
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("user", DataType::Utf8, true),
        list("roles"),
        Field::new("client_addr", DataType::Utf8, true),
        Field::new("protocol", DataType::Utf8, true),
        Field::new("statement", DataType::Utf8, true),
        list("tables"),
        list("columns"),
        list("masks"),
        list("row_filters"),
        Field::new("rows", DataType::Int64, true),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("outcome", DataType::Utf8, true),
        Field::new("error_code", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("written_table", DataType::Utf8, true),
        Field::new("snapshot_id", DataType::Int64, true),
    ]))
}

/// The append-only, size-rotated audit file.
pub struct AuditLog {
    dir: Option<PathBuf>,
    max_bytes: u64,
    keep: usize,
    file: Mutex<Option<(File, u64)>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({:?})", self.dir)
    }
}

/// The current file's name inside the audit directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

impl AuditLog {
    /// Appends to `dir/audit.jsonl`, rotating it past `max_bytes` and keeping `keep` rotated
    /// files. `None` keeps no trail (tests of other things).
    pub fn new(dir: Option<PathBuf>, max_bytes: u64, keep: usize) -> rxgate_common::Result<Self> {
        if let Some(d) = &dir {
            // Private whatever the umask: the trail names users, addresses and statements.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| Error::invalid(format!("cannot create audit directory {}: {e}", d.display())))?;
        }
        Ok(Self { dir, max_bytes: max_bytes.max(4096), keep: keep.max(1), file: Mutex::new(None) })
    }

    /// The audit directory, if there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Appends one record. A failure to write is logged, never returned: the query goes on.
    /// Every statement record is also counted in the metrics registry here: this is the one
    /// point every statement ends (`rxgate_statements_total`, the latency histogram, rows sent).
    pub fn append(&self, record: &AuditRecord) {
        if record.kind == "statement" {
            record_metrics(record);
        }
        let Some(dir) = &self.dir else { return };
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit record cannot be encoded");
                return;
            }
        };
        line.push(b'\n');
        let mut slot = self.file.lock().expect("audit lock");
        if let Err(e) = self.write(dir, &mut slot, &line) {
            *slot = None;
            tracing::error!(error = %e, dir = %dir.display(), "audit record could not be written");
        }
    }

    fn write(&self, dir: &Path, slot: &mut Option<(File, u64)>, line: &[u8]) -> std::io::Result<()> {
        if slot.as_ref().is_some_and(|(_, size)| size + line.len() as u64 > self.max_bytes) {
            *slot = None;
            self.rotate(dir)?;
        }
        if slot.is_none() {
            let f = OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(AUDIT_FILE))?;
            // A file created before (or by another umask) is made private too.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            let size = f.metadata()?.len();
            *slot = Some((f, size));
        }
        let (f, size) = slot.as_mut().expect("audit file open");
        f.write_all(line)?;
        *size += line.len() as u64;
        Ok(())
    }

    /// audit.jsonl → audit.1.jsonl → audit.2.jsonl …; the oldest beyond `keep` goes.
    fn rotate(&self, dir: &Path) -> std::io::Result<()> {
        let rotated = |n: usize| dir.join(format!("audit.{n}.jsonl"));
        let _ = std::fs::remove_file(rotated(self.keep));
        for n in (1..self.keep).rev() {
            if rotated(n).exists() {
                std::fs::rename(rotated(n), rotated(n + 1))?;
            }
        }
        std::fs::rename(dir.join(AUDIT_FILE), rotated(1))
    }

    /// Records a login attempt; its statement describes the event (`login (pgwire): success`,
    /// `login (flightsql): failed: password authentication failed`).
    pub fn login(
        &self,
        user: &str,
        roles: &[String],
        channel: Channel,
        addr: Option<std::net::SocketAddr>,
        error: Option<&Error>,
    ) {
        if error.is_some() {
            rxgate_common::metrics::record_login_failure(channel.as_str());
        }
        let mut r = AuditRecord::begin("login", user, roles, channel, addr, login_statement(channel, error));
        r.finish(0, Instant::now(), error);
        self.append(&r);
    }
}

/// What a login record's statement says: the protocol and the outcome.
fn login_statement(channel: Channel, error: Option<&Error>) -> String {
    let outcome = match error {
        None => "success".to_string(),
        Some(e) if e.code == rxgate_common::StatusCode::ResourcesExhausted => format!("refused: {}", e.message),
        Some(e) => format!("failed: {}", e.message),
    };
    format!("login ({}): {outcome}", channel.as_str())
}

/// Counts a finished statement: protocol, kind (from its text), outcome (`ok`; `error`;
/// `cancelled` for a cancel, a timeout or a result the client stopped reading), duration, and
/// rows sent (not rows a write affected).
fn record_metrics(record: &AuditRecord) {
    let outcome = match (record.outcome, record.error_code.as_deref()) {
        ("ok", _) => "ok",
        ("incomplete", _) | (_, Some("Cancelled" | "QueryCanceled" | "Timeout" | "StatementTimeout")) => "cancelled",
        _ => "error",
    };
    let rows_sent = if record.written_table.is_some() { 0 } else { record.rows };
    let duration = std::time::Duration::from_secs_f64(record.duration_ms.max(0.0) / 1000.0);
    rxgate_common::metrics::record_statement(record.protocol, &record.statement, outcome, duration, rows_sent);
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl AuditRecord {
    /// A record whose time is now; `finish` fills in the outcome.
    pub fn begin(
        kind: &'static str,
        user: &str,
        roles: &[String],
        channel: Channel,
        addr: Option<std::net::SocketAddr>,
        statement: String,
    ) -> Self {
        Self {
            time: now_rfc3339(),
            kind,
            user: user.to_string(),
            roles: roles.to_vec(),
            client_addr: addr.map(|a| a.to_string()),
            protocol: channel.as_str(),
            // A LOCATION or URI with a password in the statement is recorded redacted.
            statement: match rxgate_common::redact_secrets(&statement) {
                std::borrow::Cow::Borrowed(_) => statement,
                std::borrow::Cow::Owned(redacted) => redacted,
            },
            tables: vec![],
            columns: vec![],
            masks: vec![],
            row_filters: vec![],
            rows: 0,
            duration_ms: 0.0,
            outcome: "ok",
            error_code: None,
            error: None,
            written_table: None,
            snapshot_id: None,
        }
    }

    /// A statement record for an identity.
    pub(crate) fn statement(identity: &Identity, roles: &[String], sql: &str) -> Self {
        Self::begin("statement", &identity.user, roles, identity.channel, identity.client_addr, sql.to_string())
    }

    /// Sets rows, duration and outcome.
    pub fn finish(&mut self, rows: u64, started: Instant, error: Option<&Error>) {
        self.rows = rows;
        self.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(e) = error {
            self.outcome = "error";
            self.error_code = Some(format!("{:?}", e.code));
            self.error = Some(e.message.clone());
        }
    }
}

/// One statement's audit record while its result is being read: every partition stream of
/// the result holds it, and the record is written when the last holder lets go (the result
/// was read to the end, failed, or was abandoned).
pub(crate) struct AuditHandle {
    record: Mutex<AuditRecord>,
    log: Arc<AuditLog>,
    started: Instant,
    rows: AtomicU64,
    parts: usize,
    ended: AtomicUsize,
    error: Mutex<Option<Error>>,
}

impl AuditHandle {
    pub(crate) fn new(record: AuditRecord, log: Arc<AuditLog>, started: Instant, parts: usize) -> Arc<Self> {
        Arc::new(Self {
            record: Mutex::new(record),
            log,
            started,
            rows: AtomicU64::new(0),
            parts: parts.max(1),
            ended: AtomicUsize::new(0),
            error: Mutex::new(None),
        })
    }

    /// Wraps one partition's stream.
    pub(crate) fn stream(self: &Arc<Self>, inner: SendableRecordBatchStream) -> SendableRecordBatchStream {
        Box::pin(AuditedStream { schema: inner.schema(), inner, handle: self.clone(), done: false })
    }
}

impl Drop for AuditHandle {
    fn drop(&mut self) {
        let mut record = self.record.lock().expect("audit record lock").clone();
        let error = self.error.lock().expect("audit error lock").take();
        record.finish(self.rows.load(Ordering::Relaxed), self.started, error.as_ref());
        if error.is_none() && self.ended.load(Ordering::Relaxed) < self.parts {
            record.outcome = "incomplete";
        }
        self.log.append(&record);
    }
}

struct AuditedStream {
    inner: SendableRecordBatchStream,
    schema: SchemaRef,
    handle: Arc<AuditHandle>,
    done: bool,
}

impl Stream for AuditedStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                self.handle.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
            Poll::Ready(Some(Err(e))) => {
                let mut slot = self.handle.error.lock().expect("audit error lock");
                slot.get_or_insert_with(|| Error::from_datafusion(e));
            }
            Poll::Ready(None) if !self.done => {
                self.done = true;
                self.handle.ended.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(Some(dir.path().to_path_buf()), 4096, 2).unwrap();
        let id = Identity::cli("op");
        for i in 0..60 {
            let mut r = AuditRecord::statement(&id, &["admin".into()], &format!("SELECT {i} -- {}", "x".repeat(100)));
            r.finish(1, Instant::now(), None);
            log.append(&r);
        }
        let current = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap();
        let last: serde_json::Value = serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert!(last["statement"].as_str().unwrap().starts_with("SELECT 59"));
        assert_eq!(last["protocol"], "cli");
        assert!(dir.path().join("audit.1.jsonl").exists() && dir.path().join("audit.2.jsonl").exists());
        assert!(!dir.path().join("audit.3.jsonl").exists());
        let sizes: u64 =
            ["audit.jsonl", "audit.1.jsonl"].iter().map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len()).sum();
        assert!(sizes <= 2 * 4096);
    }

    #[test]
    fn login_records_describe_the_event() {
        assert_eq!(login_statement(Channel::PgWire, None), "login (pgwire): success");
        let bad = Error::new(rxgate_common::StatusCode::AuthFailed, "password authentication failed");
        assert_eq!(
            login_statement(Channel::FlightSql, Some(&bad)),
            "login (flightsql): failed: password authentication failed"
        );
    }
}

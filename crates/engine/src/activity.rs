//! The activity registry: every open session and every running statement of this process,
//! for `system.sessions`, `system.queries`, `pg_stat_activity`, and for killing them
//! (`CALL system.kill_query`, `pg_cancel_backend`, `pg_terminate_backend`).
//!
//! One per [`crate::Engine`]. A session registers when it opens ([`Activity::open`]) and
//! leaves when it is dropped ([`SessionEntry`]); a statement registers when its execution
//! starts and leaves when its result is read, failed or abandoned ([`Running`], held with the
//! statement's audit handle). Killing fires the statement's own [`CancelToken`] — the token a
//! pgwire CancelRequest, a Flight SQL CancelFlightInfo and the memory guard fire too — so a
//! killed statement ends with 57014 and drops its plan (and with it its pool reservations).
//! Terminating a session also fires the session's terminate signal: pgwire closes the
//! connection (FATAL 57P01), Flight SQL revokes the session's bearer token.
//!
//! **Policy.** Users see and kill their own sessions and statements; admin roles see and kill
//! all (42501 otherwise). The registry is per process: a gateway sees only its own sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::ExecutionPlan;
use rxgate_common::{Error, Identity, Result, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditRecord;
use crate::deadline::CancelToken;
use crate::settings::SessionSettings;

/// What the registry knows of one session.
struct Session {
    pid: Arc<AtomicI32>,
    user: String,
    protocol: &'static str,
    client_addr: Option<SocketAddr>,
    started: SystemTime,
    settings: Arc<SessionSettings>,
    terminate: CancellationToken,
    /// The pool memory the session holds (its `memwatch::SessionPool` share).
    memory: Arc<AtomicUsize>,
    /// The last statement started: its id, text and start time; and when the session last
    /// changed state (a statement started or ended).
    last: Mutex<Last>,
}

#[derive(Default, Clone)]
struct Last {
    query: Option<(u64, String, SystemTime)>,
    state_change: Option<SystemTime>,
}

/// What the registry knows of one running statement.
struct Statement {
    seq: u64,
    session: u64,
    user: String,
    text: String,
    started: SystemTime,
    since: Instant,
    token: CancelToken,
    rows: Arc<AtomicU64>,
    memory: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<u64, Arc<Session>>,
    statements: HashMap<u64, Statement>,
}

/// The process's sessions and running statements (see the module documentation).
pub(crate) struct Activity {
    state: Mutex<State>,
    next_session: AtomicU64,
    next_query: AtomicU64,
    /// The query id prefix: the registry's creation time (`YYYYMMDD_HHMMSS`), so ids of
    /// different server runs differ, as Trino's do.
    prefix: String,
    /// Statements running longer than this are logged with their plan's metrics.
    slow_query: Option<Duration>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity").field("slow_query", &self.slow_query).finish()
    }
}

/// One row of `system.sessions` / `pg_stat_activity`.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub(crate) session_id: u64,
    pub(crate) pid: i32,
    pub(crate) user: String,
    pub(crate) protocol: &'static str,
    pub(crate) client_addr: Option<SocketAddr>,
    pub(crate) application_name: String,
    pub(crate) started: SystemTime,
    /// Statements running now.
    pub(crate) running: usize,
    pub(crate) last_query_id: Option<u64>,
    pub(crate) last_query: Option<String>,
    pub(crate) last_query_start: Option<SystemTime>,
    pub(crate) state_change: Option<SystemTime>,
    /// The pool memory the session holds now.
    pub(crate) memory: usize,
}

/// One row of `system.queries`.
#[derive(Debug, Clone)]
pub(crate) struct QueryRow {
    pub(crate) query_id: String,
    pub(crate) pid: i32,
    pub(crate) user: String,
    pub(crate) protocol: &'static str,
    pub(crate) client_addr: Option<SocketAddr>,
    pub(crate) started: SystemTime,
    pub(crate) elapsed: Duration,
    /// `RUNNING`, or `CANCELLING` once killed and until its result is dropped.
    pub(crate) state: &'static str,
    pub(crate) rows: u64,
    pub(crate) memory: usize,
    pub(crate) text: String,
}

/// Who asks: a user, and whether an admin role (sees and kills everything).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) user: String,
    pub(crate) admin: bool,
}

impl Viewer {
    fn sees(&self, owner: &str) -> bool {
        self.admin || self.user == owner
    }
}

impl Activity {
    /// An empty registry; `slow_query` turns the slow-statement log on.
    pub(crate) fn new(slow_query: Option<Duration>) -> Self {
        Self {
            state: Mutex::default(),
            next_session: AtomicU64::new(1),
            next_query: AtomicU64::new(1),
            prefix: chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string(),
            slow_query,
        }
    }

    /// The text form of query number `seq` (`20261207_040812_00042`).
    fn query_id(&self, seq: u64) -> String {
        format!("{}_{seq:05}", self.prefix)
    }

    fn seq_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.prefix)?.strip_prefix('_')?.parse().ok()
    }

    /// Registers a session; it stays listed while the returned entry lives. Sessions get a
    /// pid of their own (pgwire replaces it with the connection's BackendKeyData pid).
    pub(crate) fn open(
        self: &Arc<Self>,
        identity: &Identity,
        settings: Arc<SessionSettings>,
        memory: Arc<AtomicUsize>,
    ) -> SessionEntry {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().expect("activity lock");
        // A pid no live session has; PostgreSQL's pids are positive.
        let mut pid = rand_pid();
        while state.sessions.values().any(|s| s.pid.load(Ordering::Relaxed) == pid) {
            pid = rand_pid();
        }
        let session = Arc::new(Session {
            pid: Arc::new(AtomicI32::new(pid)),
            user: identity.user.clone(),
            protocol: identity.channel.as_str(),
            client_addr: identity.client_addr,
            started: SystemTime::now(),
            settings,
            terminate: CancellationToken::new(),
            memory,
            last: Mutex::default(),
        });
        state.sessions.insert(id, session.clone());
        SessionEntry { activity: self.clone(), id, pid: session.pid.clone(), terminate: session.terminate.clone() }
    }

    /// Registers a statement of session `session` that runs under `token`; it stays listed
    /// while the returned handle lives.
    pub(crate) fn start(self: &Arc<Self>, session: u64, user: &str, text: &str, token: &CancelToken) -> Running {
        let seq = self.next_query.fetch_add(1, Ordering::Relaxed);
        // As the audit trail records it: passwords in URIs and LOCATIONs redacted.
        let text = rxgate_common::redact_secrets(text).into_owned();
        let now = SystemTime::now();
        let rows = Arc::new(AtomicU64::new(0));
        let mut state = self.state.lock().expect("activity lock");
        let mut memory = Arc::default();
        if let Some(s) = state.sessions.get(&session) {
            let mut last = s.last.lock().expect("activity lock");
            last.query = Some((seq, text.clone(), now));
            last.state_change = Some(now);
            memory = s.memory.clone();
        }
        state.statements.insert(
            seq,
            Statement {
                seq,
                session,
                user: user.to_string(),
                text: text.clone(),
                started: now,
                since: Instant::now(),
                token: token.clone(),
                rows: rows.clone(),
                memory,
            },
        );
        Running { activity: self.clone(), seq, session, text, since: Instant::now(), rows, plan: Mutex::new(None) }
    }

    fn end(&self, seq: u64, session: u64) {
        let mut state = self.state.lock().expect("activity lock");
        state.statements.remove(&seq);
        if let Some(s) = state.sessions.get(&session) {
            s.last.lock().expect("activity lock").state_change = Some(SystemTime::now());
        }
    }

    /// Sessions open now per protocol, every protocol listed (zero or not).
    pub(crate) fn open_by_protocol(&self) -> Vec<(&'static str, usize)> {
        let state = self.state.lock().expect("activity lock");
        let mut counts: Vec<(&'static str, usize)> =
            rxgate_common::Channel::ALL.iter().map(|c| (c.as_str(), 0)).collect();
        for s in state.sessions.values() {
            match counts.iter_mut().find(|(p, _)| *p == s.protocol) {
                Some((_, n)) => *n += 1,
                None => counts.push((s.protocol, 1)),
            }
        }
        counts
    }

    /// The sessions `viewer` may see, ordered by session id.
    pub(crate) fn sessions(&self, viewer: &Viewer) -> Vec<SessionRow> {
        let state = self.state.lock().expect("activity lock");
        let mut rows: Vec<SessionRow> = state
            .sessions
            .iter()
            .filter(|(_, s)| viewer.sees(&s.user))
            .map(|(&id, s)| {
                let running = state.statements.values().filter(|q| q.session == id).count();
                let last = s.last.lock().expect("activity lock").clone();
                SessionRow {
                    session_id: id,
                    pid: s.pid.load(Ordering::Relaxed),
                    user: s.user.clone(),
                    protocol: s.protocol,
                    client_addr: s.client_addr,
                    application_name: s.settings.get("application_name").unwrap_or_default(),
                    started: s.started,
                    running,
                    last_query_id: last.query.as_ref().map(|q| q.0),
                    last_query: last.query.as_ref().map(|q| q.1.clone()),
                    last_query_start: last.query.as_ref().map(|q| q.2),
                    state_change: last.state_change,
                    memory: s.memory.load(Ordering::Relaxed),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.session_id);
        rows
    }

    /// The running statements `viewer` may see, oldest first.
    pub(crate) fn queries(&self, viewer: &Viewer) -> Vec<QueryRow> {
        let state = self.state.lock().expect("activity lock");
        let mut rows: Vec<(u64, QueryRow)> = state
            .statements
            .values()
            .filter(|q| viewer.sees(&q.user))
            .map(|q| {
                let session = state.sessions.get(&q.session);
                let row = QueryRow {
                    query_id: self.query_id(q.seq),
                    pid: session.map(|s| s.pid.load(Ordering::Relaxed)).unwrap_or(0),
                    user: q.user.clone(),
                    protocol: session.map(|s| s.protocol).unwrap_or(""),
                    client_addr: session.and_then(|s| s.client_addr),
                    started: q.started,
                    elapsed: q.since.elapsed(),
                    state: if q.token.is_cancelled() { "CANCELLING" } else { "RUNNING" },
                    rows: q.rows.load(Ordering::Relaxed),
                    memory: q.memory.load(Ordering::Relaxed),
                    text: q.text.clone(),
                };
                (q.seq, row)
            })
            .collect();
        rows.sort_by_key(|(seq, _)| *seq);
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// `CALL system.kill_query('<id>')`: cancels one running statement (57014). Unknown
    /// (or finished) ids are 22023; another user's statement, for a non-admin, 42501.
    pub(crate) fn kill_query(&self, id: &str, viewer: &Viewer) -> Result<()> {
        let state = self.state.lock().expect("activity lock");
        let statement = self.seq_of(id).and_then(|seq| state.statements.get(&seq));
        let Some(statement) = statement else {
            return Err(Error::new(StatusCode::InvalidArgument, format!("no running query with id '{id}'")));
        };
        if !viewer.sees(&statement.user) {
            return Err(not_yours("kill query", id));
        }
        tracing::info!(query_id = %id, by = %viewer.user, owner = %statement.user, "query killed");
        statement.token.cancel_with(StatusCode::Cancelled, format!("canceling statement: query {id} was killed"));
        Ok(())
    }

    /// `pg_cancel_backend(pid)` (`terminate`: `pg_terminate_backend`): cancels the running
    /// statements of the session with that pid, and for `terminate` ends the session. False
    /// when no session has that pid; 42501 for another user's session, for a non-admin.
    pub(crate) fn signal_backend(&self, pid: i32, terminate: bool, viewer: &Viewer) -> Result<bool> {
        let state = self.state.lock().expect("activity lock");
        let Some((&id, session)) = state.sessions.iter().find(|(_, s)| s.pid.load(Ordering::Relaxed) == pid) else {
            return Ok(false);
        };
        if !viewer.sees(&session.user) {
            let what = if terminate { "terminate backend" } else { "cancel query of backend" };
            return Err(not_yours(what, &pid.to_string()));
        }
        let (code, message) = if terminate {
            (StatusCode::Terminated, "terminating connection due to administrator command".to_string())
        } else {
            (StatusCode::Cancelled, "canceling statement due to user request".to_string())
        };
        for q in state.statements.values().filter(|q| q.session == id) {
            q.token.cancel_with(code, message.clone());
        }
        if terminate {
            session.terminate.cancel();
        }
        tracing::info!(pid, terminate, by = %viewer.user, owner = %session.user, "backend signalled");
        Ok(true)
    }
}

fn not_yours(what: &str, id: &str) -> Error {
    Error::new(
        StatusCode::PermissionDenied,
        format!("permission denied to {what} {id}: it belongs to another user (admin roles may kill any)"),
    )
}

fn rand_pid() -> i32 {
    // 10_000 and above, clear of the small pids tools treat specially.
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    10_000 + (random % (i32::MAX as u64 - 10_000)) as i32
}

/// A session's place in the registry: listed while this lives (the session holds it).
pub(crate) struct SessionEntry {
    activity: Arc<Activity>,
    pub(crate) id: u64,
    pid: Arc<AtomicI32>,
    terminate: CancellationToken,
}

impl SessionEntry {
    /// The pid `pg_stat_activity` and `pg_cancel_backend` know the session by.
    pub(crate) fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The pid clients got for this session (pgwire's BackendKeyData).
    pub(crate) fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The signal `pg_terminate_backend` fires.
    pub(crate) fn terminate_token(&self) -> &CancellationToken {
        &self.terminate
    }

    /// The registry the session is listed in.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        let mut state = self.activity.state.lock().expect("activity lock");
        state.sessions.remove(&self.id);
    }
}

/// A running statement's place in the registry: listed while this lives (held with the
/// statement's result, dropped when the result is read, failed or abandoned).
pub(crate) struct Running {
    activity: Arc<Activity>,
    seq: u64,
    session: u64,
    text: String,
    since: Instant,
    rows: Arc<AtomicU64>,
    plan: Mutex<Option<Arc<dyn ExecutionPlan>>>,
}

impl Running {
    /// The counter of rows sent so far (the audit handle counts them).
    pub(crate) fn rows(&self) -> Arc<AtomicU64> {
        self.rows.clone()
    }

    /// The statement's physical plan, for its metrics (bytes scanned, the slow-query log).
    pub(crate) fn set_plan(&self, plan: Arc<dyn ExecutionPlan>) {
        *self.plan.lock().expect("plan lock") = Some(plan);
    }

    /// Fills the statement's audit record with its id and the bytes its scans read, and
    /// logs it when it ran longer than `[monitoring] slow_query_ms`.
    pub(crate) fn complete(&self, record: &mut AuditRecord) {
        record.query_id = Some(self.activity.query_id(self.seq));
        let plan = self.plan.lock().expect("plan lock").clone();
        if let Some(plan) = &plan {
            record.bytes_scanned = Some(bytes_scanned(plan.as_ref()));
        }
        let elapsed = self.since.elapsed();
        if self.activity.slow_query.is_some_and(|limit| elapsed >= limit) {
            let metrics = match &plan {
                Some(p) => DisplayableExecutionPlan::with_metrics(p.as_ref()).indent(true).to_string(),
                None => "(no physical plan)".to_string(),
            };
            tracing::warn!(
                query_id = %self.activity.query_id(self.seq),
                user = %record.user,
                duration_ms = elapsed.as_millis() as u64,
                rows = self.rows.load(Ordering::Relaxed),
                outcome = %record.outcome,
                statement = %self.text,
                // Last, so the one-line fields come first and the plan on the lines below.
                plan = %format!("\n{}", metrics.trim_end()),
                "slow query"
            );
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.activity.end(self.seq, self.session);
    }
}

/// What `pg_stat_activity` shows a session: the sessions its viewer may see (own ones; an
/// admin's all), read when a query scans the table.
pub(crate) fn stat_activity_source(
    activity: &Arc<Activity>,
    guard: &Arc<crate::secure::Guard>,
) -> rxgate_pgcompat::ActivitySource {
    let (activity, guard) = (Arc::downgrade(activity), Arc::downgrade(guard));
    Arc::new(move || {
        let (Some(activity), Some(guard)) = (activity.upgrade(), guard.upgrade()) else { return vec![] };
        let ms = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        activity
            .sessions(&guard.viewer())
            .into_iter()
            .map(|s| rxgate_pgcompat::BackendActivity {
                pid: s.pid,
                user: s.user,
                application_name: s.application_name,
                client_addr: s.client_addr,
                backend_start_us: ms(s.started),
                query_start_us: s.last_query_start.map(ms),
                state_change_us: s.state_change.map(ms),
                active: s.running > 0,
                query_id: s.last_query_id.map(|q| q as i64),
                query: s.last_query.unwrap_or_default(),
            })
            .collect()
    })
}

/// Registers the session's `pg_backend_pid()`, `pg_cancel_backend(pid)` and
/// `pg_terminate_backend(pid)`: they act on the activity registry as the session's user
/// (another user's backend, for a non-admin, is 42501; an unknown pid answers false).
pub(crate) fn register_functions(
    ctx: &datafusion::prelude::SessionContext,
    entry: &SessionEntry,
    guard: &Arc<crate::secure::Guard>,
) {
    use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    use datafusion::error::DataFusionError;
    use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};

    let pid = entry.pid.clone();
    ctx.register_udf(create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(pid.load(Ordering::Relaxed)))))),
    ));
    for (name, terminate) in [("pg_cancel_backend", false), ("pg_terminate_backend", true)] {
        let activity = Arc::downgrade(&entry.activity);
        let guard = Arc::downgrade(guard);
        let signal = move |pid: Option<i64>| -> datafusion::error::Result<Option<bool>> {
            let (Some(activity), Some(guard), Some(pid)) = (activity.upgrade(), guard.upgrade(), pid) else {
                return Ok(None);
            };
            let Ok(pid) = i32::try_from(pid) else { return Ok(Some(false)) };
            activity
                .signal_backend(pid, terminate, &guard.viewer())
                .map(Some)
                .map_err(|e| DataFusionError::External(Box::new(e)))
        };
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Volatile,
            Arc::new(move |args: &[ColumnarValue]| match &args[0] {
                ColumnarValue::Scalar(v) => {
                    let pid = match v.cast_to(&DataType::Int64)? {
                        ScalarValue::Int64(p) => p,
                        _ => None,
                    };
                    Ok(ColumnarValue::Scalar(ScalarValue::Boolean(signal(pid)?)))
                }
                ColumnarValue::Array(a) => {
                    let cast = datafusion::arrow::compute::cast(a, &DataType::Int64)?;
                    let pids = cast.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
                    let out: BooleanArray = (0..pids.len())
                        .map(|i| signal(pids.is_valid(i).then(|| pids.value(i))))
                        .collect::<datafusion::error::Result<_>>()?;
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
            }),
        ));
    }
}

/// The bytes the plan's scans read (DataFusion's `bytes_scanned` metric, summed).
fn bytes_scanned(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.sum_by_name("bytes_scanned")).map(|v| v.as_usize() as u64).unwrap_or(0);
    own + plan.children().iter().map(|c| bytes_scanned(c.as_ref())).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str) -> Identity {
        Identity { user: user.into(), roles: vec![], channel: rxgate_common::Channel::PgWire, client_addr: None }
    }

    #[test]
    fn users_see_and_kill_their_own_admins_all() {
        let activity = Arc::new(Activity::new(None));
        let settings = Arc::new(SessionSettings::new("a", "health", None));
        let a = activity.open(&identity("ann"), settings.clone(), Arc::default());
        let b = activity.open(&identity("bob"), settings, Arc::default());
        let (ta, tb) = (CancelToken::new(), CancelToken::new());
        let qa = activity.start(a.id, "ann", "SELECT 1", &ta);
        let _qb = activity.start(b.id, "bob", "SELECT 2", &tb);
        let ann = Viewer { user: "ann".into(), admin: false };
        let admin = Viewer { user: "root".into(), admin: true };
        assert_eq!(activity.queries(&ann).len(), 1);
        assert_eq!(activity.queries(&admin).len(), 2);
        assert_eq!(activity.sessions(&ann).len(), 1);
        let bobs = activity.queries(&admin)[1].query_id.clone();
        assert_eq!(activity.kill_query(&bobs, &ann).unwrap_err().code, StatusCode::PermissionDenied);
        assert!(!tb.is_cancelled());
        assert_eq!(activity.kill_query("nope", &ann).unwrap_err().code, StatusCode::InvalidArgument);
        activity.kill_query(&bobs, &admin).unwrap();
        assert!(tb.is_cancelled() && tb.error().code == StatusCode::Cancelled);
        assert_eq!(activity.signal_backend(b.pid(), true, &ann).unwrap_err().code, StatusCode::PermissionDenied);
        assert!(activity.signal_backend(a.pid(), false, &ann).unwrap());
        assert!(ta.is_cancelled() && !a.terminate_token().is_cancelled());
        assert!(!activity.signal_backend(1, false, &admin).unwrap());
        drop(qa);
        assert_eq!(activity.queries(&admin).len(), 1);
        drop(a);
        assert_eq!(activity.sessions(&admin).len(), 1);
    }
}

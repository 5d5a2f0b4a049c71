//! One client session: its DataFusion context, its identity, its parameters, and the single
//! path from SQL text to a plan ([`EngineSession::plan`]) and from a plan to record batches
//! ([`EngineSession::execute`]).
//!
//! `plan` parses a statement into a [`Statement`] (`crate::statement`) and hands it to its
//! planner in one `match` ([`EngineSession::plan_statement`]); `execute` runs what was planned
//! in another (`run_command` for the commands the engine runs itself). Submodules: `query`
//! (statements DataFusion plans), `params` (session parameters and transactions),
//! `partitioned` (parallel results), `stream` (a running statement's stream).

mod params;
pub(crate) mod partitioned;
mod query;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::prelude::SessionContext;
use rxgate_common::{Error, Identity, Result, StatusCode};

use self::stream::{guard, Owner};
use crate::audit::{AuditHandle, AuditLog, AuditRecord};
use crate::commands;
use crate::cursor::Cursors;
use crate::deadline::CancelToken;
use crate::planned::{show_schema, Planned, QueryOutput, StatementInfo};
use crate::secure::{Applied, Guard};
use crate::settings::SessionSettings;
use crate::statement::{
    Command, DdlCommand, DmlCommand, ParseOptions, SessionCommand, SourceQuery, Statement, ViewCommand,
};

/// A client session. Cheap to keep; not shared between clients.
pub struct EngineSession {
    ctx: SessionContext,
    identity: Identity,
    settings: Arc<SessionSettings>,
    reported: Mutex<Vec<(String, String)>>,
    /// The token of the statement started last; [`SessionCanceller`] fires it.
    running: Arc<Mutex<CancelToken>>,
    cursors: Cursors,
    in_transaction: AtomicBool,
    /// A statement of the open transaction block failed (PostgreSQL's aborted state).
    failed: AtomicBool,
    /// The writes of the open transaction block, landing at COMMIT.
    staged: Arc<tokio::sync::Mutex<commands::write::Staged>>,
    guard: Arc<Guard>,
    audit: Arc<AuditLog>,
    /// Effective roles at session start (users file + policy), for audit records.
    roles: Vec<String>,
    /// Keeps alive the state the guard parses policy expressions with (it holds it weakly).
    _policy_state: Arc<datafusion::execution::SessionState>,
    /// Statement text size and depth limits, checked before anything parses a statement.
    limits: crate::limits::StatementLimits,
    owner: Owner,
    /// `?` placeholders are parameters (Flight SQL sessions).
    question_marks: AtomicBool,
    /// The session's entry in the activity registry (`system.sessions`, `pg_stat_activity`).
    entry: crate::activity::SessionEntry,
}

/// Cancels the statement its session is running, from another task (a PostgreSQL
/// CancelRequest arrives on another connection). Statements started later are not affected.
#[derive(Clone)]
pub struct SessionCanceller(Arc<Mutex<CancelToken>>);

impl SessionCanceller {
    /// Fires the running statement's token; its stream then fails with 57014.
    pub fn cancel(&self) {
        self.0.lock().expect("running lock").cancel();
    }
}

impl EngineSession {
    /// A session over its context, identity, settings, policy guard and audit log (built by
    /// `Engine::session`, the one caller).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: SessionContext,
        identity: Identity,
        settings: Arc<SessionSettings>,
        guard: Arc<Guard>,
        policy_state: Arc<datafusion::execution::SessionState>,
        audit: Arc<AuditLog>,
        roles: Vec<String>,
        limits: crate::limits::StatementLimits,
        memory: Arc<std::sync::atomic::AtomicUsize>,
        entry: crate::activity::SessionEntry,
    ) -> Self {
        let owner = Owner { memory, user: identity.user.clone() };
        Self {
            ctx,
            identity,
            settings,
            reported: Mutex::new(vec![]),
            running: Arc::default(),
            cursors: Cursors::default(),
            in_transaction: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            staged: Default::default(),
            guard,
            audit,
            roles,
            _policy_state: policy_state,
            limits,
            owner,
            question_marks: AtomicBool::new(false),
            entry,
        }
    }

    /// The pid this session is listed under in `pg_stat_activity` (and that
    /// `pg_cancel_backend` takes): a number of its own until the frontend sets one.
    pub fn backend_pid(&self) -> i32 {
        self.entry.pid()
    }

    /// Sets the pid the client knows this session by (pgwire's BackendKeyData pid).
    pub fn set_backend_pid(&self, pid: i32) {
        self.entry.set_pid(pid);
    }

    /// Whether `pg_terminate_backend` ended this session (Flight SQL then revokes its token).
    pub fn is_terminated(&self) -> bool {
        self.entry.terminate_token().is_cancelled()
    }

    /// Completes when `pg_terminate_backend` ends this session (pgwire then closes the
    /// connection with FATAL 57P01).
    pub fn terminated(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.entry.terminate_token().clone().cancelled_owned()
    }

    /// A handle that cancels whatever statement this session runs at the time it is fired.
    pub fn canceller(&self) -> SessionCanceller {
        SessionCanceller(self.running.clone())
    }

    /// A fresh token for a statement that starts now, fired by [`SessionCanceller::cancel`].
    fn start_statement(&self) -> CancelToken {
        let token = CancelToken::new();
        *self.running.lock().expect("running lock") = token.clone();
        token
    }

    /// The masks and row filters the last planned statement got (audit, `policy check`).
    pub fn applied_policies(&self) -> Vec<Applied> {
        self.guard.applied()
    }

    /// The row schema of the open cursor `name` (a cursor is also a portal: clients Describe
    /// it by name).
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.cursors.get(name).ok().map(|c| c.schema())
    }

    /// The session's effective roles (users file and policy).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Who this session belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The current value of a session parameter (`SHOW name`).
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.settings.get(name)
    }

    /// Applies parameters a client sent at start-up (`application_name`, `DateStyle`,
    /// `search_path` via `options`, …). Unknown or read-only ones are ignored, as a
    /// PostgreSQL server ignores what it reports itself.
    pub fn apply_startup_parameters<'a>(&self, params: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in params {
            if matches!(name, "user" | "database" | "options" | "replication") {
                continue;
            }
            if self.settings.set(name, value).is_ok() && name.eq_ignore_ascii_case("search_path") {
                self.apply_search_path();
            }
        }
        self.reported.lock().expect("reported lock").clear();
    }

    /// Parameters whose value changed since the last call and that PostgreSQL reports to the
    /// client (ParameterStatus): `(name, value)`.
    pub fn take_reported_parameters(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.reported.lock().expect("reported lock"))
    }

    /// Splits SQL text into its statements, each with its original text.
    pub fn split(&self, sql: &str) -> Result<Vec<String>> {
        self.limits.check_size(sql)?;
        crate::statement::split(sql)
    }

    /// Reads `?` in this session's statements as numbered parameters (`$1`, `$2`, … in
    /// order), as Flight SQL clients (ADBC, JDBC) write them; PostgreSQL's `?` operator is then
    /// not available. Mixing `?` and `$n` in one statement is a syntax error (42601).
    pub fn set_question_mark_parameters(&self, on: bool) {
        self.question_marks.store(on, Ordering::Relaxed);
    }
}

impl EngineSession {
    /// **The entry point**: plans one SQL statement for this session. Every frontend gets its
    /// plans here and nowhere else.
    pub async fn plan(&self, sql: &str) -> Result<Planned> {
        // `RUST_LOG=rxgate_engine::sql=debug` records what clients send (see tests/fixtures).
        tracing::debug!(target: "rxgate_engine::sql", user = %self.identity.user, sql = %sql, "plan");
        self.guard.begin_statement();
        let started = Instant::now();
        let planned = self.plan_inner(sql).await;
        match planned {
            Ok(Planned::Empty) => Ok(Planned::Empty),
            Ok(planned) => {
                let info = StatementInfo::new(sql, &planned, &self.guard.applied());
                Ok(Planned::Audited(Box::new(planned), Arc::new(info)))
            }
            Err(e) => {
                self.statement_failed();
                tracing::debug!(target: "rxgate_engine::sql", error = %e.message, "plan failed");
                let mut record = AuditRecord::statement(&self.identity, &self.roles, sql);
                record.finish(0, started, Some(&e));
                self.audit.append(&record);
                Err(e)
            }
        }
    }

    /// Lists the lakehouse's schemas and tables again when DDL ran in this process since the
    /// session listed them (`force`: after this session's own DDL).
    async fn refresh_catalog_if(&self, force: bool) {
        let Some(catalog) = self.lakehouse_catalog() else { return };
        let Some(lakehouse) = crate::secure::lakehouse_of(&catalog) else { return };
        if force || lakehouse.is_stale() {
            if let Err(e) = lakehouse.refresh().await {
                tracing::warn!(error = %e.message, "catalog listing not refreshed");
            }
        }
    }

    async fn plan_inner(&self, sql: &str) -> Result<Planned> {
        self.refresh_catalog_if(false).await;
        let options = ParseOptions {
            question_marks: self.question_marks.load(Ordering::Relaxed),
            catalog: self.ctx.state().config().options().catalog.default_catalog.clone(),
        };
        let statement = crate::statement::parse(sql, &self.limits, &options)?;
        if self.failed.load(Ordering::Acquire)
            && !matches!(statement, Statement::Command(Command::Session(SessionCommand::End(_))))
        {
            return Err(Error::new(
                StatusCode::InFailedTransaction,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        self.plan_statement(statement).await
    }

    /// **The dispatch**: every statement goes to its planner here.
    async fn plan_statement(&self, statement: Statement) -> Result<Planned> {
        match statement {
            Statement::Empty => Ok(Planned::Empty),
            Statement::Sql(sql) => self.plan_sql(&sql).await,
            Statement::Declare { name, query, hold } => {
                let query = Box::new(self.plan_sql(&query).await?);
                Ok(Planned::Declare { name, query, hold })
            }
            Statement::Fetch { name, count } => {
                let schema = self.cursors.get(&name)?.schema();
                Ok(Planned::Fetch { name, count, schema })
            }
            Statement::Copy { query, options } => Ok(Planned::Copy(Box::new(self.plan_sql(&query).await?), options)),
            Statement::DropTable { table, if_exists, purge } => {
                match commands::external::plan_drop(&self.ctx, &table, if_exists, self.is_admin()).await? {
                    Some(planned) => Ok(planned),
                    None => {
                        let cmd = DdlCommand::DropTable { table, if_exists, purge };
                        commands::ddl::plan(&self.ctx, &self.guard, cmd, None).await
                    }
                }
            }
            Statement::Command(Command::Session(cmd)) => {
                let schema = match &cmd {
                    SessionCommand::Show(name) => Some(show_schema(name.as_deref())),
                    _ => None,
                };
                Ok(Planned::Command(Command::Session(cmd), schema))
            }
            Statement::Command(Command::Admin(cmd)) => Ok(commands::admin::plan(cmd)),
            Statement::Command(Command::Hive(cmd)) => commands::hive::plan(&self.ctx, cmd),
            Statement::Command(Command::External(cmd)) => {
                commands::external::plan(&self.ctx, cmd, self.is_admin()).await
            }
            Statement::Command(Command::Iceberg(cmd)) => commands::iceberg::plan(&self.ctx, cmd, self.is_admin()).await,
            Statement::Command(Command::Maintenance(cmd)) => {
                commands::maintenance::plan(&self.ctx, cmd, self.is_admin()).await
            }
            Statement::Command(Command::Queries(cmd)) => Ok(commands::queries::plan(cmd)),
            Statement::Command(Command::Ddl(cmd)) => {
                let source = match &cmd {
                    DdlCommand::CreateTable { query: Some(q), .. } => Some(self.plan_source(q).await?),
                    _ => None,
                };
                commands::ddl::plan(&self.ctx, &self.guard, cmd, source).await
            }
            Statement::Command(Command::View(cmd)) => {
                let source = match &cmd {
                    ViewCommand::Create { query, .. } => Some(self.plan_source(query).await?),
                    ViewCommand::Drop { .. } => None,
                };
                commands::view::plan(&self.ctx, &self.guard, cmd, source, self.is_admin())
            }
            Statement::Command(Command::Dml(cmd)) => {
                let source = match &cmd {
                    DmlCommand::Insert { source, .. } => Some(self.plan_source(source).await?),
                    _ => None,
                };
                commands::dml::plan(&self.ctx, &self.guard, &self.writes()?, cmd, source).await
            }
        }
    }

    /// Plans the query a write reads its rows from, as any query: under the session's policy.
    async fn plan_source(&self, query: &SourceQuery) -> Result<Box<Planned>> {
        let text = crate::statement::SqlText::new(datafusion::sql::sqlparser::ast::Statement::Query(query.clone()));
        Ok(Box::new(self.plan_sql(&text).await?))
    }

    /// stops at the session's statement timeout and when the session's canceller fires.
    pub async fn execute(&self, planned: &Planned, params: Option<ParamValues>) -> Result<QueryOutput> {
        let token = self.start_statement();
        self.execute_with(planned, params, &token).await
    }

    /// [`EngineSession::execute`] under a token of the caller's (Flight SQL cancels by ticket).
    pub async fn execute_with(
        &self,
        planned: &Planned,
        params: Option<ParamValues>,
        token: &CancelToken,
    ) -> Result<QueryOutput> {
        self.execute_inner(planned, params, token, None).await
    }

    /// Registers an audited statement in `system.queries` (as long as its result lives) and
    /// runs it; `running` is the registration of the statement a nested one belongs to.
    async fn execute_inner(
        &self,
        planned: &Planned,
        params: Option<ParamValues>,
        token: &CancelToken,
        running: Option<&crate::activity::Running>,
    ) -> Result<QueryOutput> {
        if let Planned::Audited(inner, info) = planned {
            let started = Instant::now();
            let mut record = info.record(&self.identity, &self.roles);
            let running = self.entry.activity().start(self.entry.id, &self.identity.user, &info.sql, token);
            return match Box::pin(self.execute_inner(inner, params, token, Some(&running))).await {
                Ok(output) => Ok(self.audited_output(output, record, started, running)),
                Err(e) => {
                    self.statement_failed();
                    record.finish(0, started, Some(&e));
                    running.complete(&mut record);
                    self.audit.append(&record);
                    Err(e)
                }
            };
        }
        if token.is_cancelled() {
            return Err(token.error());
        }
        let timeout = self.settings.statement_timeout();
        match planned {
            Planned::Empty => Ok(QueryOutput::Empty),
            // Handled above; a nested wrapper runs its statement.
            Planned::Audited(inner, _) => Box::pin(self.execute_inner(inner, params, token, running)).await,
            Planned::Declare { name, query, hold } => {
                if !hold && !self.in_transaction.load(Ordering::Acquire) {
                    return Err(Error::new(
                        StatusCode::InvalidTransactionState,
                        "DECLARE CURSOR can only be used in transaction blocks",
                    ));
                }
                let Planned::Plan(_, renamed, ..) = query.as_ref() else {
                    return Err(Error::new(StatusCode::Unsupported, "a cursor needs a query"));
                };
                // The cursor's stream has no deadline of its own: each FETCH gets one.
                let plan = self.bound_plan(query, params).await?;
                match self.run_plan(plan, renamed.clone(), &CancelToken::new(), None, None).await? {
                    QueryOutput::Rows { stream, .. } => self.cursors.declare(name, stream, *hold)?,
                    _ => return Err(Error::new(StatusCode::Unsupported, "a cursor needs a query")),
                }
                Ok(QueryOutput::Command { tag: "DECLARE CURSOR".into() })
            }
            Planned::Fetch { name, count, .. } => {
                let stream = guard(self.cursors.get(name)?.fetch(*count), timeout, token, None, &self.owner);
                Ok(QueryOutput::Fetched { schema: stream.schema(), stream })
            }
            Planned::Command(cmd, _) => self.run_command(cmd).await,
            Planned::Write { command, source } => {
                let rows = match source {
                    Some(source) => {
                        let plan = self.bound_plan(source, params).await?;
                        match self.run_plan(plan, None, token, timeout, running).await? {
                            QueryOutput::Rows { stream, .. } => Some(stream),
                            _ => return Err(Error::internal("a write's source returned no rows")),
                        }
                    }
                    None => None,
                };
                self.run_write(command, rows).await
            }
            Planned::Copy(query, options) => match Box::pin(self.execute_inner(query, params, token, running)).await? {
                QueryOutput::Rows { schema, stream } => {
                    Ok(QueryOutput::Copy { schema, stream, options: options.clone() })
                }
                _ => Err(Error::new(StatusCode::Unsupported, "COPY needs a query that returns rows")),
            },
            Planned::Plan(_, renamed, ..) => {
                let plan = self.bound_plan(planned, params).await?;
                self.run_plan(plan, renamed.clone(), token, timeout, running).await
            }
        }
    }

    /// The output with its audit record attached: written when its rows have been read (or
    /// abandoned), at once for outputs without rows.
    fn audited_output(
        &self,
        output: QueryOutput,
        record: AuditRecord,
        started: Instant,
        running: crate::activity::Running,
    ) -> QueryOutput {
        let handle = |record, running| AuditHandle::new(record, self.audit.clone(), started, 1, Some(running));
        match output {
            QueryOutput::Rows { schema, stream } => {
                QueryOutput::Rows { schema, stream: handle(record, running).stream(stream) }
            }
            QueryOutput::Fetched { schema, stream } => {
                QueryOutput::Fetched { schema, stream: handle(record, running).stream(stream) }
            }
            QueryOutput::Copy { schema, stream, options } => {
                QueryOutput::Copy { schema, stream: handle(record, running).stream(stream), options }
            }
            QueryOutput::CopyIn(mut sink) => {
                sink.audit = Some((record, self.audit.clone(), started));
                QueryOutput::CopyIn(sink)
            }
            QueryOutput::Written { tag, table, rows, snapshot_id } => {
                let mut record = record;
                record.written_table = Some(table.clone());
                record.snapshot_id = snapshot_id;
                record.finish(rows, started, None);
                running.complete(&mut record);
                self.audit.append(&record);
                QueryOutput::Written { tag, table, rows, snapshot_id }
            }
            other => {
                let mut record = record;
                record.finish(0, started, None);
                running.complete(&mut record);
                self.audit.append(&record);
                other
            }
        }
    }
    /// Plans and executes one statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        let planned = self.plan(sql).await?;
        self.execute(&planned, None).await
    }

    /// Runs a command the engine answers itself.
    async fn run_command(&self, cmd: &Command) -> Result<QueryOutput> {
        match cmd {
            Command::Session(SessionCommand::End(commit)) => {
                // COMMIT of a failed block rolls back, as in PostgreSQL.
                let failed = self.failed.swap(false, Ordering::AcqRel);
                let commit = *commit && !failed;
                let ended = self.end_transaction(commit).await;
                let output = self.run_session(&SessionCommand::End(commit));
                ended.and(output)
            }
            Command::Session(SessionCommand::Begin) => {
                if !self.in_transaction.load(Ordering::Acquire) {
                    self.failed.store(false, Ordering::Release);
                }
                self.run_session(&SessionCommand::Begin)
            }
            Command::Session(cmd) => self.run_session(cmd),
            Command::Admin(cmd) => commands::admin::execute(cmd, &self.guard),
            Command::Hive(cmd) => commands::hive::execute(&self.ctx, cmd).await,
            Command::External(cmd) => commands::external::execute(&self.ctx, cmd).await,
            Command::Iceberg(cmd) => commands::iceberg::execute(&self.ctx, cmd).await,
            Command::Maintenance(cmd) => commands::maintenance::execute(&self.ctx, cmd).await,
            Command::Queries(cmd) => commands::queries::execute(self.entry.activity(), cmd, &self.guard.viewer()),
            Command::Ddl(_) | Command::Dml(_) | Command::View(_) => self.run_write(cmd, None).await,
        }
    }

    /// Runs a write (planned as [`Planned::Write`]) with its source's rows, then shows the
    /// session any table it created, dropped or renamed.
    async fn run_write(
        &self,
        cmd: &Command,
        rows: Option<datafusion::execution::SendableRecordBatchStream>,
    ) -> Result<QueryOutput> {
        let user = &self.identity.user;
        let writes = self.writes()?;
        let output = match cmd {
            Command::Ddl(cmd) => commands::ddl::execute(&self.ctx, &writes, cmd, rows, user).await,
            Command::Dml(cmd) => commands::dml::execute(&self.ctx, &self.guard, &writes, cmd, rows, user).await,
            Command::View(cmd) => commands::view::execute(&self.ctx, &writes, cmd, user, &self.identity.roles).await,
            _ => Err(Error::internal("not a write")),
        };
        if matches!(cmd, Command::Ddl(_) | Command::View(_)) && writes.txn.is_none() {
            self.refresh_catalog_if(true).await;
        }
        output
    }

    /// Streams Arrow batches into a table as one commit (Flight SQL's ingest, ADBC's
    /// `adbc_ingest`), under the same privileges and row filters as SQL writes, audited as
    /// `INGEST INTO schema.table (mode)`. Returns the rows written.
    pub async fn ingest(
        &self,
        table: &[String],
        mode: crate::commands::ingest::IngestMode,
        batches: datafusion::execution::SendableRecordBatchStream,
    ) -> Result<u64> {
        let text = format!("INGEST INTO {} ({mode:?})", table.join("."));
        let mut record = AuditRecord::statement(&self.identity, &self.roles, &text);
        let started = Instant::now();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::new(StatusCode::InFailedTransaction, "current transaction is aborted"));
        }
        let writes = self.writes()?;
        let user = self.identity.user.clone();
        let result = commands::ingest::ingest(&self.ctx, &self.guard, &writes, &user, table, mode, batches).await;
        if writes.txn.is_none() {
            self.refresh_catalog_if(true).await;
        }
        match result {
            Ok(QueryOutput::Written { table, rows, snapshot_id, .. }) => {
                record.written_table = Some(table);
                record.snapshot_id = snapshot_id;
                record.finish(rows, started, None);
                self.audit.append(&record);
                Ok(rows)
            }
            Ok(_) => Err(Error::internal("ingest wrote nothing")),
            Err(e) => {
                self.statement_failed();
                record.finish(0, started, Some(&e));
                self.audit.append(&record);
                Err(e)
            }
        }
    }

    /// Runs a planned statement once per parameter row. An `INSERT … VALUES` runs once with
    /// all the rows (one commit, not one per row); anything else runs row by row. Returns the
    /// rows affected.
    pub async fn execute_rows(&self, planned: &Planned, rows: Vec<ParamValues>) -> Result<u64> {
        if let Planned::Audited(inner, info) = planned {
            if let Planned::Write { command, source: Some(source) } = inner.as_ref() {
                if let Some(values) = commands::dml::bind_values(source, &rows)? {
                    let combined = Planned::Write { command: command.clone(), source: Some(Box::new(values)) };
                    let combined = Planned::Audited(Box::new(combined), info.clone());
                    return match self.execute(&combined, None).await? {
                        QueryOutput::Written { rows, .. } => Ok(rows),
                        _ => Ok(0),
                    };
                }
            }
        }
        let mut total = 0;
        for params in rows {
            if let QueryOutput::Written { rows, .. } = self.execute(planned, Some(params)).await? {
                total += rows;
            }
        }
        Ok(total)
    }

    /// Where this session's writes go: staged while a transaction block is open.
    fn writes(&self) -> Result<commands::write::Writes> {
        Ok(commands::write::Writes {
            lake: commands::lakehouse(&self.ctx)?,
            txn: self.in_transaction.load(Ordering::Acquire).then(|| self.staged.clone()),
            catalog: self.lakehouse_catalog(),
        })
    }

    /// The session's catalog (the lakehouse under the policy).
    fn lakehouse_catalog(&self) -> Option<Arc<dyn datafusion::catalog::CatalogProvider>> {
        let name = self.ctx.state().config().options().catalog.default_catalog.clone();
        self.ctx.catalog(&name)
    }

    /// Marks the open transaction block failed (nothing of it will commit).
    fn statement_failed(&self) {
        if self.in_transaction.load(Ordering::Acquire) {
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Ends the transaction block: COMMIT lands every staged write in one catalog-database
    /// transaction; ROLLBACK (and a COMMIT that fails) drops them.
    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let pending = self.staged.lock().await.take();
        if let Some(lakehouse) = self.lakehouse_catalog().as_ref().and_then(crate::secure::lakehouse_of) {
            lakehouse.clear_staged();
        }
        if !commit || pending.is_empty() {
            return Ok(());
        }
        let lake = commands::lakehouse(&self.ctx)?;
        let started = Instant::now();
        let result = rxgate_catalog::txn::commit_all(&lake, &pending).await;
        self.refresh_catalog_if(true).await;
        // The staged statements were audited as they ran; the commit records what landed:
        // one line per table, with the snapshot it committed.
        for (i, (ident, _)) in pending.iter().enumerate() {
            let mut record = AuditRecord::statement(&self.identity, &self.roles, "COMMIT");
            record.written_table = Some(format!("{}.{}", ident.namespace().join("."), ident.name()));
            match &result {
                Ok(snapshots) => {
                    record.snapshot_id = snapshots.get(i).copied().flatten();
                    record.finish(0, started, None);
                }
                Err(e) => record.finish(0, started, Some(e)),
            }
            self.audit.append(&record);
        }
        result.map(|_| ())
    }

    /// Whether the session's principal has an administrator role under the policy in force.
    fn is_admin(&self) -> bool {
        self.guard.is_admin()
    }

    /// The plan a statement runs as, after the policy rewrite (secured tables inlined), and
    /// the masks and filters it applies: what `rxgate policy check` prints.
    pub async fn policy_check(&self, sql: &str) -> Result<(String, Arc<StatementInfo>)> {
        let planned = self.plan(sql).await?;
        let Planned::Audited(inner, info) = &planned else {
            return Ok((String::new(), Arc::new(StatementInfo::default())));
        };
        let text = match inner.logical_plan() {
            Some(plan) => {
                let state = self.ctx.state();
                let analyzed = state.analyzer().execute_and_check(plan.clone(), state.config_options(), |_, _| {})?;
                let text = analyzed.display_indent_schema().to_string();
                text
            }
            None => format!("{inner:?}"),
        };
        Ok((text, info.clone()))
    }
}

//! One client session: its DataFusion context, its identity, its parameters, and the single
//! path from SQL text to a plan ([`EngineSession::plan`]) and from a plan to record batches
//! ([`EngineSession::execute`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement, TransactionConclusion};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, CopySource, CopyTarget, DiscardObject, Expr, Reset, ResetStatement, Set, Statement as SqlStatement,
    Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;
use rxgate_common::{Error, Identity, Result, StatusCode};

use crate::admin::AdminCommand;
use crate::cursor::{CopyOptions, Cursors};
use crate::deadline::{CancelToken, GuardedStream};
use crate::audit::{AuditHandle, AuditLog, AuditRecord};
use crate::secure::{Applied, Guard};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Expr as Expr2;
use std::time::Instant;
use crate::pgcompat;
use crate::settings::SessionSettings;

/// Parameters a PostgreSQL server reports to the client (ParameterStatus) when they change.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// What running one statement produced.
pub enum QueryOutput {
    /// A result set, streamed.
    Rows {
        /// Result schema.
        schema: SchemaRef,
        /// Batches, produced as the client reads them.
        stream: SendableRecordBatchStream,
    },
    /// A command without rows, with its completion tag (`SET`, …).
    Command {
        /// Completion tag.
        tag: String,
    },
    /// `BEGIN` / `START TRANSACTION`.
    TransactionStart,
    /// `COMMIT` (true) or `ROLLBACK` (false).
    TransactionEnd {
        /// Whether the transaction committed.
        commit: bool,
    },
    /// Rows of a `FETCH` from a cursor (completion tag `FETCH n`).
    Fetched {
        /// Result schema.
        schema: SchemaRef,
        /// The fetched rows, produced as the client reads them.
        stream: SendableRecordBatchStream,
    },
    /// Rows of `COPY … TO STDOUT`, to be written in the COPY format of `options`.
    Copy {
        /// Result schema.
        schema: SchemaRef,
        /// Rows, produced as the client reads them.
        stream: SendableRecordBatchStream,
        /// Format, delimiter, NULL string, header.
        options: CopyOptions,
    },
    /// An empty statement.
    Empty,
}

/// A session command the engine answers itself.
#[derive(Debug, Clone)]
pub enum SessionCommand {
    /// `SET name = value` (also `SET TIME ZONE`, `SET NAMES`, `set_config`-like forms).
    Set {
        /// Parameter name as written.
        name: String,
        /// Value text, unquoted; `None` for `DEFAULT`.
        value: Option<String>,
    },
    /// `RESET name` (`None`: `RESET ALL`).
    Reset(Option<String>),
    /// `SHOW name` (`None`: `SHOW ALL`).
    Show(Option<String>),
    /// `DISCARD ALL` and friends.
    Discard(String),
    /// A command accepted without effect, answered with this tag (`SAVEPOINT`, `SET` for
    /// `SET TRANSACTION …`, …).
    Accept(String),
    /// `BEGIN` / `START TRANSACTION`: rxgate is read-only, so a transaction only changes the
    /// status the client sees.
    Begin,
    /// `COMMIT` / `END` (true) or `ROLLBACK` / `ABORT` (false).
    End(bool),
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`.
    Declare {
        /// Cursor name.
        name: String,
        /// The query whose rows the cursor returns.
        query: Box<Planned>,
        /// `WITH HOLD`: the cursor outlives the transaction.
        hold: bool,
    },
    /// `FETCH [FORWARD] n|ALL|NEXT FROM name`.
    Fetch {
        /// Cursor name.
        name: String,
        /// Rows to fetch; `None` for all that remain.
        count: Option<u64>,
        /// The cursor's row schema.
        schema: SchemaRef,
    },
    /// `CLOSE name` (`None`: `CLOSE ALL`).
    Close(Option<String>),
    /// `SHOW GRANTS [FOR …]`, `SHOW POLICIES`.
    Admin(AdminCommand),
    /// Hive's `SHOW DATABASES|TABLES`, `DESCRIBE [FORMATTED]`, `SHOW CREATE TABLE` (hive.rs).
    Hive(crate::hive::HiveCommand),
    /// Iceberg schema/partition evolution and rollback (iceberg_admin.rs).
    Iceberg(crate::iceberg_admin::IcebergCommand),
}

/// One statement, planned and ready to execute (possibly several times with parameters).
// One value per statement: boxing the plan would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Planned {
    /// A DataFusion plan (queries, EXPLAIN, transactions), with the output schema the client
    /// sees when its column names differ from the plan's (PostgreSQL names `count(*)`
    /// "count", an unnamed expression "?column?").
    Plan(LogicalPlan, Option<SchemaRef>, Vec<Option<DataType>>, Option<Box<LogicalPlan>>),
    /// A session command.
    Command(SessionCommand),
    /// `COPY (query) TO STDOUT`: the query, and how to write its rows.
    Copy(Box<Planned>, CopyOptions),
    /// A client's statement as [`EngineSession::plan`] returns it: the planned statement and
    /// what its audit record says of it (text, tables, columns, masks, row filters).
    Audited(Box<Planned>, Arc<StatementInfo>),
    /// Nothing to do.
    Empty,
}

/// What the audit trail records of a planned statement.
#[derive(Debug, Clone, Default)]
pub struct StatementInfo {
    /// The statement text.
    pub sql: String,
    /// Tables it reads.
    pub tables: Vec<String>,
    /// Columns it names.
    pub columns: Vec<String>,
    /// Masks applied (`schema.table.column: mask`).
    pub masks: Vec<String>,
    /// Row filters applied (`schema.table: predicate`).
    pub row_filters: Vec<String>,
    /// Whether a table is read through a mask or a row filter ([`Applied::hides`]).
    pub hides: bool,
}

impl StatementInfo {
    fn new(sql: &str, planned: &Planned, applied: &[Applied]) -> Self {
        let (mut tables, mut columns) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let mut plans: Vec<&LogicalPlan> = vec![];
        let mut stack = vec![planned];
        while let Some(p) = stack.pop() {
            match p {
                Planned::Plan(plan, ..) => plans.push(plan),
                Planned::Copy(q, _) | Planned::Audited(q, _) => stack.push(q),
                Planned::Command(SessionCommand::Declare { query, .. }) => stack.push(query),
                _ => {}
            }
        }
        for plan in plans {
            let _ = plan.apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node {
                    tables.insert(scan.table_name.to_string());
                }
                let _ = node.apply_expressions(|e| {
                    let _ = e.apply(|e| {
                        if let Expr2::Column(c) = e {
                            if c.relation.is_some() {
                                columns.insert(c.flat_name());
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                    Ok(TreeNodeRecursion::Continue)
                });
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Self {
            sql: sql.to_string(),
            tables: tables.into_iter().collect(),
            columns: columns.into_iter().collect(),
            masks: applied.iter().flat_map(|a| a.masks.iter().map(move |m| format!("{}.{m}", a.table))).collect(),
            row_filters: applied.iter().filter_map(|a| a.row_filter.as_ref().map(|f| format!("{}: {f}", a.table))).collect(),
            hides: applied.iter().any(Applied::hides),
        }
    }

    fn record(&self, identity: &Identity, roles: &[String]) -> AuditRecord {
        let mut r = AuditRecord::statement(identity, roles, &self.sql);
        r.tables = self.tables.clone();
        r.columns = self.columns.clone();
        r.masks = self.masks.clone();
        r.row_filters = self.row_filters.clone();
        r
    }
}

impl Planned {
    /// The statement itself, without its audit wrapper.
    fn unwrapped(&self) -> &Planned {
        match self {
            Planned::Audited(p, _) => p.unwrapped(),
            p => p,
        }
    }

    /// Result schema of this statement, if it returns rows.
    pub fn schema(&self) -> Option<SchemaRef> {
        match self.unwrapped() {
            Planned::Plan(_, Some(s), ..) => Some(s.clone()),
            Planned::Plan(p, None, ..) if returns_rows(p) => Some(p.schema().inner().clone()),
            Planned::Command(SessionCommand::Show(name)) => Some(show_schema(name.as_deref())),
            Planned::Command(SessionCommand::Fetch { schema, .. }) => Some(schema.clone()),
            Planned::Command(SessionCommand::Admin(cmd)) => Some(crate::admin::schema(cmd)),
            Planned::Command(SessionCommand::Hive(cmd)) => Some(crate::hive::schema(cmd)).filter(|s| !s.fields().is_empty()),
            Planned::Command(SessionCommand::Iceberg(cmd)) => crate::iceberg_admin::schema(cmd),
            _ => None,
        }
    }

    /// Types of `$1..$n` in order: as the plan infers them, else as the statement casts them
    /// (`$1::int`), else unknown.
    pub fn parameter_types(&self) -> Vec<Option<DataType>> {
        let Planned::Plan(plan, _, hints, _) = self.unwrapped() else { return vec![] };
        let inferred: std::collections::BTreeMap<usize, Option<DataType>> = plan
            .get_parameter_types()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| k.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, v)))
            .collect();
        let n = inferred.keys().max().copied().unwrap_or(0).max(hints.len());
        (1..=n)
            .map(|i| inferred.get(&i).cloned().flatten().or_else(|| hints.get(i - 1).cloned().flatten()))
            .collect()
    }

    /// The DataFusion plan, if this statement has one.
    pub fn logical_plan(&self) -> Option<&LogicalPlan> {
        match self.unwrapped() {
            Planned::Plan(p, ..) => Some(p),
            _ => None,
        }
    }
}

fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(plan, LogicalPlan::Statement(_) | LogicalPlan::Ddl(_) | LogicalPlan::Dml(_))
}

fn show_schema(name: Option<&str>) -> SchemaRef {
    Arc::new(match name {
        None => Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, true),
            Field::new("description", DataType::Utf8, true),
        ]),
        Some(n) => Schema::new(vec![Field::new(n, DataType::Utf8, true)]),
    })
}

/// A result whose partitions can be read in parallel, each exactly once
/// ([`EngineSession::execute_partitioned`]).
pub struct PartitionedQuery {
    schema: SchemaRef,
    source: PartitionSource,
    timeout: Option<std::time::Duration>,
    token: CancelToken,
    audit: Option<Arc<AuditHandle>>,
    owner: Owner,
}

enum PartitionSource {
    Plan { plan: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>, renamed: Option<SchemaRef> },
    Once(Mutex<Option<SendableRecordBatchStream>>),
}

impl PartitionedQuery {
    /// The schema every partition's batches have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> usize {
        match &self.source {
            PartitionSource::Plan { plan, .. } => plan.properties().output_partitioning().partition_count(),
            PartitionSource::Once(_) => 1,
        }
    }

    /// The token that stops every partition of this query.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.token
    }

    /// Starts streaming partition `i`: batches are computed as the caller polls, under the
    /// statement timeout and the query's cancel token.
    pub fn stream(&self, i: usize) -> Result<SendableRecordBatchStream> {
        if i >= self.partitions() {
            return Err(Error::invalid(format!("no partition {i}")));
        }
        match &self.source {
            PartitionSource::Plan { plan, task, renamed } => {
                let stream = guard(plan.execute(i, task.clone())?, self.timeout, &self.token, renamed.clone(), &self.owner);
                Ok(match &self.audit {
                    Some(audit) => audit.stream(stream),
                    None => stream,
                })
            }
            PartitionSource::Once(slot) => slot
                .lock()
                .expect("partition lock")
                .take()
                .map(|s| guard(s, self.timeout, &self.token, None, &self.owner))
                .ok_or_else(|| Error::invalid("this result was already read")),
        }
    }
}

/// `plan` with one output partition, whatever its own count.
fn one_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    if plan.properties().output_partitioning().partition_count() == 1 {
        return plan;
    }
    Arc::new(CoalescePartitionsExec::new(plan))
}

/// A result stream under a timeout and a cancel token, with the client's column names.
fn guard(
    stream: SendableRecordBatchStream,
    timeout: Option<std::time::Duration>,
    token: &CancelToken,
    renamed: Option<SchemaRef>,
    owner: &Owner,
) -> SendableRecordBatchStream {
    let running = crate::memwatch::register(token, owner.memory.clone(), &owner.user);
    let stream: SendableRecordBatchStream = Box::pin(GuardedStream::new(stream, timeout, token, Some(running)));
    match renamed {
        Some(schema) => {
            let s = schema.clone();
            let renamed = stream.map(move |b| Ok(RecordBatch::try_new(s.clone(), b?.columns().to_vec())?));
            Box::pin(RecordBatchStreamAdapter::new(schema, renamed))
        }
        None => stream,
    }
}

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
    guard: Arc<Guard>,
    audit: Arc<AuditLog>,
    /// Effective roles at session start (users file + policy), for audit records.
    roles: Vec<String>,
    /// Keeps alive the state the guard parses policy expressions with (it holds it weakly).
    _policy_state: Arc<datafusion::execution::SessionState>,
    /// Statement text size and depth limits, checked before anything parses a statement.
    limits: crate::limits::StatementLimits,
    owner: Owner,
}

/// Whose a running statement is, for the memory guard: the session's user and the pool
/// memory the session holds.
#[derive(Clone)]
struct Owner {
    memory: Arc<std::sync::atomic::AtomicUsize>,
    user: String,
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
            guard,
            audit,
            roles,
            _policy_state: policy_state,
            limits,
            owner,
        }
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
        split_statements(sql)
    }
}

/// Splits SQL text into its statements (see [`EngineSession::split`]).
fn split_statements(sql: &str) -> Result<Vec<String>> {
    {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .map_err(|e| Error::new(StatusCode::SyntaxError, e.to_string()))?;
        let mut out = vec![];
        let mut cur = String::new();
        let mut meaningful = false;
        for t in tokens {
            match t {
                Token::SemiColon => {
                    if meaningful {
                        out.push(std::mem::take(&mut cur).trim().to_string());
                    }
                    cur.clear();
                    meaningful = false;
                }
                Token::Whitespace(_) => cur.push_str(&t.to_string()),
                t => {
                    meaningful = true;
                    cur.push_str(&token_text(&t));
                }
            }
        }
        if meaningful {
            out.push(cur.trim().to_string());
        }
        Ok(out)
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
        let planned = match self.limits.check_text(sql) {
            Ok(()) => self.plan_inner(sql).await,
            Err(e) => Err(e),
        };
        match planned {
            Ok(Planned::Empty) => Ok(Planned::Empty),
            Ok(planned) => {
                let info = StatementInfo::new(sql, &planned, &self.guard.applied());
                Ok(Planned::Audited(Box::new(planned), Arc::new(info)))
            }
            Err(e) => {
                tracing::debug!(target: "rxgate_engine::sql", error = %e.message, "plan failed");
                let mut record = AuditRecord::statement(&self.identity, &self.roles, sql);
                record.finish(0, started, Some(&e));
                self.audit.append(&record);
                Err(e)
            }
        }
    }

    async fn plan_inner(&self, sql: &str) -> Result<Planned> {
        let sql = &crate::hive::backticks(sql);
        if let Some(cmd) = crate::admin::parse(sql) {
            return Ok(Planned::Command(SessionCommand::Admin(cmd)));
        }
        if let Some(cmd) = crate::hive::parse(sql) {
            return crate::hive::plan(&self.ctx, cmd);
        }
        if let Some(cmd) = crate::iceberg_admin::parse(sql) {
            return crate::iceberg_admin::plan(&self.ctx, cmd?, self.is_admin());
        }
        // Hive external tables (hive/external.rs); a DROP TABLE of anything else goes on.
        if let Some(cmd) = crate::hive::external::parse(sql) {
            let admin = {
                let (policy, _) = self.guard.store().current();
                policy.is_admin(&self.guard.principal(&policy).roles)
            };
            if let Some(planned) = crate::hive::external::plan(&self.ctx, cmd?, admin).await? {
                return Ok(planned);
            }
        }
        let catalog = self.ctx.state().config().options().catalog.default_catalog.clone();
        let sql = &crate::iceberg_admin::rewrite(sql, &catalog)?;
        let mut stmts = pgcompat::parse_statements(sql)
            .map_err(|e| Error::new(StatusCode::SyntaxError, format!("syntax error: {e}")))?;
        let (written, stmt) = match stmts.len() {
            0 => return Ok(Planned::Empty),
            1 => stmts.remove(0),
            _ => {
                return Err(Error::new(
                    StatusCode::SyntaxError,
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        self.plan_parsed(written, stmt).await
    }

    /// Plans one parsed statement: `written` as the client wrote it, `stmt` after the
    /// compatibility rewrites.
    async fn plan_parsed(&self, written: SqlStatement, stmt: SqlStatement) -> Result<Planned> {
        if let Some(cmd) = session_command(&stmt) {
            return Ok(Planned::Command(cmd));
        }
        if let Some(planned) = self.plan_cursor_or_copy(&written, &stmt).await? {
            return Ok(planned);
        }
        let mut plan = match self.plan_statement(stmt.clone()).await {
            Err(e) if e.message.contains("Projections require unique expression names") => {
                self.plan_statement(pgcompat::unique_aliases(stmt.clone())).await?
            }
            other => other?,
        };
        plan = self.explain_under_policy(plan)?;
        if returns_rows(&plan) {
            plan = null_columns_as_text(plan)?;
        }
        // A catalog statement whose subqueries DataFusion cannot decorrelate fails only when
        // it is turned into a physical plan: find out now when there are no parameters, and
        // keep a fallback for execution when there are.
        let mut fallback = None;
        if pgcompat::touches_catalog(&stmt) {
            let has_params = plan.get_parameter_types().map(|p| !p.is_empty()).unwrap_or(false);
            if has_params {
                let alternative = self.plan_statement(pgcompat::null_correlated_subqueries(stmt.clone())).await;
                // The fallback must produce what the statement was described with.
                fallback = alternative.and_then(|alt| conform(alt, &plan)).ok().map(Box::new);
            } else if let Err(e) = self.ctx.state().create_physical_plan(&plan).await {
                if is_subquery_error(&e.to_string()) {
                    tracing::debug!(target: "rxgate_engine::sql", error = %e, "catalog statement re-planned without correlated subqueries");
                    plan = self.plan_statement(pgcompat::null_correlated_subqueries(stmt.clone())).await?;
                    if returns_rows(&plan) {
                        plan = null_columns_as_text(plan)?;
                    }
                }
            }
        }
        let renamed = returns_rows(&plan).then(|| renamed_schema(&written, plan.schema().inner())).flatten();
        let hints = pgcompat::placeholder_casts(&stmt);
        Ok(Planned::Plan(plan, renamed, hints, fallback))
    }

    /// `DECLARE … CURSOR FOR q`, `FETCH`, `CLOSE` and `COPY (q) TO STDOUT`; the inner query
    /// `q` is planned like any other statement.
    async fn plan_cursor_or_copy(&self, written: &SqlStatement, stmt: &SqlStatement) -> Result<Option<Planned>> {
        let inner = |s: &SqlStatement| -> Option<SqlStatement> {
            match s {
                SqlStatement::Declare { stmts } => stmts.first()?.for_query.clone().map(SqlStatement::Query),
                SqlStatement::Copy { source: CopySource::Query(q), .. } => Some(SqlStatement::Query(q.clone())),
                _ => None,
            }
        };
        let unsupported = |m: &str| Err(Error::new(StatusCode::Unsupported, m.to_string()));
        match stmt {
            SqlStatement::Declare { stmts } => {
                let [declare] = stmts.as_slice() else { return unsupported("DECLARE of several names") };
                let (Some(name), Some(_)) = (declare.names.first(), &declare.for_query) else {
                    return unsupported("only DECLARE … CURSOR FOR query is supported");
                };
                if declare.binary == Some(true) {
                    return unsupported("binary cursors are not supported");
                }
                if declare.scroll == Some(true) {
                    return unsupported("cursor can only scan forward: declare it NO SCROLL");
                }
                let (w, q) = (inner(written).expect("declare has a query"), inner(stmt).expect("declare has a query"));
                let query = Box::pin(self.plan_parsed(w, q)).await?;
                let name = name.value.clone();
                Ok(Some(Planned::Command(SessionCommand::Declare { name, query: Box::new(query), hold: declare.hold == Some(true) })))
            }
            SqlStatement::Fetch { name, direction, into: None, .. } => {
                let count = crate::cursor::fetch_count(direction)?;
                let schema = self.cursors.get(&name.value)?.schema();
                Ok(Some(Planned::Command(SessionCommand::Fetch { name: name.value.clone(), count, schema })))
            }
            SqlStatement::Close { cursor } => Ok(Some(Planned::Command(SessionCommand::Close(match cursor {
                CloseCursor::All => None,
                CloseCursor::Specific { name } => Some(name.value.clone()),
            })))),
            SqlStatement::Copy { source, to, target, options, legacy_options, .. } => {
                if !*to {
                    return unsupported("COPY FROM is not supported: rxgate is read-only");
                }
                if *target != CopyTarget::Stdout {
                    return Err(Error::new(
                        StatusCode::PermissionDenied,
                        "COPY to a file or program is not allowed; use COPY … TO STDOUT (psql \\copy)",
                    ));
                }
                let options = CopyOptions::parse(options, legacy_options)?;
                let (w, q) = match source {
                    CopySource::Query(_) => (inner(written).expect("copy query"), inner(stmt).expect("copy query")),
                    CopySource::Table { table_name, columns } => {
                        let cols = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                        };
                        let sql = format!("SELECT {cols} FROM {table_name}");
                        let mut parsed = pgcompat::parse_statements(&sql)
                            .map_err(|e| Error::new(StatusCode::SyntaxError, format!("syntax error: {e}")))?;
                        parsed.remove(0)
                    }
                };
                let query = Box::pin(self.plan_parsed(w, q)).await?;
                Ok(Some(Planned::Copy(Box::new(query), options)))
            }
            _ => Ok(None),
        }
    }

    /// `EXPLAIN` of a statement that reads a table through a mask or a row filter shows the
    /// optimized logical plan only, and `EXPLAIN ANALYZE` of one is refused (42501).
    ///
    /// A physical plan is planned over every row of the table: file pruning by min/max
    /// statistics (`EmptyExec` or a scan), row counts (`Rows=Inexact(n)`) and pruning metrics
    /// all come from rows and raw values the policy hides, so a binary search over them
    /// recovers hidden values. The logical plan depends on the statement and the policy only.
    fn explain_under_policy(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        if !matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) || !self.guard.applied().iter().any(Applied::hides) {
            return Ok(plan);
        }
        let LogicalPlan::Explain(explain) = plan else {
            return Err(Error::new(
                StatusCode::PermissionDenied,
                "permission denied: EXPLAIN ANALYZE is not available for statements that read tables \
                 through masks or row filters (its metrics count hidden rows); use EXPLAIN",
            ));
        };
        let optimized = self.ctx.state().optimize(&explain.plan)?;
        let text = optimized.display_indent().to_string();
        let names: Vec<String> = explain.schema.fields().iter().map(|f| f.name().clone()).collect();
        let [plan_type, plan_text] = names.as_slice() else {
            return Err(Error::internal("EXPLAIN has an unexpected schema"));
        };
        use datafusion::logical_expr::{col, lit, LogicalPlanBuilder};
        Ok(LogicalPlanBuilder::values(vec![vec![lit("logical_plan"), lit(text)]])?
            .project(vec![col("column1").alias(plan_type), col("column2").alias(plan_text)])?
            .build()?)
    }

    async fn plan_statement(&self, stmt: SqlStatement) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state.statement_to_plan(DfStatement::Statement(Box::new(stmt))).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(true)
            .verify_plan(&plan)
            .map_err(|e| Error::new(StatusCode::Unsupported, e.to_string()))?;
        crate::settings::verify_plan(&plan)?;
        Ok(plan)
    }

    /// Executes a planned statement, binding `params` to its placeholders. The result stream
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
        if let Planned::Audited(inner, info) = planned {
            let started = Instant::now();
            let mut record = info.record(&self.identity, &self.roles);
            return match Box::pin(self.execute_with(inner, params, token)).await {
                Ok(output) => Ok(self.audited_output(output, record, started)),
                Err(e) => {
                    record.finish(0, started, Some(&e));
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
            Planned::Audited(inner, _) => Box::pin(self.execute_with(inner, params, token)).await,
            Planned::Command(SessionCommand::Declare { name, query, hold }) => {
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
                match self.run_plan(plan, renamed.clone(), &CancelToken::new(), None).await? {
                    QueryOutput::Rows { stream, .. } => self.cursors.declare(name, stream, *hold)?,
                    _ => return Err(Error::new(StatusCode::Unsupported, "a cursor needs a query")),
                }
                Ok(QueryOutput::Command { tag: "DECLARE CURSOR".into() })
            }
            Planned::Command(SessionCommand::Fetch { name, count, .. }) => {
                let stream = guard(self.cursors.get(name)?.fetch(*count), timeout, token, None, &self.owner);
                Ok(QueryOutput::Fetched { schema: stream.schema(), stream })
            }
            Planned::Command(SessionCommand::Hive(cmd)) => crate::hive::execute(&self.ctx, cmd).await,
            Planned::Command(SessionCommand::Iceberg(cmd)) => crate::iceberg_admin::execute(&self.ctx, cmd).await,
            Planned::Command(cmd) => self.run_command(cmd),
            Planned::Copy(query, options) => match Box::pin(self.execute_with(query, params, token)).await? {
                QueryOutput::Rows { schema, stream } => Ok(QueryOutput::Copy { schema, stream, options: options.clone() }),
                _ => Err(Error::new(StatusCode::Unsupported, "COPY needs a query that returns rows")),
            },
            Planned::Plan(_, renamed, ..) => {
                let plan = self.bound_plan(planned, params).await?;
                self.run_plan(plan, renamed.clone(), token, timeout).await
            }
        }
    }

    /// The output with its audit record attached: written when its rows have been read (or
    /// abandoned), at once for outputs without rows.
    fn audited_output(&self, output: QueryOutput, record: AuditRecord, started: Instant) -> QueryOutput {
        let handle = |record| AuditHandle::new(record, self.audit.clone(), started, 1);
        match output {
            QueryOutput::Rows { schema, stream } => QueryOutput::Rows { schema, stream: handle(record).stream(stream) },
            QueryOutput::Fetched { schema, stream } => QueryOutput::Fetched { schema, stream: handle(record).stream(stream) },
            QueryOutput::Copy { schema, stream, options } => {
                QueryOutput::Copy { schema, stream: handle(record).stream(stream), options }
            }
            other => {
                let mut record = record;
                record.finish(0, started, None);
                self.audit.append(&record);
                other
            }
        }
    }

    /// Plans a statement for parallel reading: every output partition of its physical plan
    /// becomes its own stream (Flight SQL offers one endpoint per partition). A statement
    /// without a physical plan (SHOW, SET, …) has one partition holding its whole result.
    pub async fn execute_partitioned(
        &self,
        planned: &Planned,
        params: Option<ParamValues>,
        token: CancelToken,
    ) -> Result<PartitionedQuery> {
        let timeout = self.settings.statement_timeout();
        if let Planned::Audited(inner, info) = planned {
            if let Planned::Plan(p, renamed, ..) = inner.as_ref() {
                if returns_rows(p) {
                    let started = Instant::now();
                    let mut record = info.record(&self.identity, &self.roles);
                    let physical = async {
                        let plan = self.bound_plan(inner, params).await?;
                        let df = self.ctx.execute_logical_plan(plan).await?;
                        let task = Arc::new(df.task_ctx());
                        Ok::<_, Error>((df.create_physical_plan().await?, task))
                    }
                    .await;
                    let (physical, task) = match physical {
                        Ok(p) => p,
                        Err(e) => {
                            record.finish(0, started, Some(&e));
                            self.audit.append(&record);
                            return Err(e);
                        }
                    };
                    // How many partitions a plan has depends on how many files survive pruning
                    // by statistics over all rows: under a mask or a row filter every result
                    // has one endpoint (see `explain_under_policy`).
                    let physical = if info.hides { one_partition(physical) } else { physical };
                    let schema = renamed.clone().unwrap_or_else(|| physical.schema());
                    let parts = physical.properties().output_partitioning().partition_count();
                    let audit = Some(AuditHandle::new(record, self.audit.clone(), started, parts));
                    let source = PartitionSource::Plan { plan: physical, task, renamed: renamed.clone() };
                    return Ok(PartitionedQuery { schema, source, timeout, token, audit, owner: self.owner.clone() });
                }
            }
        }
        let (schema, stream) = match self.execute_with(planned, params, &token).await? {
            QueryOutput::Rows { schema, stream } => (schema, stream),
            _ => {
                let schema: SchemaRef = Arc::new(Schema::empty());
                let stream: SendableRecordBatchStream = Box::pin(MemoryStream::try_new(vec![], schema.clone(), None)?);
                (schema, stream)
            }
        };
        let source = PartitionSource::Once(Mutex::new(Some(stream)));
        Ok(PartitionedQuery { schema, source, timeout, token, audit: None, owner: self.owner.clone() })
    }

    /// The logical plan a `Planned::Plan` runs with `params` bound: the statement as written,
    /// or its fallback when DataFusion cannot decorrelate a catalog statement's subqueries.
    async fn bound_plan(&self, planned: &Planned, params: Option<ParamValues>) -> Result<LogicalPlan> {
        let Planned::Plan(plan, _, _, fallback) = planned.unwrapped() else {
            return Err(Error::new(StatusCode::Internal, "statement has no plan"));
        };
        let bind = |plan: &LogicalPlan| -> Result<LogicalPlan> {
            Ok(match &params {
                Some(p) => plan.clone().with_param_values(p.clone())?,
                None => plan.clone(),
            })
        };
        let bound = bind(plan)?;
        if let Some(fallback) = fallback {
            if let Err(e) = self.ctx.state().create_physical_plan(&bound).await {
                if is_subquery_error(&e.to_string()) {
                    return bind(fallback);
                }
            }
        }
        Ok(bound)
    }

    async fn run_plan(
        &self,
        plan: LogicalPlan,
        renamed: Option<SchemaRef>,
        token: &CancelToken,
        timeout: Option<std::time::Duration>,
    ) -> Result<QueryOutput> {
        match &plan {
            LogicalPlan::Statement(PlanStatement::TransactionStart(_)) => return Ok(QueryOutput::TransactionStart),
            LogicalPlan::Statement(PlanStatement::TransactionEnd(end)) => {
                return Ok(QueryOutput::TransactionEnd { commit: end.conclusion == TransactionConclusion::Commit })
            }
            _ => {}
        }
        let rows = returns_rows(&plan);
        let df = self.ctx.execute_logical_plan(plan).await?;
        if !rows {
            df.collect().await?;
            return Ok(QueryOutput::Command { tag: "SET".into() });
        }
        let stream = df.execute_stream().await?;
        let stream = guard(stream, timeout, token, renamed, &self.owner);
        Ok(QueryOutput::Rows { schema: stream.schema(), stream })
    }

    /// Plans and executes one statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        let planned = self.plan(sql).await?;
        self.execute(&planned, None).await
    }

    fn run_command(&self, cmd: &SessionCommand) -> Result<QueryOutput> {
        let tag = |t: &str| Ok(QueryOutput::Command { tag: t.to_string() });
        match cmd {
            SessionCommand::Set { name, value } => {
                let (name, value) = match value {
                    Some(v) => self.settings.set(name, v)?,
                    None => self.settings.reset(name)?,
                };
                self.changed(&name, &value);
                tag("SET")
            }
            SessionCommand::Reset(Some(name)) => {
                let (name, value) = self.settings.reset(name)?;
                if let Some(key) = crate::settings::datafusion_key(&name) {
                    // An allowed option (settings.reset checked): back to DataFusion's default,
                    // which is the server's for every allowed option.
                    crate::settings::reset_datafusion_option(self.ctx.state_ref().write().config_mut().options_mut(), &key)?;
                    return tag("RESET");
                }
                self.changed(&name, &value);
                tag("RESET")
            }
            SessionCommand::Reset(None) => {
                self.reset_all();
                tag("RESET")
            }
            SessionCommand::Discard(what) => {
                if what == "ALL" {
                    self.reset_all();
                }
                tag(&format!("DISCARD {what}"))
            }
            SessionCommand::Show(name) => {
                let schema = show_schema(name.as_deref());
                let batch = match name {
                    None => {
                        // PostgreSQL's parameters, then DataFusion's options with their values
                        // (those a session may not change too: they are the server's).
                        let mut all: Vec<(String, Option<String>, String)> =
                            self.settings.all().into_iter().map(|(n, v, _, d)| (n, Some(v), d)).collect();
                        let state = self.ctx.state();
                        all.extend(crate::settings::datafusion_rows(state.config_options(), state.runtime_env()));
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.0.as_str()))),
                                Arc::new(StringArray::from_iter(all.iter().map(|a| a.1.as_deref()))),
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.2.as_str()))),
                            ],
                        )
                    }
                    Some(n) => {
                        let value = self.settings.get(n).ok_or_else(|| {
                            Error::new(StatusCode::InvalidArgument, format!("unrecognized configuration parameter \"{n}\""))
                        })?;
                        RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![value]))])
                    }
                }
                .map_err(|e| Error::new(StatusCode::Internal, e.to_string()))?;
                let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
                Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
            }
            SessionCommand::Accept(t) => tag(t),
            SessionCommand::Begin => {
                self.in_transaction.store(true, Ordering::Release);
                Ok(QueryOutput::TransactionStart)
            }
            SessionCommand::End(commit) => {
                self.in_transaction.store(false, Ordering::Release);
                self.cursors.end_transaction();
                Ok(QueryOutput::TransactionEnd { commit: *commit })
            }
            SessionCommand::Close(name) => {
                self.cursors.close(name.as_deref())?;
                tag(if name.is_some() { "CLOSE CURSOR" } else { "CLOSE CURSOR ALL" })
            }
            SessionCommand::Admin(cmd) => {
                let batch = self.admin(cmd)?;
                let schema = batch.schema();
                let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
                Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
            }
            SessionCommand::Declare { .. }
            | SessionCommand::Fetch { .. }
            | SessionCommand::Hive(_)
            | SessionCommand::Iceberg(_) => {
                Err(Error::new(StatusCode::Internal, "cursor or Hive command outside execute"))
            }
        }
    }

    /// Whether the session's principal has an administrator role under the policy in force.
    fn is_admin(&self) -> bool {
        let (policy, _) = self.guard.store().current();
        policy.is_admin(&self.guard.principal(&policy).roles)
    }

    /// Answers a policy admin statement; other users' grants and the whole policy are for
    /// administrators only.
    fn admin(&self, cmd: &AdminCommand) -> Result<RecordBatch> {
        let store = self.guard.store();
        let (policy, _) = store.current();
        let me = self.guard.principal(&policy);
        let is_admin = policy.is_admin(&me.roles);
        let denied = |what: &str| Error::new(StatusCode::PermissionDenied, format!("permission denied: {what} is for administrators"));
        match cmd {
            AdminCommand::ShowGrants(None) => crate::admin::grants(&policy, &me.roles, cmd),
            AdminCommand::ShowGrants(Some(name)) if name == &me.user => crate::admin::grants(&policy, &me.roles, cmd),
            AdminCommand::ShowGrants(Some(_)) if !is_admin => Err(denied("SHOW GRANTS FOR another user")),
            AdminCommand::ShowGrants(Some(name)) => {
                let roles =
                    if policy.roles().contains_key(name) { vec![name.clone()] } else { policy.roles_of(name, &[]) };
                crate::admin::grants(&policy, &roles, cmd)
            }
            AdminCommand::ShowPolicies if !is_admin => Err(denied("SHOW POLICIES")),
            AdminCommand::ShowPolicies => crate::admin::policies(&policy, &store.status(), cmd),
        }
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

    fn reset_all(&self) {
        let before = self.settings.all();
        self.settings.reset_all();
        for (name, value, ..) in self.settings.all() {
            if !before.iter().any(|b| b.0 == name && b.1 == value) {
                self.changed(&name, &value);
            }
        }
        self.apply_search_path();
    }

    /// Records a parameter change: report it to the client if PostgreSQL would, and apply
    /// the ones the engine interprets.
    fn changed(&self, name: &str, value: &str) {
        if REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            self.reported.lock().expect("reported lock").push((name.to_string(), value.to_string()));
        }
        if name.eq_ignore_ascii_case("search_path") {
            self.apply_search_path();
        }
    }

    /// Unqualified names resolve in the first schema of the search path that exists.
    fn apply_search_path(&self) {
        let path = self.settings.search_path();
        let catalog = self.ctx.state().config().options().catalog.default_catalog.clone();
        let existing = self.ctx.catalog(&catalog).map(|c| c.schema_names()).unwrap_or_default();
        let schema = path.iter().find(|s| existing.contains(s)).or(path.first()).cloned();
        if let Some(schema) = schema {
            self.ctx.state_ref().write().config_mut().options_mut().catalog.default_schema = schema;
        }
    }
}

/// A token as SQL text again. sqlparser displays quoted literals and identifiers with their
/// unescaped value (`'it's'`), so quotes inside them are doubled (escaped) here.
fn token_text(t: &Token) -> String {
    match t {
        Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
        Token::EscapedStringLiteral(s) => format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Token::Word(w) if w.quote_style == Some('"') => format!("\"{}\"", w.value.replace('"', "\"\"")),
        other => other.to_string(),
    }
}

/// `plan` with the output columns (names and types) of `like`, by casting column by column.
fn conform(plan: LogicalPlan, like: &LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::{cast, Expr, LogicalPlanBuilder};
    let (have, want) = (plan.schema().clone(), like.schema().clone());
    if have.fields().len() != want.fields().len() {
        return Err(Error::new(StatusCode::PlanError, "fallback plan has a different shape"));
    }
    let exprs: Vec<Expr> = have
        .iter()
        .zip(want.iter())
        .map(|((q, f), (wq, wf))| {
            let c = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            let c = if f.data_type() == wf.data_type() { c } else { cast(c, wf.data_type().clone()) };
            c.alias_qualified(wq.cloned(), wf.name())
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// PostgreSQL resolves an untyped NULL in a select list as text; DataFusion leaves it of type
/// Null, which drivers cannot decode (asyncpg would introspect the `unknown` type).
fn null_columns_as_text(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::{cast, Expr, LogicalPlanBuilder};
    if !plan.schema().fields().iter().any(|f| f.data_type() == &DataType::Null) {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            if f.data_type() == &DataType::Null {
                cast(c, DataType::Utf8).alias_qualified(q.cloned(), f.name())
            } else {
                c
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

fn is_subquery_error(message: &str) -> bool {
    message.contains("Subquery") || message.contains("subquery")
}

/// The client-visible schema when PostgreSQL's column names differ from the plan's.
fn renamed_schema(stmt: &SqlStatement, schema: &SchemaRef) -> Option<SchemaRef> {
    let fields: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let names = pgcompat::output_names(stmt, &fields)?;
    let renamed: Vec<Field> =
        schema.fields().iter().zip(names).map(|(f, n)| f.as_ref().clone().with_name(n)).collect();
    Some(Arc::new(Schema::new_with_metadata(renamed, schema.metadata().clone())))
}

/// Text of a `SET` value: `'x'` → x, `x` → x, `1` → 1; `DEFAULT` → `None`.
fn value_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(s), .. }) => Some(s.clone()),
        Expr::Value(ValueWithSpan { value: Value::Number(n, _), .. }) => Some(n.to_string()),
        Expr::Value(ValueWithSpan { value: Value::Boolean(b), .. }) => Some(if *b { "on" } else { "off" }.into()),
        Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") => None,
        Expr::Identifier(i) => Some(i.value.clone()),
        other => Some(other.to_string()),
    }
}

/// A dotted name as DataFusion reads it: the identifiers' values joined with `.` (so a quoted
/// `"datafusion.runtime.memory_limit"` is the same option as the unquoted one).
fn name_text(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0.iter().map(|p| p.as_ident().map(|i| i.value.clone()).unwrap_or_default()).collect::<Vec<_>>().join(".")
}

/// An identifier as PostgreSQL folds it: unquoted names are lower-cased.
fn pg_ident(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if i.quote_style.is_none() { i.value.to_lowercase() } else { i.value.clone() }
}

/// The session command a statement is, if it is one. `SHOW datafusion.…` and `SET
/// datafusion.…` of an option sessions may change (`settings::DATAFUSION_SETTABLE`) go to
/// DataFusion; a `SET` of any other `datafusion.…` option, `SET ROLE` and `SET SESSION
/// AUTHORIZATION` become [`SessionCommand::Set`]s that `SessionSettings::set` checks (42501).
fn session_command(stmt: &SqlStatement) -> Option<SessionCommand> {
    let set = |name: &str, value: Option<String>| Some(SessionCommand::Set { name: name.to_string(), value });
    match stmt {
        SqlStatement::Set(Set::SingleAssignment { variable, values, .. }) => {
            // The name as DataFusion reads it: the identifiers' values joined, lower-case
            // (`"datafusion.runtime.memory_limit"` quoted is the same option).
            if let Some(key) = crate::settings::datafusion_key(&name_text(variable)) {
                if crate::settings::check_datafusion_settable(&key).is_ok() {
                    return None;
                }
                let value = values.first().and_then(value_text);
                return set(&key, Some(value.unwrap_or_default()));
            }
            let name = variable.to_string();
            let texts: Vec<Option<String>> = values.iter().map(value_text).collect();
            let value = if texts.iter().any(Option::is_none) {
                None
            } else {
                Some(texts.into_iter().flatten().collect::<Vec<_>>().join(", "))
            };
            set(&name, value)
        }
        SqlStatement::Set(Set::SetTimeZone { value, .. }) => set("TimeZone", value_text(value)),
        SqlStatement::Set(Set::SetNames { charset_name, .. }) => set("client_encoding", Some(charset_name.value.clone())),
        SqlStatement::Set(Set::SetNamesDefault {}) => set("client_encoding", None),
        SqlStatement::Set(Set::SetTransaction { .. }) => Some(SessionCommand::Accept("SET".into())),
        // Only the session's own identity is accepted (checked by `SessionSettings::set`).
        SqlStatement::Set(Set::SetRole { role_name, .. }) => {
            set("role", Some(role_name.as_ref().map(pg_ident).unwrap_or_else(|| "none".into())))
        }
        SqlStatement::Set(Set::SetSessionAuthorization(param)) => match &param.kind {
            datafusion::sql::sqlparser::ast::SetSessionAuthorizationParamKind::Default => set("session_authorization", None),
            datafusion::sql::sqlparser::ast::SetSessionAuthorizationParamKind::User(user) => {
                set("session_authorization", Some(pg_ident(user)))
            }
        },
        SqlStatement::ShowVariable { variable } => {
            let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
            // `SHOW datafusion.x.y` arrives as the identifiers `datafusion`, `x`, `y`.
            let dotted = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(".");
            if crate::settings::datafusion_key(&dotted).is_some() || crate::settings::datafusion_key(&name).is_some() {
                return None;
            }
            if name.eq_ignore_ascii_case("all") {
                return Some(SessionCommand::Show(None));
            }
            Some(SessionCommand::Show(Some(crate::settings::display_name(&crate::settings::canonical(&name)))))
        }
        SqlStatement::Reset(ResetStatement { reset }) => match reset {
            // RESET of a DataFusion option goes through the same allowlist as SET.
            Reset::ConfigurationParameter(name) if crate::settings::datafusion_key(&name_text(name)).is_some() => {
                Some(SessionCommand::Reset(crate::settings::datafusion_key(&name_text(name))))
            }
            Reset::ALL => Some(SessionCommand::Reset(None)),
            Reset::ConfigurationParameter(name) => Some(SessionCommand::Reset(Some(name.to_string()))),
        },
        SqlStatement::Discard { object_type } => Some(SessionCommand::Discard(
            match object_type {
                DiscardObject::ALL => "ALL",
                DiscardObject::PLANS => "PLANS",
                DiscardObject::SEQUENCES => "SEQUENCES",
                DiscardObject::TEMP => "TEMP",
            }
            .to_string(),
        )),
        // `DEALLOCATE ALL` (psycopg sends it after DISCARD ALL or ROLLBACK once it has
        // prepared statements): protocol-level statements are the frontend's and closed by
        // the client; DataFusion would look for a statement named "all".
        SqlStatement::Deallocate { name, .. } if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") => {
            Some(SessionCommand::Accept("DEALLOCATE ALL".into()))
        }
        SqlStatement::Savepoint { .. } => Some(SessionCommand::Accept("SAVEPOINT".into())),
        SqlStatement::ReleaseSavepoint { .. } => Some(SessionCommand::Accept("RELEASE".into())),
        SqlStatement::Rollback { savepoint: Some(_), .. } => Some(SessionCommand::Accept("ROLLBACK".into())),
        SqlStatement::StartTransaction { .. } => Some(SessionCommand::Begin),
        SqlStatement::Commit { .. } => Some(SessionCommand::End(true)),
        SqlStatement::Rollback { savepoint: None, .. } => Some(SessionCommand::End(false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_quotes_inside_literals_and_identifiers() {
        let parts = split_statements("SELECT 'it''s'; SELECT \"a\"\"b\" FROM t;; SELECT E'x\\'y'").unwrap();
        assert_eq!(parts, vec!["SELECT 'it''s'", "SELECT \"a\"\"b\" FROM t", "SELECT E'x\\'y'"]);
    }
}

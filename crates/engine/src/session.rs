//! One client session: its DataFusion context, its identity, its parameters, and the single
//! path from SQL text to a plan ([`EngineSession::plan`]) and from a plan to record batches
//! ([`EngineSession::execute`]).

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement, TransactionConclusion};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr, Reset, ResetStatement, Set, Statement as SqlStatement, Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;
use rxgate_common::{Error, Identity, Result, StatusCode};

use crate::deadline::DeadlineStream;
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
}

/// One statement, planned and ready to execute (possibly several times with parameters).
#[derive(Debug, Clone)]
pub enum Planned {
    /// A DataFusion plan (queries, EXPLAIN, transactions), with the output schema the client
    /// sees when its column names differ from the plan's (PostgreSQL names `count(*)`
    /// "count", an unnamed expression "?column?").
    Plan(LogicalPlan, Option<SchemaRef>, Vec<Option<DataType>>, Option<Box<LogicalPlan>>),
    /// A session command.
    Command(SessionCommand),
    /// Nothing to do.
    Empty,
}

impl Planned {
    /// Result schema of this statement, if it returns rows.
    pub fn schema(&self) -> Option<SchemaRef> {
        match self {
            Planned::Plan(_, Some(s), ..) => Some(s.clone()),
            Planned::Plan(p, None, ..) if returns_rows(p) => Some(p.schema().inner().clone()),
            Planned::Command(SessionCommand::Show(name)) => Some(show_schema(name.as_deref())),
            _ => None,
        }
    }

    /// Types of `$1..$n` in order: as the plan infers them, else as the statement casts them
    /// (`$1::int`), else unknown.
    pub fn parameter_types(&self) -> Vec<Option<DataType>> {
        let Planned::Plan(plan, _, hints, _) = self else { return vec![] };
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
        match self {
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

/// A client session. Cheap to keep; not shared between clients.
pub struct EngineSession {
    ctx: SessionContext,
    identity: Identity,
    settings: Arc<SessionSettings>,
    reported: Mutex<Vec<(String, String)>>,
}

impl EngineSession {
    pub(crate) fn new(ctx: SessionContext, identity: Identity, settings: Arc<SessionSettings>) -> Self {
        Self { ctx, identity, settings, reported: Mutex::new(vec![]) }
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
                    cur.push_str(&t.to_string());
                }
            }
        }
        if meaningful {
            out.push(cur.trim().to_string());
        }
        Ok(out)
    }

    /// **The entry point**: plans one SQL statement for this session. Every frontend gets its
    /// plans here and nowhere else.
    pub async fn plan(&self, sql: &str) -> Result<Planned> {
        // `RUST_LOG=rxgate_engine::sql=debug` records what clients send (see tests/fixtures).
        tracing::debug!(target: "rxgate_engine::sql", user = %self.identity.user, sql = %sql, "plan");
        let planned = self.plan_inner(sql).await;
        if let Err(e) = &planned {
            tracing::debug!(target: "rxgate_engine::sql", error = %e.message, "plan failed");
        }
        planned
    }

    async fn plan_inner(&self, sql: &str) -> Result<Planned> {
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
        if let Some(cmd) = session_command(&stmt) {
            return Ok(Planned::Command(cmd));
        }
        let mut plan = match self.plan_statement(stmt.clone()).await {
            Err(e) if e.message.contains("Projections require unique expression names") => {
                self.plan_statement(pgcompat::unique_aliases(stmt.clone())).await?
            }
            other => other?,
        };
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

    async fn plan_statement(&self, stmt: SqlStatement) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state.statement_to_plan(DfStatement::Statement(Box::new(stmt))).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(true)
            .verify_plan(&plan)
            .map_err(|e| Error::new(StatusCode::Unsupported, e.to_string()))?;
        Ok(plan)
    }

    /// Executes a planned statement, binding `params` to its placeholders.
    pub async fn execute(&self, planned: &Planned, params: Option<ParamValues>) -> Result<QueryOutput> {
        match planned {
            Planned::Empty => Ok(QueryOutput::Empty),
            Planned::Command(cmd) => self.run_command(cmd),
            Planned::Plan(plan, renamed, _, fallback) => {
                let bind = |plan: &LogicalPlan| -> Result<LogicalPlan> {
                    Ok(match &params {
                        Some(p) => plan.clone().with_param_values(p.clone())?,
                        None => plan.clone(),
                    })
                };
                let plan = bind(plan)?;
                if let Some(fallback) = fallback {
                    // Try the catalog statement as written; fall back when DataFusion
                    // cannot decorrelate its subqueries.
                    if let Err(e) = self.ctx.state().create_physical_plan(&plan).await {
                        if is_subquery_error(&e.to_string()) {
                            return self.run_plan(bind(fallback)?, renamed.clone()).await;
                        }
                    }
                }
                self.run_plan(plan, renamed.clone()).await
            }
        }
    }

    async fn run_plan(&self, plan: LogicalPlan, renamed: Option<SchemaRef>) -> Result<QueryOutput> {
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
        let stream: SendableRecordBatchStream = match self.settings.statement_timeout() {
            Some(t) => Box::pin(DeadlineStream::new(stream, t)),
            None => stream,
        };
        let (schema, stream) = match renamed {
            Some(schema) => {
                let s = schema.clone();
                let renamed = stream.map(move |b| {
                    let b = b?;
                    Ok(RecordBatch::try_new(s.clone(), b.columns().to_vec())?)
                });
                let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(schema.clone(), renamed));
                (schema, stream)
            }
            None => (stream.schema(), stream),
        };
        Ok(QueryOutput::Rows { schema, stream })
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
                        let all = self.settings.all();
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.0.as_str()))),
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.1.as_str()))),
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.3.as_str()))),
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
            SessionCommand::Begin => Ok(QueryOutput::TransactionStart),
            SessionCommand::End(commit) => Ok(QueryOutput::TransactionEnd { commit: *commit }),
        }
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

/// The session command a statement is, if it is one (DataFusion's own `SET datafusion.…`
/// and `SHOW datafusion.…` go to DataFusion).
fn session_command(stmt: &SqlStatement) -> Option<SessionCommand> {
    let set = |name: &str, value: Option<String>| Some(SessionCommand::Set { name: name.to_string(), value });
    match stmt {
        SqlStatement::Set(Set::SingleAssignment { variable, values, .. }) => {
            let name = variable.to_string();
            if name.to_ascii_lowercase().starts_with("datafusion.") {
                return None;
            }
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
        SqlStatement::Set(Set::SetTransaction { .. } | Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => {
            Some(SessionCommand::Accept("SET".into()))
        }
        SqlStatement::ShowVariable { variable } => {
            let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
            if name.to_ascii_lowercase().starts_with("datafusion.") {
                return None;
            }
            if name.eq_ignore_ascii_case("all") {
                return Some(SessionCommand::Show(None));
            }
            Some(SessionCommand::Show(Some(crate::settings::display_name(&crate::settings::canonical(&name)))))
        }
        SqlStatement::Reset(ResetStatement { reset }) => match reset {
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
        SqlStatement::Savepoint { .. } => Some(SessionCommand::Accept("SAVEPOINT".into())),
        SqlStatement::ReleaseSavepoint { .. } => Some(SessionCommand::Accept("RELEASE".into())),
        SqlStatement::Rollback { savepoint: Some(_), .. } => Some(SessionCommand::Accept("ROLLBACK".into())),
        SqlStatement::StartTransaction { .. } => Some(SessionCommand::Begin),
        SqlStatement::Commit { .. } => Some(SessionCommand::End(true)),
        SqlStatement::Rollback { savepoint: None, .. } => Some(SessionCommand::End(false)),
        _ => None,
    }
}

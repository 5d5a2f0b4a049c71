//! One client session: its DataFusion context, its identity, and the single path from SQL text
//! to a plan ([`EngineSession::plan`]) and from a plan to record batches
//! ([`EngineSession::execute`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement, TransactionConclusion};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::ast::{Set, Statement as SqlStatement};
use datafusion::execution::context::SQLOptions;
use rxgate_common::{Error, Identity, Result, StatusCode};

use crate::deadline::DeadlineStream;

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

/// One statement, planned and ready to execute (possibly several times with parameters).
#[derive(Debug, Clone)]
pub enum Planned {
    /// A DataFusion plan (queries, EXPLAIN, SHOW of DataFusion settings).
    Plan(LogicalPlan),
    /// `SET name = value` of a client parameter the engine stores but does not interpret.
    SetParameter {
        /// Parameter name, lower-case.
        name: String,
        /// Raw value text.
        value: String,
    },
    /// Nothing to do.
    Empty,
}

impl Planned {
    /// Result schema of this statement, if it returns rows.
    pub fn schema(&self) -> Option<SchemaRef> {
        match self {
            Planned::Plan(p) if returns_rows(p) => Some(p.schema().inner().clone()),
            _ => None,
        }
    }
}

fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(plan, LogicalPlan::Statement(_) | LogicalPlan::Ddl(_) | LogicalPlan::Dml(_))
}

/// A client session. Cheap to keep; not shared between clients.
pub struct EngineSession {
    ctx: SessionContext,
    identity: Identity,
    timeout: Option<Duration>,
    parameters: Mutex<HashMap<String, String>>,
}

impl EngineSession {
    pub(crate) fn new(ctx: SessionContext, identity: Identity, timeout: Option<Duration>) -> Self {
        Self { ctx, identity, timeout, parameters: Mutex::new(HashMap::new()) }
    }

    /// Who this session belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Client parameters set with `SET` that the engine does not interpret.
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.parameters.lock().expect("parameters lock").get(&name.to_ascii_lowercase()).cloned()
    }

    /// Splits SQL text into its statements (PostgreSQL dialect) without planning them.
    pub fn split(&self, sql: &str) -> Result<Vec<String>> {
        let stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})?;
        Ok(stmts.into_iter().map(|s| s.to_string()).collect())
    }

    /// **The entry point**: plans one SQL statement for this session. Every frontend gets its
    /// plans here and nowhere else.
    pub async fn plan(&self, sql: &str) -> Result<Planned> {
        let mut stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})?;
        let stmt = match (stmts.pop_front(), stmts.is_empty()) {
            (None, _) => return Ok(Planned::Empty),
            (Some(s), true) => s,
            (Some(_), false) => {
                return Err(Error::new(
                    StatusCode::SyntaxError,
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        if let DfStatement::Statement(inner) = &stmt {
            if let SqlStatement::Set(Set::SingleAssignment { variable, values, .. }) = inner.as_ref() {
                let name = variable.to_string().to_ascii_lowercase();
                if !name.starts_with("datafusion.") {
                    let value = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
                    return Ok(Planned::SetParameter { name, value });
                }
            }
        }
        let state = self.ctx.state();
        let plan = state.statement_to_plan(stmt).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(true)
            .verify_plan(&plan)
            .map_err(|e| Error::new(StatusCode::Unsupported, e.to_string()))?;
        Ok(Planned::Plan(plan))
    }

    /// Executes a planned statement, binding `params` to its placeholders.
    pub async fn execute(&self, planned: &Planned, params: Option<ParamValues>) -> Result<QueryOutput> {
        let plan = match planned {
            Planned::Empty => return Ok(QueryOutput::Empty),
            Planned::SetParameter { name, value } => {
                self.parameters.lock().expect("parameters lock").insert(name.clone(), value.clone());
                return Ok(QueryOutput::Command { tag: "SET".into() });
            }
            Planned::Plan(plan) => plan.clone(),
        };
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
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
        let schema = df.schema().inner().clone();
        let stream = df.execute_stream().await?;
        let stream: SendableRecordBatchStream = match self.timeout {
            Some(t) => Box::pin(DeadlineStream::new(stream, t)),
            None => stream,
        };
        Ok(QueryOutput::Rows { schema, stream })
    }

    /// Plans and executes one statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        let planned = self.plan(sql).await?;
        self.execute(&planned, None).await
    }
}

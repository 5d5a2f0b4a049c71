//! Statements DataFusion plans: planning under the session's `SQLOptions` and settings,
//! PostgreSQL's output names, the catalog-statement fallback, EXPLAIN under the policy, and
//! running a plan.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement, TransactionConclusion};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use rxgate_common::{Error, Result, StatusCode};
use std::sync::Arc;

use super::stream::guard;
use super::EngineSession;
use crate::deadline::CancelToken;
use crate::pgcompat;
use crate::planned::{returns_rows, Planned, QueryOutput};
use crate::secure::Applied;
use crate::statement::SqlText;

impl EngineSession {
    /// Plans a statement DataFusion plans: the rewritten text is planned, the written one
    /// names the output columns as PostgreSQL would.
    pub(super) async fn plan_sql(&self, sql: &SqlText) -> Result<Planned> {
        let (written, stmt) = (&sql.written, &sql.rewritten);
        let mut plan = match self.df_plan(stmt.clone()).await {
            // DataFusion reports duplicate output names as a bare `Plan(String)`: no variant or
            // field says so, so its text is the only signal.
            Err(e) if e.message.contains("Projections require unique expression names") => {
                self.df_plan(pgcompat::unique_aliases(stmt.clone())).await?
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
        if pgcompat::touches_catalog(stmt) {
            let has_params = plan.get_parameter_types().map(|p| !p.is_empty()).unwrap_or(false);
            if has_params {
                let alternative = self.df_plan(pgcompat::null_correlated_subqueries(stmt.clone())).await;
                // The fallback must produce what the statement was described with.
                fallback = alternative.and_then(|alt| conform(alt, &plan)).ok().map(Box::new);
            } else if let Err(e) = self.ctx.state().create_physical_plan(&plan).await {
                if has_subqueries(&plan) {
                    tracing::debug!(target: "rxgate_engine::sql", error = %e, "catalog statement re-planned without correlated subqueries");
                    plan = self.df_plan(pgcompat::null_correlated_subqueries(stmt.clone())).await?;
                    if returns_rows(&plan) {
                        plan = null_columns_as_text(plan)?;
                    }
                }
            }
        }
        let renamed = returns_rows(&plan).then(|| renamed_schema(written, plan.schema().inner())).flatten();
        let hints = pgcompat::placeholder_casts(stmt);
        Ok(Planned::Plan(plan, renamed, hints, fallback))
    }

    /// `EXPLAIN` of a statement that reads a table through a mask or a row filter shows the
    /// optimized logical plan only, and `EXPLAIN ANALYZE` of one is refused (42501).
    ///
    /// A physical plan is planned over every row of the table: file pruning by min/max
    /// statistics (`EmptyExec` or a scan), row counts (`Rows=Inexact(n)`) and pruning metrics
    /// all come from rows and raw values the policy hides, so a binary search over them
    /// recovers hidden values. The logical plan depends on the statement and the policy only.
    fn explain_under_policy(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        if !matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
            || !self.guard.applied().iter().any(Applied::hides)
        {
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

    async fn df_plan(&self, stmt: SqlStatement) -> Result<LogicalPlan> {
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

    /// or its fallback when DataFusion cannot decorrelate a catalog statement's subqueries.
    pub(super) async fn bound_plan(&self, planned: &Planned, params: Option<ParamValues>) -> Result<LogicalPlan> {
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
            if self.ctx.state().create_physical_plan(&bound).await.is_err() && has_subqueries(&bound) {
                return bind(fallback);
            }
        }
        Ok(bound)
    }

    pub(super) async fn run_plan(
        &self,
        plan: LogicalPlan,
        renamed: Option<SchemaRef>,
        token: &CancelToken,
        timeout: Option<std::time::Duration>,
        running: Option<&crate::activity::Running>,
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
        // The physical plan is kept with the statement's registration: its metrics give the
        // bytes scanned and the slow-query log.
        let task = std::sync::Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await?;
        if let Some(running) = running {
            running.set_plan(physical.clone());
        }
        let schema = physical.schema();
        let stream =
            crate::executor::offload(schema, move || datafusion::physical_plan::execute_stream(physical, task));
        let stream = guard(stream, timeout, token, renamed, &self.owner);
        Ok(QueryOutput::Rows { schema: stream.schema(), stream })
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

/// Whether a plan has subquery expressions (`(SELECT …)`, `EXISTS`, `IN (SELECT …)`): a catalog
/// statement with them that fails to plan physically is one DataFusion could not
/// decorrelate, decided by the plan's shape rather than by the error's text.
fn has_subqueries(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Expr;
    plan.exists(|node| {
        Ok(node.expressions().iter().any(|e| {
            e.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_))))
                .unwrap_or(false)
        }))
    })
    .unwrap_or(false)
}

/// The client-visible schema when PostgreSQL's column names differ from the plan's.
fn renamed_schema(stmt: &SqlStatement, schema: &SchemaRef) -> Option<SchemaRef> {
    let fields: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let names = pgcompat::output_names(stmt, &fields)?;
    let renamed: Vec<Field> = schema.fields().iter().zip(names).map(|(f, n)| f.as_ref().clone().with_name(n)).collect();
    Some(Arc::new(Schema::new_with_metadata(renamed, schema.metadata().clone())))
}

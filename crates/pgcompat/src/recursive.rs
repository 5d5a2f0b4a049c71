//! DataFusion 53's projection pushdown (`optimize_projections`) breaks recursive CTEs whose
//! outer query reads fewer columns than the CTE has: it prunes the work table's columns, but
//! the recursive term still reads the work table by the old column indices, and execution
//! fails with "Schema error: project index 1 out of bounds" (`WITH RECURSIVE t(n, s) AS
//! (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM t WHERE n < 5) SELECT s FROM t`).
//! [`install`] puts the rule behind a guard, in its place: a plan with a recursive query is
//! left as it is (no column pruning; same result), every other plan is optimised as before.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;

/// The name of DataFusion's projection pushdown rule.
const PROJECTIONS: &str = "optimize_projections";

#[derive(Debug)]
struct SkipRecursive(Arc<dyn OptimizerRule + Send + Sync>);

fn has_recursive_query(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found = matches!(node, LogicalPlan::RecursiveQuery(_));
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

impl OptimizerRule for SkipRecursive {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.0.apply_order()
    }

    #[allow(deprecated)]
    fn supports_rewrite(&self) -> bool {
        self.0.supports_rewrite()
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        if has_recursive_query(&plan) {
            return Ok(Transformed::no(plan));
        }
        self.0.rewrite(plan, config)
    }
}

/// Replaces the session's projection pushdown rule by the guarded one, keeping the order of
/// the rules.
pub fn install(ctx: &SessionContext) {
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = ctx.state().optimizers().to_vec();
    if !rules.iter().any(|r| r.name() == PROJECTIONS) {
        return;
    }
    for r in &rules {
        ctx.remove_optimizer_rule(r.name());
    }
    for r in rules {
        let r: Arc<dyn OptimizerRule + Send + Sync> =
            if r.name() == PROJECTIONS { Arc::new(SkipRecursive(r)) } else { r };
        ctx.add_optimizer_rule(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recursive_cte_reading_fewer_columns_runs() {
        let ctx = SessionContext::new();
        install(&ctx);
        let names: Vec<String> = ctx.state().optimizers().iter().map(|r| r.name().to_string()).collect();
        assert!(names.iter().any(|n| n == PROJECTIONS));
        let sql = "WITH RECURSIVE t(n, s) AS (SELECT 1 AS n, 'x' AS s UNION ALL \
                   SELECT n + 1, concat(s, s) FROM t WHERE n < 5) SELECT s FROM t";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        let count = ctx.sql(
            "WITH RECURSIVE t(n, s) AS (SELECT 1 AS n, 'x' AS s UNION ALL \
                             SELECT n + 1, s FROM t WHERE n < 5) SELECT count(*) FROM t",
        );
        assert_eq!(count.await.unwrap().collect().await.unwrap()[0].num_rows(), 1);
    }
}

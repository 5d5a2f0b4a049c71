//! Scalar and ARRAY subqueries of catalog statements, rewritten as aggregates DataFusion can
//! decorrelate.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, Query, SelectItem, SetExpr, Statement, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion_pg_catalog::sql::rules::SqlStatementRewriteRule;

use super::casts::call;

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
];

fn has_aggregate(e: &Expr) -> bool {
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase());
                if name.is_some_and(|n| AGGREGATES.contains(&n.as_str())) {
                    self.0 = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = Visit::visit(e, &mut v);
    v.0
}

/// The single select-list expression of a plain `SELECT e FROM … WHERE …` (no grouping,
/// aggregate, DISTINCT, LIMIT or set operation).
fn plain_single_item(q: &mut Query) -> Option<&mut Expr> {
    if q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let grouped =
        !matches!(&select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if select.projection.len() != 1 || grouped || select.distinct.is_some() || select.having.is_some() {
        return None;
    }
    match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } if !has_aggregate(e) => Some(e),
        _ => None,
    }
}

fn aggregate_call(name: &str, arg: Expr, order_by: Vec<datafusion::sql::sqlparser::ast::OrderByExpr>) -> Expr {
    let mut f = match call(name, arg) {
        Expr::Function(f) => f,
        _ => unreachable!(),
    };
    if !order_by.is_empty() {
        if let FunctionArguments::List(list) = &mut f.args {
            list.clauses.push(datafusion::sql::sqlparser::ast::FunctionArgumentClause::OrderBy(order_by));
        }
    }
    Expr::Function(f)
}

/// DataFusion plans a correlated scalar subquery only when it aggregates. Catalog queries
/// use plain ones that return at most one row (`(SELECT collname FROM pg_collation WHERE
/// oid = a.attcollation)`): their single value becomes `first_value(…)`. `ARRAY(SELECT e …)`
/// becomes `(SELECT array_agg(e ORDER BY …) …)`.
#[derive(Debug)]
pub(super) struct AggregateSubqueries;

impl SqlStatementRewriteRule for AggregateSubqueries {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                match expr {
                    Expr::Subquery(q) => {
                        if let Some(item) = plain_single_item(q) {
                            *item = aggregate_call("first_value", item.clone(), vec![]);
                        }
                    }
                    Expr::Function(f)
                        if f.name.0.len() == 1
                            && f.name.0[0].as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("array")) =>
                    {
                        if let FunctionArguments::Subquery(q) = &f.args {
                            let mut q = q.clone();
                            let order_by = match q.order_by.take() {
                                Some(ob) => match ob.kind {
                                    datafusion::sql::sqlparser::ast::OrderByKind::Expressions(e) => e,
                                    _ => vec![],
                                },
                                None => vec![],
                            };
                            if let Some(item) = plain_single_item(&mut q) {
                                *item = aggregate_call("array_agg", item.clone(), order_by);
                                *expr = Expr::Subquery(q);
                            }
                        }
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

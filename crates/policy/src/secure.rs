//! The plan rewrite: a table a principal may only partly see becomes
//! `Projection(visible columns, masked) ← Filter(row filter) ← TableScan(table)`.
//!
//! The engine puts this plan *under* the user's query (the table's provider returns it from
//! `get_logical_plan`, and DataFusion's analyzer inlines it before any optimisation), so the
//! user's filters, joins, groupings and subqueries all see masked values and filtered rows,
//! and the optimiser can still push the row filter and the projection into the scan.

use std::sync::Arc;

use datafusion::common::{Column, DFSchema, ExprSchema, TableReference};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableSource};

use crate::eval::TableAccess;
use crate::mask::MaskFunctions;

/// Builds the secured plan of one table for one principal's [`TableAccess`]. `sql` parses a
/// SQL expression against a schema (row filters, custom masks) with the session's functions.
pub fn secured_plan(
    table: TableReference,
    source: Arc<dyn TableSource>,
    access: &TableAccess,
    masks: &MaskFunctions,
    sql: &dyn Fn(&str, &DFSchema) -> DfResult<Expr>,
) -> DfResult<LogicalPlan> {
    let mut builder = LogicalPlanBuilder::scan(table.clone(), source, None)?;
    if let Some(filter) = &access.row_filter {
        let predicate = sql(filter, builder.schema())?;
        builder = builder.filter(predicate)?;
    }
    let schema = builder.schema().clone();
    let mut exprs = Vec::with_capacity(access.columns.len());
    for c in &access.columns {
        let column = Column::new(Some(table.clone()), &c.name);
        let field = schema.field_from_column(&column)?;
        exprs.push(match &c.mask {
            None => Expr::Column(column),
            Some(mask) => masks.expr(mask, &column, field.data_type(), &schema, sql)?.alias(&c.name),
        });
    }
    builder.project(exprs)?.build()
}

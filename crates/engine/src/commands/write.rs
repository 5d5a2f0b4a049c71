//! Pieces every write shares: rows brought to a table's exact Arrow schema (types, field
//! ids, NOT NULL → 23502), the write-side row filter (`WITH CHECK`, 42501), and a written
//! table's data read back by file (DELETE's copy-on-write).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use rxgate_common::{Error, Result, StatusCode};

use crate::secure::Guard;

/// `batch` (columns in the table's order) as a batch of `target`, the table's Arrow schema:
/// each column cast to its type (a value that does not fit is 22000 / 22P02), and a NULL in a
/// NOT NULL column 23502.
pub(crate) fn to_table_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != target.fields().len() {
        return Err(Error::internal(format!(
            "write of {} columns into a table of {}",
            batch.num_columns(),
            target.fields().len()
        )));
    }
    let options = CastOptions { safe: false, ..Default::default() };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(target.fields()) {
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            cast_with_options(column, field.data_type(), &options).map_err(|e| {
                Error::new(StatusCode::DataException, format!("column \"{}\": {e}", field.name()))
            })?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::new(
                StatusCode::NotNullViolation,
                format!("null value in column \"{}\" violates not-null constraint", field.name()),
            ));
        }
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| Error::internal(e.to_string()))
}

/// A row filter bounding writes to one table, ready to evaluate on batches of its schema.
pub(crate) struct WriteCheck {
    predicate: Arc<dyn PhysicalExpr>,
    table: String,
    filter: String,
}

impl WriteCheck {
    /// Compiles `filter` (SQL over the table's columns) against the table's Arrow schema.
    pub(crate) fn new(ctx: &SessionContext, guard: &Guard, table: &str, filter: &str, schema: &SchemaRef) -> Result<Self> {
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let expr = guard.sql_expr(filter, &df_schema)?;
        let predicate = ctx.state().create_physical_expr(expr, &df_schema)?;
        Ok(Self { predicate, table: table.to_string(), filter: filter.to_string() })
    }

    /// Which rows of `batch` the filter keeps (NULL counts as not kept).
    pub(crate) fn keeps(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let value = self.predicate.evaluate(batch)?.into_array(batch.num_rows())?;
        let keeps = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| Error::internal("row filter is not a predicate"))?;
        Ok(keeps.iter().map(|v| Some(v == Some(true))).collect())
    }

    /// 42501 unless every row of `batch` is inside the filter (a new row the writer could
    /// not read back is refused, like PostgreSQL's `WITH CHECK`).
    pub(crate) fn check(&self, batch: &RecordBatch) -> Result<()> {
        let keeps = self.keeps(batch)?;
        if keeps.true_count() == batch.num_rows() {
            return Ok(());
        }
        Err(Error::new(
            StatusCode::PermissionDenied,
            format!(
                "new row violates row-level security policy for table \"{}\" (rows must satisfy {})",
                self.table, self.filter
            ),
        ))
    }
}

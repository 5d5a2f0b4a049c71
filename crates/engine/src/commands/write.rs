//! Pieces every write shares: rows brought to a table's exact Arrow schema (types, field
//! ids, NOT NULL → 23502), the write-side row filter (`WITH CHECK`, 42501), and where a write
//! goes ([`Writes`]): committed at once, or staged in the session's transaction ([`Staged`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use rxgate_common::{Error, Result, StatusCode};

use iceberg::table::Table;
use iceberg::TableIdent;
use rxgate_catalog::txn::Pending;
use rxgate_catalog::{Lakehouse, TableChange};

use crate::secure::Guard;

/// `batch` (columns in the table's order) as a batch of `target`, the table's Arrow schema
/// (see [`table_batch`]).
pub(crate) fn to_table_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    table_batch(batch.columns().to_vec(), batch.num_rows(), target)
}

/// `columns` (in the table's order, of any types) as a batch of `target`, the table's Arrow
/// schema: each column cast to its type (a value that does not fit is 22000), a NULL in a
/// NOT NULL column 23502.
pub(crate) fn table_batch(columns: Vec<ArrayRef>, rows: usize, target: &SchemaRef) -> Result<RecordBatch> {
    if columns.len() != target.fields().len() {
        return Err(Error::internal(format!(
            "write of {} columns into a table of {}",
            columns.len(),
            target.fields().len()
        )));
    }
    let options = CastOptions { safe: false, ..Default::default() };
    let mut typed: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (column, field) in columns.into_iter().zip(target.fields()) {
        let column = if column.data_type() == field.data_type() {
            column
        } else {
            cast_with_options(&column, field.data_type(), &options)
                .map_err(|e| Error::new(StatusCode::DataException, format!("column \"{}\": {e}", field.name())))?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::new(
                StatusCode::NotNullViolation,
                format!("null value in column \"{}\" violates not-null constraint", field.name()),
            ));
        }
        typed.push(column);
    }
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(target.clone(), typed, &options).map_err(|e| Error::internal(e.to_string()))
}

/// A row filter bounding writes to one table, ready to evaluate on batches of its schema.
pub(crate) struct WriteCheck {
    predicate: Arc<dyn PhysicalExpr>,
    table: String,
    filter: String,
}

impl WriteCheck {
    /// Compiles `filter` (SQL over the table's columns) against the table's Arrow schema.
    pub(crate) fn new(
        ctx: &SessionContext,
        guard: &Guard,
        table: &str,
        filter: &str,
        schema: &SchemaRef,
    ) -> Result<Self> {
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

/// The writes an open transaction staged, in order: per table, what COMMIT does to it
/// (`rxgate_catalog::txn`), and the table as the transaction now sees it (`None`: dropped).
#[derive(Default)]
pub(crate) struct Staged {
    entries: Vec<(TableIdent, Pending, Option<Table>)>,
}

impl Staged {
    /// What COMMIT does, in order.
    pub(crate) fn take(&mut self) -> Vec<(TableIdent, Pending)> {
        std::mem::take(&mut self.entries).into_iter().map(|(i, p, _)| (i, p)).collect()
    }

    fn last(&self, ident: &TableIdent) -> Option<usize> {
        self.entries.iter().rposition(|(i, ..)| i == ident)
    }
}

/// What a committed (or staged) write did.
pub(crate) struct Committed {
    /// The snapshot committed; `None` when staged in a transaction (it lands at COMMIT).
    pub(crate) snapshot_id: Option<i64>,
    /// Rows the change removed.
    pub(crate) deleted_records: u64,
}

/// Where a write's changes go: committed at once, or — inside a transaction block — staged
/// in the session's transaction and shown to its later statements.
#[derive(Clone)]
pub(crate) struct Writes {
    /// The lakehouse.
    pub(crate) lake: Lakehouse,
    /// The open transaction's staging.
    pub(crate) txn: Option<Arc<tokio::sync::Mutex<Staged>>>,
    /// The session's catalog, to show it staged tables.
    pub(crate) catalog: Option<Arc<dyn datafusion::catalog::CatalogProvider>>,
}

impl Writes {
    /// 25001 for a statement that cannot be staged.
    pub(crate) fn outside_transaction(&self, what: &str) -> Result<()> {
        if self.txn.is_some() {
            return Err(Error::new(
                StatusCode::ActiveTransaction,
                format!("{what} cannot run inside a transaction block"),
            ));
        }
        Ok(())
    }

    /// The table as this statement sees it (staged, or committed); `None` when absent.
    pub(crate) async fn table(&self, ident: &TableIdent) -> Result<Option<Table>> {
        if let Some(txn) = &self.txn {
            let staged = txn.lock().await;
            if let Some(i) = staged.last(ident) {
                return Ok(staged.entries[i].2.clone());
            }
        }
        match self.lake.current_table(ident).await {
            Ok(table) => Ok(Some(table)),
            Err(e) if e.code == StatusCode::TableNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn show(&self, ident: &TableIdent, table: Option<Table>) {
        if let Some(lakehouse) = self.catalog.as_ref().and_then(crate::secure::lakehouse_of) {
            lakehouse.stage(ident.clone(), table);
        }
    }

    /// Commits `change` to `table` (the one [`Writes::table`] returned), or stages it.
    pub(crate) async fn commit(&self, table: &Table, change: TableChange) -> Result<Committed> {
        let ident = table.identifier().clone();
        let Some(txn) = &self.txn else {
            let name = format!("{}.{}", ident.namespace().join("."), ident.name());
            let outcome = rxgate_catalog::commit_change(&self.lake, &name, &change).await?;
            return Ok(Committed { snapshot_id: Some(outcome.snapshot_id), deleted_records: outcome.deleted_records });
        };
        let (view, outcome) = rxgate_catalog::txn::apply(table, &change).await?;
        let mut staged = txn.lock().await;
        match staged.last(&ident) {
            Some(i) => match &mut staged.entries[i] {
                (_, Pending::Create { changes, .. } | Pending::Change { changes }, seen) => {
                    changes.push(change);
                    *seen = Some(view.clone());
                }
                (_, Pending::Drop { .. }, _) => return Err(Error::internal("write to a dropped table")),
            },
            None => staged.entries.push((ident.clone(), Pending::Change { changes: vec![change] }, Some(view.clone()))),
        }
        self.show(&ident, Some(view));
        Ok(Committed { snapshot_id: None, deleted_records: outcome.deleted_records })
    }

    /// Creates a table built by `ddl::prepare_table`, with its first rows, or stages that.
    pub(crate) async fn create(&self, prepared: Table, first: Option<TableChange>) -> Result<Committed> {
        let Some(txn) = &self.txn else {
            let outcome = rxgate_catalog::ddl::create_table(&self.lake, &prepared, first.as_ref()).await?;
            return Ok(Committed { snapshot_id: outcome.map(|o| o.snapshot_id), deleted_records: 0 });
        };
        let ident = prepared.identifier().clone();
        let view = match &first {
            Some(change) => rxgate_catalog::txn::apply(&prepared, change).await?.0,
            None => prepared.clone(),
        };
        let mut staged = txn.lock().await;
        if staged.last(&ident).is_some_and(|i| staged.entries[i].2.is_some()) {
            return Err(Error::new(StatusCode::AlreadyExists, format!("relation \"{ident}\" already exists")));
        }
        let changes = first.into_iter().collect();
        staged.entries.push((
            ident.clone(),
            Pending::Create { table: Box::new(prepared), changes },
            Some(view.clone()),
        ));
        self.show(&ident, Some(view));
        Ok(Committed { snapshot_id: None, deleted_records: 0 })
    }

    /// Drops a table (`Ok(false)`: absent), or stages that.
    pub(crate) async fn drop(&self, ident: &TableIdent, purge: bool) -> Result<bool> {
        let Some(txn) = &self.txn else {
            return rxgate_catalog::ddl::drop_table(&self.lake, ident, true, purge).await;
        };
        if self.table(ident).await?.is_none() {
            return Ok(false);
        }
        let mut staged = txn.lock().await;
        match staged.last(ident) {
            // Created in this transaction: it never reaches the catalog.
            Some(i) if matches!(staged.entries[i].1, Pending::Create { .. }) => {
                staged.entries.remove(i);
            }
            Some(i) => staged.entries[i] = (ident.clone(), Pending::Drop { purge }, None),
            None => staged.entries.push((ident.clone(), Pending::Drop { purge }, None)),
        }
        self.show(ident, None);
        Ok(true)
    }
}

//! Bulk ingest of Arrow batches into a table (Flight SQL's `CommandStatementIngest`, behind
//! ADBC's `adbc_ingest`): the batches stream into the table's writer and the whole ingest is
//! one commit. Modes: create (a new table from the batches' schema), append, replace (the
//! table dropped and created again, in one catalog transaction), create-or-append.
//!
//! **Policy.** The same privileges as SQL: `insert`, plus `create` to create and `drop` and
//! `create` to replace; the writer's row filter bounds every row (42501, nothing written).

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use iceberg::spec::{NestedField, Schema};
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::ddl::{self, NewTable};
use rxgate_catalog::txn::Pending;
use rxgate_catalog::{Removal, TableChange, TableWriter};
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::Privilege;

use super::write::{table_batch, WriteCheck, Writes};
use super::{is_engine_schema, qualify, require};
use crate::planned::QueryOutput;
use crate::secure::Guard;

/// What to do when the table exists or not (ADBC's ingest modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Create the table; it must not exist.
    Create,
    /// Append to the table; it must exist.
    Append,
    /// Replace the table (drop and create) or create it.
    Replace,
    /// Append, creating the table first if needed.
    CreateAppend,
}

/// Streams `batches` into `parts` (`[t]`, `[schema, t]`) as one commit; returns the rows.
pub(crate) async fn ingest(
    ctx: &SessionContext,
    guard: &Guard,
    writes: &Writes,
    user: &str,
    parts: &[String],
    mode: IngestMode,
    mut batches: SendableRecordBatchStream,
) -> Result<QueryOutput> {
    let (schema, name) = qualify(ctx, parts)?;
    let qualified = format!("{schema}.{name}");
    if is_engine_schema(&schema) {
        return Err(Error::new(StatusCode::PermissionDenied, format!("schema {schema} belongs to rxgate")));
    }
    let ident = TableIdent::new(NamespaceIdent::from_strs(schema.split('.'))?, name.clone());
    let existing = writes.table(&ident).await?;
    if existing.is_none() {
        super::view::refuse_view(writes, &schema, &name, "ingest into").await?;
    }
    let create = match (mode, &existing) {
        (IngestMode::Create, Some(_)) => {
            return Err(Error::new(StatusCode::AlreadyExists, format!("relation \"{qualified}\" already exists")))
        }
        (IngestMode::Append, None) => {
            return Err(Error::new(StatusCode::TableNotFound, format!("relation \"{qualified}\" does not exist")))
        }
        (IngestMode::Replace, _) | (IngestMode::Create | IngestMode::CreateAppend, None) => true,
        (IngestMode::Append | IngestMode::CreateAppend, Some(_)) => false,
    };
    let what = format!("table {qualified}");
    require(ctx, guard, Privilege::Insert, &schema, &name, &what)?;
    if create {
        require(ctx, guard, Privilege::Create, &schema, &name, &format!("schema {schema}"))?;
    }
    if create && existing.is_some() {
        require(ctx, guard, Privilege::Drop, &schema, &name, &what)?;
    }
    let incoming = batches.schema();
    let table = match (&existing, create) {
        (Some(t), false) => t.clone(),
        _ => {
            let mut properties = std::collections::HashMap::from([
                ("write.parquet.compression-codec".to_string(), "zstd".to_string()),
                ("rxgate.created-by".to_string(), user.to_string()),
            ]);
            properties.insert("rxgate.operation".into(), "ingest".into());
            let fields = incoming
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let ty = ddl::iceberg_type(f.data_type())
                        .map_err(|e| Error::new(e.code, format!("column \"{}\": {}", f.name(), e.message)))?;
                    Ok(Arc::new(NestedField::optional(i as i32 + 1, f.name(), ty)))
                })
                .collect::<Result<Vec<_>>>()?;
            let new = NewTable {
                ident: ident.clone(),
                schema: Schema::builder().with_fields(fields).build()?,
                partition: vec![],
                properties,
            };
            ddl::prepare_table(&writes.lake, &new, true).await?
        }
    };
    let arrow = rxgate_catalog::table_arrow_schema(&table)?;
    let sources = sources(&incoming, &arrow, &qualified)?;
    let (policy, _, principal) = guard.view();
    let catalog = ctx.state().config().options().catalog.default_catalog.clone();
    let check = match policy.write_filter(&principal, Privilege::Insert, &catalog, &schema, &name)? {
        Some(filter) => Some(WriteCheck::new(ctx, guard, &qualified, &filter, &arrow)?),
        None => None,
    };
    let mut writer = TableWriter::new(&table)?;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let columns: Vec<ArrayRef> = sources
            .iter()
            .zip(arrow.fields())
            .map(|(s, f)| match s {
                Some(i) => batch.column(*i).clone(),
                None => new_null_array(f.data_type(), batch.num_rows()),
            })
            .collect();
        let batch = table_batch(columns, batch.num_rows(), &arrow)?;
        if let Some(check) = &check {
            check.check(&batch)?;
        }
        writer.write(batch).await?;
    }
    let rows = writer.rows();
    let mut change =
        TableChange { add: writer.close().await?, remove: Removal::Nothing, properties: Default::default() };
    change.properties.insert("rxgate.operation".into(), "ingest".into());
    change.properties.insert("rxgate.user".into(), user.to_string());
    let snapshot_id = match (&existing, create) {
        (Some(_), false) => writes.commit(&table, change).await?.snapshot_id,
        (None, _) => writes.create(table, Some(change)).await?.snapshot_id,
        (Some(_), true) if writes.txn.is_some() => {
            writes.drop(&ident, false).await?;
            writes.create(table, Some(change)).await?.snapshot_id
        }
        // Replace outside a transaction block: the drop and the create land together.
        (Some(_), true) => {
            let pending = vec![
                (ident.clone(), Pending::Drop { purge: false }),
                (ident.clone(), Pending::Create { table: Box::new(table), changes: vec![change] }),
            ];
            rxgate_catalog::txn::commit_all(&writes.lake, &pending).await?.last().copied().flatten()
        }
    };
    Ok(QueryOutput::Written { tag: format!("INSERT 0 {rows}"), table: qualified, rows, snapshot_id })
}

/// For each table column, the incoming column of the same name (`None`: NULL); an incoming
/// column the table lacks is 42703.
fn sources(incoming: &SchemaRef, table: &SchemaRef, qualified: &str) -> Result<Vec<Option<usize>>> {
    for f in incoming.fields() {
        if table.field_with_name(f.name()).is_err() {
            return Err(Error::new(
                StatusCode::ColumnNotFound,
                format!("column \"{}\" of relation \"{qualified}\" does not exist", f.name()),
            ));
        }
    }
    Ok(table.fields().iter().map(|f| incoming.index_of(f.name()).ok()).collect())
}

//! DML on Iceberg tables, each statement one atomic commit: `INSERT INTO … VALUES | query`
//! (an append), `DELETE FROM … [WHERE …]` (copy-on-write: a file whose rows all go is removed
//! without a rewrite — so a predicate on identity partition columns rewrites nothing —, a file
//! losing some rows is rewritten without them, one Overwrite snapshot), `TRUNCATE` (every
//! file removed).
//!
//! **Policy.** `insert` / `delete` privileges (administrators have all). The writer's row
//! filter bounds writes like PostgreSQL's `WITH CHECK`: an INSERT with a row outside it is
//! refused (42501) and nothing is written. A DELETE's predicate is evaluated on what the
//! session's SELECT sees of the table — masked values, filtered rows — so a DELETE touches only
//! rows the session can read and cannot probe hidden values; its row count is that of those
//! rows. TRUNCATE under a row filter is refused: it would remove rows the session cannot see.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Column, DFSchema, ParamValues, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{cast, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::{live_data_files, read_data_file, Lakehouse, Removal, TableChange, TableWriter};
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::{ColumnAccess, Privilege, TableAccess};

use super::write::{table_batch, to_table_batch, WriteCheck, Writes};
use super::{qualify, require};
use crate::planned::{Planned, QueryOutput};
use crate::secure::Guard;
use crate::statement::{Command, DmlCommand};

/// The hidden column carrying each row's position in its file while a DELETE evaluates its
/// predicate.
const POSITION: &str = "__rxgate_row_position";

/// The Iceberg table a DML statement writes, as the statement sees it (its transaction's
/// staged writes included); an external table is read-only (0A000).
async fn target(writes: &Writes, schema: &str, table: &str) -> Result<Table> {
    let ident = TableIdent::new(NamespaceIdent::from_strs(schema.split('.'))?, table.to_string());
    match writes.table(&ident).await? {
        Some(t) => Ok(t),
        None if writes.lake.external().cached(schema, table).is_some() => {
            Err(Error::new(StatusCode::Unsupported, format!("{schema}.{table} is an external table: it is read-only")))
        }
        None => {
            super::view::refuse_view(writes, schema, table, "write to").await?;
            Err(Error::new(StatusCode::TableNotFound, format!("relation \"{schema}.{table}\" does not exist")))
        }
    }
}

/// Plans a DML statement: privileges checked, and for INSERT the source query (planned by the
/// session, under its policy) brought to the table's columns: listed columns by position, the
/// others NULL, each cast to its column's type; `$n` placeholders in VALUES take their
/// column's type, so clients are told it.
pub(crate) async fn plan(
    ctx: &SessionContext,
    guard: &Guard,
    writes: &Writes,
    cmd: DmlCommand,
    source: Option<Box<Planned>>,
) -> Result<Planned> {
    let (schema, name) = qualify(ctx, cmd.table())?;
    let what = format!("table {schema}.{name}");
    let privilege = match &cmd {
        DmlCommand::Insert { .. } | DmlCommand::CopyFrom { .. } => Privilege::Insert,
        DmlCommand::Delete { .. } | DmlCommand::Truncate { .. } => Privilege::Delete,
        DmlCommand::Update { .. } => Privilege::Update,
    };
    require(ctx, guard, privilege, &schema, &name, &what)?;
    let table = target(writes, &schema, &name).await?;
    let source = match (&cmd, source) {
        (DmlCommand::Insert { columns, constants, overwrite, .. }, Some(source)) => {
            if *overwrite {
                require(ctx, guard, Privilege::Delete, &schema, &name, &what)?;
            }
            Some(Box::new(insert_source(&table, columns, constants, *source)?))
        }
        (_, source) => source,
    };
    Ok(Planned::Write { command: Command::Dml(cmd), source })
}

/// The INSERT's rows as the table's columns (`constants`: static partition values).
fn insert_source(
    table: &Table,
    columns: &[String],
    constants: &[(String, String)],
    source: Planned,
) -> Result<Planned> {
    let Planned::Plan(plan, _, _, fallback) = source else {
        return Err(Error::new(StatusCode::Unsupported, "INSERT needs VALUES or a query"));
    };
    if fallback.is_some() {
        return Err(Error::new(StatusCode::Unsupported, "INSERT … SELECT from the PostgreSQL catalog"));
    }
    let target = rxgate_catalog::table_arrow_schema(table)?;
    for (k, _) in constants {
        let md = table.metadata();
        let is_identity_partition = md.default_partition_spec().fields().iter().any(|f| {
            f.transform == iceberg::spec::Transform::Identity
                && md.current_schema().field_by_id(f.source_id).is_some_and(|s| &s.name == k)
        });
        if !is_identity_partition {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                format!("{k} is not an identity partition column of {}", table.identifier()),
            ));
        }
    }
    let constant = |name: &str| constants.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let listed: Vec<String> = if columns.is_empty() {
        target.fields().iter().map(|f| f.name().clone()).filter(|n| constant(n).is_none()).collect()
    } else {
        columns.to_vec()
    };
    let mut position_of = std::collections::HashMap::new();
    for (i, c) in listed.iter().enumerate() {
        if target.field_with_name(c).is_err() {
            return Err(Error::new(
                StatusCode::ColumnNotFound,
                format!("column \"{c}\" of relation \"{}\" does not exist", table.identifier()),
            ));
        }
        if position_of.insert(c.clone(), i).is_some() {
            return Err(Error::new(StatusCode::SyntaxError, format!("column \"{c}\" specified more than once")));
        }
    }
    let width = plan.schema().fields().len();
    if width != listed.len() {
        let more =
            if width > listed.len() { "expressions than target columns" } else { "target columns than expressions" };
        return Err(Error::new(StatusCode::SyntaxError, format!("INSERT has more {more}")));
    }
    // `$n` in VALUES: typed as its column, so the client is told the type and sends it.
    let types: Vec<DataType> = listed
        .iter()
        .map(|c| target.field_with_name(c).map(|f| f.data_type().clone()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::internal(e.to_string()))?;
    let plan = match plan {
        LogicalPlan::Values(values) => {
            let rows = values
                .values
                .into_iter()
                .map(|row| row.into_iter().zip(&types).map(|(e, t)| typed_placeholder(e, t)).collect())
                .collect();
            LogicalPlanBuilder::values(rows)?.build()?
        }
        other => other,
    };
    let input = plan.schema().clone();
    let mut exprs = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let expr = match (position_of.get(field.name()), constant(field.name())) {
            (_, Some(value)) => cast(lit(value), field.data_type().clone()),
            (Some(&i), None) => cast(Expr::Column(Column::from(input.qualified_field(i))), field.data_type().clone()),
            (None, None) if !field.is_nullable() => {
                return Err(Error::new(
                    StatusCode::NotNullViolation,
                    format!("null value in column \"{}\" violates not-null constraint", field.name()),
                ))
            }
            (None, None) => lit(ScalarValue::try_from(field.data_type())?),
        };
        exprs.push(expr.alias(field.name()));
    }
    let projected = LogicalPlanBuilder::from(plan).project(exprs)?.build()?;
    let hints = projected.get_parameter_types().unwrap_or_default();
    let mut ordered: Vec<(usize, Option<DataType>)> = hints
        .into_iter()
        .filter_map(|(k, v)| k.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, v)))
        .collect();
    ordered.sort_by_key(|(i, _)| *i);
    let n = ordered.last().map(|(i, _)| *i).unwrap_or(0);
    let mut hints = vec![None; n];
    for (i, t) in ordered {
        hints[i - 1] = t;
    }
    Ok(Planned::Plan(projected, None, hints, None))
}

/// An INSERT's `VALUES (…$n…)` source bound to many parameter rows as one `VALUES` of all
/// of them (one write, one commit); `None` when the source is not a single-row VALUES.
pub(crate) fn bind_values(source: &Planned, rows: &[ParamValues]) -> Result<Option<Planned>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let Planned::Plan(plan, ..) = source else { return Ok(None) };
    if rows.is_empty() || single_row_values(plan).is_none() {
        return Ok(None);
    }
    let mut all = Vec::with_capacity(rows.len());
    for params in rows {
        let bound = plan.clone().with_param_values(params.clone())?;
        let Some(values) = single_row_values(&bound) else { return Ok(None) };
        all.extend(values.values.iter().cloned());
    }
    let combined = LogicalPlanBuilder::values(all)?.build()?;
    let plan = plan
        .clone()
        .transform_up(|node| {
            Ok(match node {
                LogicalPlan::Values(_) => Transformed::yes(combined.clone()),
                other => Transformed::no(other),
            })
        })?
        .data
        .recompute_schema()?;
    Ok(Some(Planned::Plan(plan, None, vec![], None)))
}

/// The one-row VALUES at the bottom of a chain of projections and aliases.
fn single_row_values(plan: &LogicalPlan) -> Option<&datafusion::logical_expr::Values> {
    match plan {
        LogicalPlan::Values(v) if v.values.len() == 1 => Some(v),
        LogicalPlan::Projection(p) => single_row_values(&p.input),
        LogicalPlan::SubqueryAlias(a) => single_row_values(&a.input),
        _ => None,
    }
}

/// A bare `$n` with no type yet gets the column's.
fn typed_placeholder(e: Expr, t: &DataType) -> Expr {
    match e {
        Expr::Placeholder(Placeholder { id, field: None }) => {
            Expr::Placeholder(Placeholder::new_with_field(id, Some(Arc::new(Field::new("", t.clone(), true)))))
        }
        other => other,
    }
}

/// Runs a planned DML statement; `rows` is INSERT's source, running.
pub(crate) async fn execute(
    ctx: &SessionContext,
    guard: &Guard,
    writes: &Writes,
    cmd: &DmlCommand,
    rows: Option<SendableRecordBatchStream>,
    user: &str,
) -> Result<QueryOutput> {
    let (schema, name) = qualify(ctx, cmd.table())?;
    let lake = &writes.lake;
    let table = target(writes, &schema, &name).await?;
    let qualified = format!("{schema}.{name}");
    let (policy, _, principal) = guard.view();
    let catalog = ctx.state().config().options().catalog.default_catalog.clone();
    let mut properties = std::collections::HashMap::from([("rxgate.user".to_string(), user.to_string())]);
    match cmd {
        DmlCommand::CopyFrom { columns, options, .. } => {
            let arrow = rxgate_catalog::table_arrow_schema(&table)?;
            let listed: Vec<String> = if columns.is_empty() {
                arrow.fields().iter().map(|f| f.name().clone()).collect()
            } else {
                columns.clone()
            };
            for c in &listed {
                if arrow.field_with_name(c).is_err() {
                    return Err(Error::new(
                        StatusCode::ColumnNotFound,
                        format!("column \"{c}\" of relation \"{qualified}\" does not exist"),
                    ));
                }
            }
            let sources = arrow.fields().iter().map(|f| listed.iter().position(|c| c == f.name())).collect();
            let check = match policy.write_filter(&principal, Privilege::Insert, &catalog, &schema, &name)? {
                Some(filter) => Some(WriteCheck::new(ctx, guard, &qualified, &filter, &arrow)?),
                None => None,
            };
            let sink = super::copy_in::CopyIn::new(
                options.clone(),
                sources,
                listed.len(),
                table,
                qualified,
                writes.clone(),
                check,
                user,
            )?;
            Ok(QueryOutput::CopyIn(Box::new(sink)))
        }
        DmlCommand::Insert { overwrite, .. } => {
            let mut stream = rows.ok_or_else(|| Error::internal("INSERT without rows"))?;
            let arrow = rxgate_catalog::table_arrow_schema(&table)?;
            let check = match policy.write_filter(&principal, Privilege::Insert, &catalog, &schema, &name)? {
                Some(filter) => Some(WriteCheck::new(ctx, guard, &qualified, &filter, &arrow)?),
                None => None,
            };
            let mut writer = TableWriter::new(&table)?;
            while let Some(batch) = stream.next().await {
                let batch = to_table_batch(&batch?, &arrow)?;
                if let Some(check) = &check {
                    check.check(&batch)?;
                }
                writer.write(batch).await?;
            }
            let n = writer.rows();
            let add = writer.close().await?;
            let remove = match overwrite {
                false => Removal::Nothing,
                true if table.metadata().default_partition_spec().fields().is_empty() => Removal::All,
                // Dynamic overwrite: the partitions the rows fall in, as Hive and Spark do.
                true => Removal::PartitionPaths(partition_paths(&table, &add)),
            };
            properties.insert("rxgate.operation".into(), if *overwrite { "insert overwrite" } else { "insert" }.into());
            let change = TableChange { add, remove, properties };
            let outcome = writes.commit(&table, change).await?;
            Ok(written(format!("INSERT 0 {n}"), qualified, n, outcome.snapshot_id))
        }
        DmlCommand::Truncate { .. } => {
            if policy.write_filter(&principal, Privilege::Delete, &catalog, &schema, &name)?.is_some() {
                return Err(Error::new(
                    StatusCode::PermissionDenied,
                    format!(
                        "permission denied: TRUNCATE {qualified} would remove rows outside your row filter; use DELETE"
                    ),
                ));
            }
            properties.insert("rxgate.operation".into(), "truncate".into());
            let change = TableChange { add: vec![], remove: Removal::All, properties };
            let outcome = writes.commit(&table, change).await?;
            Ok(written("TRUNCATE TABLE".into(), qualified, outcome.deleted_records, outcome.snapshot_id))
        }
        DmlCommand::Delete { predicate, .. } | DmlCommand::Update { predicate, .. } => {
            let update = matches!(cmd, DmlCommand::Update { .. });
            let privilege = if update { Privilege::Update } else { Privilege::Delete };
            let access = read_access(guard, &catalog, &schema, &name, &table)?;
            let write_filter = policy.write_filter(&principal, privilege, &catalog, &schema, &name)?;
            let read_filter = access.as_ref().and_then(|a| a.row_filter.clone());
            if !update && predicate.is_none() && write_filter.is_none() && read_filter.is_none() {
                properties.insert("rxgate.operation".into(), "delete".into());
                let change = TableChange { add: vec![], remove: Removal::All, properties };
                let outcome = writes.commit(&table, change).await?;
                return Ok(written(
                    format!("DELETE {}", outcome.deleted_records),
                    qualified,
                    outcome.deleted_records,
                    outcome.snapshot_id,
                ));
            }
            let set: Vec<(String, String)> = match cmd {
                DmlCommand::Update { assignments, .. } => {
                    assignments.iter().map(|(c, e)| (c.clone(), e.to_string())).collect()
                }
                _ => vec![],
            };
            // What the predicate (and SET) sees: the session's view of the table (everything
            // for an administrator), further bounded by the statement's row filter.
            let arrow = rxgate_catalog::table_arrow_schema(&table)?;
            for (c, _) in &set {
                if arrow.field_with_name(c).is_err() {
                    return Err(Error::new(
                        StatusCode::ColumnNotFound,
                        format!("column \"{c}\" of relation \"{qualified}\" does not exist"),
                    ));
                }
            }
            let columns: Vec<String> = arrow.fields().iter().map(|f| f.name().clone()).collect();
            let reads = predicate.is_some() || !set.is_empty();
            let mut access = match access {
                Some(a) => a,
                None if policy.is_admin(&principal.roles) || !reads => TableAccess {
                    columns: columns.iter().map(|c| ColumnAccess { name: c.clone(), mask: None }).collect(),
                    row_filter: None,
                    all_columns: true,
                },
                None => {
                    let what = if update { "UPDATE" } else { "DELETE … WHERE" };
                    return Err(Error::new(
                        StatusCode::PermissionDenied,
                        format!("permission denied: {what} needs SELECT on {qualified}"),
                    ));
                }
            };
            let check = match &write_filter {
                Some(filter) if update => Some(WriteCheck::new(ctx, guard, &qualified, filter, &arrow)?),
                _ => None,
            };
            access.row_filter = match (access.row_filter.take(), write_filter) {
                (Some(a), Some(b)) => Some(format!("({a}) AND ({b})")),
                (a, b) => a.or(b),
            };
            access.columns.push(ColumnAccess { name: POSITION.into(), mask: None });
            let predicate = predicate.as_ref().map(|p| p.to_string());
            let rewriter = Rewriter { ctx, guard, access, predicate, set, check, arrow, qualified: qualified.clone() };
            let (change, n) = rewriter.run(lake, &table, properties).await?;
            let verb = if update { "UPDATE" } else { "DELETE" };
            if n == 0 {
                return Ok(written(format!("{verb} 0"), qualified, 0, None));
            }
            let outcome = writes.commit(&table, change).await?;
            Ok(written(format!("{verb} {n}"), qualified, n, outcome.snapshot_id))
        }
    }
}

/// The partition paths (`k=v/…`, as the default spec writes them) of `files`.
fn partition_paths(table: &Table, files: &[iceberg::spec::DataFile]) -> HashSet<String> {
    let md = table.metadata();
    let spec = md.default_partition_spec().as_ref().clone();
    files
        .iter()
        .map(|f| {
            iceberg::spec::PartitionKey::new(spec.clone(), md.current_schema().clone(), f.partition().clone()).to_path()
        })
        .collect()
}

fn written(tag: String, table: String, rows: u64, snapshot_id: impl Into<Option<i64>>) -> QueryOutput {
    QueryOutput::Written { tag, table, rows, snapshot_id: snapshot_id.into() }
}

/// What the session's SELECT sees of the table; `None` without SELECT.
fn read_access(guard: &Guard, catalog: &str, schema: &str, name: &str, table: &Table) -> Result<Option<TableAccess>> {
    let (policy, _, principal) = guard.view();
    let columns: Vec<String> =
        table.metadata().current_schema().as_struct().fields().iter().map(|f| f.name.clone()).collect();
    policy.table_access(&principal, catalog, schema, name, &columns)
}

/// A copy-on-write DELETE or UPDATE over a table's live files.
struct Rewriter<'a> {
    ctx: &'a SessionContext,
    guard: &'a Guard,
    /// The session's view, with the statement's row filter AND-ed in and the position column.
    access: TableAccess,
    predicate: Option<String>,
    /// UPDATE's `SET column = expression` (SQL over the session's view); empty for DELETE.
    set: Vec<(String, String)>,
    /// UPDATE's row filter on the new rows (`WITH CHECK`).
    check: Option<WriteCheck>,
    arrow: SchemaRef,
    qualified: String,
}

/// The rows of one file a statement touches: their positions, and for UPDATE their new
/// values of the assigned columns.
struct Touched {
    positions: Vec<u64>,
    values: Vec<ArrayRef>,
}

impl Rewriter<'_> {
    /// Evaluates the statement file by file: untouched files stay; a DELETE removes emptied
    /// files and rewrites others without the deleted rows; an UPDATE rewrites its files with
    /// the new values (through the writer, so a changed partition column moves the row).
    /// Returns the change and the rows deleted or updated.
    async fn run(
        &self,
        lake: &Lakehouse,
        table: &Table,
        mut properties: std::collections::HashMap<String, String>,
    ) -> Result<(TableChange, u64)> {
        let mut writer = TableWriter::new(table)?;
        let mut removed = HashSet::new();
        let mut touched_rows = 0u64;
        for (path, _) in live_data_files(table).await? {
            let batches = read_data_file(lake.storage(), &path, &self.arrow).await?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if rows == 0 {
                continue;
            }
            let all = datafusion::arrow::compute::concat_batches(&self.arrow, &batches)
                .map_err(|e| Error::internal(e.to_string()))?;
            drop(batches);
            let touched = self.touched(&all).await?;
            if touched.positions.is_empty() {
                continue;
            }
            touched_rows += touched.positions.len() as u64;
            removed.insert(path);
            let hit: HashSet<u64> = touched.positions.iter().copied().collect();
            if hit.len() < rows {
                let keep: BooleanArray = (0..rows).map(|i| Some(!hit.contains(&(i as u64)))).collect();
                writer.write(filter_record_batch(&all, &keep).map_err(|e| Error::internal(e.to_string()))?).await?;
            }
            if !self.set.is_empty() {
                let indices = UInt64Array::from(touched.positions.clone());
                let mut columns = Vec::with_capacity(all.num_columns());
                for (i, field) in self.arrow.fields().iter().enumerate() {
                    columns.push(match self.set.iter().position(|(c, _)| c == field.name()) {
                        Some(k) => touched.values[k].clone(),
                        None => datafusion::arrow::compute::take(all.column(i), &indices, None)
                            .map_err(|e| Error::internal(e.to_string()))?,
                    });
                }
                let updated = table_batch(columns, touched.positions.len(), &self.arrow)?;
                if let Some(check) = &self.check {
                    check.check(&updated)?;
                }
                writer.write(updated).await?;
            }
        }
        let operation = if self.set.is_empty() { "delete" } else { "update" };
        properties.insert("rxgate.operation".into(), operation.into());
        let add = writer.close().await?;
        Ok((TableChange { add, remove: Removal::Files(removed), properties }, touched_rows))
    }

    /// The rows of `batch` the statement touches: the session's secured view of the rows
    /// (masks, row filters) filtered by the predicate, with UPDATE's new values computed on it.
    async fn touched(&self, batch: &RecordBatch) -> Result<Touched> {
        let mut fields: Vec<Arc<Field>> = self.arrow.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(POSITION, DataType::UInt64, false)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(0..batch.num_rows() as u64)));
        let with_pos = RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::internal(e.to_string()))?;
        let mem = MemTable::try_new(schema, vec![vec![with_pos]])?;
        let (_, masks, _) = self.guard.view();
        let reference = TableReference::bare(self.qualified.replace('.', "_"));
        let guard = self.guard;
        let secured = rxgate_policy::secured_plan(
            reference,
            provider_as_source(Arc::new(mem)),
            &self.access,
            &masks,
            &|sql, schema| guard.sql_expr(sql, schema),
        )?;
        let mut builder = LogicalPlanBuilder::from(secured);
        let statement = if self.set.is_empty() { "DELETE" } else { "UPDATE" };
        if let Some(predicate) = &self.predicate {
            let df_schema: &DFSchema = builder.schema();
            let expr = self
                .guard
                .sql_expr(predicate, df_schema)
                .map_err(|e| Error::new(StatusCode::PlanError, format!("{statement} … WHERE {predicate}: {e}")))?;
            builder = builder.filter(expr)?;
        }
        let mut exprs = vec![Expr::Column(Column::from_name(POSITION))];
        for (column, sql) in &self.set {
            let expr = self
                .guard
                .sql_expr(sql, builder.schema())
                .map_err(|e| Error::new(StatusCode::PlanError, format!("UPDATE … SET {column} = {sql}: {e}")))?;
            let target = self.arrow.field_with_name(column).map_err(|e| Error::internal(e.to_string()))?;
            exprs.push(cast(expr, target.data_type().clone()).alias(format!("__rxgate_set_{column}")));
        }
        let plan = builder.project(exprs)?.build()?;
        let found = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let mut positions = vec![];
        let mut parts: Vec<Vec<ArrayRef>> = vec![vec![]; self.set.len()];
        for b in &found {
            let col = b
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| Error::internal("row positions are not u64"))?;
            positions.extend(col.iter().flatten());
            for (k, part) in parts.iter_mut().enumerate() {
                part.push(b.column(k + 1).clone());
            }
        }
        let values = parts
            .into_iter()
            .enumerate()
            .map(|(k, arrays)| {
                let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                if refs.is_empty() {
                    let t = self.arrow.field_with_name(&self.set[k].0).map_err(|e| Error::internal(e.to_string()))?;
                    return Ok(datafusion::arrow::array::new_empty_array(t.data_type()));
                }
                datafusion::arrow::compute::concat(&refs).map_err(|e| Error::internal(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Touched { positions, values })
    }
}

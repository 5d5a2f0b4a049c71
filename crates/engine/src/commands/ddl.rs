//! DDL on the lakehouse: `CREATE|DROP SCHEMA`, `CREATE TABLE` (Iceberg, partitioned by
//! columns or transforms, with properties), CTAS (the table and its rows in one commit),
//! `ALTER TABLE … RENAME TO`, `DROP TABLE [PURGE]`.
//!
//! **Policy.** Each statement needs its privilege (`create` in the schema — a grant with
//! `table = "*"` —, `alter`, `drop`; administrators have all): a table the session can neither
//! see nor change is 42P01 (no existence leak), one it can see 42501. CTAS reads its query
//! under the session's policy like any query, so a masked column is stored masked.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use iceberg::spec::{NestedField, Schema, Transform};
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::ddl::{self, NewTable};
use rxgate_catalog::{TableChange, TableWriter};
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::Privilege;

use super::write::{to_table_batch, Writes};
use super::{is_engine_schema, qualify, require, tag};
use crate::planned::{Planned, QueryOutput};
use crate::secure::Guard;
use crate::statement::{Command, DdlCommand, NewColumn, PartitionTransform};

/// Plans a DDL statement: names qualified, privileges checked. `source` is CTAS's planned
/// query.
pub(crate) async fn plan(
    ctx: &SessionContext,
    guard: &Guard,
    cmd: DdlCommand,
    source: Option<Box<Planned>>,
) -> Result<Planned> {
    match &cmd {
        DdlCommand::CreateSchema { name, .. } | DdlCommand::DropSchema { name, .. } => {
            if is_engine_schema(name) {
                return Err(Error::new(StatusCode::PermissionDenied, format!("schema {name} belongs to rxgate")));
            }
            let privilege =
                if matches!(cmd, DdlCommand::CreateSchema { .. }) { Privilege::Create } else { Privilege::Drop };
            require(ctx, guard, privilege, name, "", &format!("schema {name}"))?;
        }
        DdlCommand::CreateTable { table, .. } => {
            let (schema, name) = qualify(ctx, table)?;
            if is_engine_schema(&schema) {
                return Err(Error::new(
                    StatusCode::PermissionDenied,
                    format!("cannot create tables in schema {schema}, which belongs to rxgate"),
                ));
            }
            require(ctx, guard, Privilege::Create, &schema, &name, &format!("schema {schema}"))?;
        }
        DdlCommand::DropTable { table, .. } => {
            let (schema, name) = qualify(ctx, table)?;
            require(ctx, guard, Privilege::Drop, &schema, &name, &format!("table {schema}.{name}"))?;
        }
        DdlCommand::RenameTable { table, to } => {
            let (schema, name) = qualify(ctx, table)?;
            require(ctx, guard, Privilege::Alter, &schema, &name, &format!("table {schema}.{name}"))?;
            let (to_schema, to_name) = rename_target(&schema, to)?;
            require(ctx, guard, Privilege::Create, &to_schema, &to_name, &format!("schema {to_schema}"))?;
        }
    }
    Ok(Planned::Write { command: Command::Ddl(cmd), source })
}

/// The new name of `ALTER TABLE … RENAME TO`: one part stays in the table's schema.
fn rename_target(schema: &str, to: &[String]) -> Result<(String, String)> {
    match to {
        [t] => Ok((schema.to_string(), t.clone())),
        [s, t] => Ok((s.clone(), t.clone())),
        _ => Err(Error::new(StatusCode::InvalidArgument, format!("bad table name {}", to.join(".")))),
    }
}

fn ident(schema: &str, table: &str) -> Result<TableIdent> {
    Ok(TableIdent::new(NamespaceIdent::from_strs(schema.split('.'))?, table.to_string()))
}

/// Runs a planned DDL statement; `rows` is CTAS's query, running. Inside a transaction
/// block, table creations and drops are staged (`writes`); schema DDL and renames are 25001.
pub(crate) async fn execute(
    ctx: &SessionContext,
    writes: &Writes,
    cmd: &DdlCommand,
    rows: Option<SendableRecordBatchStream>,
    user: &str,
) -> Result<QueryOutput> {
    let lake = writes.lake.clone();
    let output = match cmd {
        DdlCommand::CreateSchema { name, if_not_exists } => {
            writes.outside_transaction("CREATE SCHEMA")?;
            ddl::create_namespace(&lake, name, *if_not_exists).await?;
            tag("CREATE SCHEMA")
        }
        DdlCommand::DropSchema { name, if_exists, cascade } => {
            writes.outside_transaction("DROP SCHEMA")?;
            ddl::drop_namespace(&lake, name, *if_exists, *cascade).await?;
            tag("DROP SCHEMA")
        }
        DdlCommand::CreateTable { table, if_not_exists, columns, partition, properties, query: _ } => {
            let (schema, name) = qualify(ctx, table)?;
            let ident = ident(&schema, &name)?;
            if writes.table(&ident).await?.is_some()
                || lake.external().cached(&schema, &name).is_some()
                || lake.views().get(&schema, &name).await?.is_some()
            {
                if *if_not_exists {
                    return tag("CREATE TABLE");
                }
                return Err(Error::new(
                    StatusCode::AlreadyExists,
                    format!("relation \"{schema}.{name}\" already exists"),
                ));
            }
            let fields = match &rows {
                Some(stream) => stream
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone(), false, None))
                    .collect::<Vec<_>>(),
                None => column_types(ctx, columns)?,
            };
            let mut props: HashMap<String, String> = properties.clone().into_iter().collect();
            props.entry("write.parquet.compression-codec".into()).or_insert_with(|| "zstd".into());
            props.insert("rxgate.created-by".into(), user.to_string());
            let new = NewTable {
                ident,
                schema: iceberg_schema(&fields)?,
                partition: partition.iter().map(|p| (p.column.clone(), transform(p.transform))).collect(),
                properties: props,
            };
            let prepared = ddl::prepare_table(&lake, &new, writes.txn.is_some()).await?;
            match rows {
                None => {
                    writes.create(prepared, None).await?;
                    tag("CREATE TABLE")
                }
                Some(mut stream) => {
                    let mut writer = TableWriter::new(&prepared)?;
                    let target = rxgate_catalog::table_arrow_schema(&prepared)?;
                    while let Some(batch) = stream.next().await {
                        writer.write(to_table_batch(&batch?, &target)?).await?;
                    }
                    let n = writer.rows();
                    let mut change = TableChange::append(writer.close().await?);
                    change.properties.insert("rxgate.operation".into(), "create table as".into());
                    let outcome = writes.create(prepared, Some(change)).await?;
                    return Ok(QueryOutput::Written {
                        tag: format!("SELECT {n}"),
                        table: format!("{schema}.{name}"),
                        rows: n,
                        snapshot_id: outcome.snapshot_id,
                    });
                }
            }
        }
        DdlCommand::DropTable { table, if_exists, purge } => {
            let (schema, name) = qualify(ctx, table)?;
            super::view::refuse_view(writes, &schema, &name, "drop").await?;
            if !writes.drop(&ident(&schema, &name)?, *purge).await? && !*if_exists {
                return Err(Error::new(StatusCode::TableNotFound, format!("table \"{schema}.{name}\" does not exist")));
            }
            tag("DROP TABLE")
        }
        DdlCommand::RenameTable { table, to } => {
            writes.outside_transaction("ALTER TABLE … RENAME")?;
            let (schema, name) = qualify(ctx, table)?;
            let (to_schema, to_name) = rename_target(&schema, to)?;
            ddl::rename_table(&lake, &ident(&schema, &name)?, &ident(&to_schema, &to_name)?).await?;
            tag("ALTER TABLE")
        }
    };
    output
}

/// `(name, Arrow type, NOT NULL, comment)` of each declared column; the SQL types are read by
/// DataFusion (`CAST(NULL AS type)`), so every spelling it knows works (`string`, `int4`,
/// `varchar(20)`, `decimal(10,2)`, `timestamp`).
type ColumnSpec = (String, DataType, bool, Option<String>);

fn column_types(ctx: &SessionContext, columns: &[NewColumn]) -> Result<Vec<ColumnSpec>> {
    let empty = DFSchema::empty();
    let state = ctx.state();
    let mut seen = std::collections::HashSet::new();
    columns
        .iter()
        .map(|c| {
            if !seen.insert(c.name.clone()) {
                return Err(Error::new(
                    StatusCode::AlreadyExists,
                    format!("column \"{}\" specified more than once", c.name),
                ));
            }
            let expr = state.create_logical_expr(&format!("CAST(NULL AS {})", c.data_type), &empty)?;
            let (_, field) = datafusion::logical_expr::ExprSchemable::to_field(&expr, &empty)?;
            Ok((c.name.clone(), field.data_type().clone(), c.not_null, c.comment.clone()))
        })
        .collect()
}

/// An Iceberg schema with field ids 1..n.
fn iceberg_schema(fields: &[ColumnSpec]) -> Result<Schema> {
    let fields = fields
        .iter()
        .enumerate()
        .map(|(i, (name, data_type, not_null, comment))| {
            let ty = ddl::iceberg_type(data_type)
                .map_err(|e| Error::new(e.code, format!("column \"{name}\": {}", e.message)))?;
            let field = if *not_null {
                NestedField::required(i as i32 + 1, name, ty)
            } else {
                NestedField::optional(i as i32 + 1, name, ty)
            };
            Ok(Arc::new(match comment {
                Some(doc) => field.with_doc(doc),
                None => field,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::builder().with_fields(fields).build()?)
}

fn transform(t: PartitionTransform) -> Transform {
    match t {
        PartitionTransform::Identity => Transform::Identity,
        PartitionTransform::Year => Transform::Year,
        PartitionTransform::Month => Transform::Month,
        PartitionTransform::Day => Transform::Day,
        PartitionTransform::Hour => Transform::Hour,
        PartitionTransform::Bucket(n) => Transform::Bucket(n),
        PartitionTransform::Truncate(w) => Transform::Truncate(w),
    }
}

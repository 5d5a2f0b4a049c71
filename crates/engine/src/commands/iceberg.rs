//! Iceberg DBA statements (issue 6 §6): schema evolution (`ALTER TABLE t ADD|RENAME|DROP
//! COLUMN …`), partition evolution (`ADD|DROP PARTITION FIELD`) and moving `main` (`CALL
//! system.rollback_to_snapshot|set_current_snapshot|rollback_to_timestamp`, `ALTER TABLE t
//! EXECUTE rollback_to_snapshot`). Time travel and metadata tables are names the lakehouse
//! catalog resolves (`crate::statement` rewrites the clauses into them).
//!
//! **Policy.** Changes and rollbacks are for administrators (42501); a table the session
//! cannot see is absent first (42P01, no existence leak). Metadata tables are governed in
//! `secure.rs`: only principals who see the base table whole (no mask, no row filter, every
//! column) get them; others get 42P01, because file paths, partition values and record counts
//! would reveal filtered rows. A time-travelled table gets the base table's masks and filters.

use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use rxgate_catalog::iceberg_admin::evolve;
use rxgate_common::{Error, Result, StatusCode};

use super::{batch_output, denied, lakehouse, no_relation, resolve, tag};
use crate::planned::{Planned, QueryOutput};
use crate::statement::{Command, IcebergCommand, RollbackTarget};

/// `schema.table` of a name as the session resolves it, if the session can see that table
/// (a metadata table or a time-travelled one is not a table to change).
pub(crate) async fn visible_table(ctx: &SessionContext, parts: &[String]) -> Result<String> {
    if parts.last().is_some_and(|t| rxgate_catalog::iceberg_admin::split_table_name(t).1.is_some()) {
        return Err(no_relation(parts));
    }
    Ok(resolve(ctx, parts).await?.qualified())
}

/// `schema.table` of a visible Iceberg table, and the lakehouse: an external (Hive) or system
/// table has no Iceberg metadata for `what` (0A000).
pub(crate) async fn iceberg_table(
    ctx: &SessionContext,
    parts: &[String],
    what: &str,
) -> Result<(String, rxgate_catalog::Lakehouse)> {
    let name = visible_table(ctx, parts).await?;
    let lake = lakehouse(ctx)?;
    if let Err(e) = lake.load_table(&name).await {
        return Err(match e.code {
            StatusCode::TableNotFound => Error::new(
                StatusCode::Unsupported,
                format!("{name} is not an Iceberg table: {what} apply to Iceberg tables only"),
            ),
            _ => e,
        });
    }
    Ok((name, lake))
}

/// Plans an Iceberg DBA statement: the table must be visible to the session (else 42P01), and
/// the session an administrator's (else 42501).
pub(crate) async fn plan(ctx: &SessionContext, cmd: IcebergCommand, is_admin: bool) -> Result<Planned> {
    let name = visible_table(ctx, cmd.table()).await?;
    if !is_admin {
        let what = match &cmd {
            IcebergCommand::Schema { .. } | IcebergCommand::Partition { .. } | IcebergCommand::SortOrder { .. } => {
                "ALTER TABLE"
            }
            IcebergCommand::Rollback { .. } => "rolling back a table",
        };
        return Err(denied(&format!("{what} on table {name}")));
    }
    let schema = schema(&cmd);
    Ok(Planned::Command(Command::Iceberg(cmd), schema))
}

/// Result schema: CALL returns (previous_snapshot_id, current_snapshot_id).
fn schema(cmd: &IcebergCommand) -> Option<SchemaRef> {
    match cmd {
        IcebergCommand::Rollback { returns_row: true, .. } => Some(Arc::new(Schema::new(vec![
            Field::new("previous_snapshot_id", DataType::Int64, true),
            Field::new("current_snapshot_id", DataType::Int64, false),
        ]))),
        _ => None,
    }
}

/// Runs an Iceberg DBA statement (planned by [`plan`], so permitted).
pub(crate) async fn execute(ctx: &SessionContext, cmd: &IcebergCommand) -> Result<QueryOutput> {
    let (name, lake) = iceberg_table(ctx, cmd.table(), "column, partition field and snapshot changes").await?;
    match cmd {
        IcebergCommand::Schema { changes, .. } => {
            let id = evolve::evolve_schema(&lake, &name, changes).await?;
            tracing::info!(table = %name, schema_id = id, "schema evolved");
            tag("ALTER TABLE")
        }
        IcebergCommand::Partition { change, .. } => {
            let id = evolve::evolve_partition(&lake, &name, change).await?;
            tracing::info!(table = %name, spec_id = id, "partition spec evolved");
            tag("ALTER TABLE")
        }
        IcebergCommand::SortOrder { keys, .. } => {
            let id = evolve::set_sort_order(&lake, &name, keys).await?;
            tracing::info!(table = %name, sort_order_id = id, "sort order set");
            tag("ALTER TABLE")
        }
        IcebergCommand::Rollback { target, returns_row, .. } => {
            let moved = match target {
                RollbackTarget::Snapshot { id, ancestor_only } => {
                    evolve::set_current_snapshot(&lake, &name, *id, *ancestor_only).await?
                }
                RollbackTarget::Timestamp(ms) => evolve::rollback_to_timestamp(&lake, &name, *ms).await?,
            };
            tracing::info!(table = %name, from = ?moved.previous_snapshot_id, to = moved.current_snapshot_id, "current snapshot moved");
            if !returns_row {
                return tag("ALTER TABLE EXECUTE");
            }
            let schema = schema(cmd).expect("CALL has a schema");
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![moved.previous_snapshot_id])),
                    Arc::new(Int64Array::from(vec![moved.current_snapshot_id])),
                ],
            )
            .map_err(|e| Error::internal(e.to_string()))?;
            batch_output(batch)
        }
    }
}

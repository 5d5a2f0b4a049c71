//! Table maintenance procedures (`rxgate_catalog::maintenance`): snapshot expiry, orphan-file
//! removal and compaction, as `CALL system.…` (a result row: Spark's counts, or the orphan
//! files) and Trino's `ALTER TABLE … EXECUTE …` (a tag). Each run is recorded in
//! `system.maintenance_history`, with its outcome, and audited like every statement.
//!
//! **Policy.** For administrators only (42501); a table the session cannot see is 42P01 first.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;
use rxgate_catalog::maintenance::history::{self, HistoryEntry};
use rxgate_catalog::maintenance::{compact, expire, orphans};
use rxgate_common::{Error, Result};

use super::{batch_output, denied, tag};
use crate::planned::{Planned, QueryOutput};
use crate::statement::{Command, Cutoff, MaintenanceAction, MaintenanceCommand};

/// Plans a procedure: the table must be visible (else 42P01) and an Iceberg table, the
/// session an administrator's (else 42501).
pub(crate) async fn plan(ctx: &SessionContext, cmd: MaintenanceCommand, is_admin: bool) -> Result<Planned> {
    let name = super::iceberg::visible_table(ctx, &cmd.table).await?;
    if !is_admin {
        return Err(denied(&format!("{} on table {name}", procedure(&cmd.action))));
    }
    let schema = cmd.returns_rows.then(|| schema(&cmd.action));
    Ok(Planned::Command(Command::Maintenance(cmd), schema))
}

fn procedure(action: &MaintenanceAction) -> &'static str {
    match action {
        MaintenanceAction::ExpireSnapshots { .. } => "expire_snapshots",
        MaintenanceAction::RemoveOrphanFiles { .. } => "remove_orphan_files",
        MaintenanceAction::RewriteDataFiles { .. } => "rewrite_data_files",
        MaintenanceAction::RewriteManifests => "rewrite_manifests",
    }
}

fn schema(action: &MaintenanceAction) -> SchemaRef {
    let counts = |names: &[&str]| {
        Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Int64, false)).collect::<Vec<_>>()))
    };
    match action {
        MaintenanceAction::ExpireSnapshots { .. } => counts(&[
            "deleted_data_files_count",
            "deleted_manifest_files_count",
            "deleted_manifest_lists_count",
            "deleted_metadata_files_count",
            "expired_snapshots_count",
        ]),
        MaintenanceAction::RemoveOrphanFiles { .. } => {
            Arc::new(Schema::new(vec![Field::new("orphan_file_location", DataType::Utf8, false)]))
        }
        MaintenanceAction::RewriteDataFiles { .. } => counts(&[
            "rewritten_data_files_count",
            "added_data_files_count",
            "rewritten_bytes_count",
            "failed_data_files_count",
        ]),
        MaintenanceAction::RewriteManifests => counts(&["rewritten_manifests_count", "added_manifests_count"]),
    }
}

fn millis(cutoff: Cutoff) -> i64 {
    match cutoff {
        Cutoff::At(ms) => ms,
        Cutoff::Ago(ms) => chrono::Utc::now().timestamp_millis() - ms,
    }
}

/// Runs a planned procedure and records it in the maintenance history.
pub(crate) async fn execute(ctx: &SessionContext, cmd: &MaintenanceCommand) -> Result<QueryOutput> {
    let (name, lake) = super::iceberg::iceberg_table(ctx, &cmd.table, "maintenance procedures").await?;
    let started = Instant::now();
    let mut entry = HistoryEntry {
        table: name.clone(),
        action: procedure(&cmd.action).to_string(),
        started_ms: chrono::Utc::now().timestamp_millis(),
        outcome: "ok".into(),
        ..Default::default()
    };
    let done = run(ctx, &lake, &name, &cmd.action, &mut entry).await;
    entry.duration_ms = started.elapsed().as_millis() as i64;
    if let Err(e) = &done {
        entry.outcome = "failed".into();
        entry.detail = e.message.clone();
    }
    history::record(&lake, &entry).await;
    let columns = done?;
    if !cmd.returns_rows {
        return tag("ALTER TABLE EXECUTE");
    }
    let batch = RecordBatch::try_new(schema(&cmd.action), columns).map_err(|e| Error::internal(e.to_string()))?;
    batch_output(batch)
}

/// Runs the action, fills the history entry, and returns the result row's columns.
async fn run(
    ctx: &SessionContext,
    lake: &rxgate_catalog::Lakehouse,
    name: &str,
    action: &MaintenanceAction,
    entry: &mut HistoryEntry,
) -> Result<Vec<ArrayRef>> {
    let count = |n: u64| Arc::new(Int64Array::from(vec![n as i64])) as ArrayRef;
    Ok(match action {
        MaintenanceAction::ExpireSnapshots { older_than, retain_last } => {
            let options = expire::ExpireOptions { older_than_ms: older_than.map(millis), retain_last: *retain_last };
            let o = expire::expire_snapshots(lake, name, options).await?;
            entry.files_removed =
                (o.deleted_data_files + o.deleted_manifests + o.deleted_manifest_lists + o.deleted_metadata_files)
                    as i64;
            entry.bytes_removed = o.deleted_data_bytes as i64;
            entry.snapshot_id = lake.load_table(name).await?.metadata().current_snapshot_id();
            entry.detail = format!(
                "{} snapshots expired; {} data files, {} manifests, {} manifest lists, {} metadata files deleted",
                o.expired_snapshots,
                o.deleted_data_files,
                o.deleted_manifests,
                o.deleted_manifest_lists,
                o.deleted_metadata_files
            );
            vec![
                count(o.deleted_data_files),
                count(o.deleted_manifests),
                count(o.deleted_manifest_lists),
                count(o.deleted_metadata_files),
                count(o.expired_snapshots),
            ]
        }
        MaintenanceAction::RemoveOrphanFiles { older_than, dry_run } => {
            let cutoff = older_than.map(millis).unwrap_or_else(|| orphans::older_than(orphans::DEFAULT_ORPHAN_AGE_MS));
            let o = orphans::remove_orphan_files(lake, name, cutoff, *dry_run).await?;
            if *dry_run {
                entry.outcome = "dry run".into();
            } else {
                entry.files_removed = o.orphans.len() as i64;
                entry.bytes_removed = o.bytes as i64;
            }
            entry.detail = format!("{} orphan files ({} bytes); {} files kept", o.orphans.len(), o.bytes, o.kept);
            vec![Arc::new(StringArray::from(o.orphans)) as ArrayRef]
        }
        MaintenanceAction::RewriteDataFiles { filter, target_size, threshold, min_input_files } => {
            let filters = match filter {
                None => vec![],
                Some(sql) => {
                    let table = lake.load_table(name).await?;
                    let table = rxgate_catalog::iceberg_admin::with_current_schema(table)?;
                    let schema = rxgate_catalog::table_arrow_schema(&table)?;
                    let df_schema = Arc::new(DFSchema::try_from(schema.as_ref().clone())?);
                    let expr = ctx.state().create_logical_expr(sql, &df_schema)?;
                    // Typed and folded (`DATE '…'` a date literal), as iceberg's pruning needs.
                    let simplifier = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(
                        datafusion::logical_expr::simplify::SimplifyContext::default()
                            .with_schema(df_schema.clone())
                            .with_current_time(),
                    );
                    vec![simplifier.simplify(simplifier.coerce(expr, &df_schema)?)?]
                }
            };
            let options = compact::CompactOptions {
                target_size: *target_size,
                threshold: *threshold,
                min_input_files: *min_input_files,
                filters,
            };
            let o = compact::rewrite_data_files(lake, name, &options).await?;
            entry.snapshot_id = o.snapshot_id;
            entry.files_removed = o.rewritten_files as i64;
            entry.bytes_removed = o.rewritten_bytes as i64;
            entry.files_written = o.added_files as i64;
            entry.bytes_written = o.added_bytes as i64;
            entry.detail = format!("{} files rewritten into {} ({} rows)", o.rewritten_files, o.added_files, o.rows);
            vec![count(o.rewritten_files), count(o.added_files), count(o.rewritten_bytes), count(0)]
        }
        MaintenanceAction::RewriteManifests => {
            let o = rxgate_catalog::maintenance::manifests::rewrite_manifests(lake, name).await?;
            entry.snapshot_id = o.snapshot_id;
            entry.files_removed = o.rewritten_manifests as i64;
            entry.files_written = o.added_manifests as i64;
            entry.detail = format!("{} manifests merged into {}", o.rewritten_manifests, o.added_manifests);
            vec![count(o.rewritten_manifests), count(o.added_manifests)]
        }
    })
}

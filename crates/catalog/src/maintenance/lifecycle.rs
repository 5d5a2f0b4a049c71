//! Declarative data lifecycle per table (`[table.lifecycle]` in `catalog/*.toml`), on a date
//! identity partition (the delivery date):
//!
//! - **archive** deliveries older than `online_months` into `archive_table` (another schema,
//!   optionally on another warehouse location such as a colder bucket): the delivery's rows
//!   are rewritten into the archive table, and the archive's append and the source's partition
//!   removal are **one catalog-database transaction** (`txn::commit_all`), so a failure leaves
//!   the delivery in one place or the other, never lost and never twice;
//! - **purge** deliveries older than `purge_after_months` (from the archive, or from the table
//!   if they were never archived): the partitions are deleted in one transaction, then both
//!   tables' snapshots are expired (keeping the current one), which deletes every file that
//!   held them; a **proof** then reads the partition column of every data file left under both
//!   tables' locations and fails if a purged delivery's row remains;
//! - expire snapshots (`expire_after`, `retain_last`) and compact (`compact = true`).
//!
//! `plan` says what a run would do (files, rows, bytes); `run` does it. Each action is recorded
//! in the maintenance history.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, Months, NaiveDate};
use iceberg::spec::{DataFile, Literal, PrimitiveLiteral};
use iceberg::table::Table;
use iceberg::TableCreation;
use rxgate_common::{Error, Result, StatusCode};
use serde::Deserialize;

use super::history::{self, HistoryEntry};
use super::{compact, expire, now_ms};
use crate::txn::{commit_all, Pending};
use crate::{read_data_file, table_arrow_schema, Lakehouse, Removal, TableChange, TableDef, TableWriter};

/// `[table.lifecycle]` of a table definition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecyclePolicy {
    /// The date identity-partition column deliveries are told apart by.
    #[serde(default = "default_partition")]
    pub partition: String,
    /// Deliveries older than this many months move to `archive_table`.
    pub online_months: Option<u32>,
    /// `namespace.table` of the archive (created on first use, like the table).
    pub archive_table: Option<String>,
    /// Warehouse location of the archive table (default: the warehouse).
    pub archive_location: Option<String>,
    /// Deliveries older than this many months are purged: deleted, their files removed.
    pub purge_after_months: Option<u32>,
    /// Expire snapshots older than this many days; none: no expiry beyond purges.
    pub expire_after_days: Option<u32>,
    /// Snapshots of `main` always kept by expiry.
    pub retain_last: Option<usize>,
    /// Compact small files after the moves.
    #[serde(default)]
    pub compact: bool,
}

fn default_partition() -> String {
    "delivery_date".into()
}

/// One delivery's live data in one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The partition date.
    pub date: Option<NaiveDate>,
    /// Live data files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What a lifecycle run does (or did) to one table.
#[derive(Debug, Clone, Default)]
pub struct TablePlan {
    /// `namespace.table`.
    pub table: String,
    /// Deliveries moved to the archive.
    pub archive: Vec<Delivery>,
    /// Deliveries purged, with the table they are in.
    pub purge: Vec<(String, Delivery)>,
    /// Snapshots expiry would remove (beyond purges).
    pub expire_snapshots: u64,
    /// Whether compaction runs.
    pub compact: bool,
}

impl TablePlan {
    /// Human lines, one per action.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![];
        let d = |x: &Delivery| x.date.map(|d| d.to_string()).unwrap_or_default();
        for x in &self.archive {
            out.push(format!(
                "{}: archive {} ({} files, {} rows, {} bytes)",
                self.table,
                d(x),
                x.files,
                x.rows,
                x.bytes
            ));
        }
        for (t, x) in &self.purge {
            out.push(format!(
                "{}: purge {} from {t} ({} files, {} rows, {} bytes)",
                self.table,
                d(x),
                x.files,
                x.rows,
                x.bytes
            ));
        }
        if self.expire_snapshots > 0 {
            out.push(format!("{}: expire {} snapshots", self.table, self.expire_snapshots));
        }
        if self.compact {
            out.push(format!("{}: compact small files", self.table));
        }
        if out.is_empty() {
            out.push(format!("{}: nothing to do", self.table));
        }
        out
    }
}

fn days_to_date(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
}

fn date_to_days(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - 719_163
}

/// The partition date of a data file (in its own spec), if the spec has the field.
fn file_date(table: &Table, spec_id: i32, file: &DataFile, field: &str) -> Option<i32> {
    let spec = table.metadata().partition_spec_by_id(spec_id)?;
    let idx = spec.fields().iter().position(|f| f.name == field)?;
    match file.partition().fields().get(idx)?.as_ref()?.as_primitive_literal()? {
        PrimitiveLiteral::Int(days) => Some(days),
        _ => None,
    }
}

/// The live deliveries of a table: date (days) → files, rows, bytes.
async fn deliveries(table: &Table, field: &str) -> Result<BTreeMap<i32, Delivery>> {
    let mut out: BTreeMap<i32, Delivery> = BTreeMap::new();
    for (spec_id, f) in crate::write::live_entries(table).await? {
        let Some(days) = file_date(table, spec_id, &f, field) else { continue };
        let d = out.entry(days).or_insert_with(|| Delivery { date: days_to_date(days), ..Default::default() });
        d.files += 1;
        d.rows += f.record_count();
        d.bytes += f.file_size_in_bytes();
    }
    Ok(out)
}

/// The live files of one delivery.
async fn delivery_files(table: &Table, field: &str, days: i32) -> Result<Vec<String>> {
    let live = crate::write::live_entries(table).await?;
    Ok(live
        .into_iter()
        .filter(|(spec_id, f)| file_date(table, *spec_id, f, field) == Some(days))
        .map(|(_, f)| f.file_path().to_string())
        .collect())
}

async fn load_if_exists(lake: &Lakehouse, name: &str) -> Result<Option<Table>> {
    match lake.load_table(name).await {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.code == StatusCode::TableNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn cutoff(as_of: NaiveDate, months: Option<u32>) -> Option<i32> {
    months.and_then(|m| as_of.checked_sub_months(Months::new(m))).map(date_to_days)
}

/// What a run would do to `def`'s table on `as_of`.
pub async fn plan(lake: &Lakehouse, def: &TableDef, as_of: NaiveDate) -> Result<TablePlan> {
    let mut plan = TablePlan { table: def.name.clone(), ..Default::default() };
    let Some(policy) = &def.lifecycle else { return Ok(plan) };
    let Some(table) = load_if_exists(lake, &def.name).await? else { return Ok(plan) };
    let purge_before = cutoff(as_of, policy.purge_after_months);
    let archive_before = cutoff(as_of, policy.online_months);
    for (days, d) in deliveries(&table, &policy.partition).await? {
        if purge_before.is_some_and(|p| days < p) {
            plan.purge.push((def.name.clone(), d));
        } else if archive_before.is_some_and(|a| days < a) && policy.archive_table.is_some() {
            plan.archive.push(d);
        }
    }
    if let (Some(archive), Some(p)) = (&policy.archive_table, purge_before) {
        if let Some(table) = load_if_exists(lake, archive).await? {
            for (days, d) in deliveries(&table, &policy.partition).await? {
                if days < p {
                    plan.purge.push((archive.clone(), d));
                }
            }
        }
    }
    if let Some(days) = policy.expire_after_days {
        let older = now_ms() - i64::from(days) * 86_400_000;
        let keep = policy.retain_last.unwrap_or(1).max(1);
        let snapshots: Vec<i64> = table.metadata().snapshots().map(|s| s.timestamp_ms()).collect();
        plan.expire_snapshots =
            snapshots.iter().filter(|t| **t < older).count().min(snapshots.len().saturating_sub(keep)) as u64;
    }
    plan.compact = policy.compact;
    Ok(plan)
}

/// Runs `def`'s lifecycle on `as_of` (with `dry_run`, only plans). Returns the plan it carried
/// out.
pub async fn run(lake: &Lakehouse, def: &TableDef, as_of: NaiveDate, dry_run: bool) -> Result<TablePlan> {
    let plan = plan(lake, def, as_of).await?;
    let Some(policy) = &def.lifecycle else { return Ok(plan) };
    if dry_run {
        return Ok(plan);
    }
    let field = &policy.partition;
    // Purge first (what is old enough for it is not worth archiving), then archive.
    if !plan.purge.is_empty() {
        // Both tables' histories may hold a purged delivery (the table's, from before it was
        // archived): both are expired and proven.
        let mut tables = vec![def.name.clone()];
        if let Some(archive) = &policy.archive_table {
            if load_if_exists(lake, archive).await?.is_some() {
                tables.push(archive.clone());
            }
        }
        recorded(lake, &def.name, "purge", purge(lake, &plan, field, &tables)).await?;
    }
    for d in &plan.archive {
        let (Some(archive), Some(date)) = (&policy.archive_table, d.date) else { continue };
        recorded(lake, &def.name, "archive", archive_delivery(lake, def, policy, archive, date)).await?;
    }
    if let Some(days) = policy.expire_after_days {
        let options = expire::ExpireOptions {
            older_than_ms: Some(now_ms() - i64::from(days) * 86_400_000),
            retain_last: policy.retain_last,
        };
        let name = def.name.clone();
        recorded(lake, &def.name, "expire_snapshots", async {
            let o = expire::expire_snapshots(lake, &name, options).await?;
            Ok(HistoryEntry {
                files_removed: (o.deleted_data_files + o.deleted_manifests + o.deleted_manifest_lists) as i64,
                bytes_removed: o.deleted_data_bytes as i64,
                detail: format!("{} snapshots expired", o.expired_snapshots),
                ..Default::default()
            })
        })
        .await?;
    }
    if policy.compact {
        let name = def.name.clone();
        recorded(lake, &def.name, "rewrite_data_files", async {
            let o = compact::rewrite_data_files(lake, &name, &compact::CompactOptions::default()).await?;
            Ok(HistoryEntry {
                snapshot_id: o.snapshot_id,
                files_removed: o.rewritten_files as i64,
                bytes_removed: o.rewritten_bytes as i64,
                files_written: o.added_files as i64,
                bytes_written: o.added_bytes as i64,
                detail: format!("{} files rewritten into {}", o.rewritten_files, o.added_files),
                ..Default::default()
            })
        })
        .await?;
    }
    Ok(plan)
}

/// Runs one action and records it (its outcome, and its error if it failed).
async fn recorded(
    lake: &Lakehouse,
    table: &str,
    action: &str,
    work: impl std::future::Future<Output = Result<HistoryEntry>>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let started_ms = now_ms();
    let done = work.await;
    let mut entry = match &done {
        Ok(e) => e.clone(),
        Err(e) => HistoryEntry { outcome: "failed".into(), detail: e.message.clone(), ..Default::default() },
    };
    entry.table = table.to_string();
    entry.action = format!("lifecycle {action}");
    entry.started_ms = started_ms;
    entry.duration_ms = started.elapsed().as_millis() as i64;
    if entry.outcome.is_empty() {
        entry.outcome = "ok".into();
    }
    history::record(lake, &entry).await;
    done.map(|_| ())
}

/// Moves one delivery of `def`'s table into the archive table: the rows rewritten there, then
/// the archive's append (or creation) and the table's partition removal in one transaction.
async fn archive_delivery(
    lake: &Lakehouse,
    def: &TableDef,
    policy: &LifecyclePolicy,
    archive: &str,
    date: NaiveDate,
) -> Result<HistoryEntry> {
    let source = lake.load_table(&def.name).await?;
    let source = crate::iceberg_admin::with_current_schema(source)?;
    let days = date_to_days(date);
    let files = delivery_files(&source, &policy.partition, days).await?;
    let (target, created) = match load_if_exists(lake, archive).await? {
        Some(t) => (t, false),
        None => (new_archive_table(lake, &source, archive, policy.archive_location.as_deref()).await?, true),
    };
    let schema = table_arrow_schema(&target)?;
    let mut writer = TableWriter::new(&target)?;
    for f in &files {
        for batch in read_data_file(lake.storage(), f, &schema).await? {
            writer.write(batch).await?;
        }
    }
    let rows = writer.rows();
    let added = writer.close().await?;
    let bytes: u64 = added.iter().map(|f| f.file_size_in_bytes()).sum();
    let n_added = added.len();
    let value = Literal::date(days);
    let mut into_archive = TableChange {
        add: added,
        remove: Removal::Partition { field: policy.partition.clone(), value: value.clone() },
        properties: HashMap::new(),
    };
    into_archive.properties.insert("rxgate.operation".into(), format!("archive of {} {date}", def.name));
    let mut out_of_source = TableChange {
        add: vec![],
        remove: Removal::Partition { field: policy.partition.clone(), value },
        properties: HashMap::new(),
    };
    out_of_source.properties.insert("rxgate.operation".into(), format!("archived to {archive}"));
    let archive_ident = crate::lakehouse::parse_ident(archive)?;
    let archive_pending = if created {
        Pending::Create { table: Box::new(target), changes: vec![into_archive] }
    } else {
        Pending::Change { changes: vec![into_archive] }
    };
    rxgate_common::failpoint("lifecycle.before_move");
    let snapshots = commit_all(
        lake,
        &[
            (archive_ident, archive_pending),
            (source.identifier().clone(), Pending::Change { changes: vec![out_of_source] }),
        ],
    )
    .await?;
    Ok(HistoryEntry {
        snapshot_id: snapshots.get(1).copied().flatten(),
        files_removed: files.len() as i64,
        files_written: n_added as i64,
        bytes_written: bytes as i64,
        detail: format!("delivery {date}: {rows} rows moved to {archive}"),
        ..Default::default()
    })
}

/// An empty table like `source` (schema, partition spec, sort order, properties) at the
/// archive's name and location, not registered yet.
async fn new_archive_table(lake: &Lakehouse, source: &Table, name: &str, location: Option<&str>) -> Result<Table> {
    let ident = crate::lakehouse::parse_ident(name)?;
    let ns = ident.namespace().join(".");
    crate::ddl::create_namespace(lake, &ns, true).await?;
    let md = source.metadata();
    let base = location.unwrap_or(&lake.config().warehouse).trim_end_matches('/').to_string();
    let creation = TableCreation::builder()
        .name(ident.name().to_string())
        .location(format!("{base}/{}/{}", ident.namespace().join("/"), ident.name()))
        .schema(md.current_schema().as_ref().clone())
        .partition_spec(md.default_partition_spec().as_ref().clone().into_unbound())
        .sort_order(md.default_sort_order().as_ref().clone())
        .properties(md.properties().clone())
        .build();
    let metadata = iceberg::spec::TableMetadataBuilder::from_table_creation(creation)?.build()?.metadata;
    Ok(Table::builder()
        .file_io(lake.file_io())
        .identifier(ident)
        .metadata(metadata)
        .runtime(iceberg::Runtime::current())
        .build()?)
}

/// Deletes the purged deliveries (one transaction over both tables), expires both tables'
/// snapshots down to the current one (their files go), then proves no purged row is left.
async fn purge(lake: &Lakehouse, plan: &TablePlan, field: &str, tables: &[String]) -> Result<HistoryEntry> {
    let mut by_table: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, d) in &plan.purge {
        if let Some(date) = d.date {
            by_table.entry(t.clone()).or_default().push(date_to_days(date));
        }
    }
    let mut pending = vec![];
    for (t, dates) in &by_table {
        let changes = dates
            .iter()
            .map(|days| {
                let mut c = TableChange {
                    add: vec![],
                    remove: Removal::Partition { field: field.to_string(), value: Literal::date(*days) },
                    properties: HashMap::new(),
                };
                c.properties.insert("rxgate.operation".into(), "lifecycle purge".into());
                c
            })
            .collect();
        pending.push((crate::lakehouse::parse_ident(t)?, Pending::Change { changes }));
    }
    rxgate_common::failpoint("lifecycle.before_purge");
    let snapshots = commit_all(lake, &pending).await?;
    let mut removed = 0u64;
    let mut bytes = 0u64;
    for t in tables {
        let o = expire::expire_snapshots(
            lake,
            t,
            expire::ExpireOptions { older_than_ms: Some(now_ms() + 1), retain_last: Some(1) },
        )
        .await?;
        removed += o.deleted_data_files + o.deleted_manifests + o.deleted_manifest_lists + o.deleted_metadata_files;
        bytes += o.deleted_data_bytes;
    }
    let purged: HashSet<i32> = by_table.values().flatten().copied().collect();
    let checked = prove_purged(lake, tables.iter().map(String::as_str), field, &purged).await?;
    let rows: u64 = plan.purge.iter().map(|(_, d)| d.rows).sum();
    Ok(HistoryEntry {
        snapshot_id: snapshots.first().copied().flatten(),
        files_removed: removed as i64,
        bytes_removed: bytes as i64,
        detail: format!(
            "{} deliveries purged ({rows} rows); proof: {checked} data files read, none holds a purged delivery",
            purged.len()
        ),
        ..Default::default()
    })
}

/// Reads the partition column of every data file under the tables' locations (referenced or
/// not) and fails if one holds a purged date. Returns how many files it read.
pub async fn prove_purged<'a>(
    lake: &Lakehouse,
    tables: impl IntoIterator<Item = &'a str>,
    field: &str,
    purged: &HashSet<i32>,
) -> Result<u64> {
    let mut checked = 0;
    for name in tables {
        let table = lake.load_table(name).await?;
        let schema = table_arrow_schema(&table)?;
        let Ok(index) = schema.index_of(field) else { continue };
        let only = std::sync::Arc::new(schema.project(&[index]).map_err(|e| Error::internal(e.to_string()))?);
        let location = format!("{}/data/", table.metadata().location().trim_end_matches('/'));
        let listed = lake.storage().list_objects(&location).await?;
        for (path, _) in listed.into_iter().filter(|(p, _)| p.ends_with(".parquet")) {
            for batch in read_data_file(lake.storage(), &path, &only).await? {
                let dates = batch.column(0);
                let dates = dates
                    .as_any()
                    .downcast_ref::<arrow::array::Date32Array>()
                    .ok_or_else(|| Error::internal(format!("{field} is not a date column")))?;
                if let Some(bad) = dates.iter().flatten().find(|d| purged.contains(d)) {
                    return Err(Error::new(
                        StatusCode::Internal,
                        format!(
                            "purge proof failed: {path} still holds rows of {}",
                            days_to_date(bad).map(|d| d.to_string()).unwrap_or_default()
                        ),
                    ));
                }
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|e| Error::invalid(format!("date {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_days_round_trip() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        assert_eq!(date_to_days(d), 19753);
        assert_eq!(days_to_date(19753), Some(d));
        assert_eq!(cutoff(d, Some(36)), Some(date_to_days(NaiveDate::from_ymd_opt(2021, 1, 31).unwrap())));
        assert_eq!(cutoff(d, None), None);
    }

    #[test]
    fn a_policy_reads_from_toml() {
        let p: LifecyclePolicy = toml::from_str(
            "online_months = 36\narchive_table = \"health_archive.prescriber_drug\"\npurge_after_months = 84\ncompact = true",
        )
        .unwrap();
        assert_eq!(p.partition, "delivery_date");
        assert_eq!((p.online_months, p.purge_after_months, p.compact), (Some(36), Some(84), true));
    }
}

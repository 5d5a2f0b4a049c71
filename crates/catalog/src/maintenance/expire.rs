//! Snapshot expiry (Spark's `expire_snapshots`, Trino's `EXECUTE expire_snapshots`): the
//! snapshots older than a threshold are removed from the metadata — except the current one,
//! every branch or tag head and the last `retain_last` of `main`'s history — in one
//! compare-and-swap commit; then the files only they reached are deleted, and the metadata
//! files the metadata log no longer keeps (`write.metadata.previous-versions-max`).
//!
//! A query already running on an expired snapshot may find its files gone: it fails with a
//! storage error (58030), never with wrong rows (files are immutable; a missing one is an
//! error, not an empty result).

use std::collections::HashSet;

use iceberg::spec::SnapshotRef;
use iceberg::table::Table;
use rxgate_common::{Error, Result, StatusCode};

use super::{delete_all, metadata_version, now_ms, property, reach};
use crate::Lakehouse;

/// Iceberg's default `history.expire.max-snapshot-age-ms`: 5 days.
pub const DEFAULT_MAX_SNAPSHOT_AGE_MS: i64 = 5 * 24 * 3600 * 1000;

/// What to expire; `None` takes the table's properties (`history.expire.max-snapshot-age-ms`,
/// `history.expire.min-snapshots-to-keep`), then Iceberg's defaults (5 days, 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpireOptions {
    /// Snapshots committed before this time (epoch ms) may expire.
    pub older_than_ms: Option<i64>,
    /// The number of `main`'s most recent snapshots always kept (at least 1).
    pub retain_last: Option<usize>,
}

/// What an expiry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireOutcome {
    /// Snapshots removed from the metadata.
    pub expired_snapshots: u64,
    /// Data files deleted.
    pub deleted_data_files: u64,
    /// Their bytes.
    pub deleted_data_bytes: u64,
    /// Manifests deleted.
    pub deleted_manifests: u64,
    /// Manifest lists deleted.
    pub deleted_manifest_lists: u64,
    /// Old metadata files deleted.
    pub deleted_metadata_files: u64,
}

const MAX_ATTEMPTS: u32 = 8;

/// The snapshot ids to keep: every ref head (read from the metadata's JSON: iceberg-rust has
/// no accessor for all refs), the last `retain_last` of main's ancestry, and everything at or
/// after `older_than`.
fn kept(table: &Table, older_than: i64, retain_last: usize) -> Result<HashSet<i64>> {
    let md = table.metadata();
    let mut keep = HashSet::new();
    let json = serde_json::to_value(md).map_err(|e| Error::internal(format!("table metadata as JSON: {e}")))?;
    if let Some(refs) = json.get("refs").and_then(|r| r.as_object()) {
        keep.extend(refs.values().filter_map(|r| r.get("snapshot-id").and_then(|v| v.as_i64())));
    }
    let mut next = md.current_snapshot_id();
    let mut n = 0;
    while let (Some(id), true) = (next, n < retain_last) {
        keep.insert(id);
        n += 1;
        next = md.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    keep.extend(md.snapshots().filter(|s| s.timestamp_ms() >= older_than).map(|s| s.snapshot_id()));
    Ok(keep)
}

/// Expires `table_name`'s old snapshots and deletes the files only they reached.
///
/// Before the commit, the files to delete are written to a pending list beside the metadata
/// (`metadata/rxgate-expire-<uuid>.pending.json`); it is removed when they are gone. A run
/// interrupted after its commit (a crash, a kill) leaves the list, and the next run deletes
/// what it names that no snapshot reaches any more, then goes on.
pub async fn expire_snapshots(lake: &Lakehouse, table_name: &str, options: ExpireOptions) -> Result<ExpireOutcome> {
    let mut outcome = finish_pending(lake, table_name).await?;
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.load_table(table_name).await?;
        let older_than = options.older_than_ms.unwrap_or_else(|| {
            now_ms() - property(&table, "history.expire.max-snapshot-age-ms", DEFAULT_MAX_SNAPSHOT_AGE_MS)
        });
        let retain_last = options
            .retain_last
            .unwrap_or_else(|| property(&table, "history.expire.min-snapshots-to-keep", 1usize))
            .max(1);
        let keep = kept(&table, older_than, retain_last)?;
        let md = table.metadata();
        let (kept_snapshots, expired): (Vec<&SnapshotRef>, Vec<&SnapshotRef>) =
            md.snapshots().partition(|s| keep.contains(&s.snapshot_id()));
        if expired.is_empty() {
            outcome.deleted_metadata_files += delete_old_metadata(lake, md, table.metadata_location()).await?;
            return Ok(outcome);
        }
        let expired_ids: Vec<i64> = expired.iter().map(|s| s.snapshot_id()).collect();
        // What only the expired snapshots reach: data files no kept snapshot has live,
        // manifests and manifest lists no kept snapshot lists.
        let kept_reach = reach(&table, kept_snapshots).await?;
        let expired_reach = reach(&table, expired).await?;
        let data: Vec<(String, u64)> =
            expired_reach.all.into_iter().filter(|(p, _)| !kept_reach.live.contains_key(p)).collect();
        let manifests: Vec<String> = expired_reach.manifests.difference(&kept_reach.manifests).cloned().collect();
        let lists: Vec<String> = expired_reach.lists.difference(&kept_reach.lists).cloned().collect();
        let pending = Pending::write(lake, md.location(), &data, &manifests, &lists).await?;
        let new_md = md
            .clone()
            .into_builder(table.metadata_location().map(str::to_string))
            .remove_snapshots(&expired_ids)
            .build()?
            .metadata;
        let Some(location) = crate::commit::swap_metadata(lake, &table, new_md.clone()).await? else {
            tracing::info!(table = table_name, attempt, "expiry lost a commit race, retrying");
            pending.remove(lake).await?;
            continue;
        };
        rxgate_common::failpoint("expire.after_commit");
        let storage = lake.storage();
        outcome.expired_snapshots += expired_ids.len() as u64;
        outcome.deleted_data_bytes += data.iter().map(|(_, n)| n).sum::<u64>();
        outcome.deleted_data_files += delete_all(storage, data.into_iter().map(|(p, _)| p).collect()).await?;
        outcome.deleted_manifests += delete_all(storage, manifests).await?;
        outcome.deleted_manifest_lists += delete_all(storage, lists).await?;
        pending.remove(lake).await?;
        outcome.deleted_metadata_files += delete_old_metadata(lake, &new_md, Some(&location)).await?;
        return Ok(outcome);
    }
    Err(Error::new(
        StatusCode::CommitConflict,
        format!("{table_name}: expiry gave up after {MAX_ATTEMPTS} conflicting commits"),
    ))
}

const PENDING_PREFIX: &str = "rxgate-expire-";
const PENDING_SUFFIX: &str = ".pending.json";

/// The files an expiry is about to delete, kept beside the metadata until they are gone.
struct Pending {
    location: String,
}

impl Pending {
    async fn write(
        lake: &Lakehouse,
        table_location: &str,
        data: &[(String, u64)],
        manifests: &[String],
        lists: &[String],
    ) -> Result<Self> {
        let location = format!(
            "{}/metadata/{PENDING_PREFIX}{}{PENDING_SUFFIX}",
            table_location.trim_end_matches('/'),
            uuid::Uuid::new_v4()
        );
        let files: Vec<&str> = data
            .iter()
            .map(|(p, _)| p.as_str())
            .chain(manifests.iter().map(String::as_str))
            .chain(lists.iter().map(String::as_str))
            .collect();
        let text = serde_json::to_vec(&files).map_err(|e| Error::internal(e.to_string()))?;
        lake.storage().write(&location, text.into()).await?;
        Ok(Self { location })
    }

    async fn remove(self, lake: &Lakehouse) -> Result<()> {
        delete_all(lake.storage(), vec![self.location]).await.map(|_| ())
    }
}

/// Finishes the deletions of expiries that were interrupted after their commit: each pending
/// list's files that no snapshot of the table reaches now are deleted, then the list.
async fn finish_pending(lake: &Lakehouse, table_name: &str) -> Result<ExpireOutcome> {
    let table = lake.load_table(table_name).await?;
    let dir = format!("{}/metadata/", table.metadata().location().trim_end_matches('/'));
    let pending: Vec<String> = lake
        .storage()
        .list_files(&dir, "json")
        .await?
        .into_iter()
        .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(PENDING_PREFIX) && n.ends_with(PENDING_SUFFIX)))
        .collect();
    let mut outcome = ExpireOutcome::default();
    if pending.is_empty() {
        return Ok(outcome);
    }
    let live = reach(&table, table.metadata().snapshots()).await?;
    for list in pending {
        let files: Vec<String> = serde_json::from_slice(&lake.storage().read(&list).await?)
            .map_err(|e| Error::internal(format!("{list}: {e}")))?;
        let gone: Vec<String> = files
            .into_iter()
            .filter(|p| !live.live.contains_key(p) && !live.manifests.contains(p) && !live.lists.contains(p))
            .collect();
        tracing::info!(table = table_name, pending = %list, files = gone.len(), "finishing an interrupted expiry");
        outcome.deleted_data_files += delete_all(lake.storage(), gone).await?;
        delete_all(lake.storage(), vec![list]).await?;
    }
    Ok(outcome)
}

/// Deletes the table's metadata files older than the committed one that its metadata log no
/// longer lists. A file of a higher version (an in-flight commit's) is never touched.
async fn delete_old_metadata(
    lake: &Lakehouse,
    md: &iceberg::spec::TableMetadata,
    current: Option<&str>,
) -> Result<u64> {
    let Some(current) = current else { return Ok(0) };
    let Some(current_version) = metadata_version(current) else { return Ok(0) };
    let logged: HashSet<&str> = md.metadata_log().iter().map(|l| l.metadata_file.as_str()).collect();
    let dir = format!("{}/metadata/", md.location().trim_end_matches('/'));
    let names = |p: &str| p.rsplit('/').next().map(str::to_string);
    let logged_names: HashSet<String> = logged.iter().filter_map(|p| names(p)).collect();
    let old: Vec<String> = lake
        .storage()
        .list_files(&dir, "json")
        .await?
        .into_iter()
        .filter(|p| {
            metadata_version(p).is_some_and(|v| v < current_version)
                && names(p).is_some_and(|n| !logged_names.contains(&n) && Some(n) != names(current))
        })
        .collect();
    delete_all(lake.storage(), old).await
}

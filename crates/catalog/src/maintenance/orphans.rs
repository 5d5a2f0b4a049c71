//! Orphan-file removal (Spark's `remove_orphan_files`, Trino's `EXECUTE remove_orphan_files`):
//! files under a table's location that no metadata file the table keeps references — left by
//! failed or killed writes, or by runs of other tools — and that are older than a window.
//!
//! Referenced: the current metadata file and those in its metadata log, every snapshot's
//! manifest list, manifests and data files (all entries), statistics files, and expiries'
//! pending lists. Locations are compared as store root + object path (`parse_location`:
//! scheme and authority normalised, the path percent-decoded once), so `file:/w/t/x`,
//! `file:///w/t/x` and `/w/t/x` are one file. A table whose location holds, or lies inside,
//! another table's (Iceberg or external) is refused: its "orphans" could be the other's data.
//! Files younger than the window are never touched: an in-flight write's new files are.

use std::collections::HashSet;

use rxgate_common::{Error, Result, StatusCode};

use super::{delete_all, now_ms};
use crate::storage::parse_location;
use crate::Lakehouse;

/// What an orphan scan found (and, unless a dry run, deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanOutcome {
    /// The orphan files, as full locations, sorted.
    pub orphans: Vec<String>,
    /// Their total size.
    pub bytes: u64,
    /// Files under the location that were kept (referenced, or younger than the window).
    pub kept: u64,
}

/// `(store root, object path)` of a location: the form two spellings of one file share.
fn key(lake: &Lakehouse, location: &str) -> Result<(String, String)> {
    let loc = parse_location(location, lake.storage().options())?;
    Ok((loc.root.to_string(), loc.path.to_string()))
}

/// Whether two `(root, path)` locations nest (one is the other or lies inside it).
fn nested(a: &(String, String), b: &(String, String)) -> bool {
    let inside = |x: &str, y: &str| x == y || x.starts_with(&format!("{}/", y.trim_end_matches('/')));
    a.0 == b.0 && (inside(&a.1, &b.1) || inside(&b.1, &a.1))
}

/// Finds the orphans of `table_name` older than `older_than_ms` (epoch ms) and, unless
/// `dry_run`, deletes them.
pub async fn remove_orphan_files(
    lake: &Lakehouse,
    table_name: &str,
    older_than_ms: i64,
    dry_run: bool,
) -> Result<OrphanOutcome> {
    // A cutoff in the future means every file there is now.
    let older_than_ms = older_than_ms.min(now_ms());
    let newest_allowed = now_ms() - lake.min_orphan_age_ms();
    if older_than_ms > newest_allowed {
        return Err(Error::new(
            StatusCode::InvalidArgument,
            format!(
                "older_than is inside the minimum window of {} s: files that young may belong to writes in flight \
                 (lower [maintenance] min_orphan_age_secs to allow it)",
                lake.min_orphan_age_ms() / 1000
            ),
        ));
    }
    let table = lake.load_table(table_name).await?;
    let md = table.metadata();
    let root = key(lake, md.location())?;
    for (what, other) in crate::external::protected_locations(lake).await? {
        if what == "the warehouse" || what == format!("Iceberg table {table_name}") {
            continue;
        }
        if nested(&root, &key(lake, &other)?) {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                format!(
                    "{table_name}'s location {} is shared with {what}; orphan files are not removed",
                    md.location()
                ),
            ));
        }
    }
    for def in lake.external().refresh().await.map(|()| lake.external().all()).unwrap_or_default() {
        if nested(&root, &key(lake, &def.location)?) {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                format!("{table_name}'s location is shared with external table {}", def.qualified()),
            ));
        }
    }
    // Everything the table's metadata keeps.
    let mut referenced: HashSet<(String, String)> = HashSet::new();
    let mut add = |location: &str| -> Result<()> {
        referenced.insert(key(lake, location)?);
        Ok(())
    };
    if let Some(current) = table.metadata_location() {
        add(current)?;
    }
    for log in md.metadata_log() {
        add(&log.metadata_file)?;
    }
    for stats in md.statistics_iter() {
        add(&stats.statistics_path)?;
    }
    for stats in md.partition_statistics_iter() {
        add(&stats.statistics_path)?;
    }
    let reached = super::reach(&table, md.snapshots()).await?;
    for location in reached.lists.iter().chain(&reached.manifests).chain(reached.all.keys()) {
        add(location)?;
    }
    // Everything under the location.
    let mut outcome = OrphanOutcome::default();
    for (location, meta) in lake.storage().list_objects(md.location()).await? {
        let path = meta.location.to_string();
        let name = path.rsplit('/').next().unwrap_or_default();
        let pending = name.starts_with("rxgate-expire-") && name.ends_with(".pending.json");
        let old = meta.last_modified.timestamp_millis() < older_than_ms;
        if referenced.contains(&(root.0.clone(), path.clone())) || pending || !old {
            outcome.kept += 1;
            continue;
        }
        outcome.bytes += meta.size;
        outcome.orphans.push(location);
    }
    outcome.orphans.sort();
    if !dry_run {
        delete_all(lake.storage(), outcome.orphans.clone()).await?;
    }
    tracing::info!(table = table_name, orphans = outcome.orphans.len(), dry_run, "orphan scan");
    Ok(outcome)
}

/// The default window: files younger than this are never orphans (7 days).
pub const DEFAULT_ORPHAN_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// `now - window`.
pub fn older_than(window_ms: i64) -> i64 {
    now_ms() - window_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(root: &str, path: &str) -> (String, String) {
        (root.to_string(), path.to_string())
    }

    #[test]
    fn locations_nest_by_whole_segments_in_one_store() {
        assert!(nested(&k("file:///", "w/t"), &k("file:///", "w/t/sub")));
        assert!(nested(&k("file:///", "w/t/sub"), &k("file:///", "w/t")));
        assert!(nested(&k("file:///", "w/t"), &k("file:///", "w/t")));
        assert!(!nested(&k("file:///", "w/t"), &k("file:///", "w/t2")));
        assert!(!nested(&k("gs://a", "w/t"), &k("gs://b", "w/t")));
    }
}

//! Table maintenance: snapshot expiry (`expire`), orphan-file removal (`orphans`),
//! compaction (`compact`), manifest merging (`manifests`) and the data lifecycle (`lifecycle`), each one atomic commit (compare-and-swap on the catalog row,
//! retried on conflict) followed by file deletions that no retained snapshot, metadata file
//! or in-flight commit can need; every run is recorded in `rxgate_maintenance_history`
//! (`history`).
//!
//! **Invariant (what may be deleted).** A data file, manifest or manifest list is deleted only
//! when no snapshot the committed metadata keeps reaches it (live entries of its manifests);
//! an in-flight commit builds on the current snapshot, which is always kept, and its own new
//! files are referenced by no metadata yet — expiry never lists directories for data, and
//! orphan removal skips anything younger than its window. A metadata file is deleted only
//! when its version is below the committed one and it is not in the metadata log (an
//! in-flight commit writes a higher version).

pub mod compact;
pub mod expire;
pub mod history;
pub mod lifecycle;
pub mod manifests;
pub mod orphans;

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use iceberg::spec::{ManifestStatus, SnapshotRef};
use iceberg::table::Table;
use object_store::ObjectStoreExt;
use rxgate_common::Result;

use crate::storage::StoreRegistry;

/// The files a set of snapshots reaches.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// Manifest lists.
    pub lists: HashSet<String>,
    /// Manifests.
    pub manifests: HashSet<String>,
    /// Data and delete files live in some snapshot (status ADDED or EXISTING), with sizes.
    pub live: HashMap<String, u64>,
    /// Every data and delete file any entry names (DELETED entries too), with sizes.
    pub all: HashMap<String, u64>,
}

/// What `snapshots` of `table` reach; each manifest is read once.
pub(crate) async fn reach<'a>(table: &Table, snapshots: impl IntoIterator<Item = &'a SnapshotRef>) -> Result<Reach> {
    let mut out = Reach::default();
    let mut seen_manifests = HashSet::new();
    for snapshot in snapshots {
        out.lists.insert(snapshot.manifest_list().to_string());
        let list = table.manifest_list_reader(snapshot).load().await?;
        for mf in list.entries() {
            out.manifests.insert(mf.manifest_path.clone());
            if !seen_manifests.insert(mf.manifest_path.clone()) {
                continue;
            }
            let manifest = mf.load_manifest(table.file_io()).await?;
            for e in manifest.entries() {
                let f = e.data_file();
                let entry = (f.file_path().to_string(), f.file_size_in_bytes());
                if e.status() != ManifestStatus::Deleted {
                    out.live.insert(entry.0.clone(), entry.1);
                }
                out.all.insert(entry.0, entry.1);
            }
        }
    }
    Ok(out)
}

/// Deletes objects (a missing one counts as deleted), eight at a time. Returns how many.
pub(crate) async fn delete_all(storage: &StoreRegistry, locations: Vec<String>) -> Result<u64> {
    let results: Vec<Result<()>> = futures::stream::iter(locations)
        .map(|location| async move {
            let (store, path) = storage.resolve(&location)?;
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(crate::storage::storage_error(&location, e)),
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut n = 0;
    for r in results {
        r?;
        n += 1;
    }
    Ok(n)
}

/// The version number of a metadata file name (`00012-<uuid>.metadata.json` → 12).
pub(crate) fn metadata_version(location: &str) -> Option<u64> {
    let name = location.rsplit('/').next()?;
    let (version, rest) = name.split_once('-')?;
    rest.ends_with(".metadata.json").then(|| version.parse().ok()).flatten()
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// A table property as a number, or `default`.
pub(crate) fn property<T: std::str::FromStr>(table: &Table, key: &str, default: T) -> T {
    table.metadata().properties().get(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_versions_come_from_the_file_name() {
        assert_eq!(metadata_version("file:///w/t/metadata/00012-5b1c.metadata.json"), Some(12));
        assert_eq!(metadata_version("gs://b/t/metadata/00000-x-y.metadata.json"), Some(0));
        assert_eq!(metadata_version("file:///w/t/metadata/snap-1-2.avro"), None);
        assert_eq!(metadata_version("file:///w/t/metadata/v3.metadata.json"), None);
    }
}

//! Backup and recovery of the lakehouse (issue 24): consistent, verifiable, incremental
//! backups to a directory, `gs://` or `s3://`, and their restore.
//!
//! Layout of a backup target `URL`:
//! - `URL/files/<scheme>/<authority>/<object path>`: every backed-up file, keyed by its
//!   location in the lakehouse (`files/file/w/health/t/data/x.parquet`,
//!   `files/gs/bucket/w/…`). Iceberg files are immutable and their names unique, so a file
//!   already there with the size and CRC32C a complete backup recorded is not copied again:
//!   a second backup of an unchanged lakehouse copies nothing.
//! - `URL/backups/<label>/manifest.json`: written **last**; lists every file of the backup
//!   (location, key, size, CRC32C, kind), each table's snapshot id, row count and schema,
//!   the namespaces, the Hive external table definitions and partitions, the views. A backup
//!   without its manifest is incomplete: it is never listed, verified or restored.
//! - `URL/backups/<label>/policy.toml` (and `users.toml` with `--include-users`).
//! - `URL/backups/<label>/in-progress`: written first, removed after the manifest; while it
//!   is younger than a day, pruning keeps every file modified after it.
//!
//! **Invariant (consistent cut):** every table's `metadata_location`, the namespaces, the
//! external tables and the views are read in one catalog-database transaction (REPEATABLE
//! READ on PostgreSQL); a commit is a compare-and-swap of one row (or one transaction over
//! several), so each table is exactly before or after any commit. No other lock is taken:
//! writers keep committing while the files are copied (they only add new files).
//!
//! **Invariant (restore):** nothing is registered in the catalog until every file of the
//! chosen tables was read back from the backup and matched its size and checksum; the
//! registration is one catalog-database transaction. A failed restore deletes the files it
//! created and registers nothing.

pub mod create;
pub mod history;
mod local;
pub mod restore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rxgate_common::{redact_uri, Error, Result, StatusCode};
use serde::{Deserialize, Serialize};

use crate::storage::{parse_location, storage_error, CountingStore};
use crate::Lakehouse;

pub use create::{create, CreateOptions, CreateSummary};
pub use restore::{restore, RestoreOptions, RestoreSummary};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Called with one line of progress (the CLI prints it on stderr).
pub type ProgressFn<'a> = &'a (dyn Fn(String) + Send + Sync);

/// What a backed-up file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A table metadata JSON file.
    Metadata,
    /// A snapshot's manifest list (Avro).
    ManifestList,
    /// A manifest (Avro).
    Manifest,
    /// A data or delete file (Parquet).
    Data,
    /// A statistics file (Puffin) the metadata names.
    Statistics,
    /// A copy of the policy file.
    Policy,
    /// A copy of the users file (SCRAM verifiers).
    Users,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where it was in the lakehouse (or the config file's name).
    pub location: String,
    /// Its object name under the target (`files/…`, `backups/<label>/…`).
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// CRC32C (Castagnoli) of the content, 8 hex digits.
    pub crc32c: String,
    /// What it is.
    pub kind: FileKind,
}

impl FileEntry {
    /// What is wrong with a copy of `size` bytes and CRC32C `crc32c` (8 hex digits) of this
    /// file, if anything: the one wording of verify and restore.
    pub(crate) fn problem(&self, size: u64, crc32c: &str) -> Option<String> {
        if size != self.size {
            Some(format!("corrupted: {} ({}): {size} bytes, the manifest says {}", self.key, self.location, self.size))
        } else if crc32c != self.crc32c {
            Some(format!(
                "corrupted: {} ({}): CRC32C {crc32c}, the manifest says {}",
                self.key, self.location, self.crc32c
            ))
        } else {
            None
        }
    }
}

/// One Iceberg table as backed up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    /// Namespace (`health`).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// The table's location (`metadata.location`) at the cut.
    pub location: String,
    /// The catalog row's `metadata_location` at the cut.
    pub metadata_location: String,
    /// The current snapshot, if any.
    pub snapshot_id: Option<i64>,
    /// Rows of the current snapshot (its summary's `total-records`).
    pub row_count: Option<u64>,
    /// Snapshots whose files the backup holds.
    pub snapshots: Vec<i64>,
    /// The current schema, as Iceberg JSON.
    pub schema: serde_json::Value,
    /// Every file of the table's closure.
    pub files: Vec<FileEntry>,
}

impl TableEntry {
    /// `namespace.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// A definition row of our own catalog tables (external tables, views): the JSON as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The JSON definition, as stored.
    pub definition: String,
}

impl DefinitionRow {
    /// `namespace.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// A registered partition of an external table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRow {
    /// Namespace of the table.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Hive partition name (`k=v/k2=v2`).
    pub partition_name: String,
    /// Its location.
    pub location: String,
}

/// The manifest of one complete backup (`backups/<label>/manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup's label.
    pub label: String,
    /// When the cut was taken (epoch ms).
    pub created_ms: i64,
    /// How long the backup took.
    pub duration_ms: i64,
    /// The Iceberg catalog name backed up.
    pub catalog_name: String,
    /// The warehouse it came from.
    pub warehouse: String,
    /// Only the current snapshot of each table.
    pub current_only: bool,
    /// Namespaces and their properties.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The Iceberg tables.
    pub tables: Vec<TableEntry>,
    /// Hive external table definitions (their files are not backed up).
    pub external_tables: Vec<DefinitionRow>,
    /// Their registered partitions.
    pub external_partitions: Vec<PartitionRow>,
    /// Views.
    pub views: Vec<DefinitionRow>,
    /// Copies of the policy file and, with `--include-users`, the users file.
    pub config_files: Vec<FileEntry>,
}

impl BackupManifest {
    /// Every file of the backup (tables' and config files).
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.tables.iter().flat_map(|t| t.files.iter()).chain(self.config_files.iter())
    }

    /// Number of files and their bytes.
    pub fn totals(&self) -> (u64, u64) {
        self.files().fold((0, 0), |(n, b), f| (n + 1, b + f.size))
    }
}

/// Bytes of file content a backup or restore holds in memory at once (files are copied
/// whole, eight at a time; a larger file waits for room, and one over the budget runs alone).
const MEMORY_BUDGET_MIB: u32 = 512;

/// The process's budget of file bytes in flight (shared by every backup and restore).
pub(crate) static MEMORY: MemoryBudget = MemoryBudget(tokio::sync::Semaphore::const_new(MEMORY_BUDGET_MIB as usize));

/// See [`MEMORY`].
pub(crate) struct MemoryBudget(tokio::sync::Semaphore);

impl MemoryBudget {
    /// Room for a file of `bytes` (at least 1 MiB, at most the whole budget).
    pub(crate) async fn acquire(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let mib = (bytes >> 20).clamp(1, MEMORY_BUDGET_MIB as u64) as u32;
        self.0.acquire_many(mib).await.ok()
    }
}

/// CRC32C of `data` as 8 hex digits.
pub fn checksum(data: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(data))
}

/// A backup target: the store of `URL` and the object path of its root.
#[derive(Clone)]
pub struct Target {
    url: String,
    store: Arc<CountingStore>,
    base: Path,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &redact_uri(&self.url)).finish()
    }
}

impl Target {
    /// The target `url`: a local directory (path or `file://`), `gs://bucket/prefix` or
    /// `s3://bucket/prefix`, through the lakehouse's storage settings.
    pub fn open(lake: &Lakehouse, url: &str) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::invalid("the backup target is empty (a directory, file://, gs:// or s3:// URL)"));
        }
        let url = if url.contains("://") {
            url.trim_end_matches('/').to_string()
        } else {
            let abs = std::path::absolute(url).map_err(|e| Error::invalid(format!("backup target {url}: {e}")))?;
            format!("file://{}", abs.display()).trim_end_matches('/').to_string()
        };
        let (store, base) = lake.storage().resolve(&url)?;
        Ok(Self { url, store, base })
    }

    /// The target as given (normalised).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Result<Path> {
        let text = if self.base.as_ref().is_empty() { key.to_string() } else { format!("{}/{key}", self.base) };
        Path::parse(&text).map_err(|e| Error::invalid(format!("bad backup object name {key:?}: {e}")))
    }

    /// The file behind `key` when the target is a local directory.
    pub(crate) fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        self.url.starts_with("file://").then(|| self.path(key).ok().and_then(|p| local::fs_path(&p))).flatten()
    }

    fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// Reads an object; `Ok(None)` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(|e| storage_error(&self.location(key), e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(&self.location(key), e)),
        }
    }

    /// Writes an object whole.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key)?;
        self.store.put(&path, data.into()).await.map_err(|e| storage_error(&self.location(key), e))?;
        Ok(())
    }

    /// Deletes objects (missing ones count as deleted), eight at a time.
    pub async fn delete(&self, keys: Vec<String>) -> Result<u64> {
        let results: Vec<Result<()>> = futures::stream::iter(keys)
            .map(|key| async move {
                let path = self.path(&key)?;
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(storage_error(&self.location(&key), e)),
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

    /// Every object under `prefix` (a key prefix such as `files/`): key, size, modification
    /// time (epoch ms). A target that does not exist yet lists nothing.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64, i64)>> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let listed: std::result::Result<Vec<object_store::ObjectMeta>, _> =
            self.store.list(Some(&path)).try_collect().await;
        let metas = match listed {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => vec![],
            Err(e) => return Err(storage_error(&self.location(prefix), e)),
        };
        let base = self.base.as_ref();
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref();
                let key = if base.is_empty() { full } else { full.strip_prefix(base)?.trim_start_matches('/') };
                Some((key.to_string(), m.size, m.last_modified.timestamp_millis()))
            })
            .collect())
    }

    /// The complete backups (those with a manifest), oldest first.
    pub async fn manifests(&self) -> Result<Vec<BackupManifest>> {
        let mut out = vec![];
        for (key, _, _) in self.list("backups/").await? {
            let Some(label) = key.strip_prefix("backups/").and_then(|k| k.strip_suffix("/manifest.json")) else {
                continue;
            };
            if label.contains('/') {
                continue;
            }
            let Some(bytes) = self.get(&key).await? else { continue };
            let manifest: BackupManifest = serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(StatusCode::DataException, format!("backup {label}: unreadable manifest {key}: {e}"))
            })?;
            if manifest.format > FORMAT {
                return Err(Error::new(
                    StatusCode::Unsupported,
                    format!(
                        "backup {label} has manifest format {} (this rxgate reads up to {FORMAT})",
                        manifest.format
                    ),
                ));
            }
            out.push(manifest);
        }
        out.sort_by(|a, b| (a.created_ms, &a.label).cmp(&(b.created_ms, &b.label)));
        Ok(out)
    }

    /// The complete backup labelled `label`, or the newest one.
    pub async fn manifest(&self, label: Option<&str>) -> Result<BackupManifest> {
        let all = self.manifests().await?;
        let found = match label {
            Some(l) => all.into_iter().find(|m| m.label == l),
            None => all.into_iter().last(),
        };
        found.ok_or_else(|| {
            Error::new(
                StatusCode::InputUnavailable,
                match label {
                    Some(l) => format!("no complete backup labelled {l} in {}", redact_uri(&self.url)),
                    None => format!("no complete backup in {}", redact_uri(&self.url)),
                },
            )
        })
    }

    /// Reads a backed-up file and checks its size and checksum: `Err(problem)` names what
    /// is wrong (missing, size, checksum).
    pub async fn read_verified(&self, f: &FileEntry) -> Result<std::result::Result<Bytes, String>> {
        let Some(bytes) = self.get(&f.key).await? else {
            return Ok(Err(format!("missing: {} ({})", f.key, f.location)));
        };
        if let Some(problem) = f.problem(bytes.len() as u64, &checksum(&bytes)) {
            return Ok(Err(problem));
        }
        Ok(Ok(bytes))
    }
}

/// The key of a lakehouse file under the target: `files/<scheme>/<authority>/<object path>`.
pub(crate) fn file_key(lake: &Lakehouse, location: &str) -> Result<String> {
    let loc = parse_location(location, lake.storage().options())?;
    let mut root = loc.root.scheme().to_string();
    if let Some(host) = loc.root.host_str().filter(|h| !h.is_empty()) {
        root.push('/');
        root.push_str(host);
        if let Some(port) = loc.root.port() {
            root.push_str(&format!("_{port}"));
        }
    }
    Ok(format!("files/{root}/{}", loc.path))
}

/// Checks a backup label: letters, digits, `.`, `_`, `-`; at most 100.
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 100
        && !label.starts_with('.')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("bad backup label {label:?} (letters, digits, '.', '_', '-'; at most 100)")))
    }
}

/// The outcome of verifying one backup.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup.
    pub label: String,
    /// Files checked.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// One line per missing or corrupted file.
    pub problems: Vec<String>,
}

/// Re-reads every file of the backup `label` (all complete backups when `None`; a file
/// shared by several is read once) and checks sizes and checksums against the manifests.
pub async fn verify(lake: &Lakehouse, url: &str, label: Option<&str>) -> Result<Vec<VerifyReport>> {
    let started = crate::maintenance::now_ms();
    let result = verify_inner(lake, url, label).await;
    let (files, bytes, outcome, detail) = match &result {
        Ok(reports) => {
            let files = reports.iter().map(|r| r.files).sum::<u64>();
            let bytes = reports.iter().map(|r| r.bytes).sum::<u64>();
            let problems: Vec<&String> = reports.iter().flat_map(|r| r.problems.iter()).collect();
            let outcome = if problems.is_empty() { "ok" } else { "failed" };
            let detail = match problems.first() {
                None => format!("{} backup(s) verified", reports.len()),
                Some(p) => format!("{} problem(s); first: {p}", problems.len()),
            };
            (files, bytes, outcome, detail)
        }
        Err(e) => (0, 0, "failed", e.message.clone()),
    };
    let labels = match &result {
        Ok(r) => r.iter().map(|r| r.label.clone()).collect::<Vec<_>>().join(","),
        Err(_) => label.unwrap_or_default().to_string(),
    };
    let rec = history::BackupRecord {
        label: labels,
        files: files as i64,
        bytes: bytes as i64,
        outcome: outcome.into(),
        detail,
        ..Default::default()
    };
    history::record_run(lake, "verify", url, started, rec).await;
    result
}

async fn verify_inner(lake: &Lakehouse, url: &str, label: Option<&str>) -> Result<Vec<VerifyReport>> {
    let target = Target::open(lake, url)?;
    let manifests = match label {
        Some(l) => vec![target.manifest(Some(l)).await?],
        None => {
            let all = target.manifests().await?;
            if all.is_empty() {
                return Err(Error::new(
                    StatusCode::InputUnavailable,
                    format!("no complete backup in {}", redact_uri(target.url())),
                ));
            }
            all
        }
    };
    // Each distinct key once.
    let mut checked: HashMap<String, Option<String>> = HashMap::new();
    let mut reports = vec![];
    for m in &manifests {
        let todo: Vec<FileEntry> = m.files().filter(|f| !checked.contains_key(&f.key)).cloned().collect();
        let results: Vec<Result<(String, Option<String>)>> = futures::stream::iter(todo)
            .map(|f| {
                let target = target.clone();
                async move {
                    let _held = MEMORY.acquire(f.size).await;
                    let r = target.read_verified(&f).await?;
                    Ok((f.key.clone(), r.err()))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for r in results {
            let (key, problem) = r?;
            checked.insert(key, problem);
        }
        let (files, bytes) = m.totals();
        let mut problems: Vec<String> =
            m.files().filter_map(|f| checked.get(&f.key).cloned().flatten()).collect::<Vec<_>>();
        problems.sort();
        problems.dedup();
        reports.push(VerifyReport { label: m.label.clone(), files, bytes, problems });
    }
    Ok(reports)
}

/// What pruning removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneSummary {
    /// Backups removed (labels).
    pub removed: Vec<String>,
    /// Backups kept.
    pub kept: usize,
    /// Files deleted (no kept backup references them).
    pub files_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
}

/// The body of an `in-progress` marker: `host:pid` of the process taking the backup.
pub(crate) fn marker() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Whether a marker names a process of this host that no longer runs.
fn marker_is_dead(body: &str) -> bool {
    match body.trim().rsplit_once(':') {
        Some((host, pid)) if !host.is_empty() && host == hostname() => {
            pid.parse::<u32>().is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        }
        _ => false,
    }
}

/// An `in-progress` marker older than this is a backup that died; it protects nothing.
const STALE_MARKER_MS: i64 = 24 * 3600 * 1000;

/// Keeps the newest `keep_last` complete backups and removes the others: each manifest
/// first (the backup is then incomplete), then its directory, then every file under
/// `files/` that no kept manifest references — except files written after the start of a
/// backup still in progress (its `in-progress` marker, if younger than a day).
pub async fn prune(lake: &Lakehouse, url: &str, keep_last: usize) -> Result<PruneSummary> {
    let started = crate::maintenance::now_ms();
    let result = prune_inner(lake, url, keep_last).await;
    let (files, bytes, outcome, detail) = match &result {
        Ok(s) => (
            s.files_deleted,
            s.bytes_deleted,
            "ok",
            format!("removed {} backup(s) ({}), kept {}", s.removed.len(), s.removed.join(","), s.kept),
        ),
        Err(e) => (0, 0, "failed", e.message.clone()),
    };
    let rec = history::BackupRecord {
        files: files as i64,
        bytes: bytes as i64,
        outcome: outcome.into(),
        detail,
        ..Default::default()
    };
    history::record_run(lake, "prune", url, started, rec).await;
    result
}

async fn prune_inner(lake: &Lakehouse, url: &str, keep_last: usize) -> Result<PruneSummary> {
    if keep_last == 0 {
        return Err(Error::invalid("keep_last must be at least 1"));
    }
    let target = Target::open(lake, url)?;
    let mut all = target.manifests().await?;
    let cut = all.len().saturating_sub(keep_last);
    let kept = all.split_off(cut);
    let mut summary = PruneSummary { kept: kept.len(), ..Default::default() };
    let listed = target.list("backups/").await?;
    for m in &all {
        target.delete(vec![format!("backups/{}/manifest.json", m.label)]).await?;
        let prefix = format!("backups/{}/", m.label);
        let rest: Vec<String> =
            listed.iter().filter(|(k, _, _)| k.starts_with(&prefix)).map(|(k, _, _)| k.clone()).collect();
        target.delete(rest).await?;
        summary.removed.push(m.label.clone());
    }
    // Files written since the oldest backup still running are its own. A marker left by a
    // process of this host that is gone, or older than a day, protects nothing (removed).
    let now = crate::maintenance::now_ms();
    let mut protect_from = i64::MAX;
    let mut stale = vec![];
    for (key, _, modified) in listed.iter().filter(|(k, _, _)| k.ends_with("/in-progress")) {
        let body = target.get(key).await?.unwrap_or_default();
        if now - modified >= STALE_MARKER_MS || marker_is_dead(&String::from_utf8_lossy(&body)) {
            stale.push(key.clone());
        } else {
            protect_from = protect_from.min(*modified);
        }
    }
    target.delete(stale).await?;
    let referenced: std::collections::HashSet<&str> =
        kept.iter().flat_map(|m| m.files()).map(|f| f.key.as_str()).collect();
    let mut doomed = vec![];
    for (key, size, modified) in target.list("files/").await? {
        if !referenced.contains(key.as_str()) && modified < protect_from {
            summary.bytes_deleted += size;
            doomed.push(key);
        }
    }
    summary.files_deleted = target.delete(doomed).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert!(check_label("nightly-2026-12-07T01.00Z").is_ok());
        assert!(check_label("a/b").is_err());
        assert!(check_label("..").is_err());
        assert!(check_label("").is_err());
    }

    #[test]
    fn checksums_are_crc32c() {
        // The CRC32C check value of "123456789" (RFC 3720).
        assert_eq!(checksum(b"123456789"), "e3069283");
    }
}

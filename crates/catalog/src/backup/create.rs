//! `backup create`: the consistent cut, the closure of every table, the incremental copy and
//! the manifest, written last.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use rxgate_common::{redact_uri, Error, Result, StatusCode};
use serde::Serialize;
use sqlx::Row;

use super::history::{self, BackupRecord};
use super::{
    check_label, checksum, file_key, BackupManifest, DefinitionRow, FileEntry, FileKind, PartitionRow, ProgressFn,
    TableEntry, Target, FORMAT,
};
use crate::registry::{db_error, placeholders};
use crate::Lakehouse;

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The label (default: the time of the cut, `YYYYMMDDTHHMMSSmmmZ`).
    pub label: Option<String>,
    /// Only each table's current snapshot (else every retained snapshot).
    pub current_only: bool,
    /// Config files to keep with the backup: `(kind, file name, content)` — the policy file,
    /// and the users file with `--include-users`.
    pub config_files: Vec<(FileKind, String, Vec<u8>)>,
}

/// What a backup did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateSummary {
    /// The label.
    pub label: String,
    /// The manifest written.
    pub manifest: String,
    /// Iceberg tables.
    pub tables: usize,
    /// External table definitions (their files are not copied).
    pub external_tables: usize,
    /// Views.
    pub views: usize,
    /// Files of the backup.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files copied into the target now.
    pub files_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Config files kept with the backup (policy, users); always copied, counted in
    /// `files_copied`.
    pub config_files: u64,
    /// Files already in the target (same key, size and checksum).
    pub files_skipped: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// The catalog rows of one consistent cut.
#[derive(Debug, Default)]
pub(crate) struct Cut {
    /// `(namespace, table, metadata_location)`.
    pub tables: Vec<(String, String, String)>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub external_tables: Vec<DefinitionRow>,
    pub external_partitions: Vec<PartitionRow>,
    pub views: Vec<DefinitionRow>,
}

/// Reads every table's `metadata_location`, the namespaces, the external tables with their
/// partitions and the views in one read transaction (REPEATABLE READ on PostgreSQL; on SQLite
/// a transaction reads one snapshot of the file).
pub(crate) async fn read_cut(lake: &Lakehouse) -> Result<Cut> {
    // Our own tables exist before the transaction reads them (created on first use).
    lake.external().refresh().await?;
    lake.views().refresh().await?;
    let postgres = lake.config().is_postgres();
    let name = lake.config().name.clone();
    let mut tx = lake.pool().begin().await.map_err(db_error)?;
    if postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    let mut cut = Cut::default();
    let rows = sqlx::query(&placeholders(
        postgres,
        "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ? \
         AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) ORDER BY table_namespace, table_name",
    ))
    .bind(name.clone())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    for r in rows {
        let location: Option<String> = r.try_get(2).map_err(db_error)?;
        let Some(location) = location else { continue };
        cut.tables.push((r.try_get(0).map_err(db_error)?, r.try_get(1).map_err(db_error)?, location));
    }
    let rows = sqlx::query(&placeholders(
        postgres,
        "SELECT namespace, property_key, property_value FROM iceberg_namespace_properties WHERE catalog_name = ?",
    ))
    .bind(name.clone())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    for r in rows {
        let ns: String = r.try_get(0).map_err(db_error)?;
        let key: Option<String> = r.try_get(1).map_err(db_error)?;
        let value: Option<String> = r.try_get(2).map_err(db_error)?;
        let props = cut.namespaces.entry(ns).or_default();
        if let (Some(k), Some(v)) = (key, value) {
            props.insert(k, v);
        }
    }
    for (table, columns, out) in [
        ("rxgate_external_tables", ("table_namespace", "table_name"), &mut cut.external_tables),
        ("rxgate_views", ("view_namespace", "view_name"), &mut cut.views),
    ] {
        let sql = format!(
            "SELECT {}, {}, definition FROM {table} WHERE catalog_name = ? ORDER BY {}, {}",
            columns.0, columns.1, columns.0, columns.1
        );
        let rows = sqlx::query(&placeholders(postgres, &sql))
            .bind(name.clone())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        for r in rows {
            out.push(DefinitionRow {
                namespace: r.try_get(0).map_err(db_error)?,
                name: r.try_get(1).map_err(db_error)?,
                definition: r.try_get(2).map_err(db_error)?,
            });
        }
    }
    let rows = sqlx::query(&placeholders(
        postgres,
        "SELECT table_namespace, table_name, partition_name, location FROM rxgate_external_partitions \
         WHERE catalog_name = ? ORDER BY table_namespace, table_name, partition_name",
    ))
    .bind(name)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    for r in rows {
        cut.external_partitions.push(PartitionRow {
            namespace: r.try_get(0).map_err(db_error)?,
            name: r.try_get(1).map_err(db_error)?,
            partition_name: r.try_get(2).map_err(db_error)?,
            location: r.try_get(3).map_err(db_error)?,
        });
    }
    tx.commit().await.map_err(db_error)?;
    Ok(cut)
}

/// Takes a backup of the lakehouse into `url` (see the module documentation).
pub async fn create(
    lake: &Lakehouse,
    url: &str,
    opts: &CreateOptions,
    progress: ProgressFn<'_>,
) -> Result<CreateSummary> {
    let started = crate::maintenance::now_ms();
    let label = match &opts.label {
        Some(l) => l.clone(),
        None => chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string(),
    };
    // A file the cut's metadata names can be deleted by maintenance running meanwhile
    // (snapshot expiry, orphan removal): a new cut no longer names it (the files copied so far
    // are kept and not copied again).
    let mut attempt = 1;
    let result = loop {
        match create_inner(lake, url, &label, opts, progress).await {
            Err(e) if e.code == StatusCode::InputUnavailable && attempt < 3 => {
                progress(format!("backup {label}: {} (removed since the cut?); taking a new cut", e.message));
                attempt += 1;
            }
            Err(e) if e.code == StatusCode::InputUnavailable => {
                break Err(Error::new(
                    e.code,
                    format!(
                        "a file of the lakehouse is missing (in {attempt} cuts; is a table damaged?): {}",
                        e.message
                    ),
                ))
            }
            r => break r,
        }
    };
    if result.is_err() {
        // Failed here, not killed: the marker protects nothing any more.
        if let Ok(target) = Target::open(lake, url) {
            let _ = target.delete(vec![format!("backups/{label}/in-progress")]).await;
        }
    }
    let rec = match &result {
        Ok(s) => BackupRecord {
            files: s.files as i64,
            bytes: s.bytes as i64,
            files_copied: s.files_copied as i64,
            bytes_copied: s.bytes_copied as i64,
            outcome: "ok".into(),
            detail: format!(
                "{} tables, {} external tables, {} views; copied {} files, skipped {}",
                s.tables, s.external_tables, s.views, s.files_copied, s.files_skipped
            ),
            ..Default::default()
        },
        Err(e) => BackupRecord { outcome: "failed".into(), detail: e.message.clone(), ..Default::default() },
    };
    history::record_run(lake, "create", url, started, BackupRecord { label, ..rec }).await;
    result
}

/// The order of kinds in a table's file list.
fn kind_order(kind: FileKind) -> u8 {
    match kind {
        FileKind::Metadata => 0,
        FileKind::ManifestList => 1,
        FileKind::Manifest => 2,
        FileKind::Data => 3,
        FileKind::Statistics => 4,
        FileKind::Policy | FileKind::Users => 5,
    }
}

/// A file to put into the backup.
struct Wanted {
    location: String,
    kind: FileKind,
    /// The size the table metadata gives (data files).
    size: Option<u64>,
}

async fn create_inner(
    lake: &Lakehouse,
    url: &str,
    label: &str,
    opts: &CreateOptions,
    progress: ProgressFn<'_>,
) -> Result<CreateSummary> {
    check_label(label)?;
    let clock = Instant::now();
    let target = Target::open(lake, url)?;
    // A target inside the warehouse would be found by orphan removal; one above it would
    // hold the warehouse.
    let (t, w) = (target.url().trim_end_matches('/'), lake.config().warehouse.trim_end_matches('/'));
    if t == w || t.starts_with(&format!("{w}/")) || w.starts_with(&format!("{t}/")) {
        return Err(Error::invalid(format!(
            "backup target {} overlaps the warehouse {}: choose a location outside it",
            redact_uri(t),
            redact_uri(w)
        )));
    }
    let manifest_key = format!("backups/{label}/manifest.json");
    if target.get(&manifest_key).await?.is_some() {
        return Err(Error::new(
            StatusCode::AlreadyExists,
            format!("backup {label} already exists in {}", redact_uri(target.url())),
        ));
    }
    // Marks the backup as running (pruning keeps what it writes), then the cut.
    target.put(&format!("backups/{label}/in-progress"), Bytes::from(super::marker())).await?;
    let created_ms = crate::maintenance::now_ms();
    let cut = read_cut(lake).await?;
    progress(format!(
        "backup {label}: cut of {} tables, {} external tables, {} views",
        cut.tables.len(),
        cut.external_tables.len(),
        cut.views.len()
    ));
    // What the target already holds, with the checksums complete backups recorded.
    let mut known: HashMap<String, (u64, String)> = HashMap::new();
    for m in target.manifests().await? {
        for f in m.files() {
            known.insert(f.key.clone(), (f.size, f.crc32c.clone()));
        }
    }
    let present: HashMap<String, u64> = target.list("files/").await?.into_iter().map(|(k, s, _)| (k, s)).collect();

    let mut summary = CreateSummary { label: label.to_string(), ..Default::default() };
    // Each table's closure, listed from its metadata file (copied at once: it is read anyway);
    // then every other file of every table in one stream, eight at a time.
    let mut tables: Vec<TableEntry> = vec![];
    let mut copied_per_table: Vec<u64> = vec![];
    let mut wanted: Vec<(usize, Wanted)> = vec![];
    for (ns, name, metadata_location) in &cut.tables {
        let qualified = format!("{ns}.{name}");
        let metadata_bytes = lake.storage().read(metadata_location).await?;
        let metadata: TableMetadata = serde_json::from_slice(&metadata_bytes).map_err(|e| {
            Error::new(StatusCode::DataException, format!("{qualified}: unreadable metadata {metadata_location}: {e}"))
        })?;
        let table = Table::builder()
            .file_io(lake.file_io())
            .identifier(crate::lakehouse::parse_ident(&qualified)?)
            .metadata(metadata.clone())
            .metadata_location(metadata_location.clone())
            .runtime(iceberg::Runtime::try_current()?)
            .build()?;
        let current = metadata.current_snapshot().cloned();
        let snapshots: Vec<_> =
            if opts.current_only { current.iter().cloned().collect() } else { metadata.snapshots().cloned().collect() };
        let reach = crate::maintenance::reach(&table, snapshots.iter()).await?;
        let idx = tables.len();
        let mut lists: Vec<&String> = reach.lists.iter().collect();
        lists.sort();
        for l in lists {
            wanted.push((idx, Wanted { location: l.clone(), kind: FileKind::ManifestList, size: None }));
        }
        let mut manifests: Vec<&String> = reach.manifests.iter().collect();
        manifests.sort();
        for m in manifests {
            wanted.push((idx, Wanted { location: m.clone(), kind: FileKind::Manifest, size: None }));
        }
        let mut data: Vec<(&String, &u64)> = reach.live.iter().collect();
        data.sort();
        for (d, size) in data {
            wanted.push((idx, Wanted { location: d.clone(), kind: FileKind::Data, size: Some(*size) }));
        }
        let stats = metadata
            .statistics_iter()
            .map(|s| (&s.statistics_path, s.file_size_in_bytes))
            .chain(metadata.partition_statistics_iter().map(|s| (&s.statistics_path, s.file_size_in_bytes)));
        for (path, size) in stats {
            let size = u64::try_from(size).ok();
            wanted.push((idx, Wanted { location: path.clone(), kind: FileKind::Statistics, size }));
        }
        let key = file_key(lake, metadata_location)?;
        let entry = FileEntry {
            location: metadata_location.clone(),
            key: key.clone(),
            size: metadata_bytes.len() as u64,
            crc32c: checksum(&metadata_bytes),
            kind: FileKind::Metadata,
        };
        let mut copied = 0;
        if present.get(&key) == Some(&entry.size) && known.get(&key).is_some_and(|(_, c)| *c == entry.crc32c) {
            summary.files_skipped += 1;
            summary.bytes_skipped += entry.size;
        } else {
            target.put(&key, metadata_bytes.clone()).await?;
            summary.files_copied += 1;
            summary.bytes_copied += entry.size;
            copied = 1;
        }
        copied_per_table.push(copied);
        let row_count = current
            .as_ref()
            .and_then(|s| s.summary().additional_properties.get("total-records").and_then(|v| v.parse().ok()));
        tables.push(TableEntry {
            namespace: ns.clone(),
            name: name.clone(),
            location: metadata.location().to_string(),
            metadata_location: metadata_location.clone(),
            snapshot_id: current.as_ref().map(|s| s.snapshot_id()),
            row_count,
            snapshots: snapshots.iter().map(|s| s.snapshot_id()).collect(),
            schema: serde_json::to_value(metadata.current_schema().as_ref())
                .map_err(|e| Error::internal(format!("schema of {qualified}: {e}")))?,
            files: vec![entry],
        });
    }
    let total = wanted.len() + tables.len();
    progress(format!("backup {label}: {total} files in the closure of {} tables", tables.len()));
    let mut results = futures::stream::iter(wanted)
        .map(|(idx, w)| {
            let target = target.clone();
            let key = file_key(lake, &w.location);
            let known = &known;
            let present = &present;
            async move {
                let key = key?;
                // Unchanged: the same key with the size (and, for data files, the size the
                // table records) a complete backup checksummed. Iceberg files never change.
                if let (Some((size, crc)), Some(there)) = (known.get(&key), present.get(&key)) {
                    if size == there && w.size.is_none_or(|s| s == *size) {
                        let entry =
                            FileEntry { location: w.location, key, size: *size, crc32c: crc.clone(), kind: w.kind };
                        return Ok((idx, entry, false));
                    }
                }
                // Local to local: streamed through a reused buffer, checksummed on the way.
                let local = super::local::local_file(&w.location, lake.storage().options());
                if let (Some(from), Some(to)) = (local, target.local_file(&key)) {
                    let expected = w.size;
                    let location = w.location.clone();
                    let copied = super::local::copy_async(from, to, move |c| match expected {
                        Some(e) if e != c.size => {
                            Err(format!("{}: {} bytes, the table metadata says {e}", redact_uri(&location), c.size))
                        }
                        _ => Ok(()),
                    })
                    .await?
                    .map_err(|problem| Error::new(StatusCode::DataException, problem))?;
                    let entry = FileEntry {
                        location: w.location,
                        key,
                        size: copied.size,
                        crc32c: format!("{:08x}", copied.crc32c),
                        kind: w.kind,
                    };
                    return Ok((idx, entry, true));
                }
                let _held = super::MEMORY.acquire(w.size.unwrap_or(0)).await;
                let bytes = lake.storage().read(&w.location).await?;
                if let Some(expected) = w.size.filter(|s| *s != bytes.len() as u64) {
                    return Err(Error::new(
                        StatusCode::DataException,
                        format!(
                            "{}: {} bytes, the table metadata says {expected}",
                            redact_uri(&w.location),
                            bytes.len()
                        ),
                    ));
                }
                let entry = FileEntry {
                    location: w.location,
                    key: key.clone(),
                    size: bytes.len() as u64,
                    crc32c: checksum(&bytes),
                    kind: w.kind,
                };
                target.put(&key, bytes).await?;
                Ok::<_, Error>((idx, entry, true))
            }
        })
        .buffer_unordered(8);
    let mut reported = Instant::now();
    let mut done = tables.len();
    while let Some(r) = results.next().await {
        let (idx, entry, copied) = r?;
        done += 1;
        if copied {
            summary.files_copied += 1;
            summary.bytes_copied += entry.size;
            copied_per_table[idx] += 1;
        } else {
            summary.files_skipped += 1;
            summary.bytes_skipped += entry.size;
        }
        tables[idx].files.push(entry);
        if reported.elapsed().as_secs() >= 5 {
            reported = Instant::now();
            progress(format!("backup {label}: {done} of {total} files, {} copied so far", summary.files_copied));
        }
    }
    drop(results);
    for (t, copied) in tables.iter_mut().zip(&copied_per_table) {
        // Deterministic order in the manifest: the metadata file, then by kind and location.
        t.files[1..].sort_by(|a, b| (kind_order(a.kind), &a.location).cmp(&(kind_order(b.kind), &b.location)));
        progress(format!(
            "backup {label}: {}: {} files ({copied} copied), {} rows",
            t.qualified(),
            t.files.len(),
            t.row_count.map(|r| r.to_string()).unwrap_or_else(|| "no".into())
        ));
    }
    let mut config_files = vec![];
    for (kind, name, content) in &opts.config_files {
        let key = format!("backups/{label}/{name}");
        let bytes = Bytes::from(content.clone());
        config_files.push(FileEntry {
            location: name.clone(),
            key: key.clone(),
            size: bytes.len() as u64,
            crc32c: checksum(&bytes),
            kind: *kind,
        });
        summary.config_files += 1;
        summary.files_copied += 1;
        summary.bytes_copied += bytes.len() as u64;
        target.put(&key, bytes).await?;
    }
    rxgate_common::failpoint("backup.before_manifest");
    let mut manifest = BackupManifest {
        format: FORMAT,
        label: label.to_string(),
        created_ms,
        duration_ms: 0,
        catalog_name: lake.config().name.clone(),
        warehouse: lake.config().warehouse.clone(),
        current_only: opts.current_only,
        namespaces: cut.namespaces,
        tables,
        external_tables: cut.external_tables,
        external_partitions: cut.external_partitions,
        views: cut.views,
        config_files,
    };
    manifest.duration_ms = clock.elapsed().as_millis() as i64;
    let (files, bytes) = manifest.totals();
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    // Last: the backup exists from here on.
    target.put(&manifest_key, Bytes::from(text)).await?;
    target.delete(vec![format!("backups/{label}/in-progress")]).await?;
    summary.tables = manifest.tables.len();
    summary.external_tables = manifest.external_tables.len();
    summary.views = manifest.views.len();
    summary.files = files;
    summary.bytes = bytes;
    summary.manifest = format!("{}/{manifest_key}", target.url());
    summary.seconds = clock.elapsed().as_secs_f64();
    Ok(summary)
}

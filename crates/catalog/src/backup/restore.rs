//! `backup restore`: verify and copy a backup's files into the warehouse (rewriting the
//! absolute paths inside metadata, manifest lists and manifests when the table's location
//! changes), then register every table, external table and view in one catalog transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use iceberg::spec::TableMetadata;
use object_store::ObjectStoreExt;
use rxgate_common::{redact_uri, Error, Result, StatusCode};
use serde::Serialize;

use super::history::{self, BackupRecord};
use super::{BackupManifest, FileEntry, FileKind, ProgressFn, TableEntry, Target};
use crate::registry::{db_error, placeholders};
use crate::Lakehouse;

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The backup (default: the newest complete one, or the newest not after `as_of_ms`).
    pub label: Option<String>,
    /// Restore the newest complete backup whose cut is not after this time (epoch ms).
    pub as_of_ms: Option<i64>,
    /// Only these (`namespace.name`: tables, external tables, views); empty: everything.
    pub tables: Vec<String>,
    /// Overwrite tables, external tables and views that exist.
    pub replace: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// The backup restored.
    pub label: String,
    /// Iceberg tables registered.
    pub tables: Vec<String>,
    /// External table definitions registered.
    pub external_tables: Vec<String>,
    /// Views registered.
    pub views: Vec<String>,
    /// Files read and verified from the backup.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files written into the warehouse.
    pub files_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Whether paths were rewritten (the warehouse differs from the backup's).
    pub rewritten: bool,
    /// Seconds it took.
    pub seconds: f64,
}

/// Restores a backup from `url` into the lakehouse (see the module documentation).
pub async fn restore(
    lake: &Lakehouse,
    url: &str,
    opts: &RestoreOptions,
    progress: ProgressFn<'_>,
) -> Result<(RestoreSummary, BackupManifest)> {
    let started = crate::maintenance::now_ms();
    let result = restore_inner(lake, url, opts, progress).await;
    let rec = match &result {
        Ok((s, _)) => BackupRecord {
            label: s.label.clone(),
            files: s.files as i64,
            bytes: s.bytes as i64,
            files_copied: s.files_written as i64,
            bytes_copied: s.bytes_written as i64,
            outcome: "ok".into(),
            detail: format!(
                "{} tables, {} external tables, {} views{}",
                s.tables.len(),
                s.external_tables.len(),
                s.views.len(),
                if s.rewritten { "; paths rewritten" } else { "" }
            ),
            ..Default::default()
        },
        Err(e) => BackupRecord {
            label: opts.label.clone().unwrap_or_default(),
            outcome: "failed".into(),
            detail: e.message.clone(),
            ..Default::default()
        },
    };
    history::record_run(lake, "restore", url, started, rec).await;
    result
}

/// Where one table goes.
struct Placement<'a> {
    table: &'a TableEntry,
    /// Its new location (the old one when the warehouse is the same).
    location: String,
}

impl Placement<'_> {
    /// The new location of a file of the table.
    fn map(&self, old: &str) -> Result<String> {
        let from = self.table.location.trim_end_matches('/');
        if old == from {
            return Ok(self.location.clone());
        }
        match old.strip_prefix(from).filter(|rest| rest.starts_with('/')) {
            Some(rest) => Ok(format!("{}{rest}", self.location)),
            None => Err(Error::new(
                StatusCode::Unsupported,
                format!(
                    "{}: file {} lies outside the table's location {from}; it cannot be moved to {}",
                    self.table.qualified(),
                    redact_uri(old),
                    redact_uri(&self.location)
                ),
            )),
        }
    }

    fn moved(&self) -> bool {
        self.location != self.table.location.trim_end_matches('/')
    }
}

async fn restore_inner(
    lake: &Lakehouse,
    url: &str,
    opts: &RestoreOptions,
    progress: ProgressFn<'_>,
) -> Result<(RestoreSummary, BackupManifest)> {
    let clock = Instant::now();
    let target = Target::open(lake, url)?;
    let manifest = match (&opts.label, opts.as_of_ms) {
        (Some(l), _) => target.manifest(Some(l)).await?,
        (None, Some(at)) => target.manifests().await?.into_iter().rfind(|m| m.created_ms <= at).ok_or_else(|| {
            Error::new(StatusCode::InputUnavailable, "no complete backup was taken at or before that time")
        })?,
        (None, None) => target.manifest(None).await?,
    };
    let wanted: BTreeSet<String> = opts.tables.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    let chosen = |q: String| wanted.is_empty() || wanted.contains(&q);
    let tables: Vec<&TableEntry> = manifest.tables.iter().filter(|t| chosen(t.qualified())).collect();
    let externals: Vec<_> = manifest.external_tables.iter().filter(|d| chosen(d.qualified())).collect();
    let views: Vec<_> = manifest.views.iter().filter(|d| chosen(d.qualified())).collect();
    let known: BTreeSet<String> = manifest
        .tables
        .iter()
        .map(|t| t.qualified())
        .chain(manifest.external_tables.iter().map(|d| d.qualified()))
        .chain(manifest.views.iter().map(|d| d.qualified()))
        .collect();
    let unknown: Vec<&String> = wanted.iter().filter(|t| !known.contains(*t)).collect();
    if !unknown.is_empty() {
        return Err(Error::new(
            StatusCode::TableNotFound,
            format!(
                "backup {} holds no table named {} (it holds: {})",
                manifest.label,
                unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Refuse before touching anything when something exists and --replace is not given.
    lake.external().refresh().await?;
    lake.views().refresh().await?;
    let postgres = lake.config().is_postgres();
    let catalog_name = lake.config().name.clone();
    if !opts.replace {
        let mut existing = vec![];
        let checks = tables
            .iter()
            .map(|t| ("iceberg_tables", "table_namespace", "table_name", t.namespace.clone(), t.name.clone()))
            .chain(externals.iter().map(|d| {
                ("rxgate_external_tables", "table_namespace", "table_name", d.namespace.clone(), d.name.clone())
            }))
            .chain(
                views
                    .iter()
                    .map(|d| ("rxgate_views", "view_namespace", "view_name", d.namespace.clone(), d.name.clone())),
            );
        for (table, ns_col, name_col, ns, name) in checks {
            let sql = placeholders(
                postgres,
                &format!("SELECT count(*) FROM {table} WHERE catalog_name = ? AND {ns_col} = ? AND {name_col} = ?"),
            );
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(catalog_name.clone())
                .bind(ns.clone())
                .bind(name.clone())
                .fetch_one(lake.pool())
                .await
                .map_err(db_error)?;
            if n > 0 {
                existing.push(format!("{ns}.{name}"));
            }
        }
        if !existing.is_empty() {
            return Err(Error::new(
                StatusCode::AlreadyExists,
                format!(
                    "{} already exist(s) in the catalog; restore refuses to overwrite them without --replace",
                    existing.join(", ")
                ),
            ));
        }
    }
    let from_wh = manifest.warehouse.trim_end_matches('/').to_string();
    let to_wh = lake.config().warehouse.trim_end_matches('/').to_string();
    let placements: Vec<Placement> = tables
        .iter()
        .map(|t| {
            let old = t.location.trim_end_matches('/');
            let location = if from_wh == to_wh {
                old.to_string()
            } else {
                match old.strip_prefix(&from_wh).filter(|r| r.starts_with('/')) {
                    Some(rest) => format!("{to_wh}{rest}"),
                    None => format!("{to_wh}/{}/{}", t.namespace, t.name),
                }
            };
            Placement { table: t, location }
        })
        .collect();
    let rewritten = placements.iter().any(|p| p.moved());
    progress(format!(
        "restore {}: {} tables, {} external tables, {} views{}",
        manifest.label,
        placements.len(),
        externals.len(),
        views.len(),
        if rewritten {
            format!(" (paths rewritten from {} to {})", redact_uri(&from_wh), redact_uri(&to_wh))
        } else {
            String::new()
        }
    ));

    let copier = Copier { lake, target: &target, created: Mutex::new(vec![]), stats: Mutex::new((0, 0, 0, 0)) };
    let copied = copy_tables(&copier, &placements, manifest.current_only, progress).await;
    let metadata_locations = match copied {
        Ok(m) => m,
        Err(e) => {
            let created = std::mem::take(&mut *copier.created.lock().expect("created lock"));
            if let Err(cleanup) = crate::maintenance::delete_all(lake.storage(), created).await {
                tracing::warn!(error = %cleanup.message, "files of a failed restore not all deleted");
            }
            return Err(e);
        }
    };

    // Namespaces first (idempotent), then everything in one transaction.
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    namespaces.extend(tables.iter().map(|t| t.namespace.clone()));
    namespaces.extend(externals.iter().map(|d| d.namespace.clone()));
    namespaces.extend(views.iter().map(|d| d.namespace.clone()));
    for ns in &namespaces {
        let ident = iceberg::NamespaceIdent::from_strs(ns.split('.'))?;
        if !lake.catalog().namespace_exists(&ident).await? {
            let props: HashMap<String, String> = manifest
                .namespaces
                .get(ns)
                .map(|p| {
                    p.iter().filter(|(k, _)| k.as_str() != "exists").map(|(k, v)| (k.clone(), v.clone())).collect()
                })
                .unwrap_or_default();
            if let Err(e) = lake.catalog().create_namespace(&ident, props).await {
                if !lake.catalog().namespace_exists(&ident).await? {
                    return Err(e.into());
                }
            }
        }
    }
    let mut tx = lake.pool().begin().await.map_err(db_error)?;
    let key = "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?";
    for (p, location) in placements.iter().zip(&metadata_locations) {
        let t = p.table;
        let id = [catalog_name.as_str(), &t.namespace, &t.name];
        exec(&mut tx, postgres, &format!("DELETE FROM iceberg_tables {key}"), &id).await?;
        exec(
            &mut tx,
            postgres,
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, \
             previous_metadata_location, iceberg_type) VALUES (?, ?, ?, ?, NULL, 'TABLE')",
            &[id[0], id[1], id[2], location],
        )
        .await?;
    }
    for d in &externals {
        let id = [catalog_name.as_str(), &d.namespace, &d.name];
        for table in ["rxgate_external_partitions", "rxgate_external_tables"] {
            exec(&mut tx, postgres, &format!("DELETE FROM {table} {key}"), &id).await?;
        }
        exec(
            &mut tx,
            postgres,
            "INSERT INTO rxgate_external_tables (catalog_name, table_namespace, table_name, definition) \
             VALUES (?, ?, ?, ?)",
            &[id[0], id[1], id[2], &d.definition],
        )
        .await?;
        for part in manifest.external_partitions.iter().filter(|p| p.namespace == d.namespace && p.name == d.name) {
            exec(
                &mut tx,
                postgres,
                "INSERT INTO rxgate_external_partitions (catalog_name, table_namespace, table_name, \
                 partition_name, location) VALUES (?, ?, ?, ?, ?)",
                &[id[0], id[1], id[2], &part.partition_name, &part.location],
            )
            .await?;
        }
    }
    for d in &views {
        let id = [catalog_name.as_str(), &d.namespace, &d.name];
        exec(
            &mut tx,
            postgres,
            "DELETE FROM rxgate_views WHERE catalog_name = ? AND view_namespace = ? AND view_name = ?",
            &id,
        )
        .await?;
        exec(
            &mut tx,
            postgres,
            "INSERT INTO rxgate_views (catalog_name, view_namespace, view_name, definition) VALUES (?, ?, ?, ?)",
            &[id[0], id[1], id[2], &d.definition],
        )
        .await?;
    }
    tx.commit().await.map_err(db_error)?;
    lake.bump_ddl_version();
    lake.external().refresh().await?;
    lake.views().refresh().await?;
    let (files, bytes, files_written, bytes_written) = *copier.stats.lock().expect("stats lock");
    let summary = RestoreSummary {
        label: manifest.label.clone(),
        tables: tables.iter().map(|t| t.qualified()).collect(),
        external_tables: externals.iter().map(|d| d.qualified()).collect(),
        views: views.iter().map(|d| d.qualified()).collect(),
        files,
        bytes,
        files_written,
        bytes_written,
        rewritten,
        seconds: clock.elapsed().as_secs_f64(),
    };
    Ok((summary, manifest))
}

/// Reads verified files from the backup and writes them into the warehouse, remembering
/// what it created (deleted again if the restore fails).
struct Copier<'a> {
    lake: &'a Lakehouse,
    target: &'a Target,
    created: Mutex<Vec<String>>,
    /// Files read, bytes read, files written, bytes written.
    stats: Mutex<(u64, u64, u64, u64)>,
}

impl Copier<'_> {
    /// The verified content of a backed-up file (an error names the file and the problem).
    async fn read(&self, f: &FileEntry) -> Result<Bytes> {
        let bytes = self.target.read_verified(f).await?.map_err(|problem| {
            Error::new(StatusCode::DataException, format!("backup is damaged, nothing restored: {problem}"))
        })?;
        let mut s = self.stats.lock().expect("stats lock");
        s.0 += 1;
        s.1 += bytes.len() as u64;
        Ok(bytes)
    }

    /// Writes `data` at `location` unless an object of that size is there (Iceberg files are
    /// immutable: the same name and size is the same file).
    async fn write(&self, location: &str, data: Bytes, overwrite: bool) -> Result<()> {
        let (store, path) = self.lake.storage().resolve(location)?;
        if !overwrite {
            match store.head(&path).await {
                Ok(meta) if meta.size == data.len() as u64 => return Ok(()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(crate::storage::storage_error(location, e)),
            }
        }
        let n = data.len() as u64;
        store.put(&path, data.into()).await.map_err(|e| crate::storage::storage_error(location, e))?;
        self.created.lock().expect("created lock").push(location.to_string());
        let mut s = self.stats.lock().expect("stats lock");
        s.2 += 1;
        s.3 += n;
        Ok(())
    }

    /// Copies files as they are: between two local directories streamed and verified on
    /// the way (`copy_local`), else through `copy_all`.
    async fn copy_verbatim(&self, jobs: Vec<(FileEntry, String)>) -> Result<Vec<(String, u64)>> {
        let options = self.lake.storage().options();
        let (local, other): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(f, to)| {
            self.target.local_file(&f.key).is_some() && super::local::local_file(to, options).is_some()
        });
        let mut out = self.copy_all(other, |_, b| Ok(b)).await?;
        let results = futures::stream::iter(local).map(|(f, to)| self.copy_local(f, to)).buffer_unordered(8);
        out.extend(first_of(results.collect().await)?);
        Ok(out)
    }

    /// One backed-up file into the local warehouse: skipped when a file of its size is there
    /// (as `write`), else copied and checked against the manifest before it takes its name.
    async fn copy_local(&self, f: FileEntry, to: String) -> Result<(String, u64)> {
        let from = self.target.local_file(&f.key).ok_or_else(|| Error::internal("a local backup file"))?;
        let dest = super::local::local_file(&to, self.lake.storage().options())
            .ok_or_else(|| Error::internal("a local warehouse file"))?;
        let damaged = |problem: String| {
            Error::new(StatusCode::DataException, format!("backup is damaged, nothing restored: {problem}"))
        };
        if !from.exists() {
            return Err(damaged(format!("missing: {} ({})", f.key, f.location)));
        }
        {
            let mut s = self.stats.lock().expect("stats lock");
            s.0 += 1;
            s.1 += f.size;
        }
        let entry = f.clone();
        let check = move |c: super::local::Copied| match entry.problem(c.size, &format!("{:08x}", c.crc32c)) {
            Some(problem) => Err(problem),
            None => Ok(()),
        };
        // A file of its size is there already (Iceberg files never change): the backup's
        // copy is still verified, as `read` does, but nothing is written.
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size) {
            let sum = tokio::task::spawn_blocking(move || super::local::checksum(&from))
                .await
                .map_err(|e| Error::internal(format!("file checksum task: {e}")))??;
            check(sum).map_err(damaged)?;
            return Ok((to, f.size));
        }
        super::local::copy_async(from, dest, check).await?.map_err(damaged)?;
        self.created.lock().expect("created lock").push(to.clone());
        let mut s = self.stats.lock().expect("stats lock");
        s.2 += 1;
        s.3 += f.size;
        Ok((to, f.size))
    }

    /// Copies files as they are (`rewrite` is None) or rewritten; eight at a time; every
    /// failure is reported, the first as the error.
    async fn copy_all<F>(&self, jobs: Vec<(FileEntry, String)>, rewrite: F) -> Result<Vec<(String, u64)>>
    where
        F: Fn(&FileEntry, Bytes) -> Result<Bytes> + Sync,
    {
        let rewrite = &rewrite;
        let results: Vec<Result<(String, u64)>> = futures::stream::iter(jobs)
            .map(|(f, to)| async move {
                let _held = super::MEMORY.acquire(f.size).await;
                let bytes = self.read(&f).await?;
                let bytes = rewrite(&f, bytes)?;
                let n = bytes.len() as u64;
                self.write(&to, bytes, false).await?;
                Ok((to, n))
            })
            .buffer_unordered(8)
            .collect()
            .await;
        first_of(results)
    }
}

/// Every result's value, or the first error with the others' messages appended.
fn first_of(results: Vec<Result<(String, u64)>>) -> Result<Vec<(String, u64)>> {
    let mut out = vec![];
    let mut errors = vec![];
    for r in results {
        match r {
            Ok(x) => out.push(x),
            Err(e) => errors.push(e),
        }
    }
    if let Some(first) = errors.first() {
        let more = if errors.len() > 1 {
            format!(
                " (and {} more: {})",
                errors.len() - 1,
                errors[1..].iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
            )
        } else {
            String::new()
        };
        return Err(Error::new(first.code, format!("{}{more}", first.message)));
    }
    Ok(out)
}

/// Copies every placement's files; returns each table's new metadata location.
async fn copy_tables(
    copier: &Copier<'_>,
    placements: &[Placement<'_>],
    current_only: bool,
    progress: ProgressFn<'_>,
) -> Result<Vec<String>> {
    // Data files, and (for tables that keep their location) manifests and lists: as they are.
    let mut plain = vec![];
    let mut manifests = vec![];
    let mut lists = vec![];
    for p in placements {
        for f in &p.table.files {
            let to = p.map(&f.location)?;
            match f.kind {
                FileKind::Data | FileKind::Statistics => plain.push((f.clone(), to)),
                FileKind::Manifest if p.moved() => manifests.push((f.clone(), to, p)),
                FileKind::ManifestList if p.moved() => lists.push((f.clone(), to, p)),
                FileKind::Manifest | FileKind::ManifestList => plain.push((f.clone(), to)),
                FileKind::Metadata | FileKind::Policy | FileKind::Users => {}
            }
        }
    }
    let n = plain.len();
    copier.copy_verbatim(plain).await?;
    progress(format!("restore: {n} files verified and in place"));
    // Manifests, then manifest lists (which record the manifests' new lengths), rewritten.
    let mut lengths: HashMap<String, u64> = HashMap::new();
    for (jobs, what) in [(manifests, "manifests"), (lists, "manifest lists")] {
        if jobs.is_empty() {
            continue;
        }
        let count = jobs.len();
        let maps: HashMap<String, &Placement> = jobs.iter().map(|(f, _, p)| (f.key.clone(), *p)).collect();
        let jobs: Vec<(FileEntry, String)> = jobs.into_iter().map(|(f, to, _)| (f, to)).collect();
        let lengths_now = lengths.clone();
        let written = copier
            .copy_all(jobs, |f, bytes| {
                let p = maps.get(&f.key).ok_or_else(|| Error::internal("placement of a manifest"))?;
                rewrite_avro(
                    &bytes,
                    &|s| if is_under(s, &p.table.location) { p.map(s).ok() } else { None },
                    &lengths_now,
                )
                .map(Bytes::from)
                .map_err(|e| Error::new(StatusCode::DataException, format!("{}: {e}", redact_uri(&f.location))))
            })
            .await?;
        lengths.extend(written);
        progress(format!("restore: {count} {what} rewritten"));
    }
    // Metadata files last.
    let mut out = vec![];
    for p in placements {
        let f = p.table.files.iter().find(|f| f.kind == FileKind::Metadata).ok_or_else(|| {
            Error::new(StatusCode::DataException, format!("backup lists no metadata file for {}", p.table.qualified()))
        })?;
        let bytes = copier.read(f).await?;
        if !p.moved() && !current_only {
            copier.write(&f.location, bytes, false).await?;
            out.push(f.location.clone());
            continue;
        }
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(StatusCode::DataException, format!("{}: {e}", redact_uri(&f.location))))?;
        if p.moved() {
            rewrite_json(&mut value, &|s| if is_under(s, &p.table.location) { p.map(s).ok() } else { None });
            // The older metadata files were not backed up.
            if let Some(obj) = value.as_object_mut() {
                obj.insert("metadata-log".into(), serde_json::Value::Array(vec![]));
            }
        }
        if current_only {
            let md: TableMetadata = serde_json::from_value(value)
                .map_err(|e| Error::new(StatusCode::DataException, format!("{}: {e}", redact_uri(&f.location))))?;
            let current = md.current_snapshot().map(|s| s.snapshot_id());
            let gone: Vec<i64> = md.snapshots().map(|s| s.snapshot_id()).filter(|id| Some(*id) != current).collect();
            let md = if gone.is_empty() { md } else { md.into_builder(None).remove_snapshots(&gone).build()?.metadata };
            value = serde_json::to_value(&md).map_err(|e| Error::internal(e.to_string()))?;
        }
        let version = crate::maintenance::metadata_version(&f.location).unwrap_or(0);
        let location = format!("{}/metadata/{version:05}-{}.metadata.json", p.location, uuid::Uuid::new_v4());
        let text = serde_json::to_vec(&value).map_err(|e| Error::internal(e.to_string()))?;
        copier.write(&location, Bytes::from(text), true).await?;
        out.push(location);
    }
    Ok(out)
}

fn is_under(s: &str, location: &str) -> bool {
    let l = location.trim_end_matches('/');
    s == l || s.strip_prefix(l).is_some_and(|r| r.starts_with('/'))
}

/// Replaces every string `map` maps, anywhere in a JSON document.
fn rewrite_json(v: &mut serde_json::Value, map: &dyn Fn(&str) -> Option<String>) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(n) = map(s) {
                *s = n;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| rewrite_json(i, map)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|i| rewrite_json(i, map)),
        _ => {}
    }
}

/// Rewrites an Avro file (manifest list or manifest): every string value `map` maps, with
/// the same schema and user metadata; a record with a `manifest_path` whose new file has a
/// known length gets that `manifest_length`.
fn rewrite_avro(
    data: &[u8],
    map: &dyn Fn(&str) -> Option<String>,
    lengths: &HashMap<String, u64>,
) -> std::result::Result<Vec<u8>, String> {
    use apache_avro::types::Value;
    fn walk(v: &mut Value, map: &dyn Fn(&str) -> Option<String>, lengths: &HashMap<String, u64>) {
        match v {
            Value::String(s) => {
                if let Some(n) = map(s) {
                    *s = n;
                }
            }
            Value::Union(_, inner) => walk(inner, map, lengths),
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, map, lengths)),
            Value::Map(m) => m.values_mut().for_each(|i| walk(i, map, lengths)),
            Value::Record(fields) => {
                fields.iter_mut().for_each(|(_, f)| walk(f, map, lengths));
                let path = fields.iter().find_map(|(n, f)| match (n.as_str(), f) {
                    ("manifest_path", Value::String(s)) => Some(s.clone()),
                    _ => None,
                });
                if let Some(len) = path.and_then(|p| lengths.get(&p)) {
                    for (n, f) in fields.iter_mut() {
                        if n == "manifest_length" {
                            *f = Value::Long(*len as i64);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let reader = apache_avro::Reader::new(data).map_err(|e| e.to_string())?;
    let schema = reader.writer_schema().clone();
    let metadata = reader.user_metadata().clone();
    let mut values = vec![];
    for v in reader {
        let mut v = v.map_err(|e| e.to_string())?;
        walk(&mut v, map, lengths);
        values.push(v);
    }
    let mut writer = apache_avro::Writer::with_codec(&schema, Vec::new(), apache_avro::Codec::Null);
    for (k, v) in metadata {
        if !k.starts_with("avro.") {
            writer.add_user_metadata(k, v).map_err(|e| e.to_string())?;
        }
    }
    for v in values {
        writer.append(v).map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// One statement of the registration transaction, its `?` parameters all strings.
async fn exec(tx: &mut sqlx::Transaction<'_, sqlx::Any>, postgres: bool, sql: &str, binds: &[&str]) -> Result<()> {
    let sql = placeholders(postgres, sql);
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b.to_string());
    }
    query.execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}

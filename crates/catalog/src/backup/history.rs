//! `rxgate_backup_history`: one row per backup create, verify, restore and prune, in the
//! catalog database (`system.backups`, `system.backup_status`).

use sqlx::Row;

use crate::registry::{db_error, placeholders};
use crate::Lakehouse;
use rxgate_common::{redact_uri, Result};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS rxgate_backup_history (
    catalog_name VARCHAR(255) NOT NULL,
    label VARCHAR(2000) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    target TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    files_copied BIGINT NOT NULL,
    bytes_copied BIGINT NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    detail TEXT NOT NULL)";

/// One recorded backup action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupRecord {
    /// The backup's label (verify: every label checked).
    pub label: String,
    /// `create`, `verify`, `restore` or `prune`.
    pub kind: String,
    /// The target URL (credentials redacted).
    pub target: String,
    /// When it started (epoch ms).
    pub started_ms: i64,
    /// How long it ran.
    pub duration_ms: i64,
    /// Files of the backup (create, verify, restore) or deleted (prune).
    pub files: i64,
    /// Their bytes.
    pub bytes: i64,
    /// Files copied (create: into the target; restore: into the warehouse).
    pub files_copied: i64,
    /// Their bytes.
    pub bytes_copied: i64,
    /// `ok` or `failed`.
    pub outcome: String,
    /// What it did or why it failed, one line.
    pub detail: String,
}

async fn ready(lake: &Lakehouse) -> Result<()> {
    crate::registry::create_tables(lake.pool(), lake.config().is_postgres(), &[CREATE]).await
}

/// Records `rec` as one run of `kind` against `target` that started at `started_ms` (its
/// duration runs until now).
pub async fn record_run(lake: &Lakehouse, kind: &str, target: &str, started_ms: i64, rec: BackupRecord) {
    let rec = BackupRecord {
        kind: kind.into(),
        target: target.to_string(),
        started_ms,
        duration_ms: crate::maintenance::now_ms() - started_ms,
        ..rec
    };
    record(lake, &rec).await;
}

/// When the newest successful backup this process knows of finished (epoch ms; 0: none).
/// Set by [`record`] and [`note_records`]; read by the metrics (`rxgate_backup_age_seconds`).
static LAST_SUCCESS_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The newest successful backup (create) this process has seen recorded, epoch ms.
pub fn last_success_ms() -> Option<i64> {
    Some(LAST_SUCCESS_MS.load(std::sync::atomic::Ordering::Relaxed)).filter(|ms| *ms > 0)
}

/// Notes the newest successful backup among `records` (read from the history, so backups
/// taken by other processes sharing the catalog count too).
pub fn note_records(records: &[BackupRecord]) {
    if let Some(ms) = last_successes(records).iter().map(|(_, _, ms)| *ms).max() {
        LAST_SUCCESS_MS.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Appends a record. A failure to record is logged, never the action's failure.
pub async fn record(lake: &Lakehouse, r: &BackupRecord) {
    note_records(std::slice::from_ref(r));
    let done = async {
        ready(lake).await?;
        let sql = placeholders(
            lake.config().is_postgres(),
            "INSERT INTO rxgate_backup_history (catalog_name, label, kind, target, started_ms, duration_ms, files, \
             bytes, files_copied, bytes_copied, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let detail: String = r.detail.lines().next().unwrap_or_default().chars().take(2000).collect();
        sqlx::query(&sql)
            .bind(lake.config().name.clone())
            .bind(r.label.clone())
            .bind(r.kind.clone())
            .bind(redact_uri(&r.target))
            .bind(r.started_ms)
            .bind(r.duration_ms)
            .bind(r.files)
            .bind(r.bytes)
            .bind(r.files_copied)
            .bind(r.bytes_copied)
            .bind(r.outcome.clone())
            .bind(detail)
            .execute(lake.pool())
            .await
            .map_err(db_error)?;
        Ok::<(), rxgate_common::Error>(())
    };
    if let Err(err) = done.await {
        tracing::warn!(kind = %r.kind, label = %r.label, error = %err.message, "backup history not recorded");
    }
}

/// Every record of this catalog, oldest first.
pub async fn list(lake: &Lakehouse) -> Result<Vec<BackupRecord>> {
    ready(lake).await?;
    let sql = placeholders(
        lake.config().is_postgres(),
        "SELECT label, kind, target, started_ms, duration_ms, files, bytes, files_copied, bytes_copied, outcome, \
         detail FROM rxgate_backup_history WHERE catalog_name = ? ORDER BY started_ms, kind",
    );
    let rows = sqlx::query(&sql).bind(lake.config().name.clone()).fetch_all(lake.pool()).await.map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(BackupRecord {
                label: r.try_get(0).map_err(db_error)?,
                kind: r.try_get(1).map_err(db_error)?,
                target: r.try_get(2).map_err(db_error)?,
                started_ms: r.try_get(3).map_err(db_error)?,
                duration_ms: r.try_get(4).map_err(db_error)?,
                files: r.try_get(5).map_err(db_error)?,
                bytes: r.try_get(6).map_err(db_error)?,
                files_copied: r.try_get(7).map_err(db_error)?,
                bytes_copied: r.try_get(8).map_err(db_error)?,
                outcome: r.try_get(9).map_err(db_error)?,
                detail: r.try_get(10).map_err(db_error)?,
            })
        })
        .collect()
}

/// The last successful backup (create) per target: `(target, label, finished at ms)`.
pub fn last_successes(records: &[BackupRecord]) -> Vec<(String, String, i64)> {
    let mut last: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    for r in records.iter().filter(|r| r.kind == "create" && r.outcome == "ok") {
        let finished = r.started_ms + r.duration_ms;
        let slot = last.entry(r.target.clone()).or_insert_with(|| (r.label.clone(), finished));
        if finished >= slot.1 {
            *slot = (r.label.clone(), finished);
        }
    }
    last.into_iter().map(|(t, (l, at))| (t, l, at)).collect()
}

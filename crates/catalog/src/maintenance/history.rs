//! `rxgate_maintenance_history`: one row per maintenance action (expiry, orphan removal,
//! compaction, lifecycle moves), in the catalog database so every gateway sharing it sees
//! them (`system.maintenance_history`).

use sqlx::Row;

use crate::registry::{db_error, placeholders};
use crate::Lakehouse;
use rxgate_common::{Error, Result};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS rxgate_maintenance_history (
    catalog_name VARCHAR(255) NOT NULL,
    table_name VARCHAR(512) NOT NULL,
    action VARCHAR(64) NOT NULL,
    started_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    snapshot_id BIGINT,
    files_removed BIGINT NOT NULL,
    bytes_removed BIGINT NOT NULL,
    files_written BIGINT NOT NULL,
    bytes_written BIGINT NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    detail TEXT NOT NULL)";

/// One maintenance action, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `schema.table`.
    pub table: String,
    /// `expire_snapshots`, `remove_orphan_files`, `rewrite_data_files`, …
    pub action: String,
    /// When it started (epoch ms).
    pub started_ms: i64,
    /// How long it ran.
    pub duration_ms: i64,
    /// The snapshot it committed, if any.
    pub snapshot_id: Option<i64>,
    /// Files deleted (or replaced).
    pub files_removed: i64,
    /// Bytes of the files deleted (where known: data files).
    pub bytes_removed: i64,
    /// Files written.
    pub files_written: i64,
    /// Bytes written.
    pub bytes_written: i64,
    /// `ok`, `dry run` or `failed`.
    pub outcome: String,
    /// What it did or why it failed, one line.
    pub detail: String,
}

async fn ready(lake: &Lakehouse) -> Result<()> {
    crate::registry::create_tables(lake.pool(), lake.config().is_postgres(), &[CREATE]).await
}

/// Appends an entry. A failure to record is logged, never the action's failure.
pub async fn record(lake: &Lakehouse, e: &HistoryEntry) {
    let done = async {
        ready(lake).await?;
        let sql = placeholders(
            lake.config().is_postgres(),
            "INSERT INTO rxgate_maintenance_history (catalog_name, table_name, action, started_ms, duration_ms, \
             snapshot_id, files_removed, bytes_removed, files_written, bytes_written, outcome, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(lake.config().name.clone())
            .bind(e.table.clone())
            .bind(e.action.clone())
            .bind(e.started_ms)
            .bind(e.duration_ms)
            .bind(e.snapshot_id)
            .bind(e.files_removed)
            .bind(e.bytes_removed)
            .bind(e.files_written)
            .bind(e.bytes_written)
            .bind(e.outcome.clone())
            .bind(e.detail.clone())
            .execute(lake.pool())
            .await
            .map_err(db_error)?;
        Ok::<(), rxgate_common::Error>(())
    };
    if let Err(err) = done.await {
        tracing::warn!(table = %e.table, action = %e.action, error = %err.message, "maintenance history not recorded");
    }
}

/// Every entry of this catalog, oldest first.
pub async fn list(lake: &Lakehouse) -> Result<Vec<HistoryEntry>> {
    ready(lake).await?;
    let sql = placeholders(
        lake.config().is_postgres(),
        "SELECT table_name, action, started_ms, duration_ms, snapshot_id, files_removed, bytes_removed, \
         files_written, bytes_written, outcome, detail FROM rxgate_maintenance_history WHERE catalog_name = ? \
         ORDER BY started_ms, table_name",
    );
    let rows = sqlx::query(&sql).bind(lake.config().name.clone()).fetch_all(lake.pool()).await.map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(HistoryEntry {
                table: r.try_get(0).map_err(db_error)?,
                action: r.try_get(1).map_err(db_error)?,
                started_ms: r.try_get(2).map_err(db_error)?,
                duration_ms: r.try_get(3).map_err(db_error)?,
                snapshot_id: r.try_get(4).map_err(db_error)?,
                files_removed: r.try_get(5).map_err(db_error)?,
                bytes_removed: r.try_get(6).map_err(db_error)?,
                files_written: r.try_get(7).map_err(db_error)?,
                bytes_written: r.try_get(8).map_err(db_error)?,
                outcome: r.try_get(9).map_err(db_error)?,
                detail: r.try_get(10).map_err(db_error)?,
            })
        })
        .collect()
}

const CREATE_LOCKS: &str = "CREATE TABLE IF NOT EXISTS rxgate_locks (
    catalog_name VARCHAR(255) NOT NULL,
    lock_name VARCHAR(255) NOT NULL,
    owner VARCHAR(255) NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (catalog_name, lock_name))";

/// A lease on a named lock in the catalog database (`rxgate_locks`): one holder at a time
/// among every process sharing the catalog; a holder that died loses it when it expires.
#[derive(Debug)]
pub struct Lease {
    name: String,
    owner: String,
}

impl Lease {
    /// Takes `name` for `ttl`, or `None` while another holder's lease is live.
    pub async fn acquire(lake: &Lakehouse, name: &str, ttl: std::time::Duration) -> Result<Option<Lease>> {
        let postgres = lake.config().is_postgres();
        crate::registry::create_tables(lake.pool(), postgres, &[CREATE_LOCKS]).await?;
        let mut tx = lake.pool().begin().await.map_err(db_error)?;
        let now = super::now_ms();
        sqlx::query(&placeholders(
            postgres,
            "DELETE FROM rxgate_locks WHERE catalog_name = ? AND lock_name = ? AND expires_ms < ?",
        ))
        .bind(lake.config().name.clone())
        .bind(name.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let owner = format!("{}:{}:{}", hostname(), std::process::id(), uuid::Uuid::new_v4());
        // A holder on this host whose process is gone (killed) lost its lease.
        let held: Option<String> = sqlx::query_scalar(&placeholders(
            postgres,
            "SELECT owner FROM rxgate_locks WHERE catalog_name = ? AND lock_name = ?",
        ))
        .bind(lake.config().name.clone())
        .bind(name.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(held) = held.filter(|h| holder_is_gone(h)) {
            tracing::warn!(lock = name, holder = %held, "taking over the lease of a process that is gone");
            sqlx::query(&placeholders(
                postgres,
                "DELETE FROM rxgate_locks WHERE catalog_name = ? AND lock_name = ? AND owner = ?",
            ))
            .bind(lake.config().name.clone())
            .bind(name.to_string())
            .bind(held)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let inserted = sqlx::query(&placeholders(
            postgres,
            "INSERT INTO rxgate_locks (catalog_name, lock_name, owner, expires_ms) VALUES (?, ?, ?, ?)",
        ))
        .bind(lake.config().name.clone())
        .bind(name.to_string())
        .bind(owner.clone())
        .bind(now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await.map_err(db_error)?;
                Ok(Some(Lease { name: name.to_string(), owner }))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(db_error(e)),
        }
    }

    /// Runs `work` holding the lease `name`; `busy` is the error when another process holds it.
    /// The lease is released whatever `work` returns.
    pub async fn hold<T>(
        lake: &Lakehouse,
        name: &str,
        ttl: std::time::Duration,
        busy: Error,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(lease) = Self::acquire(lake, name, ttl).await? else { return Err(busy) };
        let done = work.await;
        lease.release(lake).await?;
        done
    }

    /// Gives the lock back.
    pub async fn release(self, lake: &Lakehouse) -> Result<()> {
        let sql = placeholders(
            lake.config().is_postgres(),
            "DELETE FROM rxgate_locks WHERE catalog_name = ? AND lock_name = ? AND owner = ?",
        );
        sqlx::query(&sql)
            .bind(lake.config().name.clone())
            .bind(self.name)
            .bind(self.owner)
            .execute(lake.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// This host's name (Linux), for lease owners.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Whether a lease owner (`host:pid:uuid`) is a process of this host that no longer runs.
fn holder_is_gone(owner: &str) -> bool {
    let mut parts = owner.splitn(3, ':');
    match (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) if !host.is_empty() && host == hostname() => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

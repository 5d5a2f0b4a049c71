//! `rxgate backup create|list|verify|restore|prune` and the schedule `serve` keeps
//! (`[backup] target`, `interval_secs`, `keep_last`): backups taken under the catalog's
//! `backup` lease, so among gateways sharing a catalog one runs at a time (writers are never
//! blocked: the backup itself only reads the catalog in one transaction).

use std::time::Duration;

use rxgate_catalog::backup::{self, CreateOptions, FileKind, RestoreOptions};
use rxgate_catalog::maintenance::history::Lease;
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use crate::cli::BackupCommand;
use crate::config::Settings;

/// The lock's name, and how long a holder that died keeps it.
const LOCK: &str = "backup";
const LEASE: Duration = Duration::from_secs(6 * 3600);

fn progress(quiet: bool) -> impl Fn(String) + Send + Sync {
    move |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    }
}

/// The config files a backup keeps: the policy file in force, and the users file when asked.
fn config_files(settings: &Settings, include_users: bool) -> Result<Vec<(FileKind, String, Vec<u8>)>> {
    let mut out = vec![];
    if let Some(p) = &settings.engine.policy_file {
        let text = std::fs::read(p)
            .map_err(|e| Error::invalid(format!("cannot read the policy file {}: {e}", p.display())))?;
        out.push((FileKind::Policy, "policy.toml".to_string(), text));
    }
    if include_users {
        let p = &settings.auth.users_file;
        match std::fs::read(p) {
            Ok(text) => out.push((FileKind::Users, "users.toml".to_string(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("backup: no users file at {}; none backed up", p.display())
            }
            Err(e) => return Err(Error::invalid(format!("cannot read the users file {}: {e}", p.display()))),
        }
    }
    Ok(out)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn json_line(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::internal(e.to_string()))?;
    crate::output::line(text)
}

/// Parses `--as-of`: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD` (end of that day, UTC).
fn parse_time(text: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let end = d.and_hms_milli_opt(23, 59, 59, 999).ok_or_else(|| Error::invalid("bad date"))?;
        return Ok(end.and_utc().timestamp_millis());
    }
    Err(Error::invalid(format!(
        "--as-of {text:?}: expected an RFC 3339 time, \"YYYY-MM-DD HH:MM:SS\" (UTC) or YYYY-MM-DD"
    )))
}

/// The error when another process holds the backup lease.
fn busy() -> Error {
    Error::new(StatusCode::CommitConflict, "another process is taking or pruning a backup of this catalog; try later")
}

/// Runs `rxgate backup …`.
pub(crate) async fn command(lake: &Lakehouse, settings: &Settings, action: BackupCommand) -> Result<()> {
    match action {
        BackupCommand::Create { to, label, current_only, include_users, json, quiet } => {
            let opts = CreateOptions { label, current_only, config_files: config_files(settings, include_users)? };
            let s = Lease::hold(lake, LOCK, LEASE, busy(), backup::create(lake, &to, &opts, &progress(quiet || json)))
                .await?;
            if json {
                json_line(&s)?;
            } else {
                eprintln!(
                    "backup {}: {} tables, {} external tables (definitions only), {} views; {} files, {}: \
                     copied {} files ({}), skipped {} unchanged ({}) in {:.2} s",
                    s.label,
                    s.tables,
                    s.external_tables,
                    s.views,
                    s.files,
                    human(s.bytes),
                    s.files_copied,
                    human(s.bytes_copied),
                    s.files_skipped,
                    human(s.bytes_skipped),
                    s.seconds
                );
                crate::output::line(&s.label)?;
            }
            Ok(())
        }
        BackupCommand::List { url, json } => {
            let target = backup::Target::open(lake, &url)?;
            let all = target.manifests().await?;
            if all.is_empty() {
                eprintln!("no complete backup in {}", rxgate_common::redact_uri(target.url()));
            }
            for m in all {
                let (files, bytes) = m.totals();
                let created = chrono::DateTime::from_timestamp_millis(m.created_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default();
                if json {
                    json_line(&serde_json::json!({
                        "label": m.label, "created": created, "tables": m.tables.len(),
                        "external_tables": m.external_tables.len(), "views": m.views.len(),
                        "files": files, "bytes": bytes, "current_only": m.current_only,
                        "row_counts": m.tables.iter().map(|t| (t.qualified(), t.row_count)).collect::<std::collections::BTreeMap<_, _>>(),
                    }))?;
                } else {
                    crate::output::line(format!(
                        "{}\t{created}\t{} tables\t{} external\t{} views\t{files} files\t{}{}",
                        m.label,
                        m.tables.len(),
                        m.external_tables.len(),
                        m.views.len(),
                        human(bytes),
                        if m.current_only { "\tcurrent-only" } else { "" }
                    ))?;
                }
            }
            Ok(())
        }
        BackupCommand::Verify { url, label, json } => {
            let reports = backup::verify(lake, &url, label.as_deref()).await?;
            let mut bad = 0;
            for r in &reports {
                if json {
                    json_line(r)?;
                } else {
                    let state = if r.problems.is_empty() { "ok" } else { "DAMAGED" };
                    crate::output::line(format!("{}\t{state}\t{} files\t{}", r.label, r.files, human(r.bytes)))?;
                }
                for p in &r.problems {
                    eprintln!("backup {}: {p}", r.label);
                }
                bad += r.problems.len();
            }
            if bad > 0 {
                let first = reports.iter().flat_map(|r| r.problems.iter()).next().cloned().unwrap_or_default();
                return Err(Error::new(
                    StatusCode::DataException,
                    format!("{bad} file(s) missing or corrupted; first: {first}"),
                ));
            }
            Ok(())
        }
        BackupCommand::Restore { from, label, as_of, tables, replace, config_dir, json, quiet } => {
            let opts = RestoreOptions {
                label,
                as_of_ms: as_of.as_deref().map(parse_time).transpose()?,
                tables: tables.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_string()).collect(),
                replace,
            };
            let (s, manifest) = backup::restore(lake, &from, &opts, &progress(quiet || json)).await?;
            if let Some(dir) = config_dir {
                let target = backup::Target::open(lake, &from)?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::invalid(format!("cannot create {}: {e}", dir.display())))?;
                for f in &manifest.config_files {
                    let bytes = target.read_verified(f).await?.map_err(|p| Error::new(StatusCode::DataException, p))?;
                    let path = dir.join(&f.location);
                    std::fs::write(&path, &bytes)
                        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))?;
                    eprintln!("restore: wrote {}", path.display());
                }
            }
            if json {
                json_line(&s)?;
            } else {
                eprintln!(
                    "restore {}: {} tables, {} external tables, {} views; {} files verified ({}), {} written ({}){} in {:.2} s",
                    s.label,
                    s.tables.len(),
                    s.external_tables.len(),
                    s.views.len(),
                    s.files,
                    human(s.bytes),
                    s.files_written,
                    human(s.bytes_written),
                    if s.rewritten { ", paths rewritten" } else { "" },
                    s.seconds
                );
            }
            Ok(())
        }
        BackupCommand::Prune { url, keep_last, json } => {
            let s = Lease::hold(lake, LOCK, LEASE, busy(), backup::prune(lake, &url, keep_last)).await?;
            if json {
                json_line(&s)?;
            } else {
                eprintln!(
                    "prune: removed {} backup(s) {}, kept {}; deleted {} files ({})",
                    s.removed.len(),
                    s.removed.join(", "),
                    s.kept,
                    s.files_deleted,
                    human(s.bytes_deleted)
                );
            }
            Ok(())
        }
    }
}

/// With `[backup] target` and `interval_secs`, takes a backup every interval in the
/// background (when this process gets the lease), then prunes to `keep_last`; errors are
/// logged and the next run tries again.
pub(crate) fn schedule(lake: &Lakehouse, settings: &Settings) -> Result<()> {
    let section = &settings.backup;
    let Some(secs) = section.interval_secs.filter(|s| *s > 0) else { return Ok(()) };
    let Some(target) = section.target.clone() else {
        return Err(Error::invalid("[backup] interval_secs needs [backup] target"));
    };
    if section.keep_last == Some(0) {
        return Err(Error::invalid("[backup] keep_last must be at least 1"));
    }
    let include_users = section.include_users.unwrap_or(false);
    config_files(settings, include_users)?;
    let current_only = section.current_only.unwrap_or(false);
    let settings = settings.clone();
    let keep_last = section.keep_last;
    let lake = lake.clone();
    let shown = rxgate_common::redact_uri(&target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            match Lease::acquire(&lake, LOCK, LEASE).await {
                Ok(Some(lease)) => {
                    let log = |line: String| tracing::debug!("{line}");
                    // The policy (and users) file as it is now.
                    let created = match config_files(&settings, include_users) {
                        Ok(files) => {
                            let opts = CreateOptions { label: None, current_only, config_files: files };
                            backup::create(&lake, &target, &opts, &log).await
                        }
                        Err(e) => Err(e),
                    };
                    match created {
                        Ok(s) => tracing::info!(
                            label = %s.label, files = s.files, copied = s.files_copied,
                            bytes_copied = s.bytes_copied, seconds = s.seconds, "backup taken"
                        ),
                        Err(e) => tracing::error!(error = %e.message, "scheduled backup failed"),
                    }
                    if let Some(keep) = keep_last {
                        match backup::prune(&lake, &target, keep as usize).await {
                            Ok(s) => tracing::info!(
                                removed = s.removed.len(),
                                files_deleted = s.files_deleted,
                                "backups pruned"
                            ),
                            Err(e) => tracing::error!(error = %e.message, "backup pruning failed"),
                        }
                    }
                    if let Err(e) = lease.release(&lake).await {
                        tracing::warn!(error = %e.message, "backup lock not released");
                    }
                }
                Ok(None) => tracing::info!("backup skipped: another gateway holds the lock"),
                Err(e) => tracing::warn!(error = %e.message, "backup lock not taken"),
            }
        }
    });
    tracing::info!(interval_secs = secs, target = %shown, "backups scheduled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_times_parse() {
        assert_eq!(parse_time("2026-12-07T01:00:00Z").unwrap(), 1_796_605_200_000);
        assert_eq!(parse_time("2026-12-07 01:00:00").unwrap(), 1_796_605_200_000);
        assert!(parse_time("yesterday").is_err());
    }
}

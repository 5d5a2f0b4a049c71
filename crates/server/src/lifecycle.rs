//! `rxgate lifecycle plan|run` and the schedule `serve` keeps (`[lifecycle] interval_secs`):
//! the tables whose definitions carry a `[table.lifecycle]`, under one lease in the catalog
//! database, so among gateways sharing a catalog one runs it at a time.

use std::time::Duration;

use chrono::NaiveDate;
use rxgate_catalog::maintenance::history::Lease;
use rxgate_catalog::maintenance::lifecycle::{self, TablePlan};
use rxgate_catalog::{Lakehouse, TableDef};
use rxgate_common::{Error, Result};

use crate::cli::{LifecycleArgs, LifecycleCommand};
use crate::config::Settings;

/// The lock's name, and how long a holder that died keeps it.
const LOCK: &str = "lifecycle";
const LEASE: Duration = Duration::from_secs(6 * 3600);

/// The definitions with a lifecycle, optionally only `table`.
fn tables(settings: &Settings, args: &LifecycleArgs) -> Result<Vec<TableDef>> {
    let path = args.definitions.as_deref().or(settings.lifecycle.definitions.as_deref());
    let defs = crate::commands::definitions_for(path)?;
    let chosen: Vec<TableDef> = defs
        .tables
        .into_iter()
        .filter(|d| d.lifecycle.is_some() && args.table.as_deref().is_none_or(|t| t == d.name))
        .collect();
    if let (Some(t), true) = (&args.table, chosen.is_empty()) {
        return Err(Error::invalid(format!("table {t} has no [table.lifecycle] in the definitions")));
    }
    Ok(chosen)
}

fn as_of(args: &LifecycleArgs) -> Result<NaiveDate> {
    match &args.as_of {
        Some(s) => lifecycle::parse_date(s),
        None => Ok(chrono::Utc::now().date_naive()),
    }
}

/// Runs `rxgate lifecycle plan|run`.
pub(crate) async fn command(lake: &Lakehouse, settings: &Settings, action: LifecycleCommand) -> Result<()> {
    match action {
        LifecycleCommand::Plan(args) => {
            let day = as_of(&args)?;
            for def in tables(settings, &args)? {
                print_plan(&lifecycle::plan(lake, &def, day).await?);
            }
            Ok(())
        }
        LifecycleCommand::Run { args, dry_run } => {
            let day = as_of(&args)?;
            let defs = tables(settings, &args)?;
            if dry_run {
                for def in &defs {
                    print_plan(&lifecycle::run(lake, def, day, true).await?);
                }
                return Ok(());
            }
            let busy = Error::invalid("another process is running the lifecycle of this catalog; try later");
            Lease::hold(lake, LOCK, LEASE, busy, run_all(lake, &defs, day, true)).await
        }
    }
}

fn print_plan(plan: &TablePlan) {
    for line in plan.lines() {
        println!("{line}");
    }
}

async fn run_all(lake: &Lakehouse, defs: &[TableDef], day: NaiveDate, print: bool) -> Result<()> {
    for def in defs {
        let started = std::time::Instant::now();
        let plan = lifecycle::run(lake, def, day, false).await?;
        if print {
            print_plan(&plan);
            println!("{}: done in {:.1} s", def.name, started.elapsed().as_secs_f64());
        }
        tracing::info!(table = %def.name, archived = plan.archive.len(), purged = plan.purge.len(), "lifecycle ran");
    }
    Ok(())
}

/// With `[lifecycle] interval_secs`, runs the lifecycle every interval in the background
/// (when this process gets the lease; errors are logged and the next run tries again).
pub(crate) fn schedule(lake: &Lakehouse, settings: &Settings) -> Result<()> {
    let Some(secs) = settings.lifecycle.interval_secs.filter(|s| *s > 0) else { return Ok(()) };
    let args = LifecycleArgs { table: None, as_of: None, definitions: None };
    let defs = tables(settings, &args)?;
    let count = defs.len();
    let lake = lake.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            let day = chrono::Utc::now().date_naive();
            match Lease::acquire(&lake, LOCK, LEASE).await {
                Ok(Some(lease)) => {
                    if let Err(e) = run_all(&lake, &defs, day, false).await {
                        tracing::error!(error = %e.message, "lifecycle run failed");
                    }
                    if let Err(e) = lease.release(&lake).await {
                        tracing::warn!(error = %e.message, "lifecycle lock not released");
                    }
                }
                Ok(None) => tracing::info!("lifecycle skipped: another gateway holds the lock"),
                Err(e) => tracing::warn!(error = %e.message, "lifecycle lock not taken"),
            }
        }
    });
    tracing::info!(interval_secs = secs, tables = count, "lifecycle scheduled");
    Ok(())
}

//! The seed's end-to-end sequence for one delivery, with restart: a step whose output for the
//! delivery is already committed is skipped on a re-run (unless forced).

use std::path::Path;
use std::time::Instant;

use iceberg::spec::Operation;
use rxgate_catalog::{apply_definitions, Lakehouse, TableDef};
use rxgate_common::Result;
use serde::Serialize;

use crate::cities::{ingest_cities, CITY_TABLE};
use crate::prescribers::{ingest_prescribers, FACT_TABLE};
use crate::progress::Progress;
use crate::reports::{city_report_sql, materialize, top_prescribers_sql, CITY_REPORT, TOP_PRESCRIBERS};

/// Inputs of one pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Directory (local path or gs://, s3://, hdfs:// location) holding `cities/` (Parquet)
    /// and `prescribers/` (CSV).
    pub input: String,
    /// The delivery.
    pub delivery_date: chrono::NaiveDate,
    /// Re-run steps even when their output is committed.
    pub force: bool,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// `done` or `skipped`.
    pub status: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Rows the step wrote (or had written, when skipped).
    pub rows: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// The delivery.
    pub delivery_date: String,
    /// Steps in order.
    pub steps: Vec<StepReport>,
    /// Prescriber lines read.
    pub read: u64,
    /// Prescriber rows loaded.
    pub loaded: u64,
    /// Prescriber rows quarantined.
    pub quarantined: u64,
}

/// The committed snapshot summary of the latest commit of `step` for `date`, if the table's
/// current history has one that was not later undone.
async fn committed(
    lake: &Lakehouse,
    table: &str,
    date: chrono::NaiveDate,
    step: &str,
) -> Result<Option<std::collections::HashMap<String, String>>> {
    let t = lake.load_table(table).await?;
    let md = t.metadata();
    let mut cur = md.current_snapshot().cloned();
    let date = date.to_string();
    while let Some(s) = cur {
        let props = &s.summary().additional_properties;
        if props.get("rxgate.delivery-date") == Some(&date) {
            let ok = props.get("rxgate.step").map(String::as_str) == Some(step)
                && s.summary().operation != Operation::Delete;
            return Ok(ok.then(|| props.clone()));
        }
        cur = s.parent_snapshot_id().and_then(|p| md.snapshot_by_id(p).cloned());
    }
    Ok(None)
}

fn count(props: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    props.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Runs catalog apply → cities → prescribers → city report → top prescribers for one delivery.
pub async fn run_pipeline(
    lake: &Lakehouse,
    defs: &[TableDef],
    opts: &PipelineOptions,
    progress: &Progress,
) -> Result<PipelineReport> {
    let date = opts.delivery_date;
    let mut report =
        PipelineReport { delivery_date: date.to_string(), steps: vec![], read: 0, loaded: 0, quarantined: 0 };
    let mut log = |name: &str, skipped: bool, started: Instant, rows: u64| {
        let seconds = started.elapsed().as_secs_f64();
        if !skipped {
            rxgate_common::metrics::record_pipeline_step(name, started.elapsed());
        }
        let status = if skipped { "skipped" } else { "done" };
        tracing::info!(step = name, status, seconds = format!("{seconds:.2}"), rows, "pipeline step");
        report.steps.push(StepReport { name: name.to_string(), status: status.to_string(), seconds, rows });
    };

    let t = Instant::now();
    let actions = apply_definitions(lake, defs).await?;
    log("catalog-apply", false, t, actions.len() as u64);

    let steps: [(&str, &str, String); 2] = [
        ("ingest-cities", CITY_TABLE, crate::input::join(&opts.input, "cities")),
        ("ingest-prescribers", FACT_TABLE, crate::input::join(&opts.input, "prescribers")),
    ];
    let mut facts = (0, 0, 0);
    for (step, table, input) in steps {
        let t = Instant::now();
        if !opts.force {
            if let Some(props) = committed(lake, table, date, step).await? {
                let rows = count(&props, "added-records");
                if step == "ingest-prescribers" {
                    facts = (count(&props, "rxgate.read"), rows, count(&props, "rxgate.quarantined"));
                }
                log(step, true, t, rows);
                continue;
            }
        }
        // Errors say which step (and so which table) failed.
        let in_step = |e: rxgate_common::Error| e.context(format!("pipeline step {step} ({table})"));
        let s = if step == "ingest-cities" {
            ingest_cities(lake, &input, date).await.map_err(in_step)?
        } else {
            let s = ingest_prescribers(lake, &input, date, progress).await.map_err(in_step)?;
            facts = (s.read, s.loaded, s.quarantined);
            s
        };
        log(step, false, t, s.loaded);
    }
    (report.read, report.loaded, report.quarantined) = facts;

    for (step, table, sql) in [
        ("city-report", CITY_REPORT, city_report_sql(date)),
        ("top-prescribers", TOP_PRESCRIBERS, top_prescribers_sql(date)),
    ] {
        let t = Instant::now();
        if !opts.force {
            if let Some(props) = committed(lake, table, date, step).await? {
                log(step, true, t, count(&props, "added-records"));
                continue;
            }
        }
        let s = materialize(lake, table, &sql, date, step)
            .await
            .map_err(|e| e.context(format!("pipeline step {step} ({table})")))?;
        log(step, false, t, s.rows);
    }
    Ok(report)
}

/// True when `dir` looks like a raw-data directory (has `prescribers/` and `cities/`).
pub fn is_raw_dir(dir: &Path) -> bool {
    dir.join("prescribers").is_dir() && dir.join("cities").is_dir()
}

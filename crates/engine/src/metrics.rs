//! The engine's part of the metrics registry (`rxgate_common::metrics`): the collector that
//! reads, at scrape time, the counters the engine and the lakehouse already keep (the query
//! memory pool and spills, the data file cache, object-store requests, the last backup), and
//! the sampler behind `system.metrics_history` (every 10 s, the last hour, in memory).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::execution::runtime_env::RuntimeEnv;
use rxgate_catalog::storage::StoreRegistry;
use rxgate_common::metrics::{register_collector, Family, MetricType};

/// How often `system.metrics_history` is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const KEEP: usize = 360;

/// What the engine collector reads.
struct Sources {
    runtime: Weak<RuntimeEnv>,
    storage: Weak<StoreRegistry>,
    activity: Weak<crate::activity::Activity>,
    limit: usize,
}

/// When the process started (first use of the metrics), as an instant and as Unix time.
fn start() -> &'static (Instant, f64) {
    static START: std::sync::OnceLock<(Instant, f64)> = std::sync::OnceLock::new();
    START.get_or_init(|| (Instant::now(), now_secs()))
}

fn started() -> Instant {
    start().0
}

fn start_epoch() -> f64 {
    start().1
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Registers the engine's collector (the last engine built in the process wins; it holds
/// only weak references, so a dropped engine reports nothing).
pub(crate) fn install(
    runtime: &Arc<RuntimeEnv>,
    storage: &Arc<StoreRegistry>,
    activity: &Arc<crate::activity::Activity>,
    limit: usize,
) {
    let _ = start_epoch();
    let sources = Sources {
        runtime: Arc::downgrade(runtime),
        storage: Arc::downgrade(storage),
        activity: Arc::downgrade(activity),
        limit,
    };
    register_collector("engine", Arc::new(move |out: &mut Vec<Family>| collect(&sources, out)));
}

fn gauge(name: &str, help: &str, v: f64) -> Family {
    Family::new(name, help, MetricType::Gauge).sample(&[], v)
}

fn counter(name: &str, help: &str, v: u64) -> Family {
    Family::new(name, help, MetricType::Counter).sample(&[], v as f64)
}

fn collect(sources: &Sources, out: &mut Vec<Family>) {
    out.push(gauge("rxgate_process_start_time_seconds", "When the process started (Unix time).", start_epoch()));
    out.push(gauge("rxgate_uptime_seconds", "Seconds since the process started.", started().elapsed().as_secs_f64()));
    if let Some(activity) = sources.activity.upgrade() {
        // One count for every frontend: the sessions the activity registry lists.
        let mut family = Family::new(
            "rxgate_sessions_open",
            "Engine sessions open now (system.sessions), by protocol.",
            MetricType::Gauge,
        );
        for (protocol, n) in activity.open_by_protocol() {
            family = family.sample(&[("protocol", protocol)], n as f64);
        }
        out.push(family);
    }
    if let Some(runtime) = sources.runtime.upgrade() {
        out.push(gauge(
            "rxgate_query_memory_used_bytes",
            "Bytes reserved from the query memory pool now.",
            runtime.memory_pool.reserved() as f64,
        ));
        out.push(gauge(
            "rxgate_query_memory_limit_bytes",
            "The query memory pool's size ([engine] memory_limit).",
            sources.limit as f64,
        ));
        let spill = runtime.disk_manager.spilling_progress();
        out.push(gauge("rxgate_query_spill_bytes", "Bytes of spill files on disk now.", spill.current_bytes as f64));
        out.push(gauge("rxgate_query_spill_files", "Spill files open now.", spill.active_files_count as f64));
    }
    if let Some(storage) = sources.storage.upgrade() {
        let cache = storage.data_cache();
        let s = cache.stats();
        out.push(counter("rxgate_data_cache_hits_total", "Data file reads served from the cache.", s.hits));
        out.push(counter("rxgate_data_cache_misses_total", "Data files fetched into the cache.", s.misses));
        out.push(counter("rxgate_data_cache_evictions_total", "Data files evicted from the cache.", s.evictions));
        out.push(gauge("rxgate_data_cache_bytes", "Bytes the data file cache holds now.", s.bytes as f64));
        out.push(gauge(
            "rxgate_data_cache_limit_bytes",
            "The data file cache's budget ([storage] data_cache_bytes).",
            cache.budget() as f64,
        ));
        let counts = storage.request_counts();
        let mut requests = Family::new(
            "rxgate_object_store_requests_total",
            "Object-store requests, by operation and object kind.",
            MetricType::Counter,
        );
        let mut bytes = Family::new(
            "rxgate_object_store_bytes_total",
            "Object-store bytes read or written, by operation and object kind.",
            MetricType::Counter,
        );
        // Summed over stores: store roots name buckets, which stay out of the labels.
        let mut sums: std::collections::BTreeMap<(&str, &str), (u64, u64)> = Default::default();
        for c in &counts {
            let e = sums.entry((c.operation.as_str(), c.kind.as_str())).or_default();
            e.0 += c.requests;
            e.1 += c.bytes;
        }
        let mut parquet_reads = 0;
        for ((op, kind), (n, b)) in sums {
            requests.push(&[("operation", op), ("kind", kind)], n as f64);
            bytes.push(&[("operation", op), ("kind", kind)], b as f64);
            if kind == "parquet" && op.starts_with("get") {
                parquet_reads += b;
            }
        }
        out.push(requests);
        out.push(bytes);
        // Through the cache, the bytes handed to scans; with the cache off, the data file
        // bytes read from the store.
        let scanned = if cache.budget() > 0 { cache.scanned_bytes() } else { parquet_reads };
        out.push(counter("rxgate_scanned_bytes_total", "Data file bytes read by scans.", scanned));
    }
    if let Some(ms) = rxgate_catalog::backup::history::last_success_ms() {
        out.push(gauge(
            "rxgate_backup_last_success_timestamp_seconds",
            "When the newest successful backup finished (Unix time).",
            ms as f64 / 1000.0,
        ));
        out.push(gauge(
            "rxgate_backup_age_seconds",
            "Seconds since the newest successful backup finished.",
            (now_secs() - ms as f64 / 1000.0).max(0.0),
        ));
    }
}

/// One row of `system.metrics_history`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HistoryRow {
    ts_micros: i64,
    uptime_secs: f64,
    sessions: i64,
    statements_per_sec: f64,
    memory_used_bytes: i64,
    memory_limit_bytes: i64,
    cache_hits: i64,
    cache_misses: i64,
    cache_bytes: i64,
}

fn history() -> &'static Mutex<VecDeque<HistoryRow>> {
    static H: std::sync::OnceLock<Mutex<VecDeque<HistoryRow>>> = std::sync::OnceLock::new();
    H.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEEP)))
}

/// The value of a family's samples, summed.
fn sum_of(families: &[Family], name: &str) -> f64 {
    families.iter().filter(|f| f.name == name).flat_map(|f| f.samples.iter()).map(|s| s.value).sum()
}

/// Takes one sample now; `previous` is the last statement count and when it was taken.
fn sample(previous: &mut Option<(u64, Instant)>) {
    let families = rxgate_common::metrics::gather();
    let statements = rxgate_common::metrics::statements_total();
    let now = Instant::now();
    let per_sec = match previous {
        Some((n, at)) if now > *at => statements.saturating_sub(*n) as f64 / (now - *at).as_secs_f64(),
        _ => 0.0,
    };
    *previous = Some((statements, now));
    let row = HistoryRow {
        ts_micros: (now_secs() * 1e6) as i64,
        uptime_secs: started().elapsed().as_secs_f64(),
        sessions: sum_of(&families, "rxgate_sessions_open") as i64,
        statements_per_sec: per_sec,
        memory_used_bytes: sum_of(&families, "rxgate_query_memory_used_bytes") as i64,
        memory_limit_bytes: sum_of(&families, "rxgate_query_memory_limit_bytes") as i64,
        cache_hits: sum_of(&families, "rxgate_data_cache_hits_total") as i64,
        cache_misses: sum_of(&families, "rxgate_data_cache_misses_total") as i64,
        cache_bytes: sum_of(&families, "rxgate_data_cache_bytes") as i64,
    };
    let mut h = history().lock().unwrap_or_else(|p| p.into_inner());
    if h.len() >= KEEP {
        h.pop_front();
    }
    h.push_back(row);
}

/// Runs the sampler until the process ends: a sample every [`SAMPLE_EVERY`], and the backup
/// history re-read every minute (backups taken by other processes count too).
pub(crate) async fn run_sampler(lake: rxgate_catalog::Lakehouse) {
    let mut previous = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if n.is_multiple_of(6) {
            match rxgate_catalog::backup::history::list(&lake).await {
                Ok(records) => rxgate_catalog::backup::history::note_records(&records),
                Err(e) => tracing::debug!(error = %e.message, "backup history not read for the metrics"),
            }
        }
        n += 1;
        sample(&mut previous);
    }
}

/// `system.metrics` columns.
pub(crate) fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `system.metrics`: one row per series, as `/metrics` shows it now (histograms as their
/// `_bucket`, `_sum` and `_count` rows; labels as `k="v",…` without braces).
pub(crate) fn metrics_batch() -> DfResult<RecordBatch> {
    let families = rxgate_common::metrics::gather();
    let samples: Vec<_> = families.iter().flat_map(|f| f.samples.iter()).collect();
    let labels: Vec<String> = samples
        .iter()
        .map(|s| {
            let t = s.labels_text();
            t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(&t).to_string()
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.name.as_str()))),
        Arc::new(StringArray::from_iter_values(labels.iter())),
        Arc::new(Float64Array::from_iter_values(samples.iter().map(|s| s.value))),
    ];
    Ok(RecordBatch::try_new(metrics_schema(), columns)?)
}

/// `system.metrics_history` columns (the console's overview reads exactly these).
pub(crate) fn history_schema() -> SchemaRef {
    let big = |n: &str| Field::new(n, DataType::Int64, false);
    let dbl = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        dbl("uptime_secs"),
        big("sessions"),
        dbl("statements_per_sec"),
        big("memory_used_bytes"),
        big("memory_limit_bytes"),
        big("cache_hits"),
        big("cache_misses"),
        big("cache_bytes"),
    ]))
}

/// `system.metrics_history`: the samples of the last hour, oldest first.
pub(crate) fn history_batch() -> DfResult<RecordBatch> {
    let rows: Vec<HistoryRow> = history().lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
    let big = |f: fn(&HistoryRow) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let dbl = |f: fn(&HistoryRow) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts_micros))) as ArrayRef,
        dbl(|r| r.uptime_secs),
        big(|r| r.sessions),
        dbl(|r| r.statements_per_sec),
        big(|r| r.memory_used_bytes),
        big(|r| r.memory_limit_bytes),
        big(|r| r.cache_hits),
        big(|r| r.cache_misses),
        big(|r| r.cache_bytes),
    ];
    Ok(RecordBatch::try_new(history_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_schema_and_an_hour() {
        let mut previous = None;
        for _ in 0..(KEEP + 3) {
            sample(&mut previous);
        }
        let batch = history_batch().unwrap();
        assert_eq!(batch.num_rows(), KEEP);
        assert_eq!(batch.schema(), history_schema());
        let m = metrics_batch().unwrap();
        assert!(m.num_rows() > 0);
    }
}

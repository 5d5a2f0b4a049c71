//! The process's one metrics registry, in Prometheus' data model: counters, gauges and
//! histograms with bounded labels, rendered as the Prometheus text format (`/metrics`) or as
//! rows (`system.metrics`).
//!
//! Two kinds of series live here:
//! - **recorded** ones, counted by the code where the event happens (statements, rows and
//!   bytes sent, login failures, commit retries, ingest rows, pipeline steps, policy
//!   reloads): plain atomics, so recording costs an atomic add and never allocates;
//! - **collected** ones, read at scrape time from counters that already exist elsewhere
//!   (object-store requests, the data file cache, the memory pool, open sessions): each owner
//!   registers a [`Collector`] under a key ([`register_collector`]); nothing is counted twice.
//!
//! It lives in rxgate-common so every crate can record into it without a dependency cycle.
//! Labels are bounded by construction: protocols, statement kinds and outcomes are fixed
//! lists; no SQL text and no user name ever becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

/// Protocols a statement or session arrives by (the `protocol` label).
pub const PROTOCOLS: [&str; 4] = ["pgwire", "flightsql", "cli", "http"];

/// Statement kinds (the `kind` label), from [`statement_kind`].
pub const KINDS: [&str; 12] = [
    "select",
    "insert",
    "update",
    "delete",
    "ddl",
    "copy",
    "transaction",
    "set",
    "show",
    "explain",
    "maintenance",
    "other",
];

/// Statement outcomes (the `outcome` label).
pub const OUTCOMES: [&str; 3] = ["ok", "error", "cancelled"];

/// Upper bounds (seconds) of the statement latency histogram's buckets (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Upper bounds (seconds) of the pipeline step histogram's buckets.
pub const STEP_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// What a metric family is (Prometheus' `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (or resets with the process); name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative `_bucket{le}`, `_sum` and `_count` series.
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One series: the full sample name (with `_bucket`/`_sum`/`_count` for histograms), its
/// labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name.
    pub name: String,
    /// Label pairs, in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The labels in Prometheus' form, `{a="x",b="y"}` (empty without labels).
    pub fn labels_text(&self) -> String {
        if self.labels.is_empty() {
            return String::new();
        }
        let mut s = String::from("{");
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{k}=\"{}\"", escape_label(v));
        }
        s.push('}');
        s
    }
}

/// One metric family: name, help, type and samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// Family name (without `_bucket`/`_sum`/`_count`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Type.
    pub kind: MetricType,
    /// Its series.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &str, help: &str, kind: MetricType) -> Self {
        Self { name: name.into(), help: help.into(), kind, samples: vec![] }
    }

    /// Adds a sample named as the family.
    pub fn sample(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }

    /// Adds a sample named as the family.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = self.name.clone();
        self.push_named(name, labels, value);
    }

    fn push_named(&mut self, name: String, labels: &[(&str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.push(Sample { name, labels, value });
    }

    /// Adds a histogram's `_bucket`, `_sum` and `_count` series for one label set.
    pub fn push_histogram(&mut self, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0u64;
        for (i, le) in h.bounds.iter().enumerate() {
            cumulative += h.counts[i];
            let le = format_float(*le);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.push_named(format!("{}_bucket", self.name), &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.push_named(format!("{}_bucket", self.name), &l, h.count as f64);
        self.push_named(format!("{}_sum", self.name), labels, h.sum);
        self.push_named(format!("{}_count", self.name), labels, h.count as f64);
    }
}

/// A histogram with fixed buckets: atomics only.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microunits (µs for seconds), so it stays an integer atomic.
    sum_micros: AtomicU64,
}

/// A histogram read at one moment (per-bucket counts, not cumulative).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds.
    pub bounds: &'static [f64],
    /// Observations per bucket (the last one is above every bound).
    pub counts: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Something read at scrape time: appends its families.
pub type Collector = Arc<dyn Fn(&mut Vec<Family>) + Send + Sync>;

/// The recorded series.
struct Recorded {
    /// protocol × kind × outcome.
    statements: Vec<AtomicU64>,
    /// protocol × kind.
    latency: Vec<Histogram>,
    rows_sent: [AtomicU64; PROTOCOLS.len()],
    bytes_sent: [AtomicU64; PROTOCOLS.len()],
    login_failures: [AtomicU64; PROTOCOLS.len()],
    commit_retries: AtomicU64,
    commit_conflicts: AtomicU64,
    ingest_read: AtomicU64,
    ingest_loaded: AtomicU64,
    ingest_quarantined: AtomicU64,
    policy_reloads: AtomicU64,
    policy_errors: AtomicU64,
    /// Pipeline step name → seconds histogram (steps are a fixed list in the pipeline).
    steps: Mutex<BTreeMap<String, Arc<Histogram>>>,
    collectors: RwLock<BTreeMap<String, Collector>>,
    build: RwLock<(String, String)>,
}

fn recorded() -> &'static Recorded {
    static R: OnceLock<Recorded> = OnceLock::new();
    R.get_or_init(|| Recorded {
        statements: (0..PROTOCOLS.len() * KINDS.len() * OUTCOMES.len()).map(|_| AtomicU64::new(0)).collect(),
        latency: (0..PROTOCOLS.len() * KINDS.len()).map(|_| Histogram::new(&LATENCY_BUCKETS)).collect(),
        rows_sent: Default::default(),
        bytes_sent: Default::default(),
        login_failures: Default::default(),
        commit_retries: AtomicU64::new(0),
        commit_conflicts: AtomicU64::new(0),
        ingest_read: AtomicU64::new(0),
        ingest_loaded: AtomicU64::new(0),
        ingest_quarantined: AtomicU64::new(0),
        policy_reloads: AtomicU64::new(0),
        policy_errors: AtomicU64::new(0),
        steps: Mutex::new(BTreeMap::new()),
        collectors: RwLock::new(BTreeMap::new()),
        build: RwLock::new((String::new(), String::new())),
    })
}

fn index(list: &[&str], value: &str) -> usize {
    list.iter().position(|v| *v == value).unwrap_or(list.len() - 1)
}

fn protocol_index(protocol: &str) -> usize {
    // An unknown protocol counts as the last one rather than growing the label set.
    index(&PROTOCOLS, protocol)
}

/// The kind of a statement, from its first keyword (comments and parentheses skipped):
/// one of [`KINDS`].
pub fn statement_kind(sql: &str) -> &'static str {
    let mut s = sql;
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(' || c == ';');
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).take(16).collect();
    match word.to_ascii_lowercase().as_str() {
        "select" | "with" | "values" | "table" | "fetch" | "declare" | "close" | "move" => "select",
        "insert" => "insert",
        "update" | "merge" => "update",
        "delete" | "truncate" => "delete",
        "create" | "drop" | "alter" | "comment" | "rename" | "msck" | "grant" | "revoke" => "ddl",
        "copy" => "copy",
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" | "prepare" => {
            "transaction"
        }
        "set" | "reset" | "discard" | "use" | "deallocate" => "set",
        "show" | "describe" | "desc" => "show",
        "explain" => "explain",
        "call" | "optimize" | "vacuum" | "analyze" => "maintenance",
        _ => "other",
    }
}

/// Records one finished statement: its protocol (`pgwire`, `flightsql`, `cli`, `http`),
/// statement text (only its kind is kept), outcome (`ok`, `error`, `cancelled`), duration
/// and the rows it sent to the client.
pub fn record_statement(protocol: &str, sql: &str, outcome: &str, duration: Duration, rows_sent: u64) {
    let r = recorded();
    let (p, k, o) = (protocol_index(protocol), index(&KINDS, statement_kind(sql)), index(&OUTCOMES, outcome));
    r.statements[(p * KINDS.len() + k) * OUTCOMES.len() + o].fetch_add(1, Ordering::Relaxed);
    r.latency[p * KINDS.len() + k].observe(duration.as_secs_f64());
    if rows_sent > 0 {
        r.rows_sent[p].fetch_add(rows_sent, Ordering::Relaxed);
    }
}

/// Records result bytes written to a client (row data as encoded on the wire).
pub fn record_bytes_sent(protocol: &str, bytes: u64) {
    recorded().bytes_sent[protocol_index(protocol)].fetch_add(bytes, Ordering::Relaxed);
}

/// Records a failed login (wrong password, unknown user, refused by the throttle).
pub fn record_login_failure(protocol: &str) {
    recorded().login_failures[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
}

/// Records a commit retried after a compare-and-swap conflict (another writer committed
/// first), and, when `gave_up`, a conflict the commit could not resolve.
pub fn record_commit_conflict(retried: bool) {
    let r = recorded();
    if retried {
        r.commit_retries.fetch_add(1, Ordering::Relaxed);
    } else {
        r.commit_conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records an ingest's rows: read, loaded and quarantined.
pub fn record_ingest(read: u64, loaded: u64, quarantined: u64) {
    let r = recorded();
    r.ingest_read.fetch_add(read, Ordering::Relaxed);
    r.ingest_loaded.fetch_add(loaded, Ordering::Relaxed);
    r.ingest_quarantined.fetch_add(quarantined, Ordering::Relaxed);
}

/// Records one pipeline step's duration (`step`: a name from the pipeline's fixed list).
pub fn record_pipeline_step(step: &str, duration: Duration) {
    let h = {
        let mut steps = recorded().steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.entry(step.to_string()).or_insert_with(|| Arc::new(Histogram::new(&STEP_BUCKETS))).clone()
    };
    h.observe(duration.as_secs_f64());
}

/// Records a policy file reload: `ok` false when the new file was refused (the last good
/// policy stays in force).
pub fn record_policy_reload(ok: bool) {
    let r = recorded();
    if ok {
        r.policy_reloads.fetch_add(1, Ordering::Relaxed);
    } else {
        r.policy_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sets the `rxgate_build_info` labels (the server calls it once at start-up).
pub fn set_build_info(version: &str, commit: &str) {
    *recorded().build.write().unwrap_or_else(|p| p.into_inner()) = (version.to_string(), commit.to_string());
}

/// Registers (or replaces) the collector under `key`.
pub fn register_collector(key: &str, collector: Collector) {
    recorded().collectors.write().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), collector);
}

/// Statements finished so far, all labels together.
pub fn statements_total() -> u64 {
    recorded().statements.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// Every family: the recorded ones, then each collector's (by key).
pub fn gather() -> Vec<Family> {
    let r = recorded();
    let mut out = vec![];
    let (version, commit) = r.build.read().unwrap_or_else(|p| p.into_inner()).clone();
    let version = if version.is_empty() { env!("CARGO_PKG_VERSION").to_string() } else { version };
    out.push(
        Family::new("rxgate_build_info", "Build information; the value is always 1.", MetricType::Gauge)
            .sample(&[("version", &version), ("commit", &commit)], 1.0),
    );
    let mut statements = Family::new(
        "rxgate_statements_total",
        "Statements finished, by protocol, statement kind and outcome.",
        MetricType::Counter,
    );
    let mut latency = Family::new(
        "rxgate_statement_duration_seconds",
        "Statement duration from planning to the end of its result, by protocol and kind.",
        MetricType::Histogram,
    );
    for (p, protocol) in PROTOCOLS.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            let h = r.latency[p * KINDS.len() + k].snapshot();
            if h.count == 0 {
                continue;
            }
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let v = r.statements[(p * KINDS.len() + k) * OUTCOMES.len() + o].load(Ordering::Relaxed);
                statements.push(&[("protocol", protocol), ("kind", kind), ("outcome", outcome)], v as f64);
            }
            latency.push_histogram(&[("protocol", protocol), ("kind", kind)], &h);
        }
    }
    out.push(statements);
    out.push(latency);
    let per_protocol = |name: &str, help: &str, values: &[AtomicU64]| {
        let mut f = Family::new(name, help, MetricType::Counter);
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            f.push(&[("protocol", protocol)], values[p].load(Ordering::Relaxed) as f64);
        }
        f
    };
    out.push(per_protocol("rxgate_rows_sent_total", "Result rows sent to clients.", &r.rows_sent));
    out.push(per_protocol(
        "rxgate_sent_bytes_total",
        "Result bytes sent to clients (encoded row data).",
        &r.bytes_sent,
    ));
    out.push(per_protocol(
        "rxgate_login_failures_total",
        "Failed logins (wrong password, unknown user, throttled).",
        &r.login_failures,
    ));
    let counter = |name: &str, help: &str, v: &AtomicU64| {
        Family::new(name, help, MetricType::Counter).sample(&[], v.load(Ordering::Relaxed) as f64)
    };
    out.push(counter(
        "rxgate_commit_retries_total",
        "Table commits re-staged after another writer committed first.",
        &r.commit_retries,
    ));
    out.push(counter(
        "rxgate_commit_conflicts_total",
        "Table commits that failed on a conflict they could not resolve (40001).",
        &r.commit_conflicts,
    ));
    let mut ingest = Family::new("rxgate_ingest_rows_total", "Ingested rows by stage.", MetricType::Counter);
    ingest.push(&[("stage", "read")], r.ingest_read.load(Ordering::Relaxed) as f64);
    ingest.push(&[("stage", "loaded")], r.ingest_loaded.load(Ordering::Relaxed) as f64);
    ingest.push(&[("stage", "quarantined")], r.ingest_quarantined.load(Ordering::Relaxed) as f64);
    out.push(ingest);
    let mut steps = Family::new(
        "rxgate_pipeline_step_duration_seconds",
        "Pipeline step durations, by step.",
        MetricType::Histogram,
    );
    for (step, h) in r.steps.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        steps.push_histogram(&[("step", step)], &h.snapshot());
    }
    out.push(steps);
    out.push(counter("rxgate_policy_reloads_total", "Policy file reloads that took effect.", &r.policy_reloads));
    out.push(counter(
        "rxgate_policy_reload_errors_total",
        "Policy file reloads refused (the last good policy stays).",
        &r.policy_errors,
    ));
    let collectors: Vec<Collector> = r.collectors.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    for c in collectors {
        c(&mut out);
    }
    merge(out)
}

/// Families of the same name (several collectors add protocols to one) as one family.
fn merge(families: Vec<Family>) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::with_capacity(families.len());
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for f in families {
        match at.get(&f.name) {
            Some(&i) => out[i].samples.extend(f.samples),
            None => {
                at.insert(f.name.clone(), out.len());
                out.push(f);
            }
        }
    }
    out
}

/// The Prometheus text exposition format (version 0.0.4) of [`gather`].
pub fn render() -> String {
    render_families(&gather())
}

/// The Prometheus text exposition format of `families`.
pub fn render_families(families: &[Family]) -> String {
    let mut s = String::with_capacity(16 * 1024);
    for f in families {
        let _ = writeln!(s, "# HELP {} {}", f.name, f.help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(s, "# TYPE {} {}", f.name, f.kind.as_str());
        for sample in &f.samples {
            let _ = writeln!(s, "{}{} {}", sample.name, sample.labels_text(), format_float(sample.value));
        }
    }
    s
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as Prometheus writes it (`+Inf`, `NaN`, integers without a fraction).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_the_first_keyword() {
        assert_eq!(statement_kind("  -- c\n /* x */ (SELECT 1)"), "select");
        assert_eq!(statement_kind("WITH a AS (SELECT 1) SELECT * FROM a"), "select");
        assert_eq!(statement_kind("insert into t values (1)"), "insert");
        assert_eq!(statement_kind("CREATE TABLE t (a int)"), "ddl");
        assert_eq!(statement_kind("BEGIN"), "transaction");
        assert_eq!(statement_kind("SET x = 1"), "set");
        assert_eq!(statement_kind("CALL system.expire_snapshots('t')"), "maintenance");
        assert_eq!(statement_kind("login (pgwire): success"), "other");
        assert_eq!(statement_kind(""), "other");
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut f = Family::new("x_seconds", "x", MetricType::Histogram);
        f.push_histogram(&[("a", "b")], &h.snapshot());
        let text = render_families(&[f]);
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count{a=\"b\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum{a=\"b\"} 5.55\n"), "{text}");
    }

    #[test]
    fn statements_are_counted_with_bounded_labels() {
        let before = statements_total();
        record_statement("pgwire", "SELECT 1", "ok", Duration::from_millis(3), 1);
        record_statement("nonsense", "weird stuff", "odd", Duration::from_millis(3), 0);
        assert_eq!(statements_total(), before + 2);
        let text = render();
        assert!(text.contains("rxgate_statements_total{protocol=\"pgwire\",kind=\"select\",outcome=\"ok\"}"));
        assert!(text.contains("# TYPE rxgate_statement_duration_seconds histogram"));
        assert!(!text.contains("nonsense"));
    }
}

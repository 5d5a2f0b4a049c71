//! Configuration layering: built-in defaults → config file → `RXGATE_*` environment → flags.
//! Every key is documented in `conf/rxgate.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rxgate_catalog::storage::StorageOptions;
use rxgate_catalog::LakehouseConfig;
use rxgate_common::{Error, Result};
use rxgate_engine::EngineConfig;
use rxgate_flightsql::{FlightSqlConfig, FlightTlsConfig, SessionLimits};
use rxgate_http::HttpConfig;
use rxgate_pgwire::{AuthMethod, TlsConfig};
use serde::Deserialize;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Base directory of the embedded defaults.
    pub data_dir: Option<PathBuf>,
    /// `[catalog]`.
    #[serde(default)]
    pub catalog: CatalogSection,
    /// `[engine]`.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[pgwire]`.
    #[serde(default)]
    pub pgwire: PgSection,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthSection,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicySection,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[flightsql]`.
    #[serde(default)]
    pub flightsql: FlightSection,
    /// `[storage]`: object stores (gs://, s3://, hdfs://).
    #[serde(default)]
    pub storage: StorageOptions,
    /// `[limits]`: what one statement, and the whole process, may use.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[external]`: where Hive-style external tables may point.
    #[serde(default)]
    pub external: ExternalSection,
    /// `[files]`: permissions of the files and directories the server creates.
    #[serde(default)]
    pub files: FilesSection,
    /// `[maintenance]`: table maintenance safety settings.
    #[serde(default)]
    pub maintenance: MaintenanceSection,
    /// `[lifecycle]`: the data lifecycle `serve` runs on a schedule.
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    /// `[backup]`: the backups `serve` takes on a schedule.
    #[serde(default)]
    pub backup: BackupSection,
    /// `[http]`: the operations listener (probes, metrics, console).
    #[serde(default)]
    pub http: HttpSection,
}

/// `[http]` keys.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address; "0" turns the listener off.
    pub listen: Option<String>,
    /// Bearer token `/metrics` requires (env `RXGATE_METRICS_TOKEN` wins); none: open.
    pub metrics_token: Option<String>,
    /// Bound on each `/readyz` check, in milliseconds (default 2000).
    pub readiness_timeout_ms: Option<u64>,
    /// HTTPS with the `[pgwire.tls]` certificate when one is configured (default true).
    pub tls: Option<bool>,
}

/// `[backup]` keys.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// Where scheduled backups go (a directory, gs:// or s3:// URL).
    pub target: Option<String>,
    /// Seconds between the backups `serve` takes (none: `serve` takes none).
    pub interval_secs: Option<u64>,
    /// After each scheduled backup, keep this many (none: keep all).
    pub keep_last: Option<u64>,
    /// Only each table's current snapshot.
    pub current_only: Option<bool>,
    /// Also keep the users file (SCRAM verifiers).
    pub include_users: Option<bool>,
}

/// `[lifecycle]` keys.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSection {
    /// Seconds between the lifecycle runs `serve` starts (none: `serve` runs none).
    pub interval_secs: Option<u64>,
    /// The table definitions whose `[table.lifecycle]` apply (default: the built-in ones).
    pub definitions: Option<PathBuf>,
}

/// `[maintenance]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSection {
    /// The shortest window `remove_orphan_files` accepts (default 7 days): files younger than
    /// it are never deleted, whatever `older_than` a statement gives.
    pub min_orphan_age_secs: Option<u64>,
}

/// `[external]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSection {
    /// URL or absolute path prefixes external table locations must lie under (none: no
    /// external table can be created).
    #[serde(default)]
    pub allowed_locations: Vec<String>,
}

/// `[files]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    /// Process umask, octal text ("077": files 0600, directories 0700).
    pub umask: Option<String>,
}

/// `[limits]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest statement text, e.g. "4MiB".
    pub max_query_bytes: Option<String>,
    /// Deepest operator chain or nesting in one statement.
    pub max_expression_depth: Option<usize>,
    /// Largest string or binary value a function may build, e.g. "1GiB".
    pub max_value_bytes: Option<String>,
    /// Resident memory of the whole process beyond which the largest statement is cancelled:
    /// a size or a share of the machine's memory ("80%").
    pub process_memory_limit: Option<String>,
}

/// `[policy]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// The access policy file.
    pub file: Option<PathBuf>,
    /// File holding the pseudonym mask's secret key.
    pub pseudonym_key_file: Option<PathBuf>,
}

/// `[audit]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Write the audit trail.
    pub enabled: Option<bool>,
    /// Directory of `audit.jsonl`.
    pub dir: Option<PathBuf>,
    /// Size at which the file rotates, e.g. "64MiB".
    pub max_file_size: Option<String>,
    /// Rotated files kept.
    pub keep_files: Option<usize>,
}

/// `[catalog]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    /// sqlx URI of the catalog database.
    pub uri: Option<String>,
    /// Warehouse root.
    pub warehouse: Option<String>,
    /// Catalog name inside the database.
    pub name: Option<String>,
    /// Seconds opening the catalog database may take before failing (default 5).
    pub connect_timeout_secs: Option<u64>,
}

/// `[engine]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Memory for all queries together, e.g. "2GiB", "512MiB".
    pub memory_limit: Option<String>,
    /// Per-query wall-clock limit in seconds; 0 disables it.
    pub query_timeout_secs: Option<u64>,
    /// Parallelism of one query; 0 = number of cores.
    pub target_partitions: Option<usize>,
    /// Rows per batch.
    pub batch_size: Option<usize>,
    /// Directory for spill files.
    pub spill_dir: Option<PathBuf>,
}

/// `[pgwire]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSection {
    /// Listen address.
    pub listen: Option<String>,
    /// Connections served at once, all users together.
    pub max_connections: Option<u32>,
    /// Connections still authenticating at once (beyond it the oldest is closed).
    pub max_authenticating: Option<u32>,
    /// `[pgwire.tls]`.
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[pgwire.tls]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM server certificate (chain).
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Refuse plaintext connections.
    pub required: Option<bool>,
}

/// `[auth]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// "scram-sha-256" or "password".
    pub method: Option<String>,
    /// The users file (SCRAM verifiers and roles).
    pub users_file: Option<PathBuf>,
    /// PBKDF2 iterations of new verifiers.
    pub scram_iterations: Option<u32>,
    /// Default per-user connection limit.
    pub max_connections_per_user: Option<u32>,
    /// Seconds a client has to authenticate.
    pub authentication_timeout_secs: Option<u64>,
    /// Connection (and Flight session) slots only admin roles may take.
    pub reserved_admin_connections: Option<u32>,
    /// Throttle failed logins at all.
    pub login_throttle: Option<bool>,
    /// Failed logins of a user or address before delays start.
    pub login_free_failures: Option<u32>,
    /// First delay in milliseconds (doubles with each further failure).
    pub login_delay_ms: Option<u64>,
    /// Longest delay in milliseconds.
    pub login_max_delay_ms: Option<u64>,
    /// Failed logins that lock a user or address out; 0: never.
    pub login_lockout_after: Option<u32>,
    /// Lock-out length in seconds.
    pub login_lockout_secs: Option<u64>,
    /// Seconds after which failed logins are forgotten.
    pub login_forget_secs: Option<u64>,
}

/// `[flightsql]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightSection {
    /// Serve Flight SQL at all.
    pub enabled: Option<bool>,
    /// Listen address.
    pub listen: Option<String>,
    /// A bearer token unused this long expires (seconds).
    pub token_idle_secs: Option<u64>,
    /// A bearer token expires this long after its login (seconds).
    pub token_lifetime_secs: Option<u64>,
    /// A ticket not redeemed within this many seconds expires.
    pub ticket_ttl_secs: Option<u64>,
    /// Live sessions (bearer tokens), all users together.
    pub max_sessions: Option<u32>,
    /// `[flightsql.tls]`.
    #[serde(default)]
    pub tls: FlightTlsSection,
}

/// `[flightsql.tls]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightTlsSection {
    /// PEM server certificate (chain); default: `[pgwire.tls] cert`.
    pub cert: Option<PathBuf>,
    /// PEM private key; default: `[pgwire.tls] key`.
    pub key: Option<PathBuf>,
    /// PEM CA certificates: ask clients for a certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate.
    pub client_cert_required: Option<bool>,
}

/// Resolved `[auth]` settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How PostgreSQL clients authenticate.
    pub method: AuthMethod,
    /// The users file.
    pub users_file: PathBuf,
    /// PBKDF2 iterations for verifiers made by `rxgate user add|passwd` and the demo.
    pub scram_iterations: u32,
    /// Default per-user connection limit (PostgreSQL connections and Flight SQL sessions).
    pub max_connections_per_user: Option<u32>,
    /// Time a client has to authenticate.
    pub auth_timeout: Duration,
    /// Slots of `[pgwire] max_connections` and `[flightsql] max_sessions` only admin roles
    /// may take.
    pub reserved_admin_connections: u32,
    /// Login throttling.
    pub throttle: rxgate_auth::ThrottleConfig,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base directory of embedded state (raw sample data goes to DATA_DIR/raw).
    pub data_dir: PathBuf,
    /// Catalog and warehouse.
    pub lakehouse: LakehouseConfig,
    /// Engine limits.
    pub engine: EngineConfig,
    /// PostgreSQL listen address.
    pub pg_listen: String,
    /// PostgreSQL connections served at once.
    pub pg_max_connections: u32,
    /// PostgreSQL connections authenticating at once.
    pub pg_max_authenticating: u32,
    /// PostgreSQL TLS certificate and key, when configured.
    pub pg_tls: Option<TlsConfig>,
    /// Refuse plaintext PostgreSQL connections.
    pub pg_tls_required: bool,
    /// Authentication.
    pub auth: AuthSettings,
    /// The Flight SQL listener; `None` when `[flightsql] enabled = false`.
    pub flight: Option<FlightSqlConfig>,
    /// Process umask (`[files] umask`, default 0o077: what the server creates is private).
    pub umask: u32,
    /// `[lifecycle]`.
    pub lifecycle: LifecycleSection,
    /// `[backup]`.
    pub backup: BackupSection,
    /// The operations HTTP listener; `None` when `[http] listen = "0"`.
    pub http: Option<HttpConfig>,
}

/// The umask when `[files] umask` is not set: files 0600, directories 0700.
pub const DEFAULT_UMASK: u32 = 0o077;

/// Sets the process umask, so every file and directory the server creates (warehouse data
/// and metadata, catalog database, audit trail, spill files) is private to its user.
pub fn apply_umask(mask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
}

fn parse_umask(text: &str) -> Result<u32> {
    let t = text.trim().trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| Error::invalid(format!("[files] umask must be octal, like \"077\" (got \"{text}\")")))
}

/// Default PostgreSQL-wire listen address.
pub const DEFAULT_PG_LISTEN: &str = "127.0.0.1:15432";

/// Default Flight SQL listen address.
pub const DEFAULT_FLIGHT_LISTEN: &str = "127.0.0.1:50051";

/// Default operations HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// Default of `[pgwire] max_connections` (PostgreSQL's default too).
pub const DEFAULT_PG_MAX_CONNECTIONS: u32 = 100;

/// Default of `[pgwire] max_authenticating`.
pub const DEFAULT_PG_MAX_AUTHENTICATING: u32 = 32;

/// Default of `[auth] max_connections_per_user`.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u32 = 50;

/// Default of `[auth] authentication_timeout_secs`.
pub const DEFAULT_AUTH_TIMEOUT_SECS: u64 = 10;

/// Default of `[auth] reserved_admin_connections` (PostgreSQL's
/// `superuser_reserved_connections`).
pub const DEFAULT_RESERVED_ADMIN_CONNECTIONS: u32 = 3;

/// Parses "2GiB", "512MiB", "1GB", "1048576".
pub fn parse_bytes(s: &str) -> Result<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("bad size {s:?} (bytes, or a number with a unit: 512MiB, 2GiB)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(Error::invalid(format!("bad size unit {other:?} in {s:?}"))),
    };
    Ok((n * mult) as usize)
}

/// The process memory guard's limit when none is configured.
pub const DEFAULT_PROCESS_MEMORY_LIMIT: &str = "80%";

fn resolve_limits(engine: &mut EngineConfig, limits: LimitsSection) -> Result<()> {
    let key = |k: &str, r: Result<usize>| r.map_err(|e| e.context(format!("[limits] {k}")));
    let l = &mut engine.limits;
    if let Some(v) = limits.max_query_bytes {
        l.max_query_bytes = key("max_query_bytes", parse_bytes(&v))?;
    }
    if let Some(v) = limits.max_expression_depth {
        l.max_expression_depth = v;
    }
    if let Some(v) = limits.max_value_bytes {
        l.max_value_bytes = key("max_value_bytes", parse_bytes(&v))?;
    }
    let process = limits.process_memory_limit.unwrap_or_else(|| DEFAULT_PROCESS_MEMORY_LIMIT.to_string());
    engine.process_memory_limit_bytes = key("process_memory_limit", memory_limit(&process, machine_memory()))?;
    if engine.process_memory_limit_bytes <= engine.memory_limit_bytes {
        return Err(Error::invalid(format!(
            "[limits] process_memory_limit ({} bytes) must be above [engine] memory_limit ({} bytes)",
            engine.process_memory_limit_bytes, engine.memory_limit_bytes
        )));
    }
    Ok(())
}

/// The query memory pool when none is configured: half of the machine's memory.
pub const DEFAULT_MEMORY_LIMIT: &str = "50%";

/// `[engine] memory_limit`: a size (`2GiB`) or a share of `machine` bytes (`50%`).
pub fn memory_limit(s: &str, machine: usize) -> Result<usize> {
    match s.trim().strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| Error::invalid(format!("bad memory share {s:?}")))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(Error::invalid(format!("memory share {s:?} must be above 0% and at most 100%")));
            }
            Ok((machine as f64 * p / 100.0) as usize)
        }
        None => parse_bytes(s),
    }
}

/// The memory this process may use: physical memory, or the lowest limit of its cgroup and
/// the cgroup's ancestors when lower (containers, systemd `MemoryMax=`; cgroup v2 and v1).
/// 4 GiB when nothing can be read.
pub fn machine_memory() -> usize {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_memory_limit(&cgroups, |path| std::fs::read_to_string(path).ok());
    match (physical, limit) {
        (Some(p), Some(c)) => p.min(c),
        (p, c) => p.or(c).unwrap_or(4 << 30),
    }
}

/// The lowest memory limit on the way from `/proc/self/cgroup`'s group up to the root, read
/// with `read` (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`; "max" and v1's huge
/// "unlimited" values are no limit).
fn cgroup_memory_limit(proc_self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<usize> {
    let mut lowest: Option<usize> = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup", "memory.max"),
            c if c.split(',').any(|c| c == "memory") => ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
            _ => continue,
        };
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            if let Some(v) = read(&format!("{root}{dir}/{file}")).and_then(|v| v.trim().parse::<usize>().ok()) {
                if v < (1 << 60) {
                    lowest = Some(lowest.map_or(v, |l| l.min(v)));
                }
            }
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None => break,
            }
        }
    }
    lowest
}

/// Reads the config file: the one given, else `conf/rxgate.toml` if present, else defaults.
pub fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    let default = Path::new("conf/rxgate.toml");
    let path = match path {
        Some(p) => p,
        None if default.is_file() => default,
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::invalid(format!("config {}: {e}", path.display())))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Listen addresses given on the command line (they win over file and environment).
#[derive(Debug, Clone, Default)]
pub struct ListenFlags {
    /// `--pg-listen`.
    pub pg: Option<String>,
    /// `--flight-listen`.
    pub flight: Option<String>,
    /// `--http-listen`.
    pub http: Option<String>,
}

/// Resolves settings from the file, the environment and the flags.
pub fn resolve(file: FileConfig, data_dir_flag: Option<PathBuf>, listen: ListenFlags) -> Result<Settings> {
    let pg_listen_flag = listen.pg;
    let data_dir = data_dir_flag.or(file.data_dir).unwrap_or_else(|| PathBuf::from("var"));
    let embedded = LakehouseConfig::embedded(&data_dir);
    let lakehouse = LakehouseConfig {
        uri: env("RXGATE_CATALOG_URI").or(file.catalog.uri).unwrap_or(embedded.uri),
        warehouse: env("RXGATE_WAREHOUSE").or(file.catalog.warehouse).unwrap_or(embedded.warehouse),
        name: file.catalog.name.unwrap_or(embedded.name),
        storage: resolve_storage(file.storage),
        connect_timeout_secs: match env("RXGATE_CATALOG_CONNECT_TIMEOUT_SECS") {
            Some(v) => {
                v.parse::<u64>().map_err(|_| Error::invalid("RXGATE_CATALOG_CONNECT_TIMEOUT_SECS must be seconds"))?
            }
            None => file.catalog.connect_timeout_secs.unwrap_or(embedded.connect_timeout_secs),
        },
    };
    if !(1..=3600).contains(&lakehouse.connect_timeout_secs) {
        return Err(Error::invalid("[catalog] connect_timeout_secs must be between 1 and 3600"));
    }
    let mut engine = EngineConfig::default();
    // Every size key names itself in its error (`[engine] memory_limit: bad size "lots" …`).
    let (memory, memory_key) = match env("RXGATE_MEMORY_LIMIT") {
        Some(v) => (Some(v), "RXGATE_MEMORY_LIMIT"),
        None => (file.engine.memory_limit, "[engine] memory_limit"),
    };
    engine.memory_limit_bytes = memory_limit(memory.as_deref().unwrap_or(DEFAULT_MEMORY_LIMIT), machine_memory())
        .map_err(|e| e.context(memory_key))?;
    let timeout = match env("RXGATE_QUERY_TIMEOUT_SECS") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| Error::invalid("RXGATE_QUERY_TIMEOUT_SECS must be seconds"))?),
        None => file.engine.query_timeout_secs,
    };
    if let Some(t) = timeout {
        engine.query_timeout = (t > 0).then(|| Duration::from_secs(t));
    }
    if let Some(p) = file.engine.target_partitions.filter(|p| *p > 0) {
        engine.target_partitions = p;
    }
    if let Some(b) = file.engine.batch_size.filter(|b| *b > 0) {
        engine.batch_size = b;
    }
    engine.spill_dir = file.engine.spill_dir;
    resolve_limits(&mut engine, file.limits)?;
    resolve_policy(&mut engine, file.policy, file.audit, &data_dir)?;
    engine.external_allowed_locations = file.external.allowed_locations;
    if let Some(secs) = file.maintenance.min_orphan_age_secs {
        engine.min_orphan_age = Duration::from_secs(secs);
    }
    let umask = file.files.umask.as_deref().map(parse_umask).transpose()?.unwrap_or(DEFAULT_UMASK);
    let pg_listen = pg_listen_flag.or(file.pgwire.listen).unwrap_or_else(|| DEFAULT_PG_LISTEN.to_string());
    let pg_max_connections = file.pgwire.max_connections.unwrap_or(DEFAULT_PG_MAX_CONNECTIONS);
    if pg_max_connections == 0 {
        return Err(Error::invalid("[pgwire] max_connections must be at least 1"));
    }
    let pg_max_authenticating = file.pgwire.max_authenticating.unwrap_or(DEFAULT_PG_MAX_AUTHENTICATING);
    if pg_max_authenticating == 0 {
        return Err(Error::invalid("[pgwire] max_authenticating must be at least 1"));
    }
    let tls = file.pgwire.tls;
    let pg_tls = match (tls.cert.clone(), tls.key.clone()) {
        (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
        (None, None) => None,
        _ => return Err(Error::invalid("[pgwire.tls] needs both cert and key")),
    };
    let pg_tls_required = tls.required.unwrap_or(false);
    if pg_tls_required && pg_tls.is_none() {
        return Err(Error::invalid("[pgwire.tls] required = true needs cert and key"));
    }
    let auth = resolve_auth(file.auth, &data_dir)?;
    let flight = resolve_flight(file.flightsql, pg_tls.as_ref(), &auth, listen.flight)?;
    let http = resolve_http(file.http, listen.http, pg_tls.as_ref())?;
    Ok(Settings {
        data_dir,
        lakehouse,
        engine,
        pg_listen,
        pg_max_connections,
        pg_max_authenticating,
        pg_tls,
        pg_tls_required,
        auth,
        flight,
        umask,
        lifecycle: file.lifecycle,
        backup: file.backup,
        http,
    })
}

/// `[http]`: the listen address (the flag, then the file, then the default; "0" is off), the
/// metrics token (`RXGATE_METRICS_TOKEN`, then the file), the readiness timeout, and TLS
/// (the `[pgwire.tls]` certificate and key unless `tls = false`).
fn resolve_http(section: HttpSection, flag: Option<String>, pg_tls: Option<&TlsConfig>) -> Result<Option<HttpConfig>> {
    let listen = flag.or(section.listen).unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
    if listen.trim() == "0" {
        return Ok(None);
    }
    let mut config = HttpConfig::new(listen);
    config.metrics_token = env("RXGATE_METRICS_TOKEN").or(section.metrics_token).filter(|t| !t.trim().is_empty());
    match section.readiness_timeout_ms {
        Some(0) => return Err(Error::invalid("[http] readiness_timeout_ms must be at least 1")),
        Some(ms) => config.readiness_timeout = Duration::from_millis(ms),
        None => {}
    }
    if section.tls != Some(false) {
        config.tls = pg_tls.map(|t| rxgate_http::HttpTls { cert: t.cert.clone(), key: t.key.clone() });
    }
    Ok(Some(config))
}

/// `[flightsql]`: the listener, token and ticket lifetimes, and TLS (the `[pgwire.tls]`
/// certificate and key unless `[flightsql.tls]` names others).
fn resolve_flight(
    section: FlightSection,
    pg_tls: Option<&TlsConfig>,
    auth: &AuthSettings,
    listen_flag: Option<String>,
) -> Result<Option<FlightSqlConfig>> {
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let secs = |v: Option<u64>, default: u64, key: &str| -> Result<Duration> {
        match v.unwrap_or(default) {
            0 => Err(Error::invalid(format!("[flightsql] {key} must be at least 1"))),
            n => Ok(Duration::from_secs(n)),
        }
    };
    let defaults = FlightSqlConfig::default();
    let listen = listen_flag.or(section.listen).unwrap_or_else(|| DEFAULT_FLIGHT_LISTEN.to_string());
    let t = section.tls;
    let (cert, key) = match (t.cert, t.key) {
        (Some(c), Some(k)) => (Some(c), Some(k)),
        (None, None) => (pg_tls.map(|p| p.cert.clone()), pg_tls.map(|p| p.key.clone())),
        _ => return Err(Error::invalid("[flightsql.tls] needs both cert and key")),
    };
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(FlightTlsConfig {
            cert,
            key,
            client_ca: t.client_ca,
            client_cert_required: t.client_cert_required.unwrap_or(false),
        }),
        _ if t.client_ca.is_some() || t.client_cert_required.is_some() => {
            return Err(Error::invalid("[flightsql.tls] client certificates need a server cert and key"));
        }
        _ => None,
    };
    if tls.as_ref().is_some_and(|t| t.client_cert_required && t.client_ca.is_none()) {
        return Err(Error::invalid("[flightsql.tls] client_cert_required = true needs client_ca"));
    }
    let max_sessions = section.max_sessions.unwrap_or(defaults.sessions.max_sessions);
    if max_sessions == 0 {
        return Err(Error::invalid("[flightsql] max_sessions must be at least 1"));
    }
    Ok(Some(FlightSqlConfig {
        listen,
        tls,
        sessions: SessionLimits {
            idle_timeout: secs(section.token_idle_secs, defaults.sessions.idle_timeout.as_secs(), "token_idle_secs")?,
            lifetime: secs(section.token_lifetime_secs, defaults.sessions.lifetime.as_secs(), "token_lifetime_secs")?,
            max_sessions,
            max_sessions_per_user: auth.max_connections_per_user,
            reserved_admin_sessions: auth.reserved_admin_connections,
            auth_timeout: auth.auth_timeout,
        },
        ticket_ttl: secs(section.ticket_ttl_secs, defaults.ticket_ttl.as_secs(), "ticket_ttl_secs")?,
    }))
}

/// `[storage]` with its environment: `RXGATE_*` variables win over the file, and the file
/// over the platforms' own variables (GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST,
/// AWS_*), which fill only what the file leaves unset.
fn resolve_storage(mut s: StorageOptions) -> StorageOptions {
    fn set(slot: &mut Option<String>, rxgate: &str, ambient: &[&str]) {
        if let Some(v) = env(rxgate) {
            *slot = Some(v);
        } else if slot.is_none() {
            *slot = ambient.iter().find_map(|n| env(n));
        }
    }
    set(&mut s.gcs.service_account_path, "RXGATE_GCS_SERVICE_ACCOUNT", &[]);
    set(&mut s.gcs.application_credentials, "RXGATE_GCS_APPLICATION_CREDENTIALS", &["GOOGLE_APPLICATION_CREDENTIALS"]);
    set(&mut s.gcs.endpoint, "RXGATE_GCS_ENDPOINT", &["STORAGE_EMULATOR_HOST"]);
    set(&mut s.s3.endpoint, "RXGATE_S3_ENDPOINT", &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]);
    set(&mut s.s3.region, "RXGATE_S3_REGION", &["AWS_REGION", "AWS_DEFAULT_REGION"]);
    set(&mut s.s3.access_key_id, "RXGATE_S3_ACCESS_KEY_ID", &["AWS_ACCESS_KEY_ID"]);
    set(&mut s.s3.secret_access_key, "RXGATE_S3_SECRET_ACCESS_KEY", &["AWS_SECRET_ACCESS_KEY"]);
    set(&mut s.s3.session_token, "RXGATE_S3_SESSION_TOKEN", &["AWS_SESSION_TOKEN"]);
    set(&mut s.hdfs.namenode, "RXGATE_HDFS_NAMENODE", &[]);
    s
}

/// The default policy file, relative to the working directory.
pub const DEFAULT_POLICY_FILE: &str = "catalog/policies.toml";

fn resolve_policy(
    engine: &mut EngineConfig,
    policy: PolicySection,
    audit: AuditSection,
    data_dir: &Path,
) -> Result<()> {
    let configured = env("RXGATE_POLICY_FILE").map(PathBuf::from).or(policy.file);
    engine.policy_file = match configured {
        Some(p) if p.as_os_str() == "builtin" => None,
        Some(p) => Some(p),
        None => Some(PathBuf::from(DEFAULT_POLICY_FILE)).filter(|p| p.is_file()),
    };
    if let Some(p) = &engine.policy_file {
        if !p.is_file() {
            return Err(Error::invalid(format!("[policy] file {} does not exist", p.display())));
        }
    }
    engine.pseudonym_key = match env("RXGATE_PSEUDONYM_KEY") {
        Some(k) => Some(k.into_bytes()),
        None => {
            let path = policy.pseudonym_key_file.unwrap_or_else(|| data_dir.join("pseudonym.key"));
            std::fs::read(&path).ok().map(|k| k.trim_ascii().to_vec()).filter(|k| !k.is_empty())
        }
    };
    if audit.enabled.unwrap_or(true) {
        engine.audit_dir =
            Some(env("RXGATE_AUDIT_DIR").map(PathBuf::from).or(audit.dir).unwrap_or_else(|| data_dir.join("audit")));
    }
    if let Some(size) = audit.max_file_size {
        engine.audit_max_bytes = parse_bytes(&size).map_err(|e| e.context("[audit] max_file_size"))? as u64;
    }
    if let Some(keep) = audit.keep_files {
        engine.audit_keep = keep.max(1);
    }
    Ok(())
}

fn resolve_auth(section: AuthSection, data_dir: &Path) -> Result<AuthSettings> {
    let method = match section.method {
        Some(m) => m.parse::<AuthMethod>().map_err(|e| Error::invalid(format!("[auth] method: {e}")))?,
        None => AuthMethod::ScramSha256,
    };
    let users_file = env("RXGATE_USERS_FILE")
        .map(PathBuf::from)
        .or(section.users_file)
        .unwrap_or_else(|| data_dir.join("users.toml"));
    let scram_iterations = section.scram_iterations.unwrap_or(rxgate_auth::DEFAULT_ITERATIONS);
    if !(rxgate_auth::MIN_ITERATIONS..=rxgate_auth::MAX_ITERATIONS).contains(&scram_iterations) {
        return Err(Error::invalid(format!(
            "[auth] scram_iterations must be between {} and {}",
            rxgate_auth::MIN_ITERATIONS,
            rxgate_auth::MAX_ITERATIONS
        )));
    }
    if section.max_connections_per_user == Some(0) {
        return Err(Error::invalid(
            "[auth] max_connections_per_user must be at least 1 (leave it out for no per-user limit)",
        ));
    }
    let auth_timeout = section.authentication_timeout_secs.unwrap_or(DEFAULT_AUTH_TIMEOUT_SECS);
    if auth_timeout == 0 {
        return Err(Error::invalid("[auth] authentication_timeout_secs must be at least 1"));
    }
    let defaults = rxgate_auth::ThrottleConfig::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let throttle = rxgate_auth::ThrottleConfig {
        enabled: section.login_throttle.unwrap_or(defaults.enabled),
        free_failures: section.login_free_failures.unwrap_or(defaults.free_failures),
        base_delay: ms(section.login_delay_ms, defaults.base_delay),
        max_delay: ms(section.login_max_delay_ms, defaults.max_delay),
        lockout_after: section.login_lockout_after.unwrap_or(defaults.lockout_after),
        lockout: secs(section.login_lockout_secs, defaults.lockout),
        forget_after: secs(section.login_forget_secs, defaults.forget_after),
    };
    if throttle.max_delay < throttle.base_delay {
        return Err(Error::invalid("[auth] login_max_delay_ms must be at least login_delay_ms"));
    }
    Ok(AuthSettings {
        method,
        users_file,
        scram_iterations,
        max_connections_per_user: Some(section.max_connections_per_user.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_USER)),
        auth_timeout: Duration::from_secs(auth_timeout),
        reserved_admin_connections: section.reserved_admin_connections.unwrap_or(DEFAULT_RESERVED_ADMIN_CONNECTIONS),
        throttle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(memory_limit("50%", 8 << 30).unwrap(), 4 << 30);
        assert_eq!(memory_limit("12.5 %", 8 << 30).unwrap(), 1 << 30);
        assert_eq!(memory_limit("3GiB", 8 << 30).unwrap(), 3 << 30);
        assert!(memory_limit("0%", 8 << 30).is_err());
        assert!(memory_limit("150%", 8 << 30).is_err());
        assert!(machine_memory() >= 256 << 20);
        // A service limit two levels up, a looser one below it, and a v1 hierarchy.
        let files = |p: &str| match p {
            "/sys/fs/cgroup/system.slice/rx.service/memory.max" => Some("max\n".to_string()),
            "/sys/fs/cgroup/system.slice/memory.max" => Some("8589934592\n".to_string()),
            "/sys/fs/cgroup/memory.max" => None,
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => Some("9223372036854771712".to_string()),
            "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes" => Some("4294967296".to_string()),
            _ => None,
        };
        assert_eq!(cgroup_memory_limit("0::/system.slice/rx.service\n", files), Some(8 << 30));
        assert_eq!(cgroup_memory_limit("4:memory:/docker/abc\n3:cpu:/docker/abc\n", files), Some(4 << 30));
        assert_eq!(cgroup_memory_limit("0::/\n", files), None);
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let cfg = load_file(Some(&p)).unwrap_or_else(|e| panic!("{}: {}", p.display(), e.message));
                resolve(cfg, None, ListenFlags::default()).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1, "no configs found in {}", dir.display());
    }

    #[test]
    fn storage_keys() {
        let text = r#"
            [catalog]
            warehouse = "gs://lake/warehouse"
            [storage]
            multipart_threshold = 1048576
            [storage.gcs]
            service_account_path = "/etc/rxgate/sa.json"
            endpoint = "http://127.0.0.1:4443"
            [storage.s3]
            endpoint = "http://127.0.0.1:5000"
            region = "eu-west-1"
            path_style = true
            [storage.hdfs]
            namenode = "hdfs://nn:8020"
            config = { "dfs.client.use.datanode.hostname" = "true" }
        "#;
        let s = resolve(toml::from_str(text).unwrap(), None, ListenFlags::default()).unwrap();
        let st = &s.lakehouse.storage;
        assert_eq!(s.lakehouse.warehouse, "gs://lake/warehouse");
        assert_eq!(st.multipart_threshold(), 1 << 20);
        assert_eq!(st.gcs.service_account_path.as_deref(), Some("/etc/rxgate/sa.json"));
        assert_eq!(st.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(st.hdfs.namenode.as_deref(), Some("hdfs://nn:8020"));
        assert_eq!(st.hdfs.config["dfs.client.use.datanode.hostname"], "true");
        assert!(toml::from_str::<FileConfig>("[storage.gcs]\nkey = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn flags_override_file() {
        let file: FileConfig = toml::from_str("data_dir = \"x\"\n[pgwire]\nlisten = \"127.0.0.1:1\"").unwrap();
        let flags = ListenFlags { pg: Some("127.0.0.1:2".into()), flight: Some("127.0.0.1:3".into()), http: None };
        let s = resolve(file, Some(PathBuf::from("y")), flags).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("y"));
        assert_eq!(s.pg_listen, "127.0.0.1:2");
        assert_eq!(s.flight.unwrap().listen, "127.0.0.1:3");
        assert!(s.lakehouse.uri.contains("y/catalog.db"));
        assert_eq!(s.auth.users_file, PathBuf::from("y/users.toml"));
    }

    #[test]
    fn auth_and_tls_keys() {
        let text = r#"
            [auth]
            method = "password"
            users_file = "/etc/rxgate/users.toml"
            scram_iterations = 8192
            max_connections_per_user = 5
            [pgwire]
            max_connections = 7
            [pgwire.tls]
            cert = "c.pem"
            key = "k.pem"
            required = true
        "#;
        let s = resolve(toml::from_str(text).unwrap(), None, ListenFlags::default()).unwrap();
        assert_eq!(s.auth.method, AuthMethod::Password);
        assert_eq!(s.auth.users_file, PathBuf::from("/etc/rxgate/users.toml"));
        assert_eq!(s.auth.scram_iterations, 8192);
        assert_eq!(s.auth.max_connections_per_user, Some(5));
        assert_eq!(s.pg_max_connections, 7);
        assert_eq!(s.pg_tls, Some(TlsConfig { cert: "c.pem".into(), key: "k.pem".into() }));
        assert!(s.pg_tls_required);

        let defaults = resolve(FileConfig::default(), None, ListenFlags::default()).unwrap();
        assert_eq!(defaults.auth.method, AuthMethod::ScramSha256);
        assert_eq!(defaults.pg_max_connections, DEFAULT_PG_MAX_CONNECTIONS);
        assert_eq!(defaults.auth.max_connections_per_user, Some(DEFAULT_MAX_CONNECTIONS_PER_USER));
        assert_eq!(defaults.auth.auth_timeout, Duration::from_secs(DEFAULT_AUTH_TIMEOUT_SECS));
        assert_eq!(defaults.auth.reserved_admin_connections, DEFAULT_RESERVED_ADMIN_CONNECTIONS);
        assert_eq!(defaults.pg_max_authenticating, DEFAULT_PG_MAX_AUTHENTICATING);
        assert_eq!(defaults.auth.throttle, rxgate_auth::ThrottleConfig::default());
        let text = "[auth]\nauthentication_timeout_secs = 2\nreserved_admin_connections = 1\nlogin_free_failures = 1\nlogin_delay_ms = 50\nlogin_max_delay_ms = 400\nlogin_lockout_after = 4\nlogin_lockout_secs = 3\nlogin_forget_secs = 30\nlogin_throttle = true\n[pgwire]\nmax_authenticating = 5\n";
        let s = resolve(toml::from_str(text).unwrap(), None, ListenFlags::default()).unwrap();
        assert_eq!(s.auth.auth_timeout, Duration::from_secs(2));
        assert_eq!(s.auth.reserved_admin_connections, 1);
        assert_eq!(s.pg_max_authenticating, 5);
        assert_eq!(s.auth.throttle.lockout, Duration::from_secs(3));
        assert_eq!(s.auth.throttle.base_delay, Duration::from_millis(50));
        assert_eq!(s.flight.unwrap().sessions.auth_timeout, Duration::from_secs(2));
        assert!(defaults.pg_tls.is_none() && !defaults.pg_tls_required);
    }

    #[test]
    fn flight_keys_and_tls_defaults() {
        let defaults = resolve(FileConfig::default(), None, ListenFlags::default()).unwrap().flight.unwrap();
        assert_eq!(defaults.listen, DEFAULT_FLIGHT_LISTEN);
        assert!(defaults.tls.is_none());

        // Flight uses the PostgreSQL certificate unless told otherwise.
        let text = r#"
            [pgwire.tls]
            cert = "c.pem"
            key = "k.pem"
            [flightsql]
            listen = "127.0.0.1:7"
            ticket_ttl_secs = 9
            token_idle_secs = 8
            [flightsql.tls]
            client_ca = "ca.pem"
            client_cert_required = true
        "#;
        let f = resolve(toml::from_str(text).unwrap(), None, ListenFlags::default()).unwrap().flight.unwrap();
        assert_eq!(f.listen, "127.0.0.1:7");
        assert_eq!(f.ticket_ttl, Duration::from_secs(9));
        assert_eq!(f.sessions.idle_timeout, Duration::from_secs(8));
        let tls = f.tls.unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert!(tls.client_cert_required);

        let off =
            resolve(toml::from_str("[flightsql]\nenabled = false").unwrap(), None, ListenFlags::default()).unwrap();
        assert!(off.flight.is_none());
    }

    #[test]
    fn inconsistent_auth_and_tls_keys_are_refused() {
        for bad in [
            "[pgwire.tls]\ncert = \"c.pem\"",
            "[pgwire.tls]\nkey = \"k.pem\"",
            "[pgwire.tls]\nrequired = true",
            "[pgwire]\nmax_connections = 0",
            "[auth]\nmethod = \"trust\"",
            "[auth]\nmethod = \"md5\"",
            "[auth]\nscram_iterations = 100",
            "[auth]\nmax_connections_per_user = 0",
            "[auth]\nauthentication_timeout_secs = 0",
            "[auth]\nlogin_delay_ms = 500\nlogin_max_delay_ms = 100",
            "[pgwire]\nmax_authenticating = 0",
            "[auth]\npassword = \"x\"",
            "[flightsql.tls]\ncert = \"c.pem\"",
            "[flightsql.tls]\nclient_ca = \"ca.pem\"",
            "[flightsql]\nticket_ttl_secs = 0",
            "[flightsql]\nmax_sessions = 0",
            "[flightsql]\nport = 1",
        ] {
            let parsed: std::result::Result<FileConfig, _> = toml::from_str(bad);
            let refused = match parsed {
                Ok(f) => resolve(f, None, ListenFlags::default()).is_err(),
                Err(_) => true,
            };
            assert!(refused, "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_size_names_its_key() {
        for (text, key) in [
            ("[engine]\nmemory_limit = \"lots\"", "[engine] memory_limit"),
            ("[audit]\nmax_file_size = \"lots\"", "[audit] max_file_size"),
            ("[limits]\nmax_query_bytes = \"lots\"", "[limits] max_query_bytes"),
            ("[limits]\nmax_value_bytes = \"lots\"", "[limits] max_value_bytes"),
            ("[limits]\nprocess_memory_limit = \"lots\"", "[limits] process_memory_limit"),
        ] {
            let file: FileConfig = toml::from_str(text).unwrap();
            let err = resolve(file, None, ListenFlags::default()).unwrap_err();
            assert!(
                err.message.starts_with(key) && err.message.contains("bad size \"lots\""),
                "{text}: {}",
                err.message
            );
        }
    }
}

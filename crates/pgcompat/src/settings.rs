//! Session parameters (`SET` / `SHOW` / `RESET`, `SHOW ALL`, `current_setting`), with the
//! defaults a PostgreSQL 16 server reports. A few of them are interpreted:
//! `search_path` (the schema unqualified names resolve in), `statement_timeout` (the query
//! deadline, never above the server's limit) and `client_encoding` (only UTF8 is spoken).
//!
//! **Settings cannot raise limits.** DataFusion's own options (`datafusion.*`) are the
//! server's: a session may change only those in [`DATAFUSION_SETTABLE`] (output formatting of
//! EXPLAIN, a join preference), through `SET` alone; every other `datafusion.*` name
//! (`runtime.memory_limit`, `runtime.temp_directory`, `max_temp_directory_size`,
//! `target_partitions`, `batch_size`, statistics, …) is refused with 42501 by `SET`, `RESET`,
//! `set_config` and start-up parameters alike ([`check_datafusion_settable`],
//! [`verify_plan`]). `role` and `session_authorization` accept only the session's own user.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rxgate_common::{Error, Result, StatusCode};

/// The PostgreSQL version rxgate presents to clients (drivers parse it to pick features).
pub const PG_SERVER_VERSION: &str = "16.6";
/// `server_version_num` of [`PG_SERVER_VERSION`].
pub const PG_SERVER_VERSION_NUM: &str = "160006";
/// The database name every session sees (`current_database()`, `pg_database`).
pub const DATABASE_NAME: &str = "rxgate";

/// One known parameter: name as PostgreSQL spells it, default, unit, description.
struct Known {
    name: &'static str,
    default: &'static str,
    category: &'static str,
    description: &'static str,
    /// Whether a client may change it (`SET`); others are reported only.
    settable: bool,
}

const fn p(name: &'static str, default: &'static str, category: &'static str, description: &'static str) -> Known {
    Known { name, default, category, description, settable: true }
}

const fn ro(name: &'static str, default: &'static str, category: &'static str, description: &'static str) -> Known {
    Known { name, default, category, description, settable: false }
}

/// Parameters a PostgreSQL server has that clients read or set. `search_path` and
/// `statement_timeout` get their defaults from the session ([`SessionSettings::new`]).
const KNOWN: &[Known] = &[
    p("application_name", "", "Reporting and Logging", "Sets the application name to be reported in statistics and logs."),
    p("bytea_output", "hex", "Client Connection Defaults", "Sets the output format for bytea."),
    p("client_encoding", "UTF8", "Client Connection Defaults", "Sets the client's character set encoding."),
    p("client_min_messages", "notice", "Client Connection Defaults", "Sets the message levels that are sent to the client."),
    p("DateStyle", "ISO, MDY", "Client Connection Defaults", "Sets the display format for date and time values."),
    p("default_transaction_isolation", "read committed", "Client Connection Defaults", "Sets the transaction isolation level of each new transaction."),
    p("default_transaction_read_only", "off", "Client Connection Defaults", "Sets the default read-only status of new transactions."),
    p("extra_float_digits", "1", "Client Connection Defaults", "Sets the number of digits displayed for floating-point values."),
    p("idle_in_transaction_session_timeout", "0", "Client Connection Defaults", "Sets the maximum allowed idle time between queries, when in a transaction."),
    ro("integer_datetimes", "on", "Preset Options", "Shows whether datetimes are integer based."),
    p("IntervalStyle", "postgres", "Client Connection Defaults", "Sets the display format for interval values."),
    ro("is_superuser", "off", "Preset Options", "Shows whether the current user is a superuser."),
    p("lc_messages", "C.UTF-8", "Client Connection Defaults", "Sets the language in which messages are displayed."),
    p("lc_monetary", "C.UTF-8", "Client Connection Defaults", "Sets the locale for formatting monetary amounts."),
    p("lc_numeric", "C.UTF-8", "Client Connection Defaults", "Sets the locale for formatting numbers."),
    p("lc_time", "C.UTF-8", "Client Connection Defaults", "Sets the locale for formatting date and time values."),
    p("lock_timeout", "0", "Client Connection Defaults", "Sets the maximum allowed duration of any wait for a lock."),
    ro("max_identifier_length", "63", "Preset Options", "Shows the maximum identifier length."),
    ro("max_index_keys", "32", "Preset Options", "Shows the maximum number of index keys."),
    p("row_security", "on", "Client Connection Defaults", "Enable row security."),
    p("search_path", "", "Client Connection Defaults", "Sets the schema search order for names that are not schema-qualified."),
    ro("server_encoding", "UTF8", "Preset Options", "Shows the server (database) character set encoding."),
    ro("server_version", PG_SERVER_VERSION, "Preset Options", "Shows the server version."),
    ro("server_version_num", PG_SERVER_VERSION_NUM, "Preset Options", "Shows the server version as an integer."),
    p("role", "none", "Preset Options", "Sets the current role."),
    p("session_authorization", "", "Preset Options", "Sets the session user name."),
    p("standard_conforming_strings", "on", "Compatibility Options", "Causes '...' strings to treat backslashes literally."),
    p("statement_timeout", "0", "Client Connection Defaults", "Sets the maximum allowed duration of any statement."),
    p("TimeZone", "UTC", "Client Connection Defaults", "Sets the time zone for displaying and interpreting time stamps."),
    p("timezone_abbreviations", "Default", "Client Connection Defaults", "Selects a file of time zone abbreviations."),
    p("transaction_isolation", "read committed", "Client Connection Defaults", "Sets the current transaction's isolation level."),
    p("transaction_read_only", "off", "Client Connection Defaults", "Sets the current transaction's read-only status."),
    p("default_transaction_deferrable", "off", "Client Connection Defaults", "Sets the default deferrable status of new transactions."),
    p("transaction_deferrable", "off", "Client Connection Defaults", "Whether to defer a read-only serializable transaction until it can be executed with no possible serialization failures."),
    p("work_mem", "4MB", "Resource Usage / Memory", "Sets the maximum memory to be used for query workspaces."),
    p("jit", "off", "Query Tuning", "Allow JIT compilation."),
    p("join_collapse_limit", "8", "Query Tuning", "Sets the FROM-list size beyond which JOIN constructs are not flattened."),
    p("synchronous_commit", "on", "Write-Ahead Log", "Sets the current transaction's synchronization level."),
    ro("in_hot_standby", "off", "Preset Options", "Shows whether hot standby is currently active."),
    ro("block_size", "8192", "Preset Options", "Shows the size of a disk block."),
    ro("lc_collate", "C.UTF-8", "Preset Options", "Shows the collation order locale."),
    ro("lc_ctype", "C.UTF-8", "Preset Options", "Shows the character classification and case conversion locale."),
    ro("max_connections", "100", "Connections and Authentication", "Sets the maximum number of concurrent connections."),
    ro("server_version_string", "", "Preset Options", "Shows the full version string (rxgate extension)."),
    // Accepted and shown, without effect on this engine (dump scripts and tools set them).
    p("array_nulls", "on", "Version and Platform Compatibility", "Enable input of NULL elements in arrays."),
    p("backslash_quote", "safe_encoding", "Version and Platform Compatibility", "Sets whether \"\\'\" is allowed in string literals."),
    p("check_function_bodies", "on", "Client Connection Defaults", "Check routine bodies during CREATE FUNCTION and CREATE PROCEDURE."),
    p("default_table_access_method", "heap", "Client Connection Defaults", "Sets the default table access method for new tables."),
    p("default_tablespace", "", "Client Connection Defaults", "Sets the default tablespace to create tables and indexes in."),
    p("effective_cache_size", "4GB", "Query Tuning", "Sets the planner's assumption about the total size of the data caches."),
    p("enable_hashjoin", "on", "Query Tuning", "Enables the planner's use of hash join plans."),
    p("enable_mergejoin", "on", "Query Tuning", "Enables the planner's use of merge join plans."),
    p("enable_nestloop", "on", "Query Tuning", "Enables the planner's use of nested-loop join plans."),
    p("enable_seqscan", "on", "Query Tuning", "Enables the planner's use of sequential-scan plans."),
    p("escape_string_warning", "on", "Version and Platform Compatibility", "Warn about backslash escapes in ordinary string literals."),
    p("geqo", "on", "Query Tuning", "Enables genetic query optimization."),
    p("idle_session_timeout", "0", "Client Connection Defaults", "Sets the maximum allowed idle time between queries, when not in a transaction."),
    p("log_min_messages", "warning", "Reporting and Logging", "Sets the message levels that are logged."),
    p("maintenance_work_mem", "64MB", "Resource Usage / Memory", "Sets the maximum memory to be used for maintenance operations."),
    p("max_parallel_workers_per_gather", "2", "Query Tuning", "Sets the maximum number of parallel processes per executor node."),
    p("random_page_cost", "4", "Query Tuning", "Sets the planner's estimate of the cost of a nonsequentially fetched disk page."),
    p("session_replication_role", "origin", "Client Connection Defaults", "Sets the session's behavior for triggers and rewrite rules."),
    p("temp_buffers", "8MB", "Resource Usage / Memory", "Sets the maximum number of temporary buffers used by each session."),
    p("trace_sort", "off", "Developer Options", "Emit information about resource usage in sorting."),
    p("vacuum_cost_delay", "0", "Resource Usage / Cost-Based Vacuum Delay", "Vacuum cost delay in milliseconds."),
    p("xmlbinary", "base64", "Client Connection Defaults", "Sets how binary values are to be encoded in XML."),
    p("xmloption", "content", "Client Connection Defaults", "Sets whether XML data in implicit parsing and serialization operations is to be considered as documents or content fragments."),
];

/// Aliases clients use for a parameter (lower-case → canonical lower-case).
pub fn canonical(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        "names" => "client_encoding".into(),
        "session authorization" => "session_authorization".into(),
        "schema" => "search_path".into(),
        _ => lower,
    }
}

/// DataFusion options (`datafusion.*`) a session may change with `SET`/`RESET`: how EXPLAIN
/// is formatted and a join preference. Nothing that sets a resource limit (memory, spill,
/// temp files, parallelism, batch size), shows statistics or pruning metrics, or changes
/// how SQL is parsed. Limits come from the server's configuration only.
pub const DATAFUSION_SETTABLE: &[&str] = &[
    "datafusion.explain.format",
    "datafusion.explain.logical_plan_only",
    "datafusion.explain.show_schema",
    "datafusion.explain.tree_maximum_render_width",
    "datafusion.optimizer.prefer_hash_join",
];

/// The lower-case option name when `name` names a DataFusion option (`datafusion.…`, any
/// case), else `None`.
pub fn datafusion_key(name: &str) -> Option<String> {
    let key = name.trim().to_ascii_lowercase();
    key.starts_with("datafusion.").then_some(key)
}

/// Ok when a session may change the DataFusion option `key` (lower-case, see
/// [`datafusion_key`]); otherwise 42501: server limits are never per session.
pub fn check_datafusion_settable(key: &str) -> Result<()> {
    if DATAFUSION_SETTABLE.contains(&key) {
        return Ok(());
    }
    Err(Error::new(
        StatusCode::PermissionDenied,
        format!(
            "permission denied to set parameter \"{key}\": it is set by the server's configuration only \
             (sessions may set {})",
            DATAFUSION_SETTABLE.join(", ")
        ),
    ))
}

/// Refuses a logical plan that would change a DataFusion option a session may not change
/// (`SET`/`RESET` planned by DataFusion, also inside `PREPARE`): the last check before
/// DataFusion applies it.
pub fn verify_plan(plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::{LogicalPlan, Statement};
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        let key = match node {
            LogicalPlan::Statement(Statement::SetVariable(s)) => Some(&s.variable),
            LogicalPlan::Statement(Statement::ResetVariable(r)) => Some(&r.variable),
            _ => None,
        };
        if let Some(key) = key {
            if let Err(e) = check_datafusion_settable(&key.to_ascii_lowercase()) {
                refused = Some(e);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    refused.map_or(Ok(()), Err)
}

/// DataFusion's options as `SHOW ALL` lists them after the PostgreSQL parameters: every
/// option of the session's configuration and runtime (name, value, description), the ones a
/// session may not change too, with their values; those say so in their description.
pub fn datafusion_rows(
    options: &datafusion::config::ConfigOptions,
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
) -> Vec<(String, Option<String>, String)> {
    options
        .entries()
        .into_iter()
        .chain(runtime.config_entries())
        .map(|e| {
            let settable = check_datafusion_settable(&e.key.to_ascii_lowercase()).is_ok();
            let description = if settable {
                e.description.to_string()
            } else {
                format!("{} (read-only: set by the server's configuration)", e.description.trim_end())
            };
            (e.key, e.value, description)
        })
        .collect()
}

/// `RESET` of an allowed DataFusion option (checked first): back to DataFusion's default,
/// which is the server's for every option on the allowlist (the engine sets none of them).
pub fn reset_datafusion_option(options: &mut datafusion::config::ConfigOptions, key: &str) -> Result<()> {
    use datafusion::config::ConfigField;
    check_datafusion_settable(key)?;
    Ok(options.reset(key)?)
}

fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

/// A session's parameters. Unknown names are accepted when they carry a dot (custom
/// `myapp.x` settings, as in PostgreSQL); other unknown names are an error.
#[derive(Debug)]
pub struct SessionSettings {
    values: Mutex<BTreeMap<String, String>>,
    defaults: BTreeMap<String, String>,
    server_timeout: Option<Duration>,
}

impl SessionSettings {
    /// Settings for a session of `user` whose default schema is `default_schema`.
    pub fn new(user: &str, default_schema: &str, server_timeout: Option<Duration>) -> Self {
        let mut defaults: BTreeMap<String, String> =
            KNOWN.iter().map(|k| (k.name.to_ascii_lowercase(), k.default.to_string())).collect();
        defaults.insert("search_path".into(), default_schema.to_string());
        defaults.insert("session_authorization".into(), user.to_string());
        defaults.insert("statement_timeout".into(), server_timeout.map(format_duration).unwrap_or_else(|| "0".into()));
        defaults.insert("server_version_string".into(), version_string());
        Self { values: Mutex::new(defaults.clone()), defaults, server_timeout }
    }

    /// The current value of a parameter, `None` if unknown.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.lock().expect("settings lock").get(&canonical(name)).cloned()
    }

    /// Sets a parameter (value already unquoted). Returns the canonical name and the value
    /// actually stored, which may be normalised (`SET TimeZone = 'utc'` stays as given).
    pub fn set(&self, name: &str, value: &str) -> Result<(String, String)> {
        let key = canonical(name);
        let value = value.trim().to_string();
        if let Some(df) = datafusion_key(&key) {
            // DataFusion's options live in the session's DataFusion config, changed by `SET`
            // only; never stored here, where they would be shown without effect.
            check_datafusion_settable(&df)?;
            return Err(Error::new(
                StatusCode::Unsupported,
                format!("parameter \"{df}\" can only be changed with SET"),
            ));
        }
        if key == "role" || key == "session_authorization" {
            self.check_identity(&key, &value)?;
        }
        if let Some(k) = known(&key) {
            if !k.settable {
                return Err(Error::new(
                    StatusCode::InvalidArgument,
                    format!("parameter \"{}\" cannot be changed", k.name),
                ));
            }
        } else if !key.contains('.') {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        }
        let value = match key.as_str() {
            "client_encoding" => {
                let norm = value.to_ascii_uppercase().replace(['-', '_'], "");
                if norm != "UTF8" && norm != "UNICODE" {
                    return Err(Error::new(
                        StatusCode::Unsupported,
                        format!("client_encoding {value} is not supported; rxgate speaks UTF8 only"),
                    ));
                }
                "UTF8".to_string()
            }
            "statement_timeout" => {
                parse_duration_ms(&value)?;
                value
            }
            "search_path" => value
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            _ => value,
        };
        self.values.lock().expect("settings lock").insert(key.clone(), value.clone());
        Ok((display_name(&key), value))
    }

    /// `SET ROLE` / `SET SESSION AUTHORIZATION`: only the session's own user (or `none` for
    /// the role) is accepted; anything else is 42501, never a silent OK.
    fn check_identity(&self, key: &str, value: &str) -> Result<()> {
        let user = self.defaults.get("session_authorization").cloned().unwrap_or_default();
        let v = value.trim().trim_matches('\'');
        let ok = v == user || (key == "role" && v.eq_ignore_ascii_case("none"));
        if ok {
            return Ok(());
        }
        let what = if key == "role" { "set role" } else { "set session authorization" };
        Err(Error::new(
            StatusCode::PermissionDenied,
            format!("permission denied to {what} \"{v}\": a session acts only as its logged-in user \"{user}\""),
        ))
    }

    /// `RESET name`: back to the session default. Returns the canonical name and value.
    pub fn reset(&self, name: &str) -> Result<(String, String)> {
        let key = canonical(name);
        if let Some(df) = datafusion_key(&key) {
            check_datafusion_settable(&df)?;
        }
        let default = self.defaults.get(&key).cloned();
        let mut values = self.values.lock().expect("settings lock");
        match default {
            Some(v) => {
                values.insert(key.clone(), v.clone());
                Ok((display_name(&key), v))
            }
            None => {
                values.remove(&key);
                Ok((display_name(&key), String::new()))
            }
        }
    }

    /// `RESET ALL` / `DISCARD ALL`.
    pub fn reset_all(&self) {
        *self.values.lock().expect("settings lock") = self.defaults.clone();
    }

    /// All parameters for `SHOW ALL` / `pg_settings`: (name, value, category, description).
    pub fn all(&self) -> Vec<(String, String, String, String)> {
        let values = self.values.lock().expect("settings lock");
        values
            .iter()
            .map(|(k, v)| {
                let (cat, desc) = known(k).map(|k| (k.category, k.description)).unwrap_or(("Customized Options", ""));
                (display_name(k), v.clone(), cat.to_string(), desc.to_string())
            })
            .collect()
    }

    /// The effective statement timeout: the session's `statement_timeout` (0 = none), never
    /// above the server's limit.
    pub fn statement_timeout(&self) -> Option<Duration> {
        let session = self.get("statement_timeout").and_then(|v| parse_duration_ms(&v).ok()).unwrap_or(0);
        let session = (session > 0).then(|| Duration::from_millis(session));
        match (session, self.server_timeout) {
            (Some(s), Some(limit)) => Some(s.min(limit)),
            (s, limit) => s.or(limit),
        }
    }

    /// The schemas of `search_path`, in order.
    pub fn search_path(&self) -> Vec<String> {
        self.get("search_path")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The name a parameter is shown with (`DateStyle`, `TimeZone`, …).
pub fn display_name(key: &str) -> String {
    known(key).map(|k| k.name.to_string()).unwrap_or_else(|| key.to_string())
}

/// What `version()` returns: PostgreSQL-shaped, so drivers that parse it (SQLAlchemy,
/// Superset, pgjdbc) see version 16.6.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_SERVER_VERSION} (rxgate {}) on {}-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// Parses a PostgreSQL duration setting in milliseconds: `1000`, `'1s'`, `'500ms'`, `'2min'`.
pub fn parse_duration_ms(value: &str) -> Result<u64> {
    let v = value.trim().trim_matches('\'').trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let bad = || Error::new(StatusCode::InvalidArgument, format!("invalid value for a duration: \"{value}\""));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(bad()),
    };
    if n < 0.0 {
        return Err(bad());
    }
    Ok((n * factor).round() as u64)
}

/// Formats a duration as PostgreSQL shows time settings (`5min`, `30s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".into()
    } else if ms.is_multiple_of(60_000) {
        format!("{}min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_postgres() {
        assert_eq!(parse_duration_ms("1000").unwrap(), 1000);
        assert_eq!(parse_duration_ms("'1s'").unwrap(), 1000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("2min").unwrap(), 120_000);
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5min");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn set_show_reset_round_trip() {
        let s = SessionSettings::new("alice", "health", Some(Duration::from_secs(300)));
        assert_eq!(s.get("datestyle").as_deref(), Some("ISO, MDY"));
        assert_eq!(s.set("DateStyle", "ISO, DMY").unwrap().0, "DateStyle");
        assert_eq!(s.get("DATESTYLE").as_deref(), Some("ISO, DMY"));
        s.reset("datestyle").unwrap();
        assert_eq!(s.get("datestyle").as_deref(), Some("ISO, MDY"));
        assert!(s.set("server_version", "9").is_err());
        assert!(s.set("no_such_thing", "1").is_err());
        assert!(s.set("myapp.flag", "1").is_ok());
        assert!(s.set("client_encoding", "LATIN1").is_err());
        assert_eq!(s.get("transaction isolation level").as_deref(), Some("read committed"));
    }

    #[test]
    fn statement_timeout_never_exceeds_the_server_limit() {
        let s = SessionSettings::new("u", "health", Some(Duration::from_secs(300)));
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(300)));
        s.set("statement_timeout", "100ms").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_millis(100)));
        s.set("statement_timeout", "0").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(300)));
        s.set("statement_timeout", "1h").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(300)));
        let unlimited = SessionSettings::new("u", "health", None);
        assert_eq!(unlimited.statement_timeout(), None);
    }

    #[test]
    fn only_allowlisted_datafusion_options_and_ones_own_identity_can_be_set() {
        let s = SessionSettings::new("ann", "health", None);
        for key in
            ["datafusion.runtime.memory_limit", "DataFusion.Runtime.Temp_Directory", "datafusion.execution.batch_size"]
        {
            assert_eq!(s.set(key, "1").unwrap_err().code, StatusCode::PermissionDenied, "{key}");
            assert_eq!(s.reset(key).unwrap_err().code, StatusCode::PermissionDenied, "{key}");
            assert_eq!(s.get(key), None);
        }
        // An allowed option is DataFusion's: not stored here (set_config cannot reach it).
        assert_eq!(s.set("datafusion.explain.format", "tree").unwrap_err().code, StatusCode::Unsupported);
        assert!(check_datafusion_settable("datafusion.explain.format").is_ok());
        assert!(check_datafusion_settable("datafusion.explain.show_statistics").is_err());
        assert_eq!(s.set("role", "admin").unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(s.set("session_authorization", "admin").unwrap_err().code, StatusCode::PermissionDenied);
        s.set("role", "ann").unwrap();
        s.set("role", "NONE").unwrap();
        s.set("session_authorization", "ann").unwrap();
        assert_eq!(s.get("session_authorization").as_deref(), Some("ann"));
    }

    #[test]
    fn show_all_lists_datafusion_options_read_only_ones_too() {
        let options = datafusion::config::ConfigOptions::new();
        let runtime = datafusion::execution::runtime_env::RuntimeEnv::default();
        let rows = datafusion_rows(&options, &runtime);
        let row = |k: &str| rows.iter().find(|r| r.0 == k).unwrap_or_else(|| panic!("{k} missing"));
        let batch = row("datafusion.execution.batch_size");
        assert_eq!(batch.1.as_deref(), Some("8192"));
        assert!(batch.2.contains("read-only"));
        assert!(!row("datafusion.explain.format").2.contains("read-only"));
        row("datafusion.runtime.memory_limit");
    }

    #[test]
    fn version_parses_as_postgres() {
        let v = version_string();
        assert!(v.starts_with("PostgreSQL 16.6 (rxgate "), "{v}");
    }
}

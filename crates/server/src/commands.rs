//! The subcommands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use rxgate_auth::UserDirectory;
use rxgate_catalog::{apply_definitions, load_definitions, parse_definitions, Lakehouse, TableDef};
use rxgate_common::{Error, Identity, Result, StatusCode};
use rxgate_engine::{Engine, QueryOutput};
use rxgate_ingest::{ingest_cities, ingest_prescribers, is_raw_dir, run_pipeline, PipelineOptions, Progress};
use rxgate_pgwire::{AuthConfig, AuthMethod, PgServer, PgServerConfig};

use crate::cli::{
    CatalogCommand, CertCommand, Cli, Command, Format, IngestCommand, LayoutArg, PipelineCommand, PolicyCommand,
};
use crate::config::{load_file, resolve, ListenFlags, Settings};
use crate::output::print_batches;
use crate::users::DemoLogin;

/// Table definitions compiled into the binary (the pipeline's tables): what `catalog apply`,
/// `pipeline run` and `demo` use unless given a path.
const BUILTIN_DEFINITIONS: &str = include_str!("../../../catalog/health.toml");

/// Delivery date used by `rxgate demo`.
const DEMO_DELIVERY: &str = "2021-12-31";

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let file = load_file(cli.config.as_deref())?;
    let pg_flag = match &cli.command {
        Command::Serve { pg_listen, flight_listen, http_listen }
        | Command::Demo { pg_listen, flight_listen, http_listen, .. } => {
            ListenFlags { pg: pg_listen.clone(), flight: flight_listen.clone(), http: http_listen.clone() }
        }
        _ => ListenFlags::default(),
    };
    let settings = resolve(file, cli.data_dir.clone(), pg_flag)?;
    // Before anything creates a file: data, catalog, audit and spill files are private.
    crate::config::apply_umask(settings.umask);
    match cli.command {
        Command::Datagen { scale, out, layout, seed } => datagen(scale, &out, layout, seed).map(|_| ()),
        Command::Catalog { action } => catalog(&settings, action).await,
        Command::Ingest { what } => ingest(&settings, what).await,
        Command::Pipeline {
            action: PipelineCommand::Run { input, delivery_date, force, definitions, json, quiet },
        } => {
            let defs = definitions_for(definitions.as_deref())?;
            let lake = open(&settings).await?;
            let opts = PipelineOptions { input, delivery_date, force };
            let report = run_pipeline(&lake, &defs.tables, &opts, &Progress::auto(quiet || json)).await?;
            if json {
                let mut value = serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("definitions".into(), serde_json::Value::String(defs.source.clone()));
                }
                println!("{value}");
            } else {
                eprintln!("{}", defs.describe());
                for s in &report.steps {
                    println!("{:<20} {:<8} {:>8.2} s {:>10} rows", s.name, s.status, s.seconds, s.rows);
                }
                println!(
                    "delivery {}: read {} = loaded {} + quarantined {}",
                    report.delivery_date, report.read, report.loaded, report.quarantined
                );
            }
            Ok(())
        }
        Command::Sql { query, format, as_user } => sql(&settings, &query, format, as_user.as_deref()).await,
        Command::Policy { action: PolicyCommand::Check { user, query } } => {
            policy_check(&settings, &user, &query).await
        }
        Command::Serve { .. } => serve(&settings, None).await,
        Command::Demo { scale, no_serve, .. } => demo(&settings, scale, no_serve).await,
        Command::User { action } => crate::users::run(&settings, action),
        Command::Cert { action: CertCommand::Dev { out, hosts, days, force } } => cert_dev(&out, &hosts, days, force),
        Command::Lifecycle { action } => {
            let lake = open(&settings).await?;
            crate::lifecycle::command(&lake, &settings, action).await
        }
        Command::Backup { action } => {
            let lake = open(&settings).await?;
            crate::backup::command(&lake, &settings, action).await
        }
    }
}

pub(crate) async fn open(settings: &Settings) -> Result<Lakehouse> {
    Lakehouse::open(&settings.lakehouse).await
}

/// Table definitions a command applies, and where they came from.
pub(crate) struct Definitions {
    pub(crate) tables: Vec<TableDef>,
    /// The absolute path given, or the built-in definitions.
    source: String,
}

impl Definitions {
    /// The line commands print: which definitions were used.
    fn describe(&self) -> String {
        format!("definitions: {} ({} tables)", self.source, self.tables.len())
    }
}

/// The one rule for every command that applies definitions (`catalog apply [PATH]`,
/// `pipeline run [--definitions PATH]`, `demo`), whatever the working directory: the path
/// given (a directory of *.toml or one file; relative to the working directory), else the
/// built-in definitions. Never a directory found by chance.
pub(crate) fn definitions_for(path: Option<&Path>) -> Result<Definitions> {
    let Some(p) = path else {
        let tables = parse_definitions(BUILTIN_DEFINITIONS, "built-in catalog/health.toml")?;
        return Ok(Definitions { tables, source: "built-in (catalog/health.toml of this build)".into() });
    };
    let shown = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if !p.exists() {
        return Err(Error::invalid(format!(
            "definitions {}: no such file or directory (give a directory or file of *.toml table \
             definitions, or no path for the built-in definitions)",
            shown.display()
        )));
    }
    let tables = load_definitions(p)?;
    if tables.is_empty() {
        return Err(Error::invalid(format!("definitions {}: no [[table]] definitions found", shown.display())));
    }
    Ok(Definitions { tables, source: shown.display().to_string() })
}

fn datagen(scale: f64, out: &Path, layout: LayoutArg, seed: u64) -> Result<rxgate_datagen::DatagenReport> {
    if scale.is_nan() || scale <= 0.0 {
        return Err(Error::invalid("--scale must be positive"));
    }
    let opts = rxgate_datagen::DatagenOptions {
        scale,
        out: out.to_path_buf(),
        layout: match layout {
            LayoutArg::Seed => rxgate_datagen::Layout::Seed,
            LayoutArg::Cms => rxgate_datagen::Layout::Cms,
        },
        seed,
    };
    let started = std::time::Instant::now();
    let bar = Progress::auto(false).rows_bar();
    let report = rxgate_datagen::generate(&opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| Error::invalid(format!("datagen: {e}")))?;
    bar.finish_and_clear();
    eprintln!(
        "datagen: {} prescriber rows ({} dirty, {} distinct NPIs), {} cities in {:.1} s",
        report.prescriber_rows,
        report.dirty_rows,
        report.distinct_npis,
        report.cities,
        started.elapsed().as_secs_f64()
    );
    println!("{}", report.prescriber_file.display());
    println!("{}", report.cities_file.display());
    Ok(report)
}

async fn catalog(settings: &Settings, action: CatalogCommand) -> Result<()> {
    // Iceberg DBA subcommands are SQL run as the local operator: planned (and audited) by
    // EngineSession::plan like any client's statement.
    let iceberg_sql = |action: &CatalogCommand| -> Option<(String, Format)> {
        let meta = |table: &str, what: &str| {
            let (db, t) = table.rsplit_once('.').unwrap_or(("", table));
            let name = format!("\"{}${what}\"", t.replace('"', "\"\""));
            if db.is_empty() {
                name
            } else {
                format!("{db}.{name}")
            }
        };
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        Some(match action {
            CatalogCommand::Snapshots(a) => (format!("SELECT * FROM {}", meta(&a.table, "snapshots")), a.format),
            CatalogCommand::History(a) => (format!("SELECT * FROM {}", meta(&a.table, "history")), a.format),
            CatalogCommand::Files(a) => (format!("SELECT * FROM {}", meta(&a.table, "files")), a.format),
            CatalogCommand::Manifests(a) => (format!("SELECT * FROM {}", meta(&a.table, "manifests")), a.format),
            CatalogCommand::Partitions(a) => (format!("SELECT * FROM {}", meta(&a.table, "partitions")), a.format),
            CatalogCommand::Rollback { table, snapshot_id, set_current, to_timestamp } => {
                let sql = match (snapshot_id, to_timestamp) {
                    (_, Some(ts)) => {
                        format!("CALL system.rollback_to_timestamp({}, TIMESTAMP {})", lit(table), lit(ts))
                    }
                    (Some(id), None) if *set_current => {
                        format!("CALL system.set_current_snapshot({}, {id})", lit(table))
                    }
                    (Some(id), None) => format!("CALL system.rollback_to_snapshot({}, {id})", lit(table)),
                    (None, None) => return None,
                };
                (sql, Format::Table)
            }
            CatalogCommand::Alter { table, clause } => (format!("ALTER TABLE {table} {clause}"), Format::Table),
            _ => return None,
        })
    };
    if let Some((query, format)) = iceberg_sql(&action) {
        let result = sql(settings, &query, format, None).await;
        if let (CatalogCommand::Rollback { table, snapshot_id: Some(id), .. }, Err(e)) = (&action, &result) {
            if e.message.contains("is not an ancestor") {
                // The engine's hint names the SQL procedure; on the command line it is a flag.
                let message = e.message.replace("(use system.set_current_snapshot)", "").trim_end().to_string();
                return Err(Error::new(
                    e.code,
                    format!("{message}: to make any snapshot current, use `rxgate catalog rollback {table} {id} --set-current`"),
                ));
            }
        }
        return result;
    }
    match action {
        CatalogCommand::Apply { path } => {
            let defs = definitions_for(path.as_deref())?;
            let lake = open(settings).await?;
            eprintln!("{}", defs.describe());
            for a in apply_definitions(&lake, &defs.tables).await? {
                crate::output::line(a)?;
            }
        }
        CatalogCommand::List => {
            let lake = open(settings).await?;
            let mut tables = 0;
            for ns in lake.namespaces().await? {
                for t in lake.tables(&ns).await? {
                    crate::output::line(format!("{ns}.{t}"))?;
                    tables += 1;
                }
            }
            if tables == 0 {
                eprintln!(
                    "the catalog is empty: no tables (create them with `rxgate catalog apply` or `rxgate pipeline run`)"
                );
            }
        }
        _ => return Err(Error::internal("catalog subcommand not handled")),
    }
    Ok(())
}

async fn ingest(settings: &Settings, what: IngestCommand) -> Result<()> {
    let lake = open(settings).await?;
    let (args, summary) = match what {
        IngestCommand::Prescribers(a) => {
            let s = ingest_prescribers(&lake, &a.path, a.delivery_date, &Progress::auto(a.quiet || a.json)).await?;
            (a, s)
        }
        IngestCommand::Cities(a) => {
            let s = ingest_cities(&lake, &a.path, a.delivery_date).await?;
            (a, s)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary).map_err(|e| Error::internal(e.to_string()))?);
    } else {
        println!(
            "{} delivery {}: read {} = loaded {} + quarantined {} (replaced {} rows, {} files, snapshot {})",
            summary.table,
            summary.delivery_date,
            summary.read,
            summary.loaded,
            summary.quarantined,
            summary.replaced_rows,
            summary.data_files,
            summary.snapshot_id.map(|s| s.to_string()).unwrap_or_default()
        );
        let mut reasons: Vec<_> = summary.rejects_by_reason.iter().collect();
        reasons.sort();
        for (r, n) in reasons {
            println!("  quarantined {r}: {n}");
        }
        if summary.imputed_trx > 0 || summary.trx_still_null > 0 {
            println!("  trx_cnt imputed: {}, still NULL: {}", summary.imputed_trx, summary.trx_still_null);
        }
    }
    Ok(())
}

fn cli_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// The CLI's identity: the local operator (role `admin`), or `--as USER` with the roles the
/// users file gives that user (the policy adds its own). A user neither file knows, or whose
/// roles are granted nothing, is refused here with that reason: every table would otherwise
/// just be "not found".
fn cli_identity(settings: &Settings, engine: &Engine, as_user: Option<&str>) -> Result<Identity> {
    let Some(user) = as_user else { return Ok(Identity::cli(cli_user())) };
    let users = rxgate_auth::Users::load(&settings.auth.users_file)?;
    let login_roles = users.get(user).map(|u| u.roles.clone());
    let (policy, _) = engine.policy().current();
    let policy_name = crate::users::policy_origin(engine);
    if login_roles.is_none() && policy.user(user).is_none() {
        return Err(Error::new(
            StatusCode::AuthFailed,
            format!(
                "unknown user \"{user}\": not in the users file ({}) nor in the policy's [users] ({policy_name}); \
                 add it with `rxgate user add {user} --role ROLE`",
                settings.auth.users_file.display()
            ),
        ));
    }
    let roles = login_roles.unwrap_or_default();
    let all_roles = policy.roles_of(user, &roles);
    let granted = policy.grants().iter().any(|g| g.roles.iter().any(|r| all_roles.contains(r)));
    if !granted {
        let undefined: Vec<&str> =
            all_roles.iter().filter(|r| !policy.roles().contains_key(*r)).map(String::as_str).collect();
        let why = match (all_roles.is_empty(), undefined.is_empty()) {
            (true, _) => "it has no roles".to_string(),
            (false, true) => format!("its roles ({}) are granted nothing", all_roles.join(", ")),
            (false, false) => format!(
                "its roles ({}) are granted nothing; {} not defined in the policy",
                all_roles.join(", "),
                undefined.join(", ")
            ),
        };
        return Err(Error::new(
            StatusCode::PermissionDenied,
            format!(
                "user \"{user}\" has no grants under the policy ({policy_name}): {why} (roles with grants: {})",
                crate::users::granted_roles(&policy).join(", ")
            ),
        ));
    }
    Ok(Identity { user: user.to_string(), roles, ..Identity::cli(user) })
}

async fn policy_check(settings: &Settings, user: &str, query: &str) -> Result<()> {
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    let session = engine.session(cli_identity(settings, &engine, Some(user))?).await?;
    let (plan, info) = session.policy_check(query).await?;
    println!("user: {user}\nroles: {}", session.roles().join(", "));
    println!("tables: {}", info.tables.join(", "));
    println!("masks: {}", if info.masks.is_empty() { "none".into() } else { info.masks.join("; ") });
    println!("row filters: {}", if info.row_filters.is_empty() { "none".into() } else { info.row_filters.join("; ") });
    println!("plan after the policy rewrite:\n{plan}");
    Ok(())
}

async fn sql(settings: &Settings, query: &str, format: Format, as_user: Option<&str>) -> Result<()> {
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    let session = engine.session(cli_identity(settings, &engine, as_user)?).await?;
    let statements = session.split(query)?;
    for stmt in statements {
        if crate::output::stdout_closed() {
            break; // the reader went away (`| head`): nothing more to print
        }
        match session.sql(&stmt).await? {
            QueryOutput::Rows { stream, .. }
            | QueryOutput::Fetched { stream, .. }
            | QueryOutput::Copy { stream, .. } => {
                let batches: Vec<_> = stream.try_collect().await.map_err(Error::from)?;
                print_batches(&batches, format)?;
            }
            QueryOutput::Command { tag } | QueryOutput::Written { tag, .. } => eprintln!("{tag}"),
            QueryOutput::CopyIn(sink) => {
                sink.abort("the CLI has no COPY FROM STDIN");
                return Err(Error::new(
                    StatusCode::Unsupported,
                    "COPY … FROM STDIN needs a PostgreSQL client (psql \\copy)",
                ));
            }
            QueryOutput::TransactionStart => eprintln!("BEGIN"),
            QueryOutput::TransactionEnd { commit } => eprintln!("{}", if commit { "COMMIT" } else { "ROLLBACK" }),
            QueryOutput::Empty => {}
        }
    }
    Ok(())
}

fn cert_dev(out: &Path, hosts: &[String], days: u32, force: bool) -> Result<()> {
    let files = crate::devcert::create(out, hosts, days, force)?;
    println!("{}", files.ca_cert.display());
    println!("{}", files.ca_key.display());
    println!("{}", files.server_cert.display());
    println!("{}", files.server_key.display());
    eprintln!("development CA and server certificate for {} (valid {days} days). In the config:", hosts.join(", "));
    eprintln!("  [pgwire.tls]");
    eprintln!("  cert = \"{}\"", files.server_cert.display());
    eprintln!("  key = \"{}\"", files.server_key.display());
    eprintln!("and connect with sslmode=verify-full sslrootcert={}", files.ca_cert.display());
    eprintln!("Keep ca.key private: anything it signs is trusted by clients that trust ca.crt.");
    Ok(())
}

/// The PostgreSQL listener settings from the resolved configuration.
fn pg_server_config(settings: &Settings) -> PgServerConfig {
    PgServerConfig {
        listen: settings.pg_listen.clone(),
        tls: settings.pg_tls.clone(),
        auth: AuthConfig {
            method: settings.auth.method,
            tls_required: settings.pg_tls_required,
            max_connections: settings.pg_max_connections,
            reserved_admin_connections: settings.auth.reserved_admin_connections,
            max_authenticating: settings.pg_max_authenticating,
            auth_timeout: settings.auth.auth_timeout,
            max_connections_per_user: settings.auth.max_connections_per_user,
            scram_iterations: settings.auth.scram_iterations,
        },
    }
}

/// A libpq connection URL (user names and demo passwords are URL-safe by construction).
fn pg_url(user: &str, password: Option<&str>, addr: std::net::SocketAddr, tls: bool) -> String {
    let host = match addr.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let secret = password.map(|p| format!(":{p}")).unwrap_or_default();
    let query = if tls { "?sslmode=require" } else { "" };
    format!("postgresql://{user}{secret}@{host}:{}/rxgate{query}", addr.port())
}

async fn serve(settings: &Settings, demo_logins: Option<&[DemoLogin]>) -> Result<()> {
    let users = Arc::new(UserDirectory::open(&settings.auth.users_file)?.with_throttle(settings.auth.throttle.clone()));
    let user_count = users.users()?.len();
    let lake = open(settings).await?;
    crate::lifecycle::schedule(&lake, settings)?;
    crate::backup::schedule(&lake, settings)?;
    let engine = Engine::new(lake, settings.engine.clone())?;
    engine.start_metrics_sampler();
    rxgate_common::metrics::set_build_info(env!("CARGO_PKG_VERSION"), option_env!("RXGATE_GIT_COMMIT").unwrap_or(""));
    tracing::info!(memory_limit_mib = settings.engine.memory_limit_bytes >> 20, "query memory pool");
    let server = PgServer::bind(engine.clone(), &pg_server_config(settings), users.clone()).await?;
    let flight = crate::listeners::bind(settings, engine.clone(), users.clone()).await?;
    let http = crate::listeners::bind_http(settings, engine, users).await?;
    let addr = server.local_addr()?;
    let tls = server.tls_enabled();
    tracing::info!(%addr, tls, tls_required = settings.pg_tls_required, users = user_count, "pgwire listening");
    let tls_state = match (tls, settings.pg_tls_required) {
        (true, true) => "TLS required",
        (true, false) => "TLS available",
        (false, _) => "no TLS",
    };
    let method = match settings.auth.method {
        AuthMethod::ScramSha256 => "SCRAM-SHA-256",
        AuthMethod::Password => "password over TLS, else SCRAM-SHA-256",
    };
    println!("rxgate is serving PostgreSQL clients on {addr} ({tls_state}; {method})");
    println!("  users: {user_count} in {}", settings.auth.users_file.display());
    match demo_logins {
        Some(logins) => {
            let kept = crate::users::demo_credentials_path(&settings.data_dir);
            println!("  demo users (passwords kept in {}); user names are not role names:", kept.display());
            for l in logins {
                match &l.password {
                    Some(p) => println!(
                        "  psql \"{}\"   # user {}, role {}",
                        pg_url(&l.user, Some(p), addr, tls),
                        l.user,
                        l.role
                    ),
                    None => println!(
                        "  {0} (role {1}): password changed since the demo made it (rxgate user passwd {0})",
                        l.user, l.role
                    ),
                }
            }
        }
        None if user_count == 0 => {
            println!("  no users yet: add one with `rxgate user add NAME` (it is seen without a restart)");
        }
        None => println!("  psql \"{}\"", pg_url("USER", None, addr, tls)),
    }
    if let Some(flight) = &flight {
        crate::listeners::print_connect(flight, demo_logins, user_count)?;
    }
    if let Some(http) = &http {
        let base = http.base_url()?;
        println!("rxgate's operations listener: {base} (probes {base}/livez, {base}/readyz)");
        println!("  metrics (Prometheus): {base}/metrics");
        println!("  console: {base}/console/");
    }
    println!("  try: SELECT count(*) FROM health.prescriber_drug;  (viewer: health.city_report)");
    println!("Press Ctrl-C to stop.");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::info!("shutting down: no new connections; open ones end with the process");
    };
    crate::listeners::run_beside(server, flight, http, shutdown).await
}

async fn demo(settings: &Settings, scale: f64, no_serve: bool) -> Result<()> {
    let raw: PathBuf = settings.data_dir.join("raw");
    if !is_raw_dir(&raw) {
        eprintln!("demo: generating sample data at scale {scale} into {}", raw.display());
        datagen(scale, &raw, LayoutArg::Seed, 42)?;
    } else {
        eprintln!("demo: using the sample data in {}", raw.display());
    }
    let lake = open(settings).await?;
    let defs = definitions_for(None)?;
    eprintln!("demo: {}", defs.describe());
    let date = DEMO_DELIVERY.parse().expect("demo date");
    let opts = PipelineOptions { input: raw.display().to_string(), delivery_date: date, force: false };
    let report = run_pipeline(&lake, &defs.tables, &opts, &Progress::auto(false)).await?;
    for s in &report.steps {
        eprintln!("demo: {:<20} {:<8} {:>10} rows", s.name, s.status, s.rows);
    }
    eprintln!(
        "demo: delivery {date}: read {} = loaded {} + quarantined {}",
        report.read, report.loaded, report.quarantined
    );
    drop(lake);
    let logins = crate::users::ensure_demo_users(settings)?;
    let key = crate::users::ensure_demo_pseudonym_key(&settings.data_dir)?;
    let mut settings = settings.clone();
    settings.engine.pseudonym_key.get_or_insert(key);
    let settings = &settings;
    if no_serve {
        let kept = crate::users::demo_credentials_path(&settings.data_dir);
        for l in &logins {
            match &l.password {
                Some(_) => eprintln!("demo: user {} has role {} (password in {})", l.user, l.role, kept.display()),
                None => eprintln!("demo: user {} has role {} (password changed since the demo set it)", l.user, l.role),
            }
        }
        return Ok(());
    }
    serve(settings, Some(&logins)).await
}

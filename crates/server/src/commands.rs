//! The subcommands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use rxgate_auth::UserDirectory;
use rxgate_catalog::{apply_definitions, load_definitions, parse_definitions, Lakehouse, TableDef};
use rxgate_common::{Error, Identity, Result};
use rxgate_engine::{Engine, QueryOutput};
use rxgate_ingest::{ingest_cities, ingest_prescribers, is_raw_dir, run_pipeline, PipelineOptions, Progress};
use rxgate_pgwire::{AuthConfig, AuthMethod, PgServer, PgServerConfig};

use crate::cli::{CatalogCommand, CertCommand, Cli, Command, Format, IngestCommand, LayoutArg, PipelineCommand, PolicyCommand};
use crate::config::{load_file, resolve, ListenFlags, Settings};
use crate::output::print_batches;
use crate::users::DemoLogin;

/// Table definitions compiled into the binary, used when no `catalog/` directory is at hand.
const BUILTIN_DEFINITIONS: &str = include_str!("../../../catalog/health.toml");

/// Delivery date used by `rxgate demo`.
const DEMO_DELIVERY: &str = "2021-12-31";

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let file = load_file(cli.config.as_deref())?;
    let pg_flag = match &cli.command {
        Command::Serve { pg_listen, flight_listen } | Command::Demo { pg_listen, flight_listen, .. } => {
            ListenFlags { pg: pg_listen.clone(), flight: flight_listen.clone() }
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
        Command::Pipeline { action: PipelineCommand::Run { input, delivery_date, force, definitions, json, quiet } } => {
            let lake = open(&settings).await?;
            let defs = definitions_for(definitions.as_deref())?;
            let opts = PipelineOptions { input, delivery_date, force };
            let report = run_pipeline(&lake, &defs, &opts, &Progress::auto(quiet || json)).await?;
            if json {
                println!("{}", serde_json::to_string(&report).map_err(|e| Error::internal(e.to_string()))?);
            } else {
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
        Command::Policy { action: PolicyCommand::Check { user, query } } => policy_check(&settings, &user, &query).await,
        Command::Serve { .. } => serve(&settings, None).await,
        Command::Demo { scale, no_serve, .. } => demo(&settings, scale, no_serve).await,
        Command::User { action } => crate::users::run(&settings, action),
        Command::Cert { action: CertCommand::Dev { out, hosts, days, force } } => cert_dev(&out, &hosts, days, force),
    }
}

async fn open(settings: &Settings) -> Result<Lakehouse> {
    Lakehouse::open(&settings.lakehouse).await
}

/// The definitions to apply: an explicit path, ./catalog when present, or the built-in copy.
fn definitions_for(path: Option<&Path>) -> Result<Vec<TableDef>> {
    match path {
        Some(p) => load_definitions(p),
        None if Path::new("catalog").is_dir() => load_definitions(Path::new("catalog")),
        None => parse_definitions(BUILTIN_DEFINITIONS, "built-in catalog/health.toml"),
    }
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
            if db.is_empty() { name } else { format!("{db}.{name}") }
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
                    (_, Some(ts)) => format!("CALL system.rollback_to_timestamp({}, TIMESTAMP {})", lit(table), lit(ts)),
                    (Some(id), None) if *set_current => format!("CALL system.set_current_snapshot({}, {id})", lit(table)),
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
        return sql(settings, &query, format, None).await;
    }
    let lake = open(settings).await?;
    match action {
        CatalogCommand::Apply { path } => {
            let defs = load_definitions(&path)?;
            for a in apply_definitions(&lake, &defs).await? {
                println!("{a}");
            }
        }
        CatalogCommand::List => {
            for ns in lake.namespaces().await? {
                for t in lake.tables(&ns).await? {
                    println!("{ns}.{t}");
                }
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
/// users file gives that user (the policy adds its own).
fn cli_identity(settings: &Settings, as_user: Option<&str>) -> Result<Identity> {
    let Some(user) = as_user else { return Ok(Identity::cli(cli_user())) };
    let users = rxgate_auth::Users::load(&settings.auth.users_file)?;
    let roles = users.get(user).map(|u| u.roles.clone()).unwrap_or_default();
    Ok(Identity { user: user.to_string(), roles, ..Identity::cli(user) })
}

async fn policy_check(settings: &Settings, user: &str, query: &str) -> Result<()> {
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    let session = engine.session(cli_identity(settings, Some(user))?).await?;
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
    let session = engine.session(cli_identity(settings, as_user)?).await?;
    let statements = session.split(query)?;
    for stmt in statements {
        match session.sql(&stmt).await? {
            QueryOutput::Rows { stream, .. } | QueryOutput::Fetched { stream, .. } | QueryOutput::Copy { stream, .. } => {
                let batches: Vec<_> = stream.try_collect().await.map_err(Error::from)?;
                print_batches(&batches, format)?;
            }
            QueryOutput::Command { tag } => eprintln!("{tag}"),
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
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    tracing::info!(memory_limit_mib = settings.engine.memory_limit_bytes >> 20, "query memory pool");
    let server = PgServer::bind(engine.clone(), &pg_server_config(settings), users.clone()).await?;
    let flight = crate::flight::bind(settings, engine, users).await?;
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
            println!("  demo users (passwords kept in {}):", kept.display());
            for l in logins {
                match &l.password {
                    Some(p) => println!("  psql \"{}\"", pg_url(&l.user, Some(p), addr, tls)),
                    None => println!("  {0}: password changed since the demo made it (rxgate user passwd {0})", l.user),
                }
            }
        }
        None if user_count == 0 => {
            println!("  no users yet: add one with `rxgate user add NAME` (it is seen without a restart)");
        }
        None => println!("  psql \"{}\"", pg_url("USER", None, addr, tls)),
    }
    if let Some(flight) = &flight {
        crate::flight::print_connect(flight, demo_logins, user_count)?;
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
    crate::flight::run_beside(server, flight, shutdown).await
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
    let date = DEMO_DELIVERY.parse().expect("demo date");
    let opts = PipelineOptions { input: raw.display().to_string(), delivery_date: date, force: false };
    let report = run_pipeline(&lake, &defs, &opts, &Progress::auto(false)).await?;
    eprintln!("demo: delivery {date}: read {} = loaded {} + quarantined {}", report.read, report.loaded, report.quarantined);
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
                Some(_) => eprintln!("demo: user {} (password in {})", l.user, kept.display()),
                None => eprintln!("demo: user {} (password changed since the demo set it)", l.user),
            }
        }
        return Ok(());
    }
    serve(settings, Some(&logins)).await
}

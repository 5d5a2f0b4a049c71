//! The subcommands.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rxgate_catalog::{apply_definitions, load_definitions, parse_definitions, Lakehouse, TableDef};
use rxgate_common::{Error, Identity, Result};
use rxgate_engine::{Engine, QueryOutput};
use rxgate_ingest::{ingest_cities, ingest_prescribers, is_raw_dir, run_pipeline, PipelineOptions, Progress};
use rxgate_pgwire::{PgServer, PgServerConfig};

use crate::cli::{CatalogCommand, Cli, Command, Format, IngestCommand, LayoutArg, PipelineCommand};
use crate::config::{load_file, resolve, Settings};
use crate::output::print_batches;

/// Table definitions compiled into the binary, used when no `catalog/` directory is at hand.
const BUILTIN_DEFINITIONS: &str = include_str!("../../../catalog/health.toml");

/// Delivery date used by `rxgate demo`.
const DEMO_DELIVERY: &str = "2021-12-31";

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let file = load_file(cli.config.as_deref())?;
    let pg_flag = match &cli.command {
        Command::Serve { pg_listen } | Command::Demo { pg_listen, .. } => pg_listen.clone(),
        _ => None,
    };
    let settings = resolve(file, cli.data_dir.clone(), pg_flag)?;
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
        Command::Sql { query, format } => sql(&settings, &query, format).await,
        Command::Serve { .. } => serve(&settings).await,
        Command::Demo { scale, no_serve, .. } => demo(&settings, scale, no_serve).await,
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
    if !(scale > 0.0) {
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

async fn sql(settings: &Settings, query: &str, format: Format) -> Result<()> {
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    let session = engine.session(Identity::cli(cli_user())).await?;
    let statements = session.split(query)?;
    for stmt in statements {
        match session.sql(&stmt).await? {
            QueryOutput::Rows { stream, .. } => {
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

async fn serve(settings: &Settings) -> Result<()> {
    let engine = Engine::new(open(settings).await?, settings.engine.clone())?;
    let server = PgServer::bind(engine, &PgServerConfig { listen: settings.pg_listen.clone() }).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "pgwire listening");
    println!("rxgate is serving PostgreSQL clients on {addr}");
    println!("  psql \"postgresql://rxgate@{}:{}/rxgate\"", addr.ip(), addr.port());
    println!("  try: SELECT count(*) FROM health.prescriber_drug;");
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
    server.run(shutdown).await
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
    let opts = PipelineOptions { input: raw, delivery_date: date, force: false };
    let report = run_pipeline(&lake, &defs, &opts, &Progress::auto(false)).await?;
    eprintln!("demo: delivery {date}: read {} = loaded {} + quarantined {}", report.read, report.loaded, report.quarantined);
    drop(lake);
    if no_serve {
        return Ok(());
    }
    serve(settings).await
}

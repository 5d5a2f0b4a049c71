//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// rxgate — a governed SQL gateway for healthcare analytics (CMS Medicare Part D).
///
/// Configuration is layered: built-in defaults, then the config file, then RXGATE_*
/// environment variables, then these flags.
#[derive(Debug, Parser)]
#[command(name = "rxgate", version, propagate_version = true)]
pub struct Cli {
    /// Config file (default: conf/rxgate.toml when it exists).
    #[arg(long, global = true, env = "RXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory holding the embedded catalog (catalog.db) and the warehouse.
    #[arg(long, global = true, env = "RXGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// More logging. One-shot commands log warnings and errors only (-v info, -vv debug);
    /// `serve` and `demo` log info (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate deterministic synthetic CMS Part D data (prescribers CSV + real US cities Parquet).
    Datagen {
        /// Scale factor: 1 = 1,329,329 prescriber-drug rows.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Output directory (gets prescribers/ and cities/).
        #[arg(long)]
        out: PathBuf,
        /// Raw layout of the prescriber file.
        #[arg(long, value_enum, default_value_t = LayoutArg::Seed)]
        layout: LayoutArg,
        /// Random seed; the same seed gives byte-identical files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Manage the lakehouse catalog.
    Catalog {
        /// Catalog action.
        #[command(subcommand)]
        action: CatalogCommand,
    },
    /// Ingest one delivery of raw files into the curated tables (replaces that delivery).
    Ingest {
        /// What to ingest.
        #[command(subcommand)]
        what: IngestCommand,
    },
    /// Run the seed pipeline for one delivery.
    Pipeline {
        /// Pipeline action.
        #[command(subcommand)]
        action: PipelineCommand,
    },
    /// Run one SQL statement and print the result.
    Sql {
        /// The statement.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Run as this user (roles from the users file and the policy) instead of the local
        /// operator, who has the `admin` role.
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// Access policy tools.
    Policy {
        /// Policy action.
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Serve the lakehouse over the PostgreSQL wire protocol and Arrow Flight SQL.
    Serve {
        /// Listen address for PostgreSQL clients (default 127.0.0.1:15432).
        #[arg(long, env = "RXGATE_PG_LISTEN")]
        pg_listen: Option<String>,
        /// Listen address for Flight SQL clients (default 127.0.0.1:50051; port 0 picks one).
        #[arg(long, env = "RXGATE_FLIGHT_LISTEN")]
        flight_listen: Option<String>,
        /// Listen address of the operations HTTP listener: probes, metrics, console
        /// (default 127.0.0.1:8080; "0" turns it off; port 0 picks one).
        #[arg(long, env = "RXGATE_HTTP_LISTEN")]
        http_listen: Option<String>,
    },
    /// One command on a fresh machine: sample data (scale 0.1) if missing, the pipeline, then serve.
    Demo {
        /// Scale of the sample data generated when none exists.
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Listen address for PostgreSQL clients (default 127.0.0.1:15432).
        #[arg(long, env = "RXGATE_PG_LISTEN")]
        pg_listen: Option<String>,
        /// Listen address for Flight SQL clients (default 127.0.0.1:50051; port 0 picks one).
        #[arg(long, env = "RXGATE_FLIGHT_LISTEN")]
        flight_listen: Option<String>,
        /// Listen address of the operations HTTP listener: probes, metrics, console
        /// (default 127.0.0.1:8080; "0" turns it off; port 0 picks one).
        #[arg(long, env = "RXGATE_HTTP_LISTEN")]
        http_listen: Option<String>,
        /// Stop after the pipeline instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Manage the users who may log in (SCRAM-SHA-256 verifiers in the users file).
    User {
        /// User action.
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Data lifecycle of the tables whose definitions have a `[table.lifecycle]`: archive,
    /// purge (with proof), snapshot expiry and compaction.
    Lifecycle {
        /// Lifecycle action.
        #[command(subcommand)]
        action: LifecycleCommand,
    },
    /// Backups of the lakehouse: consistent, incremental, verifiable; and their restore.
    ///
    /// A backup holds every Iceberg table (metadata, manifest lists, manifests and data files
    /// of its retained snapshots), the namespaces, the views, the Hive external table
    /// DEFINITIONS and a copy of the policy file. External tables' own files belong to other
    /// tools and are NOT copied.
    Backup {
        /// Backup action.
        #[command(subcommand)]
        action: BackupCommand,
    },
    /// TLS certificates.
    Cert {
        /// Certificate action.
        #[command(subcommand)]
        action: CertCommand,
    },
}

impl Command {
    /// Whether the command runs a server (and so logs INFO by default): `serve`, and `demo`
    /// unless `--no-serve`.
    pub fn serves(&self) -> bool {
        matches!(self, Command::Serve { .. } | Command::Demo { no_serve: false, .. })
    }
}

/// User subcommands. Passwords are asked on the terminal, or read from stdin with
/// --password-stdin; only a SCRAM-SHA-256 verifier is stored.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the plan a statement runs as for a user (after the policy rewrite), with the
    /// masks and row filters applied. Nothing is executed.
    Check {
        /// The user whose view to check (roles from the users file and the policy).
        #[arg(long)]
        user: String,
        /// The statement.
        query: String,
    },
}

/// `rxgate user …` actions.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// User name (letters, digits, _ . - @; a letter or _ first).
        name: String,
        /// A role granted to the user (repeatable); it must be a role of the policy in force.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Accept roles the policy does not define (yet): such a role grants nothing.
        #[arg(long)]
        force: bool,
        /// Sessions this user may hold at once (default: [auth] max_connections_per_user; 0 locks the user out).
        #[arg(long)]
        max_connections: Option<u32>,
        /// Read the password from stdin (one line) instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password.
    Passwd {
        /// User name.
        name: String,
        /// Read the password from stdin (one line) instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Remove {
        /// User name.
        name: String,
    },
    /// List users and their roles (never passwords or verifiers).
    List,
}

/// Certificate subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a local development CA and a server certificate signed by it
    /// (ca.crt, ca.key, server.crt, server.key). For development only.
    Dev {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Names and addresses the server certificate is valid for (repeatable).
        #[arg(long = "host", value_name = "HOST", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// Validity of the server certificate in days (the CA gets ten times as long).
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace existing files in --out.
        #[arg(long)]
        force: bool,
    },
}

/// `rxgate backup …` actions. URL: a directory (path or file://), gs://bucket/prefix or
/// s3://bucket/prefix, reached with the `[storage]` settings.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup: one consistent cut of the catalog (a single read transaction: writers
    /// are not blocked), then the files of every Iceberg table not already in the target
    /// (same name, size and checksum), then the manifest, written last. External tables'
    /// data files are not copied, only their definitions and partitions.
    Create {
        /// Target URL.
        #[arg(long)]
        to: String,
        /// Label (letters, digits, . _ -; default: the time, YYYYMMDDTHHMMSSmmmZ).
        #[arg(long)]
        label: Option<String>,
        /// Only each table's current snapshot (no time travel to older snapshots after a
        /// restore).
        #[arg(long)]
        current_only: bool,
        /// Also keep the users file (it holds SCRAM verifiers: protect the target).
        #[arg(long)]
        include_users: bool,
        /// Print the summary as one JSON line on stdout.
        #[arg(long)]
        json: bool,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the complete backups (those with a manifest) in URL, oldest first.
    List {
        /// Target URL.
        url: String,
        /// One JSON object per backup.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every file of a backup (default: of every backup) and check sizes and
    /// checksums against its manifest; each missing or corrupted file is named, and the
    /// exit status is non-zero.
    Verify {
        /// Target URL.
        url: String,
        /// Only this backup.
        #[arg(long)]
        label: Option<String>,
        /// One JSON object per backup.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into this catalog and warehouse (empty, or the same ones). Every file
    /// is verified before anything is registered; a damaged backup restores nothing. When
    /// the warehouse differs from the backup's, paths inside the metadata, manifest lists and
    /// manifests are rewritten.
    Restore {
        /// Target URL holding the backup.
        #[arg(long)]
        from: String,
        /// The backup (default: the newest complete one).
        #[arg(long, conflicts_with = "as_of")]
        label: Option<String>,
        /// The newest backup whose cut is not after this time (RFC 3339, "YYYY-MM-DD
        /// HH:MM:SS" UTC, or YYYY-MM-DD for the end of that day, UTC).
        #[arg(long)]
        as_of: Option<String>,
        /// Only these tables, external tables or views (db.t, comma-separated or repeated).
        #[arg(long)]
        tables: Vec<String>,
        /// Overwrite tables, external tables and views that exist.
        #[arg(long)]
        replace: bool,
        /// Write the backed-up policy (and users) file into this directory.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Print the summary as one JSON line on stdout.
        #[arg(long)]
        json: bool,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Keep the newest N complete backups; remove the others and every file no kept backup
    /// references.
    Prune {
        /// Target URL.
        url: String,
        /// How many backups to keep.
        #[arg(long)]
        keep_last: usize,
        /// Print the summary as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

/// What a lifecycle command looks at.
#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    /// Only this table (`db.table`).
    #[arg(long)]
    pub table: Option<String>,
    /// The day the ages are counted from (YYYY-MM-DD; default today, UTC).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Table definitions (a directory or file of *.toml); default `[lifecycle] definitions`,
    /// else the built-in ones.
    #[arg(long)]
    pub definitions: Option<PathBuf>,
}

/// Lifecycle subcommands.
#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Print, per table, what a run would archive, purge, expire and compact (files, rows,
    /// bytes).
    Plan(LifecycleArgs),
    /// Carry it out (under the catalog's lifecycle lock), with a summary per table.
    Run {
        /// Which tables, as of when.
        #[command(flatten)]
        args: LifecycleArgs,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Catalog subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Create or update the tables defined in a directory (or file) of *.toml definitions,
    /// or, without PATH, the built-in definitions (the pipeline's tables).
    Apply {
        /// Directory (or file) of definitions; a relative path is taken from the working
        /// directory. Default: the built-in definitions, wherever rxgate runs.
        path: Option<PathBuf>,
    },
    /// List namespaces and tables (says so when there are none).
    List,
    /// The table's snapshots (the SQL metadata table `db."t$snapshots"`).
    Snapshots(InspectArgs),
    /// The table's current-snapshot history (`db."t$history"`).
    History(InspectArgs),
    /// The table's live data files (`db."t$files"`).
    Files(InspectArgs),
    /// The table's manifests (`db."t$manifests"`).
    Manifests(InspectArgs),
    /// The table's partitions (`db."t$partitions"`).
    Partitions(InspectArgs),
    /// Make an older snapshot current again (`CALL system.rollback_to_snapshot`).
    Rollback {
        /// `db.table`.
        table: String,
        /// The snapshot (an ancestor of the current one, unless --set-current).
        #[arg(required_unless_present = "to_timestamp")]
        snapshot_id: Option<i64>,
        /// Any snapshot of the table, not only an ancestor (`system.set_current_snapshot`).
        #[arg(long)]
        set_current: bool,
        /// Roll back to the snapshot current at this time (`system.rollback_to_timestamp`).
        #[arg(long, conflicts_with = "snapshot_id")]
        to_timestamp: Option<String>,
    },
    /// Schema or partition evolution: `rxgate catalog alter health.t "ADD COLUMN note string"`
    /// (any `ALTER TABLE` clause rxgate runs: ADD|RENAME|DROP COLUMN, ADD|DROP PARTITION FIELD).
    Alter {
        /// `db.table`.
        table: String,
        /// The clause after `ALTER TABLE db.table`.
        clause: String,
    },
}

/// A table whose Iceberg metadata to print.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// `db.table`.
    pub table: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Ingest subcommands.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Prescriber-drug CSV (seed or current CMS layout, detected from the header).
    Prescribers(IngestArgs),
    /// US cities Parquet (simplemaps layout).
    Cities(IngestArgs),
}

/// Arguments shared by ingest commands.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// A file, or a directory of files: a local path or a gs://, s3://, hdfs:// location.
    pub path: String,
    /// The delivery this data is (YYYY-MM-DD); re-ingesting a delivery replaces it.
    #[arg(long)]
    pub delivery_date: chrono::NaiveDate,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Pipeline subcommands.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// cities → prescribers → city report → top prescribers, skipping committed steps.
    Run {
        /// Raw-data directory with prescribers/ and cities/: a local path or a gs://, s3://,
        /// hdfs:// location.
        #[arg(long)]
        input: String,
        /// The delivery (YYYY-MM-DD).
        #[arg(long)]
        delivery_date: chrono::NaiveDate,
        /// Re-run every step even if already committed.
        #[arg(long)]
        force: bool,
        /// Table definitions to apply first: a directory (or file) of *.toml, like `catalog
        /// apply PATH`. Default: the built-in definitions, wherever rxgate runs.
        #[arg(long)]
        definitions: Option<PathBuf>,
        /// Print the report as one JSON line.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

/// Raw prescriber layouts for datagen.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    /// The seed project's layout.
    Seed,
    /// The current CMS public-use file layout.
    Cms,
}

/// Output formats of `rxgate sql`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned table.
    Table,
    /// CSV with a header; NULL is empty.
    Csv,
    /// One JSON object per line.
    Json,
}

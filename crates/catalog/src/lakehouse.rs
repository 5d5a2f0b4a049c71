//! Opening the Iceberg SQL catalog and the connection used for our own commits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use std::time::{Duration, Instant};

use rxgate_common::{redact_uri, Error, Result, StatusCode};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

use crate::storage::{ObjectStorageFactory, StoreRegistry};
use crate::table_cache::TableCache;
use crate::LakehouseConfig;

/// An open lakehouse: the Iceberg catalog plus a pool on the same catalog database, used to
/// commit snapshots iceberg-rust cannot produce itself (partition replacement).
#[derive(Clone)]
pub struct Lakehouse {
    catalog: Arc<dyn Catalog>,
    pool: AnyPool,
    config: LakehouseConfig,
    tables: Arc<TableCache>,
    /// Hive-style external tables, kept in the same database (external/).
    external: Arc<crate::external::ExternalCatalog>,
    /// Views, kept in the same database (views.rs).
    views: Arc<crate::views::ViewCatalog>,
    storage: Arc<StoreRegistry>,
    /// Schema/table DDL run by this process (see [`Lakehouse::ddl_version`]).
    ddl_version: Arc<std::sync::atomic::AtomicU64>,
    /// The shortest orphan window accepted, in ms (see [`Lakehouse::set_min_orphan_age`]).
    min_orphan_age_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Lakehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lakehouse").field("config", &self.config).finish()
    }
}

impl Lakehouse {
    /// Opens (creating if needed) the catalog database and the warehouse.
    pub async fn open(config: &LakehouseConfig) -> Result<Self> {
        let mut config = config.clone();
        let bind_style = if config.is_postgres() {
            SqlBindStyle::DollarNumeric
        } else {
            let path = config.uri.strip_prefix("sqlite:").ok_or_else(|| {
                Error::invalid(format!(
                    "unsupported catalog uri {} (sqlite:PATH, postgres:// or postgresql://)",
                    redact_uri(&config.uri)
                ))
            })?;
            let path = path.trim_start_matches("//").split('?').next().unwrap_or_default();
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::new(
                            StatusCode::CatalogUnavailable,
                            format!("cannot create catalog directory {}: {e}", parent.display()),
                        )
                    })?;
                }
            }
            if !config.uri.contains('?') {
                config.uri = format!("sqlite:{path}?mode=rwc");
            }
            SqlBindStyle::QMark
        };
        config.warehouse = warehouse_url(&config.warehouse)?;
        // One object-store layer for the catalog's FileIO, DataFusion and the ingest readers.
        let storage = Arc::new(StoreRegistry::new(config.storage.clone()));
        storage.resolve(&config.warehouse)?;
        sqlx::any::install_default_drivers();
        // One direct connection first, bounded by connect_timeout_secs: it fails fast and says
        // what failed (refused, login, missing database), where a pool retries for 30 s and
        // then only says that it timed out.
        probe(&config.uri, Duration::from_secs(config.connect_timeout_secs.max(1))).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&config.uri)
            .await
            .map_err(|e| catalog_db_error(&config.uri, &e))?;
        // On PostgreSQL, loading the SQL catalog runs `CREATE TABLE IF NOT EXISTS` for its two
        // tables; two processes doing that at once on a fresh database fail with a unique
        // violation in pg_type. Gateways and ingests starting together take turns under a
        // transaction-scoped advisory lock (released when the transaction ends, error or not).
        let init_lock = if config.is_postgres() {
            let mut tx = pool.begin().await.map_err(|e| catalog_db_error(&config.uri, &e))?;
            sqlx::query(PG_INIT_LOCK).execute(&mut *tx).await.map_err(|e| catalog_db_error(&config.uri, &e))?;
            Some(tx)
        } else {
            None
        };
        let catalog = SqlCatalogBuilder::default()
            .uri(config.uri.clone())
            .warehouse_location(config.warehouse.clone())
            .sql_bind_style(bind_style)
            .with_storage_factory(Arc::new(ObjectStorageFactory::new(storage.clone())))
            .load(config.name.clone(), HashMap::new())
            .await
            .map_err(|e| catalog_chain_error(&config.uri, &e))?;
        if let Some(tx) = init_lock {
            tx.commit().await.map_err(|e| catalog_db_error(&config.uri, &e))?;
        }
        if !config.is_postgres() {
            // Several processes may commit to one SQLite catalog; wait for the lock.
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&pool)
                .await
                .map_err(|e| catalog_db_error(&config.uri, &e))?;
        }
        let external =
            Arc::new(crate::external::ExternalCatalog::new(pool.clone(), config.is_postgres(), &config.name));
        let views = Arc::new(crate::views::ViewCatalog::new(pool.clone(), config.is_postgres(), &config.name));
        Ok(Self {
            catalog: Arc::new(catalog),
            pool,
            config,
            tables: Arc::default(),
            external,
            views,
            storage,
            ddl_version: Arc::default(),
            min_orphan_age_ms: Arc::new(std::sync::atomic::AtomicI64::new(
                crate::maintenance::orphans::DEFAULT_ORPHAN_AGE_MS,
            )),
        })
    }

    /// The Iceberg catalog.
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }

    /// The resolved configuration (warehouse as a URL).
    pub fn config(&self) -> &LakehouseConfig {
        &self.config
    }

    /// The registry of Hive-style external tables.
    pub fn external(&self) -> &Arc<crate::external::ExternalCatalog> {
        &self.external
    }

    /// Sets the shortest window `remove_orphan_files` accepts (`[maintenance]
    /// min_orphan_age_secs`; default 7 days).
    pub fn set_min_orphan_age(&self, age: std::time::Duration) {
        let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.min_orphan_age_ms.store(ms, std::sync::atomic::Ordering::Release);
    }

    /// The shortest window `remove_orphan_files` accepts, in ms.
    pub fn min_orphan_age_ms(&self) -> i64 {
        self.min_orphan_age_ms.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The registry of views.
    pub fn views(&self) -> &Arc<crate::views::ViewCatalog> {
        &self.views
    }

    /// The object stores (warehouse, inputs) with their request counters.
    pub fn storage(&self) -> &Arc<StoreRegistry> {
        &self.storage
    }

    /// An Iceberg FileIO over the lakehouse's storage registry (tables being created).
    pub fn file_io(&self) -> iceberg::io::FileIO {
        iceberg::io::FileIOBuilder::new(Arc::new(ObjectStorageFactory::new(self.storage.clone()))).build()
    }

    /// Counts the schema and table DDL this process ran; sessions list the catalog again when
    /// it moved.
    pub fn ddl_version(&self) -> u64 {
        self.ddl_version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that schema, table or view DDL ran here: sessions list the catalog again.
    pub fn bump_ddl_version(&self) {
        self.ddl_version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn table_cache(&self) -> &TableCache {
        &self.tables
    }

    /// Readiness: a trivial query on the catalog database (`SELECT 1` on the pool, which
    /// replaces a dead connection first). The caller bounds the wait.
    pub async fn check_catalog(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| catalog_db_error(&self.config.uri, &e))
    }

    /// Readiness: one listing of the warehouse root through its object store (one request).
    /// The caller bounds the wait.
    pub async fn check_warehouse(&self) -> Result<()> {
        let (store, path) = self.storage.resolve(&self.config.warehouse)?;
        let prefix = (!path.as_ref().is_empty()).then_some(&path);
        object_store::ObjectStore::list_with_delimiter(store.as_ref(), prefix).await.map(|_| ()).map_err(|e| {
            Error::new(
                StatusCode::StorageUnavailable,
                format!("warehouse {}: {}", redact_uri(&self.config.warehouse), redact_uri(&e.to_string())),
            )
        })
    }

    /// Loads a table by `namespace.table` name.
    pub async fn load_table(&self, name: &str) -> Result<Table> {
        let ident = parse_ident(name)?;
        self.catalog.load_table(&ident).await.map_err(|e| {
            let e = Error::from(e);
            if e.code == StatusCode::TableNotFound {
                Error::new(
                    StatusCode::TableNotFound,
                    format!("table {name} does not exist; run `rxgate catalog apply catalog/`"),
                )
            } else {
                e
            }
        })
    }

    /// Lists the namespaces (top level only).
    pub async fn namespaces(&self) -> Result<Vec<String>> {
        let list = self.catalog.list_namespaces(None).await?;
        Ok(list.into_iter().map(|n| n.join(".")).collect())
    }

    /// Lists the tables of a namespace.
    pub async fn tables(&self, namespace: &str) -> Result<Vec<String>> {
        let ns = NamespaceIdent::from_strs(namespace.split('.'))?;
        let list = self.catalog.list_tables(&ns).await?;
        Ok(list.into_iter().map(|t| t.name().to_string()).collect())
    }
}

/// Serialises catalog initialisation across processes on PostgreSQL (a fixed advisory lock
/// key, "rxgate-catalog-init"; the count(*) wrapper gives the statement a decodable column).
const PG_INIT_LOCK: &str = "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(7278676174745031500)) AS l";

/// Parses `namespace.table` into an Iceberg identifier.
pub(crate) fn parse_ident(name: &str) -> Result<TableIdent> {
    let (ns, table) =
        name.rsplit_once('.').ok_or_else(|| Error::invalid(format!("table name {name} must be namespace.table")))?;
    Ok(TableIdent::new(NamespaceIdent::from_strs(ns.split('.'))?, table.to_string()))
}

/// Connects once to the catalog database, retrying a refused connection (a database still
/// starting) until `timeout`; any other failure is reported at once, classified.
async fn probe(uri: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, AnyConnection::connect(uri)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(e)) if retryable(&e) && Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Ok(Err(e)) => {
                let retried = retryable(&e).then_some(timeout.as_secs());
                return Err(catalog_db_error_retried(uri, &e, retried));
            }
            Err(_) => {
                return Err(Error::new(
                    StatusCode::CatalogUnavailable,
                    format!(
                        "catalog database {} unreachable: no answer within {} s ([catalog] connect_timeout_secs)",
                        redact_uri(uri),
                        timeout.as_secs()
                    ),
                ))
            }
        }
    }
}

/// A refused connection, or a server that says it is starting: worth another try.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Database(db) => db.is_transient_in_connect_phase(),
        _ => false,
    }
}

/// The user and database named by a catalog URI, for hints (`rxgate`, `rxgate_catalog`).
fn uri_role_and_database(uri: &str) -> (String, String) {
    let parsed = url::Url::parse(uri).ok();
    let user = parsed.as_ref().map(|u| u.username().to_string()).filter(|u| !u.is_empty());
    let db = parsed.as_ref().map(|u| u.path().trim_start_matches('/').to_string()).filter(|d| !d.is_empty());
    (user.unwrap_or_else(|| "<role>".into()), db.unwrap_or_else(|| "<database>".into()))
}

/// An error of the catalog database, saying what failed: unreachable (nothing listens, no
/// answer), the login refused, the database missing, or the database refusing an operation
/// (permission denied: the connection itself succeeded). The URI's password is redacted.
pub(crate) fn catalog_db_error(uri: &str, e: &sqlx::Error) -> Error {
    catalog_db_error_retried(uri, e, None)
}

/// [`catalog_db_error`] of a connection retried for `retried` seconds.
fn catalog_db_error_retried(uri: &str, e: &sqlx::Error, retried: Option<u64>) -> Error {
    // The message says what to do; the server log (under the error id) gets sqlx's chain.
    classify_catalog_db_error(uri, e, retried).with_source(e)
}

fn classify_catalog_db_error(uri: &str, e: &sqlx::Error, retried: Option<u64>) -> Error {
    let shown = redact_uri(uri);
    let retried = retried.map(|s| format!(", retried for {s} s ([catalog] connect_timeout_secs)")).unwrap_or_default();
    let (role, db) = uri_role_and_database(uri);
    let unavailable =
        |what: String| Error::new(StatusCode::CatalogUnavailable, format!("catalog database {shown} {what}"));
    match e {
        sqlx::Error::Database(d) => {
            let msg = d.message().to_string();
            match d.code().as_deref() {
                Some("28P01") | Some("28000") => unavailable(format!(
                    "refused the login: {msg} (check the user and password of [catalog] uri / RXGATE_CATALOG_URI)"
                )),
                Some("3D000") => unavailable(format!("does not exist: {msg} (create it: createdb -O {role} {db})")),
                Some(code) if code == "42501" || (code.starts_with("42") && msg.contains("permission denied")) => {
                    refused(&shown, &msg, &role, &db)
                }
                Some("57P03") => unavailable(format!("unreachable: {msg}{retried}")),
                _ => unavailable(format!("error: {msg}")),
            }
        }
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            let at = url::Url::parse(uri)
                .ok()
                .and_then(|u| Some(format!(" at {}:{}", u.host_str()?, u.port().unwrap_or(5432))))
                .unwrap_or_default();
            unavailable(format!(
                "unreachable: connection refused{at}{retried}; is the database server running and listening there?"
            ))
        }
        sqlx::Error::Io(io) => unavailable(format!("unreachable: {io}")),
        sqlx::Error::Tls(t) => unavailable(format!("unreachable: TLS failed: {t}")),
        sqlx::Error::PoolTimedOut => unavailable("unreachable: no connection within the pool's timeout".into()),
        sqlx::Error::Configuration(c) => Error::invalid(format!("bad catalog uri {shown}: {c}")),
        other => unavailable(format!("error: {}", other.to_string().lines().next().unwrap_or_default())),
    }
}

/// "permission denied …" from the catalog database: the connection worked, the role may not
/// create or read the catalog's tables (PostgreSQL 15 grants no CREATE on schema public to
/// roles other than the database's owner).
fn refused(shown: &str, msg: &str, role: &str, db: &str) -> Error {
    Error::new(
        StatusCode::CatalogUnavailable,
        format!(
            "catalog database {shown} refused: {msg} (grant the role ownership of the database: \
             ALTER DATABASE {db} OWNER TO {role})"
        ),
    )
}

/// An error from opening the Iceberg SQL catalog: classified by the sqlx error in its source
/// chain when there is one.
fn catalog_chain_error(uri: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(sqlx_error) = err.downcast_ref::<sqlx::Error>() {
            return catalog_db_error(uri, sqlx_error);
        }
        cur = err.source();
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    if let Some(at) = first.find("permission denied") {
        let (role, db) = uri_role_and_database(uri);
        return refused(&redact_uri(uri), &first[at..], &role, &db);
    }
    Error::new(StatusCode::CatalogUnavailable, format!("catalog database {} error: {first}", redact_uri(uri)))
}

/// Turns a local path into an absolute `file://` URL; object-store URLs pass through.
fn warehouse_url(warehouse: &str) -> Result<String> {
    if warehouse.contains("://") {
        return Ok(warehouse.trim_end_matches('/').to_string());
    }
    let path = Path::new(warehouse);
    std::fs::create_dir_all(path).map_err(|e| {
        Error::new(StatusCode::StorageUnavailable, format!("cannot create warehouse {}: {e}", redact_uri(warehouse)))
    })?;
    let abs = std::fs::canonicalize(path)?;
    Ok(format!("file://{}", abs.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_errors_say_what_failed_without_the_password() {
        let uri = "postgres://rxgate:hunter2@db.example:6543/rxgate_catalog";
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = catalog_db_error_retried(uri, &sqlx::Error::Io(refused), Some(5));
        assert_eq!(e.code, StatusCode::CatalogUnavailable);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains("postgres://rxgate:***@db.example:6543/rxgate_catalog"), "{}", e.message);
        assert!(e.message.contains("connection refused at db.example:6543, retried for 5 s"), "{}", e.message);
        let e = catalog_chain_error(
            uri,
            &std::io::Error::other("error returned from database: permission denied for schema public"),
        );
        assert!(e.message.contains("refused: permission denied for schema public (grant the role ownership of the database: ALTER DATABASE rxgate_catalog OWNER TO rxgate)"), "{}", e.message);
        assert!(!e.message.contains("unreachable") && !e.message.contains("hunter2"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_closed_port_fails_within_the_connect_timeout() {
        sqlx::any::install_default_drivers();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = format!("postgres://rxgate:hunter2@127.0.0.1:{port}/c");
        let started = Instant::now();
        let e = probe(&uri, Duration::from_secs(1)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(e.message.contains("connection refused") && !e.message.contains("hunter2"), "{}", e.message);
    }
}

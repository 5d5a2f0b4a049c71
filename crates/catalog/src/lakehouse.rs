//! Opening the Iceberg SQL catalog and the connection used for our own commits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use rxgate_common::{Error, Result, StatusCode};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::table_cache::TableCache;
use crate::storage::{ObjectStorageFactory, StoreRegistry};
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
    storage: Arc<StoreRegistry>,
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
            let path = config
                .uri
                .strip_prefix("sqlite:")
                .ok_or_else(|| Error::invalid(format!("unsupported catalog uri {}", config.uri)))?;
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
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&config.uri)
            .await
            .map_err(|e| unavailable(&config.uri, e))?;
        // On PostgreSQL, loading the SQL catalog runs `CREATE TABLE IF NOT EXISTS` for its two
        // tables; two processes doing that at once on a fresh database fail with a unique
        // violation in pg_type. Gateways and ingests starting together take turns under a
        // transaction-scoped advisory lock (released when the transaction ends, error or not).
        let init_lock = if config.is_postgres() {
            let mut tx = pool.begin().await.map_err(|e| unavailable(&config.uri, e))?;
            sqlx::query(PG_INIT_LOCK).execute(&mut *tx).await.map_err(|e| unavailable(&config.uri, e))?;
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
            .map_err(|e| unavailable(&config.uri, e))?;
        if let Some(tx) = init_lock {
            tx.commit().await.map_err(|e| unavailable(&config.uri, e))?;
        }
        if !config.is_postgres() {
            // Several processes may commit to one SQLite catalog; wait for the lock.
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&pool)
                .await
                .map_err(|e| unavailable(&config.uri, e))?;
        }
        let external = Arc::new(crate::external::ExternalCatalog::new(pool.clone(), config.is_postgres(), &config.name));
        Ok(Self { catalog: Arc::new(catalog), pool, config, tables: Arc::default(), external, storage })
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

    /// The object stores (warehouse, inputs) with their request counters.
    pub fn storage(&self) -> &Arc<StoreRegistry> {
        &self.storage
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn table_cache(&self) -> &TableCache {
        &self.tables
    }

    /// Loads a table by `namespace.table` name.
    pub async fn load_table(&self, name: &str) -> Result<Table> {
        let ident = parse_ident(name)?;
        self.catalog.load_table(&ident).await.map_err(|e| {
            let e = Error::from(e);
            if e.code == StatusCode::TableNotFound {
                Error::new(StatusCode::TableNotFound, format!("table {name} does not exist; run `rxgate catalog apply catalog/`"))
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
    let (ns, table) = name
        .rsplit_once('.')
        .ok_or_else(|| Error::invalid(format!("table name {name} must be namespace.table")))?;
    Ok(TableIdent::new(NamespaceIdent::from_strs(ns.split('.'))?, table.to_string()))
}

fn unavailable(uri: &str, e: impl std::fmt::Display) -> Error {
    Error::new(StatusCode::CatalogUnavailable, format!("catalog {uri} unreachable: {e}"))
}

/// Turns a local path into an absolute `file://` URL; object-store URLs pass through.
fn warehouse_url(warehouse: &str) -> Result<String> {
    if warehouse.contains("://") {
        return Ok(warehouse.trim_end_matches('/').to_string());
    }
    let path = Path::new(warehouse);
    std::fs::create_dir_all(path).map_err(|e| {
        Error::new(StatusCode::StorageUnavailable, format!("cannot create warehouse {warehouse}: {e}"))
    })?;
    let abs = std::fs::canonicalize(path)?;
    Ok(format!("file://{}", abs.display()))
}

//! The DataFusion view of the lakehouse: one catalog whose schemas are the Iceberg namespaces,
//! plus any schemas the engine registers beside them (system, pg_catalog, …).
//!
//! Unlike `IcebergCatalogProvider`, it accepts `register_schema`, and it loads a table's
//! metadata when a query plans against it, so every query reads the latest committed snapshot
//! and one table reference reads one snapshot.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_common::Result;

use crate::{Lakehouse, LakehouseTable};

/// DataFusion catalog over a [`Lakehouse`]; build one per session.
#[derive(Debug)]
pub struct LakehouseCatalogProvider {
    lake: Lakehouse,
    lakehouse: RwLock<HashMap<String, Arc<NamespaceSchema>>>,
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
    /// The lakehouse's DDL version the listing was made at ([`Lakehouse::ddl_version`]).
    listed_at: AtomicU64,
    /// The session's open transaction: tables it created or changed (as it sees them) and
    /// dropped (`None`), read before the catalog.
    overlay: Overlay,
}

/// Tables as one session's open transaction sees them.
type Overlay = Arc<RwLock<HashMap<TableIdent, Option<iceberg::table::Table>>>>;

impl LakehouseCatalogProvider {
    /// Lists the namespaces and their tables now; table metadata is loaded per query.
    pub async fn try_new(lake: &Lakehouse) -> Result<Self> {
        let listed_at = lake.ddl_version();
        let lakehouse = Self::list(lake).await?;
        Ok(Self {
            lake: lake.clone(),
            lakehouse: RwLock::new(lakehouse),
            extra: RwLock::new(HashMap::new()),
            listed_at: AtomicU64::new(listed_at),
            overlay: Overlay::default(),
        })
    }

    /// Shows this session `table` as its open transaction left it (`None`: dropped).
    pub fn stage(&self, ident: TableIdent, table: Option<iceberg::table::Table>) {
        self.overlay.write().expect("overlay lock").insert(ident, table);
    }

    /// The transaction ended: the catalog's tables again.
    pub fn clear_staged(&self) {
        self.overlay.write().expect("overlay lock").clear();
    }

    async fn list(lake: &Lakehouse) -> Result<HashMap<String, Arc<NamespaceSchema>>> {
        // External-table names as the catalog database holds them now; a failure keeps the
        // names cached before (the tables themselves are read when a query resolves them).
        if let Err(e) = lake.external().refresh().await {
            tracing::warn!(error = %e.message, "external tables not refreshed");
        }
        if let Err(e) = lake.views().refresh().await {
            tracing::warn!(error = %e.message, "views not refreshed");
        }
        let mut lakehouse = HashMap::new();
        for ns in lake.namespaces().await? {
            let tables = lake.tables(&ns).await?;
            let ident = NamespaceIdent::from_strs(ns.split('.'))?;
            lakehouse.insert(ns, Arc::new(NamespaceSchema { lake: lake.clone(), namespace: ident, tables }));
        }
        Ok(lakehouse)
    }

    /// Whether a schema or table was created, dropped or renamed in this process since the
    /// listing was made.
    pub fn is_stale(&self) -> bool {
        self.listed_at.load(Ordering::Acquire) != self.lake.ddl_version()
    }

    /// Lists the namespaces and tables again (after DDL).
    pub async fn refresh(&self) -> Result<()> {
        let version = self.lake.ddl_version();
        let listed = Self::list(&self.lake).await?;
        *self.lakehouse.write().expect("lakehouse lock") = listed;
        self.listed_at.store(version, Ordering::Release);
        Ok(())
    }

    /// Whether `name` is a lakehouse namespace (governed by the policy), including one
    /// created since the session opened to hold an external table.
    pub fn is_namespace(&self, name: &str) -> bool {
        self.lakehouse.read().expect("lakehouse lock").contains_key(name)
            || self.lake.external().namespaces().iter().any(|n| n == name)
    }

    fn namespace(&self, name: &str) -> Option<Arc<NamespaceSchema>> {
        self.lakehouse.read().expect("lakehouse lock").get(name).cloned()
    }
}

impl CatalogProvider for LakehouseCatalogProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lakehouse.read().expect("lakehouse lock").keys().cloned().collect();
        names.extend(self.extra.read().expect("schema lock").keys().cloned());
        names.extend(self.lake.external().namespaces());
        names.sort();
        names.dedup();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.extra.read().expect("schema lock").get(name) {
            return Some(s.clone());
        }
        if let Some(s) = self.namespace(name) {
            return Some(Arc::new(StagedSchema { inner: s, overlay: self.overlay.clone() }) as Arc<dyn SchemaProvider>);
        }
        // A namespace created since the session opened, for an external table.
        let ident = NamespaceIdent::from_strs(name.split('.')).ok()?;
        self.is_namespace(name).then(|| {
            Arc::new(NamespaceSchema { lake: self.lake.clone(), namespace: ident, tables: vec![] })
                as Arc<dyn SchemaProvider>
        })
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        if self.namespace(name).is_some() {
            return Err(DataFusionError::Plan(format!("schema {name} is an Iceberg namespace")));
        }
        Ok(self.extra.write().expect("schema lock").insert(name.to_string(), schema))
    }
}

/// One Iceberg namespace as a DataFusion schema.
#[derive(Debug)]
struct NamespaceSchema {
    lake: Lakehouse,
    namespace: NamespaceIdent,
    tables: Vec<String>,
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let namespace = self.namespace.join(".");
        let mut names = self.tables.clone();
        names.extend(self.lake.external().names(&namespace));
        names.extend(self.lake.views().names(&namespace));
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        // `t$snapshots`, `t@v=<id>`, …: a metadata table or a time-travelled view of t.
        if let (base, Some(view)) = crate::iceberg_admin::split_table_name(name) {
            if !self.tables.iter().any(|t| t == base) {
                return Ok(None);
            }
            let ident = TableIdent::new(self.namespace.clone(), base.to_string());
            let table = self.lake.current_table(&ident).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            let cache = self.lake.storage().data_cache().clone();
            return crate::iceberg_admin::view_provider(table, view, cache).await.map(Some);
        }
        let ident = TableIdent::new(self.namespace.clone(), name.to_string());
        if !self.tables.iter().any(|t| t == name) {
            // Not an Iceberg table when the session listed them: an external table, a view,
            // one created since (by another session or gateway), or nothing.
            let namespace = self.namespace.join(".");
            let mut external = crate::external::table_provider(&self.lake, &namespace, name).await?;
            if external.is_none() {
                let view = self
                    .lake
                    .views()
                    .get(&namespace, name)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                external = view.map(|def| Arc::new(crate::views::StoredView::new(def)) as Arc<dyn TableProvider>);
            }
            let created = external.is_none()
                && self
                    .lake
                    .catalog()
                    .table_exists(&ident)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
            if !created {
                return Ok(external);
            }
        }
        let table = self.lake.current_table(&ident).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Read with the current schema, also after schema evolution (iceberg_admin).
        let table =
            crate::iceberg_admin::with_current_schema(table).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let cache = self.lake.storage().data_cache().clone();
        let provider =
            LakehouseTable::try_new(table, cache).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(provider)))
    }

    fn table_exist(&self, name: &str) -> bool {
        let namespace = self.namespace.join(".");
        self.tables.iter().any(|t| t == name)
            || self.lake.external().cached(&namespace, name).is_some()
            || self.lake.views().cached(&namespace, name).is_some()
    }
}

/// A namespace as the session's open transaction sees it: its staged tables first.
#[derive(Debug)]
struct StagedSchema {
    inner: Arc<NamespaceSchema>,
    overlay: Overlay,
}

impl StagedSchema {
    fn staged(&self, name: &str) -> Option<Option<iceberg::table::Table>> {
        let ident = TableIdent::new(self.inner.namespace.clone(), name.to_string());
        self.overlay.read().expect("overlay lock").get(&ident).cloned()
    }
}

#[async_trait]
impl SchemaProvider for StagedSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        for (ident, table) in self.overlay.read().expect("overlay lock").iter() {
            if ident.namespace() != &self.inner.namespace {
                continue;
            }
            match table {
                Some(_) if !names.contains(&ident.name().to_string()) => names.push(ident.name().to_string()),
                None => names.retain(|n| n != ident.name()),
                _ => {}
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.staged(name) {
            None => self.inner.table(name).await,
            Some(None) => Ok(None),
            Some(Some(table)) => {
                let cache = self.inner.lake.storage().data_cache().clone();
                let provider =
                    LakehouseTable::try_new(table, cache).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Some(Arc::new(provider)))
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        match self.staged(name) {
            None => self.inner.table_exist(name),
            Some(t) => t.is_some(),
        }
    }
}

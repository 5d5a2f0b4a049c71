//! Views: definitions kept in the catalog database (table `rxgate_views`, beside the Iceberg
//! SQL catalog's own tables), so every gateway sharing the database sees them and they survive
//! a restart.
//!
//! - [`ViewDef`]: the query as written (identifiers normalised), the output columns it had when
//!   it was created, its security (invoker's rights by default; definer's rights for views an
//!   administrator created `SECURITY DEFINER`), its owner and the schema its unqualified names
//!   resolve in.
//! - [`ViewCatalog`]: the registry, with a cache of the names for DataFusion's synchronous
//!   listings (refreshed when a session lists the catalog; definitions are read from the
//!   database when a query resolves a view, so another gateway's change shows at once).
//! - [`StoredView`]: what the lakehouse's DataFusion catalog hands out for a view. It is only
//!   a placeholder: the engine's secured catalog expands it (plans the query as the invoker or
//!   the definer) before any query can read it; scanning it directly is an error.
//!
//! The Iceberg view spec is not used: iceberg-rust 0.10's SQL catalog and pyiceberg 0.12's
//! `SqlCatalog` implement no view operations (pyiceberg's `list_views` raises
//! NotImplementedError), and rows of another kind in `iceberg_tables` would confuse the
//! catalogs that do not filter on `iceberg_type`.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use rxgate_common::{Error, Result, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

use crate::registry::{DefinitionTable, Definitions};

/// Whose rights a view's query runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewSecurity {
    /// The querying user's grants, masks and row filters apply to the tables beneath.
    Invoker,
    /// The owner's (an administrator's) grants apply beneath; the querying user needs a grant
    /// on the view only.
    Definer,
}

impl ViewSecurity {
    /// `INVOKER` / `DEFINER`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Invoker => "INVOKER",
            Self::Definer => "DEFINER",
        }
    }
}

/// An output column of a view: its name and Arrow type (as text) when the view was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewColumn {
    /// Column name.
    pub name: String,
    /// Arrow type, as `DataType`'s `Display` writes it.
    pub data_type: String,
}

/// The stored definition of one view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Schema (Iceberg namespace) it lives in.
    pub namespace: String,
    /// View name.
    pub name: String,
    /// The query, as written (after identifier normalisation).
    pub query: String,
    /// Output columns when created (the column list of `CREATE VIEW v (a, b)` or the query's).
    pub columns: Vec<ViewColumn>,
    /// Whose rights the query runs with.
    pub security: ViewSecurity,
    /// The user who created it.
    pub owner: String,
    /// The owner's login roles when it created the view (their grants are the policy's).
    #[serde(default)]
    pub owner_roles: Vec<String>,
    /// The schema unqualified names in the query resolve in (the creator's current schema).
    pub search_schema: String,
    /// `COMMENT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl ViewDef {
    /// `namespace.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The output schema recorded at creation (a type that no longer parses reads as text).
    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.parse::<DataType>().unwrap_or(DataType::Utf8), true))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// `CREATE VIEW …` text that recreates it (information_schema.views, SHOW CREATE TABLE).
    pub fn definition(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let security = match self.security {
            ViewSecurity::Definer => " SECURITY DEFINER",
            ViewSecurity::Invoker => "",
        };
        format!(
            "CREATE VIEW {}.{} ({}){security} AS {}",
            quote_ident(&self.namespace),
            quote_ident(&self.name),
            columns.join(", "),
            self.query
        )
    }
}

/// An identifier as PostgreSQL prints it: bare when lower-case and plain, else quoted.
fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

const CREATE_VIEWS: &str = "CREATE TABLE IF NOT EXISTS rxgate_views (
    catalog_name VARCHAR(255) NOT NULL,
    view_namespace VARCHAR(255) NOT NULL,
    view_name VARCHAR(255) NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (catalog_name, view_namespace, view_name))";

impl crate::registry::Definition for ViewDef {
    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

/// The view registry in the catalog database, and a cache of the definitions for the
/// synchronous listings. Shared by every session of a process.
pub struct ViewCatalog {
    defs: Definitions<ViewDef>,
}

impl std::fmt::Debug for ViewCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCatalog").field("catalog", &self.defs.catalog).finish()
    }
}

impl ViewCatalog {
    /// A registry on `pool` for the catalog `catalog` (the Iceberg SQL catalog's name).
    pub(crate) fn new(pool: AnyPool, postgres: bool, catalog: &str) -> Self {
        let kind = DefinitionTable {
            table: "rxgate_views",
            columns: ("view_namespace", "view_name"),
            what: "view",
            create: &[CREATE_VIEWS],
        };
        Self { defs: Definitions::new(pool, postgres, catalog, kind) }
    }

    /// Re-reads every definition from the database into the cache.
    pub async fn refresh(&self) -> Result<()> {
        self.defs.refresh().await
    }

    /// The cached view names of a namespace.
    pub fn names(&self, namespace: &str) -> Vec<String> {
        self.defs.names(namespace)
    }

    /// The cached definition of a view.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ViewDef>> {
        self.defs.cached(namespace, name)
    }

    /// The definition of a view, read from the database (the cache follows).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<ViewDef>>> {
        self.defs.get(namespace, name).await
    }

    /// Stores a definition; `replace` overwrites one of the same name (`CREATE OR REPLACE`).
    /// `false` when the view exists and `replace` is not set.
    pub async fn create(&self, def: &ViewDef, replace: bool) -> Result<bool> {
        self.defs.insert(def, replace).await
    }

    /// Removes a definition. `false` when it did not exist.
    pub async fn drop_view(&self, namespace: &str, name: &str) -> Result<bool> {
        self.defs.delete(namespace, name, &[]).await
    }

    /// The names of the views of a namespace, read from the database.
    pub async fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.defs.list(namespace).await
    }
}

/// A view as the lakehouse's DataFusion catalog hands it out: its stored definition and
/// recorded schema. The engine expands it before a query reads it; one that cannot be
/// expanded is handed out [`StoredView::failing`]: listed, an error when read.
#[derive(Debug)]
pub struct StoredView {
    def: Arc<ViewDef>,
    schema: SchemaRef,
    definition: String,
    /// Why it cannot be read (`None`: not expanded yet).
    error: Option<(StatusCode, String)>,
}

impl StoredView {
    /// The placeholder of `def`.
    pub fn new(def: Arc<ViewDef>) -> Self {
        let schema = def.schema();
        let definition = def.definition();
        Self { def, schema, definition, error: None }
    }

    /// `def`, which fails with `error` when read.
    pub fn failing(def: Arc<ViewDef>, error: &Error) -> Self {
        Self { error: Some((error.code, error.message.clone())), ..Self::new(def) }
    }

    /// The definition.
    pub fn def(&self) -> &Arc<ViewDef> {
        &self.def
    }
}

#[async_trait]
impl TableProvider for StoredView {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.definition)
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, datafusion::logical_expr::LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::External(Box::new(match &self.error {
            Some((code, message)) => Error::new(*code, message.clone()),
            None => Error::internal(format!("view {} was not expanded by the engine", self.def.qualified())),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> ViewDef {
        ViewDef {
            namespace: "health".into(),
            name: "State Totals".into(),
            query: "SELECT presc_state, count(*) FROM prescriber_drug GROUP BY presc_state".into(),
            columns: vec![
                ViewColumn { name: "presc_state".into(), data_type: DataType::Utf8View.to_string() },
                ViewColumn { name: "n".into(), data_type: DataType::Int64.to_string() },
                ViewColumn { name: "cost".into(), data_type: DataType::Decimal128(12, 2).to_string() },
            ],
            security: ViewSecurity::Definer,
            owner: "admin".into(),
            owner_roles: vec![],
            search_schema: "health".into(),
            comment: None,
        }
    }

    #[test]
    fn the_recorded_schema_reads_back_every_type() {
        let schema = def().schema();
        let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, vec![DataType::Utf8View, DataType::Int64, DataType::Decimal128(12, 2)]);
    }

    #[test]
    fn the_definition_quotes_what_postgres_would() {
        assert_eq!(
            def().definition(),
            "CREATE VIEW health.\"State Totals\" (presc_state, n, cost) SECURITY DEFINER AS \
             SELECT presc_state, count(*) FROM prescriber_drug GROUP BY presc_state"
        );
    }

    #[test]
    fn definitions_round_trip_through_json() {
        let text = serde_json::to_string(&def()).unwrap();
        assert!(text.contains("\"security\":\"definer\""), "{text}");
        assert_eq!(serde_json::from_str::<ViewDef>(&text).unwrap(), def());
    }
}

//! rxgate's PostgreSQL dialect layer: the catalog emulation the engine installs into every
//! session (`Engine::session` in rxgate-engine calls [`install`]):
//! the `pg_catalog` schema (beside the lakehouse namespaces in the session's catalog), the
//! functions clients call (`version()`, `current_schema()`, `format_type`, `has_*_privilege`,
//! `pg_get_*`, …) and the SQL rewrites that let DataFusion plan what drivers and BI tools send
//! (`'t'::regclass`, `pg_catalog.`-qualified functions, `COLLATE`, `OPERATOR(pg_catalog.~)`).
//!
//! Built on datafusion-pg-catalog 0.17: its static tables (pg_type, pg_proc, pg_am, … exported
//! from a real PostgreSQL), several of its functions and rewrite rules. The tables that describe
//! *this* session's objects — pg_namespace, pg_class, pg_attribute, pg_database, pg_roles,
//! pg_user, pg_settings — are ours: they share one OID map per session (so `regclass` casts,
//! joins and psql's `\d` agree), give `pg_catalog` its real OID 11 (so the static pg_type rows
//! join to it), and list only what the session's catalog shows.
//!
//! **Invariant:** the catalog tables are computed when a query executes, from the session's
//! own catalog, so they show exactly what that session may query.
//!
//! The crate never parses SQL text: the engine tokenizes and parses, and calls
//! [`replace_known_tokens`] on the tokens and [`rewrite`] on each statement. It also owns
//! the PostgreSQL session parameters ([`settings`]). It does not depend on rxgate-engine.

pub mod coerce;
mod functions;
pub mod recursive;
mod rewrite;
pub mod settings;
mod tables;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::error::Result as DfResult;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;

use crate::settings::SessionSettings;

pub use coerce::{parse_bool, UnknownLiteralPlanner};
pub use rewrite::{
    null_correlated_subqueries, output_names, placeholder_casts, replace_known_tokens, rewrite, touches_catalog,
    unique_aliases,
};

/// OID of the `pg_catalog` namespace in PostgreSQL (the static pg_type/pg_proc rows use it).
pub(crate) const PG_CATALOG_OID: i32 = 11;
/// OID we give `information_schema`.
pub(crate) const INFORMATION_SCHEMA_OID: i32 = 13_000;
/// OID of the session user's role (PostgreSQL's bootstrap superuser has 10).
pub(crate) const SESSION_ROLE_OID: i32 = 10;
/// OID of the one database.
pub(crate) const DATABASE_OID: i32 = 16_384;
/// First OID handed out for this session's schemas and tables.
const FIRST_DYNAMIC_OID: i32 = 16_385;

/// The relations of `pg_catalog` with the OIDs PostgreSQL gives them (clients write
/// `'pg_class'::regclass` and compare with `classoid` columns).
const FIXED_RELATION_OIDS: &[(&str, i32)] = &[
    ("pg_type", 1247),
    ("pg_attribute", 1249),
    ("pg_proc", 1255),
    ("pg_class", 1259),
    ("pg_authid", 1260),
    ("pg_database", 1262),
    ("pg_am", 2601),
    ("pg_attrdef", 2604),
    ("pg_constraint", 2606),
    ("pg_depend", 2608),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_inherits", 2611),
    ("pg_namespace", 2615),
    ("pg_rewrite", 2618),
    ("pg_trigger", 2620),
    ("pg_extension", 3079),
    ("pg_collation", 3456),
];

/// Static pg_catalog tables, parsed once per process.
static STATIC_TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();

fn static_tables() -> DfResult<Arc<PgCatalogStaticTables>> {
    if let Some(t) = STATIC_TABLES.get() {
        return Ok(t.clone());
    }
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(STATIC_TABLES.get_or_init(|| tables).clone())
}

/// Stable OIDs for one session's schemas and relations, shared by every catalog table and
/// the `regclass` functions.
#[derive(Debug, Default)]
pub(crate) struct OidMap {
    next: i32,
    namespaces: HashMap<String, i32>,
    relations: HashMap<(String, String), i32>,
}

impl OidMap {
    fn new() -> Self {
        Self { next: FIRST_DYNAMIC_OID, ..Default::default() }
    }

    pub(crate) fn namespace(&mut self, name: &str) -> i32 {
        match name {
            "pg_catalog" => return PG_CATALOG_OID,
            "information_schema" => return INFORMATION_SCHEMA_OID,
            _ => {}
        }
        if let Some(oid) = self.namespaces.get(name) {
            return *oid;
        }
        let oid = self.bump();
        self.namespaces.insert(name.to_string(), oid);
        oid
    }

    pub(crate) fn relation(&mut self, schema: &str, table: &str) -> i32 {
        if schema == "pg_catalog" {
            if let Some((_, oid)) = FIXED_RELATION_OIDS.iter().find(|(n, _)| *n == table) {
                return *oid;
            }
        }
        let key = (schema.to_string(), table.to_string());
        if let Some(oid) = self.relations.get(&key) {
            return *oid;
        }
        let oid = self.bump();
        self.relations.insert(key, oid);
        oid
    }

    fn bump(&mut self) -> i32 {
        let oid = self.next;
        self.next += 1;
        oid
    }
}

/// What the catalog tables and functions of one session need. Holds the session's catalog
/// weakly: the catalog owns the pg_catalog schema, which owns this.
#[derive(Debug)]
pub(crate) struct PgContext {
    catalog: Weak<dyn CatalogProvider>,
    catalog_name: String,
    pub(crate) oids: Mutex<OidMap>,
    pub(crate) settings: Arc<SessionSettings>,
    pub(crate) user: String,
    pub(crate) roles: Vec<String>,
    static_tables: Arc<PgCatalogStaticTables>,
    /// Column documentation by (relation OID, attnum), filled whenever the relations are
    /// listed (pg_class, pg_attribute, pg_description scans); `col_description` reads it.
    pub(crate) column_docs: Mutex<HashMap<(i32, i32), String>>,
    /// Where `pg_stat_activity` reads its rows (the engine's activity registry); none: empty.
    pub(crate) activity: ActivityHook,
}

/// The installed [`ActivitySource`], if any.
pub(crate) struct ActivityHook(pub(crate) Option<ActivitySource>);

impl std::fmt::Debug for ActivityHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActivityHook({})", if self.0.is_some() { "installed" } else { "none" })
    }
}

/// One backend (session) as `pg_stat_activity` shows it. Times are microseconds since the
/// Unix epoch.
#[derive(Debug, Clone)]
pub struct BackendActivity {
    /// The pid clients know the session by (pgwire's BackendKeyData pid).
    pub pid: i32,
    /// Its user.
    pub user: String,
    /// Its `application_name` parameter.
    pub application_name: String,
    /// The client's address, when there is a network peer.
    pub client_addr: Option<std::net::SocketAddr>,
    /// When the session opened.
    pub backend_start_us: i64,
    /// When its current (or last) statement started.
    pub query_start_us: Option<i64>,
    /// When a statement last started or ended.
    pub state_change_us: Option<i64>,
    /// A statement is running (`active`), else `idle`.
    pub active: bool,
    /// The number of its current (or last) statement.
    pub query_id: Option<i64>,
    /// The text of its current (or last) statement.
    pub query: String,
}

/// The rows of `pg_stat_activity` the session may see, computed when a query scans it (the
/// engine installs one per session: pgcompat knows nothing of sessions or policy).
pub type ActivitySource = Arc<dyn Fn() -> Vec<BackendActivity> + Send + Sync>;

impl PgContext {
    fn catalog(&self) -> Option<Arc<dyn CatalogProvider>> {
        self.catalog.upgrade()
    }

    /// User-visible schemas (lakehouse namespaces and registered ones) plus pg_catalog and
    /// information_schema, sorted.
    pub(crate) fn schema_names(&self) -> Vec<String> {
        let mut names = self.catalog().map(|c| c.schema_names()).unwrap_or_default();
        for s in ["pg_catalog", "information_schema"] {
            if !names.iter().any(|n| n == s) {
                names.push(s.to_string());
            }
        }
        names.sort();
        names
    }

    /// The schema provider for a name, including DataFusion's information_schema.
    pub(crate) fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let catalog = self.catalog()?;
        if name == "information_schema" {
            let list = Arc::new(datafusion::catalog::MemoryCatalogProviderList::new());
            use datafusion::catalog::CatalogProviderList;
            list.register_catalog(self.catalog_name.clone(), catalog);
            return Some(Arc::new(datafusion::catalog::information_schema::InformationSchemaProvider::new(list)));
        }
        catalog.schema(name)
    }

    /// The OID of a relation named `name` (`schema.table` or `table`, searched along the
    /// search path and then pg_catalog), if it exists.
    pub(crate) fn resolve_relation(&self, name: &str) -> Option<i32> {
        let parts = split_qualified(name);
        let (schemas, table) = match parts.as_slice() {
            [t] => {
                let mut path = vec!["pg_catalog".to_string()];
                path.extend(self.settings.search_path());
                (path, t.clone())
            }
            [.., s, t] => (vec![s.clone()], t.clone()),
            [] => return None,
        };
        for s in schemas {
            if let Some(schema) = self.schema(&s) {
                if schema.table_exist(&table) {
                    return Some(self.oids.lock().expect("oid lock").relation(&s, &table));
                }
            }
        }
        None
    }

    /// The OID of a namespace, if it exists.
    pub(crate) fn resolve_namespace(&self, name: &str) -> Option<i32> {
        let name = split_qualified(name).pop()?;
        self.schema_names().contains(&name).then(|| self.oids.lock().expect("oid lock").namespace(&name))
    }

    /// The first schema of the search path that exists (what `current_schema()` returns).
    pub(crate) fn current_schema(&self) -> Option<String> {
        let names = self.schema_names();
        self.settings.search_path().into_iter().find(|s| names.contains(s))
    }
}

/// Splits `a.b`, `"A".b` into identifier parts (unquoted parts folded to lower case).
pub(crate) fn split_qualified(name: &str) -> Vec<String> {
    let mut parts = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = name.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(if was_quoted { std::mem::take(&mut cur) } else { std::mem::take(&mut cur).to_lowercase() });
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    parts.push(if was_quoted { cur } else { cur.to_lowercase() });
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Installs pg_catalog and the PostgreSQL functions into a session, with the recursive-CTE
/// guard ([`recursive::install`]) and the literal typing of comparisons
/// ([`UnknownLiteralPlanner`]). `catalog` is the session's default catalog (it must accept
/// `register_schema`); `settings` are the session's parameters, read by `current_setting`,
/// `pg_settings` and the search path.
pub fn install(
    ctx: &SessionContext,
    catalog_name: &str,
    catalog: Arc<dyn CatalogProvider>,
    settings: Arc<SessionSettings>,
    user: &str,
    roles: &[String],
    activity: Option<ActivitySource>,
) -> DfResult<()> {
    let pg = Arc::new(PgContext {
        catalog: Arc::downgrade(&catalog),
        catalog_name: catalog_name.to_string(),
        oids: Mutex::new(OidMap::new()),
        settings,
        user: user.to_string(),
        roles: roles.to_vec(),
        static_tables: static_tables()?,
        column_docs: Mutex::new(HashMap::new()),
        activity: ActivityHook(activity),
    });
    let schema = tables::PgCatalogSchema::new(pg.clone())?;
    catalog.register_schema("pg_catalog", Arc::new(schema))?;
    functions::register(ctx, &pg);
    recursive::install(ctx);
    {
        use datafusion::execution::FunctionRegistry;
        // Quoted literals compared with booleans and numbers take their type (coerce.rs).
        ctx.state_ref().write().register_expr_planner(Arc::new(coerce::UnknownLiteralPlanner))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_split_like_postgres() {
        assert_eq!(split_qualified("health.Prescriber_Drug"), vec!["health", "prescriber_drug"]);
        assert_eq!(split_qualified("\"Health\".t"), vec!["Health", "t"]);
        assert_eq!(split_qualified("pg_class"), vec!["pg_class"]);
    }

    #[test]
    fn oids_are_stable_within_a_session() {
        let mut m = OidMap::new();
        let a = m.relation("health", "t");
        let b = m.relation("health", "u");
        assert_ne!(a, b);
        assert_eq!(m.relation("health", "t"), a);
        assert_eq!(m.relation("pg_catalog", "pg_class"), 1259);
        assert_eq!(m.namespace("pg_catalog"), 11);
    }
}

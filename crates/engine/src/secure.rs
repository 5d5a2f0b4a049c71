//! Policy enforcement in the engine: the session's catalog is a [`SecuredCatalog`] over the
//! lakehouse, so a session can only name, list and read what its principal is granted.
//!
//! A table the principal sees whole is the lakehouse table itself. A table it sees masked,
//! filtered or with fewer columns is a [`SecuredTable`] whose logical plan (built by
//! `rxgate_policy::secured_plan`) DataFusion's analyzer inlines under the user's query before
//! optimisation. A table with no grant does not exist for the session (42P01, as if absent).
//! pg_catalog, information_schema, SHOW TABLES and Flight metadata all read this catalog, so
//! listings show exactly what may be queried.

use std::any::Any;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_plan::ExecutionPlan;
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::{MaskFunctions, Policy, Principal, PseudonymKey};

/// Schemas whose tables are governed by grants; every other schema of the catalog
/// (pg_catalog, information_schema) is derived from what the governed ones show.
fn governed(schema: &str, lakehouse: &[String]) -> bool {
    schema == "system" || lakehouse.iter().any(|s| s == schema)
}

/// The policy in force, reloaded when its file changes. A file that fails to parse or
/// validate keeps the last good policy in force; the error is logged and counted.
pub struct PolicyStore {
    path: Option<PathBuf>,
    key: Option<Vec<u8>>,
    state: RwLock<Loaded>,
    checked: Mutex<Instant>,
}

#[derive(Clone)]
struct Loaded {
    policy: Arc<Policy>,
    masks: MaskFunctions,
    stamp: Option<(SystemTime, u64)>,
    reload_errors: u64,
    last_error: Option<String>,
}

/// Reload health of the policy file (for `SHOW POLICIES` and metrics).
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    /// The file, if any.
    pub path: Option<PathBuf>,
    /// Reloads that failed since start (the last good policy stayed in force).
    pub reload_errors: u64,
    /// The last reload error, if the file is invalid now.
    pub last_error: Option<String>,
}

const RECHECK: Duration = Duration::from_secs(1);

impl PolicyStore {
    /// Loads `path` (which must be valid at startup). `key` is the pseudonym key; without
    /// one, pseudonym masks fail closed (NULL).
    pub fn open(path: PathBuf, key: Option<Vec<u8>>) -> Result<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::invalid(format!("cannot read policy file {}: {e}", path.display())))?;
        let policy = Policy::parse(&text, &path.display().to_string())?;
        let loaded = Self::loaded(policy, key.as_deref(), stamp(&path));
        Ok(Self { path: Some(path), key, state: RwLock::new(loaded), checked: Mutex::new(Instant::now()) })
    }

    /// A fixed policy (tests, embedded use).
    pub fn fixed(policy: Policy, key: Option<Vec<u8>>) -> Self {
        let loaded = Self::loaded(policy, key.as_deref(), None);
        Self { path: None, key, state: RwLock::new(loaded), checked: Mutex::new(Instant::now()) }
    }

    fn loaded(policy: Policy, key: Option<&[u8]>, stamp: Option<(SystemTime, u64)>) -> Loaded {
        let masks = MaskFunctions::new(key.map(|k| PseudonymKey::new(&policy.pseudonym().key_id, k)));
        Loaded { policy: Arc::new(policy), masks, stamp, reload_errors: 0, last_error: None }
    }

    /// The policy in force (re-read first if the file changed; checked at most once a second).
    pub fn current(&self) -> (Arc<Policy>, MaskFunctions) {
        self.maybe_reload();
        let s = self.state.read().expect("policy lock");
        (s.policy.clone(), s.masks.clone())
    }

    /// Reload health.
    pub fn status(&self) -> PolicyStatus {
        self.maybe_reload();
        let s = self.state.read().expect("policy lock");
        PolicyStatus { path: self.path.clone(), reload_errors: s.reload_errors, last_error: s.last_error.clone() }
    }

    fn maybe_reload(&self) {
        let Some(path) = &self.path else { return };
        {
            let mut checked = self.checked.lock().expect("policy check lock");
            if checked.elapsed() < RECHECK {
                return;
            }
            *checked = Instant::now();
        }
        let now = stamp(path);
        if now == self.state.read().expect("policy lock").stamp {
            return;
        }
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("cannot read policy file {}: {e}", path.display())))
            .and_then(|text| Policy::parse(&text, &path.display().to_string()));
        let mut s = self.state.write().expect("policy lock");
        match parsed {
            Ok(policy) => {
                let errors = s.reload_errors;
                *s = Self::loaded(policy, self.key.as_deref(), now);
                s.reload_errors = errors;
                tracing::info!(path = %path.display(), "policy reloaded");
                rxgate_common::metrics::record_policy_reload(true);
            }
            Err(e) => {
                s.stamp = now;
                s.reload_errors += 1;
                rxgate_common::metrics::record_policy_reload(false);
                s.last_error = Some(e.message.clone());
                tracing::error!(path = %path.display(), error = %e.message, "policy file invalid; the last good policy stays in force");
            }
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// What one statement's planning applied: for audit records and `rxgate policy check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `schema.table`.
    pub table: String,
    /// `column: mask` of each masked column.
    pub masks: Vec<String>,
    /// The row filter, if any.
    pub row_filter: Option<String>,
    /// A `SECURITY DEFINER` view: the tables beneath are read with its owner's rights.
    pub definer_view: bool,
}

impl Applied {
    /// Whether the table is read through a mask, a row filter or a definer's rights: its
    /// plans, statistics and metrics would tell about values or rows the policy hides.
    pub fn hides(&self) -> bool {
        !self.masks.is_empty() || self.row_filter.is_some() || self.definer_view
    }
}

/// One session's policy context: the principal, the store, and what the current statement's
/// planning applied.
pub(crate) struct Guard {
    store: Arc<PolicyStore>,
    user: String,
    login_roles: Vec<String>,
    /// A snapshot of the session's state (its functions) for parsing row filters and custom
    /// masks; weak, because the state's catalog holds this guard.
    state: Mutex<Weak<SessionState>>,
    applied: Mutex<Vec<Applied>>,
    /// The views the current statement's planning expanded (`schema.view`).
    views: Mutex<Vec<String>>,
}

impl Guard {
    pub(crate) fn new(store: Arc<PolicyStore>, user: &str, login_roles: &[String]) -> Arc<Self> {
        Arc::new(Self {
            store,
            user: user.to_string(),
            login_roles: login_roles.to_vec(),
            state: Mutex::new(Weak::new()),
            applied: Mutex::default(),
            views: Mutex::default(),
        })
    }

    /// The principal under the policy in force.
    pub(crate) fn principal(&self, policy: &Policy) -> Principal {
        Principal {
            user: self.user.clone(),
            roles: policy.roles_of(&self.user, &self.login_roles),
            attributes: policy.attributes_of(&self.user),
        }
    }

    /// The policy in force, its mask functions and this session's principal under it.
    pub(crate) fn view(&self) -> (Arc<Policy>, MaskFunctions, Principal) {
        let (policy, masks) = self.store.current();
        let principal = self.principal(&policy);
        (policy, masks, principal)
    }

    pub(crate) fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// Sets the state row filters and custom masks are parsed with.
    pub(crate) fn set_state(&self, state: &Arc<SessionState>) {
        *self.state.lock().expect("guard state lock") = Arc::downgrade(state);
    }

    /// The session's state (its catalog and functions) as set by [`Guard::set_state`].
    pub(crate) fn state(&self) -> Result<Arc<SessionState>> {
        let state = self.state.lock().expect("guard state lock").upgrade();
        state.ok_or_else(|| Error::internal("session state is gone"))
    }

    /// Parses a SQL expression against `schema` with the session's functions.
    pub(crate) fn sql_expr(&self, sql: &str, schema: &DFSchema) -> DfResult<Expr> {
        let state = self.state().map_err(|e| DataFusionError::External(Box::new(e)))?;
        state.create_logical_expr(sql, schema)
    }

    /// Starts recording a statement's applied policies and expanded views.
    pub(crate) fn begin_statement(&self) {
        self.applied.lock().expect("applied lock").clear();
        self.views.lock().expect("views lock").clear();
    }

    /// Records that the statement's planning expanded the view `name` (`schema.view`).
    pub(crate) fn record_view(&self, name: &str) {
        let mut views = self.views.lock().expect("views lock");
        if !views.iter().any(|v| v == name) {
            views.push(name.to_string());
        }
    }

    /// The views expanded since [`Guard::begin_statement`].
    pub(crate) fn expanded_views(&self) -> Vec<String> {
        self.views.lock().expect("views lock").clone()
    }

    /// What the statement planned since [`Guard::begin_statement`] applied.
    pub(crate) fn applied(&self) -> Vec<Applied> {
        self.applied.lock().expect("applied lock").clone()
    }

    /// Records what the statement's planning applied to one table.
    pub(crate) fn record(&self, applied: Applied) {
        let mut all = self.applied.lock().expect("applied lock");
        if !all.contains(&applied) {
            all.push(applied);
        }
    }
}

/// The lakehouse catalog a session's catalog wraps.
pub(crate) fn lakehouse_of(catalog: &Arc<dyn CatalogProvider>) -> Option<&rxgate_catalog::LakehouseCatalogProvider> {
    catalog.as_any().downcast_ref::<SecuredCatalog>().and_then(SecuredCatalog::lakehouse)
}

/// The session's catalog: the lakehouse as the principal may see it.
#[derive(Debug)]
pub(crate) struct SecuredCatalog {
    inner: Arc<dyn CatalogProvider>,
    catalog: String,
    lakehouse: Vec<String>,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guard({})", self.user)
    }
}

impl SecuredCatalog {
    pub(crate) fn new(inner: Arc<dyn CatalogProvider>, catalog: &str, guard: Arc<Guard>) -> Self {
        let lakehouse = inner.schema_names();
        Self { inner, catalog: catalog.to_string(), lakehouse, guard }
    }

    /// The same catalog under another principal's guard (a definer view's owner).
    pub(crate) fn with_guard(&self, guard: Arc<Guard>) -> Self {
        Self { inner: self.inner.clone(), catalog: self.catalog.clone(), lakehouse: self.lakehouse.clone(), guard }
    }

    /// The lakehouse catalog under the policy, if that is what this catalog wraps.
    pub(crate) fn lakehouse(&self) -> Option<&rxgate_catalog::LakehouseCatalogProvider> {
        self.inner.as_any().downcast_ref::<rxgate_catalog::LakehouseCatalogProvider>()
    }

    /// Governed: a lakehouse namespace when the session opened, or one created since (for an
    /// external table).
    fn governed(&self, schema: &str) -> bool {
        governed(schema, &self.lakehouse)
            || self
                .inner
                .as_any()
                .downcast_ref::<rxgate_catalog::LakehouseCatalogProvider>()
                .is_some_and(|p| p.is_namespace(schema))
    }
}

impl CatalogProvider for SecuredCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        let (policy, _, principal) = self.guard.view();
        self.inner
            .schema_names()
            .into_iter()
            .filter(|s| {
                !self.governed(s)
                    || self.inner.schema(s).is_some_and(|schema| {
                        schema.table_names().iter().any(|t| policy.table_visible(&principal, &self.catalog, s, t))
                    })
            })
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        if !self.governed(name) {
            return Some(inner);
        }
        Some(Arc::new(SecuredSchema {
            inner,
            catalog: self.catalog.clone(),
            schema: name.to_string(),
            guard: self.guard.clone(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }
}

/// One governed schema: only granted tables, each as the principal may see it.
#[derive(Debug)]
struct SecuredSchema {
    inner: Arc<dyn SchemaProvider>,
    catalog: String,
    schema: String,
    guard: Arc<Guard>,
}

#[async_trait]
impl SchemaProvider for SecuredSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let (policy, _, principal) = self.guard.view();
        self.inner
            .table_names()
            .into_iter()
            .filter(|t| policy.table_visible(&principal, &self.catalog, &self.schema, t))
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let (policy, masks, principal) = self.guard.view();
        // `t$files`, `t@v=<id>` (iceberg_admin): the policy of the base table t decides.
        let (base, view) = rxgate_catalog::iceberg_admin::split_table_name(name);
        if !policy.table_visible(&principal, &self.catalog, &self.schema, base) {
            return Ok(None);
        }
        if matches!(view, Some(rxgate_catalog::iceberg_admin::TableView::Metadata(_))) {
            // Metadata tables only for who sees the base table whole: file paths, partition
            // values and counts would reveal masked or filtered data.
            let Some(base_table) = self.inner.table(base).await? else { return Ok(None) };
            let columns: Vec<String> = base_table.schema().fields().iter().map(|f| f.name().clone()).collect();
            let access = policy
                .table_access(&principal, &self.catalog, &self.schema, base, &columns)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            if !access.is_some_and(|a| a.is_unrestricted()) {
                return Ok(None);
            }
            return self.inner.table(name).await;
        }
        let Some(mut table) = self.inner.table(name).await? else { return Ok(None) };
        let mut invoker_view = false;
        if let Some(view) = table.as_any().downcast_ref::<rxgate_catalog::views::StoredView>() {
            let def = view.def().clone();
            invoker_view = def.security == rxgate_catalog::views::ViewSecurity::Invoker;
            table = crate::views::expand(&self.guard, &def).await?;
        }
        let columns: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
        let access = policy
            .table_access(&principal, &self.catalog, &self.schema, base, &columns)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let Some(mut access) = access else { return Ok(None) };
        if invoker_view {
            // The session's masks and row filters already apply to the tables beneath: applied
            // again on the view's columns (a `table = "*"` mask matches the view's name too) a
            // pseudonym would be pseudonymised twice. The view's grant still picks its columns.
            access.row_filter = None;
            access.columns.iter_mut().for_each(|c| c.mask = None);
        }
        if access.is_unrestricted() {
            return Ok(Some(table));
        }
        let reference = TableReference::full(self.catalog.as_str(), self.schema.as_str(), name);
        let guard = self.guard.clone();
        let plan = rxgate_policy::secured_plan(
            reference,
            provider_as_source(table.clone()),
            &access,
            &masks,
            &|sql, schema| guard.sql_expr(sql, schema),
        )
        .map_err(|e| {
            // A policy that cannot be applied denies the table; the reason goes to the log.
            tracing::error!(table = %format!("{}.{}", self.schema, name), error = %e, "policy cannot be applied");
            DataFusionError::External(Box::new(Error::new(
                StatusCode::PermissionDenied,
                format!("permission denied for table {name}: its access policy cannot be applied"),
            )))
        })?;
        self.guard.record(Applied {
            table: format!("{}.{}", self.schema, base),
            masks: access.masks(),
            row_filter: access.row_filter.clone(),
            definer_view: false,
        });
        Ok(Some(Arc::new(match (table.table_type(), table.get_table_definition()) {
            (TableType::View, Some(definition)) => SecuredTable::view(plan, definition.to_string()),
            _ => SecuredTable::new(plan),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        let (policy, _, principal) = self.guard.view();
        let (base, _) = rxgate_catalog::iceberg_admin::split_table_name(name);
        policy.table_visible(&principal, &self.catalog, &self.schema, base) && self.inner.table_exist(name)
    }
}

/// A table seen through a policy: its plan is the secured plan, inlined under the query.
#[derive(Debug)]
pub(crate) struct SecuredTable {
    plan: LogicalPlan,
    schema: SchemaRef,
    /// A view's `CREATE VIEW` text (`None`: a table).
    definition: Option<String>,
}

impl SecuredTable {
    fn new(plan: LogicalPlan) -> Self {
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Self { plan, schema, definition: None }
    }

    /// An expanded view: its plan and its definition.
    pub(crate) fn view(plan: LogicalPlan, definition: String) -> Self {
        Self { definition: Some(definition), ..Self::new(plan) }
    }
}

#[async_trait]
impl TableProvider for SecuredTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        if self.definition.is_some() {
            TableType::View
        } else {
            TableType::Base
        }
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.plan))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Normally never called (the analyzer inlines the plan); if it is, run the secured
        // plan itself, never the raw table. Filters are not pushed here (the default
        // `supports_filters_pushdown` keeps them above) and a limit is only a hint.
        let _ = (filters, limit);
        let plan = match projection {
            Some(p) => datafusion::logical_expr::LogicalPlanBuilder::from(self.plan.clone())
                .select(p.iter().copied())?
                .build()?,
            None => self.plan.clone(),
        };
        state.create_physical_plan(&plan).await
    }
}

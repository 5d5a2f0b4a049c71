//! Expanding a stored view for a session: its query is planned when a statement names the
//! view, as the invoker (the session's own secured catalog: its grants, masks and row filters
//! apply to the tables beneath) or, for a `SECURITY DEFINER` view, as its owner (a secured
//! catalog under the owner's principal, who must still be an administrator). The plan is
//! inlined under the statement like a secured table's; the session's policy for the view's
//! own name then applies on top (`secure::SecuredSchema::table`).
//!
//! A view naming itself, directly or through other views, is 42P17 when expanded; a view whose
//! query no longer plans (a table dropped, a grant revoked) is listed with its recorded
//! columns and fails with the planning error when read (`StoredView::failing`).

use std::sync::Arc;

use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList, TableProvider};
use datafusion::common::Column;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::parser::Statement as DfStatement;
use rxgate_catalog::views::{StoredView, ViewDef, ViewSecurity};
use rxgate_common::{Error, StatusCode};

use crate::secure::{Applied, Guard, SecuredCatalog, SecuredTable};
use crate::statement::{ParseOptions, Statement};

/// Views deeper than this are refused (a longer chain is almost surely a mistake).
const MAX_DEPTH: usize = 32;

tokio::task_local! {
    /// The views being expanded by the current planning, outermost first.
    static EXPANDING: Vec<String>;
}

/// The table a query reads for the view `def`: its plan under the invoker's or the definer's
/// rights, or, when it does not plan (recursion included), a table that fails with the
/// reason when read.
pub(crate) async fn expand(guard: &Arc<Guard>, def: &Arc<ViewDef>) -> DfResult<Arc<dyn TableProvider>> {
    let name = def.qualified();
    let mut stack = EXPANDING.try_with(Clone::clone).unwrap_or_default();
    if stack.contains(&name) || stack.len() >= MAX_DEPTH {
        let message = format!("infinite recursion detected in view {name} (through {})", stack.join(" → "));
        let e = Error::new(StatusCode::InvalidObjectDefinition, message);
        return Ok(Arc::new(StoredView::failing(def.clone(), &e)));
    }
    guard.record_view(&name);
    if def.security == ViewSecurity::Definer {
        // Plans and metrics of what the owner reads are not the invoker's to see.
        guard.record(Applied { table: name.clone(), masks: vec![], row_filter: None, definer_view: true });
    }
    stack.push(name);
    let planned = EXPANDING.scope(stack, plan(guard, def)).await;
    Ok(match planned {
        Ok(plan) => Arc::new(SecuredTable::view(plan, def.definition())),
        // Listings (information_schema, pg_class) still show it; reading it fails.
        Err(e) => Arc::new(StoredView::failing(def.clone(), &e)),
    })
}

/// Plans the view's query with its recorded column names.
async fn plan(guard: &Arc<Guard>, def: &ViewDef) -> rxgate_common::Result<LogicalPlan> {
    let invoker = guard.state()?;
    // The definer's guard must outlive the planning: its secured tables parse row filters
    // with the state it holds weakly.
    let (mut state, _definer) = match def.security {
        ViewSecurity::Invoker => (invoker.as_ref().clone(), None),
        ViewSecurity::Definer => {
            let (state, definer) = definer_state(guard, def, &invoker)?;
            (state.as_ref().clone(), Some((state, definer)))
        }
    };
    state.config_mut().options_mut().catalog.default_schema = def.search_schema.clone();
    let catalog = state.config().options().catalog.default_catalog.clone();
    let options = ParseOptions { question_marks: false, catalog };
    let Statement::Sql(sql) = crate::statement::parse(&def.query, &Default::default(), &options)? else {
        return Err(Error::internal(format!("the stored query of view {} is not a query", def.qualified())));
    };
    let statement = |s| DfStatement::Statement(Box::new(s));
    let plan = match state.statement_to_plan(statement(sql.rewritten.clone())).await {
        // DataFusion reports duplicate output names only in the text of a `Plan` error.
        Err(DataFusionError::Plan(m)) if m.contains("Projections require unique expression names") => {
            state.statement_to_plan(statement(crate::pgcompat::unique_aliases(sql.rewritten))).await?
        }
        other => other?,
    };
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| Error::new(StatusCode::Unsupported, e.to_string()))?;
    let fields = plan.schema().fields().len();
    if fields != def.columns.len() {
        return Err(Error::new(
            StatusCode::InvalidObjectDefinition,
            format!(
                "view {} was created with {} columns but its query now returns {fields}; recreate it",
                def.qualified(),
                def.columns.len()
            ),
        ));
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(&def.columns)
        .map(|((q, f), c)| Expr::Column(Column::new(q.cloned(), f.name())).alias(&c.name))
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// A state whose lakehouse catalog is secured for the view's owner, with the owner's guard.
fn definer_state(
    guard: &Arc<Guard>,
    def: &ViewDef,
    invoker: &Arc<SessionState>,
) -> rxgate_common::Result<(Arc<SessionState>, Arc<Guard>)> {
    let definer = Guard::new(guard.store().clone(), &def.owner, &def.owner_roles);
    let (policy, _, principal) = definer.view();
    if !policy.is_admin(&principal.roles) {
        return Err(Error::new(
            StatusCode::PermissionDenied,
            format!(
                "view {} runs with its owner's rights, and its owner {} is no longer an administrator",
                def.qualified(),
                def.owner
            ),
        ));
    }
    let catalogs = MemoryCatalogProviderList::new();
    for name in invoker.catalog_list().catalog_names() {
        let Some(catalog) = invoker.catalog_list().catalog(&name) else { continue };
        let catalog = match catalog.as_any().downcast_ref::<SecuredCatalog>() {
            Some(secured) => Arc::new(secured.with_guard(definer.clone())),
            None => catalog,
        };
        catalogs.register_catalog(name, catalog);
    }
    let state = Arc::new(
        SessionStateBuilder::new_from_existing(invoker.as_ref().clone()).with_catalog_list(Arc::new(catalogs)).build(),
    );
    definer.set_state(&state);
    Ok((state, definer))
}

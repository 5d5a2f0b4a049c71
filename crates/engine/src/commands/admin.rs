//! Policy admin statements: `SHOW GRANTS [FOR user|role]` and `SHOW POLICIES`. Other users'
//! grants and the whole policy are for administrators only.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::{Policy, Target};

use super::{batch_output, denied, text_schema};
use crate::planned::{Planned, QueryOutput};
use crate::secure::{Guard, PolicyStatus};
use crate::statement::{AdminCommand, Command};

/// Plans an admin statement (its rows are computed when it runs, under the policy then).
pub(crate) fn plan(cmd: AdminCommand) -> Planned {
    let schema = Some(schema(&cmd));
    Planned::Command(Command::Admin(cmd), schema)
}

/// Answers an admin statement for the guard's principal.
pub(crate) fn execute(cmd: &AdminCommand, guard: &Guard) -> Result<QueryOutput> {
    let store = guard.store();
    let (policy, _) = store.current();
    let me = guard.principal(&policy);
    let is_admin = policy.is_admin(&me.roles);
    let batch = match cmd {
        AdminCommand::ShowGrants(None) => grants(&policy, &me.roles, cmd),
        AdminCommand::ShowGrants(Some(name)) if name == &me.user => grants(&policy, &me.roles, cmd),
        AdminCommand::ShowGrants(Some(_)) if !is_admin => Err(denied("SHOW GRANTS FOR another user")),
        AdminCommand::ShowGrants(Some(name)) => {
            let roles = if policy.roles().contains_key(name) { vec![name.clone()] } else { policy.roles_of(name, &[]) };
            grants(&policy, &roles, cmd)
        }
        AdminCommand::ShowPolicies if !is_admin => Err(denied("SHOW POLICIES")),
        AdminCommand::ShowPolicies => policies(&policy, &store.status(), cmd),
    }?;
    batch_output(batch)
}

/// Result schema of an admin statement.
fn schema(cmd: &AdminCommand) -> SchemaRef {
    text_schema(match cmd {
        AdminCommand::ShowGrants(_) => &["role", "privilege", "object", "columns", "detail"],
        AdminCommand::ShowPolicies => &["kind", "roles", "object", "columns", "detail"],
    })
}

fn target(t: &Target) -> String {
    t.display()
}

fn join(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Rows of `SHOW GRANTS` for `roles`.
/// A grant's privileges as SQL names: `SELECT`, `INSERT, DELETE`, `ALL`.
fn privileges(g: &rxgate_policy::Grant) -> String {
    join(g.privileges.iter().map(|p| p.name().to_uppercase()))
}

fn grants(policy: &Policy, roles: &[String], cmd: &AdminCommand) -> Result<RecordBatch> {
    let mut rows: Vec<[String; 5]> = vec![];
    for role in roles {
        for g in policy.grants().iter().filter(|g| g.roles.contains(role)) {
            let cols = join(g.columns.iter().map(|c| c.as_str().to_string()));
            rows.push([role.clone(), privileges(g), target(&g.on), cols, String::new()]);
        }
        for m in policy.masks().iter().filter(|m| m.roles.contains(role)) {
            let cols = join(m.columns.iter().map(|c| c.as_str().to_string()));
            rows.push([role.clone(), "MASK".into(), target(&m.on), cols, m.mask.name()]);
        }
        for f in policy.row_filters().iter().filter(|f| f.roles.contains(role)) {
            rows.push([role.clone(), "ROW FILTER".into(), target(&f.on), String::new(), f.filter.clone()]);
        }
    }
    batch(cmd, rows)
}

/// Rows of `SHOW POLICIES`.
fn policies(policy: &Policy, status: &PolicyStatus, cmd: &AdminCommand) -> Result<RecordBatch> {
    let mut rows: Vec<[String; 5]> = vec![];
    let file = status.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in".into());
    let health = match &status.last_error {
        Some(e) => format!("reload errors: {}; in force: the last good policy; last error: {e}", status.reload_errors),
        None => format!("reload errors: {}; the file is in force", status.reload_errors),
    };
    rows.push(["STATUS".into(), String::new(), file, String::new(), health]);
    for (name, role) in policy.roles() {
        let detail = if role.admin { format!("admin; {}", role.description) } else { role.description.clone() };
        rows.push(["ROLE".into(), name.clone(), String::new(), String::new(), detail]);
    }
    for g in policy.grants() {
        let cols = join(g.columns.iter().map(|c| c.as_str().to_string()));
        rows.push(["GRANT".into(), join(g.roles.iter().cloned()), target(&g.on), cols, privileges(g)]);
    }
    for m in policy.masks() {
        let cols = join(m.columns.iter().map(|c| c.as_str().to_string()));
        rows.push(["MASK".into(), join(m.roles.iter().cloned()), target(&m.on), cols, m.mask.name()]);
    }
    for f in policy.row_filters() {
        rows.push(["ROW FILTER".into(), join(f.roles.iter().cloned()), target(&f.on), String::new(), f.filter.clone()]);
    }
    batch(cmd, rows)
}

fn batch(cmd: &AdminCommand, rows: Vec<[String; 5]>) -> Result<RecordBatch> {
    let columns =
        (0..5).map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[i].as_str()))) as _).collect();
    RecordBatch::try_new(schema(cmd), columns).map_err(|e| Error::new(StatusCode::Internal, e.to_string()))
}

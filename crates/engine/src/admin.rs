//! Policy admin statements: `SHOW GRANTS [FOR user|role]` and `SHOW POLICIES`.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::{Policy, Target};

use crate::secure::PolicyStatus;

/// A policy admin statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `SHOW GRANTS` (the session's own) or `SHOW GRANTS FOR name` (a user or a role; admins
    /// only, unless it is the session's own user).
    ShowGrants(Option<String>),
    /// `SHOW POLICIES`: every rule and the policy file's reload status (admins only).
    ShowPolicies,
}

/// Recognises the admin statements, which sqlparser does not know.
pub(crate) fn parse(sql: &str) -> Option<AdminCommand> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            Token::Word(w) => format!("\"{}", w.value),
            other => other.to_string(),
        })
        .collect();
    let name = |w: &String| w.strip_prefix('"').map(str::to_string).unwrap_or_else(|| w.to_ascii_lowercase());
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["SHOW", "GRANTS"] => Some(AdminCommand::ShowGrants(None)),
        ["SHOW", "GRANTS", "FOR", _] => Some(AdminCommand::ShowGrants(Some(name(&words[3])))),
        ["SHOW", "POLICIES"] => Some(AdminCommand::ShowPolicies),
        _ => None,
    }
}

/// Result schema of an admin statement.
pub(crate) fn schema(cmd: &AdminCommand) -> SchemaRef {
    let names: &[&str] = match cmd {
        AdminCommand::ShowGrants(_) => &["role", "privilege", "object", "columns", "detail"],
        AdminCommand::ShowPolicies => &["kind", "roles", "object", "columns", "detail"],
    };
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()))
}

fn target(t: &Target) -> String {
    t.display()
}

fn join(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Rows of `SHOW GRANTS` for `roles`.
pub(crate) fn grants(policy: &Policy, roles: &[String], cmd: &AdminCommand) -> Result<RecordBatch> {
    let mut rows: Vec<[String; 5]> = vec![];
    for role in roles {
        for g in policy.grants().iter().filter(|g| g.roles.contains(role)) {
            let cols = join(g.columns.iter().map(|c| c.as_str().to_string()));
            rows.push([role.clone(), "SELECT".into(), target(&g.on), cols, String::new()]);
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
pub(crate) fn policies(policy: &Policy, status: &PolicyStatus, cmd: &AdminCommand) -> Result<RecordBatch> {
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
        rows.push(["GRANT".into(), join(g.roles.iter().cloned()), target(&g.on), cols, "SELECT".into()]);
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
    let columns = (0..5)
        .map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[i].as_str()))) as _)
        .collect();
    RecordBatch::try_new(schema(cmd), columns).map_err(|e| Error::new(StatusCode::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_admin_statements() {
        assert_eq!(parse("show grants"), Some(AdminCommand::ShowGrants(None)));
        assert_eq!(parse("SHOW GRANTS FOR Analyst;"), Some(AdminCommand::ShowGrants(Some("analyst".into()))));
        assert_eq!(parse("SHOW GRANTS FOR \"Bob\""), Some(AdminCommand::ShowGrants(Some("Bob".into()))));
        assert_eq!(parse("show policies"), Some(AdminCommand::ShowPolicies));
        assert_eq!(parse("show tables"), None);
        assert_eq!(parse("SELECT 'SHOW GRANTS'"), None);
    }
}

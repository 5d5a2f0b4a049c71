//! What a principal may see of a table: the visible columns, the mask of each, and the row
//! filter. Deny by default: no grant, no table; a column no grant names is not there at all.
//!
//! Several roles combine as a union: a table is visible when one role is granted it; a column
//! is visible when one granting role names it and plain when one such role leaves it
//! unmasked (else it gets the first masking role's mask); rows are filtered unless one
//! granting role has no filter (else the role filters are OR-ed).

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};
use rxgate_common::{Error, Result, StatusCode};

use crate::model::{MaskKind, Policy, Privilege};

/// The principal a policy is evaluated for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name.
    pub user: String,
    /// Effective roles ([`Policy::roles_of`]).
    pub roles: Vec<String>,
    /// Attributes ([`Policy::attributes_of`]).
    pub attributes: BTreeMap<String, String>,
}

/// One visible column and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAccess {
    /// Column name.
    pub name: String,
    /// The mask, if the principal sees the column masked.
    pub mask: Option<MaskKind>,
}

/// What a principal may see of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAccess {
    /// Visible columns, in table order.
    pub columns: Vec<ColumnAccess>,
    /// Row predicate (SQL, with `current_user` and attributes already substituted).
    pub row_filter: Option<String>,
    /// Whether every column is visible.
    pub all_columns: bool,
}

impl TableAccess {
    /// No mask, no filter, every column: the table can be used as it is.
    pub fn is_unrestricted(&self) -> bool {
        self.all_columns && self.row_filter.is_none() && self.columns.iter().all(|c| c.mask.is_none())
    }

    /// `column: mask` of each masked column.
    pub fn masks(&self) -> Vec<String> {
        self.columns.iter().filter_map(|c| c.mask.as_ref().map(|m| format!("{}: {}", c.name, m.name()))).collect()
    }
}

impl Policy {
    /// Whether any of the principal's roles is granted `SELECT` on `catalog.schema.table`.
    pub fn table_visible(&self, p: &Principal, catalog: &str, schema: &str, table: &str) -> bool {
        self.allows(p, Privilege::Select, catalog, schema, table)
    }

    /// Whether any of the principal's roles has `privilege` on `catalog.schema.table`
    /// (administrators have every privilege). For a schema-wide privilege (`CREATE` in a
    /// schema, `CREATE|DROP SCHEMA`) pass `table = ""`: only grants with `table = "*"` cover it.
    pub fn allows(&self, p: &Principal, privilege: Privilege, catalog: &str, schema: &str, table: &str) -> bool {
        (privilege != Privilege::Select && self.is_admin(&p.roles))
            || self.grants.iter().any(|g| {
                g.gives(privilege) && g.on.covers(catalog, schema, table) && g.roles.iter().any(|r| p.roles.contains(r))
            })
    }

    /// The principal's view of a table with `columns` (what `SELECT` sees); `None` when
    /// `SELECT` is not granted.
    pub fn table_access(
        &self,
        p: &Principal,
        catalog: &str,
        schema: &str,
        table: &str,
        columns: &[String],
    ) -> Result<Option<TableAccess>> {
        let granting = self.granting(p, Privilege::Select, catalog, schema, table);
        if granting.is_empty() {
            return Ok(None);
        }
        let granted_to = |role: &String, column: &str| {
            self.grants.iter().any(|g| {
                g.roles.contains(role)
                    && g.gives(Privilege::Select)
                    && g.on.covers(catalog, schema, table)
                    && g.columns.iter().any(|c| c.matches(column))
            })
        };
        let mask_of = |role: &String, column: &str| {
            self.masks
                .iter()
                .find(|m| {
                    m.roles.contains(role)
                        && m.on.covers(catalog, schema, table)
                        && m.columns.iter().any(|c| c.matches(column))
                })
                .map(|m| m.mask.clone())
        };
        let mut visible = vec![];
        for column in columns {
            let roles: Vec<&&String> = granting.iter().filter(|r| granted_to(r, column)).collect();
            if roles.is_empty() {
                continue;
            }
            let masks: Vec<Option<MaskKind>> = roles.iter().map(|r| mask_of(r, column)).collect();
            let mask = if masks.iter().any(Option::is_none) { None } else { masks.into_iter().flatten().next() };
            visible.push(ColumnAccess { name: column.clone(), mask });
        }
        let row_filter = self.combined_filter(p, &granting, catalog, schema, table)?;
        Ok(Some(TableAccess { all_columns: visible.len() == columns.len(), columns: visible, row_filter }))
    }
}

impl Policy {
    /// The row filter that bounds the principal's writes with `privilege` on a table (like
    /// PostgreSQL's `WITH CHECK`): the filters of the roles that grant the privilege, as for
    /// reads. `Ok(None)`: no filter (or an administrator). Call only once
    /// [`Policy::allows`] said yes.
    pub fn write_filter(
        &self,
        p: &Principal,
        privilege: Privilege,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<String>> {
        if self.is_admin(&p.roles) {
            return Ok(None);
        }
        let granting = self.granting(p, privilege, catalog, schema, table);
        self.combined_filter(p, &granting, catalog, schema, table)
    }

    /// The principal's roles that a grant gives `privilege` on the table.
    fn granting<'a>(
        &self,
        p: &'a Principal,
        privilege: Privilege,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Vec<&'a String> {
        p.roles
            .iter()
            .filter(|r| {
                self.grants
                    .iter()
                    .any(|g| g.roles.contains(r) && g.gives(privilege) && g.on.covers(catalog, schema, table))
            })
            .collect()
    }

    /// The row filter of `granting` roles on a table: none when one of them has no filter,
    /// else each role's filters AND-ed, the roles OR-ed.
    fn combined_filter(
        &self,
        p: &Principal,
        granting: &[&String],
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<String>> {
        let mut per_role = vec![];
        for role in granting {
            let filters: Vec<String> = self
                .row_filters
                .iter()
                .filter(|f| f.roles.contains(role) && f.on.covers(catalog, schema, table))
                .map(|f| substitute(&f.filter, p))
                .collect::<Result<_>>()?;
            if filters.is_empty() {
                return Ok(None);
            }
            per_role.push(filters.iter().map(|f| format!("({f})")).collect::<Vec<_>>().join(" AND "));
        }
        Ok(match per_role.len() {
            0 => None,
            1 => per_role.pop(),
            _ => Some(per_role.iter().map(|f| format!("({f})")).collect::<Vec<_>>().join(" OR ")),
        })
    }
}

/// Replaces `current_user` (also `current_user()`, `session_user`) with the user's name and
/// `attribute('x')` with the attribute's value (NULL when the user has none, so the filter
/// keeps no rows), as SQL string literals.
fn substitute(filter: &str, p: &Principal) -> Result<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, filter)
        .tokenize()
        .map_err(|e| Error::new(StatusCode::InvalidArgument, format!("row filter {filter:?}: {e}")))?;
    let literal = |v: Option<&String>| match v {
        Some(v) => Token::SingleQuotedString(v.clone()),
        None => Token::make_keyword("NULL"),
    };
    let mut out: Vec<Token> = vec![];
    let mut i = 0;
    while i < tokens.len() {
        let word = |t: &Token| match t {
            Token::Word(Word { value, quote_style: None, .. }) => Some(value.to_ascii_lowercase()),
            _ => None,
        };
        let next_significant =
            |from: usize| tokens[from..].iter().position(|t| !matches!(t, Token::Whitespace(_))).map(|k| from + k);
        match word(&tokens[i]).as_deref() {
            Some("current_user" | "session_user") => {
                out.push(literal(Some(&p.user)));
                // `current_user()` as a call: drop the empty parentheses.
                if let Some(open) = next_significant(i + 1).filter(|&k| tokens[k] == Token::LParen) {
                    if let Some(close) = next_significant(open + 1).filter(|&k| tokens[k] == Token::RParen) {
                        i = close;
                    }
                }
            }
            Some("attribute") => {
                let open = next_significant(i + 1).filter(|&k| tokens[k] == Token::LParen);
                let arg = open.and_then(|k| next_significant(k + 1));
                let close = arg.and_then(|k| next_significant(k + 1)).filter(|&k| tokens[k] == Token::RParen);
                match (arg.map(|k| &tokens[k]), close) {
                    (Some(Token::SingleQuotedString(name)), Some(close)) => {
                        out.push(literal(p.attributes.get(name)));
                        i = close;
                    }
                    _ => {
                        return Err(Error::new(
                            StatusCode::InvalidArgument,
                            format!("row filter {filter:?}: attribute() takes one quoted name"),
                        ))
                    }
                }
            }
            _ => out.push(tokens[i].clone()),
        }
        i += 1;
    }
    Ok(out.iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        [roles.admin]
        admin = true
        [roles.analyst]
        [roles.state_auditor]
        [roles.public]

        [users.carol]
        roles = ["state_auditor"]
        attributes = { state = "CA" }

        [[grant]]
        roles = ["admin"]

        [[grant]]
        roles = ["analyst", "state_auditor"]
        schema = "health"

        [[grant]]
        roles = ["public"]
        schema = "health"
        table = "city_report"
        columns = ["city", "state_name", "trx_counts"]

        [[mask]]
        roles = ["analyst"]
        schema = "health"
        table = "prescriber_drug"
        columns = ["npi"]
        mask = { type = "pseudonym" }

        [[mask]]
        roles = ["analyst"]
        schema = "health"
        columns = ["presc_*_name"]
        mask = { type = "redact" }

        [[row_filter]]
        roles = ["state_auditor"]
        schema = "health"
        table = "prescriber_drug"
        filter = "presc_state = attribute('state') AND current_user <> 'nobody'"
    "#;

    fn principal(policy: &Policy, user: &str, login: &[&str]) -> Principal {
        let login: Vec<String> = login.iter().map(|s| s.to_string()).collect();
        Principal { user: user.into(), roles: policy.roles_of(user, &login), attributes: policy.attributes_of(user) }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deny_by_default_and_column_grants() {
        let policy = Policy::parse(POLICY, "test").unwrap();
        let nobody = principal(&policy, "zed", &[]);
        assert!(!policy.table_visible(&nobody, "rxgate", "health", "prescriber_drug"));
        assert_eq!(policy.table_access(&nobody, "rxgate", "health", "prescriber_drug", &cols(&["npi"])).unwrap(), None);
        let public = principal(&policy, "pat", &["public"]);
        assert!(!policy.table_visible(&public, "rxgate", "health", "prescriber_drug"));
        let access = policy
            .table_access(&public, "rxgate", "health", "city_report", &cols(&["city", "population", "trx_counts"]))
            .unwrap()
            .unwrap();
        assert_eq!(access.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["city", "trx_counts"]);
        assert!(!access.all_columns && !access.is_unrestricted());
    }

    #[test]
    fn masks_and_filters_per_role() {
        let policy = Policy::parse(POLICY, "test").unwrap();
        let table = cols(&["npi", "presc_last_name", "presc_state"]);
        let analyst = principal(&policy, "ann", &["analyst"]);
        let a = policy.table_access(&analyst, "rxgate", "health", "prescriber_drug", &table).unwrap().unwrap();
        assert_eq!(a.columns[0].mask, Some(MaskKind::Pseudonym));
        assert_eq!(a.columns[1].mask, Some(MaskKind::Redact));
        assert_eq!(a.columns[2].mask, None);
        assert_eq!(a.row_filter, None);
        let carol = principal(&policy, "carol", &[]);
        let c = policy.table_access(&carol, "rxgate", "health", "prescriber_drug", &table).unwrap().unwrap();
        assert!(c.columns.iter().all(|c| c.mask.is_none()));
        assert_eq!(c.row_filter.as_deref(), Some("(presc_state = 'CA' AND 'carol' <> 'nobody')"));
        // An admin who is also an analyst sees plain columns: the union of the roles.
        let both = principal(&policy, "root", &["admin", "analyst"]);
        let b = policy.table_access(&both, "rxgate", "health", "prescriber_drug", &table).unwrap().unwrap();
        assert!(b.is_unrestricted());
        assert!(policy.is_admin(&both.roles) && !policy.is_admin(&analyst.roles));
    }

    #[test]
    fn missing_attribute_filters_everything() {
        let policy = Policy::parse(POLICY, "test").unwrap();
        let p = Principal { user: "dan".into(), roles: vec!["state_auditor".into()], attributes: BTreeMap::new() };
        let a = policy.table_access(&p, "rxgate", "health", "prescriber_drug", &cols(&["npi"])).unwrap().unwrap();
        assert_eq!(a.row_filter.as_deref(), Some("(presc_state = NULL AND 'dan' <> 'nobody')"));
    }

    #[test]
    fn invalid_policies_are_refused() {
        for (text, needle) in [
            ("[[grant]]\nroles = [\"ghost\"]", "ghost"),
            ("[roles.a]\n[[grant]]\nroles = []", "names no roles"),
            ("[roles.a]\n[[mask]]\nroles=[\"a\"]\ncolumns=[\"x\"]\nmask={type=\"nope\"}", "nope"),
            ("[roles.a]\n[[row_filter]]\nroles=[\"a\"]\nfilter=\" \"", "empty"),
            ("[roles.a]\nbogus = 1", "bogus"),
        ] {
            let err = Policy::parse(text, "p.toml").unwrap_err();
            assert!(err.message.contains(needle), "{text}: {}", err.message);
        }
    }
}

//! The policy file (`catalog/policies.toml`): users → roles and attributes, grants on
//! catalog / schema / table / column, masks and row filters per role. Pure data and
//! validation; no IO here (the engine reads the file and hands the text to [`Policy::parse`]).

use std::collections::BTreeMap;

use rxgate_common::{Error, Result, StatusCode};
use serde::Deserialize;

/// A parsed, validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub(crate) users: BTreeMap<String, UserEntry>,
    pub(crate) roles: BTreeMap<String, RoleEntry>,
    pub(crate) grants: Vec<Grant>,
    pub(crate) masks: Vec<MaskRule>,
    pub(crate) row_filters: Vec<RowFilterRule>,
    pub(crate) pseudonym: PseudonymConfig,
}

/// A user's roles and attributes (row filters read attributes with `attribute('name')`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Roles in addition to those of the users file.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Session attributes, e.g. `state = "CA"`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// What a role may do beyond its grants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// Administrators see other users' grants (`SHOW GRANTS FOR u`), `SHOW POLICIES`, and may
    /// be granted the `system` schema (audit log).
    #[serde(default)]
    pub admin: bool,
    /// What the role is for.
    #[serde(default)]
    pub description: String,
}

/// A name pattern: `*` matches anything, `p*` a prefix, `a*b` both ends; otherwise the exact
/// (case-insensitive) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Whether `name` matches (case-insensitive; `*` matches any run of characters).
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.to_ascii_lowercase().as_bytes(), name.to_ascii_lowercase().as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Pattern(String::deserialize(d)?))
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

fn any() -> Pattern {
    Pattern("*".into())
}

/// Which objects a rule applies to: catalog, schema and table patterns (each `*` when left
/// out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Catalog pattern (the lakehouse catalog is `rxgate`).
    #[serde(default = "any")]
    pub catalog: Pattern,
    /// Schema pattern (`health`, `health_quarantine`, `system`).
    #[serde(default = "any")]
    pub schema: Pattern,
    /// Table pattern.
    #[serde(default = "any")]
    pub table: Pattern,
}

impl Target {
    /// Whether the rule covers `catalog.schema.table`.
    pub fn covers(&self, catalog: &str, schema: &str, table: &str) -> bool {
        self.catalog.matches(catalog) && self.schema.matches(schema) && self.table.matches(table)
    }

    /// `catalog.schema.table` as written, for listings.
    pub fn display(&self) -> String {
        format!("{}.{}.{}", self.catalog.as_str(), self.schema.as_str(), self.table.as_str())
    }
}

/// Privileges on the covered tables (`select` when left out), for `columns` (default all).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Roles that get it.
    pub roles: Vec<String>,
    /// Covered tables.
    #[serde(flatten)]
    pub on: Target,
    /// Column patterns; `["*"]` when left out.
    #[serde(default = "all_columns")]
    pub columns: Vec<Pattern>,
    /// What the grant allows; `["select"]` when left out.
    #[serde(default = "select_only")]
    pub privileges: Vec<Privilege>,
}

impl Grant {
    /// Whether the grant gives `privilege`.
    pub fn gives(&self, privilege: Privilege) -> bool {
        self.privileges.iter().any(|p| *p == privilege || *p == Privilege::All)
    }
}

/// What a grant allows. Deny by default; administrator roles have every privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privilege {
    /// Read rows (queries, and the predicates of DELETE and UPDATE).
    Select,
    /// `INSERT`, `COPY … FROM`, Flight SQL ingest.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`, `TRUNCATE`, `INSERT OVERWRITE` (with insert).
    Delete,
    /// `CREATE TABLE|VIEW` in a schema (a grant with `table = "*"`), `CREATE SCHEMA`.
    Create,
    /// `ALTER TABLE` (rename).
    Alter,
    /// `DROP TABLE|VIEW|SCHEMA`.
    Drop,
    /// Every privilege.
    All,
}

impl Privilege {
    /// Lower-case name, as in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "select",
            Privilege::Insert => "insert",
            Privilege::Update => "update",
            Privilege::Delete => "delete",
            Privilege::Create => "create",
            Privilege::Alter => "alter",
            Privilege::Drop => "drop",
            Privilege::All => "all",
        }
    }
}

fn select_only() -> Vec<Privilege> {
    vec![Privilege::Select]
}

fn all_columns() -> Vec<Pattern> {
    vec![any()]
}

/// How a column is masked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum MaskKind {
    /// Letters → `x`/`X`, digits → `n`; other characters kept.
    Redact,
    /// Only the first `n` characters shown, the rest redacted.
    ShowFirst {
        /// Characters kept.
        n: usize,
    },
    /// Only the last `n` characters shown, the rest redacted.
    ShowLast {
        /// Characters kept.
        n: usize,
    },
    /// Keyed HMAC-SHA256 pseudonym: stable (joinable) and not reversible without the key.
    Pseudonym,
    /// Always NULL (of the column's type).
    Null,
    /// A date or timestamp truncated to January 1st of its year.
    Year,
    /// A ZIP code reduced to its first three digits.
    Zip3,
    /// CMS small-cell suppression: counts from 1 to 10 become NULL.
    SmallCell,
    /// Any SQL expression over the table's columns, e.g. `round(total_drug_cost, -3)`.
    Sql {
        /// The expression; `{col}` stands for the masked column.
        expr: String,
    },
}

impl MaskKind {
    /// Short name for listings and audit records.
    pub fn name(&self) -> String {
        match self {
            MaskKind::Redact => "redact".into(),
            MaskKind::ShowFirst { n } => format!("show_first({n})"),
            MaskKind::ShowLast { n } => format!("show_last({n})"),
            MaskKind::Pseudonym => "pseudonym".into(),
            MaskKind::Null => "null".into(),
            MaskKind::Year => "year".into(),
            MaskKind::Zip3 => "zip3".into(),
            MaskKind::SmallCell => "small_cell".into(),
            MaskKind::Sql { expr } => format!("sql({expr})"),
        }
    }
}

/// A mask of one or more columns of the covered tables, for some roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// Roles whose view is masked.
    pub roles: Vec<String>,
    /// Covered tables.
    #[serde(flatten)]
    pub on: Target,
    /// Masked column patterns.
    pub columns: Vec<Pattern>,
    /// The mask.
    pub mask: MaskKind,
}

/// A row filter on the covered tables, for some roles: a SQL predicate that may use
/// `current_user` and `attribute('name')`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilterRule {
    /// Roles whose rows are filtered.
    pub roles: Vec<String>,
    /// Covered tables.
    #[serde(flatten)]
    pub on: Target,
    /// The predicate.
    pub filter: String,
}

/// Pseudonym settings. The key itself is not in the policy file: the server reads it from
/// `RXGATE_PSEUDONYM_KEY` or `[policy] pseudonym_key_file`; rotate key and `key_id` together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymConfig {
    /// Key id written in front of every pseudonym (`k1:…`), so keys can be rotated.
    #[serde(default = "default_key_id")]
    pub key_id: String,
}

fn default_key_id() -> String {
    "k1".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
    #[serde(default)]
    roles: BTreeMap<String, RoleEntry>,
    #[serde(default, rename = "grant")]
    grants: Vec<Grant>,
    #[serde(default, rename = "mask")]
    masks: Vec<MaskRule>,
    #[serde(default, rename = "row_filter")]
    row_filters: Vec<RowFilterRule>,
    #[serde(default)]
    pseudonym: Option<PseudonymConfig>,
}

impl Policy {
    /// Parses and validates a policy file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let raw: PolicyToml = toml::from_str(text)
            .map_err(|e| Error::new(StatusCode::InvalidArgument, format!("{origin}: {}", e.message())))?;
        let policy = Policy {
            users: raw.users,
            roles: raw.roles,
            grants: raw.grants,
            masks: raw.masks,
            row_filters: raw.row_filters,
            pseudonym: raw.pseudonym.unwrap_or(PseudonymConfig { key_id: default_key_id() }),
        };
        policy.validate(origin)?;
        Ok(policy)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |m: String| Err(Error::new(StatusCode::InvalidArgument, format!("{origin}: {m}")));
        let known = |r: &String| self.roles.contains_key(r);
        for (name, u) in &self.users {
            if let Some(r) = u.roles.iter().find(|r| !known(r)) {
                return bad(format!("user {name} has role \"{r}\", which [roles] does not define"));
            }
        }
        let rules = self
            .grants
            .iter()
            .map(|g| ("grant", &g.roles))
            .chain(self.masks.iter().map(|m| ("mask", &m.roles)))
            .chain(self.row_filters.iter().map(|f| ("row_filter", &f.roles)));
        for (kind, roles) in rules {
            if roles.is_empty() {
                return bad(format!("a [[{kind}]] names no roles"));
            }
            if let Some(r) = roles.iter().find(|r| !known(r)) {
                return bad(format!("a [[{kind}]] names role \"{r}\", which [roles] does not define"));
            }
        }
        for m in &self.masks {
            if m.columns.is_empty() {
                return bad(format!("a [[mask]] on {} names no columns", m.on.display()));
            }
            if let MaskKind::Sql { expr } = &m.mask {
                if expr.trim().is_empty() {
                    return bad("a sql mask has an empty expr".into());
                }
            }
        }
        for f in &self.row_filters {
            if f.filter.trim().is_empty() {
                return bad(format!("a [[row_filter]] on {} is empty", f.on.display()));
            }
        }
        if self.pseudonym.key_id.is_empty() || !self.pseudonym.key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return bad("[pseudonym] key_id must be letters and digits".into());
        }
        Ok(())
    }

    /// The roles of `user`: those the users file gives (`login_roles`) and those this policy
    /// adds, deduplicated, in that order.
    pub fn roles_of(&self, user: &str, login_roles: &[String]) -> Vec<String> {
        let mut roles: Vec<String> = login_roles.to_vec();
        if let Some(u) = self.users.get(user) {
            roles.extend(u.roles.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        roles.retain(|r| seen.insert(r.clone()));
        roles
    }

    /// The `[users.NAME]` entry of `user`, if the policy has one.
    pub fn user(&self, user: &str) -> Option<&UserEntry> {
        self.users.get(user)
    }

    /// The attributes of `user` (`attribute('state')` in row filters).
    pub fn attributes_of(&self, user: &str) -> BTreeMap<String, String> {
        self.users.get(user).map(|u| u.attributes.clone()).unwrap_or_default()
    }

    /// Whether one of `roles` is an administrator role.
    pub fn is_admin(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.roles.get(r).is_some_and(|e| e.admin))
    }

    /// The pseudonym key settings.
    pub fn pseudonym(&self) -> &PseudonymConfig {
        &self.pseudonym
    }

    /// Defined roles.
    pub fn roles(&self) -> &BTreeMap<String, RoleEntry> {
        &self.roles
    }

    /// All grants.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// All masks.
    pub fn masks(&self) -> &[MaskRule] {
        &self.masks
    }

    /// All row filters.
    pub fn row_filters(&self) -> &[RowFilterRule] {
        &self.row_filters
    }
}

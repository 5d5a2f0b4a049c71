//! Access policies: users → roles, grants on catalog / schema / table / column, masks and
//! row filters ([`Policy`], parsed from `catalog/policies.toml`), what a principal may see of
//! a table ([`Policy::table_access`]), and the plan rewrite that enforces it
//! ([`secured_plan`]). No IO and no protocol knowledge: the engine loads the file and applies
//! the rewrite to every table a session resolves.

mod eval;
mod injective;
mod mask;
mod model;
mod rule;
mod secure;

pub use eval::{ColumnAccess, Principal, TableAccess};
pub use injective::InjectiveMaskRule;
pub use mask::{redact, show_first, show_last, MaskFunctions, PseudonymKey};
pub use model::{
    Grant, MaskKind, MaskRule, Pattern, Policy, Privilege, PseudonymConfig, RoleEntry, RowFilterRule, Target, UserEntry,
};
pub use rule::PseudonymLiteralRule;
pub use secure::secured_plan;

//! The PostgreSQL dialect layer (crate rxgate-pgcompat) as the engine uses it: the catalog
//! emulation installed into every session, and the client rewrites the statement layer and
//! the query planner apply.

pub(crate) use rxgate_pgcompat::{
    install, null_correlated_subqueries, output_names, placeholder_casts, replace_known_tokens, rewrite,
    touches_catalog, unique_aliases,
};

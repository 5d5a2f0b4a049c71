//! PostgreSQL compatibility of statements: rewrites that let DataFusion plan what clients
//! send, and PostgreSQL's output column names. The engine parses; this module works on its
//! tokens ([`replace_known_tokens`]) and statements ([`rewrite`]).
//!
//! By job: `casts` (reg* / oid casts, pg_catalog operators), `subqueries` (scalar and
//! ARRAY subqueries of catalog statements), `known` (client statements replaced whole),
//! `names` (output column names, unique aliases, placeholder types).
//!
//! Catalog statements (they read pg_catalog / information_schema or call pg_* functions) get
//! the full set of datafusion-pg-catalog rules. Statements over user data get only rewrites
//! that cannot change their meaning (casts to reg* types, `pg_catalog.` qualifiers); in
//! particular the upstream rule that replaces correlated subqueries in a projection with NULL
//! never touches them.

mod casts;
mod known;
mod names;
mod subqueries;

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableAlias, TableFactor, Value,
    Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall, FixArrayLiteral, FixCollate,
    PrependUnqualifiedPgTableName, RemoveQualifier, ResolveUnqualifiedIdentifer, RewriteArrayAnyAllOperation,
    SqlStatementRewriteRule,
};

use casts::PgCasts;
pub use known::replace_known_tokens;
pub use names::{output_names, placeholder_casts, unique_aliases};
use subqueries::AggregateSubqueries;

use crate::tables::is_own_table;

/// Rewrites one parsed statement for DataFusion: casts to PostgreSQL's OID types and
/// `pg_catalog` operators always; for a statement that reads the catalog
/// ([`touches_catalog`]) also datafusion-pg-catalog's rules, PostgreSQL's
/// `information_schema.columns` and aggregated subqueries. Keep the statement as parsed for
/// [`output_names`].
pub fn rewrite(mut stmt: Statement) -> Statement {
    let catalog = touches_catalog(&stmt);
    let _ = VisitMut::visit(&mut stmt, &mut PgCasts);
    if catalog {
        let _ = VisitMut::visit(&mut stmt, &mut InformationSchemaColumns);
        let _ = VisitMut::visit(&mut stmt, &mut QualifyOwnTables);
    }
    if catalog {
        for rule in catalog_rules() {
            stmt = rule.rewrite(stmt);
        }
    } else {
        stmt = RemoveQualifier.rewrite(stmt);
        stmt = CurrentUserVariableToSessionUserFunctionCall.rewrite(stmt);
    }
    stmt
}

fn catalog_rules() -> &'static [Arc<dyn SqlStatementRewriteRule>] {
    static RULES: OnceLock<Vec<Arc<dyn SqlStatementRewriteRule>>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            Arc::new(AliasDuplicatedProjectionRewrite),
            Arc::new(ResolveUnqualifiedIdentifer),
            Arc::new(RewriteArrayAnyAllOperation),
            Arc::new(PrependUnqualifiedPgTableName),
            Arc::new(RemoveQualifier),
            Arc::new(FixArrayLiteral),
            Arc::new(CurrentUserVariableToSessionUserFunctionCall),
            Arc::new(FixCollate),
            Arc::new(AggregateSubqueries),
        ]
    })
}

/// Our own pg_catalog tables that datafusion-pg-catalog does not know (`pg_stat_activity`)
/// are qualified with `pg_catalog` when named alone, as PostgreSQL's search path finds them.
struct QualifyOwnTables;

impl VisitorMut for QualifyOwnTables {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: None, .. } = factor {
            if let [part] = name.0.as_slice() {
                if part.as_ident().is_some_and(|i| {
                    let lower = i.value.to_ascii_lowercase();
                    is_own_table(&lower) && !PG_CATALOG_TABLES.contains(&lower.as_str())
                }) {
                    name.0.insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// DataFusion's information_schema read through views with PostgreSQL's columns:
/// `columns` has Arrow type names in `data_type`, read as PostgreSQL's names (`integer`,
/// `double precision`, `ARRAY`…) with `udt_catalog`, `udt_schema`, `udt_name`; `views` has
/// `definition`, read as `view_definition` with the SQL standard's (constant) `check_option`
/// and `is_*` columns.
struct InformationSchemaColumns;

const PG_COLUMNS_VIEW: &str = "SELECT table_catalog, table_schema, table_name, column_name, ordinal_position, \
    column_default, is_nullable, rxgate_pg_data_type(data_type) AS data_type, character_maximum_length, \
    character_octet_length, numeric_precision, numeric_precision_radix, numeric_scale, datetime_precision, \
    interval_type, table_catalog AS udt_catalog, 'pg_catalog' AS udt_schema, \
    rxgate_pg_udt_name(data_type) AS udt_name FROM information_schema.columns";

const PG_VIEWS_VIEW: &str = "SELECT table_catalog, table_schema, table_name, definition AS view_definition, \
    'NONE' AS check_option, 'NO' AS is_updatable, 'NO' AS is_insertable_into, 'NO' AS is_trigger_updatable, \
    'NO' AS is_trigger_deletable, 'NO' AS is_trigger_insertable_into FROM information_schema.views";

impl VisitorMut for InformationSchemaColumns {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, args: None, .. } = factor else { return ControlFlow::Continue(()) };
        let parts: Vec<String> =
            name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
        let (table, sql) = match parts.as_slice() {
            [.., s, t] if s == "information_schema" && t == "columns" => ("columns", PG_COLUMNS_VIEW),
            [.., s, t] if s == "information_schema" && t == "views" => ("views", PG_VIEWS_VIEW),
            _ => return ControlFlow::Continue(()),
        };
        let Ok(Statement::Query(view)) =
            Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_statement())
        else {
            return ControlFlow::Continue(());
        };
        let alias =
            alias.clone().or_else(|| Some(TableAlias { name: Ident::new(table), columns: vec![], explicit: false }));
        *factor = TableFactor::Derived { lateral: false, subquery: view, alias, sample: None };
        ControlFlow::Continue(())
    }
}

fn is_catalog_relation(name: &ObjectName) -> bool {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
    match parts.as_slice() {
        [t] => PG_CATALOG_TABLES.contains(&t.as_str()) || is_own_table(t),
        [.., s, _] => s == "pg_catalog" || s == "information_schema",
        [] => false,
    }
}

/// The last resort for a catalog statement whose correlated subqueries DataFusion cannot
/// decorrelate: scalar subqueries in select lists (at any depth, e.g. inside CASE) become
/// NULL. The catalog rows such subqueries look up (column defaults, identity sequences,
/// collations, policies) do not exist in rxgate.
pub fn null_correlated_subqueries(mut stmt: Statement) -> Statement {
    struct Inner;
    impl VisitorMut for Inner {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Subquery(_)) {
                *e = Expr::Value(Value::Null.into());
            }
            ControlFlow::Continue(())
        }
    }
    struct Outer;
    impl VisitorMut for Outer {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                for item in select.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                        let _ = VisitMut::visit(e, &mut Inner);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(&mut stmt, &mut Outer);
    stmt
}

/// Whether a statement reads the catalog (pg_catalog or information_schema relations).
pub fn touches_catalog(stmt: &Statement) -> bool {
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            if is_catalog_relation(relation) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = stmt.visit(&mut v);
    v.0
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    /// The statements of `sql` as the engine parses them: tokens, known statements
    /// replaced, parsed, each as written and rewritten.
    fn parse(sql: &str) -> Vec<(Statement, Statement)> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().unwrap();
        let tokens = replace_known_tokens(tokens).unwrap();
        let stmts = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens).parse_statements().unwrap();
        stmts.into_iter().map(|s| (s.clone(), rewrite(s))).collect()
    }

    fn one(sql: &str) -> Statement {
        parse(sql).remove(0).1
    }

    #[test]
    fn regclass_casts_become_lookups() {
        let s = one("SELECT * FROM pg_catalog.pg_class WHERE oid = 'health.t'::regclass").to_string();
        assert!(s.contains("rxgate_regclass('health.t')"), "{s}");
        let s = one("SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c").to_string();
        assert!(s.contains("rxgate_regclass_name(c.oid)"), "{s}");
        let s = one("SELECT typname FROM pg_type WHERE oid = $1::oid").to_string();
        assert!(s.contains("CAST($1 AS INT)"), "{s}");
        let s = one("SELECT 1 WHERE 'a' OPERATOR(pg_catalog.~) '^a'").to_string();
        assert!(s.contains("~ '^a'"), "{s}");
    }

    #[test]
    fn user_queries_keep_their_subqueries() {
        let sql = "SELECT (SELECT max(x) FROM t2 WHERE t2.a = t1.a) FROM t1";
        assert_eq!(one(sql).to_string(), sql);
    }

    #[test]
    fn postgres_output_names() {
        let s = one("SELECT count(*), 1, x, t.y, CAST(z AS INT), 1::int, (SELECT a FROM t), version() AS v FROM t");
        let fields: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        assert_eq!(output_names(&s, &fields).unwrap(), vec!["count", "?column?", "x", "y", "z", "int4", "a", "v"]);
        let s = one("SELECT n.oid, n.* FROM pg_catalog.pg_namespace n");
        let fields: Vec<String> = ["__alias_oid", "oid", "nspname"].iter().map(|s| s.to_string()).collect();
        assert_eq!(output_names(&s, &fields).unwrap(), vec!["oid", "oid", "nspname"]);
    }

    #[test]
    fn duplicate_expressions_get_unique_aliases() {
        let s = unique_aliases(one("SELECT (SELECT 1), (SELECT 1)"));
        let text = s.to_string();
        assert!(text.contains("AS \"?column?#1\"") && text.contains("AS \"?column?#2\""), "{text}");
    }
}

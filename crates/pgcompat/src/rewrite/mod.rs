//! Parsing with PostgreSQL compatibility: the statement as written, then rewrites that let
//! DataFusion plan what clients send, and PostgreSQL's output column names.
//!
//! Catalog statements (they read pg_catalog / information_schema or call pg_* functions) get
//! the full set of datafusion-pg-catalog rules. Statements over user data get only rewrites
//! that cannot change their meaning (casts to reg* types, `pg_catalog.` qualifiers); in
//! particular the upstream rule that replaces correlated subqueries in a projection with NULL
//! never touches them.

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType as SqlType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr,
    Statement, TableAlias, TableFactor, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall, FixArrayLiteral, FixCollate,
    PrependUnqualifiedPgTableName, RemoveQualifier, ResolveUnqualifiedIdentifer, RewriteArrayAnyAllOperation,
    SqlStatementRewriteRule,
};

use super::tables::OWN_TABLES;

/// Parses SQL text into statements: each as written (for PostgreSQL's output column names)
/// and rewritten for DataFusion.
pub(crate) fn parse_statements(sql: &str) -> Result<Vec<(Statement, Statement)>, ParserError> {
    let tokens = replace_known(sql)?;
    let statements = match tokens {
        Some(tokens) => Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens).parse_statements()?,
        None => Parser::parse_sql(&PostgreSqlDialect {}, sql)?,
    };
    Ok(statements
        .into_iter()
        .map(|mut s| {
            crate::limits::balance_boolean_chains(&mut s);
            (s.clone(), rewrite(s))
        })
        .collect())
}

/// Rewrites one statement.
fn rewrite(mut stmt: Statement) -> Statement {
    let catalog = touches_catalog(&stmt);
    let _ = VisitMut::visit(&mut stmt, &mut PgCasts);
    if catalog {
        let _ = VisitMut::visit(&mut stmt, &mut InformationSchemaColumns);
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

/// `information_schema.columns` is DataFusion's, with Arrow type names in `data_type`; it is
/// read through a view with PostgreSQL's names (`integer`, `double precision`, `ARRAY`…) and
/// PostgreSQL's `udt_catalog`, `udt_schema`, `udt_name` columns.
struct InformationSchemaColumns;

const PG_COLUMNS_VIEW: &str = "SELECT table_catalog, table_schema, table_name, column_name, ordinal_position, \
    column_default, is_nullable, rxgate_pg_data_type(data_type) AS data_type, character_maximum_length, \
    character_octet_length, numeric_precision, numeric_precision_radix, numeric_scale, datetime_precision, \
    interval_type, table_catalog AS udt_catalog, 'pg_catalog' AS udt_schema, \
    rxgate_pg_udt_name(data_type) AS udt_name FROM information_schema.columns";

impl VisitorMut for InformationSchemaColumns {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, args: None, .. } = factor else { return ControlFlow::Continue(()) };
        let parts: Vec<String> =
            name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
        if !matches!(parts.as_slice(), [.., s, t] if s == "information_schema" && t == "columns") {
            return ControlFlow::Continue(());
        }
        let Ok(Statement::Query(view)) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(PG_COLUMNS_VIEW)
            .and_then(|mut p| p.parse_statement())
        else {
            return ControlFlow::Continue(());
        };
        let alias = alias.clone().or_else(|| {
            Some(TableAlias { name: Ident::new("columns"), columns: vec![], explicit: false })
        });
        *factor = TableFactor::Derived { lateral: false, subquery: view, alias, sample: None };
        ControlFlow::Continue(())
    }
}

fn is_catalog_relation(name: &ObjectName) -> bool {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).collect();
    match parts.as_slice() {
        [t] => PG_CATALOG_TABLES.contains(&t.as_str()) || OWN_TABLES.contains(&t.as_str()),
        [.., s, _] => s == "pg_catalog" || s == "information_schema",
        [] => false,
    }
}

/// The last resort for a catalog statement whose correlated subqueries DataFusion cannot
/// decorrelate: scalar subqueries in select lists (at any depth, e.g. inside CASE) become
/// NULL. The catalog rows such subqueries look up (column defaults, identity sequences,
/// collations, policies) do not exist in rxgate.
pub(crate) fn null_correlated_subqueries(mut stmt: Statement) -> Statement {
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
pub(crate) fn touches_catalog(stmt: &Statement) -> bool {
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

// ---------------------------------------------------------------------------------------
// Casts to PostgreSQL's OID types and pg_catalog operators
// ---------------------------------------------------------------------------------------

/// The PostgreSQL name of a type as written in a cast, lower-case, without `pg_catalog.`.
fn type_name(dt: &SqlType) -> String {
    let s = match dt {
        SqlType::Regclass => "regclass".to_string(),
        SqlType::Custom(name, _) => {
            name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).unwrap_or_default()
        }
        other => other.to_string().to_ascii_lowercase(),
    };
    s.strip_prefix("pg_catalog.").map(str::to_string).unwrap_or(s)
}

fn call(name: &str, arg: Expr) -> Expr {
    call_n(name, vec![arg])
}

/// A call of the function `name` with positional arguments.
fn call_n(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn cast_to(expr: Expr, data_type: SqlType) -> Expr {
    Expr::Cast { kind: CastKind::Cast, expr: Box::new(expr), data_type, array: false, format: None }
}

/// Whether an expression is text that names an object (`'t'`, `$1`, `'t'::text`).
fn is_name_text(e: &Expr) -> bool {
    match e {
        Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(_) | Value::Placeholder(_), .. }) => true,
        Expr::Cast { data_type, expr, .. } => {
            matches!(type_name(data_type).as_str(), "text" | "varchar" | "name" | "character varying")
                || is_name_text(expr)
        }
        Expr::Nested(e) => is_name_text(e),
        _ => false,
    }
}

/// `array_agg(x.atttypid …)`: an aggregate of pg_attribute's type OIDs.
fn is_type_oid_array_agg(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    let is_array_agg = f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("array_agg"));
    let FunctionArguments::List(list) = &f.args else { return false };
    let column = match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i)))) => Some(i),
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(ids)))) => ids.last(),
        _ => None,
    };
    is_array_agg && list.args.len() == 1 && column.is_some_and(|c| c.value.eq_ignore_ascii_case("atttypid"))
}

/// `'t'::regclass` → the relation's OID (`rxgate_regclass('t')`), likewise regtype and
/// regnamespace; `oid::regclass::text` → its name; `x::oid` → `CAST(x AS INT)` (OIDs are int4
/// here); `x::name` → text; the other reg* casts keep their operand.
struct PgCasts;

impl VisitorMut for PgCasts {
    type Break = ();

    /// `WITH RECURSIVE t(a, b) AS (SELECT x, 0 UNION ALL …)`: DataFusion does not apply the
    /// column list to a recursive CTE's anchor, so the names go onto its select list.
    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        if let Some(with) = q.with.as_mut() {
            for cte in with.cte_tables.iter_mut() {
                let names: Vec<Ident> = cte.alias.columns.iter().map(|c| c.name.clone()).collect();
                if names.is_empty() {
                    continue;
                }
                let mut body = cte.query.body.as_mut();
                while let SetExpr::SetOperation { left, .. } = body {
                    body = left.as_mut();
                }
                if let SetExpr::Select(select) = body {
                    let plain = select
                        .projection
                        .iter()
                        .all(|i| matches!(i, SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }));
                    if plain && select.projection.len() == names.len() {
                        for (item, name) in select.projection.iter_mut().zip(names) {
                            let expr = match item {
                                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                                _ => unreachable!(),
                            };
                            *item = SelectItem::ExprWithAlias { expr, alias: name };
                        }
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// `FROM pg_catalog.unnest(arr) x` → DataFusion's `UNNEST(arr) AS x`.
    fn pre_visit_table_factor(&mut self, tf: &mut datafusion::sql::sqlparser::ast::TableFactor) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::TableFactor;
        if let TableFactor::Table { name, args: Some(args), alias, .. } = tf {
            let is_unnest =
                name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"));
            let exprs: Vec<Expr> = args
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            if is_unnest && exprs.len() == args.args.len() {
                // PostgreSQL names the single column of `unnest(a) x` after the alias too.
                let mut alias = alias.clone();
                if let Some(a) = alias.as_mut() {
                    if a.columns.is_empty() && exprs.len() == 1 {
                        a.columns.push(datafusion::sql::sqlparser::ast::TableAliasColumnDef::from_name(
                            a.name.value.clone(),
                        ));
                    }
                }
                *tf = TableFactor::UNNEST {
                    alias,
                    array_exprs: exprs,
                    with_offset: false,
                    with_offset_alias: None,
                    with_ordinality: false,
                };
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // oid::regclass::text and friends: the name, not the number.
        if let Expr::Cast { data_type, expr: inner, .. } = expr {
            if matches!(type_name(data_type).as_str(), "text" | "varchar" | "name" | "character varying") {
                if let Expr::Cast { data_type: reg, expr: operand, .. } = inner.as_ref() {
                    let f = match type_name(reg).as_str() {
                        "regclass" => Some("rxgate_regclass_name"),
                        "regtype" => Some("rxgate_regtype_name"),
                        "regnamespace" => Some("rxgate_regnamespace_name"),
                        _ => None,
                    };
                    if let (Some(f), false) = (f, is_name_text(operand)) {
                        *expr = call(f, (**operand).clone());
                    }
                }
            }
        }
        // `(expr).field` (a composite's field) → get_field(expr, 'field').
        if let Expr::CompoundFieldAccess { root, access_chain } = expr {
            if matches!(root.as_ref(), Expr::Nested(_) | Expr::Function(_))
                && access_chain.iter().all(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_))))
            {
                let mut e = (**root).clone();
                for a in access_chain.iter() {
                    if let AccessExpr::Dot(Expr::Identifier(field)) = a {
                        e = call_n("get_field", vec![e, Expr::Value(Value::SingleQuotedString(ident_name(field)).into())]);
                    }
                }
                *expr = e;
            }
        }
        // LIKE … ESCAPE 'c' for c other than the backslash (SQLAlchemy uses '/'): DataFusion
        // knows only the backslash, so the pattern is translated.
        if let Expr::Like { pattern, escape_char, .. } | Expr::ILike { pattern, escape_char, .. } = expr {
            if let Some(Value::SingleQuotedString(e)) = escape_char.clone() {
                if e != "\\" {
                    **pattern = call_n(
                        "rxgate_like_escape",
                        vec![(**pattern).clone(), Expr::Value(Value::SingleQuotedString(e).into())],
                    );
                    *escape_char = None;
                }
            }
        }
        if let Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(parts), .. } = expr {
            if parts.len() == 2 && parts[0].eq_ignore_ascii_case("pg_catalog") {
                let mapped = match parts[1].as_str() {
                    "~" => Some(BinaryOperator::PGRegexMatch),
                    "~*" => Some(BinaryOperator::PGRegexIMatch),
                    "!~" => Some(BinaryOperator::PGRegexNotMatch),
                    "!~*" => Some(BinaryOperator::PGRegexNotIMatch),
                    "~~" => Some(BinaryOperator::PGLikeMatch),
                    "!~~" => Some(BinaryOperator::PGNotLikeMatch),
                    "~~*" => Some(BinaryOperator::PGILikeMatch),
                    "=" => Some(BinaryOperator::Eq),
                    "<>" => Some(BinaryOperator::NotEq),
                    "<" => Some(BinaryOperator::Lt),
                    ">" => Some(BinaryOperator::Gt),
                    "<=" => Some(BinaryOperator::LtEq),
                    ">=" => Some(BinaryOperator::GtEq),
                    "||" => Some(BinaryOperator::StringConcat),
                    _ => None,
                };
                if let (Some(m), Expr::BinaryOp { op, .. }) = (mapped, expr) {
                    *op = m;
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if is_type_oid_array_agg(expr) {
            // `array_agg(a.atttypid …)` is an oid[] in PostgreSQL; asyncpg's type introspection
            // reads it with its built-in oid[] codec. Typed as unsigned ints, the frontend
            // describes it as oid[].
            use datafusion::sql::sqlparser::ast::ArrayElemTypeDef as E;
            let agg = expr.clone();
            *expr = cast_to(agg, SqlType::Array(E::SquareBracket(Box::new(SqlType::IntUnsigned(None)), None)));
            return ControlFlow::Continue(());
        }
        let Expr::Cast { data_type, expr: inner, .. } = expr else { return ControlFlow::Continue(()) };
        let name = type_name(data_type);
        let replacement = match name.as_str() {
            "regclass" | "regtype" | "regnamespace" => {
                if is_name_text(inner) {
                    Some(call(&format!("rxgate_{name}"), (**inner).clone()))
                } else {
                    Some(cast_to((**inner).clone(), SqlType::Int(None)))
                }
            }
            "regproc" | "regprocedure" | "regoper" | "regoperator" | "regrole" | "regconfig" | "regdictionary"
            | "regcollation" | "xid" | "cid" | "tid" | "int2vector" | "oidvector" => Some((**inner).clone()),
            "oid" => Some(cast_to((**inner).clone(), SqlType::Int(None))),
            "name" | "\"char\"" | "char" if matches!(data_type, SqlType::Custom(..)) => {
                Some(cast_to((**inner).clone(), SqlType::Text))
            }
            "text" if matches!(data_type, SqlType::Custom(..)) => Some(cast_to((**inner).clone(), SqlType::Text)),
            _ if matches!(data_type, SqlType::Array(_)) => {
                // oid[], regtype[], name[], "char"[] → int[] / text[].
                use datafusion::sql::sqlparser::ast::ArrayElemTypeDef as E;
                let elem = match data_type {
                    SqlType::Array(E::SquareBracket(t, _) | E::AngleBracket(t) | E::Parenthesis(t)) => {
                        Some(type_name(t))
                    }
                    _ => None,
                };
                let mapped = match elem.as_deref() {
                    Some("oid" | "regtype" | "regclass" | "regproc" | "regnamespace" | "xid") => {
                        Some(SqlType::Int(None))
                    }
                    Some("name" | "\"char\"") => Some(SqlType::Text),
                    _ => None,
                };
                let array = |t: SqlType| SqlType::Array(E::SquareBracket(Box::new(t), None));
                let is_param =
                    matches!(inner.as_ref(), Expr::Value(ValueWithSpan { value: Value::Placeholder(_), .. }));
                match mapped {
                    // A parameter of type oid[] (asyncpg's type introspection binds one): typed
                    // as unsigned ints (PostgreSQL's oid) so the frontend can describe it as
                    // oid[], then used as int[] like every OID column here.
                    Some(SqlType::Int(None)) if is_param => Some(cast_to(
                        cast_to((**inner).clone(), array(SqlType::IntUnsigned(None))),
                        array(SqlType::Int(None)),
                    )),
                    Some(t) => Some(cast_to((**inner).clone(), array(t))),
                    None => None,
                }
            }
            "_text" | "_name" | "_oid" | "_int2" | "_int4" => {
                let elem = match name.as_str() {
                    "_int2" => SqlType::SmallInt(None),
                    "_int4" | "_oid" => SqlType::Int(None),
                    _ => SqlType::Text,
                };
                Some(cast_to(
                    (**inner).clone(),
                    SqlType::Array(datafusion::sql::sqlparser::ast::ArrayElemTypeDef::SquareBracket(
                        Box::new(elem),
                        None,
                    )),
                ))
            }
            _ => None,
        };
        if let Some(r) = replacement {
            *expr = r;
        }
        ControlFlow::Continue(())
    }
}

// ---------------------------------------------------------------------------------------
// Scalar and ARRAY subqueries of catalog statements
// ---------------------------------------------------------------------------------------

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
];

fn has_aggregate(e: &Expr) -> bool {
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase());
                if name.is_some_and(|n| AGGREGATES.contains(&n.as_str())) {
                    self.0 = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = Visit::visit(e, &mut v);
    v.0
}

/// The single select-list expression of a plain `SELECT e FROM … WHERE …` (no grouping,
/// aggregate, DISTINCT, LIMIT or set operation).
fn plain_single_item(q: &mut Query) -> Option<&mut Expr> {
    if q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let grouped =
        !matches!(&select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if select.projection.len() != 1 || grouped || select.distinct.is_some() || select.having.is_some() {
        return None;
    }
    match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } if !has_aggregate(e) => Some(e),
        _ => None,
    }
}

fn aggregate_call(name: &str, arg: Expr, order_by: Vec<datafusion::sql::sqlparser::ast::OrderByExpr>) -> Expr {
    let mut f = match call(name, arg) {
        Expr::Function(f) => f,
        _ => unreachable!(),
    };
    if !order_by.is_empty() {
        if let FunctionArguments::List(list) = &mut f.args {
            list.clauses.push(datafusion::sql::sqlparser::ast::FunctionArgumentClause::OrderBy(order_by));
        }
    }
    Expr::Function(f)
}

/// DataFusion plans a correlated scalar subquery only when it aggregates. Catalog queries
/// use plain ones that return at most one row (`(SELECT collname FROM pg_collation WHERE
/// oid = a.attcollation)`): their single value becomes `first_value(…)`. `ARRAY(SELECT e …)`
/// becomes `(SELECT array_agg(e ORDER BY …) …)`.
#[derive(Debug)]
struct AggregateSubqueries;

impl SqlStatementRewriteRule for AggregateSubqueries {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                match expr {
                    Expr::Subquery(q) => {
                        if let Some(item) = plain_single_item(q) {
                            *item = aggregate_call("first_value", item.clone(), vec![]);
                        }
                    }
                    Expr::Function(f)
                        if f.name.0.len() == 1
                            && f.name.0[0].as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("array")) =>
                    {
                        if let FunctionArguments::Subquery(q) = &f.args {
                            let mut q = q.clone();
                            let order_by = match q.order_by.take() {
                                Some(ob) => match ob.kind {
                                    datafusion::sql::sqlparser::ast::OrderByKind::Expressions(e) => e,
                                    _ => vec![],
                                },
                                None => vec![],
                            };
                            if let Some(item) = plain_single_item(&mut q) {
                                *item = aggregate_call("array_agg", item.clone(), order_by);
                                *expr = Expr::Subquery(q);
                            }
                        }
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

// ---------------------------------------------------------------------------------------
// Known statements replaced whole
// ---------------------------------------------------------------------------------------

/// Client statements DataFusion cannot plan, replaced by an equivalent over what rxgate has
/// (always an empty result of the same shape: the objects they ask about do not exist here).
/// Matched on tokens, ignoring whitespace and case of keywords; `$1` in a pattern matches any
/// one token (psql inlines the table's OID as a literal).
const KNOWN: &[(&str, &str)] = &[
    // psql 15 `\d TABLE`: row-level security policies (there are none).
    (
        "SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = $1 ORDER BY 1",
        "SELECT NULL::TEXT AS polname, NULL::BOOLEAN AS polpermissive, NULL::TEXT AS array_to_string,
  NULL::TEXT AS pg_get_expr, NULL::TEXT AS pg_get_expr_1, NULL::TEXT AS cmd WHERE false",
    ),
    // psql 15 `\d TABLE`: extended statistics objects (there are none).
    (
        "SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = $1
ORDER BY nsp, stxname",
        "SELECT NULL::INT AS oid, NULL::TEXT AS stxrelid, NULL::TEXT AS nsp, NULL::TEXT AS stxname,
  NULL::TEXT AS columns, NULL::BOOLEAN AS ndist_enabled, NULL::BOOLEAN AS deps_enabled,
  NULL::BOOLEAN AS mcv_enabled, NULL::INT AS stxstattarget WHERE false",
    ),
    // psql 15 `\d TABLE`: publications (there are none).
    (
        "SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid =$1 and pg_catalog.pg_relation_is_publishable($1)
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = $1
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable($1)
ORDER BY 1",
        "SELECT NULL::TEXT AS pubname, NULL::TEXT AS a, NULL::TEXT AS b WHERE false",
    ),
    // pgcli 4 completion refresh: foreign keys (there are none).
    (
        r#"SELECT s_p.nspname AS parentschema,
                       t_p.relname AS parenttable,
                       unnest((
                        select
                            array_agg(attname ORDER BY i)
                        from
                            (select unnest(confkey) as attnum, generate_subscripts(confkey, 1) as i) x
                            JOIN pg_catalog.pg_attribute c USING(attnum)
                            WHERE c.attrelid = fk.confrelid
                        )) AS parentcolumn,
                       s_c.nspname AS childschema,
                       t_c.relname AS childtable,
                       unnest((
                        select
                            array_agg(attname ORDER BY i)
                        from
                            (select unnest(conkey) as attnum, generate_subscripts(conkey, 1) as i) x
                            JOIN pg_catalog.pg_attribute c USING(attnum)
                            WHERE c.attrelid = fk.conrelid
                        )) AS childcolumn
                FROM pg_catalog.pg_constraint fk
                JOIN pg_catalog.pg_class      t_p ON t_p.oid = fk.confrelid
                JOIN pg_catalog.pg_namespace  s_p ON s_p.oid = t_p.relnamespace
                JOIN pg_catalog.pg_class      t_c ON t_c.oid = fk.conrelid
                JOIN pg_catalog.pg_namespace  s_c ON s_c.oid = t_c.relnamespace
                WHERE fk.contype = 'f'"#,
        "SELECT NULL::TEXT AS parentschema, NULL::TEXT AS parenttable, NULL::TEXT AS parentcolumn,
  NULL::TEXT AS childschema, NULL::TEXT AS childtable, NULL::TEXT AS childcolumn WHERE false",
    ),
    // pgcli 4 completion refresh: functions (rxgate has no user-defined ones; the built-in
    // ones pgcli completes from its own keyword list).
    (
        r#"SELECT n.nspname schema_name,
                        p.proname func_name,
                        p.proargnames,
                        COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[],
                        p.proargmodes,
                        prorettype::regtype::text return_type,
                        p.prokind = 'a' is_aggregate,
                        p.prokind = 'w' is_window,
                        p.proretset is_set_returning,
                        d.deptype = 'e' is_extension,
                        pg_get_expr(proargdefaults, 0) AS arg_defaults
                FROM pg_catalog.pg_proc p
                        INNER JOIN pg_catalog.pg_namespace n
                            ON n.oid = p.pronamespace
                LEFT JOIN pg_depend d ON d.objid = p.oid and d.deptype = 'e'
                WHERE p.prorettype::regtype <> 'trigger'::regtype
                ORDER BY 1, 2"#,
        "SELECT NULL::TEXT AS schema_name, NULL::TEXT AS func_name, NULL::TEXT AS proargnames,
  NULL::TEXT AS coalesce, NULL::TEXT AS proargmodes, NULL::TEXT AS return_type,
  NULL::BOOLEAN AS is_aggregate, NULL::BOOLEAN AS is_window, NULL::BOOLEAN AS is_set_returning,
  NULL::BOOLEAN AS is_extension, NULL::TEXT AS arg_defaults WHERE false",
    ),
    // pgcli 4 keyword casing from the bodies of SQL functions (there are none).
    (
        r#"WITH Words AS (
                SELECT regexp_split_to_table(prosrc, '\W+') AS Word, COUNT(1)
                FROM pg_catalog.pg_proc P
                JOIN pg_catalog.pg_namespace N ON N.oid = P.pronamespace
                JOIN pg_catalog.pg_language L ON L.oid = P.prolang
                WHERE L.lanname IN ('sql', 'plpgsql')
                AND N.nspname NOT IN ('pg_catalog', 'information_schema')
                GROUP BY Word
            ),
            OrderWords AS (
                SELECT Word,
                    ROW_NUMBER() OVER(PARTITION BY LOWER(Word) ORDER BY Count DESC)
                FROM Words
                WHERE Word ~* '.*[a-z].*'
            ),
            Names AS (
                --Column names
                SELECT attname AS Name
                FROM pg_catalog.pg_attribute
                UNION -- Table/view names
                SELECT relname
                FROM pg_catalog.pg_class
                UNION -- Function names
                SELECT proname
                FROM pg_catalog.pg_proc
                UNION -- Type names
                SELECT typname
                FROM pg_catalog.pg_type
                UNION -- Schema names
                SELECT nspname
                FROM pg_catalog.pg_namespace
                UNION -- Parameter names
                SELECT unnest(proargnames)
                FROM pg_proc
            )
            SELECT Word
            FROM OrderWords
            WHERE LOWER(Word) IN (SELECT Name FROM Names)
            AND Row_Number = 1"#,
        "SELECT NULL::TEXT AS word WHERE false",
    ),
];

fn significant(sql: &str) -> Result<Vec<Token>, ParserError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| ParserError::TokenizerError(e.to_string()))?;
    Ok(tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.keyword != Keyword::NoKeyword => Token::make_keyword(&w.value.to_ascii_uppercase()),
            t => t,
        })
        .collect())
}

fn known_patterns() -> &'static [(Vec<Token>, Vec<Token>)] {
    static P: OnceLock<Vec<(Vec<Token>, Vec<Token>)>> = OnceLock::new();
    P.get_or_init(|| {
        KNOWN
            .iter()
            .filter_map(|(from, to)| Some((significant(from).ok()?, significant(to).ok()?)))
            .map(|(mut f, t)| {
                while f.last() == Some(&Token::SemiColon) {
                    f.pop();
                }
                (f, t)
            })
            .collect()
    })
}

/// The token stream with known statements replaced, or `None` when nothing matched.
fn replace_known(sql: &str) -> Result<Option<Vec<TokenWithSpan>>, ParserError> {
    if known_patterns().is_empty() {
        return Ok(None);
    }
    let tokens = significant(sql)?;
    let mut out = vec![];
    let mut i = 0;
    let mut replaced = false;
    'outer: while i < tokens.len() {
        for (from, to) in known_patterns() {
            let matches = tokens.len() - i >= from.len()
                && from.iter().zip(&tokens[i..]).all(|(p, t)| matches!(p, Token::Placeholder(_)) || p == t);
            if matches {
                out.extend(to.iter().cloned());
                i += from.len();
                replaced = true;
                continue 'outer;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    if !replaced {
        return Ok(None);
    }
    Ok(Some(out.into_iter().map(TokenWithSpan::wrap).collect()))
}

// ---------------------------------------------------------------------------------------
// Output column names
// ---------------------------------------------------------------------------------------

/// PostgreSQL's name for an unaliased select-list expression (`FigureColname`).
fn figure_name(e: &Expr) -> Option<String> {
    Some(match e {
        Expr::Identifier(i) => ident_name(i),
        Expr::CompoundIdentifier(parts) => ident_name(parts.last()?),
        Expr::Function(f) => match f.name.0.last()? {
            ObjectNamePart::Identifier(i) => ident_name(i),
            _ => return None,
        },
        Expr::Cast { expr, data_type, .. } => {
            return figure_name(expr).or_else(|| Some(cast_type_name(data_type)));
        }
        Expr::Nested(e) => return figure_name(e),
        Expr::Subquery(q) => return first_item_name(q),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::Interval(_) => "interval".into(),
        Expr::TypedString(t) => cast_type_name(&t.data_type),
        _ => return None,
    })
}

fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn cast_type_name(dt: &SqlType) -> String {
    match dt {
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => "int4".into(),
        SqlType::BigInt(_) | SqlType::Int8(_) => "int8".into(),
        SqlType::SmallInt(_) | SqlType::Int2(_) => "int2".into(),
        SqlType::Bool | SqlType::Boolean => "bool".into(),
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => "float8".into(),
        SqlType::Real | SqlType::Float4 => "float4".into(),
        SqlType::Numeric(_) | SqlType::Decimal(_) => "numeric".into(),
        SqlType::Varchar(_) => "varchar".into(),
        SqlType::Char(_) => "bpchar".into(),
        SqlType::Timestamp(_, tz) if tz.to_string().contains("WITH TIME ZONE") => "timestamptz".into(),
        SqlType::Timestamp(..) => "timestamp".into(),
        other => type_name(other),
    }
}

fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => {
            Some(alias.value.strip_prefix("__alias_").unwrap_or(&alias.value).to_string())
        }
        SelectItem::UnnamedExpr(e) => Some(figure_name(e).unwrap_or_else(|| "?column?".into())),
        _ => None,
    }
}

fn first_select(q: &Query) -> Option<&Select> {
    let mut body = q.body.as_ref();
    loop {
        match body {
            SetExpr::Select(s) => return Some(s),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => return None,
        }
    }
}

fn first_item_name(q: &Query) -> Option<String> {
    first_select(q)?.projection.first().and_then(item_name)
}

/// PostgreSQL's output column names of a query, aligned with `fields` (DataFusion's names
/// of the planned output). `None` when nothing changes or the shapes do not line up.
pub(crate) fn output_names(stmt: &Statement, fields: &[String]) -> Option<Vec<String>> {
    let Statement::Query(q) = stmt else { return None };
    let select = first_select(q)?;
    let wildcards = select
        .projection
        .iter()
        .filter(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)))
        .count();
    if wildcards > 1 {
        return None;
    }
    let named = select.projection.len() - wildcards;
    if fields.len() < named || (wildcards == 0 && fields.len() != named) {
        return None;
    }
    let expanded = fields.len() - named;
    let mut out = Vec::with_capacity(fields.len());
    let mut i = 0;
    for item in &select.projection {
        match item_name(item) {
            Some(n) => {
                out.push(n);
                i += 1;
            }
            None => {
                out.extend(fields[i..i + expanded].iter().cloned());
                i += expanded;
            }
        }
    }
    (out != fields).then_some(out)
}

/// The statement with every unaliased select-list expression given a unique alias, for
/// DataFusion, which refuses two output columns of the same name (`SELECT (SELECT 1),
/// (SELECT 1)`). The client still sees PostgreSQL's names ([`output_names`]).
pub(crate) fn unique_aliases(mut stmt: Statement) -> Statement {
    struct V(usize);
    impl VisitorMut for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            alias_body(q.body.as_mut(), &mut self.0);
            ControlFlow::Continue(())
        }
    }
    fn alias_body(body: &mut SetExpr, n: &mut usize) {
        match body {
            SetExpr::Select(s) => {
                for item in s.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) = item {
                        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                            continue;
                        }
                        *n += 1;
                        let base = figure_name(e).unwrap_or_else(|| "?column?".into());
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::with_quote('"', format!("{base}#{n}")),
                        };
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                alias_body(left, n);
                alias_body(right, n);
            }
            _ => {}
        }
    }
    let _ = VisitMut::visit(&mut stmt, &mut V(0));
    stmt
}

/// Types the statement gives its placeholders by casting them (`$1::int`, `CAST($2 AS
/// date)`), indexed from `$1`: PostgreSQL infers a parameter's type from such a cast, and
/// drivers (asyncpg, pgjdbc) encode parameters by the type the server describes.
pub(crate) fn placeholder_casts(stmt: &Statement) -> Vec<Option<datafusion::arrow::datatypes::DataType>> {
    use datafusion::arrow::datatypes::DataType as A;
    struct V(Vec<Option<A>>);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Cast { expr, data_type, .. } = e {
                if let Expr::Value(ValueWithSpan { value: Value::Placeholder(p), .. }) = expr.as_ref() {
                    if let Ok(i) = p.trim_start_matches('$').parse::<usize>() {
                        let t = match data_type {
                            SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => Some(A::Int32),
                            SqlType::BigInt(_) | SqlType::Int8(_) => Some(A::Int64),
                            SqlType::SmallInt(_) | SqlType::Int2(_) => Some(A::Int16),
                            SqlType::Bool | SqlType::Boolean => Some(A::Boolean),
                            SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => Some(A::Float64),
                            SqlType::Real | SqlType::Float4 => Some(A::Float32),
                            SqlType::Text | SqlType::Varchar(_) | SqlType::String(_) => Some(A::Utf8),
                            SqlType::Date => Some(A::Date32),
                            SqlType::Timestamp(..) => {
                                Some(A::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None))
                            }
                            SqlType::Numeric(_) | SqlType::Decimal(_) => Some(A::Decimal128(38, 10)),
                            SqlType::Array(datafusion::sql::sqlparser::ast::ArrayElemTypeDef::SquareBracket(t, _)) => {
                                match t.as_ref() {
                                    SqlType::Int(_) | SqlType::Integer(_) => Some(A::List(std::sync::Arc::new(
                                        datafusion::arrow::datatypes::Field::new("item", A::Int32, true),
                                    ))),
                                    SqlType::IntUnsigned(_) => Some(A::List(std::sync::Arc::new(
                                        datafusion::arrow::datatypes::Field::new("item", A::UInt32, true),
                                    ))),
                                    SqlType::Text => Some(A::List(std::sync::Arc::new(
                                        datafusion::arrow::datatypes::Field::new("item", A::Utf8, true),
                                    ))),
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        if i >= 1 && t.is_some() {
                            if self.0.len() < i {
                                self.0.resize(i, None);
                            }
                            self.0[i - 1] = t;
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(vec![]);
    let _ = Visit::visit(stmt, &mut v);
    v.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        parse_statements(sql).unwrap().remove(0).1
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

//! Casts to PostgreSQL's OID types (`'t'::regclass`, `oid::regclass::text`, `x::oid`, …),
//! `pg_catalog` operators, `(expr).field`, `LIKE … ESCAPE`, `pg_catalog.unnest` and the
//! column lists of recursive CTEs.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType as SqlType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Value,
    ValueWithSpan, VisitorMut,
};

/// The PostgreSQL name of a type as written in a cast, lower-case, without `pg_catalog.`.
pub(super) fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

pub(super) fn type_name(dt: &SqlType) -> String {
    let s = match dt {
        SqlType::Regclass => "regclass".to_string(),
        SqlType::Custom(name, _) => {
            name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).unwrap_or_default()
        }
        other => other.to_string().to_ascii_lowercase(),
    };
    s.strip_prefix("pg_catalog.").map(str::to_string).unwrap_or(s)
}

pub(super) fn call(name: &str, arg: Expr) -> Expr {
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
    let is_array_agg =
        f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("array_agg"));
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
pub(super) struct PgCasts;

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
                        e = call_n(
                            "get_field",
                            vec![e, Expr::Value(Value::SingleQuotedString(ident_name(field)).into())],
                        );
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

//! PostgreSQL's output column names (`FigureColname`), unique aliases for DataFusion, and
//! the types placeholders are cast to.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, Expr, Ident, ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement, Value,
    ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
};

use super::casts::{ident_name, type_name};

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
pub fn output_names(stmt: &Statement, fields: &[String]) -> Option<Vec<String>> {
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
pub fn unique_aliases(mut stmt: Statement) -> Statement {
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
pub fn placeholder_casts(stmt: &Statement) -> Vec<Option<datafusion::arrow::datatypes::DataType>> {
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

//! PostgreSQL's typing of quoted literals in comparisons. In PostgreSQL a quoted literal
//! (`'t'`, `'10'`) has no type of its own ("unknown"): compared with a typed operand it is
//! read as a value of that operand's type, so `indisprimary = 'f'` compares booleans and
//! `trx_cnt < '10'` compares integers. DataFusion gives the literal the type `Utf8` and then
//! either refuses the comparison (`Boolean = Utf8`: SQLAlchemy 1.4's inspector, and so
//! Superset, failed on it) or compares text (`9 < '10'` was false).
//!
//! [`UnknownLiteralPlanner`] is an expression planner every session has: while the statement
//! is planned, a bare string literal on one side of `=`, `<>`, `<`, `<=`, `>`, `>=` whose
//! other side is a boolean, integer or floating-point expression is replaced by a literal of
//! that type, parsed as PostgreSQL parses its input (`'t'`, `'yes'`, `'on'`, `'1'` … for
//! booleans; surrounding spaces allowed). Text that is not a value of the type is an error
//! (`invalid input syntax for type boolean: "maybe"`), as in PostgreSQL. Nothing else changes:
//! typed literals (`'t'::text`), parameters, text and temporal operands (DataFusion already
//! reads a literal compared with a date or timestamp as one), decimals (the literal must
//! not be rounded to the column's scale) are left to DataFusion.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::sql::sqlparser::ast::BinaryOperator;
use rxgate_common::{Error, StatusCode};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct UnknownLiteralPlanner;

impl ExprPlanner for UnknownLiteralPlanner {
    fn plan_binary_op(&self, mut expr: RawBinaryExpr, schema: &DFSchema) -> DfResult<PlannerResult<RawBinaryExpr>> {
        if !matches!(
            expr.op,
            BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
        ) {
            return Ok(PlannerResult::Original(expr));
        }
        if let Some(lit) = typed_literal(&expr.right, &expr.left, schema)? {
            expr.right = lit;
        } else if let Some(lit) = typed_literal(&expr.left, &expr.right, schema)? {
            expr.left = lit;
        }
        Ok(PlannerResult::Original(expr))
    }
}

/// The text of a bare string literal.
fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// `literal` read as a value of `other`'s type, when `literal` is a bare string literal and
/// `other` a boolean or numeric expression; `None` when the comparison is left as it is.
fn typed_literal(literal: &Expr, other: &Expr, schema: &DFSchema) -> DfResult<Option<Expr>> {
    let Some(text) = string_literal(literal) else { return Ok(None) };
    if string_literal(other).is_some() {
        return Ok(None);
    }
    let Ok(ty) = other.get_type(schema) else { return Ok(None) };
    let value = match &ty {
        DataType::Boolean => ScalarValue::Boolean(Some(parse_bool(text).ok_or_else(|| invalid(&ty, text))?)),
        t if t.is_integer() || t.is_floating() => ScalarValue::Utf8(Some(text.trim().to_string()))
            .cast_to(t)
            .ok()
            .filter(|v| !v.is_null())
            .ok_or_else(|| invalid(&ty, text))?,
        _ => return Ok(None),
    };
    Ok(Some(Expr::Literal(value, None)))
}

fn invalid(ty: &DataType, text: &str) -> DataFusionError {
    let name = match ty {
        DataType::Boolean => "boolean",
        DataType::Int16 | DataType::Int8 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float32 | DataType::Float16 => "real",
        _ => "double precision",
    };
    let name = if *ty == DataType::UInt32 { "oid" } else { name };
    DataFusionError::External(Box::new(Error::new(
        StatusCode::InvalidArgument,
        format!("invalid input syntax for type {name}: \"{text}\""),
    )))
}

/// PostgreSQL's boolean input (`parse_bool`): `t`/`true`, `f`/`false`, `y`/`yes`, `n`/`no`
/// (any prefix), `on`, `off` (at least two letters), `1`, `0`; case-insensitive, surrounding
/// spaces ignored.
pub fn parse_bool(text: &str) -> Option<bool> {
    let v = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !v.is_empty() && word.starts_with(v.as_str());
    match v.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "on" => Some(true),
        "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_parse_like_postgres() {
        for t in ["t", "true", "TRUE", " tr ", "y", "yes", "on", "1", "On"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["f", "false", "fa", "n", "no", "off", "of", "0", "OFF "] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "o", "maybe", "2", "truee", "yess", "-1"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }
}

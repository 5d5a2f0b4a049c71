//! An optimizer rule for comparisons with a pseudonymised column.
//!
//! A text pseudonym always reads `<key id>:<32 lower-case hex digits>`. A comparison of one
//! with a literal of any other form (an analyst typing a real NPI, say) has a known answer
//! without computing a single HMAC: `=` is false and `<>` is true for every row whose column
//! is not NULL, and NULL where it is. The rule rewrites such comparisons into exactly that,
//! so the scan evaluates a null check instead of one HMAC per row. It reveals nothing the
//! masked value does not: the pseudonym of NULL is NULL.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{lit, when, BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::mask::PSEUDONYM_UDF;

/// Rewrites `pseudonym(col) = 'text'` / `<>` when `'text'` cannot be a pseudonym.
#[derive(Debug, Default)]
pub struct PseudonymLiteralRule;

impl OptimizerRule for PseudonymLiteralRule {
    fn name(&self) -> &str {
        "rxgate_pseudonym_literal"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        plan.map_expressions(|e| e.transform_up(rewrite_comparison))
    }
}

fn rewrite_comparison(e: Expr) -> DfResult<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
        return Ok(Transformed::no(e));
    };
    let answer = match op {
        Operator::Eq => false,
        Operator::NotEq => true,
        _ => return Ok(Transformed::no(e)),
    };
    let (arg, text) = match (pseudonym_arg(left), literal_text(right), pseudonym_arg(right), literal_text(left)) {
        (Some(arg), Some(text), _, _) | (_, _, Some(arg), Some(text)) => (arg, text),
        _ => return Ok(Transformed::no(e)),
    };
    if could_be_pseudonym(text) {
        return Ok(Transformed::no(e));
    }
    let null = Expr::Literal(ScalarValue::Boolean(None), None);
    Ok(Transformed::yes(when(arg.clone().is_null(), null).otherwise(lit(answer))?))
}

/// The argument of a text pseudonym call.
fn pseudonym_arg(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == PSEUDONYM_UDF && args.len() == 1 => {
            let arg = &args[0];
            // The integer pseudonym is called on a cast to Int64; only text ones are handled
            // (their argument may be a cast too: view strings to the UDF's Utf8).
            let int = matches!(arg, Expr::Cast(c) if c.data_type.is_integer());
            (!int).then_some(arg)
        }
        _ => None,
    }
}

fn literal_text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// `<non-empty id>:<32 lower-case hex digits>`, whatever the key id.
pub(crate) fn could_be_pseudonym(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((id, hex)) => {
            !id.is_empty() && hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{cast, col};

    use super::*;
    use crate::{MaskFunctions, MaskKind, PseudonymKey};

    fn pseudonym_of(column: &str) -> Expr {
        let f = MaskFunctions::new(Some(PseudonymKey::new("k1", b"s")));
        let schema = datafusion::common::DFSchema::empty();
        f.expr(
            &MaskKind::Pseudonym,
            &datafusion::prelude::Column::from_name(column),
            &DataType::Utf8,
            &schema,
            &|_, _| unreachable!(),
        )
        .unwrap()
    }

    #[test]
    fn impossible_literals_become_null_checks() {
        let e = pseudonym_of("npi").eq(lit("1234567893"));
        let out = rewrite_comparison(e).unwrap();
        assert!(out.transformed);
        let expected =
            when(col("npi").is_null(), Expr::Literal(ScalarValue::Boolean(None), None)).otherwise(lit(false)).unwrap();
        assert_eq!(out.data, expected);
        let ne = rewrite_comparison(lit("x").not_eq(pseudonym_of("npi"))).unwrap();
        assert!(ne.transformed);
    }

    #[test]
    fn view_columns_cast_to_text_are_rewritten_too() {
        let f = MaskFunctions::new(Some(PseudonymKey::new("k1", b"s")));
        let schema = datafusion::common::DFSchema::empty();
        let column = datafusion::prelude::Column::from_name("npi");
        let masked =
            f.expr(&MaskKind::Pseudonym, &column, &DataType::Utf8View, &schema, &|_, _| unreachable!()).unwrap();
        // What type coercion makes of the call on a Utf8View column.
        let Expr::ScalarFunction(ScalarFunction { func, .. }) = masked else { panic!("a call: {masked}") };
        let call = Expr::ScalarFunction(ScalarFunction { func, args: vec![cast(col("npi"), DataType::Utf8)] });
        let out = rewrite_comparison(call.eq(lit("1234567893"))).unwrap();
        assert!(out.transformed, "{}", out.data);
        let int = f.expr(&MaskKind::Pseudonym, &column, &DataType::Int64, &schema, &|_, _| unreachable!()).unwrap();
        assert!(!rewrite_comparison(int.eq(lit("1234567893"))).unwrap().transformed);
    }

    #[test]
    fn possible_literals_and_other_functions_stay() {
        let p = PseudonymKey::new("k1", b"s").text("1234567893");
        assert!(!rewrite_comparison(pseudonym_of("npi").eq(lit(p))).unwrap().transformed);
        assert!(!rewrite_comparison(col("npi").eq(lit("1234567893"))).unwrap().transformed);
        assert!(!rewrite_comparison(pseudonym_of("npi").lt(lit("1"))).unwrap().transformed);
        assert!(could_be_pseudonym("k2:0123456789abcdef0123456789abcdef"));
        assert!(!could_be_pseudonym(":0123456789abcdef0123456789abcdef"));
        assert!(!could_be_pseudonym("k1:0123456789ABCDEF0123456789abcdef"));
    }
}

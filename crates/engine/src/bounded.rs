//! Functions that build values from a count (`repeat`, `lpad`, `array_repeat`, `range`, …) or
//! from their inputs (`concat`, `replace`, …), bounded: a value over
//! [`StatementLimits::max_value_bytes`](crate::limits::StatementLimits) is refused with 54000
//! before it is built, and the bytes a call will build are reserved from the query memory pool
//! first (53200 when the pool cannot give them), so no single call allocates outside it.
//!
//! Each wrapper replaces DataFusion's function of the same name in the session and delegates
//! everything else to it.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

use crate::limits::StatementLimits;

/// The functions wrapped, by how their output size is bounded.
const COUNTED: &[&str] = &["repeat", "lpad", "rpad", "array_repeat", "range", "generate_series"];
const FROM_INPUTS: &[&str] = &["concat", "concat_ws", "replace", "overlay", "translate", "regexp_replace"];

/// Replaces the session's value-building functions with bounded ones.
pub(crate) fn install(ctx: &SessionContext, limits: StatementLimits, pool: Arc<dyn MemoryPool>) {
    let state = ctx.state();
    for name in COUNTED.iter().chain(FROM_INPUTS) {
        if let Some(f) = state.scalar_functions().get(*name) {
            let bounded = Bounded { inner: f.inner().clone().into(), max: limits.max_value_bytes, pool: pool.clone() };
            ctx.register_udf(ScalarUDF::new_from_impl(bounded));
        }
    }
}

#[derive(Debug)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    max: usize,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.max == other.max && self.inner == other.inner
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.max.hash(state);
    }
}

fn too_large(function: &str, bytes: usize, max: usize) -> DataFusionError {
    let limits = StatementLimits { max_value_bytes: max, ..Default::default() };
    DataFusionError::External(Box::new(limits.value_too_large(function, bytes)))
}

impl Bounded {
    /// Per row: an upper bound of the bytes the call builds, when one can be known up front.
    fn estimate(&self, args: &[ColumnarValue], rows: usize) -> Result<Option<Vec<usize>>> {
        let name = self.inner.name();
        let at = |v: &Vec<usize>, i: usize| if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(0) };
        let count = |v: &Vec<i64>, i: usize| {
            let n = if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(0) };
            n.max(0) as usize
        };
        Ok(match name {
            "repeat" | "array_repeat" => {
                let (Some(item), Some(n)) = (args.first().map(item_bytes), args.get(1).and_then(ints)) else {
                    return Ok(None);
                };
                Some((0..rows).map(|i| at(&item, i).max(1).saturating_mul(count(&n, i))).collect())
            }
            "lpad" | "rpad" => {
                let (Some(s), Some(n)) = (args.first().and_then(lengths), args.get(1).and_then(ints)) else {
                    return Ok(None);
                };
                // A fill character takes up to 4 bytes; ASCII fills (and the default space) 1.
                let per_char = match args.get(2) {
                    Some(fill) if !is_ascii(fill) => 4,
                    _ => 1,
                };
                Some((0..rows).map(|i| at(&s, i).max(count(&n, i).saturating_mul(per_char))).collect())
            }
            "range" | "generate_series" => {
                let bounds: Vec<Vec<i64>> = args.iter().filter_map(ints).collect();
                if bounds.len() != args.len() || bounds.len() < 2 {
                    return Ok(None);
                }
                Some(
                    (0..rows)
                        .map(|i| {
                            let get = |v: &Vec<i64>| if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(0) };
                            let (start, stop) = (get(&bounds[0]), get(&bounds[1]));
                            let step = bounds.get(2).map(get).unwrap_or(1);
                            let n = if step == 0 { 0 } else { (stop as i128 - start as i128) / step as i128 + 1 };
                            (n.max(0) as usize).saturating_mul(8)
                        })
                        .collect(),
                )
            }
            _ => {
                let all: Vec<Vec<usize>> = args.iter().filter_map(lengths).collect();
                if all.is_empty() {
                    return Ok(None);
                }
                Some((0..rows).map(|i| all.iter().map(|v| at(v, i)).fold(0usize, usize::saturating_add)).collect())
            }
        })
    }
}

/// Byte length of each value of a string or binary argument (one entry for a scalar).
fn lengths(v: &ColumnarValue) -> Option<Vec<usize>> {
    match v {
        ColumnarValue::Scalar(s) => match s {
            ScalarValue::Utf8(x) | ScalarValue::LargeUtf8(x) | ScalarValue::Utf8View(x) => {
                Some(vec![x.as_ref().map_or(0, |s| s.len())])
            }
            ScalarValue::Binary(x) | ScalarValue::LargeBinary(x) | ScalarValue::BinaryView(x) => {
                Some(vec![x.as_ref().map_or(0, |s| s.len())])
            }
            _ => None,
        },
        ColumnarValue::Array(a) => array_lengths(a),
    }
}

fn array_lengths(a: &ArrayRef) -> Option<Vec<usize>> {
    let n = |len: Option<usize>| len.unwrap_or(0);
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().map(|s| n(s.map(str::len))).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(|s| n(s.map(str::len))).collect(),
        DataType::Utf8View => a.as_string_view().iter().map(|s| n(s.map(str::len))).collect(),
        DataType::Binary => a.as_binary::<i32>().iter().map(|s| n(s.map(<[u8]>::len))).collect(),
        DataType::LargeBinary => a.as_binary::<i64>().iter().map(|s| n(s.map(<[u8]>::len))).collect(),
        DataType::BinaryView => a.as_binary_view().iter().map(|s| n(s.map(<[u8]>::len))).collect(),
        _ => return None,
    })
}

/// Bytes one repeated item takes: its length for strings, else its fixed width (8 when unknown).
fn item_bytes(v: &ColumnarValue) -> Vec<usize> {
    lengths(v).unwrap_or_else(|| vec![v.data_type().primitive_width().unwrap_or(8)])
}

fn is_ascii(v: &ColumnarValue) -> bool {
    match v {
        ColumnarValue::Scalar(s) => s.to_string().is_ascii(),
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().flatten().all(str::is_ascii),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().flatten().all(str::is_ascii),
            DataType::Utf8View => a.as_string_view().iter().flatten().all(str::is_ascii),
            _ => false,
        },
    }
}

/// The values of an integer argument (one entry for a scalar).
fn ints(v: &ColumnarValue) -> Option<Vec<i64>> {
    let array = match v {
        ColumnarValue::Scalar(s) => s.to_array().ok()?,
        ColumnarValue::Array(a) => a.clone(),
    };
    if !array.data_type().is_integer() {
        return None;
    }
    let array = cast(&array, &DataType::Int64).ok()?;
    Some(array.as_primitive::<Int64Type>().iter().map(|x| x.unwrap_or(0)).collect())
}

/// Bytes the largest value of a result takes.
fn largest_value(v: &ColumnarValue) -> usize {
    match v {
        ColumnarValue::Scalar(_) => lengths(v).map_or(0, |l| l[0]),
        ColumnarValue::Array(a) => match array_lengths(a) {
            Some(l) => l.into_iter().max().unwrap_or(0),
            None => a.get_array_memory_size(),
        },
    }
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name().to_string();
        let reservation = MemoryConsumer::new(format!("{name}()")).register(&self.pool);
        if let Some(sizes) = self.estimate(&args.args, args.number_rows.max(1))? {
            let largest = sizes.iter().copied().max().unwrap_or(0);
            if largest > self.max {
                return Err(too_large(&name, largest, self.max));
            }
            reservation.try_grow(sizes.into_iter().fold(0usize, usize::saturating_add))?;
        }
        let out = self.inner.invoke_with_args(args)?;
        let largest = largest_value(&out);
        if largest > self.max {
            return Err(too_large(&name, largest, self.max));
        }
        Ok(out)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(&self, args: &[Expr], lit_expr: &Expr, info: &SimplifyContext) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(&self, args: &'a [Expr]) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(&self, interval: &Interval, inputs: &[&Interval]) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// Plans `a || b` over strings as [`TextCat`] (PostgreSQL's name for the operator's function):
/// bounded like the functions above, where DataFusion's own `||` would double a value each
/// round of a recursive query without limit.
#[derive(Debug)]
pub(crate) struct ConcatPlanner {
    limits: StatementLimits,
    pool: Arc<dyn MemoryPool>,
}

impl ConcatPlanner {
    pub(crate) fn new(limits: StatementLimits, pool: Arc<dyn MemoryPool>) -> Self {
        Self { limits, pool }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

impl datafusion::logical_expr::planner::ExprPlanner for ConcatPlanner {
    fn plan_binary_op(
        &self,
        expr: datafusion::logical_expr::planner::RawBinaryExpr,
        schema: &datafusion::common::DFSchema,
    ) -> Result<datafusion::logical_expr::planner::PlannerResult<datafusion::logical_expr::planner::RawBinaryExpr>>
    {
        use datafusion::logical_expr::planner::PlannerResult;
        use datafusion::logical_expr::ExprSchemable;
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let (Ok(l), Ok(r)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        if !is_text(&l) || !is_text(&r) || (l == DataType::Null && r == DataType::Null) {
            return Ok(PlannerResult::Original(expr));
        }
        let udf = ScalarUDF::new_from_impl(TextCat::new(self.limits.max_value_bytes, self.pool.clone()));
        Ok(PlannerResult::Planned(udf.call(vec![expr.left, expr.right])))
    }
}

/// `text || text`: NULL when either side is NULL; a value over the limit is refused before
/// it is built, and the bytes built are reserved from the pool while the call runs.
#[derive(Debug)]
struct TextCat {
    signature: Signature,
    max: usize,
    pool: Arc<dyn MemoryPool>,
}

impl TextCat {
    fn new(max: usize, pool: Arc<dyn MemoryPool>) -> Self {
        Self { signature: Signature::user_defined(datafusion::logical_expr::Volatility::Immutable), max, pool }
    }
}

impl PartialEq for TextCat {
    fn eq(&self, other: &Self) -> bool {
        self.max == other.max
    }
}

impl Eq for TextCat {}

impl Hash for TextCat {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.max.hash(state);
    }
}

impl ScalarUDFImpl for TextCat {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "textcat"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let target = if arg_types.contains(&DataType::LargeUtf8) {
            DataType::LargeUtf8
        } else if arg_types.iter().all(|t| matches!(t, DataType::Utf8View | DataType::Null)) {
            DataType::Utf8View
        } else {
            DataType::Utf8
        };
        Ok(vec![target; arg_types.len()])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{LargeStringBuilder, StringBuilder, StringViewBuilder};
        let rows = args.number_rows.max(1);
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("|| takes two operands".into()));
        };
        let (Some(ll), Some(rl)) = (lengths(left), lengths(right)) else {
            return Err(DataFusionError::Plan("|| takes text operands".into()));
        };
        let at = |v: &Vec<usize>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let sizes: Vec<usize> = (0..rows).map(|i| at(&ll, i).saturating_add(at(&rl, i))).collect();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if largest > self.max {
            return Err(too_large("||", largest, self.max));
        }
        let total = sizes.iter().copied().fold(0usize, usize::saturating_add);
        let reservation = MemoryConsumer::new("||").register(&self.pool);
        reservation.try_grow(total)?;
        let scalar = matches!((left, right), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let (l, r) = (left.to_array(rows)?, right.to_array(rows)?);
        fn text(a: &ArrayRef, i: usize) -> Option<&str> {
            if a.is_null(i) {
                return None;
            }
            Some(match a.data_type() {
                DataType::LargeUtf8 => a.as_string::<i64>().value(i),
                DataType::Utf8View => a.as_string_view().value(i),
                _ => a.as_string::<i32>().value(i),
            })
        }
        // Each builder takes the rows the same way; only its type differs.
        macro_rules! build {
            ($builder:expr) => {{
                let mut b = $builder;
                let mut buf = String::new();
                for i in 0..rows {
                    match (text(&l, i), text(&r, i)) {
                        (Some(x), Some(y)) => {
                            buf.clear();
                            buf.push_str(x);
                            buf.push_str(y);
                            b.append_value(&buf);
                        }
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let out = match l.data_type() {
            DataType::LargeUtf8 => build!(LargeStringBuilder::with_capacity(rows, total)),
            DataType::Utf8View => build!(StringViewBuilder::with_capacity(rows)),
            _ => build!(StringBuilder::with_capacity(rows, total)),
        };
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

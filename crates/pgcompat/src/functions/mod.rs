//! PostgreSQL functions clients call during start-up and introspection, by family:
//! `session` (version, user, settings), `describe` (type names, sizes, comments,
//! `pg_get_*def`), `values` (arrays, encodings, JSON, LIKE escapes), `privileges`, `oids`
//! (name ↔ OID lookups). This module holds the closure-backed UDF they are all built with.

mod describe;
mod oids;
mod privileges;
mod session;
mod values;

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::{format_type, pg_get_expr_udf, quote_ident_udf};

use crate::PgContext;

type Body = Arc<dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue> + Send + Sync>;

/// A scalar function defined by a closure.
struct Udf {
    name: String,
    signature: Signature,
    ret: DataType,
    body: Body,
}

impl fmt::Debug for Udf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Udf({})", self.name)
    }
}

impl PartialEq for Udf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Udf {}

impl Hash for Udf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for Udf {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.ret.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.body)(&args.args, args.number_rows)
    }
}

/// Argument shapes.
enum Args {
    /// No arguments.
    None,
    /// Any number (≥ 0) of arguments of any type.
    Any,
}

fn udf(
    name: &str,
    args: Args,
    ret: DataType,
    volatility: Volatility,
    body: impl Fn(&[ColumnarValue], usize) -> Result<ColumnarValue> + Send + Sync + 'static,
) -> ScalarUDF {
    let signature = match args {
        Args::None => Signature::new(TypeSignature::Nullary, volatility),
        Args::Any => Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::VariadicAny], volatility),
    };
    ScalarUDF::new_from_impl(Udf { name: name.to_string(), signature, ret, body: Arc::new(body) })
}

fn text(v: impl Into<String>) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())))
}

/// Argument `i` as text per row (`None` for NULL or a missing argument).
fn text_arg(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<Option<String>>> {
    let Some(a) = args.get(i) else { return Ok(vec![None; rows]) };
    let arr = a.to_array(rows)?;
    let arr = cast(&arr, &DataType::Utf8)?;
    Ok(arr.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
}

/// Argument `i` as integers per row.
fn int_arg(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<Option<i64>>> {
    let Some(a) = args.get(i) else { return Ok(vec![None; rows]) };
    let arr = a.to_array(rows)?;
    let arr = cast(&arr, &DataType::Int64)?;
    Ok(arr.as_primitive::<Int64Type>().iter().collect())
}

/// Whether every argument is a scalar (then the result is one scalar too).
fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

fn rows_of(args: &[ColumnarValue], rows: usize) -> usize {
    if all_scalar(args) {
        1
    } else {
        rows
    }
}

fn text_result(args: &[ColumnarValue], values: Vec<Option<String>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(StringArray::from(values));
    shape(args, arr)
}

fn int_result(args: &[ColumnarValue], values: Vec<Option<i32>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(Int32Array::from(values));
    shape(args, arr)
}

fn int64_result(args: &[ColumnarValue], values: Vec<Option<i64>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(values));
    shape(args, arr)
}

fn bool_result(args: &[ColumnarValue], values: Vec<Option<bool>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(BooleanArray::from(values));
    shape(args, arr)
}

fn shape(args: &[ColumnarValue], arr: ArrayRef) -> Result<ColumnarValue> {
    if all_scalar(args) && arr.len() == 1 {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
    } else {
        Ok(ColumnarValue::Array(arr))
    }
}

/// A function returning NULL of a type, whatever its arguments.
fn null_fn(name: &str, ret: DataType) -> ScalarUDF {
    let null = ScalarValue::try_from(&ret).unwrap_or(ScalarValue::Null);
    udf(name, Args::Any, ret, Volatility::Stable, move |_, _| Ok(ColumnarValue::Scalar(null.clone())))
}

/// A function returning a constant, whatever its arguments.
fn const_fn(name: &str, value: ScalarValue) -> ScalarUDF {
    let ret = value.data_type();
    udf(name, Args::Any, ret, Volatility::Stable, move |_, _| Ok(ColumnarValue::Scalar(value.clone())))
}

/// Registers every function into the session.
pub(crate) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    // From datafusion-pg-catalog.
    ctx.register_udf(format_type::create_format_type_udf());
    ctx.register_udf(pg_get_expr_udf::create_pg_get_expr_udf());
    ctx.register_udf(quote_ident_udf::create_quote_ident_udf());
    ctx.register_udf(quote_ident_udf::create_parse_ident_udf());
    ctx.register_udtf("pg_get_keywords", pg.static_tables.pg_get_keywords.clone());

    session::register(ctx, pg);
    describe::register(ctx, pg);
    values::register(ctx);
    privileges::register(ctx, pg);
    oids::register(ctx, pg);
}

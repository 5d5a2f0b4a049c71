//! The Hive functions analysts use, as DataFusion UDFs registered in every session
//! ([`register`]).
//!
//! Modules by family: `datetime` (with `datefmt`, Java's date patterns), `text`, `mask`,
//! `collect`; this file holds the scalar functions' one `ScalarUDFImpl`
//! (argument coercion and return types for every function).
//!
//! Already DataFusion built-ins with Hive's meaning, left as they are: `nvl`, `nvl2`.
//! Registered here (replacing a DataFusion function of the same name where there is one):
//! - `concat_ws(sep, s|array<s>, …)`: NULLs skipped, arrays flattened (Hive's
//!   `concat_ws(',', collect_set(x))`); DataFusion's takes strings only.
//! - `date_format(date|timestamp|string, 'yyyy-MM-dd')`: Java date patterns
//!   (`datefmt`); DataFusion's `date_format` is `to_char` with chrono patterns.
//! - `from_unixtime(seconds[, pattern])` → text (Hive), not DataFusion's timestamp.
//! - `unix_timestamp()`, `unix_timestamp(date|timestamp)`, `unix_timestamp(string[, pattern])`
//!   (NULL when the text does not parse).
//! - `regexp_extract(s, regex[, group = 1])` ('' when there is no match), `split(s, regex)`
//!   (Java `split(regex, -1)`: trailing empty strings kept), `size(array|map)` (-1 for NULL).
//! - `collect_list(x)`, `collect_set(x)`: arrays without NULLs (empty, not NULL, when there
//!   is nothing to collect); collect_set without duplicates.
//! - Hive's mask functions `mask`, `mask_first_n`, `mask_last_n`, `mask_show_first_n`,
//!   `mask_show_last_n` (strings, integers, and dates for `mask`) and `mask_hash` (SHA-256
//!   hex of a string, as Hive 3; unkeyed, so not a pseudonym: the policy's keyed mask is).
//!
//! Times are UTC. Regular expressions are Rust's `regex` (no look-around or
//! back-references), and string literals follow PostgreSQL's rules: `'\d+'`, not `'\\d+'`.

mod collect;
mod datefmt;
mod datetime;
mod mask;
mod text;

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use collect::Collect;
use datetime::{date_format, from_unixtime, unix_timestamp};
use mask::{mask, mask_hash, MaskKind};
use text::{concat_ws, regexp_extract, size, split};

/// Registers the Hive functions in a session.
pub fn register(ctx: &SessionContext) {
    for f in scalar_functions() {
        ctx.register_udf(f);
    }
    for f in aggregate_functions() {
        ctx.register_udaf(f);
    }
}

/// The scalar functions.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    use Kind::*;
    [
        ("concat_ws", ConcatWs),
        ("date_format", DateFormat),
        ("from_unixtime", FromUnixtime),
        ("unix_timestamp", UnixTimestamp),
        ("regexp_extract", RegexpExtract),
        ("split", Split),
        ("size", Size),
        ("mask", Mask(MaskKind::All)),
        ("mask_first_n", Mask(MaskKind::FirstN)),
        ("mask_last_n", Mask(MaskKind::LastN)),
        ("mask_show_first_n", Mask(MaskKind::ShowFirstN)),
        ("mask_show_last_n", Mask(MaskKind::ShowLastN)),
        ("mask_hash", MaskHash),
    ]
    .into_iter()
    .map(|(name, kind)| ScalarUDF::new_from_impl(HiveFunction::new(name, kind)))
    .collect()
}

/// The aggregate functions.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(Collect::new("collect_list", false)),
        AggregateUDF::new_from_impl(Collect::new("collect_set", true)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ConcatWs,
    DateFormat,
    FromUnixtime,
    UnixTimestamp,
    RegexpExtract,
    Split,
    Size,
    Mask(MaskKind),
    MaskHash,
}

/// One Hive scalar function; `kind` says which.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HiveFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

impl HiveFunction {
    fn new(name: &'static str, kind: Kind) -> Self {
        let signature = match kind {
            Kind::UnixTimestamp => {
                Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::UserDefined], Volatility::Stable)
            }
            _ => Signature::user_defined(Volatility::Immutable),
        };
        Self { name, kind, signature }
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_temporal(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
}

fn is_list(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
    )
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ScalarUDFImpl for HiveFunction {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name;
        let arity = |min: usize, max: usize| -> Result<()> {
            if types.len() < min || types.len() > max {
                return plan_err!("{name} takes {min} to {max} arguments, got {}", types.len());
            }
            Ok(())
        };
        let temporal_or_text = |t: &DataType| if is_temporal(t) { t.clone() } else { DataType::Utf8 };
        match self.kind {
            Kind::ConcatWs => {
                arity(1, usize::MAX)?;
                Ok(types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| if i > 0 && is_list(t) { utf8_list() } else { DataType::Utf8 })
                    .collect())
            }
            Kind::DateFormat => {
                arity(2, 2)?;
                Ok(vec![temporal_or_text(&types[0]), DataType::Utf8])
            }
            Kind::FromUnixtime => {
                arity(1, 2)?;
                if !(types[0].is_numeric() || types[0] == DataType::Null || is_string(&types[0])) {
                    return plan_err!("from_unixtime expects seconds since 1970 as a number, got {}", types[0]);
                }
                Ok([DataType::Int64, DataType::Utf8][..types.len()].to_vec())
            }
            Kind::UnixTimestamp => {
                arity(0, 2)?;
                Ok(types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| if i == 0 { temporal_or_text(t) } else { DataType::Utf8 })
                    .collect())
            }
            Kind::RegexpExtract => {
                arity(2, 3)?;
                Ok([DataType::Utf8, DataType::Utf8, DataType::Int64][..types.len()].to_vec())
            }
            Kind::Split => {
                arity(2, 2)?;
                Ok(vec![DataType::Utf8, DataType::Utf8])
            }
            Kind::Size => {
                arity(1, 1)?;
                match &types[0] {
                    t @ (DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
                    | DataType::Map(..)
                    | DataType::Null) => Ok(vec![t.clone()]),
                    t => plan_err!("size expects an array or a map, got {t}"),
                }
            }
            Kind::Mask(kind) => {
                arity(1, if kind == MaskKind::All { 9 } else { 7 })?;
                let first = match &types[0] {
                    t if is_string(t) || *t == DataType::Null => DataType::Utf8,
                    t if t.is_integer() => DataType::Int64,
                    DataType::Date32 | DataType::Date64 if kind == MaskKind::All => DataType::Date32,
                    t => {
                        return plan_err!(
                            "{name} expects a string or an integer{}, got {t}",
                            if kind == MaskKind::All { " or a date" } else { "" }
                        )
                    }
                };
                let mut out = vec![first];
                for t in &types[1..] {
                    out.push(if t.is_integer() { DataType::Int64 } else { DataType::Utf8 });
                }
                Ok(out)
            }
            Kind::MaskHash => {
                arity(1, 1)?;
                Ok(vec![if is_string(&types[0]) { DataType::Utf8 } else { types[0].clone() }])
            }
        }
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::ConcatWs | Kind::DateFormat | Kind::FromUnixtime | Kind::RegexpExtract | Kind::MaskHash => {
                DataType::Utf8
            }
            Kind::UnixTimestamp => DataType::Int64,
            Kind::Size => DataType::Int32,
            Kind::Split => utf8_list(),
            Kind::Mask(_) => match types.first() {
                Some(DataType::Int64) => DataType::Int64,
                Some(DataType::Date32) => DataType::Date32,
                _ => DataType::Utf8,
            },
        })
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // unix_timestamp() is the statement's start time, like now().
        match (self.kind, info.query_execution_start_time()) {
            (Kind::UnixTimestamp, Some(start)) if args.is_empty() => {
                Ok(ExprSimplifyResult::Simplified(Expr::Literal(ScalarValue::Int64(Some(start.timestamp())), None)))
            }
            _ => Ok(ExprSimplifyResult::Original(args)),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.is_empty() {
            // unix_timestamp() that was not simplified.
            return Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(chrono::Utc::now().timestamp()))));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: ArrayRef = match self.kind {
            Kind::ConcatWs => concat_ws(&arrays)?,
            Kind::DateFormat => date_format(&arrays)?,
            Kind::FromUnixtime => from_unixtime(&arrays)?,
            Kind::UnixTimestamp => unix_timestamp(&arrays)?,
            Kind::RegexpExtract => regexp_extract(&arrays)?,
            Kind::Split => split(&arrays)?,
            Kind::Size => size(&arrays[0])?,
            Kind::Mask(kind) => mask(self.name, kind, &arrays[0], &args.args[1..])?,
            Kind::MaskHash => mask_hash(&arrays[0]),
        };
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
pub(crate) mod test_sql {
    //! Runs SQL in a fresh session with the Hive functions registered.
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    use super::register;

    /// The first column of the first row, as text (`NULL` for a null).
    pub(crate) async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
        if b.column(0).is_null(0) {
            return "NULL".into();
        }
        array_value_to_string(b.column(0), 0).unwrap()
    }

    /// The error text of a statement that must fail.
    pub(crate) async fn fails(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        match ctx.sql(sql).await {
            Err(e) => e.to_string(),
            Ok(df) => df.collect().await.expect_err("should fail").to_string(),
        }
    }

    #[tokio::test]
    async fn built_in_nvl_and_nvl2_keep_hive_meaning() {
        assert_eq!(one("SELECT nvl(NULL, 'x')").await, "x");
        assert_eq!(one("SELECT nvl('a', 'x')").await, "a");
        assert_eq!(one("SELECT nvl2(NULL, 'a', 'b')").await, "b");
        assert_eq!(one("SELECT nvl2(1, 'a', 'b')").await, "a");
    }
}

//! Mask functions and the expression each mask kind becomes over a column.
//!
//! The keyed pseudonym function holds its key inside; it is never registered under a name a
//! user could call (that would let anyone pseudonymise a list of known NPIs and join it back),
//! and its key never appears in a plan, EXPLAIN output or a log line.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::hmac;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    cast, create_udf, lit, when, ColumnarValue, Expr, ExprSchemable, ScalarFunctionImplementation, ScalarUDF,
    Volatility,
};
use datafusion::prelude::Column;

use crate::model::MaskKind;

/// The name of the keyed pseudonym UDF in plans (never registered, so never callable).
pub(crate) const PSEUDONYM_UDF: &str = "rxgate_pseudonym";

/// The pseudonymisation key and its id (`k1`), shown in front of every pseudonym so a
/// rotated key's pseudonyms are told apart.
#[derive(Clone)]
pub struct PseudonymKey {
    id: String,
    key: hmac::Key,
    memo: Arc<Memo>,
}

/// Text pseudonyms already computed under one key (value → 32 hex digits), so a value seen
/// before costs a hash lookup instead of an HMAC. NPIs repeat (one row per drug) and the
/// same values come back query after query. Bounded: cleared when it reaches `MEMO_MAX`.
#[derive(Default)]
struct Memo {
    map: RwLock<HashMap<Box<str>, [u8; 32]>>,
}

/// Entries kept at most (about 80 MB of short keys at the bound).
const MEMO_MAX: usize = 1 << 20;

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PseudonymKey({}, <hidden>)", self.id)
    }
}

impl PseudonymKey {
    /// A key from its secret bytes.
    pub fn new(id: &str, secret: &[u8]) -> Self {
        Self { id: id.to_string(), key: hmac::Key::new(hmac::HMAC_SHA256, secret), memo: Arc::default() }
    }

    /// The text pseudonym of `value`: `id:` + 32 hex digits of HMAC-SHA256(key, value).
    pub fn text(&self, value: &str) -> String {
        let mut out = String::with_capacity(self.id.len() + 33);
        self.push_text(&mut out, &self.hex(value));
        out
    }

    /// The 32 hex digits of HMAC-SHA256(key, value) (the first 128 bits).
    fn hex(&self, value: &str) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.key, value.as_bytes());
        let mut hex = [0u8; 32];
        for (i, b) in tag.as_ref()[..16].iter().enumerate() {
            hex[2 * i] = HEX[(b >> 4) as usize];
            hex[2 * i + 1] = HEX[(b & 15) as usize];
        }
        hex
    }

    fn push_text(&self, out: &mut String, hex: &[u8; 32]) {
        out.push_str(&self.id);
        out.push(':');
        out.push_str(std::str::from_utf8(hex).expect("hex digits are ASCII"));
    }

    /// The text pseudonyms of a whole array (NULL stays NULL), through the memo.
    pub fn text_array(&self, values: &StringArray) -> StringArray {
        let width = self.id.len() + 33;
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * width);
        let mut misses: Vec<(Box<str>, [u8; 32])> = Vec::new();
        let mut text = String::with_capacity(width);
        {
            let memo = self.memo.map.read().expect("pseudonym memo lock");
            for v in values.iter() {
                let Some(v) = v else {
                    out.append_null();
                    continue;
                };
                let hex = match memo.get(v) {
                    Some(hex) => *hex,
                    None => {
                        let hex = self.hex(v);
                        misses.push((v.into(), hex));
                        hex
                    }
                };
                text.clear();
                self.push_text(&mut text, &hex);
                out.append_value(&text);
            }
        }
        if !misses.is_empty() {
            let mut memo = self.memo.map.write().expect("pseudonym memo lock");
            if memo.len() + misses.len() > MEMO_MAX {
                memo.clear();
            }
            memo.extend(misses);
        }
        out.finish()
    }

    /// The integer pseudonym of `value`: 63 bits of HMAC-SHA256(key, decimal text).
    pub fn int(&self, value: i64) -> i64 {
        let tag = hmac::sign(&self.key, value.to_string().as_bytes());
        let bytes: [u8; 8] = tag.as_ref()[..8].try_into().expect("8 bytes");
        (u64::from_be_bytes(bytes) >> 1) as i64
    }
}

/// Letters → `x`/`X`, digits → `n`, everything else kept (Ranger's "redact").
pub fn redact(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_lowercase() => 'x',
            c if c.is_uppercase() => 'X',
            c if c.is_ascii_digit() => 'n',
            c => c,
        })
        .collect()
}

/// The first `n` characters kept, the rest redacted.
pub fn show_first(s: &str, n: usize) -> String {
    let keep: String = s.chars().take(n).collect();
    let rest: String = s.chars().skip(n).collect();
    keep + &redact(&rest)
}

/// The last `n` characters kept, the rest redacted.
pub fn show_last(s: &str, n: usize) -> String {
    let len = s.chars().count();
    let cut = len.saturating_sub(n);
    let head: String = s.chars().take(cut).collect();
    let tail: String = s.chars().skip(cut).collect();
    redact(&head) + &tail
}

/// A string → string UDF from a per-value function (NULL stays NULL).
fn string_udf(name: &str, f: impl Fn(&str) -> String + Send + Sync + 'static) -> ScalarUDF {
    string_array_udf(name, move |s| s.iter().map(|v| v.map(&f)).collect::<StringArray>())
}

/// A string → string UDF from a whole-array function.
fn string_array_udf(name: &str, f: impl Fn(&StringArray) -> StringArray + Send + Sync + 'static) -> ScalarUDF {
    let fun: ScalarFunctionImplementation = Arc::new(move |args: &[ColumnarValue]| {
        let map = |a: &ArrayRef| -> DfResult<ArrayRef> {
            let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
            Ok(Arc::new(f(a.as_string::<i32>())))
        };
        match &args[0] {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(map(a)?)),
            ColumnarValue::Scalar(v) => {
                let a = map(&v.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?))
            }
        }
    });
    create_udf(name, vec![DataType::Utf8], DataType::Utf8, Volatility::Immutable, fun)
}

/// CMS small-cell suppression of an Int64 column: values 1 to 10 become NULL. Only the
/// validity bitmap is computed; the values are shared with the input.
fn small_cell_udf() -> ScalarUDF {
    let fun: ScalarFunctionImplementation = Arc::new(|args: &[ColumnarValue]| {
        let suppress = |a: &ArrayRef| -> ArrayRef {
            let ints = a.as_primitive::<Int64Type>();
            let shown = BooleanBuffer::collect_bool(ints.len(), |i| !(1..=10).contains(&ints.value(i)));
            let nulls = NullBuffer::union(ints.nulls(), Some(&NullBuffer::new(shown)));
            Arc::new(Int64Array::new(ints.values().clone(), nulls))
        };
        Ok(match &args[0] {
            ColumnarValue::Array(a) => ColumnarValue::Array(suppress(a)),
            ColumnarValue::Scalar(v) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&suppress(&v.to_array()?), 0)?)
            }
        })
    });
    create_udf("rxgate_mask_small_cell", vec![DataType::Int64], DataType::Int64, Volatility::Immutable, fun)
}

/// The show-first/show-last functions made so far, by (first?, number of characters kept).
type FirstUdfs = std::collections::HashMap<(bool, usize), Arc<ScalarUDF>>;

/// The mask functions of one policy, built once per key.
#[derive(Debug, Clone)]
pub struct MaskFunctions {
    redact: Arc<ScalarUDF>,
    pseudonym_text: Option<Arc<ScalarUDF>>,
    pseudonym_int: Option<Arc<ScalarUDF>>,
    small_cell: Arc<ScalarUDF>,
    firsts: Arc<std::sync::Mutex<FirstUdfs>>,
}

impl MaskFunctions {
    /// Mask functions; without a key, a pseudonym mask fails closed (the column reads NULL).
    pub fn new(key: Option<PseudonymKey>) -> Self {
        let (text, int) = match key {
            Some(k) => {
                let t = k.clone();
                let text = string_array_udf(PSEUDONYM_UDF, move |a| t.text_array(a));
                let fun: ScalarFunctionImplementation = Arc::new(move |args: &[ColumnarValue]| {
                    let a = args[0].to_array(1)?;
                    let a = datafusion::arrow::compute::cast(&a, &DataType::Int64)?;
                    let ints = a.as_primitive::<Int64Type>();
                    let out: Int64Array = ints.iter().map(|v| v.map(|v| k.int(v))).collect();
                    Ok(match &args[0] {
                        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
                        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
                    })
                });
                let int = create_udf(PSEUDONYM_UDF, vec![DataType::Int64], DataType::Int64, Volatility::Immutable, fun);
                (Some(Arc::new(text)), Some(Arc::new(int)))
            }
            None => (None, None),
        };
        Self {
            redact: Arc::new(string_udf("rxgate_mask_redact", redact)),
            pseudonym_text: text,
            pseudonym_int: int,
            small_cell: Arc::new(small_cell_udf()),
            firsts: Arc::default(),
        }
    }

    fn keep(&self, first: bool, n: usize) -> Arc<ScalarUDF> {
        let mut cache = self.firsts.lock().expect("mask cache lock");
        cache
            .entry((first, n))
            .or_insert_with(|| {
                Arc::new(if first {
                    string_udf(&format!("rxgate_mask_show_first_{n}"), move |s| show_first(s, n))
                } else {
                    string_udf(&format!("rxgate_mask_show_last_{n}"), move |s| show_last(s, n))
                })
            })
            .clone()
    }

    /// The expression that shows `column` (of type `data_type`) masked by `mask`, keeping
    /// the column's type where the mask allows. `sql` turns a custom mask's SQL into an
    /// expression over `schema`.
    pub fn expr(
        &self,
        mask: &MaskKind,
        column: &Column,
        data_type: &DataType,
        schema: &DFSchema,
        sql: &dyn Fn(&str, &DFSchema) -> DfResult<Expr>,
    ) -> DfResult<Expr> {
        let c = Expr::Column(column.clone());
        let is_text = matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let is_int = data_type.is_integer();
        let null = || cast(lit(ScalarValue::Null), data_type.clone());
        let e = match mask {
            MaskKind::Null => null(),
            MaskKind::Redact if is_text => self.redact.call(vec![c]),
            MaskKind::ShowFirst { n } if is_text => self.keep(true, *n).call(vec![c]),
            MaskKind::ShowLast { n } if is_text => self.keep(false, *n).call(vec![c]),
            MaskKind::Redact | MaskKind::ShowFirst { .. } | MaskKind::ShowLast { .. } => null(),
            MaskKind::Pseudonym => match (&self.pseudonym_text, &self.pseudonym_int) {
                (Some(_), Some(int)) if is_int => cast(int.call(vec![cast(c, DataType::Int64)]), data_type.clone()),
                (Some(text), _) => text.call(vec![c]),
                // No key configured: fail closed.
                _ => null(),
            },
            MaskKind::Year => match data_type {
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
                    cast(datafusion::functions::datetime::expr_fn::date_trunc(lit("year"), c), data_type.clone())
                }
                _ if is_text => datafusion::functions::unicode::expr_fn::substr(c, lit(1i64)),
                _ => null(),
            },
            MaskKind::Zip3 if is_text => datafusion::functions::unicode::expr_fn::substring(c, lit(1i64), lit(3i64)),
            MaskKind::Zip3 => null(),
            MaskKind::SmallCell if is_int => {
                let e = self.small_cell.call(vec![if data_type == &DataType::Int64 {
                    c
                } else {
                    cast(c, DataType::Int64)
                }]);
                if data_type == &DataType::Int64 {
                    e
                } else {
                    cast(e, data_type.clone())
                }
            }
            MaskKind::SmallCell if data_type.is_numeric() => {
                when(c.clone().gt_eq(lit(1i64)).and(c.clone().lt_eq(lit(10i64))), null()).otherwise(c)?
            }
            MaskKind::SmallCell => c,
            MaskKind::Sql { expr } => {
                let text = expr.replace("{col}", &format!("\"{}\"", column.name.replace('"', "\"\"")));
                let e = sql(&text, schema)?;
                match e.get_type(schema) {
                    Ok(t) if &t == data_type => e,
                    Ok(_) => cast(e, data_type.clone()),
                    Err(err) => return Err(DataFusionError::Plan(format!("mask expression {expr:?}: {err}"))),
                }
            }
        };
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_cells_become_null_and_types_stay() {
        let f = MaskFunctions::new(None);
        let ctx = datafusion::prelude::SessionContext::new();
        let schema = DFSchema::empty();
        let no_sql = |_: &str, _: &DFSchema| -> DfResult<Expr> { unreachable!() };
        for (t, input) in [(DataType::Int64, "CAST(x AS BIGINT)"), (DataType::Int32, "CAST(x AS INT)")] {
            let e = f.expr(&MaskKind::SmallCell, &Column::from_name("x"), &t, &schema, &no_sql).unwrap();
            let sql = format!("SELECT {input} AS x FROM (VALUES (0), (1), (10), (11), (NULL), (-3)) v(x)");
            let df = ctx.sql(&sql).await.unwrap().select(vec![e.alias("m")]).unwrap().collect().await;
            let batch = &df.unwrap()[0];
            assert_eq!(batch.schema().field(0).data_type(), &t);
            let out = datafusion::arrow::compute::cast(batch.column(0), &DataType::Int64).unwrap();
            let got: Vec<Option<i64>> = out.as_primitive::<Int64Type>().iter().collect();
            assert_eq!(got, vec![Some(0), None, None, Some(11), None, Some(-3)]);
        }
    }

    #[test]
    fn redaction_keeps_shape() {
        assert_eq!(redact("Smith-Jones 42"), "Xxxxx-Xxxxx nn");
        assert_eq!(show_first("1234567890", 3), "123nnnnnnn");
        assert_eq!(show_last("1234567890", 4), "nnnnnn7890");
        assert_eq!(show_last("ab", 4), "ab");
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_prefixed() {
        let k1 = PseudonymKey::new("k1", b"secret one");
        let k2 = PseudonymKey::new("k2", b"secret two");
        let a = k1.text("1234567893");
        assert_eq!(a, k1.text("1234567893"));
        assert!(a.starts_with("k1:") && a.len() == 3 + 32);
        assert_ne!(a, k1.text("1234567894"));
        assert_ne!(a[3..], k2.text("1234567893")[3..]);
        assert!(k1.int(42) >= 0 && k1.int(42) == k1.int(42) && k1.int(42) != k1.int(43));
        assert!(!format!("{k1:?}").contains("secret one"));
    }

    #[test]
    fn array_pseudonyms_equal_single_ones_through_the_memo() {
        let k = PseudonymKey::new("k1", b"secret");
        let input = StringArray::from(vec![Some("1"), None, Some("22"), Some("1")]);
        for _ in 0..2 {
            // The second round is answered from the memo.
            let out = k.text_array(&input);
            assert_eq!(out.len(), 4);
            assert!(out.is_null(1));
            assert_eq!(out.value(0), k.text("1"));
            assert_eq!(out.value(2), k.text("22"));
            assert_eq!(out.value(3), out.value(0));
        }
        assert!(crate::rule::could_be_pseudonym(&k.text("1")));
    }
}

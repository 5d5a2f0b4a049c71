//! Hive's mask functions: `mask`, `mask_first_n`, `mask_last_n`, `mask_show_first_n`,
//! `mask_show_last_n` (strings, integers, and dates for `mask`) and `mask_hash`.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

/// Which characters a mask function replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MaskKind {
    All,
    FirstN,
    LastN,
    ShowFirstN,
    ShowLastN,
}

/// Hive's replacement characters: `None` leaves that class of characters as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MaskChars {
    upper: Option<char>,
    lower: Option<char>,
    digit: Option<char>,
    other: Option<char>,
    /// The digit integers are masked with.
    number: u8,
}

impl Default for MaskChars {
    fn default() -> Self {
        Self { upper: Some('X'), lower: Some('x'), digit: Some('n'), other: None, number: 1 }
    }
}

impl MaskChars {
    fn apply(&self, s: &str) -> String {
        if *self == Self::default() {
            // The policy's redact mask is Hive's default masking.
            return rxgate_policy::redact(s);
        }
        s.chars()
            .map(|c| {
                let to = if c.is_uppercase() {
                    self.upper
                } else if c.is_lowercase() {
                    self.lower
                } else if c.is_ascii_digit() {
                    self.digit
                } else {
                    self.other
                };
                to.unwrap_or(c)
            })
            .collect()
    }
}

/// A constant argument of a mask function: `None` when it is NULL (the default applies).
fn constant<'a>(function: &str, args: &'a [ColumnarValue], i: usize) -> Result<Option<&'a ScalarValue>> {
    match args.get(i) {
        None => Ok(None),
        Some(ColumnarValue::Scalar(v)) if v.is_null() => Ok(None),
        Some(ColumnarValue::Scalar(v)) => Ok(Some(v)),
        Some(ColumnarValue::Array(_)) => exec_err!("{function}: argument {} must be a constant", i + 2),
    }
}

/// A replacement character argument: a string gives its first character; an integer is a
/// code point, -1 meaning "leave unmasked" (Hive's `getCharArg`).
fn char_arg(function: &str, args: &[ColumnarValue], i: usize, default: Option<char>) -> Result<Option<char>> {
    Ok(match constant(function, args, i)? {
        None => default,
        Some(ScalarValue::Int64(Some(v))) if *v < 0 => None,
        Some(ScalarValue::Int64(Some(v))) => u32::try_from(*v).ok().and_then(char::from_u32).or(default),
        Some(ScalarValue::Utf8(Some(s))) => s.chars().next().or(default),
        Some(_) => default,
    })
}

fn int_arg(function: &str, args: &[ColumnarValue], i: usize, default: i64) -> Result<i64> {
    Ok(match constant(function, args, i)? {
        None => default,
        Some(ScalarValue::Int64(Some(v))) => *v,
        Some(ScalarValue::Utf8(Some(s))) => s.trim().parse().unwrap_or(default),
        Some(_) => default,
    })
}

/// Masks the characters of `s` whose positions `masked` selects, from its length.
fn mask_positions(s: &str, kind: MaskKind, n: usize, chars: &MaskChars) -> String {
    let len = s.chars().count();
    let n = n.min(len);
    let (from, to) = match kind {
        MaskKind::All => (0, len),
        MaskKind::FirstN => (0, n),
        MaskKind::LastN => (len - n, len),
        MaskKind::ShowFirstN => (n, len),
        MaskKind::ShowLastN => (0, len - n),
    };
    let head: String = s.chars().take(from).collect();
    let middle: String = s.chars().skip(from).take(to - from).collect();
    let tail: String = s.chars().skip(to).collect();
    head + &chars.apply(&middle) + &tail
}

pub(crate) fn mask(function: &str, kind: MaskKind, values: &ArrayRef, args: &[ColumnarValue]) -> Result<ArrayRef> {
    // mask(value, upper, lower, digit, other, number, day, month, year);
    // mask_*_n(value, n, upper, lower, digit, other, number).
    let (n, first) = match kind {
        MaskKind::All => (0, 0),
        _ => (int_arg(function, args, 0, 4)?.max(0) as usize, 1),
    };
    let d = MaskChars::default();
    let mut chars = MaskChars {
        upper: char_arg(function, args, first, d.upper)?,
        lower: char_arg(function, args, first + 1, d.lower)?,
        digit: char_arg(function, args, first + 2, d.digit)?,
        other: char_arg(function, args, first + 3, d.other)?,
        number: 1,
    };
    let number = int_arg(function, args, first + 4, 1)?;
    chars.number = if (0..=9).contains(&number) { number as u8 } else { 1 };
    match values.data_type() {
        DataType::Int64 => {
            let digit = char::from(b'0' + chars.number);
            let digits_only =
                MaskChars { upper: None, lower: None, digit: Some(digit), other: None, number: chars.number };
            let ints = values.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let out: Int64Array = ints
                .iter()
                .map(|v| {
                    let v = v?;
                    let masked = mask_positions(&v.unsigned_abs().to_string(), kind, n, &digits_only);
                    let m: i128 = masked.parse().ok()?;
                    i64::try_from(if v < 0 { -m } else { m }).ok()
                })
                .collect();
            Ok(Arc::new(out))
        }
        DataType::Date32 => {
            let day = int_arg(function, args, 5, 1)?;
            let month = int_arg(function, args, 6, 0)?;
            let year = int_arg(function, args, 7, 1)?;
            let day = if day != -1 && !(1..=31).contains(&day) { 1 } else { day };
            let month = if month != -1 && !(0..=11).contains(&month) { 0 } else { month };
            let year = if year != -1 && year < 1 { 1 } else { year };
            let dates = values.as_primitive::<Date32Type>();
            let out: Date32Array = dates
                .iter()
                .map(|v| {
                    let date = Date32Type::to_naive_date_opt(v?)?;
                    let y = if year == -1 { date.year() } else { year as i32 };
                    let m = if month == -1 { date.month() } else { month as u32 + 1 };
                    let mut dd = if day == -1 { date.day() } else { day as u32 };
                    loop {
                        if let Some(masked) = NaiveDate::from_ymd_opt(y, m, dd) {
                            return Some(Date32Type::from_naive_date(masked));
                        }
                        if dd <= 28 {
                            return None;
                        }
                        dd -= 1;
                    }
                })
                .collect();
            Ok(Arc::new(out))
        }
        _ => {
            let text = values.as_string::<i32>();
            let out: StringArray = text.iter().map(|v| v.map(|s| mask_positions(s, kind, n, &chars))).collect();
            Ok(Arc::new(out))
        }
    }
}

pub(crate) fn mask_hash(values: &ArrayRef) -> ArrayRef {
    if values.data_type() != &DataType::Utf8 {
        return Arc::new(StringArray::from(vec![None::<&str>; values.len()]));
    }
    let text = values.as_string::<i32>();
    let out: StringArray = text
        .iter()
        .map(|v| {
            v.map(|s| {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
                digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
            })
        })
        .collect();
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sql::one;

    #[tokio::test]
    async fn mask_functions_follow_hive() {
        assert_eq!(one("SELECT mask('abcd-EFGH-8765-4321')").await, "xxxx-XXXX-nnnn-nnnn");
        assert_eq!(one("SELECT mask('abcd-EFGH-8765-4321', 'U', 'l', '#')").await, "llll-UUUU-####-####");
        assert_eq!(one("SELECT mask('ab-12', 'U', -1, '#', '*')").await, "ab*##");
        assert_eq!(one("SELECT mask_first_n('1234-5678-8765-4321', 4)").await, "nnnn-5678-8765-4321");
        assert_eq!(one("SELECT mask_last_n('1234-5678-8765-4321', 4)").await, "1234-5678-8765-nnnn");
        assert_eq!(one("SELECT mask_show_first_n('1234-5678-8765-4321', 4)").await, "1234-nnnn-nnnn-nnnn");
        assert_eq!(one("SELECT mask_show_last_n('1234-5678-8765-4321', 4)").await, "nnnn-nnnn-nnnn-4321");
        assert_eq!(one("SELECT mask_show_last_n('Smith')").await, "Xmith");
        assert_eq!(one("SELECT mask_first_n('ab', 10)").await, "xx");
        assert_eq!(one("SELECT mask(CAST(NULL AS TEXT))").await, "NULL");
        assert_eq!(one("SELECT mask(12345)").await, "11111");
        assert_eq!(one("SELECT mask_show_last_n(-1234567, 2, 'X', 'x', 'n', -1, 0)").await, "-67");
        assert_eq!(one("SELECT mask(DATE '2021-12-31')").await, "0001-01-01");
        assert_eq!(one("SELECT mask(DATE '2021-12-31', 'x', 'x', 'x', -1, '1', 1, 0, -1)").await, "2021-01-01");
        assert_eq!(
            one("SELECT mask_hash('abc')").await,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(one("SELECT mask_hash(42)").await, "NULL");
        // The default masking is the policy's redact mask.
        for s in ["Ab-9 é", "", "ZIP 90210"] {
            assert_eq!(mask_positions(s, MaskKind::All, 0, &MaskChars::default()), rxgate_policy::redact(s));
            assert_eq!(
                mask_positions(s, MaskKind::ShowFirstN, 2, &MaskChars::default()),
                rxgate_policy::show_first(s, 2)
            );
            assert_eq!(
                mask_positions(s, MaskKind::ShowLastN, 2, &MaskChars::default()),
                rxgate_policy::show_last(s, 2)
            );
        }
    }
}

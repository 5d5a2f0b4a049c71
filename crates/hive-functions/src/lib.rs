//! The Hive functions analysts use, as DataFusion UDFs registered in every session
//! ([`register`]).
//!
//! Already DataFusion built-ins with Hive's meaning, left as they are: `nvl`, `nvl2`.
//! Registered here (replacing a DataFusion function of the same name where there is one):
//! - `concat_ws(sep, s|array<s>, …)`: NULLs skipped, arrays flattened (Hive's
//!   `concat_ws(',', collect_set(x))`); DataFusion's takes strings only.
//! - `date_format(date|timestamp|string, 'yyyy-MM-dd')`: Java date patterns
//!   ([`super::datefmt`]); DataFusion's `date_format` is `to_char` with chrono patterns.
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

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int32Array, Int64Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::functions_aggregate::array_agg::array_agg_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use regex::Regex;

use super::datefmt::{JavaPattern, DEFAULT_PATTERN};

/// Registers the Hive functions in a session.
pub(crate) fn register(ctx: &SessionContext) {
    for f in scalar_functions() {
        ctx.register_udf(f);
    }
    for f in aggregate_functions() {
        ctx.register_udaf(f);
    }
}

/// The scalar functions.
pub(crate) fn scalar_functions() -> Vec<ScalarUDF> {
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
pub(crate) fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(Collect::new("collect_list", false)),
        AggregateUDF::new_from_impl(Collect::new("collect_set", true)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MaskKind {
    All,
    FirstN,
    LastN,
    ShowFirstN,
    ShowLastN,
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
            Kind::UnixTimestamp => Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::UserDefined],
                Volatility::Stable,
            ),
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
                Ok(types.iter().enumerate().map(|(i, t)| if i == 0 { temporal_or_text(t) } else { DataType::Utf8 }).collect())
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
                    t => return plan_err!("{name} expects a string or an integer{}, got {t}", if kind == MaskKind::All { " or a date" } else { "" }),
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
            Kind::ConcatWs | Kind::DateFormat | Kind::FromUnixtime | Kind::RegexpExtract | Kind::MaskHash => DataType::Utf8,
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

/// Compiles regular expressions, remembering the last one (patterns are nearly always
/// literals).
#[derive(Default)]
struct RegexCache(Option<(String, Regex)>);

impl RegexCache {
    fn get(&mut self, function: &str, pattern: &str) -> Result<&Regex> {
        if self.0.as_ref().is_none_or(|(p, _)| p != pattern) {
            match Regex::new(pattern) {
                Ok(re) => self.0 = Some((pattern.to_string(), re)),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or_default().trim().to_string();
                    return exec_err!("{function}: invalid regular expression '{pattern}': {last}");
                }
            }
        }
        Ok(&self.0.as_ref().expect("just set").1)
    }
}

#[derive(Default)]
struct PatternCache(Option<(String, JavaPattern)>);

impl PatternCache {
    fn get(&mut self, function: &str, pattern: &str) -> Result<&JavaPattern> {
        if self.0.as_ref().is_none_or(|(p, _)| p != pattern) {
            match JavaPattern::parse(pattern) {
                Ok(p) => self.0 = Some((pattern.to_string(), p)),
                Err(e) => return exec_err!("{function}: {e}"),
            }
        }
        Ok(&self.0.as_ref().expect("just set").1)
    }
}

/// Hive's text forms of dates and timestamps (`yyyy-MM-dd[ HH:mm:ss[.f…]]`).
fn parse_hive_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Dates, timestamps (as UTC wall time) or Hive date/time text, per row.
fn datetimes(array: &ArrayRef) -> Result<Vec<Option<NaiveDateTime>>> {
    Ok(match array.data_type() {
        DataType::Null => vec![None; array.len()],
        DataType::Utf8 => array.as_string::<i32>().iter().map(|v| v.and_then(parse_hive_datetime)).collect(),
        _ => {
            let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            micros
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.and_then(DateTime::from_timestamp_micros).map(|d| d.naive_utc()))
                .collect()
        }
    })
}

fn concat_ws(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let sep = arrays[0].as_string::<i32>();
    let mut out = StringBuilder::new();
    for row in 0..sep.len() {
        if sep.is_null(row) {
            out.append_null();
            continue;
        }
        let mut parts: Vec<String> = vec![];
        for a in &arrays[1..] {
            if a.is_null(row) {
                continue;
            }
            match a.data_type() {
                DataType::List(_) => {
                    let items = a.as_list::<i32>().value(row);
                    parts.extend(items.as_string::<i32>().iter().flatten().map(str::to_string));
                }
                _ => parts.push(a.as_string::<i32>().value(row).to_string()),
            }
        }
        out.append_value(parts.join(sep.value(row)));
    }
    Ok(Arc::new(out.finish()))
}

fn date_format(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let values = datetimes(&arrays[0])?;
    let patterns = arrays[1].as_string::<i32>();
    let mut cache = PatternCache::default();
    let mut out = StringBuilder::new();
    for (row, v) in values.iter().enumerate() {
        match v {
            Some(dt) if patterns.is_valid(row) => {
                out.append_value(cache.get("date_format", patterns.value(row))?.format(dt))
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn from_unixtime(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let secs = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let patterns = arrays.get(1).map(|a| a.as_string::<i32>());
    let mut cache = PatternCache::default();
    let mut out = StringBuilder::new();
    for row in 0..secs.len() {
        let pattern = match patterns {
            Some(p) if p.is_null(row) => None,
            Some(p) => Some(p.value(row)),
            None => Some(DEFAULT_PATTERN),
        };
        let dt = secs.is_valid(row).then(|| DateTime::from_timestamp(secs.value(row), 0)).flatten();
        match (dt, pattern) {
            (Some(dt), Some(p)) => out.append_value(cache.get("from_unixtime", p)?.format(&dt.naive_utc())),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn unix_timestamp(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let values: Vec<Option<i64>> = if arrays[0].data_type() == &DataType::Utf8 {
        let text = arrays[0].as_string::<i32>();
        let patterns = arrays.get(1).map(|a| a.as_string::<i32>());
        let mut cache = PatternCache::default();
        let mut values = Vec::with_capacity(text.len());
        for row in 0..text.len() {
            let pattern = match patterns {
                Some(p) if p.is_null(row) => None,
                Some(p) => Some(p.value(row)),
                None => Some(DEFAULT_PATTERN),
            };
            values.push(match (text.is_valid(row), pattern) {
                (true, Some(p)) => {
                    cache.get("unix_timestamp", p)?.parse_datetime(text.value(row)).map(|d| d.and_utc().timestamp())
                }
                _ => None,
            });
        }
        values
    } else {
        datetimes(&arrays[0])?.into_iter().map(|d| d.map(|d| d.and_utc().timestamp())).collect()
    };
    Ok(Arc::new(Int64Array::from(values)))
}

fn regexp_extract(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let subject = arrays[0].as_string::<i32>();
    let pattern = arrays[1].as_string::<i32>();
    let group = arrays.get(2).map(|a| a.as_primitive::<datafusion::arrow::datatypes::Int64Type>());
    let mut cache = RegexCache::default();
    let mut out = StringBuilder::new();
    for row in 0..subject.len() {
        let idx = match group {
            Some(g) if g.is_null(row) => None,
            Some(g) => Some(g.value(row)),
            None => Some(1),
        };
        let (Some(idx), true, true) = (idx, subject.is_valid(row), pattern.is_valid(row)) else {
            out.append_null();
            continue;
        };
        let re = cache.get("regexp_extract", pattern.value(row))?;
        let groups = re.captures_len() as i64 - 1;
        if idx < 0 || idx > groups {
            return exec_err!("regexp_extract: group {idx} does not exist; the pattern has {groups} group(s)");
        }
        match re.captures(subject.value(row)) {
            None => out.append_value(""),
            Some(caps) => match caps.get(idx as usize) {
                Some(m) => out.append_value(m.as_str()),
                None => out.append_null(),
            },
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Java's `s.split(regex, -1)`: trailing empty strings kept; a zero-width match at the start
/// gives no leading empty string.
fn java_split<'a>(re: &Regex, s: &'a str) -> Vec<&'a str> {
    let mut parts = vec![];
    let mut index = 0;
    for m in re.find_iter(s) {
        if m.end() == 0 {
            continue;
        }
        parts.push(&s[index..m.start()]);
        index = m.end();
    }
    parts.push(&s[index..]);
    parts
}

fn split(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let text = arrays[0].as_string::<i32>();
    let pattern = arrays[1].as_string::<i32>();
    let mut cache = RegexCache::default();
    let mut out = ListBuilder::new(StringBuilder::new());
    for row in 0..text.len() {
        if text.is_null(row) || pattern.is_null(row) {
            out.append_null();
            continue;
        }
        let re = cache.get("split", pattern.value(row))?;
        for part in java_split(re, text.value(row)) {
            out.values().append_value(part);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

fn size(array: &ArrayRef) -> Result<ArrayRef> {
    let n = array.len();
    let sizes: Vec<i32> = match array.data_type() {
        DataType::Null => vec![-1; n],
        DataType::List(_) => {
            let l = array.as_list::<i32>();
            (0..n).map(|i| if l.is_null(i) { -1 } else { l.value_length(i) }).collect()
        }
        DataType::LargeList(_) => {
            let l = array.as_list::<i64>();
            (0..n).map(|i| if l.is_null(i) { -1 } else { l.value_length(i) as i32 }).collect()
        }
        DataType::FixedSizeList(_, len) => {
            let l = array.as_fixed_size_list();
            (0..n).map(|i| if l.is_null(i) { -1 } else { *len }).collect()
        }
        DataType::Map(..) => {
            let m = array.as_map();
            (0..n).map(|i| if m.is_null(i) { -1 } else { m.value_length(i) }).collect()
        }
        other => return exec_err!("size expects an array or a map, got {other}"),
    };
    Ok(Arc::new(Int32Array::from(sizes)))
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

fn mask(function: &str, kind: MaskKind, values: &ArrayRef, args: &[ColumnarValue]) -> Result<ArrayRef> {
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
            let digits_only = MaskChars { upper: None, lower: None, digit: Some(digit), other: None, number: chars.number };
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

fn mask_hash(values: &ArrayRef) -> ArrayRef {
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

/// `collect_list` / `collect_set`: DataFusion's `array_agg` accumulators, ignoring NULLs
/// (and, for the set, duplicates), giving an empty array rather than NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Collect {
    name: &'static str,
    distinct: bool,
    signature: Signature,
}

impl Collect {
    fn new(name: &'static str, distinct: bool) -> Self {
        Self { name, distinct, signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for Collect {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(types[0].clone(), true))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<datafusion::arrow::datatypes::FieldRef>> {
        array_agg_udaf().inner().state_fields(StateFieldsArgs { is_distinct: self.distinct, ordering_fields: &[], ..args })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type().clone();
        let inner = array_agg_udaf().inner().accumulator(AccumulatorArgs {
            ignore_nulls: true,
            is_distinct: self.distinct,
            order_bys: &[],
            ..args
        })?;
        Ok(Box::new(EmptyWhenNothing { inner, item }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

#[derive(Debug)]
struct EmptyWhenNothing {
    inner: Box<dyn Accumulator>,
    item: DataType,
}

impl Accumulator for EmptyWhenNothing {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let v = self.inner.evaluate()?;
        if v.is_null() {
            return Ok(ScalarValue::List(ScalarValue::new_list_nullable(&[], &self.item)));
        }
        Ok(v)
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::display::array_value_to_string;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
        if b.column(0).is_null(0) {
            return "NULL".into();
        }
        array_value_to_string(b.column(0), 0).unwrap()
    }

    async fn fails(sql: &str) -> String {
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

    #[tokio::test]
    async fn concat_ws_skips_nulls_and_flattens_arrays() {
        assert_eq!(one("SELECT concat_ws('-', 'a', NULL, 'b')").await, "a-b");
        assert_eq!(one("SELECT concat_ws(',', split('x y z', ' '), 'w')").await, "x,y,z,w");
        assert_eq!(one("SELECT concat_ws(NULL, 'a')").await, "NULL");
        assert_eq!(one("SELECT concat_ws('/', 1, 2.5)").await, "1/2.5");
    }

    #[tokio::test]
    async fn date_functions_use_java_patterns() {
        assert_eq!(one("SELECT date_format(DATE '2021-12-31', 'yyyy-MM')").await, "2021-12");
        assert_eq!(one("SELECT date_format('2021-12-31 13:14:15', 'dd/MM/yy hh:mm a')").await, "31/12/21 01:14 PM");
        assert_eq!(one("SELECT date_format(TIMESTAMP '2021-12-31 13:14:15.678', 'HH:mm:ss.SSS')").await, "13:14:15.678");
        assert_eq!(one("SELECT date_format('garbage', 'yyyy')").await, "NULL");
        assert_eq!(one("SELECT from_unixtime(0)").await, "1970-01-01 00:00:00");
        assert_eq!(one("SELECT from_unixtime(1640995200, 'yyyy-MM-dd')").await, "2022-01-01");
        assert_eq!(one("SELECT unix_timestamp('2022-01-01 00:00:00')").await, "1640995200");
        assert_eq!(one("SELECT unix_timestamp('2022-01-01', 'yyyy-MM-dd')").await, "1640995200");
        assert_eq!(one("SELECT unix_timestamp('2022-01-01')").await, "NULL");
        assert_eq!(one("SELECT unix_timestamp(DATE '2022-01-01')").await, "1640995200");
        assert_eq!(one("SELECT unix_timestamp(TIMESTAMP '2022-01-01 00:00:01')").await, "1640995201");
        let now: i64 = one("SELECT unix_timestamp()").await.parse().unwrap();
        assert!((now - chrono::Utc::now().timestamp()).abs() < 60);
        assert!(fails("SELECT date_format(DATE '2021-12-31', 'yyyy-qq')").await.contains("illegal pattern character 'q'"));
    }

    #[tokio::test]
    async fn regexp_extract_split_and_size() {
        assert_eq!(one(r"SELECT regexp_extract('npi=1234567890;x', 'npi=(\d+)', 1)").await, "1234567890");
        assert_eq!(one(r"SELECT regexp_extract('abc-123', '([a-z]+)-(\d+)')").await, "abc");
        assert_eq!(one(r"SELECT regexp_extract('abc-123', '([a-z]+)-(\d+)', 0)").await, "abc-123");
        assert_eq!(one(r"SELECT regexp_extract('no digits', '(\d+)', 1)").await, "");
        assert!(fails(r"SELECT regexp_extract('abc', '(a)', 2)").await.contains("group 2 does not exist"));
        assert_eq!(one("SELECT split('a,b,,c,', ',')").await, "[a, b, , c, ]");
        assert_eq!(one("SELECT split('abc', '')").await, "[a, b, c, ]");
        assert_eq!(one(r"SELECT split('a1b22c', '\d+')").await, "[a, b, c]");
        assert_eq!(one("SELECT size(split('a b c', ' '))").await, "3");
        assert_eq!(one("SELECT size(CAST(NULL AS INT[]))").await, "-1");
        assert_eq!(one("SELECT size(make_array(1, 2))").await, "2");
        assert_eq!(one("SELECT size(map(['a', 'b'], [1, 2]))").await, "2");
    }

    #[tokio::test]
    async fn collect_list_and_set_skip_nulls() {
        let sql = "SELECT array_sort(collect_list(x)), array_sort(collect_set(x)) FROM (VALUES ('b'), ('a'), (NULL), ('b')) t(x)";
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(array_value_to_string(batches[0].column(0), 0).unwrap(), "[a, b, b]");
        assert_eq!(array_value_to_string(batches[0].column(1), 0).unwrap(), "[a, b]");
        assert_eq!(one("SELECT collect_list(x) FROM (VALUES (CAST(NULL AS TEXT))) t(x)").await, "[]");
        assert_eq!(
            one("SELECT concat_ws(',', array_sort(collect_set(x))) FROM (VALUES ('b'), ('a'), ('b')) t(x)").await,
            "a,b"
        );
        let grouped = "SELECT k, size(collect_list(v)) FROM (VALUES (1, 'a'), (1, 'b'), (2, NULL)) t(k, v) GROUP BY k ORDER BY k";
        let batches = ctx.sql(grouped).await.unwrap().collect().await.unwrap();
        let sizes: Vec<String> =
            (0..2).map(|i| array_value_to_string(batches[0].column(1), i).unwrap()).collect();
        assert_eq!(sizes, ["2", "0"]);
    }

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
            assert_eq!(mask_positions(s, MaskKind::ShowFirstN, 2, &MaskChars::default()), rxgate_policy::show_first(s, 2));
            assert_eq!(mask_positions(s, MaskKind::ShowLastN, 2, &MaskChars::default()), rxgate_policy::show_last(s, 2));
        }
    }
}

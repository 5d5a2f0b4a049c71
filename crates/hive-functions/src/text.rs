//! Text and collections: `concat_ws` (arrays flattened), `regexp_extract`, `split` (Java's
//! `split(regex, -1)`), `size`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use regex::Regex;

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

pub(crate) fn concat_ws(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

pub(crate) fn regexp_extract(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

pub(crate) fn split(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

pub(crate) fn size(array: &ArrayRef) -> Result<ArrayRef> {
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

#[cfg(test)]
mod tests {
    use crate::test_sql::{fails, one};

    #[tokio::test]
    async fn concat_ws_skips_nulls_and_flattens_arrays() {
        assert_eq!(one("SELECT concat_ws('-', 'a', NULL, 'b')").await, "a-b");
        assert_eq!(one("SELECT concat_ws(',', split('x y z', ' '), 'w')").await, "x,y,z,w");
        assert_eq!(one("SELECT concat_ws(NULL, 'a')").await, "NULL");
        assert_eq!(one("SELECT concat_ws('/', 1, 2.5)").await, "1/2.5");
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
}

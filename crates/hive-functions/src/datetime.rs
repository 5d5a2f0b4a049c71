//! Dates and times: `date_format`, `from_unixtime`, `unix_timestamp` with Java's date
//! patterns ([`crate::datefmt`]), UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{exec_err, Result};
use std::sync::Arc;

use crate::datefmt::{JavaPattern, DEFAULT_PATTERN};

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

pub(crate) fn date_format(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

pub(crate) fn from_unixtime(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

pub(crate) fn unix_timestamp(arrays: &[ArrayRef]) -> Result<ArrayRef> {
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

#[cfg(test)]
mod tests {
    use crate::test_sql::{fails, one};

    #[tokio::test]
    async fn date_functions_use_java_patterns() {
        assert_eq!(one("SELECT date_format(DATE '2021-12-31', 'yyyy-MM')").await, "2021-12");
        assert_eq!(one("SELECT date_format('2021-12-31 13:14:15', 'dd/MM/yy hh:mm a')").await, "31/12/21 01:14 PM");
        assert_eq!(
            one("SELECT date_format(TIMESTAMP '2021-12-31 13:14:15.678', 'HH:mm:ss.SSS')").await,
            "13:14:15.678"
        );
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
        assert!(fails("SELECT date_format(DATE '2021-12-31', 'yyyy-qq')")
            .await
            .contains("illegal pattern character 'q'"));
    }
}

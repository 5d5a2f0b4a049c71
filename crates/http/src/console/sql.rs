//! Runs one statement for a console session through `EngineSession::plan` and `execute`
//! (the door every frontend uses, so the user's policy and the audit trail apply) and turns
//! its rows into JSON: `{"columns": [...], "rows": [[...], ...]}`, or `{"error": {"sqlstate",
//! "message"}}` with the client-safe message.
//!
//! Values a browser asks about come in as parameters (`$1`, `$2`, …), never as SQL text.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{ParamValues, ScalarValue};
use futures::StreamExt;
use rxgate_common::{Error, Result};
use rxgate_engine::QueryOutput;
use serde_json::{json, Map, Value};

use super::sessions::ConsoleSession;

/// Rows one result may carry to the browser; a longer result is cut (`"truncated": true`).
pub(crate) const MAX_ROWS: usize = 2000;

/// Integers beyond this lose precision in JavaScript: they are sent as strings.
const JS_SAFE: i128 = (1 << 53) - 1;

/// Runs `sql` with `params` in the console session, on the engine's runtime; errors become
/// the result's `error`. A request dropped meanwhile (the browser went away) aborts it.
pub(crate) async fn run(session: &Arc<ConsoleSession>, sql: &str, params: Vec<ScalarValue>) -> Value {
    let (s, sql) = (session.clone(), sql.to_string());
    let task = session.runtime.spawn(async move { run_inner(&s, &sql, params).await });
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => error_json(&e),
        Err(e) => error_json(&Error::internal(format!("console statement: {e}"))),
    }
}

/// Aborts a task when the future awaiting it is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `{"error": {"sqlstate": "42P01", "message": "…"}}`; the message is the client-safe one.
pub(crate) fn error_json(e: &Error) -> Value {
    json!({ "error": { "sqlstate": e.code.sqlstate(), "message": e.client_message() } })
}

async fn run_inner(session: &ConsoleSession, sql: &str, params: Vec<ScalarValue>) -> Result<Value> {
    let _one_at_a_time = session.serial.lock().await;
    let planned = session.engine.plan(sql).await?;
    // Values are cast to the types the plan gives its parameters (strings are often views).
    let types = planned.parameter_types();
    let mut bound = Vec::with_capacity(params.len());
    for (i, value) in params.into_iter().enumerate() {
        bound.push(match types.get(i) {
            Some(Some(t)) if value.data_type() != *t => value.cast_to(t)?,
            _ => value,
        });
    }
    let params = (!bound.is_empty()).then(|| ParamValues::from(bound));
    let output = session.engine.execute(&planned, params).await?;
    match output {
        QueryOutput::Rows { schema, mut stream } | QueryOutput::Fetched { schema, mut stream } => {
            let columns: Vec<Value> = schema.fields().iter().map(|f| Value::String(f.name().clone())).collect();
            let mut rows: Vec<Value> = Vec::new();
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                for r in 0..batch.num_rows() {
                    if rows.len() == MAX_ROWS {
                        truncated = true;
                        break;
                    }
                    let row: Vec<Value> = batch.columns().iter().map(|c| cell(c, r)).collect();
                    rows.push(Value::Array(row));
                }
                if truncated {
                    break;
                }
            }
            // Dropping the stream ends the statement (its audit record says so).
            drop(stream);
            Ok(json!({ "columns": columns, "rows": rows, "truncated": truncated }))
        }
        QueryOutput::Command { tag } | QueryOutput::Written { tag, .. } => {
            Ok(json!({ "columns": [], "rows": [], "tag": tag }))
        }
        _ => Ok(json!({ "columns": [], "rows": [] })),
    }
}

fn int(v: i128) -> Value {
    if v.abs() <= JS_SAFE {
        Value::from(v as i64)
    } else {
        Value::String(v.to_string())
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or_else(|| Value::String(v.to_string()))
}

/// One value as JSON: numbers as numbers (large integers as text), booleans as booleans,
/// NULL as null, everything else in Arrow's display form.
pub(crate) fn cell(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Int8 => int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => int(array.as_primitive::<Int64Type>().value(row).into()),
        DataType::UInt8 => int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => int(array.as_primitive::<UInt64Type>().value(row).into()),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        _ => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(f) => Value::String(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

/// Named results as one JSON object.
pub(crate) fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn values_become_json() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(1 << 60)]));
        assert_eq!(cell(&ints, 0), json!(7));
        assert_eq!(cell(&ints, 1), Value::Null);
        assert_eq!(cell(&ints, 2), json!((1i64 << 60).to_string()));
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN]));
        assert_eq!(cell(&floats, 0), json!(1.5));
        assert_eq!(cell(&floats, 1), json!("NaN"));
        let text: ArrayRef = Arc::new(StringArray::from(vec!["<b>x</b>"]));
        assert_eq!(cell(&text, 0), json!("<b>x</b>"));
    }
}

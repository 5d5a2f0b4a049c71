//! Server-side cursors (`DECLARE … CURSOR [WITH HOLD] FOR …`, `FETCH`, `CLOSE`), as Tableau,
//! psqlODBC and psycopg's named cursors use them, and the options of `COPY … TO STDOUT`.
//!
//! A cursor keeps its query's result stream open between statements; each FETCH pulls at
//! most its count of rows from it, so a cursor over a large table never holds more than one
//! batch in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, FetchDirection, Value};
use futures::StreamExt;
use rxgate_common::{Error, Result, StatusCode};

/// Output format of `COPY … TO STDOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format (tab-separated, `\N` for NULL, backslash escapes).
    Text,
    /// CSV.
    Csv,
    /// PGCOPY binary.
    Binary,
}

/// Options of `COPY (query) TO STDOUT [WITH (…)]`, with PostgreSQL's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Output format.
    pub format: CopyFormat,
    /// Column separator.
    pub delimiter: String,
    /// How NULL is written.
    pub null: String,
    /// Whether a CSV header line comes first.
    pub header: bool,
    /// CSV quote character.
    pub quote: String,
    /// CSV escape character.
    pub escape: String,
}

impl CopyOptions {
    /// Reads the modern (`WITH (FORMAT csv, HEADER)`) and legacy (`CSV HEADER`) option lists.
    pub(crate) fn parse(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let bad = |what: String| Error::new(StatusCode::Unsupported, format!("COPY option {what} is not supported"));
        let mut format = CopyFormat::Text;
        let (mut delimiter, mut null, mut quote, mut escape) = (None, None, None, None);
        let mut header = false;
        for o in options {
            match o {
                CopyOption::Format(f) => {
                    format = match f.value.to_ascii_lowercase().as_str() {
                        "text" => CopyFormat::Text,
                        "csv" => CopyFormat::Csv,
                        "binary" => CopyFormat::Binary,
                        other => {
                            return Err(Error::new(
                                StatusCode::InvalidArgument,
                                format!("COPY format \"{other}\" not recognized"),
                            ))
                        }
                    }
                }
                CopyOption::Delimiter(c) => delimiter = Some(c.to_string()),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = Some(c.to_string()),
                CopyOption::Escape(c) => escape = Some(c.to_string()),
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => return Err(bad(other.to_string())),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => format = CopyFormat::Binary,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(c.to_string()),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Csv(csv) => {
                    format = CopyFormat::Csv;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = Some(q.to_string()),
                            CopyLegacyCsvOption::Escape(e) => escape = Some(e.to_string()),
                            other => return Err(bad(other.to_string())),
                        }
                    }
                }
                other => return Err(bad(other.to_string())),
            }
        }
        if header && format != CopyFormat::Csv {
            return Err(Error::new(StatusCode::InvalidArgument, "COPY HEADER available only in CSV mode"));
        }
        let csv = format == CopyFormat::Csv;
        let quote = quote.unwrap_or_else(|| "\"".into());
        Ok(Self {
            format,
            delimiter: delimiter.unwrap_or_else(|| if csv { "," } else { "\t" }.into()),
            null: null.unwrap_or_else(|| if csv { "" } else { "\\N" }.into()),
            header,
            escape: escape.unwrap_or_else(|| quote.clone()),
            quote,
        })
    }
}

/// How many rows a FETCH asks for: `Some(n)`, or `None` for all that remain.
pub(crate) fn fetch_count(direction: &FetchDirection) -> Result<Option<u64>> {
    let number = |v: &Value| -> Result<u64> {
        match v {
            Value::Number(n, _) => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as u64)
                .ok_or_else(|| Error::new(StatusCode::Unsupported, "cursor can only scan forward")),
            other => Err(Error::new(StatusCode::SyntaxError, format!("invalid FETCH count {other}"))),
        }
    };
    match direction {
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => number(limit).map(Some),
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        _ => Err(Error::new(
            StatusCode::Unsupported,
            "cursor can only scan forward (declare it without SCROLL and fetch NEXT, FORWARD n or ALL)",
        )),
    }
}

/// One open cursor.
pub(crate) struct Cursor {
    schema: SchemaRef,
    hold: bool,
    state: Arc<tokio::sync::Mutex<CursorState>>,
}

struct CursorState {
    stream: Option<SendableRecordBatchStream>,
    /// Rows of the last batch that a FETCH did not take.
    pending: Option<RecordBatch>,
}

impl Cursor {
    /// The rows' schema (for Describe of a FETCH).
    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A stream of the next `count` rows (all remaining rows for `None`); it ends early when
    /// the cursor's result does.
    pub(crate) fn fetch(&self, count: Option<u64>) -> SendableRecordBatchStream {
        let state = self.state.clone();
        let rows = futures::stream::unfold((state, count), |(state, left)| async move {
            if left == Some(0) {
                return None;
            }
            let mut st = state.lock().await;
            let batch = match st.pending.take() {
                Some(b) => Ok(b),
                None => match st.stream.as_mut()?.next().await {
                    Some(Ok(b)) => Ok(b),
                    Some(Err(e)) => {
                        st.stream = None;
                        Err(e)
                    }
                    None => {
                        st.stream = None;
                        return None;
                    }
                },
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return Some((Err(e), (state.clone(), Some(0)))),
            };
            let (out, left) = match left {
                Some(n) if (batch.num_rows() as u64) > n => {
                    let n = n as usize;
                    st.pending = Some(batch.slice(n, batch.num_rows() - n));
                    (batch.slice(0, n), Some(0))
                }
                Some(n) => {
                    let rows = batch.num_rows() as u64;
                    (batch, Some(n - rows))
                }
                None => (batch, None),
            };
            drop(st);
            Some((Ok(out), (state, left)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows))
    }
}

/// The cursors of one session, by name.
#[derive(Default)]
pub(crate) struct Cursors {
    open: Mutex<HashMap<String, Arc<Cursor>>>,
}

impl Cursors {
    /// Opens `name` over `stream`; the name must be free.
    pub(crate) fn declare(&self, name: &str, stream: SendableRecordBatchStream, hold: bool) -> Result<()> {
        let mut open = self.open.lock().expect("cursors lock");
        if open.contains_key(name) {
            return Err(Error::new(StatusCode::DuplicateCursor, format!("cursor \"{name}\" already exists")));
        }
        let cursor = Cursor {
            schema: stream.schema(),
            hold,
            state: Arc::new(tokio::sync::Mutex::new(CursorState { stream: Some(stream), pending: None })),
        };
        open.insert(name.to_string(), Arc::new(cursor));
        Ok(())
    }

    /// The open cursor `name`.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<Cursor>> {
        self.open
            .lock()
            .expect("cursors lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::new(StatusCode::CursorNotFound, format!("cursor \"{name}\" does not exist")))
    }

    /// Closes `name` (`None`: all cursors).
    pub(crate) fn close(&self, name: Option<&str>) -> Result<()> {
        let mut open = self.open.lock().expect("cursors lock");
        match name {
            None => open.clear(),
            Some(n) => {
                open.remove(n)
                    .ok_or_else(|| Error::new(StatusCode::CursorNotFound, format!("cursor \"{n}\" does not exist")))?;
            }
        }
        Ok(())
    }

    /// At the end of a transaction: cursors without HOLD close.
    pub(crate) fn end_transaction(&self) {
        self.open.lock().expect("cursors lock").retain(|_, c| c.hold);
    }
}

#[cfg(test)]
// Slices of one range are what these APIs take (row ranges, byte ranges).
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::memory::MemoryStream;

    fn numbers(batches: &[std::ops::Range<i64>]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches = batches
            .iter()
            .map(|r| {
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(r.clone()))]).unwrap()
            })
            .collect();
        Box::pin(MemoryStream::try_new(batches, schema, None).unwrap())
    }

    async fn take(c: &Cursor, n: Option<u64>) -> Vec<i64> {
        let batches: Vec<RecordBatch> = c.fetch(n).map(|b| b.unwrap()).collect().await;
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
                (0..a.len()).map(move |i| a.value(i))
            })
            .collect()
    }

    #[tokio::test]
    async fn fetches_continue_where_the_last_one_stopped() {
        let cursors = Cursors::default();
        cursors.declare("c", numbers(&[0..5, 5..8, 8..10]), false).unwrap();
        let c = cursors.get("c").unwrap();
        assert_eq!(take(&c, Some(3)).await, vec![0, 1, 2]);
        assert_eq!(take(&c, Some(4)).await, vec![3, 4, 5, 6]);
        assert_eq!(take(&c, Some(0)).await, Vec::<i64>::new());
        assert_eq!(take(&c, None).await, vec![7, 8, 9]);
        assert_eq!(take(&c, Some(5)).await, Vec::<i64>::new());
    }

    #[tokio::test]
    async fn names_are_unique_and_transactions_close_cursors_without_hold() {
        let cursors = Cursors::default();
        cursors.declare("a", numbers(&[0..1]), false).unwrap();
        cursors.declare("h", numbers(&[0..1]), true).unwrap();
        assert_eq!(cursors.declare("a", numbers(&[0..1]), false).unwrap_err().code, StatusCode::DuplicateCursor);
        cursors.end_transaction();
        assert_eq!(cursors.get("a").err().unwrap().code, StatusCode::CursorNotFound);
        assert!(cursors.get("h").is_ok());
        cursors.close(Some("h")).unwrap();
        assert_eq!(cursors.close(Some("h")).unwrap_err().code, StatusCode::CursorNotFound);
    }

    #[test]
    fn copy_options_follow_postgres_defaults() {
        let text = CopyOptions::parse(&[], &[]).unwrap();
        assert_eq!((text.format, text.delimiter.as_str(), text.null.as_str()), (CopyFormat::Text, "\t", "\\N"));
        let csv = CopyOptions::parse(&[], &[CopyLegacyOption::Csv(vec![CopyLegacyCsvOption::Header])]).unwrap();
        assert_eq!(
            (csv.format, csv.delimiter.as_str(), csv.null.as_str(), csv.header),
            (CopyFormat::Csv, ",", "", true)
        );
        assert!(CopyOptions::parse(&[CopyOption::Header(true)], &[]).is_err());
    }
}

//! `COPY t [(cols)] FROM STDIN` in PostgreSQL's text and CSV formats: the frontend feeds the
//! client's data ([`CopyIn::write`]) as it arrives; complete records are parsed in chunks into
//! typed batches and streamed into the table's writer; [`CopyIn::finish`] commits them in one
//! snapshot (or stages them in the session's transaction). A malformed record (a value that
//! is not of its column's type, too many or too few fields) fails the whole COPY with 22P02,
//! naming the line and column, and nothing is committed.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::table::Table;
use rxgate_catalog::{Removal, TableChange, TableWriter};
use rxgate_common::{Error, Result, StatusCode};

use super::write::{to_table_batch, WriteCheck, Writes};
use crate::audit::{AuditLog, AuditRecord};
use crate::cursor::{CopyFormat, CopyOptions};
use crate::planned::QueryOutput;

/// Records parsed and written per batch.
const CHUNK_ROWS: usize = 64 * 1024;

/// A COPY FROM STDIN in progress.
pub struct CopyIn {
    options: CopyOptions,
    /// For each table column, the input field it comes from (`None`: NULL).
    sources: Vec<Option<usize>>,
    fields: usize,
    arrow: SchemaRef,
    table: Table,
    qualified: String,
    writes: Writes,
    writer: Option<TableWriter>,
    check: Option<WriteCheck>,
    user: String,
    /// Bytes received and not yet parsed (an incomplete record at the end).
    buffer: Vec<u8>,
    /// Parsed records not yet written.
    pending: Vec<Vec<Option<String>>>,
    /// The input line of `pending`'s first record (1-based).
    first_line: u64,
    /// Lines consumed so far.
    lines: u64,
    header_pending: bool,
    ended: bool,
    rows: u64,
    pub(crate) audit: Option<(AuditRecord, Arc<AuditLog>, Instant)>,
}

impl CopyIn {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        options: CopyOptions,
        sources: Vec<Option<usize>>,
        fields: usize,
        table: Table,
        qualified: String,
        writes: Writes,
        check: Option<WriteCheck>,
        user: &str,
    ) -> Result<Self> {
        if options.format == CopyFormat::Binary {
            return Err(Error::new(StatusCode::Unsupported, "COPY FROM STDIN in binary format is not supported yet"));
        }
        if options.delimiter.len() != 1 || options.quote.len() != 1 || options.escape.len() != 1 {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                "COPY delimiter, quote and escape must be single one-byte characters",
            ));
        }
        let arrow = rxgate_catalog::table_arrow_schema(&table)?;
        let writer = TableWriter::new(&table)?;
        Ok(Self {
            header_pending: options.header,
            options,
            sources,
            fields,
            arrow,
            table,
            qualified,
            writes,
            writer: Some(writer),
            check,
            user: user.to_string(),
            buffer: vec![],
            pending: vec![],
            first_line: 1,
            lines: 0,
            ended: false,
            rows: 0,
            audit: None,
        })
    }

    /// How many fields each record has (the CopyInResponse's column count).
    pub fn columns(&self) -> usize {
        self.fields
    }

    /// Takes the next piece of the client's data.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.buffer.extend_from_slice(data);
        let csv = self.options.format == CopyFormat::Csv;
        let quote = self.options.quote.as_bytes()[0];
        let mut start = 0;
        let mut in_quotes = false;
        let mut i = 0;
        while i < self.buffer.len() {
            let b = self.buffer[i];
            if csv && b == quote {
                in_quotes = !in_quotes;
            } else if b == b'\n' && !in_quotes {
                let record = String::from_utf8(self.buffer[start..i].to_vec()).map_err(|_| {
                    self.malformed(self.lines + 1, "invalid byte sequence for encoding \"UTF8\"".into())
                })?;
                self.lines += record.matches('\n').count() as u64 + 1;
                start = i + 1;
                if !self.record(record.strip_suffix('\r').unwrap_or(&record))? {
                    self.ended = true;
                    break;
                }
                if self.pending.len() >= CHUNK_ROWS {
                    self.flush().await?;
                }
            }
            i += 1;
        }
        self.buffer.drain(..start);
        Ok(())
    }

    /// Parses one record into `pending`; `false` at the end-of-data marker `\.`.
    fn record(&mut self, line: &str) -> Result<bool> {
        if line == "\\." {
            return Ok(false);
        }
        if self.header_pending {
            self.header_pending = false;
            self.first_line = self.lines + 1;
            return Ok(true);
        }
        let delimiter = self.options.delimiter.as_bytes()[0] as char;
        let fields = match self.options.format {
            CopyFormat::Csv => csv_fields(
                line,
                delimiter,
                self.options.quote.as_bytes()[0] as char,
                self.options.escape.as_bytes()[0] as char,
                &self.options.null,
            ),
            _ => text_fields(line, delimiter, &self.options.null),
        }
        .map_err(|m| self.malformed(self.lines, m))?;
        if fields.len() != self.fields {
            let m = if fields.len() > self.fields {
                "extra data after last expected column".to_string()
            } else {
                format!("missing data for column {}", fields.len() + 1)
            };
            return Err(self.malformed(self.lines, m));
        }
        if self.pending.is_empty() {
            self.first_line = self.lines;
        }
        self.pending.push(fields);
        Ok(true)
    }

    fn malformed(&self, line: u64, message: String) -> Error {
        Error::new(StatusCode::InvalidTextRepresentation, format!("{message} (COPY {}, line {line})", self.qualified))
    }

    /// Types the pending records and writes them.
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let n = records.len();
        let mut inputs: Vec<ArrayRef> = Vec::with_capacity(self.fields);
        for f in 0..self.fields {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            for r in &records {
                b.append_option(r[f].as_deref());
            }
            inputs.push(Arc::new(b.finish()));
        }
        let safe = CastOptions { safe: true, ..Default::default() };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.arrow.fields().len());
        for (field, source) in self.arrow.fields().iter().zip(&self.sources) {
            let Some(i) = source else {
                columns.push(datafusion::arrow::array::new_null_array(field.data_type(), n));
                continue;
            };
            let input = &inputs[*i];
            let typed = cast_with_options(input, field.data_type(), &safe)
                .map_err(|e| Error::new(StatusCode::InvalidTextRepresentation, e.to_string()))?;
            if typed.null_count() != input.null_count() {
                let row = (0..n).find(|&r| typed.is_null(r) && !input.is_null(r)).unwrap_or(0);
                let value = records[row][*i].clone().unwrap_or_default();
                return Err(self.malformed(
                    self.first_line + row as u64,
                    format!(
                        "invalid input syntax for type {} of column {}: \"{value}\"",
                        field.data_type(),
                        field.name()
                    ),
                ));
            }
            columns.push(typed);
        }
        let batch = RecordBatch::try_new_with_options(
            self.arrow.clone(),
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| Error::new(StatusCode::NotNullViolation, e.to_string()))?;
        let batch = to_table_batch(&batch, &self.arrow)?;
        if let Some(check) = &self.check {
            check.check(&batch)?;
        }
        self.rows += n as u64;
        self.writer.as_mut().expect("writer").write(batch).await
    }

    /// The client finished: writes what is left and commits (or stages) the rows.
    pub async fn finish(mut self) -> Result<QueryOutput> {
        let result = self.finish_inner().await;
        if let Some((mut record, log, started)) = self.audit.take() {
            match &result {
                Ok(QueryOutput::Written { rows, snapshot_id, .. }) => {
                    record.written_table = Some(self.qualified.clone());
                    record.snapshot_id = *snapshot_id;
                    record.finish(*rows, started, None);
                }
                Err(e) => record.finish(0, started, Some(e)),
                Ok(_) => record.finish(0, started, None),
            }
            log.append(&record);
        }
        result
    }

    async fn finish_inner(&mut self) -> Result<QueryOutput> {
        if !self.buffer.is_empty() && !self.ended {
            let rest = String::from_utf8(std::mem::take(&mut self.buffer))
                .map_err(|_| self.malformed(self.lines + 1, "invalid byte sequence for encoding \"UTF8\"".into()))?;
            self.lines += 1;
            self.record(rest.strip_suffix('\r').unwrap_or(&rest))?;
        }
        self.flush().await?;
        let files = self.writer.take().expect("writer").close().await?;
        let mut change = TableChange { add: files, remove: Removal::Nothing, properties: Default::default() };
        change.properties.insert("rxgate.operation".into(), "copy".into());
        change.properties.insert("rxgate.user".into(), self.user.clone());
        let outcome = self.writes.commit(&self.table, change).await?;
        Ok(QueryOutput::Written {
            tag: format!("COPY {}", self.rows),
            table: self.qualified.clone(),
            rows: self.rows,
            snapshot_id: outcome.snapshot_id,
        })
    }

    /// The client gave up (CopyFail) or went away: nothing is committed.
    pub fn abort(mut self, reason: &str) {
        if let Some((mut record, log, started)) = self.audit.take() {
            let e = Error::new(StatusCode::Cancelled, format!("COPY aborted: {reason}"));
            record.finish(0, started, Some(&e));
            log.append(&record);
        }
    }
}

/// PostgreSQL's text format: fields split at the delimiter, `null` (default `\N`) for NULL,
/// backslash escapes (`\t`, `\n`, `\r`, `\\`, `\b`, `\f`, `\v`, octal `\NNN`, hex `\xHH`).
pub(crate) fn text_fields(line: &str, delimiter: char, null: &str) -> std::result::Result<Vec<Option<String>>, String> {
    let mut out = vec![];
    for raw in line.split(delimiter) {
        if raw == null {
            out.push(None);
            continue;
        }
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            match chars.next() {
                Some('t') => value.push('\t'),
                Some('n') => value.push('\n'),
                Some('r') => value.push('\r'),
                Some('b') => value.push('\u{8}'),
                Some('f') => value.push('\u{c}'),
                Some('v') => value.push('\u{b}'),
                Some('x') => {
                    let mut code = 0u32;
                    let mut digits = 0;
                    while digits < 2 && chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                        code = code * 16 + chars.next().and_then(|d| d.to_digit(16)).unwrap_or(0);
                        digits += 1;
                    }
                    value.push(char::from_u32(code).ok_or("invalid escape")?);
                }
                Some(d @ '0'..='7') => {
                    let mut code = d.to_digit(8).unwrap_or(0);
                    let mut digits = 1;
                    while digits < 3 && chars.peek().is_some_and(|d| ('0'..='7').contains(d)) {
                        code = code * 8 + chars.next().and_then(|d| d.to_digit(8)).unwrap_or(0);
                        digits += 1;
                    }
                    value.push(char::from_u32(code).ok_or("invalid escape")?);
                }
                Some(other) => value.push(other),
                None => return Err("unexpected end of line after a backslash".into()),
            }
        }
        out.push(Some(value));
    }
    Ok(out)
}

/// CSV: fields split at the delimiter outside quotes; a quoted field may hold delimiters,
/// newlines and escaped quotes; an unquoted field equal to `null` (default empty) is NULL, a
/// quoted one never is.
pub(crate) fn csv_fields(
    record: &str,
    delimiter: char,
    quote: char,
    escape: char,
    null: &str,
) -> std::result::Result<Vec<Option<String>>, String> {
    let mut out = vec![];
    let mut value = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let finish = |value: &mut String, quoted: &mut bool, out: &mut Vec<Option<String>>| {
        let v = std::mem::take(value);
        out.push(if !*quoted && v == null { None } else { Some(v) });
        *quoted = false;
    };
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            // An escaped quote (doubled, when the escape is the quote itself) is one quote.
            if c == escape && chars.peek() == Some(&quote) {
                value.push(quote);
                chars.next();
            } else if c == quote {
                in_quotes = false;
            } else {
                value.push(c);
            }
        } else if c == quote {
            in_quotes = true;
            quoted = true;
        } else if c == delimiter {
            finish(&mut value, &mut quoted, &mut out);
        } else {
            value.push(c);
        }
    }
    if in_quotes {
        return Err("unterminated CSV quoted field".into());
    }
    finish(&mut value, &mut quoted, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_fields() {
        assert_eq!(
            text_fields("1\ta\\tb\t\\N\tx\\\\y\t\\101", '\t', "\\N").unwrap(),
            vec![Some("1".into()), Some("a\tb".into()), None, Some("x\\y".into()), Some("A".into())]
        );
        assert_eq!(text_fields("", '\t', "\\N").unwrap(), vec![Some(String::new())]);
    }

    #[test]
    fn csv_fields_quotes_nulls_and_empties() {
        let f = |s: &str| csv_fields(s, ',', '"', '"', "").unwrap();
        assert_eq!(f("1,\"a,b\",,\"\""), vec![Some("1".into()), Some("a,b".into()), None, Some(String::new())]);
        assert_eq!(f("\"say \"\"hi\"\"\",x"), vec![Some("say \"hi\"".into()), Some("x".into())]);
        assert_eq!(f("a,"), vec![Some("a".into()), None]);
        assert_eq!(f("\"multi\nline\""), vec![Some("multi\nline".into())]);
        assert!(csv_fields("\"open", ',', '"', '"', "").is_err());
        assert_eq!(csv_fields("NA;1", ';', '"', '"', "NA").unwrap(), vec![None, Some("1".into())]);
    }
}

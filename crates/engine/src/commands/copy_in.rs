//! `COPY t [(cols)] FROM STDIN` in PostgreSQL's text, CSV and binary (PGCOPY) formats: the frontend feeds the
//! client's data ([`CopyIn::write`]) as it arrives; complete records are parsed in chunks into
//! typed batches and streamed into the table's writer; [`CopyIn::finish`] commits them in one
//! snapshot (or stages them in the session's transaction). A malformed record (a value that
//! is not of its column's type, too many or too few fields) fails the whole COPY with 22P02,
//! naming the line and column, and nothing is committed.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use iceberg::table::Table;
use rxgate_catalog::{Removal, TableChange, TableWriter};
use rxgate_common::{Error, Result, StatusCode};

use super::write::{table_batch, WriteCheck, Writes};
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
    /// The PGCOPY header was read.
    binary_header: bool,
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
            binary_header: false,
            ended: false,
            rows: 0,
            audit: None,
        })
    }

    /// How many fields each record has (the CopyInResponse's column count).
    pub fn columns(&self) -> usize {
        self.fields
    }

    /// Whether the client sends PGCOPY binary.
    pub fn binary(&self) -> bool {
        self.options.format == CopyFormat::Binary
    }

    /// Takes the next piece of the client's data.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.buffer.extend_from_slice(data);
        if self.binary() {
            return self.binary_records().await;
        }
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

    /// Parses the complete PGCOPY tuples in the buffer (the header first): each field is
    /// decoded by its column's type into text, then typed like the text formats.
    async fn binary_records(&mut self) -> Result<()> {
        const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
        let mut at = 0usize;
        if !self.binary_header {
            if self.buffer.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.buffer[..SIGNATURE.len()] != SIGNATURE {
                return Err(self.malformed(1, "COPY file signature not recognized".into()));
            }
            let ext = u32::from_be_bytes(self.buffer[15..19].try_into().expect("4 bytes")) as usize;
            if self.buffer.len() < 19 + ext {
                return Ok(());
            }
            at = 19 + ext;
            self.binary_header = true;
        }
        let types: Vec<DataType> = (0..self.fields)
            .map(|i| {
                let column = self.sources.iter().position(|s| *s == Some(i)).expect("every field has a column");
                self.arrow.field(column).data_type().clone()
            })
            .collect();
        while let Some(count) = self.buffer.get(at..at + 2) {
            let count = i16::from_be_bytes(count.try_into().expect("2 bytes"));
            if count == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if count as usize != self.fields {
                return Err(
                    self.malformed(self.lines + 1, format!("row field count is {count}, expected {}", self.fields))
                );
            }
            let mut pos = at + 2;
            let mut fields = Vec::with_capacity(self.fields);
            let mut complete = true;
            for t in &types {
                let Some(len) = self.buffer.get(pos..pos + 4) else {
                    complete = false;
                    break;
                };
                let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
                pos += 4;
                if len < 0 {
                    fields.push(None);
                    continue;
                }
                let Some(bytes) = self.buffer.get(pos..pos + len as usize) else {
                    complete = false;
                    break;
                };
                let text = binary_text(t, bytes).map_err(|m| self.malformed(self.lines + 1, m))?;
                fields.push(Some(text));
                pos += len as usize;
            }
            if !complete {
                break;
            }
            self.lines += 1;
            if self.pending.is_empty() {
                self.first_line = self.lines;
            }
            self.pending.push(fields);
            at = pos;
            if self.pending.len() >= CHUNK_ROWS {
                self.buffer.drain(..at);
                at = 0;
                self.flush().await?;
            }
        }
        self.buffer.drain(..at);
        Ok(())
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
        let batch = table_batch(columns, n, &self.arrow)?;
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
        if self.binary() && !self.buffer.is_empty() {
            return Err(self.malformed(self.lines + 1, "unexpected EOF in COPY data".into()));
        }
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

/// A PGCOPY binary field, by its column's type, as the text the typing step reads.
fn binary_text(t: &DataType, b: &[u8]) -> std::result::Result<String, String> {
    let int = |n: usize| -> std::result::Result<i64, String> {
        if b.len() != n {
            return Err(format!("incorrect binary data format: {} bytes for {t}", b.len()));
        }
        Ok(match n {
            2 => i64::from(i16::from_be_bytes(b.try_into().expect("2"))),
            4 => i64::from(i32::from_be_bytes(b.try_into().expect("4"))),
            _ => i64::from_be_bytes(b.try_into().expect("8")),
        })
    };
    const PG_EPOCH_DAYS: i64 = 10_957;
    Ok(match t {
        DataType::Boolean => (b.first().copied().unwrap_or(0) != 0).to_string(),
        DataType::Int16 => int(2)?.to_string(),
        DataType::Int32 => int(4)?.to_string(),
        DataType::Int64 => int(8)?.to_string(),
        DataType::Float32 => f32::from_bits(int(4)? as u32).to_string(),
        DataType::Float64 => f64::from_bits(int(8)? as u64).to_string(),
        DataType::Date32 => {
            let days = int(4)? + PG_EPOCH_DAYS;
            chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32)
                .ok_or("date out of range")?
                .to_string()
        }
        DataType::Timestamp(..) => {
            let micros = int(8)? + PG_EPOCH_DAYS * 86_400_000_000;
            chrono::DateTime::from_timestamp_micros(micros)
                .ok_or("timestamp out of range")?
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string()
        }
        DataType::Decimal128(..) => numeric_text(b)?,
        _ => String::from_utf8(b.to_vec()).map_err(|_| "invalid byte sequence for encoding \"UTF8\"".to_string())?,
    })
}

/// PostgreSQL's binary NUMERIC (base-10000 digits, weight, sign, display scale) as text.
fn numeric_text(b: &[u8]) -> std::result::Result<String, String> {
    let word = |i: usize| -> std::result::Result<i16, String> {
        b.get(i * 2..i * 2 + 2).map(|w| i16::from_be_bytes(w.try_into().expect("2"))).ok_or("bad numeric".to_string())
    };
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)? as i64, word(2)? as u16, word(3)? as usize);
    if sign == 0xC000 {
        return Err("NaN is not a decimal".into());
    }
    let mut int_part = String::new();
    let mut frac_part = String::new();
    for i in 0..ndigits {
        let d = word(4 + i)?;
        let position = weight - i as i64;
        if position >= 0 {
            int_part.push_str(&if int_part.is_empty() { d.to_string() } else { format!("{d:04}") });
        } else {
            frac_part.push_str(&format!("{d:04}"));
        }
    }
    for _ in ndigits as i64..=weight {
        int_part.push_str(if int_part.is_empty() { "0" } else { "0000" });
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let leading_zeros = (-weight - 1).max(0) as usize * 4;
    let mut frac = "0".repeat(leading_zeros) + &frac_part;
    frac.truncate(dscale);
    while frac.len() < dscale {
        frac.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if dscale > 0 { format!("{sign}{int_part}.{frac}") } else { format!("{sign}{int_part}") })
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
    fn binary_numeric_and_dates() {
        let words = |w: &[i16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        // 12345.678: digits 1, 2345, 6780; weight 1; scale 3.
        assert_eq!(numeric_text(&words(&[3, 1, 0, 3, 1, 2345, 6780])).unwrap(), "12345.678");
        // -0.05: digit 500 at weight -1, scale 2.
        assert_eq!(numeric_text(&words(&[1, -1, 0x4000, 2, 500])).unwrap(), "-0.05");
        // 20000: digit 2 at weight 1, scale 0.
        assert_eq!(numeric_text(&words(&[1, 1, 0, 0, 2])).unwrap(), "20000");
        assert_eq!(binary_text(&DataType::Date32, &0i32.to_be_bytes()).unwrap(), "2000-01-01");
        assert_eq!(binary_text(&DataType::Int64, &(-7i64).to_be_bytes()).unwrap(), "-7");
        assert!(binary_text(&DataType::Int32, &[0, 1]).is_err());
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

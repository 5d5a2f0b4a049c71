//! Row encoding for the hot paths: DataRow messages (text and binary) and `COPY … TO STDOUT`
//! (text, CSV, binary). A whole record batch is written into one buffer: DataRows are split
//! off it without a copy or an allocation per row, and COPY rows are packed many to a CopyData
//! message. The common column types (strings, integers, float8, date) are written directly;
//! every other type goes through arrow-pg's value encoder, into the same buffer.

use std::sync::Arc;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::encoder::{encode_value, Encoder};
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, Float64Array, Int16Array, Int32Array, Int64Array, LargeStringArray, StringArray,
    StringViewArray,
};
use datafusion::arrow::array::{AsArray, ListArray};
use datafusion::arrow::datatypes::{DataType, Schema, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};

/// The RowDescription fields of `schema` (arrow-pg's mapping), except that a list of
/// UInt32 is `oid[]`: the engine types catalog OID arrays so (asyncpg's type introspection
/// reads its `attrtypoids` column with its built-in oid[] codec; an int4[] there would make it
/// introspect int4[] with the same query, forever).
pub(crate) fn pg_fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = arrow_schema_to_pg_fields(schema, format, None)?;
    for (i, f) in schema.fields().iter().enumerate() {
        if is_oid_list(f.data_type()) {
            fields[i] = FieldInfo::new(f.name().into(), None, None, Type::OID_ARRAY, format.format_for(i));
        }
    }
    Ok(fields)
}

fn is_oid_list(t: &DataType) -> bool {
    matches!(t, DataType::List(f) if f.data_type() == &DataType::UInt32)
}

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;

/// Where rows go.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// DataRow message bodies, each field in its own format (text or binary).
    DataRow,
    /// COPY text: delimiter-separated, backslash escapes, `null` for NULL.
    CopyText { delimiter: u8, null: Bytes },
    /// COPY CSV, quoted as PostgreSQL quotes.
    CopyCsv { delimiter: u8, quote: u8, escape: u8, null: Bytes },
    /// COPY binary (PGCOPY): the header and trailer are the caller's.
    CopyBinary,
}

/// Encodes rows of batches with one schema into a growing buffer.
pub(crate) struct RowWriter {
    fields: Arc<Vec<FieldInfo>>,
    target: Target,
    out: BytesMut,
    scratch: BytesMut,
    col: usize,
    /// Bytes per row seen so far, to size the buffer of the next batch.
    bytes_per_row: usize,
}

/// One column, downcast once per batch.
enum Column<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    /// A date written as ISO `YYYY-MM-DD` text (the DateStyle is ISO) or binary.
    Date32(&'a Date32Array),
    /// `oid[]` (a list of UInt32).
    OidList(&'a ListArray),
    /// Anything else: arrow-pg's encoder.
    Other(&'a ArrayRef),
}

impl<'a> Column<'a> {
    fn of(array: &'a ArrayRef, field: &FieldInfo) -> Self {
        let ty = field.datatype();
        let text_like = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME);
        let any = array.as_any();
        let fast = match array.data_type() {
            DataType::Utf8 if text_like => any.downcast_ref().map(Column::Utf8),
            DataType::LargeUtf8 if text_like => any.downcast_ref().map(Column::LargeUtf8),
            DataType::Utf8View if text_like => any.downcast_ref().map(Column::Utf8View),
            DataType::Int16 if *ty == Type::INT2 => any.downcast_ref().map(Column::Int16),
            DataType::Int32 if *ty == Type::INT4 => any.downcast_ref().map(Column::Int32),
            DataType::Int64 if *ty == Type::INT8 => any.downcast_ref().map(Column::Int64),
            DataType::Float64 if *ty == Type::FLOAT8 => any.downcast_ref().map(Column::Float64),
            t if is_oid_list(t) && *ty == Type::OID_ARRAY => any.downcast_ref().map(Column::OidList),
            DataType::Date32
                if *ty == Type::DATE
                    && (field.format() == FieldFormat::Binary
                        || field.format_options().date_style.trim_start().to_ascii_uppercase().starts_with("ISO")) =>
            {
                any.downcast_ref().map(Column::Date32)
            }
            _ => None,
        };
        fast.unwrap_or(Column::Other(array))
    }
}

impl RowWriter {
    pub(crate) fn new(fields: Arc<Vec<FieldInfo>>, target: Target) -> Self {
        Self { fields, target, out: BytesMut::new(), scratch: BytesMut::new(), col: 0, bytes_per_row: 64 }
    }

    /// The bytes written and not yet taken.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len()
    }

    /// Takes everything written so far.
    pub(crate) fn take(&mut self) -> BytesMut {
        self.out.split()
    }

    /// Appends raw bytes (COPY headers and trailers).
    pub(crate) fn put_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The rows of `batch` as DataRow messages, all sharing one allocation.
    pub(crate) fn data_rows(&mut self, batch: &RecordBatch) -> PgWireResult<Vec<DataRow>> {
        let rows = batch.num_rows();
        self.reserve(rows);
        let columns = self.columns(batch);
        let count = columns.len() as i16;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            self.write_row(&columns, batch, row)?;
            out.push(DataRow::new(self.out.split(), count));
        }
        self.learn(rows, out.iter().map(|r| r.data.len()).sum());
        Ok(out)
    }

    /// Writes the rows of `batch` in the COPY format, handing each row (with whatever was
    /// written before it, such as the binary header) to `row`: PostgreSQL sends one CopyData
    /// message per row, and clients (psycopg's `Copy.rows()`) parse them so. The rows share
    /// the batch's buffer. Returns how many rows were written.
    pub(crate) fn copy_rows(&mut self, batch: &RecordBatch, row: &mut impl FnMut(Bytes)) -> PgWireResult<u64> {
        let rows = batch.num_rows();
        self.reserve(rows);
        let columns = self.columns(batch);
        let binary = matches!(self.target, Target::CopyBinary);
        let mut written = 0usize;
        for i in 0..rows {
            if binary {
                self.out.put_i16(columns.len() as i16);
            }
            self.write_row(&columns, batch, i)?;
            if !binary {
                self.out.put_u8(b'\n');
            }
            written += self.out.len();
            row(self.out.split().freeze());
        }
        self.learn(rows, written);
        Ok(rows as u64)
    }

    fn reserve(&mut self, rows: usize) {
        self.out.reserve(rows.saturating_mul(self.bytes_per_row) + rows / 8 * self.bytes_per_row / 8);
    }

    fn learn(&mut self, rows: usize, bytes: usize) {
        rxgate_common::metrics::record_bytes_sent("pgwire", bytes as u64);
        if let Some(per_row) = bytes.checked_div(rows) {
            self.bytes_per_row = per_row + 1;
        }
    }

    fn columns<'a>(&self, batch: &'a RecordBatch) -> Vec<Column<'a>> {
        batch.columns().iter().zip(self.fields.iter()).map(|(a, f)| Column::of(a, f)).collect()
    }

    fn write_row(&mut self, columns: &[Column<'_>], batch: &RecordBatch, row: usize) -> PgWireResult<()> {
        let fields = self.fields.clone();
        let schema = batch.schema_ref().clone();
        for (col, column) in columns.iter().enumerate() {
            self.col = col;
            let field = &fields[col];
            let binary = self.binary(field);
            match column {
                Column::Other(array) => encode_value(self, array, row, schema.field(col), field)?,
                Column::Utf8(a) => self.put_str(a.is_null(row), || a.value(row)),
                Column::LargeUtf8(a) => self.put_str(a.is_null(row), || a.value(row)),
                Column::Utf8View(a) => self.put_str(a.is_null(row), || a.value(row)),
                Column::Int16(a) if binary => self.put_value(a.is_null(row), &a.value(row).to_be_bytes()),
                Column::Int32(a) if binary => self.put_value(a.is_null(row), &a.value(row).to_be_bytes()),
                Column::Int64(a) if binary => self.put_value(a.is_null(row), &a.value(row).to_be_bytes()),
                Column::Float64(a) if binary => self.put_value(a.is_null(row), &a.value(row).to_bits().to_be_bytes()),
                Column::Date32(a) if binary => {
                    self.put_value(a.is_null(row), &a.value(row).wrapping_sub(PG_EPOCH_DAYS).to_be_bytes())
                }
                Column::OidList(a) => {
                    if a.is_null(row) {
                        self.put_null();
                    } else {
                        let values = a.value(row);
                        let values = values.as_primitive::<UInt32Type>();
                        let bytes = if binary { oid_array_binary(values) } else { oid_array_text(values) };
                        self.put_value(false, &bytes);
                    }
                }
                Column::Int16(a) => self.put_int(a.is_null(row), i64::from(a.value(row))),
                Column::Int32(a) => self.put_int(a.is_null(row), i64::from(a.value(row))),
                Column::Int64(a) => self.put_int(a.is_null(row), a.value(row)),
                Column::Float64(a) => {
                    let v = a.value(row);
                    if a.is_null(row) {
                        self.put_null();
                    } else if field.format_options().extra_float_digits >= 1 && v.is_finite() && v != 0.0 {
                        // What pgwire's float8 text is at extra_float_digits ≥ 1 (shortest
                        // round-trip digits), without its intermediate string.
                        let mut digits = ryu::Buffer::new();
                        self.put_value(false, digits.format_finite(v).as_bytes());
                    } else {
                        self.put_formatted(|buf, opts| a.value(row).to_sql_text(&Type::FLOAT8, buf, opts))?;
                    }
                }
                Column::Date32(a) => {
                    if a.is_null(row) {
                        self.put_null();
                    } else {
                        match iso_date(a.value(row)) {
                            Some(text) => self.put_value(false, &text),
                            None => encode_value(self, &batch.columns()[col], row, schema.field(col), field)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn binary(&self, field: &FieldInfo) -> bool {
        match self.target {
            Target::DataRow => field.format() == FieldFormat::Binary,
            Target::CopyBinary => true,
            _ => false,
        }
    }

    fn put_str<'s>(&mut self, null: bool, value: impl FnOnce() -> &'s str) {
        if null {
            self.put_null();
        } else {
            self.put_value(false, value().as_bytes());
        }
    }

    fn put_int(&mut self, null: bool, value: i64) {
        if null {
            self.put_null();
        } else {
            let mut buf = itoa::Buffer::new();
            self.put_value(false, buf.format(value).as_bytes());
        }
    }

    /// A field separator in front of every field but the first (COPY text and CSV).
    fn separator(&mut self) {
        if self.col > 0 {
            match self.target {
                Target::CopyText { delimiter, .. } | Target::CopyCsv { delimiter, .. } => self.out.put_u8(delimiter),
                _ => {}
            }
        }
    }

    fn put_null(&mut self) {
        self.separator();
        match &self.target {
            Target::DataRow | Target::CopyBinary => self.out.put_i32(-1),
            Target::CopyText { null, .. } | Target::CopyCsv { null, .. } => {
                let null = null.clone();
                self.out.extend_from_slice(&null);
            }
        }
    }

    /// A non-NULL value's bytes (text or binary as the target wants; `null` short-cuts).
    fn put_value(&mut self, null: bool, value: &[u8]) {
        if null {
            return self.put_null();
        }
        self.separator();
        match self.target {
            Target::DataRow | Target::CopyBinary => {
                self.out.put_i32(value.len() as i32);
                self.out.extend_from_slice(value);
            }
            Target::CopyText { delimiter, .. } => copy_text_escape(&mut self.out, value, delimiter),
            Target::CopyCsv { delimiter, quote, escape, ref null } => {
                let single = self.fields.len() == 1;
                let needs_quote = value == null.as_ref()
                    || (single && value == b"\\.")
                    || value.iter().any(|&c| c == delimiter || c == quote || c == b'\n' || c == b'\r');
                if needs_quote {
                    self.out.reserve(value.len() + 2);
                    self.out.put_u8(quote);
                    for &c in value {
                        if c == quote || c == escape {
                            self.out.put_u8(escape);
                        }
                        self.out.put_u8(c);
                    }
                    self.out.put_u8(quote);
                } else {
                    self.out.extend_from_slice(value);
                }
            }
        }
    }

    /// A value formatted as text by `write` (into the output directly for DataRow, through the
    /// scratch buffer for COPY, which escapes).
    fn put_formatted(
        &mut self,
        write: impl FnOnce(&mut BytesMut, &FormatOptions) -> Result<IsNull, Box<dyn std::error::Error + Send + Sync>>,
    ) -> PgWireResult<()> {
        let fields = self.fields.clone();
        let opts = fields[self.col].format_options();
        if matches!(self.target, Target::DataRow) {
            let at = self.out.len();
            self.out.put_i32(-1);
            if let IsNull::No = write(&mut self.out, opts)? {
                let len = (self.out.len() - at - 4) as i32;
                self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = write(&mut scratch, opts);
        let outcome = match result {
            Ok(IsNull::No) => {
                self.put_value(false, &scratch);
                Ok(())
            }
            Ok(IsNull::Yes) => {
                self.put_null();
                Ok(())
            }
            Err(e) => Err(e.into()),
        };
        self.scratch = scratch;
        outcome
    }
}

impl Encoder for RowWriter {
    type Item = ();

    fn encode_field<T>(&mut self, value: &T, pg_field: &FieldInfo) -> PgWireResult<()>
    where
        T: ToSql + ToSqlText + Sized,
    {
        let ty = pg_field.datatype();
        if self.binary(pg_field) {
            self.separator();
            let at = self.out.len();
            self.out.put_i32(-1);
            if let IsNull::No = value.to_sql(ty, &mut self.out)? {
                let len = (self.out.len() - at - 4) as i32;
                self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        } else {
            self.put_formatted(|buf, opts| value.to_sql_text(ty, buf, opts))
        }
    }

    fn take_row(&mut self) -> Self::Item {}
}

/// An `oid[]` in binary: one dimension (none when empty), then each element.
fn oid_array_binary(values: &datafusion::arrow::array::UInt32Array) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + values.len() * 8);
    let dims = i32::from(!values.is_empty());
    out.extend_from_slice(&dims.to_be_bytes());
    out.extend_from_slice(&i32::from(values.null_count() > 0).to_be_bytes());
    out.extend_from_slice(&(Type::OID.oid() as i32).to_be_bytes());
    if dims == 1 {
        out.extend_from_slice(&(values.len() as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    for v in values.iter() {
        match v {
            Some(v) => {
                out.extend_from_slice(&4i32.to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out
}

/// An `oid[]` in text: `{1,2,NULL}`.
fn oid_array_text(values: &datafusion::arrow::array::UInt32Array) -> Vec<u8> {
    let items: Vec<String> = values.iter().map(|v| v.map_or_else(|| "NULL".to_string(), |v| v.to_string())).collect();
    format!("{{{}}}", items.join(",")).into_bytes()
}

/// PostgreSQL's COPY text escaping: backslash, the delimiter and control characters.
fn copy_text_escape(out: &mut BytesMut, value: &[u8], delimiter: u8) {
    if !value.iter().any(|&c| c < 0x20 || c == b'\\' || c == delimiter) {
        out.extend_from_slice(value);
        return;
    }
    for &c in value {
        let escaped = match c {
            b'\\' => Some(b'\\'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            _ if c == delimiter => Some(c),
            _ => None,
        };
        match escaped {
            Some(e) => {
                out.put_u8(b'\\');
                out.put_u8(e);
            }
            None => out.put_u8(c),
        }
    }
}

/// `YYYY-MM-DD` for days since 1970-01-01, for years 1 to 9999 (others take the general path).
fn iso_date(days: i32) -> Option<[u8; 10]> {
    use chrono::Datelike;
    let date = chrono::NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?)?;
    let (y, m, d) = (date.year(), date.month(), date.day());
    if !(1..=9999).contains(&y) {
        return None;
    }
    let y = y as u32;
    let digit = |v: u32| b'0' + v as u8;
    Some([
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        b'-',
        digit(m / 10),
        digit(m % 10),
        b'-',
        digit(d / 10),
        digit(d % 10),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use datafusion::arrow::array::{BooleanArray, Decimal128Array};
    use datafusion::arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Utf8View, true),
            Field::new("i", DataType::Int32, true),
            Field::new("b", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Boolean, true),
            Field::new("n", DataType::Decimal128(10, 2), true),
            Field::new("h", DataType::Int16, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a\tb\\c\n\"q\",x"), None, Some(""), Some("plain")])),
            Arc::new(StringViewArray::from(vec![
                Some("view"),
                Some("x"),
                None,
                Some("a much longer string view value"),
            ])),
            Arc::new(Int32Array::from(vec![Some(-5), None, Some(i32::MAX), Some(0)])),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(42), None, Some(7)])),
            Arc::new(Float64Array::from(vec![Some(6641.06), Some(f64::NAN), Some(1e20), None])),
            Arc::new(Date32Array::from(vec![Some(19_753), Some(-719_162), Some(0), None])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1), Some(0)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(Int16Array::from(vec![Some(-3), Some(3), None, Some(i16::MIN)])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// The fast paths give the same bytes as arrow-pg's encoder, text and binary.
    #[test]
    fn data_rows_match_arrow_pg() {
        let batch = batch();
        for format in [Format::UnifiedText, Format::UnifiedBinary] {
            let fields = Arc::new(arrow_schema_to_pg_fields(batch.schema().as_ref(), &format, None).unwrap());
            let want: Vec<_> = encode_recordbatch(fields.clone(), batch.clone()).map(|r| r.unwrap()).collect();
            let mut writer = RowWriter::new(fields, Target::DataRow);
            for _ in 0..2 {
                let got = writer.data_rows(&batch).unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.field_count, w.field_count);
                    assert_eq!(g.data, w.data, "{format:?}");
                }
            }
        }
    }

    fn copy(target: Target, binary: bool) -> Vec<u8> {
        let batch = batch();
        let format = if binary { Format::UnifiedBinary } else { Format::UnifiedText };
        let fields = Arc::new(arrow_schema_to_pg_fields(batch.schema().as_ref(), &format, None).unwrap());
        let mut writer = RowWriter::new(fields, target);
        let mut chunks = vec![];
        let rows = writer.copy_rows(&batch, &mut |c| chunks.push(c)).unwrap();
        assert_eq!(rows, 4);
        assert_eq!(chunks.len(), 4);
        chunks.concat()
    }

    #[test]
    fn oid_lists_are_oid_arrays() {
        use datafusion::arrow::array::ListBuilder;
        use datafusion::arrow::array::UInt32Builder;
        let mut b = ListBuilder::new(UInt32Builder::new());
        b.append_value([Some(23), None, Some(4_000_000_000)]);
        b.append_value([]);
        b.append_null();
        let list = b.finish();
        let schema = Arc::new(Schema::new(vec![Field::new("o", list.data_type().clone(), true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list)]).unwrap();
        let text = Arc::new(pg_fields(&schema, &Format::UnifiedText).unwrap());
        assert_eq!(text[0].datatype(), &Type::OID_ARRAY);
        let rows = RowWriter::new(text, Target::DataRow).data_rows(&batch).unwrap();
        assert_eq!(&rows[0].data[4..], b"{23,NULL,4000000000}");
        assert_eq!(&rows[1].data[4..], b"{}");
        assert_eq!(&rows[2].data[..], &(-1i32).to_be_bytes());
        let binary = Arc::new(pg_fields(&schema, &Format::UnifiedBinary).unwrap());
        let rows = RowWriter::new(binary, Target::DataRow).data_rows(&batch).unwrap();
        let mut want = vec![];
        for v in [1i32, 1, 26, 3, 1, 4, 23, -1, 4] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.extend_from_slice(&4_000_000_000u32.to_be_bytes());
        assert_eq!(&rows[0].data[4..], &want[..]);
        assert_eq!(&rows[1].data[4..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26]);
    }

    #[test]
    fn copy_text_escapes_as_postgresql() {
        let text =
            String::from_utf8(copy(Target::CopyText { delimiter: b'\t', null: Bytes::from_static(b"\\N") }, false))
                .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "a\\tb\\\\c\\n\"q\",x\tview\t-5\t-9223372036854775808\t6641.06\t2024-01-31\tt\t123.45\t-3"
        );
        assert_eq!(lines[1], "\\N\tx\t\\N\t42\tNaN\t0001-01-01\tf\t\\N\t3");
        assert_eq!(lines[2], "\t\\N\t2147483647\t\\N\t1e20\t1970-01-01\t\\N\t-0.01\t\\N");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn copy_csv_quotes_as_postgresql() {
        let csv = String::from_utf8(copy(
            Target::CopyCsv { delimiter: b',', quote: b'"', escape: b'"', null: Bytes::new() },
            false,
        ))
        .unwrap();
        assert!(csv.starts_with("\"a\tb\\c\n\"\"q\"\",x\",view,-5,"), "{csv}");
        // The empty string is quoted, NULL is empty.
        assert!(csv.contains("\n\"\",,2147483647,,1e20,1970-01-01,,-0.01,\n"), "{csv}");
    }

    #[test]
    fn copy_binary_rows_are_field_count_then_fields() {
        let bytes = copy(Target::CopyBinary, true);
        assert_eq!(&bytes[0..2], &9i16.to_be_bytes());
        assert_eq!(&bytes[2..6], &(("a\tb\\c\n\"q\",x".len()) as i32).to_be_bytes());
    }
}

//! What DoGet sends: the schema message, then one IPC record batch message per batch (split so
//! that no message body passes [`MAX_BODY`]).
//!
//! For flat results of primitive, boolean and string/binary columns (what queries over the
//! lake return) the messages are written here, in one pass per column straight into a body
//! sized exactly in advance:
//! - string and binary views (what the engine reads) become plain `Utf8`/`Binary` while they
//!   are written, with no intermediate array (see [`crate::wire`] for why clients get plain
//!   strings);
//! - other buffers are copied once, sliced to the rows sent.
//!
//! arrow-ipc's own encoder cast every view column into a new array, then copied that into a
//! body vector grown by doubling: about a third of the server's CPU in a bulk export.
//! Other results (dictionaries, nested types) go through arrow-flight's encoder.
//!
//! A record batch message is an [`Outgoing::Batch`]: its header is built ahead (every
//! buffer's length is known from the arrays), its body is written only when the message is,
//! by [`BatchMessage::write_body`]. DoGet ([`crate::doget`]) writes it straight into tonic's
//! send buffer; [`Outgoing::into_flight_data`] makes a `FlightData` of it for other callers.

use std::pin::Pin;

use arrow::array::{Array, ArrayData, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{ArrowNativeType, DataType, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::ipc::{self, MessageHeader, MetadataVersion};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::{BufMut, Bytes};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tonic::Status;

use crate::status::internal;
use crate::wire::{wire_batch, wire_schema, wire_type};

/// Largest message body sent in one FlightData (as arrow-flight's default): gRPC clients
/// refuse messages over 4 MiB unless told otherwise.
pub(crate) const MAX_BODY: usize = 2 << 20;

/// Body buffers start at multiples of this (the IPC minimum).
const ALIGN: usize = 8;

/// Bytes the string writer may write past its end (its fixed-size copies of short values).
const SLACK: usize = 32;

/// One DoGet message.
pub(crate) enum Outgoing {
    /// A message already encoded (the schema, arrow-flight's encoder).
    Data(FlightData),
    /// A record batch message whose body is written when it is sent.
    Batch(BatchMessage),
}

impl Outgoing {
    /// The message as a `FlightData` (its body written into a vector of its own).
    pub(crate) fn into_flight_data(self) -> FlightData {
        match self {
            Outgoing::Data(data) => data,
            Outgoing::Batch(message) => {
                let mut body = Vec::with_capacity(message.body_len());
                message.write_body(&mut body, &mut Vec::new());
                FlightData { data_header: message.header.into(), data_body: Bytes::from(body), ..Default::default() }
            }
        }
    }
}

/// The messages of a DoGet: the schema of `schema` as clients see it (see [`wire_schema`]),
/// then `batches`, encoded only as the client reads (backpressure is the caller's stream's).
pub(crate) fn messages<S>(schema: SchemaRef, batches: S) -> BoxStream<'static, Result<Outgoing, Status>>
where
    S: Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
{
    let wire = wire_schema(&schema);
    if !wire.fields().iter().all(|f| written_here(f.data_type())) {
        let out = wire.clone();
        let batches = batches.map(move |b| {
            b.and_then(|b| wire_batch(b, &out).map_err(internal)).map_err(|s| FlightError::Tonic(Box::new(s)))
        });
        let encoded = FlightDataEncoderBuilder::new().with_schema(wire).build(batches);
        return counted(Box::pin(encoded.map(|item| match item {
            Ok(data) => Ok(Outgoing::Data(data)),
            Err(FlightError::Tonic(s)) => Err(*s),
            Err(other) => Err(internal(other)),
        })));
    }
    let head = Outgoing::Data(FlightData::from(SchemaAsIpc::new(&wire, &IpcWriteOptions::default())));
    let messages = batches.flat_map(move |b| -> Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send>> {
        match b.and_then(|b| encode_batch(&as_announced(b, &wire)?).map_err(internal)) {
            Ok(messages) => Box::pin(stream::iter(messages.into_iter().map(|m| Ok(Outgoing::Batch(m))))),
            Err(e) => Box::pin(stream::once(async { Err(e) })),
        }
    });
    counted(Box::pin(stream::once(async { Ok(head) }).chain(messages)))
}

/// `messages` with their header and body bytes counted as sent (`rxgate_sent_bytes_total`).
fn counted(messages: BoxStream<'static, Result<Outgoing, Status>>) -> BoxStream<'static, Result<Outgoing, Status>> {
    Box::pin(messages.inspect(|m| {
        let n = match m {
            Ok(Outgoing::Data(d)) => d.data_header.len() + d.data_body.len(),
            Ok(Outgoing::Batch(b)) => b.header().len() + b.body_len(),
            Err(_) => 0,
        };
        rxgate_common::metrics::record_bytes_sent("flightsql", n as u64);
    }))
}

/// `batch` with the column types the schema message announced: views are written as plain
/// strings by [`Body`]; any other difference (not expected from a plan) is cast.
fn as_announced(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, Status> {
    let announced = batch.columns().iter().zip(wire.fields()).all(|(c, f)| {
        let t = c.data_type();
        t == f.data_type() || wire_type(t).as_ref() == Some(f.data_type())
    });
    if announced && batch.num_columns() == wire.fields().len() {
        Ok(batch)
    } else {
        wire_batch(batch, wire).map_err(internal)
    }
}

/// Whether columns of type `t` (as announced to the client) are written by this module.
fn written_here(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Boolean | DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary
        )
}

/// `batch` as record batch messages whose bodies stay under [`MAX_BODY`] (one unless the
/// batch is larger).
fn encode_batch(batch: &RecordBatch) -> Result<Vec<BatchMessage>, String> {
    let columns = Column::all(batch)?;
    let rows = batch.num_rows();
    let parts = body_size(&columns).div_ceil(MAX_BODY).clamp(1, rows.max(1));
    if parts == 1 {
        return Ok(vec![BatchMessage::new(rows, columns)]);
    }
    // Equal row ranges (bitmaps at any bit offset are sliced by `Buffer::bit_slice`).
    let step = rows.div_ceil(parts);
    (0..rows)
        .step_by(step)
        .map(|start| {
            let part = batch.slice(start, step.min(rows - start));
            Ok(BatchMessage::new(part.num_rows(), Column::all(&part)?))
        })
        .collect()
}

/// One record batch message: its flatbuffer header, and the columns its body is written from.
pub(crate) struct BatchMessage {
    header: Vec<u8>,
    columns: Vec<Column>,
    body_len: usize,
}

impl BatchMessage {
    /// The message of `rows` rows holding `columns`; the header lays out every buffer of the
    /// body (each padded to [`ALIGN`]) in the order [`Self::write_body`] writes them.
    fn new(rows: usize, columns: Vec<Column>) -> Self {
        let mut nodes = Vec::with_capacity(columns.len());
        let mut buffers = vec![];
        let mut at = 0;
        for column in &columns {
            nodes.push(ipc::FieldNode::new(rows as i64, column.data.null_count() as i64));
            for len in column.buffer_lens() {
                buffers.push(ipc::Buffer::new(at as i64, len as i64));
                at += padded(len);
            }
        }
        Self { header: header(rows, &nodes, &buffers, at), columns, body_len: at }
    }

    /// The flatbuffer `Message` header.
    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    /// Bytes of the body.
    pub(crate) fn body_len(&self) -> usize {
        self.body_len
    }

    /// Appends the body to `out` (exactly [`Self::body_len`] bytes). `scratch` is working
    /// space for the columns computed on the way (view strings); its contents do not matter,
    /// and it is kept across messages so that it is allocated and zeroed once.
    pub(crate) fn write_body(&self, out: &mut impl BufMut, scratch: &mut Vec<u8>) {
        let mut body = Body { out, scratch, written: 0 };
        for column in &self.columns {
            body.column(column);
        }
        debug_assert_eq!(body.written, self.body_len, "body size laid out ahead");
    }
}

/// The flatbuffer `Message` describing a record batch body.
fn header(rows: usize, nodes: &[ipc::FieldNode], buffers: &[ipc::Buffer], body_len: usize) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let nodes = fbb.create_vector(nodes);
    let buffers = fbb.create_vector(buffers);
    let mut rb = ipc::RecordBatchBuilder::new(&mut fbb);
    rb.add_length(rows as i64);
    rb.add_nodes(nodes);
    rb.add_buffers(buffers);
    let rb = rb.finish().as_union_value();
    let mut message = ipc::MessageBuilder::new(&mut fbb);
    message.add_version(MetadataVersion::V5);
    message.add_header_type(MessageHeader::RecordBatch);
    message.add_bodyLength(body_len as i64);
    message.add_header(rb);
    let message = message.finish();
    fbb.finish(message, None);
    fbb.finished_data().to_vec()
}

fn padded(len: usize) -> usize {
    len.next_multiple_of(ALIGN)
}

/// Body bytes of `columns`, padding included.
fn body_size(columns: &[Column]) -> usize {
    columns.iter().flat_map(Column::buffer_lens).map(padded).sum()
}

/// A column as the body carries it: its data, its validity bitmap (none when nothing is
/// null) and the byte length of each buffer written after the bitmap.
struct Column {
    data: ArrayData,
    validity: Option<Buffer>,
    lens: Vec<usize>,
}

impl Column {
    fn all(batch: &RecordBatch) -> Result<Vec<Column>, String> {
        batch.columns().iter().map(|c| Column::new(c.to_data())).collect()
    }

    /// The byte length of each buffer the body carries for this column, in the order they are
    /// written: the validity bitmap (empty when nothing is null), then the data buffers.
    fn buffer_lens(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.validity.as_ref().map_or(0, |v| v.len())).chain(self.lens.iter().copied())
    }

    fn new(data: ArrayData) -> Result<Self, String> {
        let rows = data.len();
        let lens = match data.data_type() {
            DataType::Boolean => vec![rows.div_ceil(8)],
            DataType::Utf8 | DataType::Binary => vec![4 * (rows + 1), offset_span::<i32>(&data)],
            DataType::LargeUtf8 | DataType::LargeBinary => vec![8 * (rows + 1), offset_span::<i64>(&data)],
            DataType::Utf8View | DataType::BinaryView => {
                let values = view_bytes(&data);
                if values > i32::MAX as usize {
                    return Err("a batch's strings exceed 2 GiB".into());
                }
                vec![4 * (rows + 1), values]
            }
            t => match t.primitive_width() {
                Some(w) => vec![w * rows],
                None => return Err(format!("{t} columns are not written by the Flight encoder")),
            },
        };
        let validity = data.nulls().filter(|n| n.null_count() > 0).map(|n| n.inner().sliced());
        Ok(Self { data, validity, lens })
    }
}

/// Bytes of values an offsets-based array's rows span.
fn offset_span<O: ArrowNativeType>(data: &ArrayData) -> usize {
    let offsets = &data.buffer::<O>(0)[..data.len() + 1];
    offsets[data.len()].as_usize() - offsets[0].as_usize()
}

/// The length of view `v`.
fn view_len(v: u128) -> usize {
    v as u32 as usize
}

/// Bytes of values the non-null rows of a view array hold.
fn view_bytes(data: &ArrayData) -> usize {
    let views = &data.buffer::<u128>(0)[..data.len()];
    match data.nulls().filter(|n| n.null_count() > 0) {
        None => views.iter().map(|&v| view_len(v)).sum(),
        Some(nulls) => views.iter().zip(nulls.iter()).map(|(&v, valid)| if valid { view_len(v) } else { 0 }).sum(),
    }
}

/// A record batch body being written into `out`, buffer after buffer, each padded to
/// [`ALIGN`].
struct Body<'a, B: BufMut> {
    out: &'a mut B,
    scratch: &'a mut Vec<u8>,
    written: usize,
}

impl<B: BufMut> Body<'_, B> {
    /// Writes one buffer and its padding.
    fn put(&mut self, bytes: &[u8]) {
        put_padded(self.out, &mut self.written, bytes);
    }

    /// Writes one column: its validity bitmap, then its data buffers.
    fn column(&mut self, column: &Column) {
        let data = &column.data;
        let rows = data.len();
        self.put(column.validity.as_ref().map_or(&[][..], |v| v.as_slice()));
        match data.data_type() {
            DataType::Boolean => self.put(data.buffers()[0].bit_slice(data.offset(), rows).as_slice()),
            DataType::Utf8 | DataType::Binary => self.offsets_and_values::<i32>(data),
            DataType::LargeUtf8 | DataType::LargeBinary => self.offsets_and_values::<i64>(data),
            DataType::Utf8View | DataType::BinaryView => self.views_as_plain(data, column.lens[1]),
            // Fixed width (`Column::new` accepted nothing else): one values buffer.
            _ => {
                let from = data.data_type().primitive_width().unwrap_or_default() * data.offset();
                self.put(&data.buffers()[0].as_slice()[from..from + column.lens[0]]);
            }
        }
    }

    /// An offsets-based array, its offsets rebased to start at zero.
    fn offsets_and_values<O: ArrowNativeType>(&mut self, data: &ArrayData) {
        let (from, rows, width) = (data.offset(), data.len(), O::get_byte_width());
        let offsets = &data.buffer::<O>(0)[..rows + 1];
        let (first, last) = (offsets[0].as_usize(), offsets[rows].as_usize());
        if first == 0 {
            self.put(&data.buffers()[0].as_slice()[from * width..(from + rows + 1) * width]);
        } else {
            let rebased: Vec<O> = offsets.iter().map(|o| O::usize_as(o.as_usize() - first)).collect();
            self.put(Buffer::from_vec(rebased).as_slice());
        }
        self.put(&data.buffers()[1].as_slice()[first..last]);
    }

    /// A view array written as a plain offsets-and-values array (null rows are empty) holding
    /// `total` bytes of values.
    fn views_as_plain(&mut self, data: &ArrayData, total: usize) {
        let views = &data.buffer::<u128>(0)[..data.len()];
        match data.nulls().filter(|n| n.null_count() > 0) {
            None => self.views_with_lens(data, views.iter().map(|&v| view_len(v)), total),
            Some(nulls) => {
                let lens = views.iter().zip(nulls.iter()).map(|(&v, valid)| if valid { view_len(v) } else { 0 });
                self.views_with_lens(data, lens, total)
            }
        }
    }

    /// Offsets, then values, of the views of `data` whose lengths `lens` gives. Both are
    /// computed in one pass over the views, into the scratch space, then copied out whole.
    fn views_with_lens(&mut self, data: &ArrayData, lens: impl Iterator<Item = usize>, total: usize) {
        let views = &data.buffer::<u128>(0)[..data.len()];
        let offsets_len = 4 * (views.len() + 1);
        let need = offsets_len + total + SLACK;
        if self.scratch.len() < need {
            self.scratch.resize(need, 0);
        }
        let (offsets, values) = self.scratch.split_at_mut(offsets_len);
        offsets[..4].fill(0);
        // Values: short ones sit in the view itself (12 bytes after the length), long ones in
        // a data buffer at (buffer index, offset). Both are copied in fixed-size pieces where
        // they can be, which may write up to SLACK bytes past the value; the next value
        // overwrites those, and the copy out stops at `total`.
        let buffers = &data.buffers()[1..];
        let mut at = 0;
        for ((slot, &v), len) in offsets[4..].chunks_exact_mut(4).zip(views).zip(lens) {
            if len <= 12 {
                values[at..at + 12].copy_from_slice(&v.to_le_bytes()[4..16]);
            } else {
                let buffer = buffers[(v >> 64) as u32 as usize].as_slice();
                let offset = (v >> 96) as u32 as usize;
                if len <= SLACK && offset + SLACK <= buffer.len() {
                    values[at..at + SLACK].copy_from_slice(&buffer[offset..offset + SLACK]);
                } else {
                    values[at..at + len].copy_from_slice(&buffer[offset..offset + len]);
                }
            }
            at += len;
            slot.copy_from_slice(&(at as i32).to_le_bytes());
        }
        debug_assert_eq!(at, total, "values sized ahead");
        put_padded(self.out, &mut self.written, &self.scratch[..offsets_len]);
        put_padded(self.out, &mut self.written, &self.scratch[offsets_len..offsets_len + total]);
    }
}

/// Appends `bytes` and their padding to `out`, counting them in `written`.
fn put_padded(out: &mut impl BufMut, written: &mut usize, bytes: &[u8]) {
    out.put_slice(bytes);
    let len = padded(bytes.len());
    out.put_bytes(0, len - bytes.len());
    *written += len;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BinaryViewArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float64Array,
        Int64Array, LargeStringArray, StringArray, StringViewBuilder, TimestampMicrosecondArray,
    };
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Field, Int32Type, Schema};
    use arrow_flight::decode::FlightRecordBatchStream;
    use futures::TryStreamExt;

    use super::*;

    /// The messages as `FlightData`, as arrow-flight's decoder reads them.
    fn flight_data<S>(schema: SchemaRef, batches: S) -> BoxStream<'static, Result<FlightData, Status>>
    where
        S: Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
    {
        Box::pin(messages(schema, batches).map_ok(Outgoing::into_flight_data))
    }

    /// Every column kind the encoder writes, with nulls, empty values, short (inline) and long
    /// views spread over several data buffers, and a plain string array whose offsets do not
    /// start at zero.
    fn batch(rows: usize) -> RecordBatch {
        let mut views = StringViewBuilder::new().with_fixed_block_size(64);
        for i in 0..rows {
            match i % 5 {
                0 => views.append_null(),
                1 => views.append_value(""),
                2 => views.append_value(format!("s{i}")),
                3 => views.append_value(format!("a value longer than twelve bytes #{i}")),
                _ => views.append_value("exactly12byt"),
            }
        }
        let plain = StringArray::from_iter((0..rows + 3).map(|i| (i % 4 != 0).then(|| format!("plain {i}"))));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter((0..rows as i64).map(|i| (i % 3 != 0).then_some(i * 7)))),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 / 4.0))),
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| (i % 7 != 0).then_some(i % 2 == 0)))),
            Arc::new(Date32Array::from_iter_values((0..rows as i32).map(|i| 19_000 + i))),
            Arc::new(
                Decimal128Array::from_iter_values((0..rows as i128).map(|i| i * 1_000_003))
                    .with_precision_and_scale(20, 3)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..rows as i64).map(|i| i << 20)).with_timezone("UTC"),
            ),
            Arc::new(views.finish()),
            Arc::new(BinaryViewArray::from_iter((0..rows).map(|i| (i % 6 != 0).then(|| vec![i as u8; i % 40])))),
            Arc::new(plain.slice(3, rows)),
            Arc::new(LargeStringArray::from_iter_values((0..rows).map(|i| format!("large {i}")))),
        ];
        let fields: Vec<Field> =
            columns.iter().enumerate().map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// Encodes `batches` as DoGet does and decodes them with arrow-flight's reader.
    async fn round_trip(schema: SchemaRef, batches: Vec<RecordBatch>) -> (Vec<RecordBatch>, Vec<FlightData>) {
        let sent: Vec<FlightData> =
            flight_data(schema, stream::iter(batches.into_iter().map(Ok))).try_collect().await.unwrap();
        let decoded = FlightRecordBatchStream::new_from_flight_data(stream::iter(sent.clone().into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        (decoded, sent)
    }

    #[tokio::test]
    async fn batches_decode_to_the_plain_typed_input() {
        let whole = batch(1_000);
        // Slices at offsets that are not whole bytes of the validity bitmaps.
        let parts = vec![whole.slice(0, 13), whole.slice(13, 500), whole.slice(513, 487), whole.slice(1_000, 0)];
        let (decoded, sent) = round_trip(whole.schema(), parts.clone()).await;
        assert_eq!(sent.len(), 1 + parts.len(), "a schema message, then one message per batch");
        let wire = wire_schema(&whole.schema());
        assert_eq!(wire.field(6).data_type(), &DataType::Utf8);
        assert_eq!(wire.field(7).data_type(), &DataType::Binary);
        assert_eq!(decoded.len(), parts.len());
        for (got, part) in decoded.iter().zip(&parts) {
            assert_eq!(got, &wire_batch(part.clone(), &wire).unwrap());
        }
        assert_eq!(decoded[1].column(6).null_count(), 100);
        // Bodies are 8-byte aligned and exactly as long as their buffers say.
        for message in &sent[1..] {
            assert_eq!(message.data_body.len() % ALIGN, 0);
        }
    }

    #[tokio::test]
    async fn a_batch_over_the_message_limit_is_split() {
        let big = batch(60_000);
        assert!(body_size(&Column::all(&big).unwrap()) > 2 * MAX_BODY);
        let (decoded, sent) = round_trip(big.schema(), vec![big.clone()]).await;
        assert!(decoded.len() >= 3, "split into {} messages", decoded.len());
        assert!(sent.iter().all(|m| m.data_body.len() <= MAX_BODY), "every body within the limit");
        let wire = wire_schema(&big.schema());
        assert_eq!(concat_batches(&wire, &decoded).unwrap(), wire_batch(big, &wire).unwrap());
    }

    #[tokio::test]
    async fn batches_are_sent_in_the_announced_types() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let large = Arc::new(Schema::new(vec![Field::new("s", DataType::LargeUtf8, true)]));
        let b = RecordBatch::try_new(large, vec![Arc::new(LargeStringArray::from(vec![Some("x"), None]))]).unwrap();
        let (decoded, _) = round_trip(schema.clone(), vec![b]).await;
        assert_eq!(decoded[0].schema(), schema);
        let s = decoded[0].column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Some("x"), None]);
    }

    #[tokio::test]
    async fn other_types_go_through_arrow_flight() {
        let dict: DictionaryArray<Int32Type> = vec![Some("a"), None, Some("b"), Some("a")].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![Field::new("d", dict.data_type().clone(), true)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(dict)]).unwrap();
        let (decoded, _) = round_trip(schema, vec![b]).await;
        let values = arrow::compute::cast(decoded[0].column(0), &DataType::Utf8).unwrap();
        let values = values.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(values.iter().collect::<Vec<_>>(), vec![Some("a"), None, Some("b"), Some("a")]);
    }

    #[tokio::test]
    async fn an_error_in_the_stream_reaches_the_client() {
        let b = batch(10);
        let items = vec![Ok(b.clone()), Err(Status::cancelled("stopped"))];
        let sent: Vec<Result<FlightData, Status>> = flight_data(b.schema(), stream::iter(items)).collect().await;
        assert_eq!(sent.len(), 3);
        assert!(sent[1].is_ok());
        assert_eq!(sent[2].as_ref().unwrap_err().code(), tonic::Code::Cancelled);
    }
}

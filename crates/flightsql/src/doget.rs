//! DoGet with a codec of its own: record batch messages are written straight into tonic's
//! send buffer.
//!
//! arrow-flight's generated service sends `FlightData` through prost: a batch body is first
//! written into a vector of its own, then copied again into tonic's buffer. Here
//! [`Routed`] answers the DoGet path itself, with tonic's own server-streaming machinery and
//! [`MessageCodec`], whose encoder writes the protobuf framing of a `FlightData` by hand and
//! the body straight from the arrays ([`crate::encode::BatchMessage::write_body`]). Every
//! other path goes to arrow-flight's service unchanged. The messages are the same bytes a
//! `FlightData` would encode to: clients see no difference.

use std::convert::Infallible;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::Ticket;
use bytes::BufMut;
use futures::future::BoxFuture;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use rxgate_common::StatusCode;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Service};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};

use crate::encode::Outgoing;
use crate::gate::Gate;
use crate::service::BoxStream;
use crate::status::{internal, status};

/// The gRPC path of DoGet.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// `FlightData.data_header`'s field number.
const DATA_HEADER: u32 = 2;

/// `FlightData.data_body`'s field number.
const DATA_BODY: u32 = 1000;

/// The Flight service as served: DoGet here, everything else by arrow-flight's service.
#[derive(Clone)]
pub(crate) struct Routed {
    flight: FlightServiceServer<Gate>,
    gate: Gate,
    max_message_bytes: usize,
}

impl Routed {
    /// `gate` served, with gRPC messages up to `max_message_bytes` either way.
    pub(crate) fn new(gate: Gate, max_message_bytes: usize) -> Self {
        let flight = FlightServiceServer::new(gate.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Self { flight, gate, max_message_bytes }
    }
}

impl NamedService for Routed {
    const NAME: &'static str = <FlightServiceServer<Gate> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Routed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != DO_GET {
            return Box::pin(self.flight.call(request));
        }
        let (gate, max) = (self.gate.clone(), self.max_message_bytes);
        Box::pin(async move {
            let mut grpc = Grpc::new(MessageCodec).apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.server_streaming(DoGet(gate), request).await)
        })
    }
}

/// The DoGet call: the gate's messages, unencoded.
struct DoGet(Gate);

impl Service<Request<Ticket>> for DoGet {
    type Response = Response<BoxStream<Outgoing>>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Ticket>) -> Self::Future {
        let gate = self.0.clone();
        Box::pin(async move { gate.do_get_messages(&request).await.map(Response::new) })
    }
}

/// Tickets in, [`Outgoing`] messages out.
struct MessageCodec;

impl Codec for MessageCodec {
    type Encode = Outgoing;
    type Decode = Ticket;
    type Encoder = MessageEncoder;
    type Decoder = TicketDecoder;

    fn encoder(&mut self) -> MessageEncoder {
        MessageEncoder { scratch: Vec::new() }
    }

    fn decoder(&mut self) -> TicketDecoder {
        TicketDecoder
    }
}

/// Writes each message as the protobuf encoding of a `FlightData` (one per response stream).
struct MessageEncoder {
    /// Working space of [`crate::encode::BatchMessage::write_body`], kept for the stream.
    scratch: Vec<u8>,
}

impl Encoder for MessageEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(encoded_len(&item));
        write_message(item, dst, &mut self.scratch)
    }
}

/// Bytes of `message` as a `FlightData`.
fn encoded_len(message: &Outgoing) -> usize {
    match message {
        Outgoing::Data(data) => data.encoded_len(),
        Outgoing::Batch(m) => field_len(DATA_HEADER, m.header().len()) + field_len(DATA_BODY, m.body_len()),
    }
}

/// Appends `message` to `dst` as the protobuf encoding of a `FlightData` (prost's, for a
/// record batch: the header field, then the body field).
fn write_message(message: Outgoing, dst: &mut impl BufMut, scratch: &mut Vec<u8>) -> Result<(), Status> {
    match message {
        Outgoing::Data(data) => data.encode(dst).map_err(|e| internal(format!("encoding a message: {e}"))),
        Outgoing::Batch(message) => {
            let header = message.header();
            encode_key(DATA_HEADER, WireType::LengthDelimited, dst);
            encode_varint(header.len() as u64, dst);
            dst.put_slice(header);
            encode_key(DATA_BODY, WireType::LengthDelimited, dst);
            encode_varint(message.body_len() as u64, dst);
            message.write_body(dst, scratch);
            Ok(())
        }
    }
}

/// Bytes of a length-delimited field `tag` holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Reads the request's `Ticket`.
struct TicketDecoder;

impl Decoder for TicketDecoder {
    type Item = Ticket;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ticket>, Status> {
        Ticket::decode(src).map(Some).map_err(|_| status(StatusCode::InvalidArgument, "malformed DoGet ticket"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::{stream, TryStreamExt};

    use super::*;

    /// Every message, written by hand, is byte for byte what prost writes for its `FlightData`.
    #[tokio::test]
    async fn messages_are_written_as_prost_writes_their_flight_data() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8View, true),
        ]));
        let strings = (0..3000).map(|i| (i % 7 != 0).then(|| format!("value number {i} of the column")));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter((0..3000).map(|i| (i % 5 != 0).then_some(i)))),
                Arc::new(StringViewArray::from_iter(strings)),
            ],
        )
        .unwrap();
        let batches = vec![Ok(batch.clone()), Ok(batch.slice(17, 100))];
        let encode = || crate::encode::messages(schema.clone(), stream::iter(batches.clone())).try_collect::<Vec<_>>();
        let (ours, theirs) = (encode().await.unwrap(), encode().await.unwrap());
        assert_eq!(ours.len(), 3, "the schema, then one message per batch");
        assert!(matches!(ours[1], Outgoing::Batch(_)));
        let mut scratch = vec![];
        for (ours, theirs) in ours.into_iter().zip(theirs) {
            let mut written = Vec::new();
            let len = encoded_len(&ours);
            write_message(ours, &mut written, &mut scratch).unwrap();
            assert_eq!(written.len(), len);
            assert_eq!(written, theirs.into_flight_data().encode_to_vec());
        }
    }
}

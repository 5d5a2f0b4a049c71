//! `COPY (query) TO STDOUT` in text, CSV and binary format (what psql's `\copy … to` sends).
//!
//! Rows are encoded batch by batch as the client reads, into one buffer per batch (see
//! encode.rs), and sent one CopyData message per row as PostgreSQL does (psycopg's
//! `Copy.rows()` parses one row per message); the connection's write buffer packs them into
//! large socket writes. The CSV header is a message of its own, the binary header goes with
//! the first row and the trailer is the last message, as in PostgreSQL. pgwire's CopyOut path
//! would count the header and trailer messages as rows, so this one sends CopyOutResponse,
//! CopyData and CopyDone itself and answers with the `COPY n` tag of the rows it encoded.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::PgWireBackendMessage;
use rxgate_engine::{CopyFormat, CopyOptions};

use crate::encode::{RowWriter, Target};
use crate::errors::df_to_pg;

/// Streams the rows of `stream` to the client in the format of `options`; the response is
/// the `COPY n` tag, or the error that stopped the stream (after the rows sent so far).
pub(crate) async fn send_copy_out<C>(
    client: &mut C,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
    options: &CopyOptions,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let binary = options.format == CopyFormat::Binary;
    let format = if binary { Format::UnifiedBinary } else { Format::UnifiedText };
    let fields = Arc::new(crate::encode::pg_fields(&schema, &format)?);
    let columns = fields.len();
    let byte = |s: &str, default: u8| s.as_bytes().first().copied().unwrap_or(default);
    let target = match options.format {
        CopyFormat::Binary => Target::CopyBinary,
        CopyFormat::Text => {
            Target::CopyText { delimiter: byte(&options.delimiter, b'\t'), null: Bytes::from(options.null.clone()) }
        }
        CopyFormat::Csv => Target::CopyCsv {
            delimiter: byte(&options.delimiter, b','),
            quote: byte(&options.quote, b'"'),
            escape: byte(&options.escape, byte(&options.quote, b'"')),
            null: Bytes::from(options.null.clone()),
        },
    };
    let format_code = i8::from(binary);
    let response = CopyOutResponse::new(format_code, columns as i16, vec![i16::from(format_code); columns]);
    client.feed(PgWireBackendMessage::CopyOutResponse(response)).await?;
    let mut writer = RowWriter::new(fields.clone(), target);
    if binary {
        writer.put_raw(b"PGCOPY\n\xFF\r\n\x00");
        writer.put_raw(&0i32.to_be_bytes());
        writer.put_raw(&0i32.to_be_bytes());
    } else if options.header {
        let header = csv_header(&fields, options);
        client.feed(PgWireBackendMessage::CopyData(CopyData::new(header))).await?;
    }

    let mut rows = 0u64;
    let mut encoded: Vec<Bytes> = vec![];
    while let Some(batch) = stream.next().await {
        let written = batch.map_err(df_to_pg).and_then(|b| writer.copy_rows(&b, &mut |row| encoded.push(row)));
        for row in encoded.drain(..) {
            client.feed(PgWireBackendMessage::CopyData(CopyData::new(row))).await?;
        }
        match written {
            Ok(n) => rows += n,
            Err(e) => return failed(e),
        }
    }
    if binary {
        writer.put_raw(&(-1i16).to_be_bytes());
    }
    if writer.buffered() > 0 {
        client.feed(PgWireBackendMessage::CopyData(CopyData::new(writer.take().freeze()))).await?;
    }
    client.feed(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(rows as usize)))
}

/// An error in the middle of the copy: PostgreSQL ends CopyOut with an ErrorResponse.
fn failed(e: PgWireError) -> PgWireResult<Response> {
    match e {
        PgWireError::UserError(info) => Ok(Response::Error(info)),
        other => Err(other),
    }
}

/// The CSV header line: column names, quoted when they contain the delimiter, a quote or a
/// line break.
fn csv_header(fields: &[FieldInfo], options: &CopyOptions) -> Bytes {
    let names: Vec<String> = fields
        .iter()
        .map(|f| {
            let name = f.name();
            if name.contains(options.delimiter.as_str())
                || name.contains(options.quote.as_str())
                || name.contains(['\n', '\r'])
            {
                let doubled = name.replace(options.quote.as_str(), &format!("{}{}", options.escape, options.quote));
                format!("{q}{doubled}{q}", q = options.quote)
            } else {
                name.to_string()
            }
        })
        .collect();
    Bytes::from(format!("{}\n", names.join(options.delimiter.as_str())))
}

/// A `COPY … FROM STDIN` the connection is receiving data for; a failure while receiving is
/// kept until CopyDone, when PostgreSQL reports it too.
pub(crate) struct Incoming {
    sink: Box<rxgate_engine::CopyIn>,
    error: Option<rxgate_common::Error>,
}

/// Starts receiving a COPY FROM STDIN: the sink waits in the connection, the client is told
/// how many columns to send, and whether in binary (text and CSV are text).
pub(crate) async fn start_copy_in(
    conn: &crate::handler::Connection,
    sink: Box<rxgate_engine::CopyIn>,
) -> PgWireResult<Response> {
    let columns = sink.columns();
    let format = i8::from(sink.binary());
    *conn.copy.lock().await = Some(Incoming { sink, error: None });
    Ok(Response::CopyIn(pgwire::api::results::CopyResponse::new(format, columns, futures::stream::empty())))
}

/// Feeds the client's CopyData to the connection's COPY FROM STDIN, and finishes it.
pub(crate) struct CopyFrom {
    pub(crate) conn: Arc<crate::handler::Connection>,
}

#[async_trait::async_trait]
impl pgwire::api::copy::CopyHandler for CopyFrom {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: pgwire::api::ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut slot = self.conn.copy.lock().await;
        if let Some(incoming) = slot.as_mut() {
            if incoming.error.is_none() {
                if let Err(e) = incoming.sink.write(&copy_data.data).await {
                    incoming.error = Some(e);
                }
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: pgwire::api::ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(incoming) = self.conn.copy.lock().await.take() else { return Ok(()) };
        if let Some(e) = incoming.error {
            incoming.sink.abort(&e.message);
            return Err(crate::errors::to_pg(e));
        }
        match incoming.sink.finish().await.map_err(crate::errors::to_pg)? {
            rxgate_engine::QueryOutput::Written { tag, .. } => {
                let done = pgwire::messages::response::CommandComplete::new(tag);
                client.send(PgWireBackendMessage::CommandComplete(done)).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: pgwire::messages::copy::CopyFail) -> PgWireError
    where
        C: pgwire::api::ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(incoming) = self.conn.copy.lock().await.take() {
            incoming.sink.abort(&fail.message);
        }
        crate::errors::to_pg(rxgate_common::Error::new(
            rxgate_common::StatusCode::Cancelled,
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}

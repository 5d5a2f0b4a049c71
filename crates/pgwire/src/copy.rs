//! `COPY (query) TO STDOUT` in text, CSV and binary format (what psql's `\copy … to` sends),
//! encoded row by row as the client reads, with arrow-pg's value encoders.

use std::sync::{Arc, Mutex};

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::encoder::encode_value;
use bytes::{Bytes, BytesMut};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;
use rxgate_engine::{CopyFormat, CopyOptions};

use crate::errors::df_to_pg;

/// The CopyOut response of a COPY: the rows of `stream` in the format of `options`.
pub(crate) fn copy_out(schema: SchemaRef, stream: SendableRecordBatchStream, options: &CopyOptions) -> PgWireResult<CopyResponse> {
    let binary = options.format == CopyFormat::Binary;
    let format = if binary { Format::UnifiedBinary } else { Format::UnifiedText };
    let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &format, None)?);
    let columns = fields.len();
    let mut encoder = match options.format {
        CopyFormat::Binary => CopyEncoder::new_binary(fields.clone()),
        CopyFormat::Text => CopyEncoder::new_text(
            fields.clone(),
            CopyTextOptions { delimiter: options.delimiter.as_str().into(), null_string: options.null.as_str().into() },
        ),
        CopyFormat::Csv => CopyEncoder::new_csv(
            fields.clone(),
            CopyCsvOptions {
                delimiter: options.delimiter.as_str().into(),
                quote: options.quote.as_str().into(),
                escape: options.escape.as_str().into(),
                null_string: options.null.as_str().into(),
                force_quote: vec![],
            },
        ),
    };
    // The CSV header goes in front of the first row, so that the COPY row count pgwire
    // reports counts rows only; with no rows it is sent on its own at the end.
    let header = Arc::new(Mutex::new(options.header.then(|| csv_header(&fields, options))));
    let pending_header = header.clone();
    let data = stream
        .map(move |batch| {
            let items = match batch {
                Ok(b) => encode_batch(&mut encoder, &fields, &b, &header),
                Err(e) => vec![Err(df_to_pg(e))],
            };
            stream::iter(items)
        })
        .flatten()
        .chain(stream::iter(std::iter::from_fn(move || {
            pending_header.lock().expect("header lock").take().map(|h| Ok(CopyData::new(h)))
        })));
    Ok(CopyResponse::new(if binary { 1 } else { 0 }, columns, data))
}

fn encode_batch(
    encoder: &mut CopyEncoder,
    fields: &[FieldInfo],
    batch: &RecordBatch,
    header: &Mutex<Option<Bytes>>,
) -> Vec<PgWireResult<CopyData>> {
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (col, array) in batch.columns().iter().enumerate() {
            if let Err(e) = encode_value(encoder, array, row, schema.field(col), &fields[col]) {
                out.push(Err(e));
                return out;
            }
        }
        let data = encoder.take_copy();
        out.push(Ok(match header.lock().expect("header lock").take() {
            Some(h) => {
                let mut joined = BytesMut::from(h.as_ref());
                joined.extend_from_slice(&data.data);
                CopyData::new(joined.freeze())
            }
            None => data,
        }));
    }
    out
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

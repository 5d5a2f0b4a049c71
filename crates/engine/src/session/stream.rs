//! A running statement's result stream: under the statement timeout and the cancel token,
//! registered with the memory watcher, with the client's column names.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::deadline::{CancelToken, GuardedStream};

/// Whose a running statement is, for the memory guard: the session's user and the pool
/// memory the session holds.
#[derive(Clone)]
pub(crate) struct Owner {
    pub(crate) memory: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) user: String,
}

/// A result stream under a timeout and a cancel token, with the client's column names.
pub(crate) fn guard(
    stream: SendableRecordBatchStream,
    timeout: Option<std::time::Duration>,
    token: &CancelToken,
    renamed: Option<SchemaRef>,
    owner: &Owner,
) -> SendableRecordBatchStream {
    let running = crate::memwatch::register(token, owner.memory.clone(), &owner.user);
    let stream: SendableRecordBatchStream =
        Box::pin(GuardedStream::new(stream, timeout, token, Some(Box::new(running))));
    match renamed {
        Some(schema) => {
            let s = schema.clone();
            let renamed = stream.map(move |b| Ok(RecordBatch::try_new(s.clone(), b?.columns().to_vec())?));
            Box::pin(RecordBatchStreamAdapter::new(schema, renamed))
        }
        None => stream,
    }
}

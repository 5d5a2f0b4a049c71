//! A record-batch stream that fails with a timeout error once its deadline passes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use rxgate_common::{Error, StatusCode};
use tokio::time::{Instant, Sleep};

/// Wraps a stream so that polling it after `timeout` yields an error and drops the plan
/// (which cancels its tasks).
pub(crate) struct DeadlineStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl DeadlineStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, timeout: Duration) -> Self {
        let schema = inner.schema();
        Self { inner: Some(inner), schema, sleep: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)), timeout }
    }
}

impl Stream for DeadlineStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.inner = None;
            let err = Error::new(
                StatusCode::Timeout,
                format!("canceling statement due to statement timeout ({} s)", self.timeout.as_secs_f64()),
            );
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(err)))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for DeadlineStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

use std::future::Future;

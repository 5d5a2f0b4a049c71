//! Stopping running queries: a [`CancelToken`] a frontend fires from another task (pgwire
//! CancelRequest, Flight SQL CancelFlightInfo), and the stream guard that turns a fired token
//! or a passed deadline into an error and drops the plan, which stops its tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use rxgate_common::{Error, StatusCode};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Cancels the queries it was given to. Cheap to clone; firing it is idempotent.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(CancellationToken, Arc<OnceLock<(StatusCode, String)>>);

impl CancelToken {
    /// A fresh token, not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops every query guarded by this token: their next poll fails with 57014.
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Stops every query guarded by this token with an error of its own (the memory guard's
    /// 53200) instead of 57014. The first reason given wins.
    pub fn cancel_with(&self, code: StatusCode, message: impl Into<String>) {
        let _ = self.1.set((code, message.into()));
        self.0.cancel();
    }

    /// A token fired with this one (or on its own).
    pub fn child(&self) -> Self {
        Self(self.0.child_token(), self.1.clone())
    }

    /// The error a query stopped by this token reports.
    pub(crate) fn error(&self) -> Error {
        match self.1.get() {
            Some((code, message)) => Error::new(*code, message.clone()),
            None => cancelled_error(),
        }
    }
}

/// The error a cancelled query reports.
pub(crate) fn cancelled_error() -> Error {
    Error::new(StatusCode::Cancelled, "canceling statement due to user request")
}

/// Wraps a result stream so that a fired token or a passed deadline ends it with an error
/// and drops the plan (which cancels its tasks).
pub(crate) struct GuardedStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancelToken,
    /// Held while the stream lives (the memory guard's registration: dropping it
    /// unregisters the statement).
    _running: Option<Box<dyn Send>>,
}

impl GuardedStream {
    pub(crate) fn new(
        inner: SendableRecordBatchStream,
        timeout: Option<Duration>,
        token: &CancelToken,
        running: Option<Box<dyn Send>>,
    ) -> Self {
        let schema = inner.schema();
        let deadline = timeout.map(|t| (Box::pin(tokio::time::sleep_until(Instant::now() + t)), t));
        let cancelled = Box::pin(token.0.clone().cancelled_owned());
        Self { inner: Some(inner), schema, deadline, cancelled, token: token.clone(), _running: running }
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<RecordBatch>>> {
        self.inner = None;
        Poll::Ready(Some(Err(DataFusionError::External(Box::new(err)))))
    }
}

impl Stream for GuardedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        // A fired token wins even over a ready batch: nothing more reaches the client.
        if self.cancelled.as_mut().poll(cx).is_ready() {
            let err = self.token.error();
            return self.fail(err);
        }
        let inner = self.inner.as_mut().expect("checked above");
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if let Some((sleep, timeout)) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                let msg = format!("canceling statement due to statement timeout ({} s)", timeout.as_secs_f64());
                return self.fail(Error::new(StatusCode::Timeout, msg));
            }
        }
        Poll::Pending
    }
}

impl RecordBatchStream for GuardedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

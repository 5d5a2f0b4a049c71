//! The query runtime. Result streams are computed on a tokio runtime of their own, so a
//! statement that keeps every core busy (a large join, a sort, an aggregate over many rows)
//! cannot starve the listeners, other sessions' statements, or the statement that kills it:
//! the runtime the frontends run on only receives finished batches. The kernel shares the
//! cores between the two runtimes' threads.

use std::sync::OnceLock;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::limits::WORKER_STACK_BYTES;

/// Batches computed ahead of the client, per statement.
const AHEAD: usize = 2;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The query runtime: one worker per core, stacks sized like the frontends' (deep plans are
/// executed recursively). Built on first use and kept for the life of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("rxgate-query")
            .thread_stack_size(WORKER_STACK_BYTES)
            .enable_all()
            .build()
            .expect("the query runtime starts")
    })
}

/// Aborts the computing task when the stream reading its batches is dropped (a finished,
/// failed, cancelled or abandoned statement), which drops the plan and frees its memory.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `start` (which executes a physical plan: DataFusion spawns its partitions' tasks
/// on the runtime it is called in) and polls its stream on the query runtime; the returned
/// stream yields the same batches. Dropping it stops the computation at its next await.
pub(crate) fn offload(
    schema: SchemaRef,
    start: impl FnOnce() -> DfResult<SendableRecordBatchStream> + Send + 'static,
) -> SendableRecordBatchStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(AHEAD);
    let task = runtime().spawn(async move {
        let mut stream = match start() {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                item = stream.next() => match item {
                    Some(item) => {
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    });
    let batches = futures::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, task)| async move {
        rx.recv().await.map(|item| (item, (rx, task)))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test(flavor = "current_thread")]
    async fn batches_arrive_computed_on_the_query_runtime() {
        let ctx = SessionContext::new();
        let df = ctx.sql("SELECT value FROM generate_series(1, 100000)").await.unwrap();
        let task = std::sync::Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.unwrap();
        let schema = plan.schema();
        let on = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = on.clone();
        let stream = offload(schema, move || {
            *seen.lock().unwrap() = std::thread::current().name().map(str::to_string);
            datafusion::physical_plan::execute_stream(plan, task)
        });
        let batches: Vec<_> = stream.collect().await;
        let rows: usize = batches.iter().map(|b| b.as_ref().unwrap().num_rows()).sum();
        assert_eq!(rows, 100000);
        assert_eq!(on.lock().unwrap().as_deref(), Some("rxgate-query"));
    }
}

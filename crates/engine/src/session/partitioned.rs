//! Results read in parallel: one lazy stream per output partition of a statement's physical
//! plan (Flight SQL offers one endpoint per partition).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::ExecutionPlan;
use rxgate_common::{Error, Result};

use super::stream::{guard, Owner};
use super::EngineSession;
use crate::audit::AuditHandle;
use crate::deadline::CancelToken;
use crate::planned::{returns_rows, Planned, QueryOutput};

/// A result whose partitions can be read in parallel, each exactly once
/// ([`EngineSession::execute_partitioned`]).
pub struct PartitionedQuery {
    schema: SchemaRef,
    source: PartitionSource,
    timeout: Option<std::time::Duration>,
    token: CancelToken,
    audit: Option<Arc<AuditHandle>>,
    owner: Owner,
}

enum PartitionSource {
    Plan { plan: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>, renamed: Option<SchemaRef> },
    Once(Mutex<Option<SendableRecordBatchStream>>),
}

impl PartitionedQuery {
    /// The schema every partition's batches have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> usize {
        match &self.source {
            PartitionSource::Plan { plan, .. } => plan.properties().output_partitioning().partition_count(),
            PartitionSource::Once(_) => 1,
        }
    }

    /// The token that stops every partition of this query.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.token
    }

    /// Starts streaming partition `i`: batches are computed as the caller polls, under the
    /// statement timeout and the query's cancel token.
    pub fn stream(&self, i: usize) -> Result<SendableRecordBatchStream> {
        if i >= self.partitions() {
            return Err(Error::invalid(format!("no partition {i}")));
        }
        match &self.source {
            PartitionSource::Plan { plan, task, renamed } => {
                let (plan, task) = (plan.clone(), task.clone());
                let computed = crate::executor::offload(plan.schema(), move || plan.execute(i, task));
                let stream = guard(computed, self.timeout, &self.token, renamed.clone(), &self.owner);
                Ok(match &self.audit {
                    Some(audit) => audit.stream(stream),
                    None => stream,
                })
            }
            PartitionSource::Once(slot) => slot
                .lock()
                .expect("partition lock")
                .take()
                .map(|s| guard(s, self.timeout, &self.token, None, &self.owner))
                .ok_or_else(|| Error::invalid("this result was already read")),
        }
    }
}

/// `plan` with one output partition, whatever its own count.
fn one_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    if plan.properties().output_partitioning().partition_count() == 1 {
        return plan;
    }
    Arc::new(CoalescePartitionsExec::new(plan))
}

impl EngineSession {
    /// Plans a statement for parallel reading: every output partition of its physical plan
    /// becomes its own stream (Flight SQL offers one endpoint per partition). A statement
    /// without a physical plan (SHOW, SET, …) has one partition holding its whole result.
    pub async fn execute_partitioned(
        &self,
        planned: &Planned,
        params: Option<ParamValues>,
        token: CancelToken,
    ) -> Result<PartitionedQuery> {
        let timeout = self.settings.statement_timeout();
        if let Planned::Audited(inner, info) = planned {
            if let Planned::Plan(p, renamed, ..) = inner.as_ref() {
                if returns_rows(p) {
                    let started = Instant::now();
                    let mut record = info.record(&self.identity, &self.roles);
                    let running = self.entry.activity().start(self.entry.id, &self.identity.user, &info.sql, &token);
                    let physical = async {
                        let plan = self.bound_plan(inner, params).await?;
                        let df = self.ctx.execute_logical_plan(plan).await?;
                        let task = Arc::new(df.task_ctx());
                        Ok::<_, Error>((df.create_physical_plan().await?, task))
                    }
                    .await;
                    let (physical, task) = match physical {
                        Ok(p) => p,
                        Err(e) => {
                            record.finish(0, started, Some(&e));
                            running.complete(&mut record);
                            self.audit.append(&record);
                            return Err(e);
                        }
                    };
                    running.set_plan(physical.clone());
                    // How many partitions a plan has depends on how many files survive pruning
                    // by statistics over all rows: under a mask or a row filter every result
                    // has one endpoint (see `explain_under_policy`).
                    let physical = if info.hides { one_partition(physical) } else { physical };
                    let schema = renamed.clone().unwrap_or_else(|| physical.schema());
                    let parts = physical.properties().output_partitioning().partition_count();
                    let audit = Some(AuditHandle::new(record, self.audit.clone(), started, parts, Some(running)));
                    let source = PartitionSource::Plan { plan: physical, task, renamed: renamed.clone() };
                    return Ok(PartitionedQuery { schema, source, timeout, token, audit, owner: self.owner.clone() });
                }
            }
        }
        let (schema, stream) = match self.execute_with(planned, params, &token).await? {
            QueryOutput::Rows { schema, stream } => (schema, stream),
            _ => {
                let schema: SchemaRef = Arc::new(Schema::empty());
                let stream: SendableRecordBatchStream = Box::pin(MemoryStream::try_new(vec![], schema.clone(), None)?);
                (schema, stream)
            }
        };
        let source = PartitionSource::Once(Mutex::new(Some(stream)));
        Ok(PartitionedQuery { schema, source, timeout, token, audit: None, owner: self.owner.clone() })
    }
}

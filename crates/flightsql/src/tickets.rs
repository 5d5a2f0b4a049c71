//! Tickets: the opaque, single-use, expiring claims on one partition of a planned result.
//!
//! GetFlightInfo plans the statement and issues one ticket per output partition; the plan
//! runs only when a ticket is redeemed by DoGet, partition by partition, as the client reads.
//! A ticket is a random 128-bit id (wrapped in `TicketStatementQuery` so any Flight SQL
//! client passes it back unchanged), bound to the user who asked:
//! - redeemed by another user → PERMISSION_DENIED (and it stays valid for its owner);
//! - unknown, already redeemed, or older than the ticket TTL → NOT_FOUND.
//!
//! A query stays cancellable (CancelFlightInfo) while any of its tickets is pending or any of
//! its partitions is still streaming.
//!
//! Partitions of one plan are not independent: behind a repartition, one shared input feeds
//! every partition, so reading partition 0 alone makes the others' share pile up on the
//! server (until the memory limit, then on disk). Clients that fetch endpoints in parallel
//! redeem all tickets at about the same time; clients that read one endpoint after the other
//! (pyarrow's `read_all` loop) do not. So the first DoGet of a multi-endpoint result waits
//! briefly ([`Tickets::claim_unredeemed`]) for its siblings to be redeemed; the ones still
//! unredeemed after that are streamed by this DoGet too (merged, at its reader's pace), and
//! their tickets, redeemed later, stream no rows. Every row is delivered exactly once, through
//! the endpoints together, and the server never runs ahead of the readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightEndpoint, Ticket};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use prost::Message;
use rxgate_auth::random_bytes;
use rxgate_common::StatusCode;
use rxgate_engine::{CancelToken, PartitionedQuery};
use tokio::sync::Notify;
use tonic::Status;

use crate::status::{status, to_status};

/// Prefix of our ticket handles (format version 1).
const MAGIC: &[u8; 4] = b"rxt1";

type TicketId = [u8; 16];

/// What a result's partitions come from.
pub(crate) enum ResultSource {
    /// A planned query: partitions run lazily when redeemed.
    Query(PartitionedQuery),
    /// A small, already computed answer (catalog metadata), one partition.
    Batches(SchemaRef, Mutex<Option<Vec<RecordBatch>>>),
}

/// One result offered as one or more endpoints.
pub(crate) struct ResultEntry {
    user: String,
    source: ResultSource,
    token: CancelToken,
}

impl ResultEntry {
    pub(crate) fn new(user: &str, source: ResultSource, token: CancelToken) -> Self {
        Self { user: user.to_string(), source, token }
    }

    /// Number of partitions (endpoints).
    pub(crate) fn partitions(&self) -> usize {
        match &self.source {
            ResultSource::Query(q) => q.partitions(),
            ResultSource::Batches(..) => 1,
        }
    }

    /// Schema of every partition, as clients receive it.
    pub(crate) fn schema(&self) -> SchemaRef {
        match &self.source {
            ResultSource::Query(q) => crate::wire::wire_schema(&q.schema()),
            ResultSource::Batches(schema, _) => schema.clone(),
        }
    }

    /// Starts streaming partition `i` (once).
    pub(crate) fn stream(&self, i: usize) -> Result<SendableRecordBatchStream, Status> {
        match &self.source {
            // Batches leave in the engine's types; `encode` writes them as `schema()` says.
            ResultSource::Query(q) => q.stream(i).map_err(to_status),
            ResultSource::Batches(schema, batches) => {
                let batches = batches.lock().expect("batches lock").take().unwrap_or_default();
                let stream = MemoryStream::try_new(batches, schema.clone(), None).map_err(crate::status::df_status)?;
                Ok(Box::pin(stream))
            }
        }
    }
}

struct Pending {
    entry: Arc<ResultEntry>,
    partition: usize,
    expires: Instant,
}

/// A ticket whose partition another DoGet of its result streamed.
struct Drained {
    user: String,
    schema: SchemaRef,
    expires: Instant,
}

/// What redeeming a ticket gives.
pub(crate) enum Redeemed {
    /// A partition of a result to stream.
    Partition(Arc<ResultEntry>, usize),
    /// A ticket whose partition was streamed by another endpoint of the same result: no rows.
    Drained(SchemaRef),
}

#[derive(Default)]
struct Inner {
    /// Tickets not redeemed yet.
    pending: HashMap<TicketId, Pending>,
    /// Tickets not redeemed yet whose partition another DoGet took over.
    drained: HashMap<TicketId, Drained>,
    /// Every ticket of a result that is still pending or streaming (for cancellation).
    results: HashMap<TicketId, Weak<ResultEntry>>,
}

/// The ticket registry of one server.
pub(crate) struct Tickets {
    ttl: Duration,
    inner: Mutex<Inner>,
    /// Woken at every redeemed partition (what [`Tickets::claim_unredeemed`] waits for).
    redeemed: Notify,
}

/// How a cancellation request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The query's token was fired (now or before).
    Cancelled,
    /// None of the tickets names a running or pending result.
    Unknown,
}

fn ticket_bytes(id: &TicketId) -> Ticket {
    let mut handle = MAGIC.to_vec();
    handle.extend_from_slice(id);
    Ticket::new(TicketStatementQuery { statement_handle: handle.into() }.as_any().encode_to_vec())
}

/// The id inside a `TicketStatementQuery` handle we issued.
pub(crate) fn ticket_id(handle: &[u8]) -> Option<TicketId> {
    let rest = handle.strip_prefix(MAGIC.as_slice())?;
    rest.try_into().ok()
}

/// The id inside a raw ticket (as found in a FlightInfo's endpoints).
fn raw_ticket_id(ticket: &[u8]) -> Option<TicketId> {
    let any = arrow_flight::sql::Any::decode(ticket).ok()?;
    let t: TicketStatementQuery = any.unpack().ok()??;
    ticket_id(&t.statement_handle)
}

impl Tickets {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, inner: Mutex::new(Inner::default()), redeemed: Notify::new() }
    }

    /// Registers a result and returns one endpoint per partition, each with its own ticket.
    pub(crate) fn issue(&self, entry: ResultEntry) -> Vec<FlightEndpoint> {
        let entry = Arc::new(entry);
        let expires = Instant::now() + self.ttl;
        let expiration = prost_types::Timestamp::from(SystemTime::now() + self.ttl);
        let mut inner = self.inner.lock().expect("tickets lock");
        (0..entry.partitions())
            .map(|partition| {
                let id: TicketId = random_bytes::<16>();
                inner.pending.insert(id, Pending { entry: entry.clone(), partition, expires });
                inner.results.insert(id, Arc::downgrade(&entry));
                FlightEndpoint::new().with_ticket(ticket_bytes(&id)).with_expiration_time(expiration)
            })
            .collect()
    }

    /// Redeems a ticket for `user`.
    pub(crate) fn redeem(&self, user: &str, handle: &[u8]) -> Result<Redeemed, Status> {
        let not_found = || status(StatusCode::TableNotFound, "ticket not found: unknown, expired or already used");
        let denied = |owner: &str| {
            tracing::warn!(user, owner, "flight sql: ticket presented by another user");
            status(StatusCode::PermissionDenied, "this ticket belongs to another user")
        };
        let id = ticket_id(handle).ok_or_else(not_found)?;
        let mut inner = self.inner.lock().expect("tickets lock");
        if let Some(drained) = inner.drained.get(&id) {
            if drained.user != user {
                return Err(denied(&drained.user));
            }
            let drained = inner.drained.remove(&id).expect("present");
            if drained.expires <= Instant::now() {
                return Err(not_found());
            }
            return Ok(Redeemed::Drained(drained.schema));
        }
        let pending = inner.pending.get(&id).ok_or_else(not_found)?;
        if pending.entry.user != user {
            return Err(denied(&pending.entry.user));
        }
        let pending = inner.pending.remove(&id).expect("present");
        drop(inner);
        self.redeemed.notify_waiters();
        if pending.expires <= Instant::now() {
            return Err(not_found());
        }
        Ok(Redeemed::Partition(pending.entry, pending.partition))
    }

    /// Waits up to `grace` for the other tickets of `entry` to be redeemed; takes over the
    /// partitions of those still unredeemed then (their tickets will stream no rows).
    pub(crate) async fn claim_unredeemed(&self, entry: &Arc<ResultEntry>, grace: Duration) -> Vec<usize> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Registered before looking, so that a redeem in between is not missed.
            let redeemed = self.redeemed.notified();
            tokio::pin!(redeemed);
            redeemed.as_mut().enable();
            {
                let mut inner = self.inner.lock().expect("tickets lock");
                let siblings: Vec<TicketId> =
                    inner.pending.iter().filter(|(_, p)| Arc::ptr_eq(&p.entry, entry)).map(|(id, _)| *id).collect();
                if siblings.is_empty() {
                    return vec![];
                }
                if tokio::time::Instant::now() >= deadline {
                    let mut claimed = vec![];
                    for id in siblings {
                        let p = inner.pending.remove(&id).expect("present");
                        claimed.push(p.partition);
                        let drained = Drained { user: entry.user.clone(), schema: entry.schema(), expires: p.expires };
                        inner.drained.insert(id, drained);
                    }
                    return claimed;
                }
            }
            let _ = tokio::time::timeout_at(deadline, redeemed).await;
        }
    }

    /// Cancels the result one of `tickets` belongs to, if `user` owns it.
    pub(crate) fn cancel<'a>(
        &self,
        user: &str,
        tickets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Cancelled, Status> {
        let ids: Vec<TicketId> = tickets.into_iter().filter_map(raw_ticket_id).collect();
        let mut inner = self.inner.lock().expect("tickets lock");
        let Some(entry) = ids.iter().find_map(|id| inner.results.get(id).and_then(Weak::upgrade)) else {
            return Ok(Cancelled::Unknown);
        };
        if entry.user != user {
            return Err(status(StatusCode::PermissionDenied, "this query belongs to another user"));
        }
        entry.token.cancel();
        // Its pending tickets go too: nothing of a cancelled query can be fetched.
        inner.pending.retain(|_, p| !Arc::ptr_eq(&p.entry, &entry));
        Ok(Cancelled::Cancelled)
    }

    /// Drops expired tickets and forgets results nobody holds any more.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let dropped: Vec<Pending> = {
            let mut inner = self.inner.lock().expect("tickets lock");
            let expired: Vec<TicketId> =
                inner.pending.iter().filter(|(_, p)| p.expires <= now).map(|(id, _)| *id).collect();
            let dropped = expired.iter().filter_map(|id| inner.pending.remove(id)).collect();
            inner.drained.retain(|_, d| d.expires > now);
            dropped
        };
        // Plans are dropped outside the lock; then their weak references are dead.
        drop(dropped);
        self.inner.lock().expect("tickets lock").results.retain(|_, w| w.strong_count() > 0);
    }

    /// (pending tickets, results still referenced).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("tickets lock");
        (inner.pending.len(), inner.results.values().filter(|w| w.strong_count() > 0).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn entry(user: &str) -> ResultEntry {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        ResultEntry::new(user, ResultSource::Batches(schema, Mutex::new(Some(vec![batch]))), CancelToken::new())
    }

    fn handle(endpoint: &FlightEndpoint) -> Vec<u8> {
        let raw = &endpoint.ticket.as_ref().unwrap().ticket;
        let any = arrow_flight::sql::Any::decode(raw.as_ref()).unwrap();
        let t: TicketStatementQuery = any.unpack().unwrap().unwrap();
        t.statement_handle.to_vec()
    }

    #[test]
    fn tickets_are_single_use_and_bound_to_their_user() {
        let tickets = Tickets::new(Duration::from_secs(60));
        let eps = tickets.issue(entry("ann"));
        assert_eq!(eps.len(), 1);
        let h = handle(&eps[0]);
        assert_eq!(tickets.redeem("bob", &h).err().unwrap().code(), tonic::Code::PermissionDenied);
        let Redeemed::Partition(e, p) = tickets.redeem("ann", &h).unwrap() else { panic!("a partition") };
        assert_eq!((e.partitions(), p), (1, 0));
        assert_eq!(tickets.redeem("ann", &h).err().unwrap().code(), tonic::Code::NotFound);
        assert_eq!(tickets.redeem("ann", b"rxt1-forged-handle").err().unwrap().code(), tonic::Code::NotFound);
    }

    /// A result of two partitions, as a two-partition plan would issue it, whose first ticket
    /// was just redeemed by "ann": the registry, the result and the second ticket's handle.
    fn first_of_two_redeemed() -> (Tickets, Arc<ResultEntry>, Vec<u8>) {
        let tickets = Tickets::new(Duration::from_secs(60));
        let first = handle(&tickets.issue(entry("ann"))[0]);
        let sibling: TicketId = random_bytes::<16>();
        let entry = {
            let mut inner = tickets.inner.lock().unwrap();
            let entry = inner.pending[&ticket_id(&first).unwrap()].entry.clone();
            let expires = Instant::now() + tickets.ttl;
            inner.pending.insert(sibling, Pending { entry: entry.clone(), partition: 1, expires });
            entry
        };
        tickets.redeem("ann", &first).unwrap();
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&sibling);
        (tickets, entry, h)
    }

    /// A waker that records whether it was woken.
    struct Flag(std::sync::atomic::AtomicBool);

    impl futures::task::ArcWake for Flag {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_first_reader_is_woken_by_its_siblings_redeem() {
        use std::future::Future;
        use std::task::{Context, Poll};
        let (tickets, entry, sibling) = first_of_two_redeemed();
        let flag = Arc::new(Flag(Default::default()));
        let waker = futures::task::waker(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let claim = tickets.claim_unredeemed(&entry, Duration::from_secs(60));
        tokio::pin!(claim);
        assert!(claim.as_mut().poll(&mut cx).is_pending(), "waits while the sibling is pending");
        let Redeemed::Partition(_, p) = tickets.redeem("ann", &sibling).unwrap() else { panic!("a partition") };
        assert_eq!(p, 1);
        // Nothing ran in between (this task never yielded): only the redeem can have woken it.
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst), "woken by the redeem itself");
        assert_eq!(claim.as_mut().poll(&mut cx), Poll::Ready(vec![]), "nothing left to take over");
    }

    #[tokio::test]
    async fn a_sibling_nobody_redeems_is_taken_over_after_the_grace() {
        let (tickets, entry, sibling) = first_of_two_redeemed();
        let start = Instant::now();
        assert_eq!(tickets.claim_unredeemed(&entry, Duration::from_millis(20)).await, vec![1]);
        assert!(start.elapsed() >= Duration::from_millis(20), "the sibling had its grace");
        // Its ticket still works for its owner, and streams nothing.
        assert!(matches!(tickets.redeem("ann", &sibling).unwrap(), Redeemed::Drained(_)));
    }

    #[test]
    fn expired_tickets_are_not_found_and_swept() {
        let tickets = Tickets::new(Duration::from_millis(1));
        let eps = tickets.issue(entry("ann"));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tickets.redeem("ann", &handle(&eps[0])).err().unwrap().code(), tonic::Code::NotFound);
        let eps = tickets.issue(entry("ann"));
        std::thread::sleep(Duration::from_millis(5));
        tickets.sweep();
        assert_eq!(tickets.counts(), (0, 0));
        assert_eq!(tickets.redeem("ann", &handle(&eps[0])).err().unwrap().code(), tonic::Code::NotFound);
    }

    #[test]
    fn cancel_fires_the_token_for_the_owner_only() {
        let tickets = Tickets::new(Duration::from_secs(60));
        let eps = tickets.issue(entry("ann"));
        let raw: Vec<u8> = eps[0].ticket.as_ref().unwrap().ticket.to_vec();
        assert_eq!(tickets.cancel("bob", [raw.as_slice()]).err().unwrap().code(), tonic::Code::PermissionDenied);
        assert_eq!(tickets.cancel("ann", [raw.as_slice()]).unwrap(), Cancelled::Cancelled);
        // The pending ticket went with the cancellation.
        assert_eq!(tickets.redeem("ann", &handle(&eps[0])).err().unwrap().code(), tonic::Code::NotFound);
        assert_eq!(tickets.cancel("ann", [b"junk".as_slice()]).unwrap(), Cancelled::Unknown);
    }
}

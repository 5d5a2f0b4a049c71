//! The process memory guard: every running statement is registered with the memory its
//! session holds in the query pool, and a watcher cancels the statement holding the most
//! (53200) when the process's resident memory comes within 10% of `[limits]
//! process_memory_limit`, before the process passes it (and long before the kernel's OOM killer
//! would end the whole server).
//!
//! Operators reserve from the pool ([`SessionPool`] counts each session's share of it);
//! memory outside the pool (a value being built, a hash table not yet accounted) shows only
//! in the resident size, which is why the watcher reads that. When no running statement holds
//! pool memory, the one running longest is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};
use rxgate_common::StatusCode;

use crate::deadline::CancelToken;

/// One session's view of the shared query pool: every call goes to the shared pool, and the
/// bytes the session holds are counted.
#[derive(Debug)]
pub(crate) struct SessionPool {
    inner: Arc<dyn MemoryPool>,
    used: Arc<AtomicUsize>,
}

impl SessionPool {
    pub(crate) fn new(inner: Arc<dyn MemoryPool>) -> Self {
        Self { inner, used: Arc::default() }
    }

    /// The counter of bytes this session holds.
    pub(crate) fn used(&self) -> Arc<AtomicUsize> {
        self.used.clone()
    }
}

impl MemoryPool for SessionPool {
    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.used.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// A running statement as the watcher sees it.
struct Entry {
    token: CancelToken,
    memory: Arc<AtomicUsize>,
    user: String,
    started: Instant,
}

#[derive(Default)]
struct Running {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

static RUNNING: LazyLock<Running> = LazyLock::new(Running::default);

/// Keeps a statement registered while it runs (held by its result stream).
pub(crate) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        RUNNING.entries.lock().expect("running lock").remove(&self.0);
    }
}

/// Registers a statement that runs under `token`, whose session holds `memory` bytes of the
/// pool.
pub(crate) fn register(token: &CancelToken, memory: Arc<AtomicUsize>, user: &str) -> Registration {
    let id = RUNNING.next.fetch_add(1, Ordering::Relaxed);
    let entry = Entry { token: token.clone(), memory, user: user.to_string(), started: Instant::now() };
    RUNNING.entries.lock().expect("running lock").insert(id, entry);
    Registration(id)
}

/// Cancels the running statement holding the most pool memory (the longest running when none
/// holds any) with 53200. Returns whose statement it was, if one was running.
fn cancel_largest(resident: usize, limit: usize) -> Option<(String, usize)> {
    let entries = RUNNING.entries.lock().expect("running lock");
    let victim = entries
        .values()
        .filter(|e| !e.token.is_cancelled())
        .max_by_key(|e| (e.memory.load(Ordering::Relaxed), std::cmp::Reverse(e.started)))?;
    let held = victim.memory.load(Ordering::Relaxed);
    victim.token.cancel_with(
        StatusCode::ResourcesExhausted,
        format!(
            "canceling statement: the server's memory ({} MiB resident) is near its limit ({} MiB, \
             [limits] process_memory_limit) and this statement held the most",
            resident >> 20,
            limit >> 20
        ),
    );
    Some((victim.user.clone(), held))
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`).
pub(crate) fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

static LIMIT: AtomicUsize = AtomicUsize::new(0);
static WATCHER: OnceLock<()> = OnceLock::new();

/// Starts the watcher (once per process) with `limit` bytes of resident memory; 0 turns it
/// off. It checks every 50 ms and, after cancelling a statement, gives its memory a second to
/// return before it cancels another.
pub(crate) fn watch(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
    if limit == 0 {
        return;
    }
    WATCHER.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("rxgate-memwatch".into()).spawn(|| loop {
            std::thread::sleep(Duration::from_millis(50));
            let limit = LIMIT.load(Ordering::Relaxed);
            let Some(resident) = resident_bytes() else { continue };
            // Acting at 90% leaves room for what a statement allocates between two samples
            // and while it notices its cancellation.
            if limit == 0 || resident <= limit - limit / 10 {
                continue;
            }
            if let Some((user, held)) = cancel_largest(resident, limit) {
                tracing::warn!(resident, limit, user = %user, pool_bytes = held, "memory guard cancelled a statement (53200)");
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the memory guard");
        }
    });
}

//! CancelRequest: which connection a `(pid, secret key)` pair belongs to, and the engine
//! canceller of that connection's session.
//!
//! A client sends CancelRequest on a new connection with the key it got in BackendKeyData at
//! login. The registry fires the session's [`SessionCanceller`], so the statement that
//! connection is running (planning, computing or streaming rows) ends with 57014 and the
//! connection stays usable. Unknown keys are ignored, as PostgreSQL does.
//!
//! A flood of made-up CancelRequests must stay cheap: a request costs one map lookup by pid
//! and a constant-time comparison of the secret (no timing tells how much of a guessed key
//! was right), spawns nothing beyond its connection's task (bounded by
//! `max_authenticating`), and unknown keys are counted, not logged one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use rxgate_engine::SessionCanceller;

/// Logged-in connections by pid, with their secret key.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    slots: Mutex<HashMap<i32, (Bytes, Arc<CancelSlot>)>>,
    /// CancelRequests whose key matched no connection, and when that was last logged.
    unknown: Mutex<(u64, Option<Instant>)>,
}

/// One connection's entry: its session's canceller, set when the session opens.
#[derive(Default)]
pub(crate) struct CancelSlot {
    canceller: OnceLock<SessionCanceller>,
}

impl CancelSlot {
    /// Binds the slot to the connection's engine session (once).
    pub(crate) fn bind(&self, canceller: SessionCanceller) {
        let _ = self.canceller.set(canceller);
    }
}

/// Removes a connection's entry when the connection (and so its extensions) is dropped.
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.slots.lock().expect("cancel registry lock").remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Registers a connection's key; keep the guard as long as the connection lives. The pid
    /// is unique among live connections (a clash replaces nothing: the newcomer is simply
    /// not cancellable, which the random 32-bit pids make vanishingly rare).
    pub(crate) fn register(self: &Arc<Self>, pid: i32, secret: &SecretKey) -> (Arc<CancelSlot>, Option<CancelGuard>) {
        let slot = Arc::new(CancelSlot::default());
        let mut slots = self.slots.lock().expect("cancel registry lock");
        if slots.contains_key(&pid) {
            return (slot, None);
        }
        slots.insert(pid, (secret.to_bytes(), slot.clone()));
        (slot, Some(CancelGuard { registry: self.clone(), pid }))
    }

    /// Fires the canceller registered under `(pid, secret)`; false when there is none.
    pub(crate) fn cancel(&self, pid: i32, secret: &SecretKey) -> bool {
        let given = secret.to_bytes();
        let slot = {
            let slots = self.slots.lock().expect("cancel registry lock");
            slots.get(&pid).and_then(|(key, slot)| {
                aws_lc_rs::constant_time::verify_slices_are_equal(key, &given).ok().map(|_| slot.clone())
            })
        };
        match slot.as_ref().and_then(|s| s.canceller.get()) {
            Some(c) => {
                c.cancel();
                true
            }
            None => {
                self.count_unknown();
                false
            }
        }
    }

    /// Counts a CancelRequest that matched nothing; logs the count at most once a minute.
    fn count_unknown(&self) {
        let mut unknown = self.unknown.lock().expect("cancel registry lock");
        unknown.0 += 1;
        let now = Instant::now();
        if unknown.1.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(60)) {
            tracing::warn!(total = unknown.0, "cancel requests with a key that matches no connection");
            unknown.1 = Some(now);
        }
    }
}

/// The handler pgwire calls for a CancelRequest connection.
pub(crate) struct CancelRequests(pub(crate) Arc<CancelRegistry>);

#[async_trait]
impl CancelHandler for CancelRequests {
    async fn on_cancel_request(&self, request: CancelRequest) {
        if self.0.cancel(request.pid, &request.secret_key) {
            tracing::info!(pid = request.pid, "cancel request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_cancels() {
        let registry = Arc::new(CancelRegistry::default());
        let (slot, guard) = registry.register(7, &SecretKey::I32(1234));
        assert!(guard.is_some());
        // Not bound to a session yet: nothing to fire.
        assert!(!registry.cancel(7, &SecretKey::I32(1234)));
        assert!(registry.register(7, &SecretKey::I32(99)).1.is_none(), "a clashing pid is not registered");
        drop(slot);
        assert!(!registry.cancel(7, &SecretKey::I32(1235)));
        assert!(!registry.cancel(8, &SecretKey::I32(1234)));
        assert_eq!(registry.unknown.lock().unwrap().0, 3);
        drop(guard);
        assert!(registry.slots.lock().unwrap().is_empty());
    }
}

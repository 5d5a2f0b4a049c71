//! CancelRequest: which connection a `(pid, secret key)` pair belongs to, and the engine
//! canceller of that connection's session.
//!
//! A client sends CancelRequest on a new connection with the key it got in BackendKeyData at
//! login. The registry fires the session's [`SessionCanceller`], so the statement that
//! connection is running (planning, computing or streaming rows) ends with 57014 and the
//! connection stays usable. Unknown keys are ignored, as PostgreSQL does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use rxgate_engine::SessionCanceller;

type Key = (i32, Bytes);

/// Logged-in connections by their cancel key.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    slots: Mutex<HashMap<Key, Arc<CancelSlot>>>,
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
    key: Key,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.slots.lock().expect("cancel registry lock").remove(&self.key);
    }
}

impl CancelRegistry {
    /// Registers a connection's key; keep the guard as long as the connection lives.
    pub(crate) fn register(self: &Arc<Self>, pid: i32, secret: &SecretKey) -> (Arc<CancelSlot>, CancelGuard) {
        let key = (pid, secret.to_bytes());
        let slot = Arc::new(CancelSlot::default());
        self.slots.lock().expect("cancel registry lock").insert(key.clone(), slot.clone());
        (slot, CancelGuard { registry: self.clone(), key })
    }

    /// Fires the canceller registered under `(pid, secret)`; false when there is none.
    pub(crate) fn cancel(&self, pid: i32, secret: &SecretKey) -> bool {
        let slot = self.slots.lock().expect("cancel registry lock").get(&(pid, secret.to_bytes())).cloned();
        match slot.as_ref().and_then(|s| s.canceller.get()) {
            Some(c) => {
                c.cancel();
                true
            }
            None => false,
        }
    }
}

/// The handler pgwire calls for a CancelRequest connection.
pub(crate) struct CancelRequests(pub(crate) Arc<CancelRegistry>);

#[async_trait]
impl CancelHandler for CancelRequests {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let found = self.0.cancel(request.pid, &request.secret_key);
        tracing::info!(pid = request.pid, found, "cancel request");
    }
}

//! Every live WebSocket connection, so that shutdown can reach them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use switchboard_ws::CloseFrame;
use tokio_util::task::TaskTracker;

use switchboard_core::hub::ConnectionId;
use switchboard_core::outbox::Outbox;

/// Shards keep registration from serialising on one lock under connect storms.
const SHARDS: usize = 16;

/// The registry of live connections and the tasks that serve them.
#[derive(Debug)]
pub struct Connections {
    next_id: AtomicU64,
    /// Lock order: a shard, then an outbox (closing it at shutdown), which
    /// only queues the close and wakes the connection's task.
    shards: [Mutex<HashMap<ConnectionId, Arc<Outbox>>>; SHARDS],
    /// Set once shutdown starts: new connections are closed at once.
    closing: Mutex<Option<CloseFrame>>,
    closing_flag: AtomicBool,
    /// Every connection task, so shutdown can wait for them to finish.
    pub tasks: TaskTracker,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            next_id: AtomicU64::new(1),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            closing: Mutex::new(None),
            closing_flag: AtomicBool::new(false),
            tasks: TaskTracker::new(),
        }
    }
}

impl Connections {
    /// Adds a connection; it stays registered until the guard is dropped.
    pub fn register(self: &Arc<Self>, outbox: Arc<Outbox>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shard(id).lock().insert(id, outbox.clone());
        // Checked after inserting, so a connection racing with shutdown is
        // either seen by `close_all` or sees the flag here.
        if self.closing_flag.load(Ordering::Acquire) {
            if let Some(frame) = self.closing.lock().clone() {
                outbox.close(frame);
            }
        }
        Registration {
            id,
            connections: Arc::clone(self),
        }
    }

    /// Asks every connection, present and future, to close with `frame`.
    pub fn close_all(&self, frame: CloseFrame) {
        *self.closing.lock() = Some(frame.clone());
        self.closing_flag.store(true, Ordering::Release);
        for shard in &self.shards {
            for outbox in shard.lock().values() {
                outbox.close(frame.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: ConnectionId) -> &Mutex<HashMap<ConnectionId, Arc<Outbox>>> {
        &self.shards[id as usize % SHARDS]
    }
}

/// Keeps a connection registered; unregisters it on drop.
#[derive(Debug)]
pub struct Registration {
    pub id: ConnectionId,
    connections: Arc<Connections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.shard(self.id).lock().remove(&self.id);
    }
}

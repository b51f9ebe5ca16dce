//! When a group commit is fsynced: before its messages are delivered (the
//! default), or only before they are acknowledged ([`SyncPolicy::BeforeAck`]),
//! with the fsync on a thread of its own behind the writer.
//!
//! Delivering ahead of the fsync means a power cut can take back messages
//! subscribers already saw. Their offsets must never be handed out again,
//! or a client resuming from one would skip the message that reused it. So
//! the writer never runs more than a bounded window of messages ahead of
//! the fsync, and the store keeps a guard on disk while anything may be
//! unsynced: after an unclean stop it moves every channel's offsets past
//! that window (see `HistoryStore::guard_unsynced`).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::{Condvar, Mutex};
use switchboard_proto::Publication;

use crate::history::{HistoryError, HistoryStore};
use crate::node::AckTarget;

/// When a group commit is made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync, then deliver and acknowledge: nothing anyone saw can be lost.
    #[default]
    BeforeDelivery,
    /// Deliver once written (a crash of the process loses nothing), and
    /// acknowledge once fsynced.
    BeforeAck,
}

impl SyncPolicy {
    pub const NAMES: [&'static str; 2] = ["before-delivery", "before-ack"];

    pub fn name(self) -> &'static str {
        match self {
            SyncPolicy::BeforeDelivery => Self::NAMES[0],
            SyncPolicy::BeforeAck => Self::NAMES[1],
        }
    }
}

impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "before-delivery" => Ok(SyncPolicy::BeforeDelivery),
            "before-ack" => Ok(SyncPolicy::BeforeAck),
            other => Err(format!(
                "unknown sync policy {other:?}; expected one of: {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// How many delivered messages may wait for their fsync, and whether the
/// store's guard is on disk.
pub struct SyncWindow {
    state: Mutex<WindowState>,
    changed: Condvar,
    limit: usize,
}

struct WindowState {
    unsynced: usize,
    guarded: bool,
    /// Threads blocked in `reserve` or `settle` (what tests wait for).
    blocked: usize,
}

impl SyncWindow {
    /// A window of `limit` messages: at least one batch.
    pub fn new(limit: usize) -> SyncWindow {
        SyncWindow {
            state: Mutex::new(WindowState {
                unsynced: 0,
                guarded: false,
                blocked: 0,
            }),
            changed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// Makes room for `count` messages about to be written unsynced: waits
    /// for the fsync to catch up, and puts the store's guard on disk first
    /// if it is not there.
    pub fn reserve(&self, count: usize, history: &dyn HistoryStore) -> Result<(), HistoryError> {
        let mut state = self.state.lock();
        while state.unsynced > 0 && state.unsynced + count > self.limit {
            self.wait(&mut state);
        }
        if !state.guarded {
            history.guard_unsynced(self.limit as u64)?;
            state.guarded = true;
        }
        state.unsynced += count;
        Ok(())
    }

    fn wait(&self, state: &mut parking_lot::MutexGuard<'_, WindowState>) {
        state.blocked += 1;
        self.changed.wait(state);
        state.blocked -= 1;
    }

    /// How many threads wait for the fsync to catch up.
    pub fn blocked(&self) -> usize {
        self.state.lock().blocked
    }

    /// `count` messages are durable (or failed).
    pub fn release(&self, count: usize) {
        let mut state = self.state.lock();
        state.unsynced = state.unsynced.saturating_sub(count);
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until everything written is synced, then lifts the store's
    /// guard: a restart after this needs no skip. A later write puts it back.
    pub fn settle(&self, history: &dyn HistoryStore) -> Result<(), HistoryError> {
        let mut state = self.state.lock();
        while state.unsynced > 0 {
            self.wait(&mut state);
        }
        if state.guarded {
            history.lift_unsynced_guard()?;
            state.guarded = false;
        }
        Ok(())
    }
}

/// A delivered batch waiting for its fsync before its acks go out.
pub struct Unsynced {
    pub publications: Vec<Arc<Publication>>,
    pub acks: Vec<AckTarget>,
}

/// The fsync thread: takes every batch the writer delivered since its last
/// fsync, makes them durable with one, then acknowledges them in order.
/// Ends when the writer drops its sender.
pub fn run_syncer(
    batches: mpsc::Receiver<Unsynced>,
    history: Arc<dyn HistoryStore>,
    window: Arc<SyncWindow>,
) {
    while let Ok(first) = batches.recv() {
        let mut pending = vec![first];
        pending.extend(batches.try_iter());
        let synced = history.sync_blocking().map_err(Arc::new);
        if let Err(error) = &synced {
            tracing::error!("fsync of delivered messages failed: {error}");
        }
        let mut count = 0;
        for batch in pending {
            count += batch.acks.len();
            for (publication, ack) in batch.publications.iter().zip(batch.acks) {
                match &synced {
                    Ok(()) => ack.succeed(publication),
                    Err(error) => ack.fail(error),
                }
            }
        }
        window.release(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{SqliteHistory, UNSYNCED_GUARD_FILE};
    use std::time::Duration;

    /// Waits (bounded) until a thread is parked on the window.
    fn wait_until_blocked(window: &SyncWindow) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while window.blocked() == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing blocked");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_window_holds_the_writer_until_the_fsync_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HistoryStore> = Arc::new(SqliteHistory::open(dir.path()).unwrap());
        let window = Arc::new(SyncWindow::new(4));
        window.reserve(3, &*store).unwrap();
        assert!(dir.path().join(UNSYNCED_GUARD_FILE).exists());
        let writer = {
            let (window, store) = (window.clone(), store.clone());
            // 3 + 2 > 4: waits for a release.
            std::thread::spawn(move || window.reserve(2, &*store).unwrap())
        };
        wait_until_blocked(&window);
        assert!(!writer.is_finished());
        window.release(3);
        writer.join().unwrap();
        // Settling waits for the last two, then lifts the guard.
        let settled = {
            let (window, store) = (window.clone(), store.clone());
            std::thread::spawn(move || window.settle(&*store).unwrap())
        };
        wait_until_blocked(&window);
        assert!(dir.path().join(UNSYNCED_GUARD_FILE).exists());
        window.release(2);
        settled.join().unwrap();
        assert!(!dir.path().join(UNSYNCED_GUARD_FILE).exists());
    }

    #[test]
    fn policies_parse_by_their_names() {
        for name in SyncPolicy::NAMES {
            assert_eq!(name.parse::<SyncPolicy>().unwrap().name(), name);
        }
        assert!("sometimes".parse::<SyncPolicy>().is_err());
        assert_eq!(SyncPolicy::default(), SyncPolicy::BeforeDelivery);
    }
}

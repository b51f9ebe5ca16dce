//! Wake-ups held back while a batch is delivered ([`defer_wakes`]), then
//! woken, or written through the connections' lent sockets, once the
//! caller lets them go.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use super::Outbox;
use crate::pipeline::FanOut;

thread_local! {
    /// Wake-ups held back by [`defer_wakes`] on this thread.
    static DEFERRED_WAKES: RefCell<Option<Vec<Held>>> = const { RefCell::new(None) };
}

/// A connection to see to once [`HeldWakes::wake_all`] runs.
#[derive(Debug)]
enum Held {
    /// Its task, to write what was queued.
    Task(Waker),
    /// An outbox with a lent socket: written through, its task woken only
    /// for what does not fit.
    WriteThrough(Arc<Outbox>),
}

/// Runs `queue` (pushes into outboxes) holding back the wake-ups and socket
/// writes it causes, and returns them: the caller can let other tasks run
/// first. The group commit uses it so that publishers, woken for their
/// `ack`, go ahead of the thousand subscribers the message is written to;
/// the frames themselves are queued in the same order either way.
pub fn defer_wakes(queue: impl FnOnce()) -> HeldWakes {
    let outer = DEFERRED_WAKES.with_borrow_mut(|deferred| deferred.replace(Vec::new()));
    queue();
    let held = DEFERRED_WAKES.with_borrow_mut(|deferred| std::mem::replace(deferred, outer));
    HeldWakes(held.unwrap_or_default())
}

/// Wake-ups held back by [`defer_wakes`]; woken (or written through) on
/// [`HeldWakes::wake_all`] or when dropped, so none is ever lost.
#[derive(Debug)]
#[must_use = "held wake-ups must be woken"]
pub struct HeldWakes(Vec<Held>);

/// Most connections one thread writes through in a row: a bigger fan-out
/// is shared with the runtime's threads, so it is written on every core
/// and the delivering thread is soon free for the next batch.
const WRITE_THROUGH_SHARE: usize = 256;

impl HeldWakes {
    pub fn wake_all(mut self) {
        self.wake_remaining(true);
    }

    /// [`HeldWakes::wake_all`], with all but the first share of a big
    /// fan-out handed to tasks on `runtime`. `fan_out` is told how many
    /// shares there are and hears when each wrote its first and last socket.
    pub(crate) fn wake_all_sharing(
        mut self,
        runtime: &tokio::runtime::Handle,
        fan_out: impl FnOnce(usize) -> Arc<FanOut>,
    ) {
        if self.0.is_empty() {
            return;
        }
        let fan_out = fan_out(self.0.len().div_ceil(WRITE_THROUGH_SHARE));
        while self.0.len() > WRITE_THROUGH_SHARE {
            let share = HeldWakes(self.0.split_off(self.0.len() - WRITE_THROUGH_SHARE));
            let fan_out = fan_out.clone();
            runtime.spawn(async move { share.write_timed(&fan_out) });
        }
        self.write_timed(&fan_out);
    }

    fn write_timed(mut self, fan_out: &FanOut) {
        let first = Instant::now();
        self.wake_remaining(true);
        fan_out.share_done(first, Instant::now());
    }

    /// Wakes every connection's task and writes nothing through: each task
    /// writes what its outbox holds when it runs.
    pub fn wake_tasks(mut self) {
        self.wake_remaining(false);
    }

    /// [`HeldWakes::wake_tasks`], reporting the wake-ups to `fan_out` as
    /// one share.
    pub(crate) fn wake_tasks_timed(mut self, fan_out: impl FnOnce(usize) -> Arc<FanOut>) {
        if self.0.is_empty() {
            return;
        }
        let fan_out = fan_out(1);
        let first = Instant::now();
        self.wake_remaining(false);
        fan_out.share_done(first, Instant::now());
    }

    fn wake_remaining(&mut self, write_through: bool) {
        for held in self.0.drain(..) {
            match held {
                Held::Task(waker) => waker.wake(),
                Held::WriteThrough(outbox) if write_through => outbox.write_through_or_wake(),
                Held::WriteThrough(outbox) => outbox.waker.wake(),
            }
        }
    }
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        self.wake_remaining(true);
    }
}

/// Holds back `outbox`'s wake-up if this thread is inside [`defer_wakes`]
/// (as a write-through, with a lent socket); false if it is not.
pub(super) fn hold(outbox: &Arc<Outbox>, lent_socket: bool) -> bool {
    DEFERRED_WAKES.with_borrow_mut(|deferred| match deferred {
        Some(held) if lent_socket => {
            held.push(Held::WriteThrough(outbox.clone()));
            true
        }
        Some(held) => {
            held.extend(outbox.waker.take().map(Held::Task));
            true
        }
        None => false,
    })
}

//! The per-connection outbound queue that other tasks fill and the
//! connection's own task drains.
//!
//! Frames are shared [`Bytes`]: a message broadcast to many connections is
//! encoded once and every outbox holds a reference to the same buffer. The
//! queue is bounded in bytes; what happens when it is full is the caller's
//! policy (a lagging subscriber is disconnected, never waited for).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_ws::CloseFrame;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("outbox full: the connection is not keeping up")]
    Full,
    #[error("connection closed")]
    Closed,
}

thread_local! {
    /// Wake-ups held back by [`defer_wakes`] on this thread.
    static DEFERRED_WAKES: RefCell<Option<Vec<Waker>>> = const { RefCell::new(None) };
}

/// Runs `queue` (pushes into outboxes) holding back the wake-ups it causes,
/// and returns them: the caller can let other tasks run first. The group
/// commit uses it so that publishers, woken for their `ack`, go ahead of
/// the thousand subscribers woken for the message; the frames themselves
/// are queued in the same order either way.
pub fn defer_wakes(queue: impl FnOnce()) -> HeldWakes {
    let outer = DEFERRED_WAKES.with_borrow_mut(|deferred| deferred.replace(Vec::new()));
    queue();
    let held = DEFERRED_WAKES.with_borrow_mut(|deferred| std::mem::replace(deferred, outer));
    HeldWakes(held.unwrap_or_default())
}

/// Wake-ups held back by [`defer_wakes`]; woken on [`HeldWakes::wake_all`]
/// or when dropped, so none is ever lost.
#[derive(Debug)]
#[must_use = "held wake-ups must be woken"]
pub struct HeldWakes(Vec<Waker>);

impl HeldWakes {
    pub fn wake_all(mut self) {
        self.wake_remaining();
    }

    fn wake_remaining(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        self.wake_remaining();
    }
}

/// A bounded queue of encoded frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// The connection task, woken when the queue becomes non-empty.
    waker: AtomicWaker,
    /// Most bytes [`Outbox::try_push`] lets wait here.
    max_bytes: usize,
    /// Wakes [`Outbox::push_when_room`] once the connection takes frames,
    /// and [`Outbox::closing`] on a close.
    room: Notify,
    /// Set while someone waits on `room`, so draining costs nothing otherwise.
    waiting_for_room: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// A close requested from outside (shutdown, slow consumer); sent after
    /// the frames already queued.
    close: Option<CloseFrame>,
    /// The connection has ended; nothing more is accepted.
    closed: bool,
}

/// What the connection task took from its outbox.
#[derive(Debug, Default)]
pub struct Taken {
    pub bytes: usize,
    pub close: Option<CloseFrame>,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            max_bytes,
            room: Notify::new(),
            waiting_for_room: AtomicBool::new(false),
        }
    }

    /// Queues a frame, waiting while the queue is full: for a stream the
    /// caller paces itself (history replay), not for broadcast.
    pub async fn push_when_room(&self, frame: Bytes) -> Result<(), PushError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.waiting_for_room.store(true, Ordering::SeqCst);
            match self.try_push(frame.clone()) {
                Err(PushError::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Queues a frame unless `max_bytes` are already waiting.
    pub fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.closed || state.close.is_some() {
            return Err(PushError::Closed);
        }
        if state.bytes + frame.len() > self.max_bytes && !state.frames.is_empty() {
            return Err(PushError::Full);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        // One wake per batch: the task drains everything queued when it runs.
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// Wakes the connection task now, or later if this thread is inside
    /// [`defer_wakes`].
    fn wake(&self) {
        let deferred = DEFERRED_WAKES.with_borrow_mut(|deferred| match deferred {
            Some(wakers) => {
                wakers.extend(self.waker.take());
                true
            }
            None => false,
        });
        if !deferred {
            self.waker.wake();
        }
    }

    /// Asks the connection to close with `frame` once what is queued is sent.
    /// The first request wins.
    pub fn close(&self, frame: CloseFrame) {
        let mut state = self.state.lock();
        if state.closed || state.close.is_some() {
            return;
        }
        state.close = Some(frame);
        drop(state);
        self.waker.wake();
        // Frees replays waiting for room, and wakes `closing`.
        self.room.notify_waiters();
    }

    /// Resolves once a close has been requested or the connection has ended.
    pub async fn closing(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Moves every queued frame to the back of `into`; `Pending` (with the
    /// task registered for a wake-up) when there is nothing to take. With
    /// `frames` false only a close request is taken: the connection is still
    /// writing its last batch, and frames stay here, counting against the
    /// bound, until it has room.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
        frames: bool,
    ) -> Poll<Taken> {
        self.waker.register(cx.waker());
        let mut state = self.state.lock();
        let close = state.close.take();
        if close.is_none() && (!frames || state.frames.is_empty()) {
            return Poll::Pending;
        }
        // A close follows everything queued before it.
        let taken = Taken {
            bytes: std::mem::take(&mut state.bytes),
            close,
        };
        if into.is_empty() {
            // Swap rather than copy: the emptied deque keeps its capacity here.
            std::mem::swap(into, &mut state.frames);
        } else {
            into.extend(state.frames.drain(..));
        }
        if taken.close.is_some() {
            state.closed = true;
        }
        drop(state);
        if self.waiting_for_room.swap(false, Ordering::SeqCst) {
            self.room.notify_waiters();
        }
        Poll::Ready(taken)
    }

    /// Marks the connection as gone: later pushes fail with [`PushError::Closed`].
    pub fn mark_closed(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
        drop(state);
        self.room.notify_waiters();
    }

    /// Whether the connection has ended or is closing.
    pub fn is_closed(&self) -> bool {
        let state = self.state.lock();
        state.closed || state.close.is_some()
    }

    /// The byte bound of [`Outbox::try_push`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use switchboard_ws::CloseCode;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    /// An empty outbox whose task (`cx`) waits for a frame.
    fn waiting_outbox(cx: &mut Context<'_>) -> (Outbox, VecDeque<Bytes>) {
        let outbox = Outbox::new(100);
        let mut taken = VecDeque::new();
        assert!(outbox.poll_take(cx, &mut taken, true).is_pending());
        (outbox, taken)
    }

    #[test]
    fn refuses_frames_past_the_byte_limit() {
        let outbox = Outbox::new(10);
        outbox.try_push(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"123456")),
            Err(PushError::Full)
        );
        assert_eq!(outbox.queued_bytes(), 6);
    }

    #[test]
    fn a_single_oversized_frame_still_fits_an_empty_queue() {
        let outbox = Outbox::new(4);
        outbox.try_push(Bytes::from_static(b"123456")).unwrap();
    }

    #[test]
    fn wakes_once_per_batch_and_hands_over_everything() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, mut taken) = waiting_outbox(&mut cx);
        outbox.try_push(Bytes::from_static(b"a")).unwrap();
        outbox.try_push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(t) = outbox.poll_take(&mut cx, &mut taken, true) else {
            panic!("frames were queued")
        };
        assert_eq!(t.bytes, 2);
        assert_eq!(taken, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn deferred_wakes_come_when_released() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, _taken) = waiting_outbox(&mut cx);
        let held = defer_wakes(|| outbox.try_push(Bytes::from_static(b"a")).unwrap());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        assert_eq!(outbox.queued_bytes(), 1, "queued at once");
        held.wake_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn frames_wait_while_the_connection_is_busy_but_a_close_does_not() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let outbox = Outbox::new(100);
        let mut taken = VecDeque::new();
        outbox.try_push(Bytes::from_static(b"a")).unwrap();
        assert!(outbox.poll_take(&mut cx, &mut taken, false).is_pending());
        assert_eq!(outbox.queued_bytes(), 1);
        outbox.close(CloseFrame::new(CloseCode::TRY_AGAIN_LATER, "slow"));
        assert!(outbox.poll_take(&mut cx, &mut taken, false).is_ready());
        assert_eq!(taken.len(), 1);
    }

    #[test]
    fn close_comes_after_queued_frames_and_stops_pushes() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let outbox = Outbox::new(100);
        outbox.try_push(Bytes::from_static(b"a")).unwrap();
        outbox.close(CloseFrame::new(CloseCode::GOING_AWAY, "bye"));
        outbox.close(CloseFrame::new(CloseCode::NORMAL, "ignored"));
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"b")),
            Err(PushError::Closed)
        );
        let mut taken = VecDeque::new();
        let Poll::Ready(t) = outbox.poll_take(&mut cx, &mut taken, true) else {
            panic!("a close was requested")
        };
        assert_eq!(t.close.unwrap().code, CloseCode::GOING_AWAY);
        assert_eq!(taken.len(), 1);
    }
}

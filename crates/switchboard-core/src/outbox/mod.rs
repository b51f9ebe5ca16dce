//! The per-connection outbound queue that other tasks fill and the
//! connection's own task drains.
//!
//! Frames are shared [`Bytes`]: a message broadcast to many connections is
//! encoded once and every outbox holds a reference to the same buffer. The
//! queue is bounded in bytes; what happens when it is full is the caller's
//! policy (a lagging subscriber is disconnected, never waited for).
//!
//! A plain TCP connection can also lend its socket to the outbox: a
//! broadcast then writes straight into every socket whose connection has
//! nothing else being written, from the thread that delivers, instead of
//! waking a thousand tasks to make one small write each. Whatever does not
//! fit stays queued, and only then is the task woken to finish it.
//!
//! The outbox holds the lent socket by ownership (a shared handle on the
//! connection's stream): while it can write, the descriptor cannot be
//! closed and reused by another connection.
//!
//! ## Locks
//! One lock per outbox, its `State`. It may be taken while holding a hub
//! shard (the hub pushes under its shard lock), never the other way round,
//! and nothing else is locked under it. Under it, [`Outbox::try_push`]
//! only queues and wakes a task. The one place bytes are sent under it is
//! the write-through of [`HeldWakes`] (`State::write_through`): a
//! non-blocking `send` on the connection's own socket, which is what
//! orders it against the connection task's writes; it runs after the
//! hub's lock is released ([`defer_wakes`] returns first), so a full
//! socket delays no other connection.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

mod deferred;
mod write_through;

pub use deferred::{HeldWakes, defer_wakes};

use atomic_waker::AtomicWaker;
use bytes::Bytes;

use crate::channel::ChannelName;
use parking_lot::Mutex;
use switchboard_ws::{CloseCode, CloseFrame};
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("outbox full: the connection is not keeping up")]
    Full,
    #[error("connection closed")]
    Closed,
}

/// Positions an emptied outbox may keep room for.
const SMALL_QUEUE: usize = 16;

/// Frames an emptied queue keeps room for once a small batch follows a
/// burst, or once the connection's task finds nothing more to take: a
/// burst (a run of presence events) leaves no room behind on an idle
/// connection (32 bytes a slot), while a stream of big batches, which finds
/// the next frames waiting, keeps its room and allocates nothing.
pub const KEPT_FRAME_SLOTS: usize = 8;

/// A connection's socket, shared with its outbox for writing through: an
/// owning handle, so the descriptor stays open while the outbox has it.
pub type LentSocket = Arc<dyn AsFd + Send + Sync>;

/// A bounded queue of encoded frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    /// Taken after a hub shard's lock, if any; nothing is locked under it.
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
    /// Keeps each frame's [`Position`] beside it ([`Outbox::keeping_positions`]).
    keeps_positions: bool,
    /// Counts this connection if it is closed as a slow consumer.
    slow_consumers: Option<prometheus::IntCounter>,
}

/// Where a queued message stands in its channel. An SSE stream of several
/// channels writes every channel's position back to its client after each
/// message, so its outbox keeps each frame's position beside the frame.
pub type Position = (ChannelName, u64);

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// A close requested from outside (shutdown, slow consumer); sent after
    /// the frames already queued.
    /// Boxed: rare, and every idle connection would hold its room.
    close: Option<Box<CloseFrame>>,
    /// The connection has ended; nothing more is accepted.
    closed: bool,
    /// The plain TCP socket the connection lends for writing through,
    /// until it takes it back (closing) or ends.
    socket: Option<LentSocket>,
    /// The connection task is writing frames of its own: only it writes.
    task_writing: bool,
    /// The front frame is partly written: the rest goes before anything else.
    front_started: bool,
    /// Something was written through since [`Outbox::take_wrote_through`].
    wrote_through: bool,
    /// With `keeps_positions`: one entry per frame in `frames`, in order
    /// (`None` for frames that are not messages).
    /// Boxed on purpose: every other outbox pays one word for it, not a
    /// whole (empty) deque.
    #[allow(clippy::box_collection)]
    positions: Option<Box<VecDeque<Option<Position>>>>,
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
            keeps_positions: false,
            slow_consumers: None,
        }
    }

    /// Counts in `counter` a close of this outbox as a slow consumer
    /// (code 1013), wherever it is decided.
    pub fn counting_slow_consumers(mut self, counter: prometheus::IntCounter) -> Self {
        self.slow_consumers = Some(counter);
        self
    }

    /// An outbox that keeps each message frame's position beside it, taken
    /// with [`Outbox::poll_take_positioned`]. It never lends a socket.
    pub fn keeping_positions(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                positions: Some(Box::default()),
                ..State::default()
            }),
            keeps_positions: true,
            ..Outbox::new(max_bytes)
        }
    }

    /// Whether pushes should say where a message stands (see [`Position`]).
    pub fn keeps_positions(&self) -> bool {
        self.keeps_positions
    }

    /// Queues a frame, waiting while the queue is full: for a stream the
    /// caller paces itself (history replay), not for broadcast.
    pub async fn push_when_room(self: &Arc<Self>, frame: Bytes) -> Result<(), PushError> {
        self.push_when_room_at(frame, None).await
    }

    /// [`Outbox::push_when_room`] of a message at `position`.
    pub async fn push_when_room_at(
        self: &Arc<Self>,
        frame: Bytes,
        position: Option<Position>,
    ) -> Result<(), PushError> {
        self.push_when_room_with(|| self.try_push_at(frame.clone(), position.clone()))
            .await
    }

    /// Calls `try_push` (which queues into this outbox) until it finds room.
    pub async fn push_when_room_with(
        &self,
        mut try_push: impl FnMut() -> Result<(), PushError>,
    ) -> Result<(), PushError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.waiting_for_room.store(true, Ordering::SeqCst);
            match try_push() {
                Err(PushError::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Queues a frame unless `max_bytes` are already waiting.
    pub fn try_push(self: &Arc<Self>, frame: Bytes) -> Result<(), PushError> {
        self.try_push_at(frame, None)
    }

    /// [`Outbox::try_push`] of a message at `position` (kept only by an
    /// outbox [keeping positions](Outbox::keeping_positions)).
    pub fn try_push_at(
        self: &Arc<Self>,
        frame: Bytes,
        position: Option<Position>,
    ) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.closed || state.close.is_some() {
            return Err(PushError::Closed);
        }
        if state.bytes + frame.len() > self.max_bytes && !state.frames.is_empty() {
            return Err(PushError::Full);
        }
        let was_empty = state.frames.is_empty();
        let lent_socket = state.socket.is_some();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        if let Some(positions) = &mut state.positions {
            positions.push_back(position);
        }
        drop(state);
        // One wake per batch: the task drains everything queued when it runs.
        if was_empty {
            self.wake(lent_socket);
        }
        Ok(())
    }

    /// Wakes the connection task now, or later if this thread is inside
    /// [`defer_wakes`]; then, with a lent socket, the queue is written
    /// through instead where it can be.
    fn wake(self: &Arc<Self>, lent_socket: bool) {
        if !deferred::hold(self, lent_socket) {
            self.waker.wake();
        }
    }

    /// Lends the connection's plain TCP socket for writing through, until
    /// [`Outbox::take_back_socket`] or [`Outbox::mark_closed`].
    pub fn lend_socket(&self, socket: LentSocket) {
        debug_assert!(
            !self.keeps_positions,
            "written through, positions would be lost"
        );
        self.state.lock().socket = Some(socket);
    }

    /// Takes the lent socket back to lend it to another outbox: for an
    /// outbox nothing was ever written through (it had no subscribers).
    pub fn hand_over_socket(&self) -> Option<LentSocket> {
        let mut state = self.state.lock();
        debug_assert!(!state.front_started, "a frame is partly written");
        state.socket.take()
    }

    /// Stops writing through (the connection is closing). Returns the rest
    /// of a frame left partly written, which must be sent before anything
    /// else.
    pub fn take_back_socket(&self) -> Option<Bytes> {
        let mut state = self.state.lock();
        state.socket = None;
        if !std::mem::take(&mut state.front_started) {
            return None;
        }
        let rest = state.frames.pop_front()?;
        state.bytes -= rest.len();
        Some(rest)
    }

    /// The connection task is about to write frames of its own: until
    /// [`Outbox::release_socket`], nothing is written through. Moves what is
    /// queued here (a partly written frame first) to the front of `into`,
    /// which holds nothing written yet, and returns its size in bytes.
    pub fn claim_socket(&self, into: &mut VecDeque<Bytes>) -> usize {
        let mut state = self.state.lock();
        state.task_writing = true;
        state.front_started = false;
        let bytes = std::mem::take(&mut state.bytes);
        for frame in state.frames.drain(..).rev() {
            into.push_front(frame);
        }
        bytes
    }

    /// The connection task is writing frames of its own and leaves what
    /// is queued here for later: nothing is written through until
    /// [`Outbox::release_socket`].
    pub fn hold_socket(&self) {
        self.state.lock().task_writing = true;
    }

    /// The connection task has written everything it took.
    pub fn release_socket(&self) {
        self.state.lock().task_writing = false;
    }

    /// Whether anything was written through since the last call: a task
    /// that keeps an idle connection alive (an SSE heartbeat) need not.
    pub fn take_wrote_through(&self) -> bool {
        std::mem::take(&mut self.state.lock().wrote_through)
    }

    /// Asks the connection to close with `frame` once what is queued is sent.
    /// The first request wins.
    pub fn close(&self, frame: CloseFrame) {
        let mut state = self.state.lock();
        if state.closed || state.close.is_some() {
            return;
        }
        if frame.code == CloseCode::TRY_AGAIN_LATER
            && let Some(counter) = &self.slow_consumers
        {
            counter.inc();
        }
        state.close = Some(Box::new(frame));
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
        debug_assert!(!self.keeps_positions, "use poll_take_positioned");
        self.take(cx, into, None, frames)
    }

    /// [`Outbox::poll_take`] of every frame and, into `positions`, each
    /// one's position: for an outbox [keeping positions](Outbox::keeping_positions).
    pub fn poll_take_positioned(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
        positions: &mut VecDeque<Option<Position>>,
    ) -> Poll<Taken> {
        self.take(cx, into, Some(positions), true)
    }

    fn take(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
        positions: Option<&mut VecDeque<Option<Position>>>,
        frames: bool,
    ) -> Poll<Taken> {
        self.waker.register(cx.waker());
        let mut state = self.state.lock();
        let close = state.close.take().map(|close| *close);
        if close.is_none() && (!frames || state.frames.is_empty()) {
            if state.frames.is_empty() && state.frames.capacity() > KEPT_FRAME_SLOTS {
                // Nothing queued: the connection goes idle, and the room a
                // burst made goes with it (a stream finds frames here).
                state.frames = VecDeque::new();
            }
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
        if into.len() <= KEPT_FRAME_SLOTS && state.frames.capacity() > KEPT_FRAME_SLOTS {
            // A small batch after a burst: its room goes (see write_through).
            state.frames = VecDeque::new();
        }
        if let (Some(into), Some(queued)) = (positions, state.positions.as_mut()) {
            into.extend(queued.drain(..));
            // Room for a burst is not kept while the connection idles.
            if queued.capacity() > SMALL_QUEUE {
                **queued = VecDeque::new();
            }
        }
        if taken.close.is_some() {
            state.closed = true;
        }
        state.task_writing = true;
        state.front_started = false;
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
        state.socket = None;
        state.frames = VecDeque::new();
        if let Some(positions) = &mut state.positions {
            **positions = VecDeque::new();
        }
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
mod tests;

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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
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
    /// fan-out handed to tasks on `runtime`.
    pub fn wake_all_sharing(mut self, runtime: &tokio::runtime::Handle) {
        while self.0.len() > WRITE_THROUGH_SHARE {
            let share = HeldWakes(self.0.split_off(self.0.len() - WRITE_THROUGH_SHARE));
            runtime.spawn(async move { share.wake_all() });
        }
        self.wake_remaining(true);
    }

    /// Wakes every connection's task and writes nothing through: each task
    /// writes what its outbox holds when it runs.
    pub fn wake_tasks(mut self) {
        self.wake_remaining(false);
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
    /// The plain TCP socket the connection lends for writing through; it is
    /// taken back (under this lock) before the socket can be closed.
    socket: Option<RawFd>,
    /// The connection task is writing frames of its own: only it writes.
    task_writing: bool,
    /// The front frame is partly written: the rest goes before anything else.
    front_started: bool,
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
    pub async fn push_when_room(self: &Arc<Self>, frame: Bytes) -> Result<(), PushError> {
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
    pub fn try_push(self: &Arc<Self>, frame: Bytes) -> Result<(), PushError> {
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
        let deferred = DEFERRED_WAKES.with_borrow_mut(|deferred| match deferred {
            Some(held) if lent_socket => {
                held.push(Held::WriteThrough(self.clone()));
                true
            }
            Some(held) => {
                held.extend(self.waker.take().map(Held::Task));
                true
            }
            None => false,
        });
        if !deferred {
            self.waker.wake();
        }
    }

    /// Lends the connection's plain TCP socket for writing through.
    ///
    /// The caller keeps `socket` open until it calls
    /// [`Outbox::take_back_socket`] or [`Outbox::mark_closed`].
    pub fn lend_socket(&self, socket: RawFd) {
        self.state.lock().socket = Some(socket);
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

    /// The connection task has written everything it took.
    pub fn release_socket(&self) {
        self.state.lock().task_writing = false;
    }

    /// Writes the queue straight into the lent socket if the task is not
    /// writing; wakes the task for whatever is left.
    fn write_through_or_wake(&self) {
        let mut state = self.state.lock();
        if let Some(socket) = state.writable_socket() {
            // Errors are left to the task: its own write meets them and ends
            // the connection.
            let _ = state.write_through(socket);
            if state.frames.is_empty() {
                drop(state);
                if self.waiting_for_room.swap(false, Ordering::SeqCst) {
                    self.room.notify_waiters();
                }
                return;
            }
        }
        drop(state);
        self.waker.wake();
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

/// Most frames handed to one `sendmsg`.
const MAX_IOVECS: usize = 64;

impl State {
    fn writable_socket(&self) -> Option<RawFd> {
        let open = !self.closed && self.close.is_none();
        self.socket.filter(|_| open && !self.task_writing)
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    fn write_through(&mut self, socket: RawFd) -> io::Result<()> {
        // SAFETY: a lent socket stays open until it is taken back, which
        // needs this state's lock, held by the caller for the whole write.
        let socket = unsafe { BorrowedFd::borrow_raw(socket) };
        let socket = socket2::SockRef::from(&socket);
        while !self.frames.is_empty() {
            let written = if self.frames.len() == 1 {
                socket.send_with_flags(&self.frames[0], libc::MSG_NOSIGNAL)?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                    *slot = IoSlice::new(frame);
                }
                let count = self.frames.len().min(MAX_IOVECS);
                socket.send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL)?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        Ok(())
    }

    /// Drops `written` bytes from the front; a frame written in part keeps
    /// its rest at the front.
    fn advance(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let front = self.frames.front_mut().expect("wrote more than queued");
            if written < front.len() {
                *front = front.slice(written..);
                self.front_started = true;
                return;
            }
            written -= front.len();
            self.frames.pop_front();
            self.front_started = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
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
    fn waiting_outbox(cx: &mut Context<'_>) -> (Arc<Outbox>, VecDeque<Bytes>) {
        let outbox = Arc::new(Outbox::new(100));
        let mut taken = VecDeque::new();
        assert!(outbox.poll_take(cx, &mut taken, true).is_pending());
        (outbox, taken)
    }

    #[test]
    fn refuses_frames_past_the_byte_limit() {
        let outbox = Arc::new(Outbox::new(10));
        outbox.try_push(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"123456")),
            Err(PushError::Full)
        );
        assert_eq!(outbox.queued_bytes(), 6);
    }

    #[test]
    fn a_single_oversized_frame_still_fits_an_empty_queue() {
        let outbox = Arc::new(Outbox::new(4));
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
        let outbox = Arc::new(Outbox::new(100));
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
        let outbox = Arc::new(Outbox::new(100));
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

    /// An outbox lending one end of a socket pair, whose task (`cx`) waits
    /// for frames; the other end is what the peer reads.
    fn lending_outbox(cx: &mut Context<'_>) -> (Arc<Outbox>, UnixStream, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let outbox = Arc::new(Outbox::new(8 << 20));
        assert!(
            outbox
                .poll_take(cx, &mut VecDeque::new(), true)
                .is_pending()
        );
        outbox.lend_socket(ours.as_raw_fd());
        (outbox, ours, peer)
    }

    /// Everything the peer can read right now.
    fn read_now(peer: &mut UnixStream) -> Vec<u8> {
        let mut read = Vec::new();
        let mut chunk = [0; 64 * 1024];
        loop {
            match peer.read(&mut chunk) {
                Ok(0) => return read,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return read,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn broadcast(outbox: &Arc<Outbox>, frames: &[Bytes]) {
        defer_wakes(|| {
            for frame in frames {
                outbox.try_push(frame.clone()).unwrap();
            }
        })
        .wake_all();
    }

    #[test]
    fn a_broadcast_is_written_through_a_lent_socket_without_waking_the_task() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
        broadcast(
            &outbox,
            &[Bytes::from_static(b"one,"), Bytes::from_static(b"two")],
        );
        assert_eq!(read_now(&mut peer), b"one,two");
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "the task slept on");
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn waking_the_tasks_writes_nothing_through() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
        defer_wakes(|| outbox.try_push(Bytes::from_static(b"one")).unwrap()).wake_tasks();
        assert_eq!(read_now(&mut peer), b"", "left to the task");
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is told");
        let mut taken = VecDeque::new();
        assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
        assert_eq!(taken, [Bytes::from_static(b"one")]);
    }

    #[test]
    fn frames_wait_for_the_task_while_it_writes_its_own() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
        let mut own = VecDeque::from([Bytes::from_static(b"pong")]);
        assert_eq!(outbox.claim_socket(&mut own), 0);
        broadcast(&outbox, &[Bytes::from_static(b"message")]);
        assert_eq!(read_now(&mut peer), b"", "only the task writes now");
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is told");
        outbox.release_socket();
        let mut taken = VecDeque::new();
        assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
        assert_eq!(taken, [Bytes::from_static(b"message")]);
        // Taking frames claims the socket until the task releases it.
        broadcast(&outbox, &[Bytes::from_static(b"later")]);
        assert_eq!(read_now(&mut peer), b"");
        outbox.release_socket();
        assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
        outbox.release_socket();
        broadcast(&outbox, &[Bytes::from_static(b"last")]);
        assert_eq!(read_now(&mut peer), b"last");
    }

    #[test]
    fn the_rest_of_a_frame_that_did_not_fit_goes_first_and_wakes_the_task() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
        let big: Vec<u8> = (0..4 << 20).map(|i| i as u8).collect();
        broadcast(
            &outbox,
            &[Bytes::from(big.clone()), Bytes::from_static(b"next")],
        );
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task finishes it");
        let written = read_now(&mut peer);
        assert!(
            !written.is_empty() && written.len() < big.len(),
            "{}",
            written.len()
        );
        assert_eq!(outbox.queued_bytes(), big.len() - written.len() + 4);
        // Its own frames go after the rest of the broadcast.
        let mut own = VecDeque::from([Bytes::from_static(b"pong")]);
        let claimed = outbox.claim_socket(&mut own);
        assert_eq!(claimed, big.len() - written.len() + 4);
        let sent: Vec<u8> = written
            .into_iter()
            .chain(own.iter().flatten().copied())
            .collect();
        assert_eq!(&sent[..big.len()], &big[..]);
        assert_eq!(&sent[big.len()..], b"nextpong");
    }

    #[test]
    fn taking_the_socket_back_hands_over_a_partly_written_frame() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
        let big = Bytes::from(vec![7u8; 4 << 20]);
        broadcast(&outbox, &[big.clone(), Bytes::from_static(b"whole")]);
        let written = read_now(&mut peer).len();
        let rest = outbox.take_back_socket().expect("a frame was cut");
        assert_eq!(rest, big.slice(written..));
        assert_eq!(outbox.queued_bytes(), 5, "whole frames stay queued");
        assert_eq!(outbox.take_back_socket(), None);
        broadcast(&outbox, &[]);
        outbox.try_push(Bytes::from_static(b"unwritten")).unwrap();
        assert_eq!(
            read_now(&mut peer),
            b"",
            "nothing is written through any more"
        );
    }
}

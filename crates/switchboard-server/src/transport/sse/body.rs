//! The response body of an event stream, in one of two modes: chunks handed
//! to hyper ([`HyperBody`]), or, for a stream of one channel on a plain
//! HTTP/1.1 connection, a body that takes the connection over from hyper
//! once its head is out, writes itself in a task of its own and lends the
//! socket to its outbox ([`SocketBody`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use switchboard_core::outbox::{LentSocket, Outbox, Position, Taken};
use switchboard_core::wire::{EventIds, http_chunk};
use switchboard_proto::sse;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use super::cursor::StreamCursor;
use crate::socket::{OwnedBody, RawBody, SocketLoan};
use crate::transport::outbox_writer::{OutboxWriter, Wrote};

/// What both modes share: the outbox the hub fills, the heartbeat, and
/// whatever must end with the stream.
pub(super) struct Feed {
    pub(super) outbox: Arc<Outbox>,
    heartbeat: Pin<Box<Sleep>>,
    heartbeat_every: Duration,
    /// A close was taken: what was queued before it is the last.
    finished: bool,
    /// Dropped with the body: stops the helper tasks, leaves the channels,
    /// unregisters the stream.
    _ends_with_it: Box<dyn Send + Sync>,
}

impl Feed {
    pub(super) fn new(
        outbox: Arc<Outbox>,
        heartbeat_every: Duration,
        ends_with_it: Box<dyn Send + Sync>,
    ) -> Self {
        Feed {
            outbox,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_every)),
            heartbeat_every,
            finished: false,
            _ends_with_it: ends_with_it,
        }
    }

    /// Something was sent: the next heartbeat is a full interval away.
    fn sent(&mut self) {
        let next = Instant::now() + self.heartbeat_every;
        self.heartbeat.as_mut().reset(next);
    }

    /// Whether the stream has been silent for a heartbeat interval.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> bool {
        if self.heartbeat.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.sent();
        true
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.outbox.mark_closed();
    }
}

/// Events taken from an outbox and joined into one chunk's data; a stream
/// of several channels gets an id-only block with every channel's position
/// after each message event.
pub(super) struct EventChunks {
    taken: VecDeque<Bytes>,
    /// Beside `taken`, for a stream of several channels: each message's
    /// position, as the hub queued it.
    positions: VecDeque<Option<Position>>,
    cursor: StreamCursor,
}

impl EventChunks {
    pub(super) fn new(cursor: StreamCursor) -> Self {
        EventChunks {
            taken: VecDeque::new(),
            positions: VecDeque::new(),
            cursor,
        }
    }

    /// Takes what the outbox holds (and a close asked for); `frames` false
    /// takes only a close.
    fn poll_take(&mut self, outbox: &Outbox, cx: &mut Context<'_>, frames: bool) -> Poll<Taken> {
        if frames && outbox.keeps_positions() {
            outbox.poll_take_positioned(cx, &mut self.taken, &mut self.positions)
        } else {
            outbox.poll_take(cx, &mut self.taken, frames)
        }
    }

    /// Everything taken from the outbox as one chunk's data.
    fn chunk(&mut self, bytes: usize) -> Bytes {
        if self.taken.len() == 1 && self.cursor.ids == EventIds::Offset {
            return self.taken.pop_front().expect("one frame");
        }
        let mut chunk = BytesMut::with_capacity(bytes + 64);
        while let Some(frame) = self.taken.pop_front() {
            chunk.extend_from_slice(&frame);
            if let Some(Some((channel, offset))) = self.positions.pop_front() {
                let block = self.cursor.after_message(&channel, offset);
                chunk.extend_from_slice(block.as_bytes());
            }
        }
        // A burst (joins announced to a big room) must not leave an idle
        // stream holding deques sized for it.
        if self.taken.capacity() > SMALL_QUEUE {
            self.taken = VecDeque::new();
            self.positions = VecDeque::new();
        }
        chunk.freeze()
    }
}

/// Frames an idle stream's emptied deques may keep room for.
const SMALL_QUEUE: usize = 16;

/// A body whose chunks hyper writes: everything queued goes out as one
/// chunk per wake-up.
pub(super) struct HyperBody {
    feed: Feed,
    events: EventChunks,
}

impl HyperBody {
    pub(super) fn new(feed: Feed, cursor: StreamCursor) -> Self {
        HyperBody {
            feed,
            events: EventChunks::new(cursor),
        }
    }
}

impl http_body::Body for HyperBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.feed.finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(result) = this.events.poll_take(&this.feed.outbox, cx, true) {
            // A close (shutdown, slow consumer) ends the stream after what
            // was queued before it; the client reconnects and resumes.
            this.feed.finished = result.close.is_some();
            if this.events.taken.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = this.events.chunk(result.bytes);
            this.feed.sent();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.feed.poll_silence(cx) {
            let ping = Bytes::from_static(sse::HEARTBEAT.as_bytes());
            return Poll::Ready(Some(Ok(Frame::data(ping))));
        }
        Poll::Pending
    }
}

/// The body of a stream of one channel on a plain HTTP/1.1 connection. It
/// waits for hyper to send the head, then takes the connection over (as
/// an upgrade would, see `RawBody::hand_off`) and carries on in a task of
/// its own as an [`OwnedStream`]: hyper's buffers for the connection
/// (16 KiB, more than everything else an idle stream holds) are freed for
/// a response that may last for days.
pub(super) struct SocketBody {
    loan: Option<SocketLoan>,
    raw: Option<RawBody>,
    /// Until the hand-off.
    handoff: Option<Handoff>,
}

/// What the stream's own task is started with.
pub(super) struct Handoff {
    pub(super) feed: Feed,
    /// Where the task is tracked, so a shutdown waits for its last chunk.
    pub(super) tasks: TaskTracker,
    /// How long a closing stream may take to write what is queued before
    /// it is dropped (a client that stopped reading).
    pub(super) close_timeout: Duration,
    /// For a stream of several channels: its events, each message's
    /// position beside it, to be joined and framed as chunks here. A
    /// stream of one channel has none: the hub queues whole chunks, and
    /// they may be written through the socket lent to the outbox.
    pub(super) events: Option<EventChunks>,
}

impl SocketBody {
    pub(super) fn new(handoff: Handoff, loan: SocketLoan) -> Self {
        SocketBody {
            loan: Some(loan),
            raw: None,
            handoff: Some(handoff),
        }
    }
}

impl http_body::Body for SocketBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.raw.is_none() {
            let Some(raw) = this.loan.take().and_then(SocketLoan::into_raw_body) else {
                return Poll::Ready(Some(Err(io::Error::other("the connection is gone"))));
            };
            this.raw = Some(raw);
        }
        ready!(this.raw.as_mut().expect("set above").poll_head_out(cx));
        let (Some(raw), Some(handoff)) = (this.raw.take(), this.handoff.take()) else {
            return Poll::Ready(None);
        };
        let stream = OwnedStream::new(
            handoff.feed,
            raw.hand_off(),
            handoff.close_timeout,
            handoff.events,
        );
        let tasks = handoff.tasks;
        tasks.spawn(stream.run());
        // hyper drops its side of the connection on a body's error.
        Poll::Ready(Some(Err(OwnedBody::handed_off())))
    }
}

/// An event stream that owns its connection. With one channel, every event
/// is a whole chunk, written by the task or through the socket lent to the
/// outbox (the write-through protocol a WebSocket connection follows);
/// with several, the task joins what it takes into a chunk, with the
/// resume point after each message.
struct OwnedStream {
    feed: Feed,
    body: OwnedBody,
    writer: OutboxWriter,
    events: Option<EventChunks>,
    close_timeout: Duration,
    /// Set once a close was asked for: when the stream is dropped even if
    /// what was queued is not all written.
    close_deadline: Option<Pin<Box<Sleep>>>,
}

/// Takes what the outbox holds into the writer: as it is (whole chunks), or
/// joined by `events` into one chunk. New events only once the last batch
/// is written, as the writer does, so a client that stops reading leaves
/// them in the bounded outbox; a close is taken either way.
fn take(
    feed: &Feed,
    writer: &mut OutboxWriter,
    events: Option<&mut EventChunks>,
    cx: &mut Context<'_>,
) -> Poll<Taken> {
    let Some(events) = events else {
        return writer.poll_take(&feed.outbox, cx);
    };
    let taken = ready!(events.poll_take(&feed.outbox, cx, writer.is_empty()));
    if !events.taken.is_empty() {
        writer.push(http_chunk(&events.chunk(taken.bytes)));
    }
    Poll::Ready(taken)
}

/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl OwnedStream {
    fn new(
        feed: Feed,
        body: OwnedBody,
        close_timeout: Duration,
        events: Option<EventChunks>,
    ) -> Self {
        let lent: Option<LentSocket> = match events {
            None => Some(body.socket()),
            // Its events are taken with their positions, never written through.
            Some(_) => None,
        };
        let writer = OutboxWriter::new(&feed.outbox, lent);
        OwnedStream {
            feed,
            body,
            writer,
            events,
            close_timeout,
            close_deadline: None,
        }
    }

    /// Streams until a close was asked for and everything queued before it
    /// is written (then ends the body), or the client is gone, or the close
    /// timeout runs out.
    async fn run(mut self) {
        let ended = std::future::poll_fn(|cx| self.poll_stream(cx)).await;
        if ended.is_ok() {
            let last_chunk = self.body.stream().write_all(LAST_CHUNK);
            let _ = tokio::time::timeout(self.close_timeout, last_chunk).await;
        }
    }

    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.body.poll_client_gone(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        if self.close_deadline.is_none() && self.feed.outbox.is_closed() {
            self.close_deadline = Some(Box::pin(tokio::time::sleep(self.close_timeout)));
        }
        if let Some(deadline) = &mut self.close_deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let OwnedStream {
            feed,
            body,
            writer,
            events,
            ..
        } = self;
        loop {
            let mut progressed = false;
            if !feed.finished
                && let Poll::Ready(taken) = take(feed, writer, events.as_mut(), cx)
            {
                feed.finished = taken.close.is_some();
                feed.sent();
                progressed = true;
            }
            if feed.poll_silence(cx) {
                // Broadcasts written through kept the connection busy.
                let quiet = !feed.outbox.take_wrote_through();
                if quiet && writer.is_empty() && !feed.finished {
                    writer.push(http_chunk(sse::HEARTBEAT.as_bytes()));
                }
                progressed = true;
            }
            match writer.poll_write(&feed.outbox, body.stream(), cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) if feed.finished => return Poll::Ready(Ok(())),
                // Frames queued while the batch was written woke nobody.
                Poll::Ready(Ok(Wrote::Batch)) => progressed = true,
                Poll::Ready(Ok(Wrote::Nothing)) | Poll::Pending => {}
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

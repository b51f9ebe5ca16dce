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
use switchboard_core::outbox::{Outbox, Position};
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

/// A body whose chunks hyper writes: everything queued goes out as one
/// chunk per wake-up; a stream of several channels gets an id-only block
/// with every channel's position after each message event.
pub(super) struct HyperBody {
    feed: Feed,
    taken: VecDeque<Bytes>,
    /// Beside `taken`, for a stream of several channels: each message's
    /// position, as the hub queued it.
    positions: VecDeque<Option<Position>>,
    cursor: StreamCursor,
}

impl HyperBody {
    pub(super) fn new(feed: Feed, cursor: StreamCursor) -> Self {
        HyperBody {
            feed,
            taken: VecDeque::new(),
            positions: VecDeque::new(),
            cursor,
        }
    }

    /// Everything taken from the outbox as one chunk.
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
        chunk.freeze()
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
        let outbox = &this.feed.outbox;
        let poll = if outbox.keeps_positions() {
            outbox.poll_take_positioned(cx, &mut this.taken, &mut this.positions)
        } else {
            outbox.poll_take(cx, &mut this.taken, true)
        };
        if let Poll::Ready(result) = poll {
            // A close (shutdown, slow consumer) ends the stream after what
            // was queued before it; the client reconnects and resumes.
            this.feed.finished = result.close.is_some();
            if this.taken.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = this.chunk(result.bytes);
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
        let Handoff {
            feed,
            tasks,
            close_timeout,
        } = handoff;
        let stream = OwnedStream::new(feed, raw.hand_off(), close_timeout);
        tasks.spawn(stream.run());
        // hyper drops its side of the connection on a body's error.
        Poll::Ready(Some(Err(OwnedBody::handed_off())))
    }
}

/// An event stream that owns its connection: every event a whole chunk,
/// written by the task or through the socket lent to the outbox (the
/// write-through protocol a WebSocket connection follows).
struct OwnedStream {
    feed: Feed,
    body: OwnedBody,
    writer: OutboxWriter,
    close_timeout: Duration,
    /// Set once a close was asked for: when the stream is dropped even if
    /// what was queued is not all written.
    close_deadline: Option<Pin<Box<Sleep>>>,
}

/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl OwnedStream {
    fn new(feed: Feed, body: OwnedBody, close_timeout: Duration) -> Self {
        let writer = OutboxWriter::new(&feed.outbox, Some(body.socket()));
        OwnedStream {
            feed,
            body,
            writer,
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
            feed, body, writer, ..
        } = self;
        loop {
            let mut progressed = false;
            if !feed.finished
                && let Poll::Ready(taken) = writer.poll_take(&feed.outbox, cx)
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

//! The response body of an event stream, in one of two modes: chunks handed
//! to hyper ([`HyperBody`]), or, for a stream of one channel on a plain
//! HTTP/1.1 connection, a body that writes itself to the socket once its
//! head is out and lends the socket to its outbox ([`SocketBody`]).

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
use tokio::time::{Instant, Sleep};

use super::cursor::StreamCursor;
use crate::socket::{RawBody, SocketLoan};
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

/// A body that writes itself, every event a whole chunk: the socket, and
/// the task's side of the write-through protocol (the same as a WebSocket
/// connection's). hyper ends the response with the last chunk once it
/// returns.
pub(super) struct SocketBody {
    feed: Feed,
    /// Until the first poll, when hyper holds the response head.
    loan: Option<SocketLoan>,
    raw: Option<RawBody>,
    /// From the head on: broadcasts may be written through.
    writer: Option<OutboxWriter>,
}

impl SocketBody {
    pub(super) fn new(feed: Feed, loan: SocketLoan) -> Self {
        SocketBody {
            feed,
            loan: Some(loan),
            raw: None,
            writer: None,
        }
    }

    /// `Ready(Ok)` once the stream has ended: a close was asked for and
    /// everything queued before it is written.
    fn poll_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let SocketBody {
            feed,
            loan,
            raw,
            writer,
        } = self;
        if raw.is_none() {
            let body = loan.take().and_then(SocketLoan::into_raw_body);
            *raw = Some(body.ok_or_else(|| io::Error::other("the connection is gone"))?);
        }
        let raw = raw.as_mut().expect("set above");
        ready!(raw.poll_head_out(cx));
        let writer =
            writer.get_or_insert_with(|| OutboxWriter::new(&feed.outbox, Some(raw.socket())));
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
            match writer.poll_write(&feed.outbox, raw.stream(), cx) {
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

impl http_body::Body for SocketBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.poll_socket(cx).map(|ended| ended.err().map(Err))
    }
}

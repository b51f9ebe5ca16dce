//! A connection task's side of the write-through protocol, shared by the
//! WebSocket connection and the SSE body that writes itself.
//!
//! The outbox may write broadcasts straight into a lent socket from the
//! delivering thread while the task writes nothing. The task, in turn,
//! writes what the outbox queued when it could not write through, and its
//! own frames (replies, pings, heartbeats): before it does, it claims the
//! socket (moving anything still queued in the outbox, a partly written
//! frame first, ahead of its own), and once everything it took is
//! written it releases it again. It takes new frames only once its last
//! batch is out, so a peer that stops reading leaves them in the bounded
//! outbox; and when a batch finishes it takes again at once, since frames
//! queued meanwhile woke nobody (the outbox was not empty).

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use switchboard_core::outbox::{LentSocket, Outbox, Taken};
use tokio::io::AsyncWrite;

use crate::transport::send_queue::SendQueue;

/// What the task is writing, and whether it holds the lent socket.
#[derive(Debug, Default)]
pub struct OutboxWriter {
    /// Frames being written by the task.
    pub send: SendQueue,
    /// The socket is lent to the outbox (a plain TCP socket).
    lent: bool,
    /// Claimed back from the outbox while `send` holds frames.
    holds_socket: bool,
}

/// How a round of writing went.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    /// Nothing was waiting.
    Nothing,
    /// A batch was written out and the socket released: take again.
    Batch,
}

impl OutboxWriter {
    /// A writer for `outbox`, lending it `socket` for writing through.
    pub fn new(outbox: &Outbox, socket: Option<LentSocket>) -> Self {
        let lent = socket.is_some();
        if let Some(socket) = socket {
            outbox.lend_socket(socket);
        }
        OutboxWriter {
            send: SendQueue::default(),
            lent,
            holds_socket: false,
        }
    }

    /// Queues a frame of the task's own; the socket is claimed for it
    /// before the next write.
    pub fn push(&mut self, frame: Bytes) {
        self.send.push(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.send.is_empty()
    }

    /// Bytes the task has yet to write.
    pub fn queued_bytes(&self) -> usize {
        self.send.bytes
    }

    /// Takes what the outbox holds (and a close asked for), new frames only
    /// once the last batch is written.
    pub fn poll_take(&mut self, outbox: &Outbox, cx: &mut Context<'_>) -> Poll<Taken> {
        let take_frames = self.send.is_empty();
        let polled = outbox.poll_take(cx, &mut self.send.frames, take_frames);
        let Poll::Ready(taken) = polled else {
            if take_frames {
                // Idle now: the room of the last batch goes too.
                self.send.release_room();
            }
            return Poll::Pending;
        };
        self.send.bytes += taken.bytes;
        // Taking sets the outbox's "task is writing": nothing goes through
        // until the release.
        self.holds_socket = true;
        Poll::Ready(taken)
    }

    /// Claims the socket if the task has frames of its own, writes, and
    /// releases it once everything is out.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        outbox: &Outbox,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Wrote>> {
        if self.send.is_empty() {
            self.release(outbox);
            return Poll::Ready(Ok(Wrote::Nothing));
        }
        if self.lent && !self.holds_socket {
            self.send.bytes += outbox.claim_socket(&mut self.send.frames);
            self.holds_socket = true;
        }
        std::task::ready!(self.send.poll_write(io, cx))?;
        self.release(outbox);
        Poll::Ready(Ok(Wrote::Batch))
    }

    fn release(&mut self, outbox: &Outbox) {
        if self.holds_socket {
            if self.lent {
                outbox.release_socket();
            }
            self.holds_socket = false;
        }
    }

    /// Moves from `old` to `new`: the lent socket goes with it, and frames
    /// of the task's own still to write keep their place ahead of what
    /// `new` holds.
    pub fn switch_outbox(&mut self, old: &Outbox, new: &Outbox) {
        if self.holds_socket && self.lent {
            old.release_socket();
        }
        self.holds_socket = false;
        let socket = old.hand_over_socket();
        self.lent = socket.is_some();
        if let Some(socket) = socket {
            new.lend_socket(socket);
            if !self.send.is_empty() {
                // Part of a frame may be out: nothing is written through
                // until the rest is.
                new.hold_socket();
                self.holds_socket = true;
            }
        }
    }

    /// The connection is closing: nothing more is written through, and the
    /// rest of a frame left partly written goes out before anything else.
    pub fn take_back(&mut self, outbox: &Outbox) {
        if !self.lent {
            return;
        }
        if let Some(rest) = outbox.take_back_socket() {
            self.send.push_front(rest);
        }
        self.lent = false;
        self.holds_socket = false;
    }
}

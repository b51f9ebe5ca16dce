//! One WebSocket connection's task: reads and decodes client frames, hands
//! data messages to its handler, writes queued frames in batches, keeps the
//! peer alive with pings, and runs the close handshake.
//!
//! It is a single hand-written poll loop rather than separate reader and
//! writer tasks: one task per connection, no locks on the socket, and no
//! buffer held while the connection is idle (reads land in a per-thread
//! scratch buffer and are copied out only when a frame is in flight).
//!
//! A plain TCP socket is lent to the outbox, so broadcasts can be written
//! through without waking this task; the task claims the socket back
//! whenever it has frames of its own to write.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use switchboard_core::outbox::{LentSocket, Outbox};
use switchboard_core::wire::FrameEncoder;
use switchboard_ws::frame::{self, OpCode};
use switchboard_ws::{CloseCode, CloseFrame, DecoderConfig, Message, MessageDecoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::app::WsSettings;
use crate::transport::outbox_writer::{OutboxWriter, Wrote};
use crate::transport::send_queue::SendQueue;

/// What a WebSocket endpoint does with the messages its clients send.
pub trait MessageHandler: Send + Unpin + 'static {
    /// Called with each complete text or binary message. An `Err` closes the
    /// connection with that close frame.
    fn on_message(&mut self, message: Message, replies: &mut Replies<'_>)
    -> Result<(), CloseFrame>;

    /// Ready when the handler takes another message. While it is not (its
    /// work in flight is at its budget), the connection decodes and reads
    /// no further, and `cx` is woken once it is.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// How the connection proves its peer alive, asked at each keepalive
    /// tick (every ping interval).
    fn keepalive(&mut self) -> Keepalive {
        Keepalive::Ping
    }

    /// Whether the connection is subscribed to something, or otherwise
    /// worth keeping while its client says nothing: one that is not is
    /// closed after `--idle-timeout` of silence.
    fn is_subscribed(&self) -> bool {
        true
    }
}

/// What a connection does at a keepalive tick.
#[derive(Debug)]
pub enum Keepalive {
    /// Sends a WebSocket ping; silence until the ping timeout closes the
    /// connection ("ping timeout", 1001).
    Ping,
    /// Sends this frame instead (a protocol's own ping) on the same terms.
    Frame(Bytes),
    /// The peer pings on its own schedule: the connection closes when it
    /// has heard nothing for a whole tick, which then lasts the ping
    /// interval plus the ping timeout.
    PeerPings,
    /// Nothing this time.
    Skip,
    /// Closes the connection with this frame.
    Close(CloseFrame),
}

/// Lets a handler answer on its own connection, ahead of anything queued later.
pub struct Replies<'a> {
    queue: &'a mut SendQueue,
    encoder: FrameEncoder,
    adopt: &'a mut Option<Arc<Outbox>>,
    flush: &'a mut bool,
}

impl Replies<'_> {
    /// From now on the connection sends what `outbox` holds, instead of
    /// its own outbox (a long-polling session taken over by this
    /// WebSocket): the socket is lent to it, and the old outbox is closed.
    pub fn adopt_outbox(&mut self, outbox: Arc<Outbox>) {
        *self.adopt = Some(outbox);
    }

    pub fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        self.queue.push(self.encoder.encode(opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(OpCode::Text, text.as_bytes());
    }

    /// Writes what is queued before the next message is taken: what that
    /// message does may be seen elsewhere (by another request) at once,
    /// and must not be seen before these replies.
    pub fn flush_now(&mut self) {
        *self.flush = true;
    }
}

/// Bytes read per syscall into the shared scratch buffer.
const SCRATCH_SIZE: usize = 64 * 1024;
/// Growth step of a connection's own buffer while a frame is in flight.
const READ_CHUNK: usize = 4096;

thread_local! {
    /// Idle connections read here, so none needs a buffer of its own between frames.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// How a connection ended, for the log line.
#[derive(Debug)]
pub enum Ended {
    /// The close handshake ran: what each side sent (`None`: no status code).
    Closed {
        sent: Option<CloseFrame>,
        received: Option<Option<CloseFrame>>,
    },
    /// The peer dropped the TCP connection without a close frame (1006).
    Dropped,
    Io(io::Error),
}

enum Phase {
    Open {
        awaiting_pong: bool,
    },
    /// Our close frame is queued: flush it, shut the write side, then wait for
    /// the peer to hang up (bounded by the close timeout).
    Closing {
        write_shut: bool,
    },
}

/// The state of one WebSocket connection.
pub struct Connection<S, H> {
    io: S,
    /// Holds bytes only while a frame is partly received.
    read_buf: BytesMut,
    decoder: MessageDecoder,
    /// What this task writes, and its side of the write-through protocol.
    writer: OutboxWriter,
    outbox: Arc<Outbox>,
    encoder: FrameEncoder,
    handler: H,
    settings: Arc<WsSettings>,
    /// Next keepalive step while open; the hang-up deadline while closing.
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    /// The handler was not ready for the next message: input waits in
    /// `read_buf`, and nothing more is read, until it is.
    input_held: bool,
    /// Something was read since the last keepalive tick.
    heard: bool,
    /// When the last data message came in (or the connection opened).
    last_message: Instant,
    /// An outbox to switch to, set by the handler ([`Replies::adopt_outbox`]).
    adopt: Option<Arc<Outbox>>,
    /// The handler asked its replies out before the next message.
    flush_requested: bool,
    close_sent: Option<CloseFrame>,
    close_received: Option<Option<CloseFrame>>,
}

impl<S, H> Connection<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MessageHandler,
{
    /// `lent_socket` is a handle on `io`'s own plain TCP socket, if the
    /// outbox may write to it directly: the connection takes it back when
    /// it closes, and the outbox lets go of it when it ends.
    pub fn new(
        io: S,
        leftover: Bytes,
        settings: Arc<WsSettings>,
        encoder: FrameEncoder,
        outbox: Arc<Outbox>,
        handler: H,
        lent_socket: Option<LentSocket>,
    ) -> Self {
        let decoder = MessageDecoder::new(DecoderConfig {
            max_message_size: settings.max_message_size,
            deflate: encoder.compresses(),
        });
        let mut connection = Connection {
            io,
            read_buf: BytesMut::from(&leftover[..]),
            decoder,
            writer: OutboxWriter::new(&outbox, lent_socket),
            outbox,
            encoder,
            handler,
            timer: Box::pin(tokio::time::sleep(settings.ping_interval)),
            settings,
            phase: Phase::Open {
                awaiting_pong: false,
            },
            input_held: false,
            heard: false,
            last_message: Instant::now(),
            adopt: None,
            flush_requested: false,
            close_sent: None,
            close_received: None,
        };
        // Bytes the client sent right behind its handshake.
        if !connection.read_buf.is_empty() {
            // No task to wake yet: if the handler holds input, the first
            // poll asks it again with the task's waker.
            connection.on_input(&mut Context::from_waker(std::task::Waker::noop()));
        }
        connection
    }

    /// Drives the connection; `Ready` once it has ended.
    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        loop {
            let mut progressed = false;

            if matches!(self.phase, Phase::Open { .. })
                && let Poll::Ready(taken) = self.writer.poll_take(&self.outbox, cx)
            {
                progressed = true;
                if let Some(close) = taken.close {
                    self.start_close(Some(close));
                }
            }

            match self.writer.poll_write(&self.outbox, &mut self.io, cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::Io(e)),
                // Frames queued while the batch was written woke nobody.
                Poll::Ready(Ok(Wrote::Batch)) => progressed = true,
                Poll::Ready(Ok(Wrote::Nothing)) | Poll::Pending => {}
            }
            if self.writer.is_empty() {
                if let Phase::Closing { write_shut } = &mut self.phase {
                    if !*write_shut {
                        match Pin::new(&mut self.io).poll_shutdown(cx) {
                            Poll::Ready(Ok(())) => *write_shut = true,
                            Poll::Ready(Err(e)) => return Poll::Ready(Ended::Io(e)),
                            Poll::Pending => {}
                        }
                    }
                }
            }

            if self.input_held && self.handler.poll_ready(cx).is_ready() {
                self.input_held = false;
                self.on_input(cx);
                progressed = true;
            }

            if self.wants_input() {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(self.ended_by_eof()),
                    Poll::Ready(Ok(_)) => {
                        progressed = true;
                        self.on_input(cx);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ended::Io(e)),
                    Poll::Pending => {}
                }
            }

            if self.timer.as_mut().poll(cx).is_ready() {
                if matches!(self.phase, Phase::Closing { .. }) {
                    return Poll::Ready(self.ended_by_eof());
                }
                self.on_keepalive_tick();
                progressed = true;
            }

            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Reading stops while too much waits to be sent, or while the handler
    /// has all the work in flight it may: a client that sends requests but
    /// does not read the answers is slowed down by TCP itself.
    fn wants_input(&self) -> bool {
        match self.phase {
            Phase::Open { .. } => {
                !self.input_held && self.writer.queued_bytes() < self.settings.max_queued_bytes
            }
            Phase::Closing { .. } => true,
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let discard = matches!(self.phase, Phase::Closing { .. });
        let n = if self.read_buf.is_empty() || discard {
            let read_buf = &mut self.read_buf;
            let io = &mut self.io;
            ready!(SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(io).poll_read(cx, &mut buf))?;
                if !discard {
                    read_buf.extend_from_slice(buf.filled());
                }
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            }))?
        } else {
            if self.read_buf.len() == self.read_buf.capacity() {
                self.read_buf.reserve(READ_CHUNK);
            }
            ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.read_buf
            ))?
        };
        if n > 0 {
            self.heard_from_peer();
        }
        Poll::Ready(Ok(n))
    }

    /// Any bytes from the peer prove it alive; the next ping waits a full interval.
    fn heard_from_peer(&mut self) {
        self.heard = true;
        if let Phase::Open { awaiting_pong } = &mut self.phase {
            if *awaiting_pong {
                *awaiting_pong = false;
                let next = Instant::now() + self.settings.ping_interval;
                self.timer.as_mut().reset(next);
            }
        }
    }

    fn on_keepalive_tick(&mut self) {
        if matches!(
            self.phase,
            Phase::Open {
                awaiting_pong: false
            }
        ) && self.idle_too_long()
        {
            self.settings.idled.inc();
            let idle = CloseFrame::new(CloseCode::NORMAL, "idle timeout: no subscription");
            self.start_close(Some(idle));
            return;
        }
        let Phase::Open { awaiting_pong } = &mut self.phase else {
            return;
        };
        let ping_timeout = || CloseFrame::new(CloseCode::GOING_AWAY, "ping timeout");
        if *awaiting_pong {
            self.start_close(Some(ping_timeout()));
            return;
        }
        let heard = std::mem::take(&mut self.heard);
        let ping = match self.handler.keepalive() {
            Keepalive::Ping => frame::encode(OpCode::Ping, false, b""),
            Keepalive::Frame(frame) => frame,
            Keepalive::PeerPings => {
                if !heard {
                    self.start_close(Some(ping_timeout()));
                    return;
                }
                let next =
                    Instant::now() + self.settings.ping_interval + self.settings.ping_timeout;
                self.timer.as_mut().reset(next);
                return;
            }
            Keepalive::Skip => {
                let next = Instant::now() + self.settings.ping_interval;
                self.timer.as_mut().reset(next);
                return;
            }
            Keepalive::Close(frame) => {
                self.start_close(Some(frame));
                return;
            }
        };
        *awaiting_pong = true;
        self.writer.push(ping);
        let deadline = Instant::now() + self.settings.ping_timeout;
        self.timer.as_mut().reset(deadline);
    }

    fn idle_too_long(&self) -> bool {
        self.settings.idle_timeout.is_some_and(|timeout| {
            self.last_message.elapsed() >= timeout && !self.handler.is_subscribed()
        })
    }

    /// Decodes and dispatches every complete message in the read buffer,
    /// as long as the handler takes them.
    fn on_input(&mut self, cx: &mut Context<'_>) {
        while matches!(self.phase, Phase::Open { .. }) {
            if self.handler.poll_ready(cx).is_pending() {
                self.input_held = true;
                break;
            }
            match self.decoder.decode(&mut self.read_buf) {
                Ok(None) => break,
                Ok(Some(message)) => {
                    self.dispatch(message);
                    if std::mem::take(&mut self.flush_requested) {
                        // As much as the socket takes now; the rest, and
                        // any error, come back in the next write.
                        let _ = self.writer.poll_write(&self.outbox, &mut self.io, cx);
                    }
                }
                Err(violation) => {
                    tracing::debug!(%violation, "websocket protocol error");
                    let code = violation.close_code();
                    if code == CloseCode::MESSAGE_TOO_BIG {
                        self.settings.too_large.inc();
                    }
                    self.start_close(Some(CloseFrame::new(code, violation.to_string())));
                }
            }
        }
        if self.read_buf.is_empty() {
            // Release the allocation: idle connections hold no read buffer.
            self.read_buf = BytesMut::new();
        }
    }

    fn dispatch(&mut self, message: Message) {
        match message {
            Message::Ping(payload) => {
                self.writer
                    .push(frame::encode(OpCode::Pong, false, &payload))
            }
            Message::Pong(_) => {}
            Message::Close(received) => {
                // Answer with the peer's code (RFC 6455 section 5.5.1).
                let reply = received.as_ref().map(|f| CloseFrame::new(f.code, ""));
                self.close_received = Some(received);
                self.start_close(reply);
            }
            data => {
                self.last_message = Instant::now();
                let mut replies = Replies {
                    queue: &mut self.writer.send,
                    encoder: self.encoder,
                    adopt: &mut self.adopt,
                    flush: &mut self.flush_requested,
                };
                if let Err(close) = self.handler.on_message(data, &mut replies) {
                    self.start_close(Some(close));
                }
                if let Some(outbox) = self.adopt.take() {
                    self.writer.switch_outbox(&self.outbox, &outbox);
                    self.outbox.mark_closed();
                    self.outbox = outbox;
                }
            }
        }
    }

    /// Queues our close frame after everything already queued.
    fn start_close(&mut self, frame: Option<CloseFrame>) {
        if matches!(self.phase, Phase::Closing { .. }) {
            return;
        }
        // A frame partly written through is finished before the close.
        self.writer.take_back(&self.outbox);
        let payload = frame.as_ref().map(CloseFrame::payload).unwrap_or_default();
        self.writer
            .push(frame::encode(OpCode::Close, false, &payload));
        self.close_sent = frame;
        self.phase = Phase::Closing { write_shut: false };
        self.read_buf = BytesMut::new();
        let deadline = Instant::now() + self.settings.close_timeout;
        self.timer.as_mut().reset(deadline);
    }

    fn ended_by_eof(&mut self) -> Ended {
        match self.phase {
            Phase::Open { .. } => Ended::Dropped,
            Phase::Closing { .. } => Ended::Closed {
                sent: self.close_sent.take(),
                received: self.close_received.take(),
            },
        }
    }
}

impl<S, H> Drop for Connection<S, H> {
    fn drop(&mut self) {
        self.outbox.mark_closed();
    }
}

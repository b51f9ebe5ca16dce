//! Server-Sent Events: `GET /sse?channel=NAME[&channel=…][&user=NAME][&since=ID]`.
//!
//! A stream is a subscriber like any WebSocket: it has an outbox the hub
//! fills with shared, pre-encoded events, and the response body drains it
//! (all that is queued goes out in one chunk). Resume points are event ids:
//! `id: OFFSET` with one channel, `id: CHANNEL:OFFSET` with several. Because
//! `EventSource` sends back only the last id it saw, a stream of several
//! channels also writes, after each message event, an id-only block with
//! every channel's position (`id: lobby:4,ops:9`, which dispatches no
//! event), so a reconnect resumes all of them exactly.
//!
//! A stream of one channel on a plain HTTP/1.1 connection writes its body
//! to the socket itself once hyper has sent the head, every event a whole
//! chunk ([`Wire::ChunkedEventStream`]), and lends the socket to its outbox:
//! broadcasts are written through it from the delivering thread, as they
//! are to a WebSocket, without waking this stream's task. Other streams
//! hand their chunks to hyper.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Frame;
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::node::Greeting;
use switchboard_core::outbox::Outbox;
use switchboard_core::wire::{EventIds, Wire, http_chunk};
use switchboard_core::{ChannelName, Node, Username};
use switchboard_proto::sse::{self, Cursor};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use crate::app::AppState;
use crate::connections::Registration;
use crate::error::ApiError;
use crate::socket::{AbortConnection, RawBody, SocketLoan};
use crate::transport::send_queue::SendQueue;

/// Most channels one stream may follow.
pub const MAX_CHANNELS: usize = 64;

/// What `GET /sse` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub channels: Vec<ChannelName>,
    pub user: Option<Username>,
    pub since: Option<Cursor>,
}

impl StreamRequest {
    /// Reads the query string and the `Last-Event-ID` header (which wins
    /// over `?since=`: it is what `EventSource` sends when it reconnects to
    /// the same URL).
    pub fn parse(query: &str, headers: &HeaderMap) -> Result<StreamRequest, ApiError> {
        let mut channels: Vec<ChannelName> = Vec::new();
        let mut user = None;
        let mut since = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "channel" => {
                    let channel = ChannelName::parse(&value).map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string())
                    })?;
                    if !channels.contains(&channel) {
                        channels.push(channel);
                    }
                }
                "user" if !value.is_empty() => {
                    let name = Username::parse(&value).map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string())
                    })?;
                    user = Some(name);
                }
                "user" => {}
                "since" => since = Some(parse_cursor(&value)?),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}: expected channel, user, since"
                    )));
                }
            }
        }
        if channels.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_channel",
                "name at least one channel: /sse?channel=NAME",
            ));
        }
        if channels.len() > MAX_CHANNELS {
            return Err(ApiError::bad_request(format!(
                "{} channels; one stream follows at most {MAX_CHANNELS}",
                channels.len()
            )));
        }
        if let Some(last) = headers.get("last-event-id") {
            let last = last
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?;
            if !last.trim().is_empty() {
                since = Some(parse_cursor(last)?);
            }
        }
        Ok(StreamRequest {
            channels,
            user,
            since,
        })
    }
}

fn parse_cursor(text: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event_id", e.to_string()))
}

/// Opens the stream: subscribes every channel from its resume point and
/// returns the `text/event-stream` response.
/// `socket`, when given, lets a stream of one channel write its body itself.
pub async fn open(
    state: &AppState,
    request: StreamRequest,
    abort: Option<AbortConnection>,
    socket: Option<SocketLoan>,
) -> Result<Response, ApiError> {
    let node = state.node.clone();
    let outbox = Arc::new(Outbox::new(state.config.max_queued_bytes));
    let registration = state.connections.register(outbox.clone());
    let ids = if request.channels.len() == 1 {
        EventIds::Offset
    } else {
        EventIds::ChannelAndOffset
    };
    let socket = socket.filter(|_| ids == EventIds::Offset);
    let wire = match socket {
        Some(_) => Wire::ChunkedEventStream,
        None => Wire::EventStream(ids),
    };
    let me = SubscriberHandle {
        id: registration.id,
        username: request.user.clone().unwrap_or_else(Username::guest),
        outbox: outbox.clone(),
        wire,
        in_presence: request.user.is_some(),
    };

    // Where each channel starts: the client's resume point, or now. Read
    // after joining the hub, so nothing stored later can be missed.
    let mut subscription = Subscription {
        node: node.clone(),
        id: me.id,
        channels: Vec::new(),
    };
    let mut starts = Vec::with_capacity(request.channels.len());
    for channel in request.channels {
        let presence = node
            .join(&me, &channel)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        subscription.channels.push(channel.clone());
        let since = match request
            .since
            .as_ref()
            .and_then(|c| c.offset_for(channel.as_str()))
        {
            Some(since) => since,
            None => node.position(&channel).await.map_err(storage_error)?.offset,
        };
        starts.push((channel, since, presence));
    }

    let cursor = StreamCursor::new(&starts, ids);
    let mut preamble = String::new();
    sse::retry(&mut preamble, state.config.sse_retry.as_millis());
    // The starting position, so a reconnect before any message still
    // resumes from here rather than from whenever it reconnects.
    cursor.write_id(&mut preamble);
    let preamble = match socket {
        Some(_) => http_chunk(preamble.as_bytes()),
        None => Bytes::from(preamble),
    };
    let _ = outbox.try_push(preamble);

    let catch_up = tokio::spawn(catch_up(node, me, starts));
    let watchdog = abort.map(|abort| {
        let outbox = outbox.clone();
        let grace = state.config.close_timeout;
        tokio::spawn(async move {
            outbox.closing().await;
            tokio::time::sleep(grace).await;
            abort.abort();
        })
        .abort_handle()
    });
    let body = EventStream {
        outbox,
        taken: VecDeque::new(),
        heartbeat: Box::pin(tokio::time::sleep(state.config.sse_heartbeat)),
        heartbeat_every: state.config.sse_heartbeat,
        cursor,
        finished: false,
        socket: socket.map(SocketWriter::new),
        _tasks: TaskGuard(vec![Some(catch_up.abort_handle()), watchdog]),
        _subscription: subscription,
        _registration: registration,
    };
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told otherwise.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Replays each channel from its start, then lets it go live, one after
/// the other (a stream's events of one channel stay in offset order).
async fn catch_up(
    node: Arc<Node>,
    me: SubscriberHandle,
    starts: Vec<(ChannelName, u64, Vec<String>)>,
) {
    for (channel, since, presence) in starts {
        let greeting = Greeting::EventStream { presence };
        if let Err(e) = node
            .catch_up(me.clone(), channel.clone(), Some(since), greeting)
            .await
        {
            tracing::debug!(conn = me.id, %channel, "event stream catch-up ended: {e}");
            // Ending the stream lets the client come back and resume.
            me.outbox
                .close(switchboard_core::hub::slow_consumer_close());
            return;
        }
    }
}

fn storage_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        e.to_string(),
    )
}

/// The channels a stream joined; leaving them when the stream ends
/// announces `leave` for a named user's last connection.
struct Subscription {
    node: Arc<Node>,
    id: switchboard_core::hub::ConnectionId,
    channels: Vec<ChannelName>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for channel in &self.channels {
            self.node.unsubscribe(channel, self.id);
        }
    }
}

/// Aborts the stream's helper tasks when the stream ends.
struct TaskGuard(Vec<Option<AbortHandle>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in self.0.iter().flatten() {
            task.abort();
        }
    }
}

/// Every channel's position, for streams of several channels: written as
/// an id-only block after each message event.
#[derive(Debug)]
struct StreamCursor {
    ids: EventIds,
    positions: Vec<(String, u64)>,
}

impl StreamCursor {
    fn new(starts: &[(ChannelName, u64, Vec<String>)], ids: EventIds) -> Self {
        StreamCursor {
            ids,
            positions: starts
                .iter()
                .map(|(channel, since, _)| (channel.as_str().to_owned(), *since))
                .collect(),
        }
    }

    /// `id: …` and a blank line: sets the client's last event id without
    /// dispatching an event.
    fn write_id(&self, out: &mut String) {
        out.push_str("id: ");
        match self.ids {
            EventIds::Offset => {
                let _ = write!(out, "{}", self.positions.first().map_or(0, |p| p.1));
            }
            EventIds::ChannelAndOffset => {
                for (i, (channel, offset)) in self.positions.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{channel}:{offset}");
                }
            }
        }
        out.push_str("\n\n");
    }

    /// Notes a message event (`id: CHANNEL:OFFSET` first line) and returns
    /// the id-only block that records every position after it.
    fn after_event(&mut self, event: &[u8]) -> Option<String> {
        if self.ids != EventIds::ChannelAndOffset {
            return None;
        }
        let line = event.strip_prefix(b"id: ")?;
        let line = &line[..line.iter().position(|&b| b == b'\n')?];
        let (channel, offset) = std::str::from_utf8(line).ok()?.rsplit_once(':')?;
        let offset: u64 = offset.parse().ok()?;
        let slot = self
            .positions
            .iter_mut()
            .find(|(name, _)| name == channel)?;
        slot.1 = slot.1.max(offset);
        let mut block = String::with_capacity(16 * self.positions.len());
        self.write_id(&mut block);
        Some(block)
    }
}

/// The response body: drains the outbox, a chunk per wake-up, with a
/// heartbeat comment when nothing else was written for a while.
struct EventStream {
    outbox: Arc<Outbox>,
    taken: VecDeque<Bytes>,
    heartbeat: Pin<Box<Sleep>>,
    heartbeat_every: Duration,
    cursor: StreamCursor,
    finished: bool,
    /// Set when the body writes itself rather than through hyper.
    socket: Option<SocketWriter>,
    // Dropped with the body: stops helpers, leaves channels, unregisters.
    _tasks: TaskGuard,
    _subscription: Subscription,
    _registration: Registration,
}

impl EventStream {
    /// Everything taken from the outbox as one chunk.
    fn chunk(&mut self, bytes: usize) -> Bytes {
        if self.taken.len() == 1 && self.cursor.ids == EventIds::Offset {
            return self.taken.pop_front().expect("one frame");
        }
        let mut chunk = BytesMut::with_capacity(bytes + 64);
        while let Some(frame) = self.taken.pop_front() {
            chunk.extend_from_slice(&frame);
            if let Some(block) = self.cursor.after_event(&frame) {
                chunk.extend_from_slice(block.as_bytes());
            }
        }
        chunk.freeze()
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.socket.is_some() {
            return this.poll_socket(cx).map(|done| done.err().map(Err));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let mut taken = std::mem::take(&mut this.taken);
        let poll = this.outbox.poll_take(cx, &mut taken, true);
        this.taken = taken;
        if let Poll::Ready(result) = poll {
            // A close (shutdown, slow consumer) ends the stream after what
            // was queued before it; the client reconnects and resumes.
            this.finished = result.close.is_some();
            if this.taken.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = this.chunk(result.bytes);
            let next = Instant::now() + this.heartbeat_every;
            this.heartbeat.as_mut().reset(next);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            let next = Instant::now() + this.heartbeat_every;
            this.heartbeat.as_mut().reset(next);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                sse::HEARTBEAT.as_bytes(),
            )))));
        }
        Poll::Pending
    }
}

/// A body that writes itself: the socket, and the chunks being written.
struct SocketWriter {
    /// Until the first poll, when hyper holds the response head.
    loan: Option<SocketLoan>,
    raw: Option<RawBody>,
    send: SendQueue,
    /// The outbox may write through the socket (from the head on).
    lent: bool,
    /// Frames of the stream's own are being written: nothing goes through.
    holds_socket: bool,
}

impl SocketWriter {
    fn new(loan: SocketLoan) -> Self {
        SocketWriter {
            loan: Some(loan),
            raw: None,
            send: SendQueue::default(),
            lent: false,
            holds_socket: false,
        }
    }
}

impl EventStream {
    /// Drives a body that writes itself; `Ready(Ok)` once it has ended (a
    /// close was asked for and everything before it is written), after
    /// which hyper writes the last chunk.
    fn poll_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let writer = self.socket.as_mut().expect("a body that writes itself");
        if writer.raw.is_none() {
            let raw = writer.loan.take().and_then(SocketLoan::into_raw_body);
            writer.raw = Some(raw.ok_or_else(|| io::Error::other("the connection is gone"))?);
        }
        let raw = writer.raw.as_mut().expect("set above");
        ready!(raw.poll_head_out(cx));
        if !writer.lent {
            self.outbox.lend_socket(raw.socket());
            writer.lent = true;
        }
        loop {
            let mut progressed = false;
            if !self.finished {
                // New frames only once the last are written: a client that
                // does not read leaves them in the bounded outbox.
                let take_frames = writer.send.is_empty();
                if let Poll::Ready(taken) =
                    self.outbox
                        .poll_take(cx, &mut writer.send.frames, take_frames)
                {
                    writer.send.bytes += taken.bytes;
                    writer.holds_socket = true;
                    self.finished = taken.close.is_some();
                    let next = Instant::now() + self.heartbeat_every;
                    self.heartbeat.as_mut().reset(next);
                    progressed = true;
                }
            }
            if self.heartbeat.as_mut().poll(cx).is_ready() {
                let next = Instant::now() + self.heartbeat_every;
                self.heartbeat.as_mut().reset(next);
                // Broadcasts written through kept the connection busy.
                let quiet = !self.outbox.take_wrote_through();
                if quiet && writer.send.is_empty() && !self.finished {
                    writer.send.bytes += self.outbox.claim_socket(&mut writer.send.frames);
                    writer.send.push(http_chunk(sse::HEARTBEAT.as_bytes()));
                    writer.holds_socket = true;
                }
                progressed = true;
            }
            if let Poll::Ready(written) = writer.send.poll_write(raw.stream(), cx) {
                written?;
                if self.finished {
                    return Poll::Ready(Ok(()));
                }
                if writer.holds_socket {
                    self.outbox.release_socket();
                    writer.holds_socket = false;
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.outbox.mark_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from_str(id).unwrap());
        }
        StreamRequest::parse(query, &headers)
    }

    #[test]
    fn channels_user_and_since_come_from_the_query() {
        let parsed = request(
            "channel=lobby&channel=ops&channel=lobby&user=ann&since=4",
            None,
        )
        .unwrap();
        let names: Vec<_> = parsed.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["lobby", "ops"]);
        assert_eq!(parsed.user.unwrap().as_str(), "ann");
        assert_eq!(parsed.since, Some(Cursor::All(4)));
    }

    #[test]
    fn last_event_id_wins_over_since() {
        let parsed = request("channel=lobby&since=4", Some("9")).unwrap();
        assert_eq!(parsed.since, Some(Cursor::All(9)));
        let parsed = request("channel=a&channel=b", Some("a:3,b:5")).unwrap();
        let cursor = parsed.since.unwrap();
        assert_eq!(
            (cursor.offset_for("a"), cursor.offset_for("b")),
            (Some(3), Some(5))
        );
    }

    #[test]
    fn bad_requests_name_their_problem() {
        let code = |query: &str, id: Option<&str>| request(query, id).unwrap_err().code;
        assert_eq!(code("", None), "missing_channel");
        assert_eq!(code("channel=no%20spaces", None), "invalid_channel");
        assert_eq!(code("channel=a&user=%01", None), "invalid_username");
        assert_eq!(code("channel=a&since=x", None), "invalid_event_id");
        assert_eq!(code("channel=a", Some("nope")), "invalid_event_id");
        assert_eq!(code("channel=a&colour=red", None), "bad_request");
    }

    #[test]
    fn the_cursor_follows_message_events_of_every_channel() {
        let lobby = ChannelName::parse("lobby").unwrap();
        let ops = ChannelName::parse("news:ops").unwrap();
        let starts = vec![(lobby, 3, vec![]), (ops, 0, vec![])];
        let mut cursor = StreamCursor::new(&starts, EventIds::ChannelAndOffset);
        let mut first = String::new();
        cursor.write_id(&mut first);
        assert_eq!(first, "id: lobby:3,news:ops:0\n\n");
        let block = cursor.after_event(b"id: news:ops:7\nevent: message\ndata: {}\n\n");
        assert_eq!(block.as_deref(), Some("id: lobby:3,news:ops:7\n\n"));
        assert_eq!(cursor.after_event(b"event: join\ndata: {}\n\n"), None);
        let single = StreamCursor::new(&starts[..1], EventIds::Offset);
        let mut id = String::new();
        single.write_id(&mut id);
        assert_eq!(id, "id: 3\n\n");
    }
}

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
//! A stream on a plain HTTP/1.1 connection takes the connection over from
//! hyper once hyper has sent the head (hyper's buffers are freed: an idle
//! stream costs what an idle WebSocket does) and writes its body itself.
//! With one channel every event is a whole chunk
//! ([`Wire::ChunkedEventStream`]) and the socket is lent to the outbox:
//! broadcasts are written through it from the delivering thread, as they
//! are to a WebSocket, without waking this stream's task. With several,
//! the stream's task joins what is queued into a chunk, with the resume
//! point after each message. Streams on other connections hand their
//! chunks to hyper.

mod body;
mod cursor;
mod request;

pub use request::{StreamRequest, TOO_MANY_CHANNELS};

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::node::Greeting;
use switchboard_core::outbox::Outbox;
use switchboard_core::wire::{EventIds, Wire, http_chunk};
use switchboard_core::{ChannelName, Node, Username};
use switchboard_proto::sse;
use tokio::task::AbortHandle;

use self::body::{EventChunks, Feed, Handoff, HyperBody, SocketBody};
use self::cursor::StreamCursor;
use crate::access::{Admission, token_expired};
use crate::app::AppState;
use crate::connections::Seat;
use crate::error::ApiError;
use crate::metrics::ConnectionKind;
use crate::socket::{AbortConnection, SocketLoan};
use switchboard_core::metrics::TransportKind;

/// Opens the stream: subscribes every channel from its resume point and
/// returns the `text/event-stream` response.
/// `socket`, when given, lets a stream of one channel write its body itself.
pub async fn open(
    state: &AppState,
    request: StreamRequest,
    admission: Admission,
    seat: Seat,
    abort: Option<AbortConnection>,
    socket: Option<SocketLoan>,
) -> Result<Response, ApiError> {
    let node = state.node.clone();
    let ids = if request.channels.len() == 1 {
        EventIds::Offset
    } else {
        EventIds::ChannelAndOffset
    };
    // A stream of several channels writes every channel's position after
    // each message: its outbox keeps each message's position beside it.
    let outbox = Arc::new(
        match ids {
            EventIds::Offset => Outbox::new(state.config.max_queued_bytes),
            EventIds::ChannelAndOffset => Outbox::keeping_positions(state.config.max_queued_bytes),
        }
        .counting_slow_consumers(state.metrics.slow_consumers(TransportKind::Sse)),
    );
    let gauge = state.metrics.connections(ConnectionKind::Sse).clone();
    let registration = state.connections.register(outbox.clone(), seat, gauge);
    // A stream of one channel that writes itself gets whole HTTP chunks
    // from the hub; one of several joins its events with resume points.
    let wire = match (&socket, ids) {
        (Some(_), EventIds::Offset) => Wire::ChunkedEventStream,
        _ => Wire::EventStream(ids),
    };
    let me = SubscriberHandle {
        id: registration.id,
        username: request.user.clone().unwrap_or_else(Username::guest),
        outbox: outbox.clone(),
        wire,
        in_presence: request.user.is_some(),
        recovery: None,
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
    let preamble = match wire {
        Wire::ChunkedEventStream => http_chunk(preamble.as_bytes()),
        _ => Bytes::from(preamble),
    };
    let _ = outbox.try_push(preamble);

    // Not aborted with the stream: it ends by itself at its next push once
    // the stream has ended (the outbox refuses it), and a handle kept to
    // abort it would keep its whole task allocated for the stream's life.
    tokio::spawn(catch_up(node, me, starts));
    // A stream hyper writes cannot time itself out while hyper waits on a
    // client that stopped reading: a watchdog drops the whole connection.
    let watchdog = abort.filter(|_| socket.is_none()).map(|abort| {
        let outbox = outbox.clone();
        let grace = state.config.close_timeout;
        tokio::spawn(async move {
            outbox.closing().await;
            tokio::time::sleep(grace).await;
            abort.abort();
        })
        .abort_handle()
    });
    // A stream whose token expires ends: `EventSource` comes back with the
    // same URL and, refused, stops until the page gives it a new token.
    let closer = outbox.clone();
    let permits = state
        .access
        .permits(admission, Box::new(move || closer.close(token_expired())));
    let ends_with_it = Box::new((TaskGuard(watchdog), subscription, registration, permits));
    let feed = Feed::new(outbox, state.config.sse_heartbeat, ends_with_it);
    let body = match socket {
        Some(loan) => {
            let handoff = Handoff {
                feed,
                tasks: state.connections.tasks.clone(),
                close_timeout: state.config.close_timeout,
                events: (ids == EventIds::ChannelAndOffset).then(|| EventChunks::new(cursor)),
            };
            Body::new(SocketBody::new(handoff, loan))
        }
        None => Body::new(HyperBody::new(feed, cursor)),
    };
    let mut response = Response::new(body);
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

/// Aborts the stream's watchdog when the stream ends.
struct TaskGuard(Option<AbortHandle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

//! The WebSocket transport: the HTTP upgrade and the connection task.

mod connection;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchboard_ws::handshake;
use tokio::io::{AsyncRead, AsyncWrite};

pub use connection::{Connection, Ended, Keepalive, MessageHandler, Replies};

use switchboard_core::hub::ConnectionId;
use switchboard_core::outbox::{LentSocket, Outbox};
use switchboard_core::wire::FrameEncoder;

use crate::app::{AppState, WsSettings};
use crate::connections::{Registration, Seat};
use crate::error::ApiError;
use crate::metrics::ConnectionKind;
use crate::socket::HttpSocket;
use switchboard_core::metrics::TransportKind;

/// What a handler is given about the connection it serves.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub id: ConnectionId,
    /// Where other tasks queue frames for this connection.
    pub outbox: Arc<Outbox>,
    /// How this connection's frames are encoded (plain or deflated).
    pub encoder: FrameEncoder,
}

/// How an endpoint's WebSocket connections are set up.
#[derive(Debug)]
pub struct Upgrade {
    /// Whether permessage-deflate may be agreed.
    pub deflate: bool,
    /// Limits and keepalive timings.
    pub settings: Arc<WsSettings>,
    /// The outbox the connection sends from, with the id it is registered
    /// under (by its owner, for shutdown); a new one, registered here, if
    /// `None`.
    pub outbox: Option<(Arc<Outbox>, ConnectionId)>,
    /// The connection's place under the connection limits (with a new
    /// outbox; the owner of a given one holds its own).
    pub seat: Seat,
}

impl Upgrade {
    /// The server's settings (`--no-deflate`, `--ping-interval`…) and a
    /// new outbox, for the connection admitted to `seat`.
    pub fn from_config(state: &AppState, seat: Seat) -> Self {
        Upgrade {
            deflate: !state.config.no_deflate,
            settings: state.ws.clone(),
            outbox: None,
            seat,
        }
    }
}

/// Answers a WebSocket upgrade request with `101 Switching Protocols` and
/// spawns the connection task, which gets its handler from `make_handler`.
pub fn upgrade<H, F>(
    request: Request,
    state: &AppState,
    seat: Seat,
    make_handler: F,
) -> Result<Response, ApiError>
where
    H: MessageHandler,
    F: FnOnce(ConnectionContext) -> H + Send + 'static,
{
    upgrade_with(
        request,
        state,
        Upgrade::from_config(state, seat),
        make_handler,
    )
}

/// [`upgrade`] set up as `options` say.
pub fn upgrade_with<H, F>(
    request: Request,
    state: &AppState,
    options: Upgrade,
    make_handler: F,
) -> Result<Response, ApiError>
where
    H: MessageHandler,
    F: FnOnce(ConnectionContext) -> H + Send + 'static,
{
    let (mut parts, _body) = request.into_parts();
    let accepted = handshake::accept(
        &parts.method,
        parts.version,
        &parts.headers,
        options.deflate,
    )?;
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::internal("this connection cannot be upgraded"))?;
    let deflate = accepted.deflate.as_ref().map(|offer| offer.params);
    let state = state.clone();
    // A short task waits for hyper to hand over the socket, then spawns the
    // connection's own task, which holds only the connection's state.
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => start_connection(upgraded, state, options, deflate, make_handler),
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });

    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accepted.accept);
    if let Some(offer) = accepted.deflate {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, offer.response);
    }
    Ok(response
        .body(Body::empty())
        .expect("static headers are valid"))
}

fn start_connection<H, F>(
    upgraded: hyper::upgrade::Upgraded,
    state: AppState,
    options: Upgrade,
    deflate: Option<switchboard_ws::DeflateParams>,
    make_handler: F,
) where
    H: MessageHandler,
    F: FnOnce(ConnectionContext) -> H,
{
    // The plain TCP socket, when that is what lies beneath: no boxed I/O layer
    // on the hot path.
    match upgraded.downcast::<TokioIo<HttpSocket>>() {
        Ok(parts) => {
            let stream = parts.io.into_inner().into_stream();
            let socket: LentSocket = stream.handle();
            spawn_connection(
                stream,
                parts.read_buf,
                Some(socket),
                state,
                options,
                deflate,
                make_handler,
            )
        }
        Err(upgraded) => spawn_connection(
            TokioIo::new(upgraded),
            Bytes::new(),
            None,
            state,
            options,
            deflate,
            make_handler,
        ),
    }
}

fn spawn_connection<S, H, F>(
    io: S,
    leftover: Bytes,
    lent_socket: Option<LentSocket>,
    state: AppState,
    options: Upgrade,
    deflate: Option<switchboard_ws::DeflateParams>,
    make_handler: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: MessageHandler,
    F: FnOnce(ConnectionContext) -> H,
{
    let (outbox, id, registration) = match options.outbox {
        Some((outbox, id)) => (outbox, id, None),
        None => {
            let slow = state.metrics.slow_consumers(TransportKind::WebSocket);
            let outbox = Arc::new(
                Outbox::new(options.settings.max_queued_bytes).counting_slow_consumers(slow),
            );
            let gauge = state.metrics.connections(ConnectionKind::WebSocket).clone();
            let registration = state
                .connections
                .register(outbox.clone(), options.seat, gauge);
            (outbox, registration.id, Some(registration))
        }
    };
    let encoder = FrameEncoder::new(deflate, state.ws.deflate_min_size, state.ws.deflate_level);
    let handler = make_handler(ConnectionContext {
        id,
        outbox: outbox.clone(),
        encoder,
    });
    tracing::debug!(conn = id, deflate = deflate.is_some(), "websocket open");
    let connection = Connection::new(
        io,
        leftover,
        options.settings,
        encoder,
        outbox,
        handler,
        lent_socket,
    );
    state.connections.tasks.spawn(ConnectionTask {
        connection,
        id,
        _registration: registration,
    });
}

/// The long-lived task of one connection: the connection itself and its
/// registration, nothing else, so an idle connection costs little memory.
struct ConnectionTask<S, H> {
    connection: Connection<S, H>,
    id: ConnectionId,
    /// `None` when the outbox's owner registered it.
    _registration: Option<Registration>,
}

impl<S, H> Future for ConnectionTask<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MessageHandler,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let ended = ready!(this.connection.poll_run(cx));
        log_end(this.id, ended);
        Poll::Ready(())
    }
}

fn log_end(id: ConnectionId, ended: Ended) {
    match ended {
        Ended::Io(e) => tracing::debug!(conn = id, "websocket closed: i/o error: {e}"),
        Ended::Dropped => tracing::debug!(
            conn = id,
            "websocket closed: dropped without close frame (1006)"
        ),
        Ended::Closed { sent, received } => tracing::debug!(
            conn = id,
            sent = ?sent.map(|f| f.code.0),
            received = ?received.map(|f| f.map(|f| f.code.0)),
            "websocket closed"
        ),
    }
}

//! Socket.IO on `/socket.io/`: Engine.IO 3 and 4 (long-polling, WebSocket,
//! and the upgrade from one to the other) and the Socket.IO layer above
//! them, serving the channels with the event contract of
//! `docs/protocol.md`.
//!
//! - [`session`]: an Engine.IO session, whichever transport carries it;
//! - [`polling`]: the GET and POST of long-polling;
//! - [`websocket`]: a session over a WebSocket, and the upgrade;
//! - [`namespaces`]: the Socket.IO packets: namespaces, events,
//!   attachments, acknowledgements;
//! - [`chat`]: the channels' events on the main namespace;
//! - [`recovery`]: connection-state recovery;
//! - [`forward`]: polls relayed to the node that holds their session
//!   (`--engine redis`: no sticky sessions);
//! - [`conformance`]: the official test suites' reference servers
//!   (`--socketio-conformance`).

pub mod chat;
pub mod conformance;
pub mod forward;
pub mod namespaces;
pub mod polling;
pub mod recovery;
pub mod session;
pub mod websocket;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use switchboard_core::outbox::Outbox;
use switchboard_proto::engineio::Version;
use switchboard_ws::{CloseCode, CloseFrame};

use crate::access::origin::allow_cors;
use crate::access::token::TokenError;
use crate::access::{AccessError, Admission};
use crate::app::AppState;
use crate::connections::{Seat, client_ip};
use crate::metrics::PublishedOver;
use crate::rate_limit::RateLimit;
use crate::transport::channel_session::{Counted, SessionLimits};
use crate::transport::websocket::{Upgrade, upgrade_with};
use crate::transport::work_budget::WorkBudget;

use chat::{ChatNamespaces, Handshake};
use conformance::{EngineEcho, ReferenceNamespaces};
use forward::Forwarder;
use namespaces::SocketLayer;
use polling::PollAnswer;
use recovery::Recovery;
use session::{EngineApp, RandomId, Session, SessionSettings, Sessions, Transport};

/// The Node server's default: how long a client has to connect a namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// What an Engine.IO endpoint runs on its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/socket.io/`: the channels.
    Channels,
    /// Conformance mode's `/engine.io/`: Engine.IO echo.
    EngineEcho,
    /// Conformance mode's `/socket.io/`: the Socket.IO suite's server.
    Reference,
}

/// Everything the Socket.IO endpoints share.
pub struct SocketIo {
    sessions: Arc<Sessions>,
    channels: Arc<SessionSettings>,
    conformance: Arc<SessionSettings>,
    /// The official browser client (`--socketio-client`), served at
    /// `/socket.io/socket.io.js`.
    client_js: Option<Bytes>,
    /// `None` with `--socketio-recovery off`.
    recovery: Option<Arc<Recovery>>,
    /// With `--engine redis`: polls for sessions held by other nodes.
    forwarder: Option<Forwarder>,
}

impl SocketIo {
    /// Reads the browser client's file, if one is named.
    pub fn new(state: &AppState) -> std::io::Result<SocketIo> {
        let config = &state.config;
        let client_js = match &config.socketio_client {
            Some(path) => Some(Bytes::from(std::fs::read(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("--socketio-client {}: {e}", path.display()),
                )
            })?)),
            None => None,
        };
        let channels = SessionSettings::new(
            &state.ws,
            config.ping_interval,
            config.ping_timeout,
            config.max_message_size,
            CONNECT_TIMEOUT,
        );
        // The timings the suites expect of their reference servers.
        let conformance = SessionSettings::new(
            &state.ws,
            Duration::from_millis(300),
            Duration::from_millis(200),
            1_000_000,
            Duration::from_millis(1000),
        );
        let sessions = Arc::new(Sessions::default());
        // A long poll answers within a ping interval; the relay adds little.
        let patience = config.ping_interval + config.ping_timeout;
        let forwarder = state
            .node
            .relay()
            .map(|relay| Forwarder::new(relay, sessions.tag, patience));
        Ok(SocketIo {
            sessions,
            forwarder,
            channels: Arc::new(channels),
            conformance: Arc::new(conformance),
            client_js,
            recovery: config.socketio_recovery.then(|| {
                let any_node = state.node.spans_nodes();
                Arc::new(Recovery::new(config.recovery_window, any_node))
            }),
        })
    }

    /// `GET /socket.io/socket.io.js`.
    pub fn client_js(&self) -> Response {
        match &self.client_js {
            Some(js) => (
                [
                    (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                ],
                js.clone(),
            )
                .into_response(),
            None => crate::error::ApiError::not_found(
                "the Socket.IO browser client is not served: start the server with --socketio-client FILE",
            )
            .into_response(),
        }
    }

    /// Any request to an Engine.IO endpoint.
    pub async fn serve(&self, state: &AppState, endpoint: Endpoint, request: Request) -> Response {
        let cors = match endpoint {
            Endpoint::Channels => {
                if let Err(e) = state.access.check_origin(request.headers()) {
                    return crate::error::ApiError::from(e).into_response();
                }
                state.access.origins.cors_origin(request.headers())
            }
            // The suites' servers allow any origin.
            _ => request.headers().get(header::ORIGIN).cloned(),
        };
        let mut response = if request.method() == Method::OPTIONS {
            preflight(request.headers())
        } else {
            self.route(state, endpoint, request).await
        };
        if let Some(origin) = cors {
            allow_cors(response.headers_mut(), origin);
        }
        response
    }

    async fn route(&self, state: &AppState, endpoint: Endpoint, request: Request) -> Response {
        // A cheap clone (shared bytes): the query borrows it, not the request.
        let uri = request.uri().clone();
        let query = Query::parse(uri.query().unwrap_or(""));
        let Some(version) = query.eio.as_deref().and_then(Version::parse) else {
            return engine_error(
                StatusCode::BAD_REQUEST,
                5,
                "Unsupported protocol version",
                None,
            );
        };
        let websocket = match query.transport.as_deref() {
            Some("polling") => false,
            Some("websocket") => true,
            _ => return engine_error(StatusCode::BAD_REQUEST, 0, "Transport unknown", None),
        };
        if query.jsonp {
            return engine_error(
                StatusCode::BAD_REQUEST,
                3,
                "Bad request",
                Some("JSONP is off"),
            );
        }
        let Some(sid) = query.sid.as_deref() else {
            return self
                .open(state, endpoint, version, websocket, &query, request)
                .await;
        };
        let Some(session) = self.sessions.get(sid).filter(|s| !s.expire_if_overdue()) else {
            return self.elsewhere(sid, websocket, request).await;
        };
        if session.version != version {
            return engine_error(
                StatusCode::BAD_REQUEST,
                3,
                "Bad request",
                Some("EIO differs from the session's"),
            );
        }
        if websocket {
            if !session.can_upgrade() {
                // As the reference server: the WebSocket opens, then closes.
                let closed = Arc::new(Outbox::new(0));
                closed.close(CloseFrame::new(
                    CloseCode::POLICY_VIOLATION,
                    "the session is upgraded already",
                ));
                let options = websocket_options(&session.settings, Some((closed, session.id())));
                return upgrade_with(request, state, options, |_| websocket::Refused)
                    .into_response();
            }
            let options = websocket_options(&session.settings, None);
            let upgrading = session.clone();
            return upgrade_with(request, state, options, move |_| {
                websocket::EngineSocket::upgrading(upgrading)
            })
            .into_response();
        }
        let too_large = session.settings.websocket.too_large.clone();
        let answer = match *request.method() {
            Method::GET => polling::poll(session).await,
            Method::POST => polling::post(session, request.into_body()).await,
            _ => PollAnswer::BadRequest,
        };
        if matches!(answer, PollAnswer::TooLarge) {
            too_large.inc();
        }
        polling_response(answer)
    }

    /// A request for a session this node does not hold: relayed to the
    /// node that does (a poll, with the Redis engine), else unknown.
    async fn elsewhere(&self, sid: &str, websocket: bool, request: Request) -> Response {
        let unknown = || engine_error(StatusCode::BAD_REQUEST, 1, "Session ID unknown", None);
        let owner = RandomId::parse(sid).map(|sid| sid.node_tag());
        match (&self.forwarder, owner) {
            (Some(forwarder), Some(owner)) if !websocket && owner != self.sessions.tag => {
                let limit = self.channels.max_payload;
                forwarder
                    .forward(owner, request, limit)
                    .await
                    .unwrap_or_else(unknown)
            }
            _ => unknown(),
        }
    }

    /// A request without `sid`: a new session.
    async fn open(
        &self,
        state: &AppState,
        endpoint: Endpoint,
        version: Version,
        websocket: bool,
        query: &Query<'_>,
        request: Request,
    ) -> Response {
        if !websocket && request.method() != Method::GET {
            return engine_error(StatusCode::BAD_REQUEST, 2, "Bad handshake method", None);
        }
        let settings = match endpoint {
            Endpoint::Channels => self.channels.clone(),
            _ => self.conformance.clone(),
        };
        let app: Box<dyn EngineApp> = match endpoint {
            Endpoint::EngineEcho => Box::new(EngineEcho),
            Endpoint::Reference => {
                Box::new(SocketLayer::new(ReferenceNamespaces::default(), version))
            }
            Endpoint::Channels => {
                // A token at the handshake must be good; without one, the
                // CONNECT's `auth.token` may still bring it.
                let grant = match state
                    .access
                    .admit(request.headers(), query.token.as_deref())
                {
                    Ok(Admission::Token(grant)) => Some(grant),
                    Ok(Admission::Anonymous) | Err(AccessError::Token(TokenError::Missing)) => None,
                    Err(e) => return crate::error::ApiError::from(e).into_response(),
                };
                let config = &state.config;
                let limits = SessionLimits {
                    publish: RateLimit::new(config.publish_rate, config.publish_burst),
                    max_subscriptions: config.max_subscriptions,
                    work: WorkBudget::new(config.max_requests_in_flight),
                    counted: Counted {
                        metrics: state.metrics.clone(),
                        over: PublishedOver::SocketIo,
                    },
                };
                let handshake = Handshake {
                    user: query.user.clone(),
                    channel: query.channel.clone(),
                    grant,
                };
                // Version 3 clients know nothing of recovery.
                let recovery = self.recovery.clone().filter(|_| version == Version::V4);
                Box::new(SocketLayer::new(
                    ChatNamespaces::new(
                        state.node.clone(),
                        state.access.clone(),
                        handshake,
                        limits,
                        recovery,
                    ),
                    version,
                ))
            }
        };
        let transport = if websocket {
            Transport::WebSocket
        } else {
            Transport::Polling
        };
        if websocket {
            // Refused before a session exists when it is no upgrade.
            if let Err(e) = switchboard_ws::handshake::accept(
                request.method(),
                request.version(),
                request.headers(),
                false,
            ) {
                return crate::error::ApiError::from(e).into_response();
            }
        }
        let ip = client_ip(
            request.headers(),
            request.extensions().get(),
            state.config.trust_proxy,
        );
        let seat = match state.admit(ip) {
            Ok(seat) => seat,
            Err(e) => return crate::error::ApiError::from(e).into_response(),
        };
        let session = Session::open(
            &self.sessions,
            state,
            version,
            transport,
            settings.clone(),
            app,
            seat,
        );
        if !websocket {
            // The open packet is queued: the poll returns at once.
            return polling_response(polling::poll(session).await);
        }
        let options = websocket_options(&settings, Some((session.outbox.clone(), session.id())));
        let carried = session.clone();
        match upgrade_with(request, state, options, move |_| {
            websocket::EngineSocket::carrying(carried)
        }) {
            Ok(response) => response,
            Err(e) => {
                session.close(session::ClosedBy::Server);
                e.into_response()
            }
        }
    }
}

/// How a session's WebSocket is set up: as the Node server, without
/// permessage-deflate (Socket.IO frames are small, and shared frames are
/// sent as they are).
fn websocket_options(settings: &SessionSettings, outbox: Option<(Arc<Outbox>, u64)>) -> Upgrade {
    Upgrade {
        deflate: false,
        settings: settings.websocket.clone(),
        outbox,
        // The session holds the seat: its WebSockets take none.
        seat: Seat::within_another(),
    }
}

fn polling_response(answer: PollAnswer) -> Response {
    match answer {
        PollAnswer::Payload(body) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
        }
        PollAnswer::BadRequest => engine_error(StatusCode::BAD_REQUEST, 3, "Bad request", None),
        PollAnswer::TooLarge => engine_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            3,
            "Bad request",
            Some("the payload is larger than maxPayload"),
        ),
    }
}

/// The protocol's error answer: `{"code":N,"message":"…"}`, with a
/// `context` naming the reason when there is more to say.
fn engine_error(status: StatusCode, code: u8, message: &str, context: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "code": code, "message": message });
    if let Some(context) = context {
        body["context"] = serde_json::Value::from(context);
    }
    (status, axum::Json(body)).into_response()
}

/// The answer to a CORS preflight.
fn preflight(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// The query parameters an Engine.IO request may carry, borrowed from the
/// query string unless percent-encoded (a poll allocates nothing for them).
#[derive(Debug, Default)]
struct Query<'a> {
    eio: Option<Cow<'a, str>>,
    transport: Option<Cow<'a, str>>,
    sid: Option<Cow<'a, str>>,
    /// `j`: a JSONP poll, which is off.
    jsonp: bool,
    user: Option<String>,
    channel: Option<String>,
    token: Option<String>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Query<'a> {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "EIO" => parsed.eio = Some(value),
                "transport" => parsed.transport = Some(value),
                "sid" => parsed.sid = Some(value),
                "j" => parsed.jsonp = true,
                "user" => parsed.user = Some(value.into_owned()),
                "channel" => parsed.channel = Some(value.into_owned()),
                "token" => parsed.token = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

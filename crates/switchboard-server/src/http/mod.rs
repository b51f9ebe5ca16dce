//! The HTTP surface: the router and its handlers.

mod admin;
mod api;
mod document_root;
mod health;
mod page;

pub use document_root::DocumentRoot;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use serde::Deserialize;
use std::sync::Arc;
use switchboard_core::{ChannelName, Username};

use crate::access::token_expired;
use crate::app::AppState;
use crate::connections::{Seat, client_ip};
use crate::echo::Echo;
use crate::error::ApiError;
use crate::metrics::{Limit, PublishedOver};
use crate::rate_limit::RateLimit;
use crate::socket::{AbortConnection, SocketLoan};
use crate::transport::channel_session::{Counted, SessionLimits};
use crate::transport::native::ChatSession;
use crate::transport::socketio::{Endpoint, SocketIo};
use crate::transport::work_budget::WorkBudget;
use crate::transport::{sse, websocket};

/// What the handlers are given: the shared state, and the document root
/// only the router serves from.
#[derive(Clone)]
struct RouterState {
    app: AppState,
    document_root: Option<Arc<DocumentRoot>>,
    socketio: Arc<SocketIo>,
}

impl FromRef<RouterState> for Arc<SocketIo> {
    fn from_ref(state: &RouterState) -> Self {
        state.socketio.clone()
    }
}

impl FromRef<RouterState> for AppState {
    fn from_ref(state: &RouterState) -> AppState {
        state.app.clone()
    }
}

impl FromRef<RouterState> for Option<Arc<DocumentRoot>> {
    fn from_ref(state: &RouterState) -> Self {
        state.document_root.clone()
    }
}

/// Every route the server answers; files no route claims come from
/// `document_root` (`--static-dir`), if given.
pub fn router(
    state: AppState,
    document_root: Option<Arc<DocumentRoot>>,
    socketio: Arc<SocketIo>,
) -> Router {
    let max_msg_bytes = state.config.max_msg_bytes;
    let (socketio_endpoint, engineio_echo) = if state.config.socketio_conformance {
        (Endpoint::Reference, Some(Endpoint::EngineEcho))
    } else {
        (Endpoint::Channels, None)
    };
    let mut router = Router::new();
    if let Some(echo) = engineio_echo {
        router = router.route(
            "/engine.io/",
            any(move |state, socketio, request| engine_io(state, socketio, echo, request)),
        );
    }
    router
        .route(
            "/socket.io/",
            any(move |state, socketio, request| {
                engine_io(state, socketio, socketio_endpoint, request)
            }),
        )
        .route("/socket.io/socket.io.js", get(socketio_client))
        .route("/socket.io/socket.io.min.js", get(socketio_client))
        .route("/", get(home))
        .route("/chat/", get(chat_page))
        .route("/chat/{file}", get(chat_asset))
        .route("/echo", get(echo))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics_here))
        .route("/readyz", get(health::readyz))
        .route("/ws", get(native_ws))
        .route("/ws/{user}", get(native_ws_named))
        .route("/sse", get(event_stream))
        .merge(api_routes(max_msg_bytes))
        .merge(admin::routes(state.clone()))
        .fallback(static_file)
        .method_not_allowed_fallback(method_not_allowed)
        // Outside the routes, to answer preflights on them.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::cors,
        ))
        .layer(axum::middleware::from_fn(request_log))
        .with_state(RouterState {
            app: state,
            document_root,
            socketio,
        })
}

/// `GET /metrics` on the main port, unless `--metrics-listen` moved it.
async fn metrics_here(State(state): State<AppState>) -> Response {
    if state.config.metrics_listen.is_some() {
        return ApiError::not_found("metrics are served on --metrics-listen").into_response();
    }
    metrics_text(&state)
}

/// Every metric, in Prometheus's text format.
pub fn metrics_text(state: &AppState) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The router of `--metrics-listen`: `/metrics` alone.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { metrics_text(&state) }),
        )
        .with_state(state)
}

/// One debug line per HTTP request: method, path (never the query, which
/// may carry a token), status and time to the response head.
async fn request_log(request: Request, next: axum::middleware::Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "http request"
    );
    response
}

/// The JSON HTTP API.
fn api_routes(max_msg_bytes: usize) -> Router<RouterState> {
    Router::new()
        .route("/api/channels", get(api::list_channels))
        .route(
            "/api/channels/{channel}/messages",
            get(api::channel_messages)
                .post(api::publish_message)
                .layer(DefaultBodyLimit::max(api::publish_body_limit(
                    max_msg_bytes,
                ))),
        )
        .route(
            "/api/channels/{channel}/presence",
            get(api::channel_presence),
        )
        .route(
            "/api/pipeline",
            get(api::pipeline).delete(api::reset_pipeline),
        )
}

/// `/`: the operator's `index.html` from the document root if there is one,
/// the chat page otherwise.
async fn home(
    State(document_root): State<Option<Arc<DocumentRoot>>>,
    request: Request,
) -> Response {
    if let Some(root) = &document_root
        && root.has_index().await
    {
        return root.serve(request).await;
    }
    page::index(request.headers())
}

async fn chat_page(headers: HeaderMap) -> Response {
    page::index(&headers)
}

async fn chat_asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    page::asset(&file, &headers)
}

/// Every path no route claims: a file from the document root, or 404.
async fn static_file(
    State(document_root): State<Option<Arc<DocumentRoot>>>,
    request: Request,
) -> Response {
    match &document_root {
        Some(root) => root.serve(request).await,
        None => not_found(request.method().clone(), request.uri().clone())
            .await
            .into_response(),
    }
}

/// `GET /sse`: Server-Sent Events for one or more channels.
async fn event_stream(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    state.access.check_origin(request.headers())?;
    let query = request.uri().query().unwrap_or("");
    let max_channels = state.config.max_subscriptions;
    let mut stream = sse::StreamRequest::parse(query, request.headers(), max_channels)
        .inspect_err(|e| {
            if e.code == sse::TOO_MANY_CHANNELS {
                state.metrics.rejected(Limit::MaxSubscriptions);
            }
        })?;
    let admission = state
        .access
        .admit(request.headers(), stream.token.as_deref())?;
    if let Some(username) = admission.username() {
        stream.user = Some(username.clone());
    }
    for channel in &stream.channels {
        admission.check_subscribe(channel)?;
    }
    let seat = take_seat(&state, &request)?;
    let abort = request.extensions().get::<AbortConnection>().cloned();
    // A body written to the socket directly must be chunked and sent:
    // HTTP/1.0 bodies are not chunked, and a HEAD response has none.
    let writes_itself = request.method() == Method::GET && request.version() == Version::HTTP_11;
    let socket = request
        .extensions()
        .get::<SocketLoan>()
        .filter(|_| writes_itself)
        .cloned();
    sse::open(&state, stream, admission, seat, abort, socket).await
}

/// Engine.IO and Socket.IO: `/socket.io/` (and `/engine.io/` in
/// conformance mode).
async fn engine_io(
    State(state): State<AppState>,
    State(socketio): State<Arc<SocketIo>>,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    socketio.serve(&state, endpoint, request).await
}

async fn socketio_client(State(socketio): State<Arc<SocketIo>>) -> Response {
    socketio.client_js()
}

async fn echo(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    state.access.check_origin(request.headers())?;
    let seat = take_seat(&state, &request)?;
    websocket::upgrade(request, &state, seat, |_| Echo)
}

/// A place for a new connection under `--max-connections` and
/// `--max-connections-per-ip`.
fn take_seat(state: &AppState, request: &Request) -> Result<Seat, ApiError> {
    let ip = client_ip(
        request.headers(),
        request.extensions().get(),
        state.config.trust_proxy,
    );
    Ok(state.admit(ip)?)
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
struct WsParams {
    user: Option<String>,
    channel: Option<String>,
    token: Option<String>,
}

async fn native_ws(
    State(state): State<AppState>,
    params: Result<Query<WsParams>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let WsParams {
        user,
        channel,
        token,
    } = params;
    open_native(state, user, channel, token, request)
}

async fn native_ws_named(
    State(state): State<AppState>,
    Path(user): Path<String>,
    params: Result<Query<WsParams>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    open_native(state, Some(user), params.channel, params.token, request)
}

/// Opens a `/ws` session: with tokens, as the token's user and only for
/// the channels it allows; refused before the upgrade otherwise.
fn open_native(
    state: AppState,
    user: Option<String>,
    channel: Option<String>,
    token: Option<String>,
    request: Request,
) -> Result<Response, ApiError> {
    state.access.check_origin(request.headers())?;
    let admission = state.access.admit(request.headers(), token.as_deref())?;
    let username = match (admission.username(), user.as_deref()) {
        (Some(name), _) => name.clone(),
        (None, None | Some("")) => Username::guest(),
        (None, Some(name)) => Username::parse(name).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string())
        })?,
    };
    let channel = channel
        .map(|name| ChannelName::parse(&name))
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string()))?;
    if let Some(channel) = &channel {
        admission.check_subscribe(channel)?;
    }
    let seat = take_seat(&state, &request)?;
    let access = state.access.clone();
    let node = state.node.clone();
    let limits = SessionLimits {
        publish: RateLimit::new(state.config.publish_rate, state.config.publish_burst),
        max_subscriptions: state.config.max_subscriptions,
        work: WorkBudget::new(state.config.max_requests_in_flight),
        counted: Counted {
            metrics: state.metrics.clone(),
            over: PublishedOver::WebSocket,
        },
    };
    websocket::upgrade(request, &state, seat, move |connection| {
        let outbox = connection.outbox.clone();
        let on_expiry = Box::new(move || outbox.close(token_expired()));
        let permits = access.permits(admission, on_expiry);
        ChatSession::open(node, connection, username, channel, limits, permits)
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

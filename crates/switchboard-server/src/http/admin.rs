//! The admin page, `/admin`: live connections by transport, messages per
//! second, channels with their subscribers and presence, a publish box and
//! a button that disconnects a user. Behind HTTP Basic with
//! `--admin-password` (or, with `--auth token`, the API key); off without
//! either.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::wire::Wire;
use switchboard_core::{ChannelName, Username};
use switchboard_ws::{CloseCode, CloseFrame};

use crate::access::digest;
use crate::app::AppState;
use crate::config::{AuthMode, Config};
use crate::error::ApiError;
use crate::metrics::PublishedOver;
use crate::transport::socketio::chat::disconnect_by_server;

use super::RouterState;
use super::api::{json_error, storage_error, store};

/// At most this many channels are listed (the busiest first).
const MAX_CHANNELS_SHOWN: usize = 200;

/// The admin page, its assets and its API, each behind the password.
pub(super) fn routes(state: AppState) -> Router<RouterState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/admin.js", get(script))
        .route("/admin/admin.css", get(style))
        .route("/admin/api/overview", get(overview))
        .route("/admin/api/channels/{channel}/messages", post(publish))
        .route("/admin/api/users/{username}/disconnect", post(disconnect))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
}

/// The secrets that open the page: the admin password, and with tokens
/// the API key.
fn secrets(config: &Config) -> Vec<&str> {
    let api_key = (config.auth == AuthMode::Token)
        .then_some(config.api_key.as_deref())
        .flatten();
    config
        .admin_password
        .as_deref()
        .into_iter()
        .chain(api_key)
        .collect()
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let secrets = secrets(&state.config);
    if secrets.is_empty() {
        return ApiError::not_found(
            "the admin page is off: start with --admin-password (or --api-key with --auth token)",
        )
        .into_response();
    }
    match basic_password(request.headers()) {
        Some(given) if secrets.iter().any(|secret| matches(&given, secret)) => {
            next.run(request).await
        }
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin page needs its password (HTTP Basic, any user name)",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"switchboard admin\", charset=\"UTF-8\""),
            );
            response
        }
    }
}

/// The password of `Authorization: Basic …`.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    let (_, password) = credentials.split_once(':')?;
    Some(password.to_owned())
}

/// Compared as digests, in constant time.
fn matches(given: &str, secret: &str) -> bool {
    bool::from(digest(given).ct_eq(&digest(secret)))
}

const ADMIN_HTML: &str = include_str!("../../web/admin/index.html");
const ADMIN_JS: &str = include_str!("../../web/admin/admin.js");
const ADMIN_CSS: &str = include_str!("../../web/admin/admin.css");

/// Its own scripts and styles only, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

async fn page() -> Response {
    asset(ADMIN_HTML, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(ADMIN_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(ADMIN_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /admin/api/overview`: what the page shows, read from the metrics
/// and the node. Rates are the page's: differences between two polls of
/// the totals.
async fn overview(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let connections: serde_json::Map<String, Value> = state
        .metrics
        .connection_counts()
        .into_iter()
        .map(|(transport, count)| (transport.to_owned(), json!(count)))
        .collect();
    let mut channels = state.node.channels().await.map_err(storage_error)?;
    channels.retain(|c| c.subscribers > 0);
    channels.sort_by(|a, b| {
        b.subscribers
            .cmp(&a.subscribers)
            .then(a.channel.cmp(&b.channel))
    });
    channels.truncate(MAX_CHANNELS_SHOWN);
    let mut listed = Vec::with_capacity(channels.len());
    for summary in channels {
        let presence = match ChannelName::parse(&summary.channel) {
            Ok(channel) => state.node.presence(&channel).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        listed.push(json!({
            "channel": summary.channel,
            "subscribers": summary.subscribers,
            "last_offset": summary.last_offset,
            "presence": presence,
        }));
    }
    Ok(Json(json!({
        "connections": connections,
        "published_total": state.metrics.published_total(),
        "delivered_total": state.metrics.delivered_total(),
        "channels": listed,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPublish {
    username: String,
    msg: String,
}

/// `POST /admin/api/channels/{channel}/messages`: publishes as anyone.
async fn publish(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    body: Result<Json<AdminPublish>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(json_error)?;
    let channel = ChannelName::parse(&channel)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string()))?;
    let username = Username::parse(&body.username)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string()))?;
    let publication = store(
        &state,
        channel,
        username,
        body.msg,
        None,
        PublishedOver::Http,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "channel": publication.channel, "offset": publication.offset })),
    ))
}

/// `POST /admin/api/users/{username}/disconnect`: closes every connection
/// of the user subscribed to something on this node.
async fn disconnect(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let username = Username::parse(&username)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string()))?;
    let connections = state.node.connections_of(&username);
    for connection in &connections {
        disconnect_one(connection);
    }
    tracing::info!(
        user = username.as_str(),
        connections = connections.len(),
        "disconnected by an administrator"
    );
    Ok(Json(json!({ "disconnected": connections.len() })))
}

fn disconnect_one(connection: &SubscriberHandle) {
    let close = CloseFrame::new(
        CloseCode::POLICY_VIOLATION,
        "disconnected by an administrator",
    );
    match connection.wire {
        // Told so, a Socket.IO client does not reconnect by itself.
        Wire::SocketIo(_) => disconnect_by_server(connection, close),
        _ => connection.outbox.close(close),
    }
}

//! The JSON HTTP API over channels.

use axum::Extension;
use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_core::history::HistoryQuery;
use switchboard_core::idempotency::IdempotencyKey;
use switchboard_core::node::{AckTarget, PublishError};
use switchboard_core::pipeline::PipelineSnapshot;
use switchboard_core::{ChannelName, Username};
use switchboard_proto::Publication;
use switchboard_proto::message::format_time;
use tokio::sync::oneshot;

use crate::access::origin::allow_cors;
use crate::access::{AccessError, Caller, forbidden_publish, forbidden_subscribe};
use crate::app::{AppState, Publisher};
use crate::connections::client_ip;
use crate::error::ApiError;
use crate::metrics::{Limit, PublishedOver};
use crate::transport::channel_session::history_limit;

/// `GET /api/channels`: channels with subscriber count and last offset.
pub async fn list_channels(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_service(&state, &headers)?;
    let channels = state.node.channels().await.map_err(storage_error)?;
    let channels: Vec<Value> = channels
        .into_iter()
        .map(|c| json!({"channel": c.channel, "subscribers": c.subscribers, "last_offset": c.last_offset}))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/channels/{channel}/messages?since=&limit=`: messages after
/// `since`, or the latest ones without it; ascending by offset.
pub async fn channel_messages(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(channel)?;
    authorize_read(&state, &headers, &channel)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = history_limit(params.limit)
        .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", reason))?;
    let query = params
        .since
        .map_or(HistoryQuery::Latest, HistoryQuery::Since);
    let page = state
        .node
        .history(&channel, query, limit)
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({
        "channel": channel.as_str(),
        "epoch": page.epoch,
        "messages": page.messages,
    })))
}

/// The body of `POST /api/channels/{channel}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Who publishes: required with the API key or without tokens; with a
    /// user's Bearer token it is the token's `sub`, and may be left out.
    username: Option<String>,
    msg: String,
    /// Makes a resend of this publish a repeat: see `docs/protocol.md`.
    idempotency_key: Option<String>,
}

/// `POST /api/channels/{channel}/messages`: stores a message, delivers it to
/// every subscriber on every transport, and answers `201` once it is durable.
pub async fn publish_message(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = channel_name(channel)?;
    let caller = state.access.caller(&headers)?;
    let publisher = match caller {
        Caller::Service => Publisher::ApiKey,
        Caller::Anyone | Caller::User(_) => {
            let peer = peer.as_ref().map(|Extension(peer)| peer);
            match client_ip(&headers, peer, state.config.trust_proxy) {
                Some(ip) => Publisher::Address(ip),
                None => Publisher::ApiKey,
            }
        }
    };
    if let Err(refusal) = state.http_publish.try_take(publisher) {
        state.metrics.rejected(Limit::HttpPublishRate);
        return Err(ApiError::rate_limited(
            "over --http-publish-rate: wait retry_after_ms before publishing again",
            refusal.retry_after,
        ));
    }
    let Json(body) = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            state.metrics.rejected(Limit::MaxMsgBytes);
        }
        json_error(rejection)
    })?;
    let username = body
        .username
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_username", e.to_string()))?;
    let username = authorize_publish(&caller, &channel, username)?;
    let key = body
        .idempotency_key
        .map(|key| IdempotencyKey::parse(&key))
        .transpose()
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                e.to_string(),
            )
        })?;
    let publication = store(
        &state,
        channel,
        username,
        body.msg,
        key,
        PublishedOver::Http,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "channel": publication.channel,
            "offset": publication.offset,
            "time": format_time(publication.time),
        })),
    ))
}

/// Stores a message and delivers it, as a publish over `over`; answers
/// once it is durable (or refused).
pub async fn store(
    state: &AppState,
    channel: ChannelName,
    username: Username,
    msg: String,
    key: Option<IdempotencyKey>,
    over: PublishedOver,
) -> Result<Arc<Publication>, ApiError> {
    let (reply, stored) = oneshot::channel();
    state
        .node
        .publish(channel, username, msg, key, AckTarget::Reply(reply))
        .map_err(|e| {
            state.metrics.publish_refused(&e);
            publish_error(e)
        })?;
    state.metrics.published(over);
    stored
        .await
        .map_err(|_| ApiError::internal("the store stopped before answering"))?
        .map_err(publish_error)
}

/// Who publishes: the body's `username` for the API key (or anyone,
/// without tokens); a user's token's `sub`, if it may publish there and
/// the body names no one else.
fn authorize_publish(
    caller: &Caller,
    channel: &ChannelName,
    username: Option<Username>,
) -> Result<Username, ApiError> {
    let named = || ApiError::bad_request("username is required: who publishes the message");
    match caller {
        Caller::Anyone | Caller::Service => username.ok_or_else(named),
        Caller::User(grant) => {
            if !grant.may_publish(channel) {
                return Err(forbidden_publish(channel).into());
            }
            match username {
                Some(name) if name != grant.username => Err(AccessError::Forbidden(format!(
                    "the token is {}'s: it cannot publish as {}",
                    grant.username.as_str(),
                    name.as_str()
                ))
                .into()),
                _ => Ok(grant.username.clone()),
            }
        }
    }
}

/// History and presence: the API key, or a token that may subscribe.
fn authorize_read(
    state: &AppState,
    headers: &HeaderMap,
    channel: &ChannelName,
) -> Result<(), ApiError> {
    match state.access.caller(headers)? {
        Caller::User(grant) if !grant.may_subscribe(channel) => {
            Err(forbidden_subscribe(channel).into())
        }
        _ => Ok(()),
    }
}

/// What concerns every channel: the API key (or anyone, without tokens).
fn require_service(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.access.caller(headers)? {
        Caller::User(_) => Err(AccessError::Forbidden(
            "this needs the API key (Authorization: apikey KEY)".into(),
        )
        .into()),
        Caller::Anyone | Caller::Service => Ok(()),
    }
}

/// Largest `POST …/messages` body: a `msg` of `max_msg_bytes`, even if every
/// character were escaped as `\uXXXX`, plus room for the rest.
pub fn publish_body_limit(max_msg_bytes: usize) -> usize {
    max_msg_bytes.saturating_mul(6).saturating_add(4096)
}

pub(super) fn json_error(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
        }
        JsonRejection::JsonDataError(_) => ApiError::bad_request(message),
        rejection if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        _ => ApiError::bad_request(message),
    }
}

fn publish_error(e: PublishError) -> ApiError {
    let message = e.to_string();
    match e {
        PublishError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", message)
        }
        PublishError::Overloaded => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
        PublishError::Storage(_) => storage_error(message),
    }
}

/// `GET /api/channels/{channel}/presence`: usernames online.
pub async fn channel_presence(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(channel)?;
    authorize_read(&state, &headers, &channel)?;
    let users = state.node.presence(&channel).await.map_err(storage_error)?;
    Ok(Json(json!({ "channel": channel.as_str(), "users": users })))
}

/// `GET /api/pipeline`: where published messages spend their time, hop
/// by hop, since the start or the last reset (see `switchboard_core::pipeline`).
pub async fn pipeline(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PipelineSnapshot>, ApiError> {
    require_service(&state, &headers)?;
    Ok(Json(state.node.pipeline().snapshot()))
}

/// `DELETE /api/pipeline`: starts the histograms over (`204`).
pub async fn reset_pipeline(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_service(&state, &headers)?;
    state.node.pipeline().reset();
    Ok(StatusCode::NO_CONTENT)
}

/// CORS for the API: a page of an allowed origin (`--allowed-origins`, or
/// the server's own) may read the answers and send credentials; a
/// preflight is answered here.
pub async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let allowed = state.access.origins.cors_origin(request.headers());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if allowed.is_some() {
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        response
    } else {
        next.run(request).await
    };
    if let Some(origin) = allowed {
        allow_cors(response.headers_mut(), origin);
    }
    response
}

fn channel_name(path: Result<Path<String>, PathRejection>) -> Result<ChannelName, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    ChannelName::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string()))
}

pub(super) fn storage_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        e.to_string(),
    )
}

//! The JSON HTTP API over channels.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::ChannelName;
use switchboard_core::history::HistoryQuery;

use super::ApiError;
use crate::app::AppState;
use crate::transport::native::history_limit;

/// `GET /api/channels`: channels with subscriber count and last offset.
pub async fn list_channels(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(channel)?;
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

/// `GET /api/channels/{channel}/presence`: usernames online.
pub async fn channel_presence(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(channel)?;
    let users = state.node.presence(&channel);
    Ok(Json(json!({ "channel": channel.as_str(), "users": users })))
}

fn channel_name(path: Result<Path<String>, PathRejection>) -> Result<ChannelName, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    ChannelName::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string()))
}

fn storage_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        e.to_string(),
    )
}

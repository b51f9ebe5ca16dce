//! Health checks for orchestrators: `/healthz` (the process serves) and
//! `/readyz` (it can do its work: the store answers and it is not
//! shutting down).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;

/// Longest wait for the store before `/readyz` says it does not answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process answers HTTP at all.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the history store (or Redis) answers and the
/// server is not shutting down; 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutting_down.load(Ordering::Relaxed) {
        return not_ready("shutting down");
    }
    match tokio::time::timeout(STORE_TIMEOUT, state.node.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => not_ready(&format!("the store does not answer: {e}")),
        Err(_) => not_ready(&format!(
            "the store did not answer within {}",
            humantime::format_duration(STORE_TIMEOUT)
        )),
    }
}

fn not_ready(reason: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not_ready", "reason": reason })),
    )
}

//! Errors at the HTTP edge: every failure a client can cause becomes a status
//! code and a JSON body `{"error":{"code","message"}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;
use std::time::Duration;
use switchboard_ws::handshake::{HandshakeError, SUPPORTED_VERSION};

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code; clients may match on it.
    pub code: &'static str,
    pub message: String,
    /// Extra headers the status requires (e.g. `Upgrade` with 426).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Over a rate: when to try again (`retry_after_ms` in the body).
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited`: try again after `retry_after` (also said in
    /// whole seconds by `Retry-After`).
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
        error.retry_after = Some(retry_after);
        error
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

impl From<HandshakeError> for ApiError {
    fn from(e: HandshakeError) -> Self {
        let message = e.to_string();
        match e {
            HandshakeError::NotUpgrade => {
                ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
                    .with_header(header::UPGRADE, "websocket")
                    .with_header(header::CONNECTION, "Upgrade")
            }
            // RFC 6455 section 4.4: name the versions we do speak.
            HandshakeError::UnsupportedVersion => ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_websocket_version",
                message,
            )
            .with_header(header::SEC_WEBSOCKET_VERSION, SUPPORTED_VERSION),
            HandshakeError::NotGet => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
            .with_header(header::ALLOW, "GET"),
            HandshakeError::HttpVersion => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_handshake", message)
            }
            HandshakeError::MissingKey | HandshakeError::InvalidKey => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_websocket_key", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "{}", self.message);
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(retry_after) = self.retry_after {
            body["error"]["retry_after_ms"] = json!(retry_after.as_millis() as u64);
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

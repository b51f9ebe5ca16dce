//! Errors at the HTTP edge: every failure a client can cause becomes a status
//! code and a JSON body `{"error":{"code","message"}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;
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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
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
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

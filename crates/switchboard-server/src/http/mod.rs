//! The HTTP surface: the router and its handlers.

mod error;

pub use error::ApiError;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use http::{Method, StatusCode, Uri};

use crate::app::AppState;
use crate::echo::Echo;
use crate::transport::websocket;

/// Every route the server answers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/echo", get(echo))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn echo(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    websocket::upgrade(request, &state, |_id| Echo)
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

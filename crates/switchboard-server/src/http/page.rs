//! The browser chat page, compiled into the binary: `/chat/` and its assets.
//!
//! The files live in `crates/switchboard-server/web/` as plain HTML, CSS and
//! JavaScript modules (no build step). Each is served with a strong `ETag`
//! and `Cache-Control: no-cache`, so browsers revalidate cheaply and a new
//! binary is picked up at once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("access.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("channel-transport.js", "text/javascript; charset=utf-8"),
    asset!("channels.js", "text/javascript; charset=utf-8"),
    asset!("chat-socket.js", "text/javascript; charset=utf-8"),
    asset!("chat-sse.js", "text/javascript; charset=utf-8"),
    asset!("chat-socketio.js", "text/javascript; charset=utf-8"),
    asset!("view.js", "text/javascript; charset=utf-8"),
];

const INDEX: &str = "index.html";

/// The page may only load its own scripts and styles and talk to its own
/// origin: a message that slipped past text rendering still could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Strong validators, one per asset, computed once from the bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let mut hasher = DefaultHasher::new();
            asset.body.hash(&mut hasher);
            HeaderValue::try_from(format!("\"{:016x}\"", hasher.finish()))
                .expect("hex digits are a valid header value")
        })
        .collect()
});

/// The chat page itself (`/chat/`, and `/` unless the document root has an
/// `index.html`).
pub fn index(headers: &HeaderMap) -> Response {
    serve(INDEX, headers).expect("index.html is embedded")
}

/// `/chat/{file}`: one of the page's assets, or 404.
pub fn asset(name: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    serve(name, headers).ok_or_else(|| ApiError::not_found(format!("no such file: /chat/{name}")))
}

fn serve(name: &str, headers: &HeaderMap) -> Option<Response> {
    let position = ASSETS.iter().position(|asset| asset.name == name)?;
    let asset = &ASSETS[position];
    let etag = ETAGS[position].clone();
    let mut response = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(asset.body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag);
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == INDEX {
        response_headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    Some(response)
}

/// Whether `If-None-Match` names `etag` (or is `*`), per RFC 9110 §13.1.2.
pub fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let wanted = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_etag() {
        let mut etags: Vec<_> = ETAGS.iter().collect();
        etags.sort();
        etags.dedup();
        assert_eq!(etags.len(), ASSETS.len());
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &etag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abcd\""));
        assert!(!if_none_match(&headers, &etag));
    }
}

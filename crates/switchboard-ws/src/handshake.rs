//! The opening handshake (RFC 6455 section 4.2): validating the client's
//! upgrade request and computing the server's answer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, Method, Version, header};
use sha1::{Digest, Sha1};

use crate::deflate::{self, DeflateOffer};

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version RFC 6455 defines.
pub const SUPPORTED_VERSION: &str = "13";

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket handshake must use GET")]
    NotGet,
    #[error("a WebSocket handshake needs HTTP/1.1 or later")]
    HttpVersion,
    #[error("this endpoint speaks WebSocket: send `Connection: Upgrade` and `Upgrade: websocket`")]
    NotUpgrade,
    #[error("unsupported Sec-WebSocket-Version; this server speaks version 13")]
    UnsupportedVersion,
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    InvalidKey,
}

/// A valid upgrade request, ready to be answered with `101 Switching Protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The permessage-deflate offer taken, if compression is enabled and offered.
    pub deflate: Option<DeflateOffer>,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// Validates an upgrade request. `allow_deflate` is the server's setting;
/// compression is used only when the client offers it too.
pub fn accept(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    allow_deflate: bool,
) -> Result<Accepted, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::NotGet);
    }
    if version < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(SUPPORTED_VERSION.as_bytes())
    {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?
        .as_bytes();
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    let deflate = if allow_deflate {
        deflate::negotiate(
            headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    } else {
        None
    };
    Ok(Accepted {
        accept: accept_key(key),
        deflate,
    })
}

/// Whether a comma-separated header holds `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn request() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    fn check(headers: &HeaderMap) -> Result<Accepted, HandshakeError> {
        accept(&Method::GET, Version::HTTP_11, headers, true)
    }

    #[test]
    fn accepts_a_valid_request() {
        let accepted = check(&request()).unwrap();
        assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.deflate, None);
    }

    #[test]
    fn negotiates_deflate_only_when_offered_and_allowed() {
        let mut h = request();
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
        );
        assert!(check(&h).unwrap().deflate.is_some());
        let off = accept(&Method::GET, Version::HTTP_11, &h, false).unwrap();
        assert_eq!(off.deflate, None);
    }

    #[test]
    fn refuses_a_plain_request() {
        let mut h = request();
        h.remove(header::UPGRADE);
        assert_eq!(check(&h), Err(HandshakeError::NotUpgrade));
        assert_eq!(check(&HeaderMap::new()), Err(HandshakeError::NotUpgrade));
    }

    #[test]
    fn refuses_a_bad_version() {
        let mut h = request();
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check(&h), Err(HandshakeError::UnsupportedVersion));
        h.remove(header::SEC_WEBSOCKET_VERSION);
        assert_eq!(check(&h), Err(HandshakeError::UnsupportedVersion));
    }

    #[test]
    fn refuses_a_missing_or_malformed_key() {
        let mut h = request();
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(check(&h), Err(HandshakeError::MissingKey));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("c2hvcnQ="),
        );
        assert_eq!(check(&h), Err(HandshakeError::InvalidKey));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("not base64!!"),
        );
        assert_eq!(check(&h), Err(HandshakeError::InvalidKey));
    }

    #[test]
    fn refuses_other_methods_and_http_1_0() {
        assert_eq!(
            accept(&Method::POST, Version::HTTP_11, &request(), true),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            accept(&Method::GET, Version::HTTP_10, &request(), true),
            Err(HandshakeError::HttpVersion)
        );
    }
}

//! Long-polling without sticky sessions (`--engine redis`): a session's id
//! names the node that holds it, and a GET or POST that reaches another
//! node is relayed to that one through Redis, answered there as if it had
//! arrived there, and the answer relayed back. A WebSocket (an upgrade)
//! cannot be relayed: on another node it is refused as an unknown session,
//! and the client goes on polling.
//!
//! On the relay, a request is `Q`, its number (8 bytes), the asking node's
//! address (1-byte length), the method (`G`/`P`), the URI and the
//! `Content-Type` (2-byte lengths each), then the body; an answer is `A`,
//! the number, the status (2 bytes), the `Content-Type` (2-byte length),
//! then the body.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes};
use http::{HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use switchboard_core::redis::{Relay, RelayError};
use tokio::sync::oneshot;

use super::SocketIo;
use super::session::NodeTag;
use crate::app::AppState;

/// A relayed answer, as the asking node returns it.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// This node's end of the relay.
pub struct Forwarder {
    relay: Relay,
    /// Where answers to this node's requests come.
    address: String,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
    /// Longest wait for an answer: a long poll waits up to a ping interval
    /// before it has something to return.
    patience: Duration,
}

/// A node's relay address: its tag in hex.
pub fn address(tag: NodeTag) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

impl Forwarder {
    pub fn new(relay: Relay, tag: NodeTag, patience: Duration) -> Forwarder {
        Forwarder {
            relay,
            address: address(tag),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            patience,
        }
    }

    /// Listens on this node's address: requests from other nodes are
    /// answered by `socketio`, answers to this node's go to their waiters.
    /// Returns once listening (or once Redis has had a while to answer).
    pub async fn start(socketio: Arc<SocketIo>, state: AppState) {
        let Some(forwarder) = socketio.forwarder.as_ref() else {
            return;
        };
        let mut inbox = forwarder.relay.listen(&forwarder.address).await;
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                match message.first() {
                    Some(b'Q') => {
                        let (socketio, state) = (socketio.clone(), state.clone());
                        tokio::spawn(async move { socketio.answer_relayed(&state, message).await });
                    }
                    Some(b'A') => {
                        if let Some(forwarder) = &socketio.forwarder {
                            forwarder.take_answer(message);
                        }
                    }
                    _ => tracing::warn!("unreadable relay message"),
                }
            }
        });
    }

    /// Relays `request` to the node tagged `owner`; its answer, or `None`
    /// if no node answers for it (the client then opens a new session).
    pub async fn forward(
        &self,
        owner: NodeTag,
        request: Request,
        limit: usize,
    ) -> Option<Response> {
        let (parts, body) = request.into_parts();
        let body = match axum::body::to_bytes(body, limit).await {
            Ok(body) => body,
            Err(_) => return Some(StatusCode::PAYLOAD_TOO_LARGE.into_response()),
        };
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.waiting.lock().insert(number, reply);
        let message = encode_request(number, &self.address, &parts, &body);
        let sent = self.relay.send(&address(owner), message).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(self.patience, answer)
                .await
                .ok()
                .and_then(Result::ok),
            Err(RelayError::NobodyListens(_)) => None,
            Err(RelayError::Redis(e)) => {
                tracing::debug!("cannot relay a poll: {e}");
                None
            }
        };
        self.waiting.lock().remove(&number);
        let answer = answer?;
        let mut response = (answer.status, answer.body).into_response();
        if let Some(content_type) = answer.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        Some(response)
    }

    fn take_answer(&self, message: Bytes) {
        let Some((number, answer)) = decode_answer(message) else {
            return tracing::warn!("unreadable relayed answer");
        };
        if let Some(waiter) = self.waiting.lock().remove(&number) {
            let _ = waiter.send(answer);
        }
    }
}

impl SocketIo {
    /// Answers a request relayed from another node as if it had come here.
    async fn answer_relayed(&self, state: &AppState, message: Bytes) {
        let Some((number, reply_to, request)) = decode_request(message) else {
            return tracing::warn!("unreadable relayed request");
        };
        let response = self.route(state, super::Endpoint::Channels, request).await;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let answer = encode_answer(number, &parts, &body);
        if let Some(forwarder) = &self.forwarder
            && let Err(e) = forwarder.relay.send(&reply_to, answer).await
        {
            tracing::debug!("relayed answer lost: {e}");
        }
    }
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u16(bytes.len().min(u16::MAX as usize) as u16);
    out.put_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
}

fn take_short(input: &mut Bytes) -> Option<Bytes> {
    if input.remaining() < 2 {
        return None;
    }
    let len = input.get_u16() as usize;
    (input.remaining() >= len).then(|| input.split_to(len))
}

fn encode_request(
    number: u64,
    reply_to: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    out.put_u8(b'Q');
    out.put_u64(number);
    out.put_u8(reply_to.len() as u8);
    out.put_slice(reply_to.as_bytes());
    out.put_u8(if parts.method == Method::POST {
        b'P'
    } else {
        b'G'
    });
    put_short(&mut out, parts.uri.to_string().as_bytes());
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    put_short(&mut out, content_type.map_or(&[][..], |v| v.as_bytes()));
    out.put_slice(body);
    out
}

fn decode_request(mut input: Bytes) -> Option<(u64, String, Request)> {
    input.advance(1);
    if input.remaining() < 9 {
        return None;
    }
    let number = input.get_u64();
    let len = input.get_u8() as usize;
    if input.remaining() < len + 1 {
        return None;
    }
    let reply_to = String::from_utf8(input.split_to(len).to_vec()).ok()?;
    let method = if input.get_u8() == b'P' {
        Method::POST
    } else {
        Method::GET
    };
    let uri = take_short(&mut input)?;
    let content_type = take_short(&mut input)?;
    let mut request = Request::builder()
        .method(method)
        .uri(std::str::from_utf8(&uri).ok()?);
    if !content_type.is_empty() {
        request = request.header(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(content_type).ok()?,
        );
    }
    let request = request.body(Body::from(input)).ok()?;
    Some((number, reply_to, request))
}

fn encode_answer(number: u64, parts: &http::response::Parts, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    out.put_u8(b'A');
    out.put_u64(number);
    out.put_u16(parts.status.as_u16());
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    put_short(&mut out, content_type.map_or(&[][..], |v| v.as_bytes()));
    out.put_slice(body);
    out
}

fn decode_answer(mut input: Bytes) -> Option<(u64, Answer)> {
    input.advance(1);
    if input.remaining() < 10 {
        return None;
    }
    let number = input.get_u64();
    let status = StatusCode::from_u16(input.get_u16()).ok()?;
    let content_type = take_short(&mut input)?;
    let content_type = (!content_type.is_empty())
        .then(|| HeaderValue::from_maybe_shared(content_type).ok())
        .flatten();
    Some((
        number,
        Answer {
            status,
            content_type,
            body: input,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_answer_cross_the_relay_intact() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/socket.io/?EIO=4&transport=polling&sid=abc")
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let message = encode_request(7, "0a0b0c0d", &parts, b"42[\"publish\"]");
        let (number, reply_to, decoded) = decode_request(Bytes::from(message)).unwrap();
        assert_eq!((number, reply_to.as_str()), (7, "0a0b0c0d"));
        assert_eq!(decoded.method(), Method::POST);
        assert_eq!(decoded.uri(), "/socket.io/?EIO=4&transport=polling&sid=abc");
        assert_eq!(
            decoded.headers()[header::CONTENT_TYPE],
            "text/plain;charset=UTF-8"
        );

        let response = Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let message = encode_answer(7, &parts, b"{\"code\":1}");
        let (number, answer) = decode_answer(Bytes::from(message)).unwrap();
        assert_eq!(number, 7);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.content_type.unwrap(), "application/json");
        assert_eq!(&answer.body[..], b"{\"code\":1}");
        assert!(decode_answer(Bytes::from_static(b"A12")).is_none());
        assert!(decode_request(Bytes::from_static(b"Q")).is_none());
    }
}

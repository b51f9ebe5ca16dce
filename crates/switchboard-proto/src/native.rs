//! The native protocol on `GET /ws`: one JSON object per text frame, with a
//! `type`. `docs/protocol.md` is the reference; this module is its parser and
//! serializer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::Publication;

/// A client's request id, echoed back in the answer: any JSON string or number.
pub type RequestId = Value;

/// A request from the client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Join a channel; with `since`, first replay every stored message with a
    /// greater offset. With `epoch`, a `since` from another epoch replays the
    /// whole retained history instead.
    Subscribe {
        channel: String,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<RequestId>,
    },
    Unsubscribe {
        channel: String,
        id: Option<RequestId>,
    },
    /// With `idempotency_key`, a repeat within the server's window (a
    /// resend after a dropped connection) is acknowledged with the first
    /// publish's offset and not stored again.
    Publish {
        channel: String,
        msg: String,
        idempotency_key: Option<String>,
        id: Option<RequestId>,
    },
    History {
        channel: String,
        since: Option<u64>,
        limit: Option<u32>,
        id: Option<RequestId>,
    },
    Presence {
        channel: String,
        id: Option<RequestId>,
    },
    Ping {
        id: Option<RequestId>,
    },
    /// A new connection token for the same user, before the current one
    /// expires (`--auth token`).
    Refresh {
        token: String,
        id: Option<RequestId>,
    },
}

/// The `type`s [`Request`] accepts.
pub const REQUEST_TYPES: [&str; 7] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "presence",
    "ping",
    "refresh",
];

/// What a text frame holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Request(Request),
    /// Not a JSON object: chat text for the channel named at connect.
    PlainText(String),
}

/// A request the server could not understand; answered with an `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub reason: String,
    /// The request's `id`, when it could be read.
    pub id: Option<RequestId>,
    /// With `rate_limited`: when a retry would be taken.
    pub retry_after_ms: Option<u64>,
}

/// The `code` of an `error` message. Stable: clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A frame starting with `{` that is not valid JSON.
    MalformedJson,
    /// A JSON object with a missing or unknown `type`.
    UnknownType,
    /// A known `type` with missing, extra or mistyped fields.
    BadRequest,
    /// A channel name outside 1-128 characters of `[A-Za-z0-9_.:@-]`.
    InvalidChannel,
    /// `msg` longer than the server's limit.
    MessageTooLarge,
    /// Plain text sent on a connection opened without `?channel=`.
    NoDefaultChannel,
    AlreadySubscribed,
    NotSubscribed,
    /// A subscribe past the server's `--max-subscriptions` per connection.
    TooManySubscriptions,
    /// `limit` outside 1..=1000.
    InvalidLimit,
    /// The server cannot take more work right now; retry later.
    Overloaded,
    /// `idempotency_key` empty or over 64 characters.
    InvalidIdempotencyKey,
    /// Storage failed; the request may be retried.
    Internal,
    /// The store is out of reach (the Redis engine's Redis is down): nothing
    /// was stored; retry once it is back.
    Unavailable,
    /// The connection's token does not allow this channel (`--auth token`).
    Forbidden,
    /// A `refresh` without a token.
    MissingToken,
    /// A `refresh` whose token is malformed, wrongly signed, or for
    /// another user.
    InvalidToken,
    /// A `refresh` whose token has expired.
    TokenExpired,
    /// A publish over the connection's rate (`--publish-rate`, with
    /// `--publish-burst`): not stored; `retry_after_ms` says when to retry.
    RateLimited,
}

impl RequestError {
    fn new(code: ErrorCode, reason: impl Into<String>, id: Option<RequestId>) -> Self {
        RequestError {
            code,
            reason: reason.into(),
            id,
            retry_after_ms: None,
        }
    }
}

/// Classifies and parses one text frame. Text that does not start with `{`
/// (after whitespace) is plain chat text; everything else must be a request.
pub fn parse_inbound(text: &str) -> Result<Inbound, RequestError> {
    if !text.trim_start().starts_with('{') {
        return Ok(Inbound::PlainText(text.to_owned()));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        RequestError::new(
            ErrorCode::MalformedJson,
            format!("malformed JSON: {e}"),
            None,
        )
    })?;
    let id = value.get("id").cloned().filter(|id| !id.is_null());
    match value.get("type").and_then(Value::as_str) {
        Some(kind) if REQUEST_TYPES.contains(&kind) => {}
        Some(kind) => {
            return Err(RequestError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown type {kind:?}; expected one of {}",
                    REQUEST_TYPES.join(", ")
                ),
                id,
            ));
        }
        None => {
            return Err(RequestError::new(
                ErrorCode::UnknownType,
                "a request needs a string field \"type\"",
                id,
            ));
        }
    }
    serde_json::from_value(value)
        .map(Inbound::Request)
        .map_err(|e| RequestError::new(ErrorCode::BadRequest, e.to_string(), id))
}

/// A message from the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome {
        username: &'a str,
        connection_id: u64,
        server_version: &'a str,
    },
    Subscribed {
        channel: &'a str,
        epoch: &'a str,
        /// The channel's latest offset when the subscription started.
        offset: u64,
        /// Usernames online in the channel, this connection's included.
        presence: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Unsubscribed {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Message(&'a Publication),
    Join {
        channel: &'a str,
        username: &'a str,
    },
    Leave {
        channel: &'a str,
        username: &'a str,
    },
    /// The message is durably stored under `offset`, at `time` (what its
    /// `message` shows). A repeat of an `idempotency_key` gets the first
    /// publish's offset and time.
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        offset: u64,
        #[serde(serialize_with = "crate::message::rfc3339_millis")]
        time: u64,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        epoch: &'a str,
        messages: &'a [Publication],
    },
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        users: &'a [String],
    },
    Error {
        code: ErrorCode,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        /// With `rate_limited`: milliseconds until a publish would be taken.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    /// A `refresh` was taken: the connection now lasts until `exp`.
    Refreshed {
        exp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_text_is_chat() {
        assert_eq!(
            parse_inbound("hi there"),
            Ok(Inbound::PlainText("hi there".into()))
        );
        assert_eq!(parse_inbound("42"), Ok(Inbound::PlainText("42".into())));
    }

    #[test]
    fn parses_each_request_type() {
        assert_eq!(
            parse_inbound(r#"{"type":"subscribe","channel":"lobby","since":5}"#),
            Ok(Inbound::Request(Request::Subscribe {
                channel: "lobby".into(),
                since: Some(5),
                epoch: None,
                id: None
            }))
        );
        assert_eq!(
            parse_inbound(r#"{"type":"publish","channel":"a","msg":"hi","id":7}"#),
            Ok(Inbound::Request(Request::Publish {
                channel: "a".into(),
                msg: "hi".into(),
                idempotency_key: None,
                id: Some(json!(7))
            }))
        );
        assert_eq!(
            parse_inbound(r#"{"type":"publish","channel":"a","msg":"hi","idempotency_key":"k1"}"#),
            Ok(Inbound::Request(Request::Publish {
                channel: "a".into(),
                msg: "hi".into(),
                idempotency_key: Some("k1".into()),
                id: None
            }))
        );
        assert_eq!(
            parse_inbound(r#"{"type":"refresh","token":"a.b.c","id":2}"#),
            Ok(Inbound::Request(Request::Refresh {
                token: "a.b.c".into(),
                id: Some(json!(2))
            }))
        );
        assert!(matches!(
            parse_inbound(r#" {"type":"ping"}"#),
            Ok(Inbound::Request(Request::Ping { id: None }))
        ));
    }

    #[test]
    fn malformed_json_unknown_types_and_bad_fields_are_told_apart() {
        let e = parse_inbound(r#"{"type":"publish""#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedJson, None));
        let e = parse_inbound(r#"{"type":"shout","id":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::UnknownType, Some(json!("x"))));
        let e = parse_inbound(r#"{"channel":"a"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        let e = parse_inbound(r#"{"type":"publish","channel":"a","id":3}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(json!(3))));
        assert!(e.reason.contains("msg"), "{}", e.reason);
        let e = parse_inbound(r#"{"type":"ping","extra":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn server_messages_carry_their_type() {
        let p = Publication {
            channel: "lobby".into(),
            offset: 1,
            username: "bob".into(),
            msg: "yo".into(),
            time: 0,
        };
        let v: Value = serde_json::from_str(&ServerMessage::Message(&p).to_json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["offset"], 1);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        let id = json!("r1");
        let v: Value = serde_json::from_str(
            &ServerMessage::Error {
                code: ErrorCode::InvalidChannel,
                reason: "bad",
                id: Some(&id),
                retry_after_ms: None,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"invalid_channel","reason":"bad","id":"r1"})
        );
    }
}

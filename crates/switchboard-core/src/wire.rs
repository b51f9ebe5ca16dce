//! Encoding server messages for the wire, once per message and variant
//! (WebSocket plain or deflated per window; SSE with either id style, or as
//! HTTP chunks), shared by every subscriber that needs that variant. The
//! encodings themselves are the wire crates' (`switchboard-ws` frames,
//! `switchboard-proto` events and chunks): this module only caches them.

use std::sync::OnceLock;

use bytes::Bytes;
use switchboard_proto::native::{RequestId, ServerMessage};
use switchboard_proto::{chunked, socketio, sse};
use switchboard_ws::deflate::{self, DeflateParams};
use switchboard_ws::frame::{self, OpCode};

use crate::channel::ChannelName;

/// How one subscriber's connection frames what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    WebSocket(FrameEncoder),
    /// Server-Sent Events (`GET /sse`).
    EventStream(EventIds),
    /// Server-Sent Events of one channel (`id: OFFSET`) on an HTTP/1.1
    /// socket the stream writes itself: every event is a whole chunk of the
    /// chunked response body, so any run of them goes out as it is.
    ChunkedEventStream,
    /// A Socket.IO session: every event is an Engine.IO message packet in
    /// a plain WebSocket text frame, also while the session long-polls (a
    /// poll takes the packets back out of their frames).
    SocketIo(SocketIoEvents),
}

/// How a Socket.IO session's events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketIoEvents {
    /// Each message event ends with its recovery offset, a string
    /// argument (connection-state recovery, Engine.IO 4 only).
    pub recovery_offsets: bool,
}

/// How an SSE stream writes message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIds {
    /// `id: 42`: the stream follows one channel.
    Offset,
    /// `id: lobby:42`: the stream follows several.
    ChannelAndOffset,
}

/// What a frame carries: transports that label events outside the JSON
/// (SSE's `id:` and `event:`) need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Message { offset: u64 },
    Join,
    Leave,
    Presence,
    Reset,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Message { .. } => "message",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::Presence => "presence",
            EventKind::Reset => "reset",
        }
    }
}

impl Wire {
    /// Whether several events may travel as one buffer. Not for an SSE
    /// stream of several channels: it writes a resume point after each
    /// message event, so it needs them one by one.
    pub fn joins_events(&self) -> bool {
        !matches!(self, Wire::EventStream(EventIds::ChannelAndOffset))
    }

    /// A frame for this connection alone (replies such as `ack`).
    pub fn encode_text(&self, json: &str) -> Bytes {
        match self {
            Wire::WebSocket(encoder) => encoder.encode_text(json),
            Wire::SocketIo(_) => frame::encode(OpCode::Text, false, json.as_bytes()),
            Wire::EventStream(_) | Wire::ChunkedEventStream => {
                let mut out = String::with_capacity(json.len() + 8);
                sse::event(&mut out, None, None, json);
                match self {
                    Wire::ChunkedEventStream => http_chunk(out.as_bytes()),
                    _ => Bytes::from(out),
                }
            }
        }
    }

    /// The reply to one request, or `None` when there is none to send.
    /// `message` builds the native reply given the request id. A Socket.IO
    /// session gets the reply's object (without `type` or `id`) as the
    /// acknowledgement of event `id`; a failure the event asked no ack for
    /// comes as an `error` event, and any other reply without an ack id is
    /// not sent.
    pub fn encode_reply<'a>(
        &self,
        id: Option<&'a RequestId>,
        message: impl FnOnce(Option<&'a RequestId>) -> ServerMessage<'a>,
    ) -> Option<Bytes> {
        if !matches!(self, Wire::SocketIo(_)) {
            return Some(self.encode_text(&message(id).to_json()));
        }
        let reply = message(None);
        let is_error = matches!(reply, ServerMessage::Error { .. });
        let json = reply.to_json();
        let object = without_type_field(&json);
        let packet = match id.and_then(RequestId::as_u64) {
            Some(ack_id) if is_error => {
                socketio::main_namespace_ack(ack_id, &format!(r#"{{"error":{object}}}"#))
            }
            Some(ack_id) => socketio::main_namespace_ack(ack_id, &object),
            None if is_error => socketio::main_namespace_event("error", &object, None),
            None => return None,
        };
        Some(self.encode_text(&packet))
    }

    /// One event about `channel` for this connection alone.
    pub fn encode_event(&self, channel: &ChannelName, kind: EventKind, json: String) -> Bytes {
        SharedFrame::new(channel.clone(), kind, json).frame_for(self)
    }
}

/// The recovery offset of one message: `CHANNEL:OFFSET`.
pub fn recovery_offset(channel: &ChannelName, offset: u64) -> String {
    format!("{}:{offset}", channel.as_str())
}

/// A server message's JSON without its leading `"type"` field: the
/// object a Socket.IO event carries (serde writes the tag first).
fn without_type_field(json: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = json.strip_prefix(r#"{"type":""#) else {
        return json.into();
    };
    match rest.find('"') {
        Some(end) => match &rest[end + 1..] {
            "}" => "{}".into(),
            fields => format!("{{{}", fields.strip_prefix(',').unwrap_or(fields)).into(),
        },
        None => json.into(),
    }
}

/// `bytes` as one HTTP/1.1 chunk (the encoding is switchboard-proto's).
pub fn http_chunk(bytes: &[u8]) -> Bytes {
    Bytes::from(chunked::chunk(bytes))
}

/// How one connection wants its frames: plain, or deflated with its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEncoder {
    deflate: Option<DeflateParams>,
    /// Payloads shorter than this are sent plain even with deflate agreed.
    min_size: usize,
    level: u32,
}

impl FrameEncoder {
    pub fn new(deflate: Option<DeflateParams>, min_size: usize, level: u32) -> Self {
        FrameEncoder {
            deflate,
            min_size,
            level,
        }
    }

    /// An encoder that never compresses.
    pub fn plain() -> Self {
        FrameEncoder::new(None, usize::MAX, 0)
    }

    /// Whether permessage-deflate is in force (so RSV1 means "compressed").
    pub fn compresses(&self) -> bool {
        self.deflate.is_some()
    }

    /// The window to compress `len` bytes with, if they are to be compressed.
    fn deflate_window(&self, len: usize) -> Option<DeflateParams> {
        self.deflate.filter(|_| len >= self.min_size)
    }

    /// A text frame holding `text`.
    pub fn encode_text(&self, text: &str) -> Bytes {
        self.encode(OpCode::Text, text.as_bytes())
    }

    /// One complete data frame for this connection alone.
    pub fn encode(&self, opcode: OpCode, payload: &[u8]) -> Bytes {
        match self.deflate_window(payload.len()) {
            Some(params) => frame::encode(
                opcode,
                true,
                &deflate::compress(payload, params, self.level),
            ),
            None => frame::encode(opcode, false, payload),
        }
    }
}

/// An event to many connections: its JSON once, and each wire variant
/// (WebSocket plain or deflated per window size, SSE per id style) built the
/// first time a subscriber needs it, then shared.
#[derive(Debug)]
pub struct SharedFrame {
    json: String,
    channel: ChannelName,
    kind: EventKind,
    plain: OnceLock<Bytes>,
    /// Indexed by window bits 8..=15.
    deflated: [OnceLock<Bytes>; 8],
    /// Indexed by [`EventIds`] as usize.
    events: [OnceLock<Bytes>; 2],
    /// The `id: OFFSET` event as a chunk.
    chunked_event: OnceLock<Bytes>,
    /// Indexed by [`SocketIoEvents::recovery_offsets`] as usize.
    socketio: [OnceLock<Bytes>; 2],
    /// `42["message",{...}` without its end: what a session in several
    /// channels gets before the recovery offset built for it.
    socketio_open: OnceLock<String>,
}

impl SharedFrame {
    pub fn new(channel: ChannelName, kind: EventKind, json: String) -> Self {
        SharedFrame {
            json,
            channel,
            kind,
            plain: OnceLock::new(),
            deflated: Default::default(),
            events: Default::default(),
            chunked_event: OnceLock::new(),
            socketio: Default::default(),
            socketio_open: OnceLock::new(),
        }
    }

    /// The event's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Where a message stands in its channel; `None` for other events.
    pub fn position(&self) -> Option<crate::outbox::Position> {
        self.offset().map(|offset| (self.channel.clone(), offset))
    }

    /// The message offset, or `None` for other events (presence).
    pub fn offset(&self) -> Option<u64> {
        match self.kind {
            EventKind::Message { offset } => Some(offset),
            _ => None,
        }
    }

    /// The bytes for a connection using `wire`: a cheap clone of shared bytes.
    pub fn frame_for(&self, wire: &Wire) -> Bytes {
        match wire {
            Wire::WebSocket(encoder) => self.websocket_frame(encoder),
            Wire::EventStream(ids) => self.events[*ids as usize]
                .get_or_init(|| self.encode_event(*ids))
                .clone(),
            Wire::ChunkedEventStream => self
                .chunked_event
                .get_or_init(|| http_chunk(&self.frame_for(&Wire::EventStream(EventIds::Offset))))
                .clone(),
            Wire::SocketIo(events) => self.socketio[usize::from(events.recovery_offsets)]
                .get_or_init(|| self.encode_socketio(*events))
                .clone(),
        }
    }

    /// `42["message",{...},"lobby:7"]` in a text frame: the event's JSON
    /// without its `type`, which names the event instead.
    fn encode_socketio(&self, events: SocketIoEvents) -> Bytes {
        let offset = match self.kind {
            EventKind::Message { offset } if events.recovery_offsets => {
                Some(recovery_offset(&self.channel, offset))
            }
            _ => None,
        };
        self.socketio_frame(offset.as_deref())
    }

    /// The Socket.IO event with `offsets` as its recovery offset, for one
    /// session alone (one in several channels).
    pub fn socketio_frame_with_offset(&self, offsets: &str) -> Bytes {
        self.socketio_frame(Some(offsets))
    }

    fn socketio_frame(&self, offset: Option<&str>) -> Bytes {
        let open = self.socketio_open.get_or_init(|| {
            let object = without_type_field(&self.json);
            let mut packet = socketio::main_namespace_event(self.kind.name(), &object, None);
            packet.pop();
            packet
        });
        let mut packet = String::with_capacity(open.len() + offset.map_or(1, |o| o.len() + 4));
        packet.push_str(open);
        if let Some(offset) = offset {
            packet.push_str(",\"");
            packet.push_str(offset);
            packet.push('"');
        }
        packet.push(']');
        frame::encode(OpCode::Text, false, packet.as_bytes())
    }

    fn encode_event(&self, ids: EventIds) -> Bytes {
        let id = match (self.kind, ids) {
            (EventKind::Message { offset }, EventIds::Offset) => Some(offset.to_string()),
            (EventKind::Message { offset }, EventIds::ChannelAndOffset) => {
                Some(format!("{}:{offset}", self.channel.as_str()))
            }
            _ => None,
        };
        let mut out = String::with_capacity(self.json.len() + 48);
        sse::event(&mut out, id.as_deref(), Some(self.kind.name()), &self.json);
        Bytes::from(out)
    }

    fn websocket_frame(&self, encoder: &FrameEncoder) -> Bytes {
        match encoder.deflate_window(self.json.len()) {
            None => self
                .plain
                .get_or_init(|| frame::encode(OpCode::Text, false, self.json.as_bytes()))
                .clone(),
            Some(params) => {
                let slot = usize::from(params.server_max_window_bits.clamp(8, 15) - 8);
                self.deflated[slot]
                    .get_or_init(|| {
                        let compressed =
                            deflate::compress(self.json.as_bytes(), params, encoder.level);
                        frame::encode(OpCode::Text, true, &compressed)
                    })
                    .clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lobby() -> ChannelName {
        ChannelName::parse("lobby").unwrap()
    }

    fn message(json: impl Into<String>) -> SharedFrame {
        SharedFrame::new(lobby(), EventKind::Message { offset: 7 }, json.into())
    }

    fn ws(encoder: FrameEncoder) -> Wire {
        Wire::WebSocket(encoder)
    }

    #[test]
    fn plain_subscribers_share_one_buffer() {
        let shared = message(r#"{"type":"message"}"#);
        let a = shared.frame_for(&ws(FrameEncoder::plain()));
        let b = shared.frame_for(&ws(FrameEncoder::plain()));
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(&a[2..], br#"{"type":"message"}"#);
    }

    #[test]
    fn deflate_subscribers_share_one_compressed_buffer_per_window() {
        let json = format!(r#"{{"msg":"{}"}}"#, "ha".repeat(200));
        let shared = message(json.clone());
        let params = |bits| DeflateParams {
            server_max_window_bits: bits,
        };
        let wide = ws(FrameEncoder::new(Some(params(15)), 16, 6));
        let a = shared.frame_for(&wide);
        let b = shared.frame_for(&wide);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(a[0], 0xC1, "FIN + RSV1 + text");
        assert!(a.len() < json.len() / 4);
        let narrow = shared.frame_for(&ws(FrameEncoder::new(Some(params(9)), 16, 6)));
        assert_ne!(a.as_ptr(), narrow.as_ptr());
        // Below the threshold the plain frame is used.
        let tiny = message("{}");
        assert_eq!(tiny.frame_for(&wide)[0], 0x81);
    }

    #[test]
    fn event_stream_subscribers_share_one_event_per_id_style() {
        let shared = message(r#"{"type":"message"}"#);
        let single = Wire::EventStream(EventIds::Offset);
        let a = shared.frame_for(&single);
        assert_eq!(a.as_ptr(), shared.frame_for(&single).as_ptr());
        assert_eq!(
            &a[..],
            b"id: 7\nevent: message\ndata: {\"type\":\"message\"}\n\n"
        );
        let many = shared.frame_for(&Wire::EventStream(EventIds::ChannelAndOffset));
        assert!(many.starts_with(b"id: lobby:7\nevent: message\n"));
        // Presence events carry no id: they are not a resume point.
        let join = SharedFrame::new(lobby(), EventKind::Join, "{}".into());
        assert_eq!(&join.frame_for(&single)[..], b"event: join\ndata: {}\n\n");
    }

    #[test]
    fn socketio_sessions_share_one_event_packet_per_recovery_style() {
        let shared = message(r#"{"type":"message","channel":"lobby","offset":7}"#);
        let plain = Wire::SocketIo(SocketIoEvents {
            recovery_offsets: false,
        });
        let recovering = Wire::SocketIo(SocketIoEvents {
            recovery_offsets: true,
        });
        let a = shared.frame_for(&plain);
        assert_eq!(a.as_ptr(), shared.frame_for(&plain).as_ptr());
        assert_eq!(&a[2..], br#"42["message",{"channel":"lobby","offset":7}]"#);
        let b = shared.frame_for(&recovering);
        assert_eq!(
            &b[2..],
            br#"42["message",{"channel":"lobby","offset":7},"lobby:7"]"#
        );
        // Presence events carry no recovery offset.
        let join = SharedFrame::new(
            lobby(),
            EventKind::Join,
            r#"{"type":"join","channel":"lobby","username":"bob"}"#.into(),
        );
        assert_eq!(
            &join.frame_for(&recovering)[2..],
            br#"42["join",{"channel":"lobby","username":"bob"}]"#
        );
    }

    #[test]
    fn socketio_replies_are_acks_or_error_events() {
        let wire = Wire::SocketIo(SocketIoEvents {
            recovery_offsets: true,
        });
        let id = RequestId::from(12);
        let ack = |id| ServerMessage::Unsubscribed {
            channel: "lobby",
            id,
        };
        let text = |frame: Option<Bytes>| String::from_utf8(frame.unwrap()[2..].to_vec()).unwrap();
        assert_eq!(
            text(wire.encode_reply(Some(&id), ack)),
            r#"4312[{"channel":"lobby"}]"#
        );
        assert!(wire.encode_reply(None, ack).is_none());
        let error = |id| ServerMessage::Error {
            code: switchboard_proto::native::ErrorCode::InvalidChannel,
            reason: "no",
            id,
            retry_after_ms: None,
        };
        assert_eq!(
            text(wire.encode_reply(Some(&id), error)),
            r#"4312[{"error":{"code":"invalid_channel","reason":"no"}}]"#
        );
        assert_eq!(
            text(wire.encode_reply(None, error)),
            r#"42["error",{"code":"invalid_channel","reason":"no"}]"#
        );
        // Native sessions get the message with its id.
        let native = Wire::WebSocket(FrameEncoder::plain());
        assert_eq!(
            text(native.encode_reply(Some(&id), ack)),
            r#"{"type":"unsubscribed","channel":"lobby","id":12}"#
        );
    }

    #[test]
    fn a_chunked_stream_gets_each_event_as_a_whole_chunk() {
        let shared = message(r#"{"type":"message"}"#);
        let chunked = shared.frame_for(&Wire::ChunkedEventStream);
        assert_eq!(
            chunked.as_ptr(),
            shared.frame_for(&Wire::ChunkedEventStream).as_ptr()
        );
        let event = b"id: 7\nevent: message\ndata: {\"type\":\"message\"}\n\n";
        let mut expected = format!("{:x}\r\n", event.len()).into_bytes();
        expected.extend_from_slice(event);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(&chunked[..], &expected[..]);
        assert_eq!(
            &Wire::ChunkedEventStream.encode_text("{}")[..],
            b"a\r\ndata: {}\n\n\r\n"
        );
    }
}

//! Socket.IO packets, carried in Engine.IO `message` packets: protocol 5
//! (over Engine.IO 4) and protocol 4 (over Engine.IO 3) share this text
//! form, `TYPE[ATTACHMENTS-][/NAMESPACE,][ACK ID][JSON]`.
//!
//! Arguments are kept as raw JSON text, so what a client sent can be
//! answered byte for byte and each handler parses only what it reads.
//! Binary attachments follow their packet as separate Engine.IO binary
//! packets; the JSON holds `{"_placeholder":true,"num":N}` in their place.

use serde_json::value::RawValue;

/// A Socket.IO packet type, as its one-digit prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    /// `ERROR` in protocol 4.
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketType {
    fn from_digit(digit: u8) -> Option<PacketType> {
        Some(match digit {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// Event names a client may not emit: the library uses them itself.
const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// One decoded packet.
#[derive(Debug)]
pub struct Packet {
    pub kind: PacketType,
    /// `/` unless the packet names another.
    pub namespace: String,
    /// Binary attachments that follow (binary packet types only).
    pub attachments: usize,
    pub ack_id: Option<u64>,
    pub data: Option<Box<RawValue>>,
}

/// Why a packet was refused: the connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown packet type")]
    UnknownType,
    #[error("malformed attachment count")]
    Attachments,
    #[error("payload is not valid JSON")]
    Json,
    #[error("payload does not fit the packet type")]
    InvalidPayload,
}

impl Packet {
    /// Decodes the text of an Engine.IO `message` packet.
    pub fn decode(text: &str) -> Result<Packet, DecodeError> {
        let bytes = text.as_bytes();
        let kind = bytes
            .first()
            .and_then(|&d| PacketType::from_digit(d))
            .ok_or(DecodeError::UnknownType)?;
        let mut rest = &text[1..];
        let mut attachments = 0;
        if kind.is_binary() {
            let dash = rest.find('-').ok_or(DecodeError::Attachments)?;
            attachments = rest[..dash].parse().map_err(|_| DecodeError::Attachments)?;
            rest = &rest[dash + 1..];
        }
        let mut namespace = "/".to_owned();
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            namespace = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = match digits {
            0 => None,
            _ => Some(rest[..digits].parse().map_err(|_| DecodeError::Json)?),
        };
        rest = &rest[digits..];
        let data = match rest {
            "" => None,
            json => {
                Some(serde_json::from_str::<Box<RawValue>>(json).map_err(|_| DecodeError::Json)?)
            }
        };
        let packet = Packet {
            kind,
            namespace,
            attachments,
            ack_id,
            data,
        };
        packet.check_payload()?;
        Ok(packet)
    }

    /// The shapes the reference parser accepts for each type.
    fn check_payload(&self) -> Result<(), DecodeError> {
        let data = self.data.as_deref().map(RawValue::get);
        let valid = match self.kind {
            PacketType::Connect => data.is_none_or(|d| d.starts_with('{')),
            PacketType::Disconnect => data.is_none(),
            PacketType::ConnectError => data.is_some(),
            PacketType::Ack | PacketType::BinaryAck => data.is_some_and(|d| d.starts_with('[')),
            PacketType::Event | PacketType::BinaryEvent => {
                self.event_args().is_some_and(|args| match args.first() {
                    Some(name) => match serde_json::from_str::<serde_json::Value>(name.get()) {
                        Ok(serde_json::Value::String(name)) => {
                            !RESERVED_EVENTS.contains(&name.as_str())
                        }
                        Ok(serde_json::Value::Number(_)) => true,
                        _ => false,
                    },
                    None => false,
                })
            }
        };
        if valid {
            Ok(())
        } else {
            Err(DecodeError::InvalidPayload)
        }
    }

    /// The data as an array of raw arguments (events and acks).
    pub fn event_args(&self) -> Option<Vec<&RawValue>> {
        let data = self.data.as_deref()?;
        serde_json::from_str::<Vec<&RawValue>>(data.get()).ok()
    }

    /// An event's name (its first argument) and the other arguments.
    pub fn event(&self) -> Option<(String, Vec<&RawValue>)> {
        let mut args = self.event_args()?;
        if args.is_empty() {
            return None;
        }
        let name = args.remove(0);
        let name = match serde_json::from_str::<serde_json::Value>(name.get()).ok()? {
            serde_json::Value::String(name) => name,
            other => other.to_string(),
        };
        Some((name, args))
    }
}

/// Encodes a packet as the text of an Engine.IO `message` packet,
/// without the leading `4`.
pub fn encode(
    kind: PacketType,
    namespace: &str,
    attachments: usize,
    ack_id: Option<u64>,
    data: Option<&str>,
) -> String {
    let mut out = String::with_capacity(16 + data.map_or(0, str::len));
    out.push(char::from(b'0' + kind as u8));
    if kind.is_binary() {
        out.push_str(&attachments.to_string());
        out.push('-');
    }
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
    if let Some(id) = ack_id {
        out.push_str(&id.to_string());
    }
    if let Some(data) = data {
        out.push_str(data);
    }
    out
}

/// The JSON array `[name, args…]` of an event.
pub fn event_data<'a>(name: &str, args: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    out.push_str(&serde_json::to_string(name).expect("a string serializes"));
    for arg in args {
        out.push(',');
        out.push_str(arg);
    }
    out.push(']');
    out
}

/// The JSON array of an ack's arguments.
pub fn ack_data<'a>(args: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, arg) in args.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(arg);
    }
    out.push(']');
    out
}

/// The Engine.IO message packet `42["NAME",OBJECT(,"OFFSET")]` for an
/// event to the main namespace: how every channel event reaches a
/// Socket.IO client, encoded once per broadcast.
pub fn main_namespace_event(name: &str, object: &str, offset: Option<&str>) -> String {
    let mut out = String::with_capacity(name.len() + object.len() + 32);
    out.push_str("42[\"");
    out.push_str(name);
    out.push_str("\",");
    out.push_str(object);
    if let Some(offset) = offset {
        out.push_str(",\"");
        out.push_str(offset);
        out.push('"');
    }
    out.push(']');
    out
}

/// The Engine.IO message packet `43ID[ARG]` acknowledging event `id` of
/// the main namespace with one argument.
pub fn main_namespace_ack(id: u64, arg: &str) -> String {
    format!("43{id}[{arg}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_part_of_a_packet() {
        let p =
            Packet::decode(r#"52-/chat,789["message",{"_placeholder":true,"num":0},2]"#).unwrap();
        assert_eq!(p.kind, PacketType::BinaryEvent);
        assert_eq!(p.attachments, 2);
        assert_eq!(p.namespace, "/chat");
        assert_eq!(p.ack_id, Some(789));
        let (name, args) = p.event().unwrap();
        assert_eq!(name, "message");
        assert_eq!(args[0].get(), r#"{"_placeholder":true,"num":0}"#);

        let p = Packet::decode("0/custom,").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str()),
            (PacketType::Connect, "/custom")
        );
        assert!(p.data.is_none());
        let p = Packet::decode("0/random").unwrap();
        assert_eq!(p.namespace, "/random");
        let p = Packet::decode(r#"0{"token":"123"}"#).unwrap();
        assert_eq!(p.data.unwrap().get(), r#"{"token":"123"}"#);
    }

    #[test]
    fn refuses_what_the_reference_parser_refuses() {
        for bad in [
            "abc",
            "9",
            "",
            "2{}",
            r#"2abc["message"]"#,
            r#"2["connect"]"#,
            "2[]",
            "1{}",
            "5[\"a\"]",
            "0[1]",
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Packet::decode(r#"2[1,"x"]"#).is_ok());
    }

    #[test]
    fn encodes_packets_as_the_reference_encoder_does() {
        assert_eq!(
            encode(PacketType::Ack, "/", 0, Some(456), Some(r#"[1,"2"]"#)),
            r#"3456[1,"2"]"#
        );
        assert_eq!(
            encode(PacketType::BinaryAck, "/", 2, Some(789), Some("[]")),
            "62-789[]"
        );
        assert_eq!(
            encode(
                PacketType::Connect,
                "/custom",
                0,
                None,
                Some(r#"{"sid":"x"}"#)
            ),
            r#"0/custom,{"sid":"x"}"#
        );
        assert_eq!(
            event_data("message-back", ["1", r#""2""#]),
            r#"["message-back",1,"2"]"#
        );
        assert_eq!(
            main_namespace_event("message", "{}", Some("lobby:3")),
            r#"42["message",{},"lobby:3"]"#
        );
    }
}

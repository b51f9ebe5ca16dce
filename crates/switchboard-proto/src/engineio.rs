//! Engine.IO, the transport layer under Socket.IO: its packets and the
//! payloads of HTTP long-polling, in both protocol versions met in the wild.
//!
//! - Version 4 (`EIO=4`, Socket.IO clients 3 and 4): a polling payload is
//!   its packets joined by the record separator `\x1e`; a binary packet
//!   travels as `b` and its base64.
//! - Version 3 (`EIO=3`, Socket.IO client 2): a text payload is each packet
//!   prefixed with its length and `:`, the length counted in UTF-16 code
//!   units as JavaScript counts; a binary packet travels as `b4` and its
//!   base64. A client that can send binary posts the binary payload format
//!   instead: per packet a `0` (text) or `1` (binary) byte, the length as
//!   one byte per decimal digit, `0xff`, then the packet.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The two protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V3 = 3,
    V4 = 4,
}

impl Version {
    /// The `EIO` query parameter's value.
    pub fn parse(eio: &str) -> Option<Version> {
        match eio {
            "3" => Some(Version::V3),
            "4" => Some(Version::V4),
            _ => None,
        }
    }
}

/// An Engine.IO packet type, as its one-digit prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    fn from_digit(digit: u8) -> Option<PacketType> {
        Some(match digit {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }

    pub fn digit(self) -> char {
        char::from(b'0' + self as u8)
    }
}

/// One packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Text {
        kind: PacketType,
        data: String,
    },
    /// A binary message (Socket.IO attachments ride on these).
    Binary(Vec<u8>),
}

/// Why a packet or payload was refused: the session it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown packet type {0:?}")]
    UnknownType(String),
    #[error("empty packet")]
    Empty,
    #[error("invalid base64 in a binary packet")]
    Base64,
    #[error("malformed payload: {0}")]
    Payload(&'static str),
}

/// A text packet: its type digit, then its data.
pub fn decode_text_packet(text: &str) -> Result<Packet, DecodeError> {
    let first = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first)
        .ok_or_else(|| DecodeError::UnknownType(text.chars().take(8).collect()))?;
    Ok(Packet::Text {
        kind,
        data: text[1..].to_owned(),
    })
}

/// A binary WebSocket message: the packet's bytes as they are (v4), or
/// after a type byte that must say "message" (v3).
pub fn decode_binary_packet(version: Version, bytes: &[u8]) -> Result<Packet, DecodeError> {
    match version {
        Version::V4 => Ok(Packet::Binary(bytes.to_vec())),
        Version::V3 => match bytes.split_first() {
            Some((4, rest)) => Ok(Packet::Binary(rest.to_vec())),
            Some((kind, _)) => Err(DecodeError::UnknownType(kind.to_string())),
            None => Err(DecodeError::Empty),
        },
    }
}

/// A binary packet's bytes for a WebSocket binary message.
pub fn binary_frame_payload(version: Version, bytes: &[u8]) -> Vec<u8> {
    match version {
        Version::V4 => bytes.to_vec(),
        Version::V3 => {
            let mut out = Vec::with_capacity(bytes.len() + 1);
            out.push(PacketType::Message as u8);
            out.extend_from_slice(bytes);
            out
        }
    }
}

/// One packet inside a text polling payload.
fn decode_polling_packet(version: Version, text: &str) -> Result<Packet, DecodeError> {
    let base64 = match version {
        Version::V4 => text.strip_prefix('b'),
        Version::V3 => text.strip_prefix("b4"),
    };
    match base64 {
        Some(encoded) => BASE64
            .decode(encoded)
            .map(Packet::Binary)
            .map_err(|_| DecodeError::Base64),
        None => decode_text_packet(text),
    }
}

/// Every packet of a POSTed polling payload.
pub fn decode_payload(version: Version, body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    match version {
        Version::V4 => {
            let text = std::str::from_utf8(body).map_err(|_| DecodeError::Payload("not UTF-8"))?;
            text.split('\x1e')
                .map(|packet| decode_polling_packet(version, packet))
                .collect()
        }
        Version::V3 if matches!(body.first(), Some(0 | 1)) => decode_v3_binary_payload(body),
        Version::V3 => {
            let text = std::str::from_utf8(body).map_err(|_| DecodeError::Payload("not UTF-8"))?;
            decode_v3_text_payload(text)
        }
    }
}

/// `LEN:PACKET…`, each length in UTF-16 code units.
fn decode_v3_text_payload(mut text: &str) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    while !text.is_empty() {
        let colon = text
            .find(':')
            .ok_or(DecodeError::Payload("a length without ':'"))?;
        let units: usize = text[..colon]
            .parse()
            .map_err(|_| DecodeError::Payload("a length that is not a number"))?;
        let rest = &text[colon + 1..];
        let end = byte_index_after_utf16_units(rest, units)
            .ok_or(DecodeError::Payload("a length past the payload's end"))?;
        packets.push(decode_polling_packet(Version::V3, &rest[..end])?);
        text = &rest[end..];
    }
    if packets.is_empty() {
        return Err(DecodeError::Payload("no packet"));
    }
    Ok(packets)
}

/// The byte index in `text` after its first `units` UTF-16 code units.
fn byte_index_after_utf16_units(text: &str, units: usize) -> Option<usize> {
    let mut counted = 0;
    for (index, ch) in text.char_indices() {
        if counted == units {
            return Some(index);
        }
        counted += ch.len_utf16();
        if counted > units {
            return None;
        }
    }
    (counted == units).then_some(text.len())
}

/// The binary payload format of version 3.
fn decode_v3_binary_payload(mut body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    while let Some((&kind, rest)) = body.split_first() {
        let end = rest
            .iter()
            .position(|&b| b == 0xff)
            .ok_or(DecodeError::Payload("a length without its 0xff end"))?;
        if end == 0 || end > 10 || rest[..end].iter().any(|&d| d > 9) {
            return Err(DecodeError::Payload("a malformed length"));
        }
        let len = rest[..end]
            .iter()
            .fold(0usize, |len, &digit| len * 10 + usize::from(digit));
        let data = rest
            .get(end + 1..end + 1 + len)
            .ok_or(DecodeError::Payload("a length past the payload's end"))?;
        packets.push(match kind {
            0 => {
                let text =
                    std::str::from_utf8(data).map_err(|_| DecodeError::Payload("not UTF-8"))?;
                decode_polling_packet(Version::V3, text)?
            }
            1 => decode_binary_packet(Version::V3, data)?,
            _ => {
                return Err(DecodeError::Payload(
                    "a packet that is neither text nor binary",
                ));
            }
        });
        body = &rest[end + 1 + len..];
    }
    Ok(packets)
}

/// Builds the body of a polling response, packet by packet.
#[derive(Debug)]
pub struct PayloadWriter {
    version: Version,
    out: Vec<u8>,
    packets: usize,
}

impl PayloadWriter {
    pub fn new(version: Version) -> Self {
        PayloadWriter::with_capacity(version, 0)
    }

    /// A writer with room for about `bytes` of packets.
    pub fn with_capacity(version: Version, bytes: usize) -> Self {
        PayloadWriter {
            version,
            out: Vec::with_capacity(bytes),
            packets: 0,
        }
    }

    /// Adds a text packet (type digit included).
    pub fn text(&mut self, packet: &str) {
        self.text_utf8(packet.as_bytes());
    }

    /// Adds a text packet given as its UTF-8 bytes, which the caller
    /// vouches for (a frame this server encoded from a string): no check,
    /// and no copy but into the payload.
    pub fn text_utf8(&mut self, packet: &[u8]) {
        match self.version {
            Version::V4 => {
                if self.packets > 0 {
                    self.out.push(0x1e);
                }
            }
            Version::V3 => {
                self.out
                    .extend_from_slice(utf16_units(packet).to_string().as_bytes());
                self.out.push(b':');
            }
        }
        self.out.extend_from_slice(packet);
        self.packets += 1;
    }

    /// Adds a binary packet, base64-encoded.
    pub fn binary(&mut self, bytes: &[u8]) {
        let prefix = match self.version {
            Version::V4 => "b",
            Version::V3 => "b4",
        };
        self.text(&format!("{prefix}{}", BASE64.encode(bytes)));
    }

    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }

    /// The payload: UTF-8 text.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// How many UTF-16 code units (what JavaScript counts) the UTF-8 text
/// `bytes` holds: one per character, two for those beyond the BMP (the
/// ones UTF-8 writes in four bytes).
fn utf16_units(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
        .sum()
}

/// The open packet's data.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake<'a> {
    pub sid: &'a str,
    pub upgrades: &'a [&'a str],
    /// Milliseconds.
    pub ping_interval: u64,
    pub ping_timeout: u64,
    /// Version 4 only: the largest payload a client may POST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<usize>,
}

impl Handshake<'_> {
    /// The whole open packet: `0{...}`.
    pub fn packet(&self) -> String {
        format!("0{}", serde_json::to_string(self).expect("serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(kind: PacketType, data: &str) -> Packet {
        Packet::Text {
            kind,
            data: data.into(),
        }
    }

    #[test]
    fn v4_payloads_split_on_the_record_separator_and_carry_binary_as_base64() {
        let packets = decode_payload(Version::V4, b"4hello\x1ebAQIDBA==\x1e2").unwrap();
        assert_eq!(
            packets,
            vec![
                text(PacketType::Message, "hello"),
                Packet::Binary(vec![1, 2, 3, 4]),
                text(PacketType::Ping, ""),
            ]
        );
        let mut writer = PayloadWriter::new(Version::V4);
        writer.text("4hello");
        writer.binary(&[1, 2, 3, 4]);
        assert_eq!(writer.finish(), b"4hello\x1ebAQIDBA==");
        assert!(decode_payload(Version::V4, b"abc").is_err());
        assert!(decode_payload(Version::V4, b"").is_err());
    }

    #[test]
    fn v3_lengths_count_utf16_code_units() {
        // "é ✓ 😀": é and ✓ are one unit each, 😀 is two.
        let packet = "42[\"m\",\"é ✓ 😀\"]";
        let units = packet.chars().map(char::len_utf16).sum::<usize>();
        assert_eq!(units, 16);
        let mut writer = PayloadWriter::new(Version::V3);
        writer.text(packet);
        writer.text("2");
        let body = writer.finish();
        assert_eq!(body, format!("16:{packet}1:2").into_bytes());
        assert_eq!(utf16_units("é ✓ 😀".as_bytes()), 6);
        assert_eq!(
            decode_payload(Version::V3, &body).unwrap(),
            vec![
                text(PacketType::Message, &packet[1..]),
                text(PacketType::Ping, "")
            ]
        );
        // A length that ends inside a surrogate pair, or past the end.
        assert!(decode_payload(Version::V3, "5:4a😀".as_bytes()).is_err());
        assert!(decode_payload(Version::V3, b"9:4a").is_err());
        assert!(decode_payload(Version::V3, b"x:4a").is_err());
    }

    #[test]
    fn v3_binary_payloads_and_base64_packets_decode() {
        // "4hi" as text, then a binary message [1, 2].
        let body = [0, 3, 0xff, b'4', b'h', b'i', 1, 3, 0xff, 4, 1, 2];
        assert_eq!(
            decode_payload(Version::V3, &body).unwrap(),
            vec![text(PacketType::Message, "hi"), Packet::Binary(vec![1, 2])]
        );
        assert!(decode_payload(Version::V3, &[0, 9, 0xff, b'4']).is_err());
        assert_eq!(
            decode_payload(Version::V3, b"6:b4AQI=").unwrap(),
            vec![Packet::Binary(vec![1, 2])]
        );
        let mut writer = PayloadWriter::new(Version::V3);
        writer.binary(&[1, 2]);
        assert_eq!(writer.finish(), b"6:b4AQI=");
    }

    #[test]
    fn binary_websocket_messages_carry_a_type_byte_in_v3_only() {
        assert_eq!(
            decode_binary_packet(Version::V3, &[4, 9]).unwrap(),
            Packet::Binary(vec![9])
        );
        assert!(decode_binary_packet(Version::V3, &[2, 9]).is_err());
        assert_eq!(binary_frame_payload(Version::V3, &[9]), vec![4, 9]);
        assert_eq!(binary_frame_payload(Version::V4, &[9]), vec![9]);
    }

    #[test]
    fn the_open_packet_names_max_payload_in_v4_only() {
        let mut handshake = Handshake {
            sid: "abc",
            upgrades: &["websocket"],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: Some(1_000_000),
        };
        assert_eq!(
            handshake.packet(),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        handshake.max_payload = None;
        assert!(!handshake.packet().contains("maxPayload"));
    }
}

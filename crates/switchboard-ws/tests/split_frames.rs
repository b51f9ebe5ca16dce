//! Whatever boundaries TCP cuts a stream of frames at, the decoder makes
//! the same messages of it: frames from an independent encoder
//! (tungstenite's, masked as a client masks them), fragmented, compressed
//! or not, with control frames between fragments, fed in arbitrary chunks.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_ws::deflate::{self, DeflateParams};
use switchboard_ws::{DecoderConfig, Message, MessageDecoder};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

#[derive(Debug, Clone)]
struct Sent {
    text: bool,
    payload: Vec<u8>,
    /// Frames the message is cut into.
    fragments: usize,
    compressed: bool,
    /// A ping sent between its first and second fragment (if it has two).
    ping_inside: Option<Vec<u8>>,
}

fn sent() -> impl Strategy<Value = Sent> {
    let text = ".{0,200}".prop_map(|s: String| (true, s.into_bytes()));
    let binary = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| (false, b));
    (
        prop_oneof![text, binary],
        1usize..5,
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
    )
        .prop_map(
            |((text, payload), fragments, compressed, ping_inside)| Sent {
                text,
                payload,
                fragments,
                compressed,
                ping_inside,
            },
        )
}

fn client_frame(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = match opcode {
        OpCode::Control(Control::Ping) => Frame::ping(payload.to_vec()),
        data => Frame::message(payload.to_vec(), data, fin),
    };
    frame.header_mut().rsv1 = rsv1;
    frame.header_mut().mask = Some(mask);
    let mut out = Vec::new();
    frame.format(&mut out).unwrap();
    out
}

/// The wire bytes of `messages`, and the messages the server must see.
fn encode(messages: &[Sent], mask: [u8; 4]) -> (Vec<u8>, Vec<Message>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let params = DeflateParams {
        server_max_window_bits: 15,
    };
    for message in messages {
        let body = if message.compressed {
            deflate::compress(&message.payload, params, 6)
        } else {
            message.payload.clone()
        };
        let piece = body.len().div_ceil(message.fragments).max(1);
        let mut pieces: Vec<&[u8]> = body.chunks(piece).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        for (i, chunk) in pieces.iter().enumerate() {
            let opcode = match (i, message.text) {
                (0, true) => OpCode::Data(Data::Text),
                (0, false) => OpCode::Data(Data::Binary),
                _ => OpCode::Data(Data::Continue),
            };
            let last = i + 1 == pieces.len();
            let rsv1 = i == 0 && message.compressed;
            wire.extend(client_frame(opcode, last, rsv1, chunk, mask));
            if let (0, false, Some(ping)) = (i, last, &message.ping_inside) {
                let ping_frame = OpCode::Control(Control::Ping);
                wire.extend(client_frame(ping_frame, true, false, ping, mask));
                expected.push(Message::Ping(Bytes::from(ping.clone())));
            }
        }
        let payload = Bytes::from(message.payload.clone());
        expected.push(if message.text {
            Message::Text(payload)
        } else {
            Message::Binary(payload)
        });
    }
    (wire, expected)
}

/// Feeds `wire` in chunks of the given sizes (cycled), decoding as it goes.
fn decode_in_chunks(wire: &[u8], sizes: &[usize], deflate: bool) -> Vec<Message> {
    let mut decoder = MessageDecoder::new(DecoderConfig {
        max_message_size: 1 << 20,
        deflate,
    });
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == wire.len() {
            break;
        }
        let end = (at + size).min(wire.len());
        buf.extend_from_slice(&wire[at..end]);
        at = end;
        while let Some(message) = decoder.decode(&mut buf).expect("valid frames decode") {
            messages.push(message);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    assert!(!decoder.is_mid_message());
    messages
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_split_decodes_to_the_same_messages(
        deflate in any::<bool>(),
        messages in proptest::collection::vec(sent(), 1..8),
        mask in any::<[u8; 4]>(),
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let messages: Vec<Sent> = messages
            .into_iter()
            .map(|m| Sent { compressed: m.compressed && deflate, ..m })
            .collect();
        let (wire, expected) = encode(&messages, mask);
        let whole = decode_in_chunks(&wire, &[wire.len()], deflate);
        prop_assert_eq!(&whole, &expected);
        let split = decode_in_chunks(&wire, &sizes, deflate);
        prop_assert_eq!(&split, &expected);
        let bytewise = decode_in_chunks(&wire, &[1], deflate);
        prop_assert_eq!(&bytewise, &expected);
    }
}

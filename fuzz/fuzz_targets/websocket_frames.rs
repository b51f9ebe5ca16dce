//! The WebSocket message decoder, permessage-deflate on or off, fed in
//! chunks: whatever the bytes, it answers a message, "more", or a protocol
//! error, and never panics or grows past its limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_ws::{DecoderConfig, Message, MessageDecoder};

const MAX_MESSAGE_SIZE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&settings, wire)) = data.split_first() else {
        return;
    };
    let mut decoder = MessageDecoder::new(DecoderConfig {
        max_message_size: MAX_MESSAGE_SIZE,
        deflate: settings & 1 == 1,
    });
    // The rest of the first byte picks how TCP cuts the stream.
    let chunk = usize::from(settings >> 1).max(1);
    let mut buf = BytesMut::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => {
                    let size = match &message {
                        Message::Text(bytes) | Message::Binary(bytes) => bytes.len(),
                        Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
                        Message::Close(_) => 0,
                    };
                    assert!(size <= MAX_MESSAGE_SIZE);
                    if let Message::Text(bytes) = &message {
                        assert!(std::str::from_utf8(bytes).is_ok());
                    }
                }
                Ok(None) => break,
                // The connection would be closed: nothing more is read.
                Err(_) => return,
            }
        }
    }
});

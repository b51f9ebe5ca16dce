//! Engine.IO long-polling payloads (versions 3 and 4) and single packets,
//! text and binary: decoded or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::engineio::{Version, decode_binary_packet, decode_payload, decode_text_packet};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 { Version::V3 } else { Version::V4 };
    let _ = decode_payload(version, body);
    let _ = decode_binary_packet(version, body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = decode_text_packet(text);
    }
});

//! Socket.IO packets: decoded or refused, and a decoded event's name and
//! arguments read without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::socketio::Packet;

fuzz_target!(|text: &str| {
    if let Ok(packet) = Packet::decode(text) {
        let _ = packet.event();
        let _ = packet.event_args();
    }
});

//! The `/ws` protocol's parser: any text is a request, plain text, or a
//! request error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::native::parse_inbound;

fuzz_target!(|text: &str| {
    let _ = parse_inbound(text);
});

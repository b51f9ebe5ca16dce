//! `Last-Event-ID` (and `?since=`): any text is a cursor or an error, and
//! a cursor answers for every channel it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::sse::Cursor;

fuzz_target!(|text: &str| {
    if let Ok(cursor) = Cursor::parse(text) {
        for name in text.split(',').filter_map(|pair| pair.trim().rsplit_once(':')) {
            let _ = cursor.offset_for(name.0);
        }
    }
});

//! `GET /echo`: sends every message back unchanged. The conformance and
//! diagnostics endpoint (Autobahn|Testsuite runs against it).

use switchboard_ws::frame::OpCode;
use switchboard_ws::{CloseFrame, Message};

use crate::transport::websocket::{MessageHandler, Replies};

/// Echoes text as text and binary as binary.
#[derive(Debug, Default)]
pub struct Echo;

impl MessageHandler for Echo {
    fn on_message(
        &mut self,
        message: Message,
        replies: &mut Replies<'_>,
    ) -> Result<(), CloseFrame> {
        match message {
            Message::Text(text) => replies.send(OpCode::Text, &text),
            Message::Binary(data) => replies.send(OpCode::Binary, &data),
            _ => {}
        }
        Ok(())
    }
}

//! Encoding server messages into WebSocket frames, once per message and
//! frame variant, shared by every subscriber that needs that variant.

use std::sync::OnceLock;

use bytes::Bytes;
use switchboard_ws::deflate::{self, DeflateParams};
use switchboard_ws::frame::{self, OpCode};

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

/// A text message to many connections: its JSON once, and each frame
/// variant (plain, or deflated per window size) built the first time a
/// subscriber needs it, then shared.
#[derive(Debug)]
pub struct SharedFrame {
    json: Bytes,
    plain: OnceLock<Bytes>,
    /// Indexed by window bits 8..=15.
    deflated: [OnceLock<Bytes>; 8],
}

impl SharedFrame {
    pub fn new(json: impl Into<Bytes>) -> Self {
        SharedFrame {
            json: json.into(),
            plain: OnceLock::new(),
            deflated: Default::default(),
        }
    }

    /// The message's JSON text.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The frame for a connection using `encoder`: a cheap clone of shared bytes.
    pub fn frame_for(&self, encoder: &FrameEncoder) -> Bytes {
        match encoder.deflate_window(self.json.len()) {
            None => self
                .plain
                .get_or_init(|| frame::encode(OpCode::Text, false, &self.json))
                .clone(),
            Some(params) => {
                let slot = usize::from(params.server_max_window_bits.clamp(8, 15) - 8);
                self.deflated[slot]
                    .get_or_init(|| {
                        let compressed = deflate::compress(&self.json, params, encoder.level);
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

    #[test]
    fn plain_subscribers_share_one_buffer() {
        let shared = SharedFrame::new(r#"{"type":"message"}"#);
        let a = shared.frame_for(&FrameEncoder::plain());
        let b = shared.frame_for(&FrameEncoder::plain());
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(&a[2..], br#"{"type":"message"}"#);
    }

    #[test]
    fn deflate_subscribers_share_one_compressed_buffer_per_window() {
        let json = format!(r#"{{"msg":"{}"}}"#, "ha".repeat(200));
        let shared = SharedFrame::new(json.clone());
        let params = |bits| DeflateParams {
            server_max_window_bits: bits,
        };
        let wide = FrameEncoder::new(Some(params(15)), 16, 6);
        let a = shared.frame_for(&wide);
        let b = shared.frame_for(&wide);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(a[0], 0xC1, "FIN + RSV1 + text");
        assert!(a.len() < json.len() / 4);
        let narrow = shared.frame_for(&FrameEncoder::new(Some(params(9)), 16, 6));
        assert_ne!(a.as_ptr(), narrow.as_ptr());
        // Below the threshold the plain frame is used.
        let tiny = SharedFrame::new("{}");
        assert_eq!(tiny.frame_for(&wide)[0], 0x81);
    }
}

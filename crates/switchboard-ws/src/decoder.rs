//! Turns the bytes a client sends into whole messages, enforcing RFC 6455:
//! masking, fragmentation, control-frame rules, UTF-8 and the size limit.
//!
//! The decoder holds no buffer while no message is in flight: a fragmented
//! message's bytes live in a boxed [`Partial`] only until its last frame.

use bytes::{Buf, Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::deflate;
use crate::error::ProtocolError;
use crate::frame::{self, FrameHeader, OpCode};
use crate::utf8::Utf8Validator;

/// Limits and negotiated extensions for one connection.
#[derive(Debug, Clone, Copy)]
pub struct DecoderConfig {
    /// Largest message accepted, after reassembly and decompression.
    pub max_message_size: usize,
    /// Whether permessage-deflate was agreed, which gives RSV1 a meaning.
    pub deflate: bool,
}

/// One complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// The text of a [`Message::Text`].
    pub fn as_text(&self) -> Option<&str> {
        match self {
            // Validated when the message was decoded.
            Message::Text(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// A fragmented data message still being received.
#[derive(Debug)]
struct Partial {
    opcode: OpCode,
    compressed: bool,
    data: BytesMut,
    utf8: Utf8Validator,
}

impl Partial {
    fn checks_utf8_as_it_arrives(&self) -> bool {
        self.opcode == OpCode::Text && !self.compressed
    }
}

/// The receive side of one connection's protocol state.
#[derive(Debug)]
pub struct MessageDecoder {
    config: DecoderConfig,
    partial: Option<Box<Partial>>,
}

impl MessageDecoder {
    pub fn new(config: DecoderConfig) -> Self {
        MessageDecoder {
            config,
            partial: None,
        }
    }

    /// Whether a fragmented message is part-way received.
    pub fn is_mid_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes the next complete message from the front of `buf`. Returns
    /// `Ok(None)` when `buf` holds only part of a frame, after reserving room
    /// for the rest of it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = frame::parse_header(buf)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            let payload_len = header.payload_len as usize;
            let frame_len = header.header_len + payload_len;
            if buf.len() < frame_len {
                buf.reserve(frame_len - buf.len());
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(payload_len);
            frame::apply_mask(&mut payload, header.mask.expect("checked"));
            if let Some(message) = self.accept_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Everything that can be rejected before the payload arrives.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if header.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if header.payload_len > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
            if header.rsv1 {
                return Err(ProtocolError::ReservedBits);
            }
            return Ok(());
        }
        match (header.opcode, &self.partial) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        // RSV1 marks a compressed message, and only on its first frame.
        if header.rsv1 && (!self.config.deflate || header.opcode == OpCode::Continuation) {
            return Err(ProtocolError::ReservedBits);
        }
        let received = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
        if received + header.payload_len > self.config.max_message_size as u64 {
            return Err(self.too_big());
        }
        Ok(())
    }

    fn accept_frame(
        &mut self,
        header: FrameHeader,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        match header.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => Ok(Some(Message::Close(CloseFrame::parse(&payload)?))),
            OpCode::Text | OpCode::Binary if header.fin && !header.rsv1 => {
                if header.opcode == OpCode::Text {
                    simdutf8::basic::from_utf8(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                Ok(Some(data_message(header.opcode, payload.freeze())))
            }
            OpCode::Text | OpCode::Binary => {
                let partial = Partial {
                    opcode: header.opcode,
                    compressed: header.rsv1,
                    data: payload,
                    utf8: Utf8Validator::default(),
                };
                self.continue_message(Box::new(partial), header.fin)
            }
            OpCode::Continuation => {
                let mut partial = self.partial.take().expect("checked");
                partial.data.extend_from_slice(&payload);
                self.continue_message(partial, header.fin)
            }
        }
    }

    fn continue_message(
        &mut self,
        mut partial: Box<Partial>,
        fin: bool,
    ) -> Result<Option<Message>, ProtocolError> {
        if partial.checks_utf8_as_it_arrives() {
            partial
                .utf8
                .feed(&partial.data, fin)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        let Partial {
            opcode,
            compressed,
            data,
            ..
        } = *partial;
        let data = if compressed {
            let inflated =
                deflate::decompress(&data, self.config.max_message_size).map_err(|e| match e {
                    ProtocolError::MessageTooBig { .. } => self.too_big(),
                    other => other,
                })?;
            if opcode == OpCode::Text {
                simdutf8::basic::from_utf8(&inflated).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            Bytes::from(inflated)
        } else {
            data.freeze()
        };
        Ok(Some(data_message(opcode, data)))
    }

    fn too_big(&self) -> ProtocolError {
        ProtocolError::MessageTooBig {
            limit: self.config.max_message_size,
        }
    }
}

fn data_message(opcode: OpCode, data: Bytes) -> Message {
    if opcode == OpCode::Text {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;
    use crate::deflate::{DeflateParams, compress};

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// A client frame: masked, with the given first byte (FIN, RSV, opcode).
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![b0];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        frame::apply_mask(&mut masked, MASK);
        frame.extend_from_slice(&masked);
        frame
    }

    fn decoder(max: usize, deflate: bool) -> MessageDecoder {
        MessageDecoder::new(DecoderConfig {
            max_message_size: max,
            deflate,
        })
    }

    fn decode_all(dec: &mut MessageDecoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = dec.decode(&mut buf)? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn decodes_text_and_binary() {
        let mut bytes = client_frame(0x81, b"hello");
        bytes.extend(client_frame(0x82, &[0, 1, 2]));
        let messages = decode_all(&mut decoder(100, false), &bytes).unwrap();
        assert_eq!(
            messages,
            [
                Message::Text(Bytes::from_static(b"hello")),
                Message::Binary(Bytes::from_static(&[0, 1, 2]))
            ]
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_frame_byte_by_byte() {
        let bytes = client_frame(0x81, &[b'x'; 300]);
        let mut dec = decoder(1000, false);
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == bytes.len() - 1);
        }
    }

    #[test]
    fn reassembles_fragments_around_an_interleaved_ping() {
        let mut bytes = client_frame(0x01, b"frag");
        bytes.extend(client_frame(0x89, b"are you there"));
        bytes.extend(client_frame(0x00, b"men"));
        bytes.extend(client_frame(0x80, b"ted"));
        let messages = decode_all(&mut decoder(100, false), &bytes).unwrap();
        assert_eq!(
            messages,
            [
                Message::Ping(Bytes::from_static(b"are you there")),
                Message::Text(Bytes::from_static(b"fragmented")),
            ]
        );
    }

    #[test]
    fn rejects_an_unmasked_frame_with_1002() {
        let err = decode_all(&mut decoder(100, false), b"\x81\x02hi").unwrap_err();
        assert_eq!(err, ProtocolError::UnmaskedFrame);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn rejects_invalid_utf8_with_1007() {
        let err = decode_all(
            &mut decoder(100, false),
            &client_frame(0x81, b"\xce\xba\xff"),
        )
        .unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn rejects_invalid_utf8_in_a_fragment_before_the_message_ends() {
        let mut dec = decoder(100, false);
        let first = client_frame(0x01, b"ok");
        assert_eq!(decode_all(&mut dec, &first).unwrap(), []);
        let bad = client_frame(0x00, b"\xf4\x90\x80\x80");
        assert_eq!(decode_all(&mut dec, &bad), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn accepts_a_code_point_split_between_fragments() {
        let text = "κόσμε".as_bytes();
        let mut bytes = client_frame(0x01, &text[..1]);
        bytes.extend(client_frame(0x80, &text[1..]));
        let messages = decode_all(&mut decoder(100, false), &bytes).unwrap();
        assert_eq!(messages[0].as_text(), Some("κόσμε"));
    }

    #[test]
    fn rejects_an_oversize_message_with_1009_before_its_payload_arrives() {
        let frame = client_frame(0x82, &[0; 200]);
        let mut buf = BytesMut::from(&frame[..8]);
        let err = decoder(100, false).decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 100 });
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn counts_every_fragment_towards_the_size_limit() {
        let mut bytes = client_frame(0x02, &[0; 60]);
        bytes.extend(client_frame(0x80, &[0; 60]));
        let err = decode_all(&mut decoder(100, false), &bytes).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 100 });
    }

    #[test]
    fn enforces_fragmentation_rules() {
        let cont = client_frame(0x80, b"x");
        assert_eq!(
            decode_all(&mut decoder(100, false), &cont),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut two_starts = client_frame(0x01, b"a");
        two_starts.extend(client_frame(0x81, b"b"));
        assert_eq!(
            decode_all(&mut decoder(100, false), &two_starts),
            Err(ProtocolError::ExpectedContinuation)
        );
        assert_eq!(
            decode_all(&mut decoder(100, false), &client_frame(0x09, b"")),
            Err(ProtocolError::FragmentedControl)
        );
        assert_eq!(
            decode_all(&mut decoder(1000, false), &client_frame(0x89, &[0; 126])),
            Err(ProtocolError::ControlTooLong)
        );
    }

    #[test]
    fn rsv1_needs_permessage_deflate() {
        assert_eq!(
            decode_all(&mut decoder(100, false), &client_frame(0xC1, b"x")),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            decode_all(&mut decoder(100, true), &client_frame(0xC9, b"")),
            Err(ProtocolError::ReservedBits)
        );
    }

    #[test]
    fn decodes_close_frames() {
        let messages = decode_all(
            &mut decoder(100, false),
            &client_frame(0x88, b"\x03\xe9bye"),
        )
        .unwrap();
        assert_eq!(
            messages,
            [Message::Close(Some(CloseFrame::new(
                CloseCode::GOING_AWAY,
                "bye"
            )))]
        );
        assert_eq!(
            decode_all(&mut decoder(100, false), &client_frame(0x88, b"\x03\xed")),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
    }

    #[test]
    fn inflates_a_compressed_fragmented_message() {
        let text = "compress me please, compress me please, compress me please";
        let compressed = compress(
            text.as_bytes(),
            DeflateParams {
                server_max_window_bits: 15,
            },
            6,
        );
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut bytes = client_frame(0x41, a);
        bytes.extend(client_frame(0x80, b));
        let messages = decode_all(&mut decoder(100, true), &bytes).unwrap();
        assert_eq!(messages[0].as_text(), Some(text));
        let err = decode_all(&mut decoder(20, true), &bytes).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 20 });
    }
}

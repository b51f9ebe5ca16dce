//! Frame headers (RFC 6455 section 5.2), masking, and server frame encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// The frame opcodes RFC 6455 defines; the others are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1: "this message is compressed" once permessage-deflate is agreed.
    pub rsv1: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header itself occupies (2 to 14).
    pub header_len: usize,
}

/// Parses the header at the front of `buf`; `Ok(None)` if more bytes are needed.
/// RSV2 and RSV3 are always errors here (no extension uses them); whether RSV1
/// is allowed depends on the negotiated extensions and is left to the decoder.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, len_bytes) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let mask_at = 2 + len_bytes;
    let mask = if masked {
        match buf.get(mask_at..mask_at + 4) {
            Some(m) => Some([m[0], m[1], m[2], m[3]]),
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode,
        mask,
        payload_len,
        header_len: mask_at + if masked { 4 } else { 0 },
    }))
}

/// XORs `buf` with the masking key, starting at key position 0.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time: the key repeats every four, so a doubled key
    // lines up with every 8-byte chunk starting at offset 0.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Longest possible header of an unmasked server frame.
pub const MAX_SERVER_HEADER_LEN: usize = 10;

/// Appends an unmasked header with FIN set.
pub fn put_header(dst: &mut BytesMut, opcode: OpCode, rsv1: bool, payload_len: usize) {
    let b0 = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode as u8;
    dst.put_u8(b0);
    if payload_len < 126 {
        dst.put_u8(payload_len as u8);
    } else if payload_len <= usize::from(u16::MAX) {
        dst.put_u8(126);
        dst.put_u16(payload_len as u16);
    } else {
        dst.put_u8(127);
        dst.put_u64(payload_len as u64);
    }
}

/// Encodes one complete, unmasked server frame as a single shareable buffer.
pub fn encode(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(MAX_SERVER_HEADER_LEN + payload.len());
    put_header(&mut frame, opcode, rsv1, payload.len());
    frame.extend_from_slice(payload);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_length_form() {
        assert_eq!(&encode(OpCode::Text, false, b"hi")[..], b"\x81\x02hi");
        let medium = encode(OpCode::Binary, false, &[0; 126]);
        assert_eq!(&medium[..4], &[0x82, 126, 0, 126]);
        let large = encode(OpCode::Binary, true, &[0; 65536]);
        assert_eq!(&large[..10], &[0xC2, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn parses_what_it_encodes_and_waits_for_more() {
        let frame = encode(OpCode::Ping, false, &[7; 300]);
        for cut in 0..4 {
            assert_eq!(parse_header(&frame[..cut]), Ok(None));
        }
        let header = parse_header(&frame).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Ping);
        assert_eq!(header.payload_len, 300);
        assert_eq!(header.header_len, 4);
        assert!(header.fin && header.mask.is_none());
    }

    #[test]
    fn rejects_reserved_bits_opcodes_and_huge_lengths() {
        assert_eq!(parse_header(b"\xA1\x00"), Err(ProtocolError::ReservedBits));
        assert_eq!(parse_header(b"\x91\x00"), Err(ProtocolError::ReservedBits));
        assert_eq!(
            parse_header(b"\x83\x00"),
            Err(ProtocolError::ReservedOpcode(3))
        );
        assert_eq!(
            parse_header(b"\x8B\x00"),
            Err(ProtocolError::ReservedOpcode(0xB))
        );
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(parse_header(&huge), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn masking_matches_the_bytewise_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0, 1, 5, 8, 13, 64, 71] {
            let original: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }
}

//! permessage-deflate (RFC 7692): negotiation and per-message (de)compression.
//!
//! Switchboard always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 sections 7.1.1.1-2 let a server add
//! both). Every message is then compressed on its own, which buys two things:
//! no connection keeps a ~300 KiB zlib state while idle (the compressors live
//! per thread and are reset after each message), and a broadcast message is
//! compressed once and the same bytes are written to every subscriber.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ProtocolError;

/// The extension token in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The parameters in force on one connection once the extension is agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// LZ77 window (8..=15) the client allowed the server to use.
    pub server_max_window_bits: u8,
}

/// One acceptable `permessage-deflate` offer from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateOffer {
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value that accepts this offer.
    pub response: String,
}

/// Picks the first valid `permessage-deflate` offer among all values of the
/// `Sec-WebSocket-Extensions` request header. Offers with unknown, repeated or
/// out-of-range parameters are declined, as RFC 7692 section 5 requires.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<DeflateOffer> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

fn accept_offer(extension: &str) -> Option<DeflateOffer> {
    let mut parts = extension.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_max_window_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                // A hint about the client's own window; any window inflates
                // with our 15-bit decompressor, so only its validity matters.
                if let Some(v) = value {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    let mut response =
        format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_max_window_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(DeflateOffer {
        params: DeflateParams {
            server_max_window_bits: server_max_window_bits.unwrap_or(15),
        },
        response,
    })
}

fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The four bytes a sync flush ends with, removed on send and restored on
/// receive (RFC 7692 section 7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

thread_local! {
    /// One compressor per window size (9..=15) and thread, reset after each message.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// A 15-bit window inflates any client window size.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one whole message payload for a frame with RSV1 set.
pub fn compress(payload: &[u8], params: DeflateParams, level: u32) -> Vec<u8> {
    // zlib cannot make a raw 8-bit window; with 9 bits it still never reaches
    // back more than 250 bytes (window minus lookahead), which a 256-byte
    // window decodes.
    let bits = params.server_max_window_bits.max(9);
    COMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let slot = &mut slots[usize::from(bits - 9)];
        let compressor = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        let out = deflate_sync(compressor, payload);
        compressor.reset();
        out
    })
}

fn deflate_sync(compressor: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = compressor.total_in();
    loop {
        let consumed = (compressor.total_in() - start) as usize;
        compressor
            .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate with valid parameters cannot fail");
        let consumed = (compressor.total_in() - start) as usize;
        // zlib's rule: the flush is complete once it leaves output space unused.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    if out.ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    out
}

/// Inflates one whole compressed message, refusing to produce more than
/// `limit` bytes (a small compressed message may claim gigabytes).
pub fn decompress(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflater = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        let result = inflate_all(inflater, compressed, limit);
        inflater.reset(false);
        result
    })
}

fn inflate_all(
    inflater: &mut Decompress,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity((compressed.len() * 3).max(64).min(limit.saturating_add(1)));
    for input in [compressed, &SYNC_TAIL[..]] {
        let start = inflater.total_in();
        loop {
            let consumed = (inflater.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(ProtocolError::MessageTooBig { limit });
                }
                let room = out.capacity().max(4096).min(limit + 1 - out.len());
                out.reserve_exact(room);
            }
            let status = inflater
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|e| ProtocolError::Inflate(e.to_string()))?;
            let consumed = (inflater.total_in() - start) as usize;
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig { limit });
            }
            let drained = consumed == input.len() && out.len() < out.capacity();
            if drained || status == Status::StreamEnd {
                break;
            }
            if status == Status::BufError && out.len() < out.capacity() {
                return Err(ProtocolError::Inflate("truncated stream".into()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<DeflateOffer> {
        negotiate([value])
    }

    #[test]
    fn accepts_a_plain_offer_and_imposes_no_context_takeover() {
        let accepted = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(accepted.params.server_max_window_bits, 15);
        assert_eq!(
            accepted.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn honours_server_max_window_bits() {
        let accepted = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(accepted.params.server_max_window_bits, 10);
        assert!(accepted.response.ends_with("; server_max_window_bits=10"));
        let quoted = offer("permessage-deflate; server_max_window_bits=\"8\"").unwrap();
        assert_eq!(quoted.params.server_max_window_bits, 8);
    }

    #[test]
    fn declines_invalid_offers_and_takes_the_next() {
        assert_eq!(offer("permessage-deflate; server_max_window_bits=16"), None);
        assert_eq!(offer("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(offer("permessage-deflate; client_max_window_bits=7"), None);
        assert_eq!(offer("permessage-deflate; unknown_param"), None);
        assert_eq!(
            offer("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None
        );
        assert_eq!(offer("x-webkit-deflate-frame"), None);
        let second = negotiate([
            "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9",
        ])
        .unwrap();
        assert_eq!(second.params.server_max_window_bits, 9);
    }

    #[test]
    fn round_trips_through_every_window_size() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(200);
        for bits in 8..=15 {
            let params = DeflateParams {
                server_max_window_bits: bits,
            };
            let compressed = compress(text.as_bytes(), params, 6);
            assert!(compressed.len() < text.len() / 4, "bits {bits}");
            assert_eq!(decompress(&compressed, 1 << 20).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn an_empty_message_round_trips() {
        let params = DeflateParams {
            server_max_window_bits: 15,
        };
        let compressed = compress(b"", params, 6);
        assert_eq!(decompress(&compressed, 10).unwrap(), b"");
    }

    #[test]
    fn a_compression_bomb_hits_the_limit() {
        let params = DeflateParams {
            server_max_window_bits: 15,
        };
        let compressed = compress(&vec![b'a'; 1 << 20], params, 9);
        assert_eq!(
            decompress(&compressed, 1000),
            Err(ProtocolError::MessageTooBig { limit: 1000 })
        );
        assert_eq!(decompress(&compressed, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn corrupt_input_is_an_inflate_error() {
        assert!(matches!(
            decompress(&[0xff, 0xff, 0xff], 100),
            Err(ProtocolError::Inflate(_))
        ));
    }
}

//! HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1): how an event
//! stream that writes its own body frames what it writes.

/// `bytes` as one chunk: the size in hex, CRLF, the bytes, CRLF. Never
/// empty: an empty chunk is the last one, and ends the body.
pub fn chunk(bytes: &[u8]) -> Vec<u8> {
    debug_assert!(!bytes.is_empty(), "an empty chunk would end the body");
    let size = format!("{:x}\r\n", bytes.len());
    let mut chunk = Vec::with_capacity(size.len() + bytes.len() + 2);
    chunk.extend_from_slice(size.as_bytes());
    chunk.extend_from_slice(bytes);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_its_hex_size_the_bytes_and_crlfs() {
        assert_eq!(chunk(b"data: {}\n\n"), b"a\r\ndata: {}\n\n\r\n");
        assert_eq!(&chunk(&[b'x'; 300])[..5], b"12c\r\n");
    }
}

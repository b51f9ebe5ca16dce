//! A minimal WebSocket client for load: raw TCP, hand-rolled framing, and
//! no JSON parsing on the receive path (fields are found by scanning), so
//! the tool spends its CPU share on traffic, not on itself.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Opens a WebSocket on `path` (no extensions) and splits it.
pub async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<(FrameReader, FrameWriter)> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    handshake(stream, addr, path).await
}

/// [`connect`] from a chosen local address (to spread many connections
/// over several loopback sources).
pub async fn connect_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(FrameReader, FrameWriter)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await.context("connect")?;
    handshake(stream, addr, path).await
}

async fn handshake(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(FrameReader, FrameWriter)> {
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("connection closed during handshake");
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!(
            "handshake refused: {}",
            String::from_utf8_lossy(&buf[..head_end])
        );
    }
    buf.advance(head_end);
    let (read, write) = stream.into_split();
    Ok((
        FrameReader {
            read,
            buf,
            consumed: 0,
        },
        FrameWriter {
            write,
            out: Vec::new(),
        },
    ))
}

/// Switches a receive-mostly socket to delayed ACKs. Left alone, Linux
/// acknowledges every small segment as soon as a read drains it, and on
/// loopback that ACK (and its processing at the server's socket) is a full
/// packet's work charged to the load tool: a third of its CPU at a fixed
/// rate. Delayed, the kernel acknowledges every second segment.
pub fn delay_acks(stream: &TcpStream) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    stream.set_quickack(false)?;
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
    Ok(())
}

/// A connection read as a sequence of items (WebSocket text frames, SSE
/// events): what was read already, then one more read.
pub trait Incoming {
    /// The next item already read, without waiting. It stays in the
    /// reader's buffer, and is dropped from it by the next call to
    /// `buffered` or `fill`: no copy and no reference count per item.
    fn buffered(&mut self) -> anyhow::Result<Buffered<'_>>;

    /// Reads once from the socket; false when the connection has ended.
    async fn fill(&mut self) -> anyhow::Result<bool>;

    /// The next item; `None` when the connection ends.
    async fn next_item(&mut self) -> anyhow::Result<Option<BytesMut>> {
        loop {
            match self.buffered()? {
                Buffered::Item(item) => return Ok(Some(BytesMut::from(item))),
                Buffered::Ended => return Ok(None),
                Buffered::Empty => {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// What a reader holds without reading again.
pub enum Buffered<'a> {
    /// A complete frame or event.
    Item(&'a [u8]),
    /// The connection's end (a close frame, or the stream's last chunk).
    Ended,
    /// Nothing complete yet: read more.
    Empty,
}

pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    /// Bytes at the front of `buf` already handed out.
    consumed: usize,
}

impl FrameReader {
    /// Reads until a text frame containing `marker`, e.g. `"type":"subscribed"`.
    pub async fn wait_for(&mut self, marker: &[u8]) -> anyhow::Result<()> {
        loop {
            let frame = self.next_text().await?.context("connection closed")?;
            if find(&frame, marker).is_some() {
                return Ok(());
            }
        }
    }

    /// Lets the kernel delay this socket's ACKs (see [`delay_acks`]).
    pub fn delay_acks(&self) -> std::io::Result<()> {
        delay_acks(self.read.as_ref())
    }

    /// Releases the buffer of a connection that will only be held open.
    pub fn into_idle(self) -> OwnedReadHalf {
        self.read
    }

    /// The next text frame's payload; `None` when the connection ends.
    pub async fn next_text(&mut self) -> anyhow::Result<Option<BytesMut>> {
        self.next_item().await
    }
}

impl Incoming for FrameReader {
    /// The next text frame already read, without waiting.
    fn buffered(&mut self) -> anyhow::Result<Buffered<'_>> {
        self.buf.advance(std::mem::take(&mut self.consumed));
        while let Some((opcode, at, len)) = self.parse()? {
            match opcode {
                0x1 => {
                    self.consumed = at + len;
                    return Ok(Buffered::Item(&self.buf[at..at + len]));
                }
                0x8 => return Ok(Buffered::Ended),
                _ => self.buf.advance(at + len),
            }
        }
        Ok(Buffered::Empty)
    }

    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.buf.advance(std::mem::take(&mut self.consumed));
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        Ok(self.read.read_buf(&mut self.buf).await? > 0)
    }
}

impl FrameReader {
    /// The opcode, payload start and payload length of the frame at the
    /// front of `buf`, once it is complete.
    fn parse(&self) -> anyhow::Result<Option<(u8, usize, usize)>> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        if buf[0] & 0x70 != 0 {
            bail!("compressed or extended frame: this client negotiates no extension");
        }
        let (len, at) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if buf.len() < at + len {
            return Ok(None);
        }
        Ok(Some((buf[0] & 0x0F, at, len)))
    }
}

pub struct FrameWriter {
    write: OwnedWriteHalf,
    out: Vec<u8>,
}

impl FrameWriter {
    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &[u8]) -> anyhow::Result<()> {
        self.out.clear();
        self.out.push(0x81);
        match text.len() {
            n if n < 126 => self.out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // A zero key: masking is mandatory, its value is not.
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        self.out.extend_from_slice(text);
        self.write.write_all(&self.out).await?;
        Ok(())
    }
}

impl FrameWriter {
    /// A close frame with status 1000: the client's goodbye.
    pub async fn send_close(&mut self) -> anyhow::Result<()> {
        // FIN + close, masked with a zero key, two bytes of status.
        self.write
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
            .await?;
        Ok(())
    }
}

/// Counts a publisher's `ack`s, returning a window permit for each; prints errors.
pub async fn count_acks(
    mut reader: FrameReader,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    window: std::sync::Arc<tokio::sync::Semaphore>,
) {
    while let Ok(Some(frame)) = reader.next_text().await {
        if find(&frame, br#""type":"ack""#).is_some() {
            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            window.add_permits(1);
        } else if find(&frame, br#""type":"error""#).is_some() {
            eprintln!("publisher error: {}", String::from_utf8_lossy(&frame));
        }
    }
}

/// The unsigned number after `"key":` in a JSON text, found by scanning.
pub fn number_after(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(json, key)? + key.len();
    leading_number(&json[at..])
}

/// The unsigned number `text` starts with.
fn leading_number(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// A key looked up in many messages: its searcher is built once, not per
/// message (the load tool shares the cores with the server it measures).
pub struct Key {
    finder: memchr::memmem::Finder<'static>,
}

impl Key {
    pub fn new(key: &'static [u8]) -> Key {
        Key {
            finder: memchr::memmem::Finder::new(key),
        }
    }

    pub fn is_in(&self, json: &[u8]) -> bool {
        self.finder.find(json).is_some()
    }

    /// The unsigned number right after the key.
    pub fn number_in(&self, json: &[u8]) -> Option<u64> {
        let at = self.finder.find(json)? + self.finder.needle().len();
        leading_number(&json[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_by_key() {
        let json = br#"{"type":"message","offset":42,"msg":"t=123456;x"}"#;
        assert_eq!(number_after(json, br#""offset":"#), Some(42));
        assert_eq!(number_after(json, br#""msg":"t="#), Some(123_456));
        assert_eq!(number_after(json, br#""nope":"#), None);
        assert_eq!(Key::new(br#""offset":"#).number_in(json), Some(42));
        assert!(Key::new(br#""type":"message""#).is_in(json));
        assert!(!Key::new(br#""type":"ack""#).is_in(json));
    }

    /// A reader on one end of a loopback connection; the other end writes.
    async fn reader_and_peer() -> (FrameReader, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        let (read, _write) = accepted.unwrap().0.into_split();
        let reader = FrameReader {
            read,
            buf: BytesMut::new(),
            consumed: 0,
        };
        (reader, peer.unwrap())
    }

    #[tokio::test]
    async fn hands_out_each_text_frame_once_skipping_control_frames() {
        let (mut reader, mut peer) = reader_and_peer().await;
        // Two text frames, a ping between them, and half of a third.
        peer.write_all(b"\x81\x03one\x89\x00\x81\x03two\x81\x05th")
            .await
            .unwrap();
        let mut items = Vec::new();
        for _ in 0..100 {
            assert!(reader.fill().await.unwrap());
            while let (true, Buffered::Item(item)) = (items.len() < 3, reader.buffered().unwrap()) {
                items.push(item.to_vec());
            }
            if items.len() >= 2 {
                break;
            }
        }
        assert_eq!(items, [b"one".to_vec(), b"two".to_vec()]);
        assert!(matches!(reader.buffered().unwrap(), Buffered::Empty));
        peer.write_all(b"ree\x88\x00").await.unwrap();
        assert_eq!(reader.next_text().await.unwrap().unwrap(), &b"three"[..]);
        loop {
            match reader.buffered().unwrap() {
                Buffered::Ended => break,
                Buffered::Empty => assert!(reader.fill().await.unwrap()),
                Buffered::Item(item) => panic!("unexpected {item:?}"),
            }
        }
    }
}

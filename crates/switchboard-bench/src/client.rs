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
        FrameReader { read, buf },
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
    /// The next item already read, without waiting.
    fn buffered(&mut self) -> anyhow::Result<Buffered>;

    /// Reads once from the socket; false when the connection has ended.
    async fn fill(&mut self) -> anyhow::Result<bool>;

    /// The next item; `None` when the connection ends.
    async fn next_item(&mut self) -> anyhow::Result<Option<BytesMut>> {
        loop {
            match self.buffered()? {
                Buffered::Item(item) => return Ok(Some(item)),
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
pub enum Buffered {
    /// A complete frame or event.
    Item(BytesMut),
    /// The connection's end (a close frame, or the stream's last chunk).
    Ended,
    /// Nothing complete yet: read more.
    Empty,
}

pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
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
    fn buffered(&mut self) -> anyhow::Result<Buffered> {
        while let Some((opcode, payload)) = self.parse()? {
            match opcode {
                0x1 => return Ok(Buffered::Item(payload)),
                0x8 => return Ok(Buffered::Ended),
                _ => continue,
            }
        }
        Ok(Buffered::Empty)
    }

    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        Ok(self.read.read_buf(&mut self.buf).await? > 0)
    }
}

impl FrameReader {
    fn parse(&mut self) -> anyhow::Result<Option<(u8, BytesMut)>> {
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
        let opcode = buf[0] & 0x0F;
        self.buf.advance(at);
        Ok(Some((opcode, self.buf.split_to(len))))
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
}

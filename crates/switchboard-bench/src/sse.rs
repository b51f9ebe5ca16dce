//! A minimal Server-Sent Events client for load: raw TCP, HTTP/1.1 chunked
//! decoding by hand, events split on the blank line, no parsing beyond
//! that (fields are found by scanning, as on the WebSocket side).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, Buffered, Incoming, find};

/// One `GET /sse` stream.
pub struct EventReader {
    stream: TcpStream,
    /// Raw bytes from the socket, chunk framing included.
    raw: BytesMut,
    /// The decoded body: events, possibly the start of the next one.
    body: BytesMut,
    /// Bytes at the front of `body` already handed out.
    consumed: usize,
    chunk: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting `HEX\r\n`.
    Size,
    /// This many bytes of chunk data remain.
    Data(usize),
    /// Expecting the `\r\n` after a chunk's data.
    DataEnd,
    /// The zero-size chunk arrived: the body is over.
    Done,
}

impl EventReader {
    /// Lets the kernel delay this socket's ACKs (see [`client::delay_acks`]).
    pub fn delay_acks(&self) -> std::io::Result<()> {
        client::delay_acks(&self.stream)
    }

    /// Opens `GET path` and reads the response head.
    pub async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<EventReader> {
        let stream = TcpStream::connect(addr).await.context("connect")?;
        EventReader::request(stream, addr, path).await
    }

    /// [`EventReader::connect`] from a chosen local address.
    pub async fn connect_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<EventReader> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await.context("connect")?;
        EventReader::request(stream, addr, path).await
    }

    /// The socket alone, for a client that only drains what arrives.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    async fn request(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<EventReader> {
        stream.set_nodelay(true)?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(&mut raw).await? == 0 {
                bail!("connection closed before the response head");
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
            bail!("not a chunked event stream: {head}");
        }
        raw.advance(head_end);
        Ok(EventReader {
            stream,
            raw,
            body: BytesMut::new(),
            consumed: 0,
            chunk: ChunkState::Size,
        })
    }

    /// Waits for an event containing `marker`.
    pub async fn wait_for(&mut self, marker: &[u8]) -> anyhow::Result<()> {
        while let Some(event) = self.next_item().await? {
            if find(&event, marker).is_some() {
                return Ok(());
            }
        }
        bail!("stream ended before {}", String::from_utf8_lossy(marker))
    }

    /// Moves chunk data from `raw` to `body`; false if more bytes are needed.
    fn decode(&mut self) -> anyhow::Result<bool> {
        let mut progressed = false;
        loop {
            match self.chunk {
                ChunkState::Size => {
                    let Some(line_end) = find(&self.raw, b"\r\n") else {
                        return Ok(progressed);
                    };
                    let line = std::str::from_utf8(&self.raw[..line_end])?;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .with_context(|| format!("bad chunk size {line:?}"))?;
                    self.raw.advance(line_end + 2);
                    self.chunk = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if self.raw.is_empty() {
                        return Ok(progressed);
                    }
                    let take = left.min(self.raw.len());
                    self.body.extend_from_slice(&self.raw[..take]);
                    self.raw.advance(take);
                    self.chunk = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if self.raw.len() < 2 {
                        return Ok(progressed);
                    }
                    if &self.raw[..2] != b"\r\n" {
                        bail!("chunk not followed by CRLF");
                    }
                    self.raw.advance(2);
                    self.chunk = ChunkState::Size;
                }
                ChunkState::Done => return Ok(true),
            }
            progressed = true;
        }
    }
}

impl Incoming for EventReader {
    /// The next event already read, without waiting.
    fn buffered(&mut self) -> anyhow::Result<Buffered<'_>> {
        self.body.advance(std::mem::take(&mut self.consumed));
        loop {
            if let Some(end) = blank_line(&self.body) {
                self.consumed = end + 2;
                return Ok(Buffered::Item(&self.body[..end + 2]));
            }
            if self.chunk == ChunkState::Done {
                return Ok(Buffered::Ended);
            }
            if !self.decode()? {
                return Ok(Buffered::Empty);
            }
        }
    }

    /// Reads once from the socket; false when the connection has ended.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.raw.capacity() - self.raw.len() < 4096 {
            self.raw.reserve(64 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.raw).await? > 0)
    }
}

/// Where the first `\n\n` (an event's end) starts.
fn blank_line(body: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', body).find(|&i| body.get(i + 1) == Some(&b'\n'))
}

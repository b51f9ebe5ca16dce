//! A minimal Socket.IO client for load (Engine.IO 4): over WebSocket on
//! this tool's raw frames, and over HTTP long-polling on raw HTTP/1.1, with
//! fields found by scanning. It speaks the event contract every server
//! under test implements: `join {channel}` and `publish {channel, msg}`
//! with acks, `message` events. It answers the server's pings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, Buffered, FrameReader, FrameWriter, Incoming, find};

/// The Engine.IO 4 WebSocket endpoint.
const WEBSOCKET_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// Marks a `message` event in a frame.
pub const MESSAGE: &[u8] = br#"42["message""#;

/// Opens a Socket.IO session over a WebSocket as `user`, connected to the
/// main namespace and, with `channel`, joined to it.
pub async fn connect(
    server: SocketAddr,
    user: &str,
    channel: Option<&str>,
) -> anyhow::Result<(FrameReader, FrameWriter)> {
    let (reader, writer) = client::connect(server, WEBSOCKET_PATH).await?;
    start(reader, writer, user, channel).await
}

/// [`connect`] from a chosen local address.
pub async fn connect_from(
    source: std::net::IpAddr,
    server: SocketAddr,
    user: &str,
    channel: Option<&str>,
) -> anyhow::Result<(FrameReader, FrameWriter)> {
    let (reader, writer) = client::connect_from(source, server, WEBSOCKET_PATH).await?;
    start(reader, writer, user, channel).await
}

async fn start(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    user: &str,
    channel: Option<&str>,
) -> anyhow::Result<(FrameReader, FrameWriter)> {
    let step = std::time::Duration::from_secs(10);
    tokio::time::timeout(step, reader.wait_for(b"0{"))
        .await
        .context("no open packet")?
        .context("open packet")?;
    writer
        .send_text(format!(r#"40{{"user":"{user}"}}"#).as_bytes())
        .await?;
    tokio::time::timeout(step, wait_for(&mut reader, &mut writer, b"40{"))
        .await
        .context("no connect reply")?
        .context("connect")?;
    if let Some(channel) = channel {
        // A server may run its connection handler (which registers the
        // event handlers) after its connect reply: an event sent at once
        // can go unheard there (socketioxide), so an unanswered join is
        // sent again.
        let mut attempts = 0;
        loop {
            writer.send_text(&join(channel)).await?;
            let patience = std::time::Duration::from_secs(2);
            match tokio::time::timeout(patience, wait_for(&mut reader, &mut writer, b"430[")).await
            {
                Ok(joined) => break joined.context("join ack")?,
                Err(_) if attempts < 4 => attempts += 1,
                Err(_) => bail!("no join ack"),
            }
        }
    }
    Ok((reader, writer))
}

/// Reads until a frame containing `marker`, answering pings meanwhile (a
/// server may ping at once, and a thousand joins take a while).
async fn wait_for(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    marker: &[u8],
) -> anyhow::Result<()> {
    loop {
        let frame = reader.next_text().await?.context("connection closed")?;
        if is_ping(&frame) {
            writer.send_text(b"3").await?;
        } else if find(&frame, marker).is_some() {
            return Ok(());
        }
    }
}

/// `join {channel}`, acknowledged as 0.
fn join(channel: &str) -> Vec<u8> {
    format!(r#"420["join",{{"channel":"{channel}"}}]"#).into_bytes()
}

/// `publish {channel, msg}` asking for ack `id`.
pub fn publish(id: u64, channel: &str, msg: &str) -> Vec<u8> {
    format!(r#"42{id}["publish",{{"channel":"{channel}","msg":"{msg}"}}]"#).into_bytes()
}

/// Whether a frame is the server's ping.
pub fn is_ping(frame: &[u8]) -> bool {
    frame == b"2"
}

/// Counts a publisher's acks, returning a window permit for each, and
/// answers pings.
pub async fn count_acks(
    mut reader: FrameReader,
    writer: Arc<tokio::sync::Mutex<FrameWriter>>,
    acked: Arc<AtomicU64>,
    window: Arc<tokio::sync::Semaphore>,
) {
    while let Ok(Some(frame)) = reader.next_text().await {
        if frame.starts_with(b"43") {
            if find(&frame, br#""error""#).is_some() {
                eprintln!("publisher error: {}", String::from_utf8_lossy(&frame));
                continue;
            }
            acked.fetch_add(1, Ordering::Relaxed);
            window.add_permits(1);
        } else if is_ping(&frame) && writer.lock().await.send_text(b"3").await.is_err() {
            return;
        }
    }
}

/// A long-polling session: each read is a GET on its own keep-alive
/// connection; pongs go out as POSTs on a second one.
pub struct PollingReader {
    server: SocketAddr,
    query: String,
    get: TcpStream,
    post: TcpStream,
    raw: BytesMut,
    /// The last payload's packets, separated by `\x1e`.
    body: BytesMut,
    /// Bytes at the front of `body` already handed out.
    consumed: usize,
    /// Pings seen and not yet answered.
    pings: usize,
}

impl PollingReader {
    /// Opens a session as `user`, connects the main namespace and joins
    /// `channel`.
    pub async fn connect(server: SocketAddr, user: &str, channel: &str) -> anyhow::Result<Self> {
        let mut get = TcpStream::connect(server).await.context("connect")?;
        get.set_nodelay(true)?;
        let mut raw = BytesMut::with_capacity(4096);
        let open = http(
            &mut get,
            &mut raw,
            server,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            b"",
        )
        .await?;
        let sid_at = find(&open, br#""sid":""#).context("no sid in the open packet")? + 7;
        let sid_len = open[sid_at..]
            .iter()
            .position(|&b| b == b'"')
            .context("sid")?;
        let sid = String::from_utf8(open[sid_at..sid_at + sid_len].to_vec())?;
        let query = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let post = TcpStream::connect(server).await.context("connect")?;
        post.set_nodelay(true)?;
        let mut reader = PollingReader {
            server,
            query,
            get,
            post,
            raw,
            body: BytesMut::new(),
            consumed: 0,
            pings: 0,
        };
        reader
            .send(format!(r#"40{{"user":"{user}"}}"#).as_bytes())
            .await?;
        let step = std::time::Duration::from_secs(10);
        tokio::time::timeout(step, reader.wait_for(b"40{"))
            .await
            .context("no connect reply")??;
        // A server may register its event handlers just after its connect
        // reply (socketioxide): a join sent at once can go unheard, and a
        // poll cannot be cut short to send it again, so it waits a moment.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        reader.send(&join(channel)).await?;
        reader.wait_for(b"430[").await?;
        Ok(reader)
    }

    /// POSTs one packet.
    async fn send(&mut self, packet: &[u8]) -> anyhow::Result<()> {
        let mut raw = BytesMut::new();
        let query = self.query.clone();
        http(
            &mut self.post,
            &mut raw,
            self.server,
            "POST",
            &query,
            packet,
        )
        .await?;
        Ok(())
    }

    async fn wait_for(&mut self, marker: &[u8]) -> anyhow::Result<()> {
        loop {
            while let Buffered::Item(packet) = self.buffered()? {
                if find(packet, marker).is_some() {
                    return Ok(());
                }
            }
            if !self.fill().await? {
                bail!("session ended");
            }
        }
    }

    pub fn delay_acks(&self) -> std::io::Result<()> {
        client::delay_acks(&self.get)
    }
}

impl Incoming for PollingReader {
    fn buffered(&mut self) -> anyhow::Result<Buffered<'_>> {
        loop {
            self.body.advance(std::mem::take(&mut self.consumed));
            if self.body.is_empty() {
                return Ok(Buffered::Empty);
            }
            let end = self
                .body
                .iter()
                .position(|&b| b == 0x1e)
                .unwrap_or(self.body.len());
            self.consumed = (end + 1).min(self.body.len());
            let packet = &self.body[..end];
            match packet {
                b"2" => self.pings += 1,
                b"1" => return Ok(Buffered::Ended),
                _ => return Ok(Buffered::Item(&self.body[..end])),
            }
        }
    }

    /// Answers pings, then polls once.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.body.advance(std::mem::take(&mut self.consumed));
        for _ in 0..std::mem::take(&mut self.pings) {
            self.send(b"3").await?;
        }
        let query = self.query.clone();
        let body = http(
            &mut self.get,
            &mut self.raw,
            self.server,
            "GET",
            &query,
            b"",
        )
        .await?;
        self.body.extend_from_slice(&body);
        Ok(true)
    }
}

/// One request on a keep-alive connection; the response body (which must
/// have a `Content-Length`), or an error for any status but 200.
async fn http(
    stream: &mut TcpStream,
    raw: &mut BytesMut,
    server: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<BytesMut> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let head_end = loop {
        if let Some(i) = find(raw, b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(raw).await? == 0 {
            bail!("connection closed");
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("a polling response without Content-Length")?
        .trim()
        .parse()?;
    raw.advance(head_end);
    while raw.len() < length {
        if stream.read_buf(raw).await? == 0 {
            bail!("connection closed");
        }
    }
    Ok(raw.split_to(length))
}

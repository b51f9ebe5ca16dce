//! The idle scenario: N subscribed connections that do nothing; the
//! server's resident memory per connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;

use crate::client;
use crate::fanout::Transport;
use crate::socketio;
use crate::sse::EventReader;
use crate::{Report, fresh_channel};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle connections to open (each process may hold 20,000 files here).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N to spread connections over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connections per channel: every join is announced to the channel, so
    /// one huge room would measure presence traffic, not idle memory.
    #[arg(long, default_value_t = 100)]
    per_channel: usize,
    /// Channels each SSE stream subscribes to (its room, and the rooms
    /// after it), as a page that shows unread counts does; WebSocket
    /// connections subscribe to their room only.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// How the connections subscribe: the native WebSocket protocol
    /// (`/ws`), or an event stream (`GET /sse`).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Connect with a connection token signed with this secret (a server
    /// started with `--auth token --token-hmac-secret SECRET`), as user
    /// `idleN`, instead of naming the user: what a token costs an idle
    /// connection (its grant and its place in the expiry schedule).
    #[arg(long)]
    token_secret: Option<String>,
    /// Wait after the last connection before reading memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

pub async fn run(
    server: SocketAddr,
    server_pid: Option<u32>,
    args: Args,
) -> anyhow::Result<Report> {
    let pid = server_pid.context("idle needs --server-pid to read the server's memory")?;
    if args.token_secret.is_some() && args.transport.is_socketio() {
        anyhow::bail!("--token-secret is for --transport ws or sse");
    }
    let channel = fresh_channel("idle");
    let before = resident_bytes(pid)?;
    let mut held = Vec::with_capacity(args.connections);
    let opened = crate::progress::counter("connecting", args.connections);
    for chunk_start in (0..args.connections).step_by(200) {
        let mut opening = Vec::new();
        for i in chunk_start..(chunk_start + 200).min(args.connections) {
            let source = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(args.sources.max(1))) as u8,
            ));
            let first_room = i / args.per_channel.max(1);
            let rooms: Vec<String> = (first_room..first_room + args.channels.max(1))
                .map(|r| format!("{channel}-{r}"))
                .collect();

            let transport = args.transport;
            let who = match &args.token_secret {
                Some(secret) => format!("token={}", mint_token(secret, &format!("idle{i}"))?),
                None => format!("user=idle{i}"),
            };
            opening.push(tokio::spawn(async move {
                // Like a real client, read (and drop) what arrives, e.g.
                // later joins, with no buffer kept between reads, and
                // answer a Socket.IO server's pings.
                let (mut read, mut writer) =
                    open_idle(transport, source, server, i, &who, &rooms).await?;
                let drain = tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut sink = [0u8; 512];
                    while let Ok(n @ 1..) = read.read(&mut sink).await {
                        let ping = crate::client::find(&sink[..n], &SOCKETIO_PING).is_some();
                        if let (true, true, Some(writer)) =
                            (transport.is_socketio(), ping, &mut writer)
                            && writer.send_text(b"3").await.is_err()
                        {
                            break;
                        }
                    }
                    drop(writer);
                });
                anyhow::Ok(drain)
            }));
        }
        for task in opening {
            held.push(task.await??);
            opened.inc(1);
        }
    }
    opened.finish_and_clear();
    tokio::time::sleep(args.settle).await;
    let after = resident_bytes(pid)?;
    let per_connection = after.saturating_sub(before) as f64 / args.connections as f64;
    for drain in held {
        drain.abort();
    }
    Ok(Report {
        scenario: "idle",
        rows: vec![
            ("connections", args.connections as f64, ""),
            ("server_rss_before", before as f64 / 1024.0, "KiB"),
            ("server_rss_after", after as f64 / 1024.0, "KiB"),
            ("server_rss_per_connection", per_connection, "bytes"),
        ],
    })
}

/// A Socket.IO ping as a server frame: text, 1 byte, `2`.
const SOCKETIO_PING: [u8; 3] = [0x81, 0x01, b'2'];

/// What an idle client holds: a socket (or its read half) to drain, and for
/// a WebSocket the write half, kept because dropping it half-closes.
type Idle = (
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    Option<client::FrameWriter>,
);

/// Opens one connection subscribed to its first room (a WebSocket) or to
/// all of them (an SSE stream), and waits for its greeting.
async fn open_idle(
    transport: Transport,
    source: IpAddr,
    server: SocketAddr,
    i: usize,
    who: &str,
    rooms: &[String],
) -> anyhow::Result<Idle> {
    match transport {
        Transport::Ws => {
            let path = format!("/ws?{who}&channel={}", rooms[0]);
            let (mut reader, writer) =
                retrying(|| client::connect_from(source, server, &path)).await?;
            reader.wait_for(br#""type":"subscribed""#).await?;
            Ok((Box::new(reader.into_idle()), Some(writer)))
        }
        Transport::Sse => {
            let path = format!("/sse?{who}&channel={}", rooms.join("&channel="));
            let mut reader = retrying(|| EventReader::connect_from(source, server, &path)).await?;
            reader.wait_for(b"event: presence").await?;
            Ok((Box::new(reader.into_stream()), None))
        }
        Transport::Socketio => {
            let user = format!("idle{i}");
            let (reader, writer) =
                retrying(|| socketio::connect_from(source, server, &user, Some(&rooms[0]))).await?;
            Ok((Box::new(reader.into_idle()), Some(writer)))
        }
        Transport::SocketioPolling => {
            anyhow::bail!("idle measures WebSocket and SSE connections, not polling sessions")
        }
    }
}

/// A day-long HS256 token for `user`, allowed every channel.
fn mint_token(secret: &str, user: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    let claims = serde_json::json!({"sub": user, "exp": exp, "subscribe": ["*"], "publish": ["*"]});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Loopback under heavy load may reset a handshake (the kernel's TCP memory
/// pressure); a few retries keep one refusal from spoiling the run.
async fn retrying<T, F: Future<Output = anyhow::Result<T>>>(
    connect: impl Fn() -> F,
) -> anyhow::Result<T> {
    let mut attempt = 0;
    loop {
        match connect().await {
            Ok(connection) => return Ok(connection),
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("idle: connect failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// VmRSS of `pid`, in bytes.
pub(crate) fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

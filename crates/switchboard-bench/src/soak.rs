//! The soak scenario: for a long time (10 minutes; 30 s in CI), clients on
//! every transport join, leave, drop their connection without a goodbye
//! and resume from their last offset, while publishers on every transport
//! (WebSocket, Socket.IO, HTTP) publish. At the end, with every client
//! gone, it checks what must hold after any amount of churn:
//! - each subscriber's view of its channel was gap-free and without a
//!   duplicate, across every resume;
//! - every acknowledged message is in the history, at its offset;
//! - the server holds no more file descriptors than before, and its
//!   resident memory is back within 10 % of where it started.
//!
//! Where it started is measured after a warm-up round of the same churn,
//! so one-time allocations (per-thread buffers, the store's caches) are
//! not counted as growth.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, Incoming, Key, find};
use crate::socketio;
use crate::sse::EventReader;
use crate::{Report, fresh_channel};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long the churn runs.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Channels the clients spread over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Subscribers per transport (WebSocket, SSE, Socket.IO), each joining,
    /// leaving or dropping and resuming over and over.
    #[arg(long, default_value_t = 8)]
    subscribers: usize,
    /// Messages per second each publisher sends (one publisher per
    /// transport and channel).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Longest a subscriber stays before it leaves or drops.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    stay: Duration,
    /// Warm-up churn before the starting memory is read.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Messages stored (and read back) before the start is measured, so
    /// the store's caches are as full at the start as at the end.
    #[arg(long, default_value_t = 50_000)]
    fill: usize,
    /// Wait after the last client left before reading memory and files.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Via {
    WebSocket,
    Sse,
    SocketIo,
}

const VIAS: [Via; 3] = [Via::WebSocket, Via::Sse, Via::SocketIo];

/// What every worker adds to.
#[derive(Default)]
struct Tally {
    stop: AtomicBool,
    sessions: AtomicU64,
    drops: AtomicU64,
    resumes: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    published: AtomicU64,
    errors: AtomicU64,
    /// Every acknowledged publish: channel index, offset, text.
    acked: Mutex<Vec<(usize, u64, String)>>,
}

pub async fn run(
    server: SocketAddr,
    server_pid: Option<u32>,
    args: Args,
) -> anyhow::Result<Report> {
    let pid = server_pid.context("soak needs --server-pid to read memory and files")?;
    let base = fresh_channel("soak");
    let channels: Arc<Vec<String>> = Arc::new(
        (0..args.channels.max(1))
            .map(|i| format!("{base}-{i}"))
            .collect(),
    );

    // Warm-up: history enough to fill the store's page caches (bounded,
    // and full on any server that has run a while), then the same churn,
    // briefly; then everyone leaves.
    fill_history(server, &format!("{base}-fill"), args.fill).await?;
    let warmup = Arc::new(Tally::default());
    churn(server, &channels, &args, args.warmup, warmup.clone()).await;
    tokio::time::sleep(args.settle).await;
    let rss_start = resident_bytes(pid)?;
    let fds_start = open_files(pid)?;

    let tally = Arc::new(Tally::default());
    churn(server, &channels, &args, args.duration, tally.clone()).await;
    tokio::time::sleep(args.settle).await;
    let rss_end = resident_bytes(pid)?;
    let fds_end = open_files(pid)?;

    let acked: Vec<(usize, u64, String)> = std::mem::take(&mut *tally.acked.lock().unwrap())
        .into_iter()
        .chain(std::mem::take(&mut *warmup.acked.lock().unwrap()))
        .collect();
    let missing = missing_from_history(server, &channels, &acked).await?;

    let count = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
    let report = Report {
        scenario: "soak",
        rows: vec![
            ("sessions", count(&tally.sessions), "connections"),
            (
                "dropped without goodbye",
                count(&tally.drops),
                "connections",
            ),
            (
                "resumed from an offset",
                count(&tally.resumes),
                "connections",
            ),
            ("messages received", count(&tally.received), "messages"),
            ("publishes acknowledged", acked.len() as f64, "messages"),
            ("client errors", count(&tally.errors), "errors"),
            ("gaps seen", count(&tally.gaps), "gaps"),
            ("duplicates seen", count(&tally.duplicates), "messages"),
            ("acked but not in history", missing as f64, "messages"),
            ("server memory before", rss_start as f64 / 1048576.0, "MiB"),
            ("server memory after", rss_end as f64 / 1048576.0, "MiB"),
            ("server files before", fds_start as f64, "fds"),
            ("server files after", fds_end as f64, "fds"),
        ],
    };
    let mut failures = Vec::new();
    if tally.gaps.load(Ordering::Relaxed) > 0 || tally.duplicates.load(Ordering::Relaxed) > 0 {
        failures.push("a subscriber saw a gap or a duplicate");
    }
    if missing > 0 {
        failures.push("acknowledged messages are missing from history");
    }
    if acked.is_empty() || tally.received.load(Ordering::Relaxed) == 0 {
        failures.push("nothing was published or received");
    }
    if fds_end > fds_start {
        failures.push("the server holds more file descriptors than before");
    }
    if rss_end as f64 > rss_start as f64 * 1.10 {
        failures.push("the server's memory did not come back within 10 %");
    }
    if !failures.is_empty() {
        report.print();
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(report)
}

/// Runs publishers and churning subscribers for `duration`, then stops
/// them all and waits until every one has gone.
async fn churn(
    server: SocketAddr,
    channels: &Arc<Vec<String>>,
    args: &Args,
    duration: Duration,
    tally: Arc<Tally>,
) {
    let mut workers = Vec::new();
    for (c, _) in channels.iter().enumerate() {
        for via in [Publisher::WebSocket, Publisher::SocketIo, Publisher::Http] {
            let (channels, tally) = (channels.clone(), tally.clone());
            let rate = args.rate;
            workers.push(tokio::spawn(async move {
                publish_loop(server, via, &channels, c, rate, &tally).await;
            }));
        }
    }
    for via in VIAS {
        for s in 0..args.subscribers {
            let (channels, tally) = (channels.clone(), tally.clone());
            let stay = args.stay;
            workers.push(tokio::spawn(async move {
                subscribe_loop(server, via, s, &channels, stay, &tally).await;
            }));
        }
    }
    tokio::time::sleep(duration).await;
    tally.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Publisher {
    WebSocket,
    SocketIo,
    Http,
}

/// Publishes to channel `c` at `rate`, reconnecting now and then (a
/// connection kept for a while, then dropped).
async fn publish_loop(
    server: SocketAddr,
    via: Publisher,
    channels: &[String],
    c: usize,
    rate: f64,
    tally: &Tally,
) {
    let channel = &channels[c];
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut seq = 0u64;
    while !tally.stop.load(Ordering::Relaxed) {
        let outcome = match via {
            Publisher::Http => {
                let msg = format!("http-{c}-{seq}");
                seq += 1;
                http_publish(server, channel, &msg).await.map(|offset| {
                    tally.acked.lock().unwrap().push((c, offset, msg));
                    tally.published.fetch_add(1, Ordering::Relaxed);
                })
            }
            Publisher::WebSocket | Publisher::SocketIo => {
                publish_session(server, via, channels, c, every, &mut seq, tally).await
            }
        };
        if outcome.is_err() && !tally.stop.load(Ordering::Relaxed) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(every).await;
    }
}

/// One publishing connection: about fifty publishes, each waiting for its
/// ack, then the connection dropped.
async fn publish_session(
    server: SocketAddr,
    via: Publisher,
    channels: &[String],
    c: usize,
    every: Duration,
    seq: &mut u64,
    tally: &Tally,
) -> anyhow::Result<()> {
    let channel = &channels[c];
    let (name, (mut reader, mut writer)) = match via {
        Publisher::WebSocket => (
            "ws",
            client::connect(server, &format!("/ws?user=pub-ws-{c}")).await?,
        ),
        _ => (
            "sio",
            socketio::connect(server, &format!("pub-sio-{c}"), None).await?,
        ),
    };
    let offset_key = Key::new(br#""offset":"#);
    for _ in 0..50 {
        if tally.stop.load(Ordering::Relaxed) {
            break;
        }
        let msg = format!("{name}-{c}-{seq}");
        *seq += 1;
        let request = match via {
            Publisher::WebSocket => {
                format!(r#"{{"type":"publish","channel":"{channel}","msg":"{msg}","id":1}}"#)
                    .into_bytes()
            }
            _ => socketio::publish(1, channel, &msg),
        };
        writer.send_text(&request).await?;
        let offset = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let frame = reader.next_text().await?.context("connection closed")?;
                if socketio::is_ping(&frame) {
                    writer.send_text(b"3").await?;
                    continue;
                }
                let is_ack =
                    find(&frame, br#""type":"ack""#).is_some() || frame.starts_with(b"431");
                if is_ack {
                    if find(&frame, br#""error""#).is_some() {
                        bail!("refused: {}", String::from_utf8_lossy(&frame));
                    }
                    return offset_key.number_in(&frame).context("ack without offset");
                }
            }
        })
        .await
        .context("no ack in 10 s")??;
        tally.acked.lock().unwrap().push((c, offset, msg));
        tally.published.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// `POST /api/channels/{channel}/messages`; the stored offset.
async fn http_publish(server: SocketAddr, channel: &str, msg: &str) -> anyhow::Result<u64> {
    let body = format!(r#"{{"username":"pub-http","msg":"{msg}"}}"#);
    let (status, answer) = http(
        server,
        "POST",
        &format!("/api/channels/{channel}/messages"),
        body.as_bytes(),
    )
    .await?;
    if status != 201 {
        bail!(
            "publish answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    client::number_after(&answer, br#""offset":"#).context("no offset")
}

/// Subscribes over `via`, stays a random while, leaves or drops, and comes
/// back from the last offset it saw, in another channel now and then.
async fn subscribe_loop(
    server: SocketAddr,
    via: Via,
    s: usize,
    channels: &[String],
    stay: Duration,
    tally: &Tally,
) {
    // Per channel, the last offset seen: a resume starts after it.
    let mut seen: HashMap<usize, u64> = HashMap::new();
    let mut round = s;
    while !tally.stop.load(Ordering::Relaxed) {
        round += 1;
        let c = (s + round / 3) % channels.len();
        let last = seen.get(&c).copied();
        let lifetime = stay.mul_f64(0.25 + 0.75 * fraction(s, round));
        let drop_it = round % 2 == 0;
        let user = format!("sub-{}-{s}", via_name(via));
        let outcome = subscription(
            server,
            via,
            &user,
            &channels[c],
            last,
            lifetime,
            drop_it,
            tally,
        )
        .await;
        match outcome {
            Ok(Some(now)) => {
                seen.insert(c, now);
            }
            Ok(None) => {}
            Err(_) if tally.stop.load(Ordering::Relaxed) => {}
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        if last.is_some() {
            tally.resumes.fetch_add(1, Ordering::Relaxed);
        }
        if drop_it {
            tally.drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn via_name(via: Via) -> &'static str {
    match via {
        Via::WebSocket => "ws",
        Via::Sse => "sse",
        Via::SocketIo => "sio",
    }
}

/// A spread-out number in 0..1 for a worker's round.
fn fraction(s: usize, round: usize) -> f64 {
    let mixed = (s as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (round as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// One connection's life: subscribes from after `last` (or live only),
/// checks every message's offset follows the one before, and ends after
/// `lifetime`: it leaves (unsubscribes and closes) or, if `drop_it`, just
/// goes (no close frame: the server sees the connection fail). The last
/// offset seen.
#[allow(clippy::too_many_arguments)]
async fn subscription(
    server: SocketAddr,
    via: Via,
    user: &str,
    channel: &str,
    last: Option<u64>,
    lifetime: Duration,
    drop_it: bool,
    tally: &Tally,
) -> anyhow::Result<Option<u64>> {
    let mut view = View { last, tally };
    let until = Instant::now() + lifetime;
    let since = last.map(|o| format!(r#","since":{o}"#)).unwrap_or_default();
    match via {
        Via::WebSocket => {
            let (mut reader, mut writer) =
                client::connect(server, &format!("/ws?user={user}")).await?;
            let subscribe = format!(r#"{{"type":"subscribe","channel":"{channel}"{since}}}"#);
            writer.send_text(subscribe.as_bytes()).await?;
            read_until(until, &mut reader, &mut view).await?;
            if !drop_it {
                let leave = format!(r#"{{"type":"unsubscribe","channel":"{channel}"}}"#);
                writer.send_text(leave.as_bytes()).await?;
                writer.send_close().await?;
            }
        }
        Via::Sse => {
            let since = last.map(|o| format!("&since={o}")).unwrap_or_default();
            let path = format!("/sse?channel={channel}&user={user}{since}");
            let mut reader = EventReader::connect(server, &path).await?;
            read_until(until, &mut reader, &mut view).await?;
        }
        Via::SocketIo => {
            let (mut reader, mut writer) = socketio::connect(server, user, None).await?;
            let join = format!(r#"420["join",{{"channel":"{channel}"{since}}}]"#);
            writer.send_text(join.as_bytes()).await?;
            read_until(until, &mut reader, &mut view).await?;
            if !drop_it {
                // DISCONNECT of the main namespace, then the close frame.
                writer.send_text(b"41").await?;
                writer.send_close().await?;
            }
        }
    }
    Ok(view.last)
}

/// A subscriber's view of one channel: offsets must follow one another.
struct View<'a> {
    last: Option<u64>,
    tally: &'a Tally,
}

impl View<'_> {
    fn see(&mut self, item: &[u8]) {
        static MESSAGE: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
        static OFFSET: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
        let message = MESSAGE.get_or_init(|| Key::new(br#""type":"message""#));
        let offset = OFFSET.get_or_init(|| Key::new(br#""offset":"#));
        if !message.is_in(item) {
            return;
        }
        let Some(offset) = offset.number_in(item) else {
            return;
        };
        self.tally.received.fetch_add(1, Ordering::Relaxed);
        match self.last {
            Some(last) if offset <= last => {
                self.tally.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Some(last) if offset > last + 1 => {
                self.tally.gaps.fetch_add(1, Ordering::Relaxed);
                self.last = Some(offset);
            }
            _ => self.last = Some(offset),
        }
    }
}

/// Reads items until `until` (or the stream ends), showing each to `view`.
async fn read_until(
    until: Instant,
    reader: &mut impl Incoming,
    view: &mut View<'_>,
) -> anyhow::Result<()> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match tokio::time::timeout(left, reader.next_item()).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(item))) => view.see(&item),
            Ok(Ok(None)) => bail!("the server ended the connection"),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Publishes `count` messages to `channel` over one WebSocket, many in
/// flight (the server must allow it: `--publish-rate 1000000
/// --publish-burst 1000000`), then reads them all back.
async fn fill_history(server: SocketAddr, channel: &str, count: usize) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let (reader, mut writer) = client::connect(server, "/ws?user=soak-fill").await?;
    let acked = Arc::new(AtomicU64::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(256));
    let counting = tokio::spawn(client::count_acks(reader, acked.clone(), window.clone()));
    let text = "x".repeat(100);
    for _ in 0..count {
        window.acquire().await?.forget();
        let publish = format!(r#"{{"type":"publish","channel":"{channel}","msg":"{text}"}}"#);
        writer.send_text(publish.as_bytes()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < count as u64 {
        if Instant::now() > deadline {
            bail!(
                "history fill: {} of {count} acked in 60 s",
                acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(writer);
    counting.abort();
    let stored = history(server, channel).await?;
    if stored.len() < count {
        bail!("history fill: {} of {count} stored", stored.len());
    }
    Ok(())
}

/// How many acknowledged messages the history lacks (or holds another
/// text at their offset).
async fn missing_from_history(
    server: SocketAddr,
    channels: &[String],
    acked: &[(usize, u64, String)],
) -> anyhow::Result<usize> {
    let mut missing = 0;
    for (c, channel) in channels.iter().enumerate() {
        let stored = history(server, channel).await?;
        missing += acked
            .iter()
            .filter(|(ac, offset, msg)| *ac == c && stored.get(offset) != Some(msg))
            .count();
    }
    Ok(missing)
}

/// Every message of `channel`: offset → text.
async fn history(server: SocketAddr, channel: &str) -> anyhow::Result<HashMap<u64, String>> {
    let mut stored = HashMap::new();
    let mut since = 0;
    loop {
        let path = format!("/api/channels/{channel}/messages?since={since}&limit=1000");
        let (status, body) = http(server, "GET", &path, b"").await?;
        if status != 200 {
            bail!("history answered {status}");
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        let messages = page["messages"].as_array().context("no messages")?;
        if messages.is_empty() {
            return Ok(stored);
        }
        for message in messages {
            let offset = message["offset"].as_u64().context("offset")?;
            let msg = message["msg"].as_str().context("msg")?.to_owned();
            since = since.max(offset);
            stored.insert(offset, msg);
        }
    }
}

/// One HTTP/1.1 request on a connection of its own; status and body.
async fn http(
    server: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(server).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("no answer in 10 s")??;
    let head_end = find(&response, b"\r\n\r\n").context("no response head")? + 4;
    let status: u16 = std::str::from_utf8(&response[9..12])?.parse()?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let mut body = response[head_end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").context("chunk size")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end])?.trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    crate::idle::resident_bytes(pid)
}

/// Open file descriptors of the server (`/proc/PID/fd`).
fn open_files(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

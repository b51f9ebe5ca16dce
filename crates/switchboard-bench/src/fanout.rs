//! The fan-out scenario.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use crate::client::{self, Buffered, FrameWriter, Incoming, Key};
use crate::common_client;
use crate::cpu::cpu_time;
use crate::socketio;
use crate::sse::EventReader;
use crate::{LATENCY_ROWS, Report, SharedLatency, fresh_channel, latency_rows};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subscriber connections in the channel.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Messages per second over all publishers; 0 publishes flat out.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Flat out: unacknowledged messages per publisher.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Size of each `msg`, in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How subscribers connect: the native WebSocket protocol, SSE
    /// (`GET /sse`), or Socket.IO (Engine.IO 4) over WebSocket or
    /// long-polling. Publishers use the native WebSocket protocol, or
    /// Socket.IO over WebSocket when subscribers use Socket.IO (so that any
    /// Socket.IO server with the event contract can be measured).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Which client the generator is built on (WebSocket only). At a
    /// fixed rate only the subscribers use it: publishers keep this tool's
    /// paced client.
    #[arg(long, value_enum, default_value_t = Client::Lean)]
    client: Client,
    /// Another node of the same deployment (repeatable): subscribers and
    /// publishers are spread over `--server` and these in turn.
    #[arg(long = "node")]
    nodes: Vec<SocketAddr>,
    /// The process id of each `--node`, whose CPU time counts as the
    /// server's.
    #[arg(long = "node-pid")]
    node_pids: Vec<u32>,
    /// The Redis the nodes share: its command counts per published message
    /// are reported (`INFO commandstats`).
    #[arg(long)]
    redis: Option<SocketAddr>,
}

/// The generator's WebSocket client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// This tool's own: raw frames, fields found by scanning, one counter
    /// update per read.
    Lean,
    /// tokio-tungstenite with serde_json, as an application would use them
    /// (see `common_client`).
    Tungstenite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
    /// Socket.IO over WebSocket.
    Socketio,
    /// Socket.IO over HTTP long-polling.
    SocketioPolling,
}

impl Transport {
    pub fn is_socketio(self) -> bool {
        matches!(self, Transport::Socketio | Transport::SocketioPolling)
    }

    /// What marks a message in a frame or event of this transport.
    fn message_key(self) -> &'static [u8] {
        if self.is_socketio() {
            socketio::MESSAGE
        } else {
            br#""type":"message""#
        }
    }
}

/// A subscriber's connection.
enum Subscriber {
    WebSocket {
        reader: client::FrameReader,
        /// Kept because dropping it would half-close the socket.
        _writer: FrameWriter,
    },
    EventStream(EventReader),
    SocketIo {
        reader: client::FrameReader,
        writer: FrameWriter,
        /// Pings read and not yet answered.
        pings: usize,
    },
    Polling(Box<socketio::PollingReader>),
}

impl Subscriber {
    async fn connect(
        server: SocketAddr,
        transport: Transport,
        user: usize,
        channel: &str,
    ) -> anyhow::Result<Subscriber> {
        match transport {
            Transport::Ws => {
                let path = format!("/ws?user=sub{user}&channel={channel}");
                let (mut reader, writer) = client::connect(server, &path).await?;
                reader.wait_for(br#""type":"subscribed""#).await?;
                reader.delay_acks()?;
                Ok(Subscriber::WebSocket {
                    reader,
                    _writer: writer,
                })
            }
            Transport::Sse => {
                let path = format!("/sse?channel={channel}");
                let mut reader = EventReader::connect(server, &path).await?;
                reader.wait_for(b"event: presence").await?;
                reader.delay_acks()?;
                Ok(Subscriber::EventStream(reader))
            }
            Transport::Socketio => {
                let user = format!("sub{user}");
                let (reader, writer) = socketio::connect(server, &user, Some(channel)).await?;
                reader.delay_acks()?;
                Ok(Subscriber::SocketIo {
                    reader,
                    writer,
                    pings: 0,
                })
            }
            Transport::SocketioPolling => {
                let user = format!("sub{user}");
                let reader = socketio::PollingReader::connect(server, &user, channel).await?;
                reader.delay_acks()?;
                Ok(Subscriber::Polling(Box::new(reader)))
            }
        }
    }

    /// The next frame or event already read, without waiting.
    fn buffered(&mut self) -> anyhow::Result<Buffered<'_>> {
        match self {
            Subscriber::WebSocket { reader, .. } => reader.buffered(),
            Subscriber::EventStream(reader) => reader.buffered(),
            Subscriber::SocketIo { reader, .. } => reader.buffered(),
            Subscriber::Polling(reader) => reader.buffered(),
        }
    }

    /// Pings were read: they are answered before the next read.
    fn pinged(&mut self, count: usize) {
        if let Subscriber::SocketIo { pings, .. } = self {
            *pings += count;
        }
    }

    /// Reads once; false when the connection has ended.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        match self {
            Subscriber::WebSocket { reader, .. } => reader.fill().await,
            Subscriber::EventStream(reader) => reader.fill().await,
            Subscriber::SocketIo {
                reader,
                writer,
                pings,
            } => {
                for _ in 0..std::mem::take(pings) {
                    writer.send_text(b"3").await?;
                }
                reader.fill().await
            }
            Subscriber::Polling(reader) => reader.fill().await,
        }
    }
}

/// A subscriber of either generator, connected.
enum Connected {
    Lean(Subscriber),
    Common(Box<common_client::Socket>),
}

/// How long to wait for stragglers after publishing stops.
const GRACE: Duration = Duration::from_secs(10);

/// What one subscriber counted.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Payload bytes of the messages received (frame or event data).
    pub bytes: u64,
}

pub async fn run(
    server: SocketAddr,
    server_pid: Option<u32>,
    args: Args,
) -> anyhow::Result<Report> {
    let channel = fresh_channel("fanout");
    let base = Instant::now();
    let deliveries = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let latency = Arc::new(SharedLatency::new(threads));

    // Subscribers and publishers in turn on each node.
    let servers: Vec<SocketAddr> = std::iter::once(server).chain(args.nodes.clone()).collect();
    let node_of = |i: usize| servers[i % servers.len()];
    let pids: Option<Vec<u32>> = server_pid.map(|pid| {
        std::iter::once(pid)
            .chain(args.node_pids.iter().copied())
            .collect()
    });
    let servers_cpu = || -> Option<Duration> {
        pids.as_ref()?
            .iter()
            .map(|&pid| cpu_time(Some(pid)))
            .sum::<Option<Duration>>()
    };
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let connected = crate::progress::counter("subscribing", args.subscribers);
    for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(100) {
        let mut connecting = Vec::new();
        for &i in chunk {
            let server = node_of(i);
            let channel = channel.clone();
            let (transport, client) = (args.transport, args.client);
            connecting.push(tokio::spawn(async move {
                match client {
                    Client::Lean => Subscriber::connect(server, transport, i, &channel)
                        .await
                        .map(Connected::Lean),
                    Client::Tungstenite => common_client::subscribe(server, i, &channel)
                        .await
                        .map(|socket| Connected::Common(Box::new(socket))),
                }
            }));
        }
        for c in connecting {
            let (deliveries, latency, stop) =
                (deliveries.clone(), latency.clone(), stop_rx.clone());
            subscribers.push(match c.await?? {
                Connected::Lean(subscriber) => tokio::spawn(receive(
                    subscriber,
                    args.transport.message_key(),
                    base,
                    deliveries,
                    latency,
                    stop,
                )),
                Connected::Common(socket) => tokio::spawn(common_client::receive(
                    *socket, base, deliveries, latency, stop,
                )),
            });
            connected.inc(1);
        }
    }

    connected.finish_and_clear();
    let acked = Arc::new(AtomicU64::new(0));
    let hops = crate::pipeline::reset(server).await;
    let server_cpu_start = servers_cpu();
    let redis_start = match args.redis {
        Some(redis) => Some(crate::redis_stats::command_counts(redis).await?),
        None => None,
    };
    let own_cpu_start = cpu_time(None);
    let started = Instant::now();
    let deadline = started + args.duration;
    let progress = crate::progress::timed("publishing", args.duration);
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let server = node_of(p);
        let path = format!("/ws?user=pub{p}");
        let window = Arc::new(Semaphore::new(args.in_flight.max(1)));
        let body = Body {
            channel: channel.clone(),
            size: args.size,
            base,
        };
        if args.transport.is_socketio() {
            let (reader, writer) = socketio::connect(server, &format!("pub{p}"), None).await?;
            let writer = Arc::new(tokio::sync::Mutex::new(writer));
            tokio::spawn(socketio::count_acks(
                reader,
                writer.clone(),
                acked.clone(),
                window.clone(),
            ));
            let per_publisher_rate = args.rate / args.publishers as f64;
            publishers.push(tokio::spawn(async move {
                let sent =
                    publish_socketio(&writer, body, per_publisher_rate, window, deadline).await?;
                Ok((sent, Box::new(writer) as Box<dyn Send>))
            }));
            continue;
        }
        if args.client == Client::Tungstenite && args.rate == 0.0 {
            let socket = common_client::connect(server, &path).await?;
            let acked = acked.clone();
            publishers.push(tokio::spawn(async move {
                let request = move || String::from_utf8(body.request()).expect("ASCII");
                let (sent, sink) =
                    common_client::publish(socket, request, window, acked, deadline).await?;
                Ok::<_, anyhow::Error>((sent, Box::new(sink) as Box<dyn Send>))
            }));
            continue;
        }
        let (reader, writer) = client::connect(server, &path).await?;
        tokio::spawn(client::count_acks(reader, acked.clone(), window.clone()));
        let per_publisher_rate = args.rate / args.publishers as f64;
        publishers.push(tokio::spawn(async move {
            let (sent, writer) =
                publish(writer, body, per_publisher_rate, window, deadline).await?;
            Ok((sent, Box::new(writer) as Box<dyn Send>))
        }));
    }
    let mut sent = 0;
    // Writers stay open until the acks are in: dropping one half-closes the socket.
    let mut writers = Vec::new();
    for p in publishers {
        let (count, writer) = p.await??;
        sent += count;
        writers.push(writer);
    }
    let wait_until = Instant::now() + GRACE;
    while acked.load(Ordering::Relaxed) < sent && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let published = acked.load(Ordering::Relaxed);
    let expected = published * args.subscribers as u64;
    while deliveries.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    drop(progress);
    let server_cpu = server_cpu_start.zip(servers_cpu()).map(|(a, b)| b - a);
    let redis_counts = match (args.redis, redis_start) {
        (Some(redis), Some(start)) => Some(
            crate::redis_stats::command_counts(redis)
                .await?
                .since(&start),
        ),
        _ => None,
    };
    let own_cpu = own_cpu_start.zip(cpu_time(None)).map(|(a, b)| b - a);
    let _ = stop_tx.send(true);
    drop(writers);
    let hop_rows = if hops {
        crate::pipeline::rows(server).await
    } else {
        Vec::new()
    };

    let (mut received, mut duplicates, mut gaps, mut bytes) = (0, 0, 0, 0);
    for s in subscribers {
        let stats = s.await?;
        received += stats.received;
        duplicates += stats.duplicates;
        gaps += stats.gaps;
        bytes += stats.bytes;
    }
    let latency = latency.merged()?;
    let unique = received - duplicates;
    let mut rows = vec![
        ("subscribers", args.subscribers as f64, ""),
        ("publishers", args.publishers as f64, ""),
        ("target_rate", args.rate, "msgs/s (0 = flat out)"),
        ("messages_sent", sent as f64, ""),
        ("messages_published", published as f64, "acknowledged"),
        ("deliveries", received as f64, ""),
        (
            "deliveries_per_sec",
            received as f64 / elapsed.as_secs_f64(),
            "/s",
        ),
        (
            "bytes_per_delivery",
            bytes as f64 / received.max(1) as f64,
            "B (payload)",
        ),
        ("lost", expected.saturating_sub(unique) as f64, ""),
        ("duplicates", duplicates as f64, ""),
        ("out_of_order", gaps as f64, ""),
    ];
    latency_rows(&mut rows, LATENCY_ROWS, &latency);
    if let Some(cpu) = server_cpu {
        rows.push(("server_cpu", cpu.as_secs_f64(), "s"));
        let per_delivery = cpu.as_secs_f64() * 1e6 / received.max(1) as f64;
        rows.push(("server_cpu_per_delivery", per_delivery, "µs"));
        let share = cpu.as_secs_f64() / elapsed.as_secs_f64();
        rows.push(("server_cpu_share", share, "cores"));
    }
    if let Some(counts) = redis_counts {
        let per_message = |calls: u64| calls as f64 / published.max(1) as f64;
        rows.push((
            "redis_scripts_per_message",
            per_message(counts.scripts),
            "EVAL/EVALSHA per published message",
        ));
        rows.push((
            "redis_commands_per_message",
            per_message(counts.all),
            "commands per published message",
        ));
    }
    if let Some(cpu) = own_cpu {
        rows.push(("bench_cpu", cpu.as_secs_f64(), "s"));
        let share = cpu.as_secs_f64() / elapsed.as_secs_f64();
        rows.push(("bench_cpu_share", share, "cores"));
    }
    rows.extend(hop_rows);
    Ok(Report {
        scenario: "fanout",
        rows,
    })
}

async fn receive(
    mut subscriber: Subscriber,
    message_key: &'static [u8],
    base: Instant,
    deliveries: Arc<AtomicU64>,
    latency: Arc<SharedLatency>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberStats {
    let mut tally = Tally {
        stats: SubscriberStats::default(),
        last_offset: 0,
        message: Key::new(message_key),
        offset: Key::new(br#""offset":"#),
        sent: Key::new(br#""msg":"t="#),
    };
    // Waited on across reads, so it registers with the channel once.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    // Every frame a read brings is handled before the next read, with one
    // clock reading and one shared-counter update per read, not per frame:
    // the load tool shares the machine's cores with the server under test.
    loop {
        let now = base.elapsed().as_micros() as u64;
        let Some(batch) = tally.drain(&mut subscriber, now, &latency) else {
            break;
        };
        if batch > 0 {
            deliveries.fetch_add(batch, Ordering::Relaxed);
        }
        let filled = tokio::select! {
            filled = subscriber.fill() => filled,
            _ = &mut stopped => break,
        };
        if !matches!(filled, Ok(true)) {
            break;
        }
    }
    tally.stats
}

/// One subscriber's count of what it received.
struct Tally {
    stats: SubscriberStats,
    last_offset: u64,
    message: Key,
    offset: Key,
    sent: Key,
}

impl Tally {
    /// Counts every message already read, recording latencies as of `now`;
    /// how many there were, or `None` once the connection has ended.
    fn drain(
        &mut self,
        subscriber: &mut Subscriber,
        now: u64,
        latency: &SharedLatency,
    ) -> Option<u64> {
        let mut batch = 0;
        let mut pings = 0;
        let mut histogram = None;
        loop {
            let frame = match subscriber.buffered() {
                Ok(Buffered::Item(frame)) => frame,
                Ok(Buffered::Empty) => break,
                Ok(Buffered::Ended) | Err(_) => return None,
            };
            if socketio::is_ping(frame) {
                pings += 1;
                continue;
            }
            if !self.message.is_in(frame) {
                continue;
            }
            batch += 1;
            self.stats.bytes += frame.len() as u64;
            if let Some(offset) = self.offset.number_in(frame) {
                if offset <= self.last_offset {
                    self.stats.duplicates += 1;
                } else if offset != self.last_offset + 1 && self.last_offset != 0 {
                    self.stats.gaps += 1;
                }
                self.last_offset = self.last_offset.max(offset);
            }
            if let Some(sent) = self.sent.number_in(frame) {
                let histogram = histogram.get_or_insert_with(|| latency.local());
                let _ = histogram.record(now.saturating_sub(sent).max(1));
            }
        }
        self.stats.received += batch;
        subscriber.pinged(pings);
        Some(batch)
    }
}

/// What a publisher sends: `t=<µs since base>;` padded to `size`.
struct Body {
    channel: String,
    size: usize,
    base: Instant,
}

impl Body {
    fn msg(&self) -> String {
        let mut msg = format!("t={};", self.base.elapsed().as_micros());
        while msg.len() < self.size {
            msg.push('x');
        }
        msg
    }

    fn request(&self) -> Vec<u8> {
        format!(
            r#"{{"type":"publish","channel":"{}","msg":"{}"}}"#,
            self.channel,
            self.msg()
        )
        .into_bytes()
    }
}

/// [`publish`] over Socket.IO: each `publish` event asks for its ack.
async fn publish_socketio(
    writer: &tokio::sync::Mutex<FrameWriter>,
    body: Body,
    rate: f64,
    window: Arc<Semaphore>,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let mut sent = 0;
    let mut ticks = (rate > 0.0).then(|| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticks
    });
    while Instant::now() < deadline {
        match &mut ticks {
            Some(ticks) => {
                ticks.tick().await;
            }
            // A server that stops acking (one that drops messages) must
            // not hold the run past its end.
            None => match tokio::time::timeout_at(deadline.into(), window.acquire()).await {
                Ok(permit) => permit?.forget(),
                Err(_) => break,
            },
        }
        let event = socketio::publish(sent, &body.channel, &body.msg());
        writer.lock().await.send_text(&event).await?;
        sent += 1;
    }
    Ok(sent)
}

async fn publish(
    mut writer: FrameWriter,
    body: Body,
    rate: f64,
    window: Arc<Semaphore>,
    deadline: Instant,
) -> anyhow::Result<(u64, FrameWriter)> {
    let mut sent = 0;
    if rate > 0.0 {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        while Instant::now() < deadline {
            ticks.tick().await;
            writer.send_text(&body.request()).await?;
            sent += 1;
        }
    } else {
        while Instant::now() < deadline {
            window.acquire().await?.forget();
            writer.send_text(&body.request()).await?;
            sent += 1;
        }
    }
    Ok((sent, writer))
}

//! Server settings: read once at start-up from flags, `SWITCHBOARD_*`
//! environment variables and the `--config` file; every limit and timeout
//! lives here with its default.

pub mod cli;
pub mod file;
pub mod reference;
pub mod show;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use switchboard_core::durability::SyncPolicy;

/// Settings of `switchboard serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// A TOML file of settings: one key per flag, named as the flag
    /// (`max-connections = 50000`). Flags and environment variables
    /// override it.
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for HTTP and WebSocket.
    #[arg(
        long,
        value_name = "ADDR",
        env = "SWITCHBOARD_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Directory of the embedded history store, `switchboard.db` (created
    /// if missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "SWITCHBOARD_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Where history, offsets and presence live: `embedded` (SQLite in
    /// `--data-dir`, one node) or `redis` (shared by every node on the same
    /// `--redis-url`, which then act as one).
    #[arg(
        long,
        env = "SWITCHBOARD_ENGINE",
        value_enum,
        default_value = "embedded"
    )]
    pub engine: Engine,

    /// The Redis server of `--engine redis`: `redis://[:PASSWORD@]HOST:PORT/DB`,
    /// or `rediss://…` for TLS. A standalone Redis (Redis Cluster is refused).
    #[arg(
        value_name = "URL",
        long,
        env = "SWITCHBOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,

    /// For a `rediss://` URL: the PEM file of the certificate authority
    /// that signed Redis's certificate, trusted instead of the system's
    /// certificate store (for a private CA).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Prefix of every Redis key and pub/sub topic: nodes with the same
    /// prefix share channels; another prefix is another deployment.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "SWITCHBOARD_REDIS_PREFIX",
        default_value = "switchboard"
    )]
    pub redis_prefix: String,

    /// With `--engine redis`: how soon the users of a node that stops
    /// (killed, cut off from Redis) leave presence on the other nodes; at
    /// least `1s`.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_NODE_TTL", default_value = "15s", value_parser = node_ttl)]
    pub node_ttl: Duration,

    /// Serve files from this directory (the document root) at every path the
    /// server does not claim. An `index.html` at its top replaces the chat
    /// page at `/`; the chat page stays at `/chat/`.
    #[arg(long, value_name = "DIR", env = "SWITCHBOARD_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Longest chat message (`msg`) accepted, in bytes; a longer one is
    /// refused with `message_too_large` (HTTP: 413).
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MAX_MSG_BYTES", default_value_t = 64 * 1024)]
    pub max_msg_bytes: usize,

    /// Newest messages kept per channel; older ones are trimmed in the background.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_HISTORY_MAX_COUNT",
        default_value_t = 10_000
    )]
    pub history_max_count: u64,

    /// Also trim messages older than this (e.g. `7d`); kept forever if unset.
    #[arg(long, env = "SWITCHBOARD_HISTORY_MAX_AGE", value_parser = humantime::parse_duration)]
    pub history_max_age: Option<Duration>,

    /// How often history retention runs.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_RETENTION_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// Messages one connection may publish per second, on average; over
    /// it a publish is refused with `rate_limited` and `retry_after_ms`,
    /// and a connection refused more than a second's (or a burst's) worth
    /// in a row is closed with 1008.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_PUBLISH_RATE",
        default_value_t = 100.0
    )]
    pub publish_rate: f64,

    /// Messages one connection may publish in a burst above `--publish-rate`.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_PUBLISH_BURST",
        default_value_t = 200.0
    )]
    pub publish_burst: f64,

    /// Messages `POST /api/channels/{channel}/messages` takes per second, on
    /// average, from one API key (or, without one, one client address);
    /// over it: 429 `rate_limited` with `retry_after_ms` and `Retry-After`.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_HTTP_PUBLISH_RATE",
        default_value_t = 1000.0
    )]
    pub http_publish_rate: f64,

    /// Messages one API key or client address may publish over HTTP in a
    /// burst above `--http-publish-rate`.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_HTTP_PUBLISH_BURST",
        default_value_t = 2000.0
    )]
    pub http_publish_burst: f64,

    /// Publishes waiting to be stored before new ones are refused (`overloaded`).
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_APPEND_QUEUE",
        default_value_t = 65_536
    )]
    pub append_queue: usize,

    /// Most messages stored in one transaction (one fsync).
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_MAX_BATCH",
        default_value_t = 4096
    )]
    pub max_batch: usize,

    /// When stored messages are fsynced: `before-delivery` (nothing anyone
    /// saw can be lost, even to a power cut) or `before-ack` (delivered as
    /// soon as written, which a crash of the server cannot undo; acked once
    /// fsynced; a power cut can take back messages subscribers saw but no
    /// publisher had an ack for, and offsets then skip past them)
    #[arg(
        long,
        value_name = "POLICY",
        env = "SWITCHBOARD_SYNC",
        default_value = "before-delivery"
    )]
    pub sync: SyncPolicy,

    /// Least time between the starts of two group commits. A message that
    /// arrives sooner waits out the rest, and everything arriving meanwhile
    /// shares its commit, its fsync and each subscriber's send: less CPU
    /// per delivery under a steady stream, for up to this much latency. A
    /// message after a lull goes at once. `0s` commits whatever is queued
    /// at once; at most `1s`. At 200 msgs/s, `10ms` halves server CPU per
    /// delivery for about 8 ms more p99 (`docs/performance.md`).
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_COMMIT_INTERVAL", default_value = "0s", value_parser = commit_interval)]
    pub commit_interval: Duration,

    /// How long the idempotency key of a publish is remembered: a publish
    /// repeating it within this window (same user, same channel) gets the
    /// first one's ack and is not stored again.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_IDEMPOTENCY_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,

    /// Most idempotency keys remembered; past it the oldest are forgotten
    /// first (each key takes at most about 450 bytes on disk).
    #[arg(
        value_name = "N",
        long,
        env = "SWITCHBOARD_IDEMPOTENCY_MAX_KEYS",
        default_value_t = 1_000_000
    )]
    pub idempotency_max_keys: u64,

    /// Connections the server holds at once: WebSockets, SSE streams and
    /// Socket.IO sessions. One more is refused (503
    /// `too_many_connections`) before it is upgraded or streamed.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_MAX_CONNECTIONS",
        default_value_t = 1_000_000
    )]
    pub max_connections: usize,

    /// Connections one client address may hold at once (with
    /// `--trust-proxy`, the first address of `X-Forwarded-For`); one more
    /// is refused with 429 `too_many_connections`.
    #[arg(
        value_name = "N",
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 10_000
    )]
    pub max_connections_per_ip: usize,

    /// Channels one `/ws` connection or Socket.IO session may be subscribed
    /// to at once, and one SSE stream may follow; one more is refused with
    /// `too_many_subscriptions` (SSE: 400).
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_MAX_SUBSCRIPTIONS",
        default_value_t = 100
    )]
    pub max_subscriptions: usize,

    /// Requests that start work (history, subscribe with its replay) one
    /// `/ws` connection may have in progress; past it the connection reads
    /// nothing more until one is answered.
    #[arg(
        long,
        value_name = "N",
        env = "SWITCHBOARD_MAX_REQUESTS_IN_FLIGHT",
        default_value_t = 4
    )]
    pub max_requests_in_flight: usize,

    /// Largest WebSocket message accepted, in bytes, after reassembly and
    /// decompression; a bigger one closes the connection with 1009.
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,

    /// Bytes that may wait to be sent to one connection. A subscriber past
    /// this is closed as slow (1013); a connection whose own replies pile up
    /// stops reading until its peer catches up.
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MAX_QUEUED_BYTES", default_value_t = 4 << 20)]
    pub max_queued_bytes: usize,

    /// How long a WebSocket may stay silent before the server pings it.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// How long the server waits for any answer to its ping before it closes
    /// the connection as dead (close code 1001, reason "ping timeout").
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_PING_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,

    /// Turn off permessage-deflate (RFC 7692) even when a client offers it.
    #[arg(long, env = "SWITCHBOARD_NO_DEFLATE")]
    pub no_deflate: bool,

    /// Messages shorter than this many bytes are sent uncompressed even when
    /// permessage-deflate is on: deflating them costs more than it saves.
    #[arg(
        long,
        value_name = "BYTES",
        env = "SWITCHBOARD_DEFLATE_MIN_SIZE",
        default_value_t = 128
    )]
    pub deflate_min_size: usize,

    /// zlib compression level (0-9) for permessage-deflate.
    #[arg(long, value_name = "0-9", env = "SWITCHBOARD_DEFLATE_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub deflate_level: u32,

    /// The `retry:` an SSE stream announces: how long `EventSource` waits
    /// before reconnecting.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_SSE_RETRY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub sse_retry: Duration,

    /// How long an SSE stream may stay silent before a `: ping` comment
    /// keeps proxies from closing it.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_SSE_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sse_heartbeat: Duration,

    /// After sending a close frame, how long to wait for the peer to finish
    /// the close handshake before dropping the TCP connection.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_CLOSE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub close_timeout: Duration,

    /// How long to wait for an HTTP request's headers before dropping the connection.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Largest HTTP request head (request line and headers), in bytes, at
    /// least 8192; a bigger one is answered 431 and the connection closed.
    #[arg(long, value_name = "BYTES", env = "SWITCHBOARD_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = max_header_bytes)]
    pub max_header_bytes: usize,

    /// A `/ws` connection or Socket.IO session subscribed to no channel
    /// that sends nothing for this long is closed (1000, "idle timeout").
    /// Checked at each keepalive tick, so it may last a `--ping-interval`
    /// longer. `0s` keeps idle connections.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// The official Socket.IO browser client to serve at
    /// `/socket.io/socket.io.js`: the `dist/socket.io.min.js` of the
    /// `socket.io-client` npm package; the chat page then offers Socket.IO.
    /// Not served if unset; an unreadable file stops the start.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_SOCKETIO_CLIENT")]
    pub socketio_client: Option<PathBuf>,

    /// Test mode for the official Engine.IO and Socket.IO protocol suites:
    /// `/engine.io/` echoes and `/socket.io/` behaves as the suites'
    /// reference server (300/200 ms heartbeats) instead of serving channels.
    #[arg(long, env = "SWITCHBOARD_SOCKETIO_CONFORMANCE")]
    pub socketio_conformance: bool,

    /// Connection-state recovery for Socket.IO 4 clients (`on` or `off`):
    /// each message event ends with a recovery offset argument, and a
    /// client back within `--recovery-window` gets its channels and every
    /// missed message (`socket.recovered`). Off, events carry only the
    /// message: for clients that do not strip the extra argument.
    #[arg(long, value_name = "on|off", env = "SWITCHBOARD_SOCKETIO_RECOVERY", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub socketio_recovery: bool,

    /// How long after a Socket.IO session ends it can still be recovered.
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_RECOVERY_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub recovery_window: Duration,

    /// Who may connect: `anonymous` (anyone, under the name they give)
    /// or `token` (a signed connection token names the user and the
    /// channels they may subscribe and publish to; see `docs/protocol.md`).
    #[arg(
        long,
        env = "SWITCHBOARD_AUTH",
        value_enum,
        default_value = "anonymous"
    )]
    pub auth: AuthMode,

    /// With `--auth token`: the shared secret tokens are signed with (HS256).
    #[arg(
        long,
        value_name = "SECRET",
        env = "SWITCHBOARD_TOKEN_HMAC_SECRET",
        hide_env_values = true
    )]
    pub token_hmac_secret: Option<String>,

    /// With `--auth token`: the PEM public key tokens are signed for, RSA
    /// (RS256) or P-256 (ES256); instead of `--token-hmac-secret`.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,

    /// With `--auth token`: the `aud` every token must name.
    #[arg(long, value_name = "AUD", env = "SWITCHBOARD_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// With `--auth token`: the `iss` every token must name.
    #[arg(long, value_name = "ISS", env = "SWITCHBOARD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// With `--auth token`: the key of the application's back end on the
    /// HTTP API (`Authorization: apikey KEY`): it publishes as any user and
    /// reads every channel.
    #[arg(
        long,
        value_name = "KEY",
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// The password of the admin page, `/admin` (HTTP Basic; any user
    /// name). With `--auth token`, `--api-key` opens it too. With neither,
    /// the admin page is off (404).
    #[arg(
        long,
        value_name = "SECRET",
        env = "SWITCHBOARD_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,

    /// Origins of other sites whose pages may connect here (WebSocket,
    /// SSE, Socket.IO) and read the HTTP API (CORS): comma-separated exact
    /// origins such as `https://app.example.com`, or `*` for any. A page
    /// from the server's own origin, and any client that sends no
    /// `Origin`, is always allowed; others get 403 `origin_not_allowed`.
    #[arg(
        long,
        value_name = "LIST",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Behind a reverse proxy: take the request's scheme and host from
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` (for the same-origin
    /// check), and the client's address from `X-Forwarded-For` (for the
    /// per-address limits). Only when every request comes through the proxy.
    #[arg(long, env = "SWITCHBOARD_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Serve HTTPS and WSS on `--listen` with this PEM certificate chain
    /// (with `--tls-key`). Reloaded on SIGHUP: new connections get the new
    /// one, open ones stay. A bad one stops the start.
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9090`, for a
    /// Prometheus that scrapes a private port) instead of on `--listen`.
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How log lines are written to stdout: `text` for people, or `json`
    /// (one object per line) for log collectors. `RUST_LOG` picks what is
    /// logged (`debug` adds a line per HTTP request and per connection).
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// On SIGINT/SIGTERM, how long to wait for connections to close after
    /// telling every WebSocket client 1001 (going away).
    #[arg(long, value_name = "DURATION", env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Where a node keeps history, offsets and presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// SQLite in `--data-dir`, an in-process hub: one node.
    Embedded,
    /// Redis at `--redis-url`, shared by many nodes.
    Redis,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone, under the name they give.
    Anonymous,
    /// Holders of a connection token signed with the server's key.
    Token,
}

/// Smallest `--max-header-bytes`: hyper reads requests 8 KiB at a time.
const MIN_HEADER_BYTES: usize = 8192;

fn max_header_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    if bytes < MIN_HEADER_BYTES {
        return Err(format!(
            "{bytes} is less than the least, {MIN_HEADER_BYTES}"
        ));
    }
    Ok(bytes)
}

/// Shortest `--node-ttl`: the heartbeat runs five times per TTL.
const MIN_NODE_TTL: Duration = Duration::from_secs(1);

fn node_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl < MIN_NODE_TTL {
        return Err(format!("{text} is shorter than the least node TTL, 1s"));
    }
    Ok(ttl)
}

/// Longest `--commit-interval`: past it, messages wait long enough for
/// publishers to time out and the append queue to fill.
const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

fn commit_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval > MAX_COMMIT_INTERVAL {
        return Err(format!(
            "{text} is longer than the most a commit may wait, {}",
            humantime::format_duration(MAX_COMMIT_INTERVAL)
        ));
    }
    Ok(interval)
}

impl Default for Config {
    /// The defaults documented on each flag (environment variables still apply).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        Defaults::parse_from(["switchboard"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn a_commit_interval_past_a_second_is_refused_with_the_limit() {
        let parsed = Cli::try_parse_from(["switchboard", "--commit-interval", "250ms"]).unwrap();
        assert_eq!(parsed.config.commit_interval, Duration::from_millis(250));
        let error = Cli::try_parse_from(["switchboard", "--commit-interval", "2s"])
            .err()
            .expect("2s is refused")
            .to_string();
        assert!(
            error.contains("longer than the most a commit may wait, 1s"),
            "{error}"
        );
        assert!(Cli::try_parse_from(["switchboard", "--commit-interval", "soon"]).is_err());
        assert_eq!(Config::default().commit_interval, Duration::ZERO);
    }
}

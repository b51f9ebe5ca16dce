//! Server settings: read once at start-up from flags and `SWITCHBOARD_*`
//! environment variables; every limit and timeout lives here with its default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Settings of `switchboard serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest WebSocket message accepted, in bytes, after reassembly and
    /// decompression; a bigger one closes the connection with 1009.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,

    /// Bytes that may wait to be sent to one connection. Past this a
    /// connection stops reading its own requests until its peer catches up.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_BYTES", default_value_t = 4 << 20)]
    pub max_queued_bytes: usize,

    /// How long a WebSocket may stay silent before the server pings it.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// How long the server waits for any answer to its ping before it closes
    /// the connection as dead (close code 1001, reason "ping timeout").
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,

    /// Turn off permessage-deflate (RFC 7692) even when a client offers it.
    #[arg(long, env = "SWITCHBOARD_NO_DEFLATE")]
    pub no_deflate: bool,

    /// Messages shorter than this many bytes are sent uncompressed even when
    /// permessage-deflate is on: deflating them costs more than it saves.
    #[arg(long, env = "SWITCHBOARD_DEFLATE_MIN_SIZE", default_value_t = 128)]
    pub deflate_min_size: usize,

    /// zlib compression level (0-9) for permessage-deflate.
    #[arg(long, env = "SWITCHBOARD_DEFLATE_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub deflate_level: u32,

    /// After sending a close frame, how long to wait for the peer to finish
    /// the close handshake before dropping the TCP connection.
    #[arg(long, env = "SWITCHBOARD_CLOSE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub close_timeout: Duration,

    /// How long to wait for an HTTP request's headers before dropping the connection.
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to wait for connections to close after
    /// telling every WebSocket client 1001 (going away).
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
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

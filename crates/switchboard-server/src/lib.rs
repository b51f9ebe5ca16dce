//! # switchboard: a real-time messaging server
//!
//! ## Layout
//! From the edge inward; a module imports only those below it.
//! - [`server`]: the accept loop (HTTP/1.1 with upgrades), start-up and
//!   graceful shutdown.
//! - [`http`]: the router and its handlers; the embedded chat page and the
//!   `--static-dir` document root.
//! - [`transport`]: how clients connect; [`transport::websocket`] runs the
//!   upgrade and one task per connection over the `switchboard-ws` codec,
//!   [`transport::native`] is the `/ws` protocol, [`transport::sse`] the
//!   `/sse` event streams; [`transport::send_queue`] is how a connection's
//!   own task writes; [`transport::work_budget`] bounds the work one
//!   connection has in flight. [`echo`]: the `/echo` endpoint.
//! - [`app`]: the state every handler and transport is given, and the
//!   settings connections use.
//! - [`connections`]: the registry of live connections that shutdown walks,
//!   and the connection limits.
//! - [`metrics`]: what `/metrics` shows.
//! - [`rate_limit`]: token buckets for publish rates.
//! - [`socket`]: a connection's TCP socket, shared by hyper, an event stream
//!   that writes its own body, and an outbox writing through.
//! - [`error`]: [`error::ApiError`], an HTTP status with a JSON body.
//! - [`config`]: every setting, its flag, environment variable and default.
//! - [`access`]: connection tokens, channel permissions, the API key and
//!   origin checks.
//! - [`tls`]: HTTPS and WSS on the listening port, reloaded on SIGHUP.
//! - [`shutdown`]: waits for SIGINT or SIGTERM.

pub mod access;
pub mod app;
pub mod config;
pub mod connections;
pub mod echo;
pub mod error;
pub mod http;
pub mod metrics;
pub mod rate_limit;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod tls;
pub mod transport;

pub use config::Config;

//! # switchboard: a real-time messaging server
//!
//! ## Layout
//! - [`server`]: the accept loop (HTTP/1.1 with upgrades) and graceful shutdown.
//! - [`socket`]: a connection's TCP socket, shared by hyper and an event
//!   stream that writes its own body.
//! - [`http`]: the router, its handlers, and [`http::ApiError`] (status + JSON
//!   body); the embedded chat page and the `--static-dir` document root.
//! - [`transport`]: how clients connect; [`transport::websocket`] runs the
//!   upgrade and one task per connection over the `switchboard-ws` codec,
//!   [`transport::native`] is the `/ws` protocol, [`transport::sse`] the
//!   `/sse` event streams; [`transport::send_queue`] is how a connection's
//!   own task writes.
//! - [`connections`]: the registry of live connections that shutdown walks.
//! - [`echo`]: the `/echo` endpoint.
//! - [`config`]: every setting, its flag, environment variable and default.
//! - [`shutdown`]: waits for SIGINT or SIGTERM.

pub mod app;
pub mod config;
pub mod connections;
pub mod echo;
pub mod http;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod transport;

pub use config::Config;

//! Integration tests: the real server on an ephemeral loopback port, driven
//! by real clients (tokio-tungstenite, raw sockets, the built binary).

mod access;
mod bounded;
mod channels;
mod cluster;
mod common;
mod config_file;
mod deflate;
mod durability;
mod handshake;
mod idempotency;
mod keepalive;
mod limits;
mod operating;
mod pipeline;
mod protocol;
mod redis_server;
mod shutdown;
mod socketio;
mod sse;
mod static_files;
mod tls;

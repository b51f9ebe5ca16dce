//! Integration tests: the real server on an ephemeral loopback port, driven
//! by real clients (tokio-tungstenite, raw sockets, the built binary).

mod bounded;
mod channels;
mod common;
mod deflate;
mod durability;
mod handshake;
mod idempotency;
mod keepalive;
mod pipeline;
mod protocol;
mod shutdown;
mod socketio;
mod sse;
mod static_files;

//! # switchboard-core: channels, fan-out, presence and durable history
//!
//! The engine the transports call. It does no HTTP and defines no wire
//! format: the frames it caches per subscriber variant are encoded by the
//! wire crates (`switchboard-ws` for WebSocket frames, `switchboard-proto`
//! for messages, SSE events and HTTP chunks), once per message.
//!
//! ## Layout
//! - [`node`]: [`Node`], the facade: publish (group-committed, acked when
//!   durable), subscribe (replay then live, no gap, no duplicate), history,
//!   presence. Behind it, `group_commit` (the writer thread: one
//!   transaction per batch, then delivery and acks) and `retention` (the
//!   background trim).
//! - [`hub`]: local subscriptions and presence, sharded; encodes each event
//!   once and shares the bytes; closes subscribers that fall behind.
//! - [`outbox`]: the bounded per-connection queue the hub fills.
//! - [`history`]: the [`history::HistoryStore`] trait and the embedded SQLite store.
//! - [`broker`]: the [`broker::Broker`] trait and the in-process broker.
//! - [`redis`]: the Redis engine, a history store and a broker shared by
//!   many nodes.
//! - [`pipeline`]: histograms of each hop from publish to the last write.
//! - [`recovery`]: a Socket.IO session's position in each of its channels,
//!   which its connection-state recovery offset names.
//! - [`durability`]: `--sync before-ack`, the fsync thread behind the writer.
//! - [`idempotency`]: the keys that make a resent publish a repeat.
//! - [`wire`]: frame encoding shared across subscribers.
//! - [`channel`], [`user`]: validated names.

pub mod broker;
pub mod channel;
pub mod durability;
mod group_commit;
pub mod history;
pub mod hub;
pub mod idempotency;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod pipeline;
pub mod recovery;
pub mod redis;
mod retention;
pub mod user;
pub mod wire;

pub use channel::ChannelName;
pub use node::{Node, NodeConfig};
pub use user::Username;

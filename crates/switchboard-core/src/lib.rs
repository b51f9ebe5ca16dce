//! # switchboard-core: channels, fan-out, presence and durable history
//!
//! The engine the transports call; it knows nothing of HTTP or of any one
//! transport's wire format beyond the shared WebSocket frame encoding.
//!
//! ## Layout
//! - [`node`]: [`Node`], the facade: publish (group-committed, acked when
//!   durable), subscribe (replay then live, no gap, no duplicate), history,
//!   presence.
//! - [`hub`]: local subscriptions and presence, sharded; encodes each event
//!   once and shares the bytes; closes subscribers that fall behind.
//! - [`outbox`]: the bounded per-connection queue the hub fills.
//! - [`history`]: the [`history::HistoryStore`] trait and the embedded SQLite store.
//! - [`broker`]: the [`broker::Broker`] trait and the in-process broker.
//! - [`durability`]: `--sync before-ack`, the fsync thread behind the writer.
//! - [`idempotency`]: the keys that make a resent publish a repeat.
//! - [`wire`]: frame encoding shared across subscribers.
//! - [`channel`], [`user`]: validated names.

pub mod broker;
pub mod channel;
pub mod durability;
pub mod history;
pub mod hub;
pub mod idempotency;
pub mod node;
pub mod outbox;
pub mod user;
pub mod wire;

pub use channel::ChannelName;
pub use node::{Node, NodeConfig};
pub use user::Username;

//! # switchboard-ws: the WebSocket wire protocol, without I/O
//!
//! RFC 6455 framing and RFC 7692 permessage-deflate as pure functions and small
//! state machines over byte buffers. The server's transport drives them over a
//! socket; keeping them free of I/O makes every rule unit-testable and fuzzable.
//!
//! ## Layout
//! - [`handshake`]: validates an upgrade request and computes `Sec-WebSocket-Accept`.
//! - [`frame`]: frame headers, masking, and encoding of server frames.
//! - [`decoder`]: turns received bytes into whole messages, enforcing every
//!   protocol rule (fragmentation, control frames, UTF-8, size limit).
//! - [`deflate`]: permessage-deflate negotiation and per-message (de)compression.
//! - [`close`]: close codes and close-frame payloads.
//! - [`error`]: [`ProtocolError`], each variant mapped to the close code it earns.
//!
//! Server frames are never masked, so one encoded frame can be written to any
//! number of connections: [`frame::encode`] returns shareable [`bytes::Bytes`].

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use decoder::{DecoderConfig, Message, MessageDecoder};
pub use deflate::{DeflateOffer, DeflateParams};
pub use error::ProtocolError;
pub use frame::OpCode;

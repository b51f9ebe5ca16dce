//! # switchboard-proto: wire formats, no I/O
//!
//! - [`message`]: [`Publication`], the chat message object every client and
//!   API sees, and how its time is written.
//! - [`native`]: the JSON protocol spoken on `GET /ws` (see `docs/protocol.md`):
//!   parsing client requests and the server messages.
//! - [`sse`]: the Server-Sent Events format of `GET /sse` and its event ids.

pub mod message;
pub mod native;
pub mod sse;

pub use message::Publication;

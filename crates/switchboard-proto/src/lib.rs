//! # switchboard-proto: wire formats, no I/O
//!
//! - [`message`]: [`Publication`], the chat message object every client and
//!   API sees, and how its time is written.
//! - [`native`]: the JSON protocol spoken on `GET /ws` (see `docs/protocol.md`):
//!   parsing client requests and the server messages.
//! - [`sse`]: the Server-Sent Events format of `GET /sse` and its event ids.
//! - [`engineio`]: Engine.IO 3 and 4 packets and long-polling payloads.
//! - [`socketio`]: Socket.IO packets (protocols 4 and 5).
//! - [`chunked`]: HTTP/1.1 chunks, the framing of an event stream that
//!   writes its own body.

pub mod chunked;
pub mod engineio;
pub mod message;
pub mod native;
pub mod socketio;
pub mod sse;

pub use message::Publication;

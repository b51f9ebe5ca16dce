//! Transport adapters: how clients reach the server. Each turns its wire
//! protocol into calls on the node and knows nothing of the others.

pub mod channel_session;
pub mod native;
pub mod outbox_writer;
pub mod publish_gate;
pub mod send_queue;
pub mod socketio;
pub mod sse;
pub mod websocket;
pub mod work_budget;

//! Transport adapters: how clients reach the server. Each turns its wire
//! protocol into calls on the application and knows nothing of the others.

pub mod websocket;

//! State shared by every request handler.

use std::sync::Arc;

use crate::config::Config;
use crate::connections::Connections;
use crate::transport::websocket::WsSettings;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The WebSocket part of the config, in the shape connections use.
    pub ws: Arc<WsSettings>,
    pub connections: Arc<Connections>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let ws = WsSettings {
            max_message_size: config.max_message_size,
            max_queued_bytes: config.max_queued_bytes,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            close_timeout: config.close_timeout,
            deflate_min_size: config.deflate_min_size,
            deflate_level: config.deflate_level,
        };
        AppState {
            config: Arc::new(config),
            ws: Arc::new(ws),
            connections: Arc::new(Connections::default()),
        }
    }
}

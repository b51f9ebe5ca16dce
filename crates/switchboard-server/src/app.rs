//! State shared by every request handler.

use std::sync::Arc;

use std::path::PathBuf;

use switchboard_core::history::{HistoryError, Retention};
use switchboard_core::idempotency::KeyRetention;
use switchboard_core::{Node, NodeConfig};

use crate::config::Config;
use crate::connections::Connections;
use crate::http::DocumentRoot;
use crate::transport::websocket::WsSettings;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The WebSocket part of the config, in the shape connections use.
    pub ws: Arc<WsSettings>,
    pub connections: Arc<Connections>,
    pub node: Arc<Node>,
    /// `--static-dir`, when given.
    pub document_root: Option<Arc<DocumentRoot>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("static directory {path}: {source}")]
    StaticDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens the document root and the history store under
    /// `config.data_dir`, and starts the node.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let document_root = config
            .static_dir
            .as_deref()
            .map(|dir| {
                DocumentRoot::open(dir).map_err(|source| StartError::StaticDir {
                    path: dir.to_path_buf(),
                    source,
                })
            })
            .transpose()?
            .map(Arc::new);
        let ws = WsSettings {
            max_message_size: config.max_message_size,
            max_queued_bytes: config.max_queued_bytes,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            close_timeout: config.close_timeout,
            deflate_min_size: config.deflate_min_size,
            deflate_level: config.deflate_level,
        };
        let node_config = NodeConfig {
            max_msg_bytes: config.max_msg_bytes,
            retention: Retention {
                max_count: config.history_max_count,
                max_age: config.history_max_age,
            },
            retention_interval: config.retention_interval,
            append_queue: config.append_queue,
            max_batch: config.max_batch,
            sync: config.sync,
            commit_interval: config.commit_interval,
            idempotency: KeyRetention {
                window: config.idempotency_window,
                max_keys: config.idempotency_max_keys,
            },
        };
        let node = Node::embedded(node_config, &config.data_dir)?;
        Ok(AppState {
            config: Arc::new(config),
            ws: Arc::new(ws),
            connections: Arc::new(Connections::default()),
            node,
            document_root,
        })
    }
}

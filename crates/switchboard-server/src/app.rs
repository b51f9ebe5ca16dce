//! What every transport and handler is given: the settings, the node and
//! the registry of connections. It sits below the router and the
//! transports and imports neither: they use the state, never the reverse.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use switchboard_core::history::{HistoryError, Retention};
use switchboard_core::idempotency::KeyRetention;
use switchboard_core::redis::RedisConfig;
use switchboard_core::{Node, NodeConfig};

use crate::access::Access;
use crate::config::{Config, Engine};
use crate::connections::{ConnectionLimits, Connections, LimitError, Seat};
use crate::metrics::{Limit, Metrics};
use crate::rate_limit::KeyedRateLimits;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The WebSocket part of the config, in the shape connections use.
    pub ws: Arc<WsSettings>,
    pub connections: Arc<Connections>,
    pub node: Arc<Node>,
    /// Who may connect and what they may do.
    pub access: Arc<Access>,
    /// Set once shutdown begins: `/readyz` says not ready.
    pub shutting_down: Arc<AtomicBool>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// HTTP publishes, by API key or client address.
    pub http_publish: Arc<KeyedRateLimits<Publisher>>,
}

/// Whose bucket an HTTP publish takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Publisher {
    /// The API key's holder.
    ApiKey,
    /// Anyone else, by client address.
    Address(std::net::IpAddr),
}

/// Per-connection WebSocket limits and timings, shared by all connections.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message_size: usize,
    pub max_queued_bytes: usize,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub close_timeout: Duration,
    pub deflate_min_size: usize,
    pub deflate_level: u32,
    /// Counts messages over `max_message_size` (closed with 1009).
    pub too_large: prometheus::IntCounter,
    /// A connection with no subscription closes after this long silent.
    pub idle_timeout: Option<Duration>,
    /// Counts connections closed for being idle.
    pub idled: prometheus::IntCounter,
}

impl AppState {
    /// A seat for a new connection from `ip` ([`Connections::admit`]),
    /// a refusal counted in the metrics.
    pub fn admit(&self, ip: Option<std::net::IpAddr>) -> Result<Seat, LimitError> {
        self.connections.admit(ip).inspect_err(|e| {
            self.metrics.rejected(match e {
                LimitError::Total(_) => Limit::MaxConnections,
                LimitError::PerIp { .. } => Limit::MaxConnectionsPerIp,
            })
        })
    }

    /// Opens the engine's store (under `config.data_dir`, or in Redis) and
    /// starts the node.
    pub async fn new(config: Config, access: Access) -> Result<Self, HistoryError> {
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
        let node = match config.engine {
            Engine::Embedded => Node::embedded(node_config, &config.data_dir)?,
            Engine::Redis => {
                let ca_cert = match &config.redis_ca_cert {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        HistoryError::io(format!("--redis-ca-cert {}", path.display()), e)
                    })?),
                    None => None,
                };
                let redis = RedisConfig {
                    url: config.redis_url.clone(),
                    prefix: config.redis_prefix.clone(),
                    node_ttl: config.node_ttl,
                    ca_cert,
                };
                Node::redis(node_config, &redis).await?
            }
        };
        let metrics = Metrics::new(node.metrics().clone(), config.engine == Engine::Redis)
            .expect("every metric is registered once");
        let ws = WsSettings {
            max_message_size: config.max_message_size,
            max_queued_bytes: config.max_queued_bytes,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            close_timeout: config.close_timeout,
            deflate_min_size: config.deflate_min_size,
            deflate_level: config.deflate_level,
            too_large: metrics.rejections(Limit::MaxMessageSize),
            idle_timeout: Some(config.idle_timeout).filter(|t| !t.is_zero()),
            idled: metrics.rejections(Limit::IdleTimeout),
        };
        let limits = ConnectionLimits {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
        };
        let http_publish = Arc::new(KeyedRateLimits::new(
            config.http_publish_rate,
            config.http_publish_burst,
        ));
        Ok(AppState {
            config: Arc::new(config),
            ws: Arc::new(ws),
            connections: Arc::new(Connections::new(limits)),
            node,
            access: Arc::new(access),
            shutting_down: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(metrics),
            http_publish,
        })
    }
}

//! The metrics endpoint (`/metrics`, Prometheus's text format): the
//! server's own counters (connections by transport, publishes, limits
//! tripped) beside the node's (deliveries, subscriptions, group commits,
//! store and Redis errors; see `switchboard_core::metrics`).

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use switchboard_core::metrics::NodeMetrics;

/// How a connection is carried, as the `transport` label of
/// `switchboard_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    WebSocket = 0,
    Sse = 1,
    SocketIoWebSocket = 2,
    SocketIoPolling = 3,
}

impl ConnectionKind {
    const ALL: [ConnectionKind; 4] = [
        ConnectionKind::WebSocket,
        ConnectionKind::Sse,
        ConnectionKind::SocketIoWebSocket,
        ConnectionKind::SocketIoPolling,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnectionKind::WebSocket => "websocket",
            ConnectionKind::Sse => "sse",
            ConnectionKind::SocketIoWebSocket => "socketio_websocket",
            ConnectionKind::SocketIoPolling => "socketio_polling",
        }
    }
}

/// Where a publish came in, as the `transport` label of
/// `switchboard_messages_published_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedOver {
    WebSocket = 0,
    SocketIo = 1,
    Http = 2,
}

impl PublishedOver {
    const ALL: [PublishedOver; 3] = [
        PublishedOver::WebSocket,
        PublishedOver::SocketIo,
        PublishedOver::Http,
    ];

    fn label(self) -> &'static str {
        match self {
            PublishedOver::WebSocket => "websocket",
            PublishedOver::SocketIo => "socketio",
            PublishedOver::Http => "http",
        }
    }
}

/// A limit, as the `limit` label of `switchboard_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections = 0,
    MaxConnectionsPerIp = 1,
    PublishRate = 2,
    MaxSubscriptions = 3,
    MaxMsgBytes = 4,
    AppendQueue = 5,
    MaxMessageSize = 6,
    MaxHeaderBytes = 7,
    HeaderTimeout = 8,
    IdleTimeout = 9,
    HttpPublishRate = 10,
}

impl Limit {
    const ALL: [Limit; 11] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
        Limit::PublishRate,
        Limit::MaxSubscriptions,
        Limit::MaxMsgBytes,
        Limit::AppendQueue,
        Limit::MaxMessageSize,
        Limit::MaxHeaderBytes,
        Limit::HeaderTimeout,
        Limit::IdleTimeout,
        Limit::HttpPublishRate,
    ];

    /// The limit a refused publish ran into, if it was one.
    pub fn of_publish(error: &switchboard_core::node::PublishError) -> Option<Limit> {
        use switchboard_core::node::PublishError;
        match error {
            PublishError::TooLarge { .. } => Some(Limit::MaxMsgBytes),
            PublishError::Overloaded => Some(Limit::AppendQueue),
            PublishError::Storage(_) => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerIp => "max_connections_per_ip",
            Limit::PublishRate => "publish_rate",
            Limit::MaxSubscriptions => "max_subscriptions",
            Limit::MaxMsgBytes => "max_msg_bytes",
            Limit::AppendQueue => "append_queue",
            Limit::MaxMessageSize => "max_message_size",
            Limit::MaxHeaderBytes => "max_header_bytes",
            Limit::HeaderTimeout => "header_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::HttpPublishRate => "http_publish_rate",
        }
    }
}

/// Every metric the server exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: [IntGauge; 4],
    published: [IntCounter; 3],
    rejections: [IntCounter; 11],
    node: std::sync::Arc<NodeMetrics>,
}

impl Metrics {
    /// The server's metrics beside `node`'s (with the Redis engine's when
    /// `redis`).
    pub fn new(node: std::sync::Arc<NodeMetrics>, redis: bool) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let connections = IntGaugeVec::new(
            Opts::new("switchboard_connections", "Open connections, by transport."),
            &["transport"],
        )?;
        let published = IntCounterVec::new(
            Opts::new(
                "switchboard_messages_published_total",
                "Publishes taken for storage, by the transport they came over.",
            ),
            &["transport"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "switchboard_limit_rejections_total",
                "Connections and requests refused by a limit, by limit.",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        node.register(&registry, redis)?;
        Ok(Metrics {
            connections: ConnectionKind::ALL.map(|k| connections.with_label_values(&[k.label()])),
            published: PublishedOver::ALL.map(|k| published.with_label_values(&[k.label()])),
            rejections: Limit::ALL.map(|l| rejections.with_label_values(&[l.label()])),
            registry,
            node,
        })
    }

    /// The gauge of open connections carried as `kind`.
    pub fn connections(&self, kind: ConnectionKind) -> &IntGauge {
        &self.connections[kind as usize]
    }

    /// Open connections by transport label, as `switchboard_connections`.
    pub fn connection_counts(&self) -> Vec<(&'static str, i64)> {
        ConnectionKind::ALL
            .iter()
            .map(|kind| (kind.label(), self.connections(*kind).get()))
            .collect()
    }

    /// Publishes taken, over every transport.
    pub fn published_total(&self) -> u64 {
        self.published.iter().map(IntCounter::get).sum()
    }

    /// Messages queued to subscribers, over every transport.
    pub fn delivered_total(&self) -> u64 {
        self.node.delivered_total()
    }

    pub fn published(&self, over: PublishedOver) {
        self.published[over as usize].inc();
    }

    pub fn rejected(&self, limit: Limit) {
        self.rejections[limit as usize].inc();
    }

    /// `limit`'s counter, for a part that counts without the metrics.
    pub fn rejections(&self, limit: Limit) -> IntCounter {
        self.rejections[limit as usize].clone()
    }

    /// Counts a refused publish under its limit, if it ran into one.
    pub fn publish_refused(&self, error: &switchboard_core::node::PublishError) {
        if let Some(limit) = Limit::of_publish(error) {
            self.rejected(limit);
        }
    }

    /// The counter of slow consumers on `kind`'s transport.
    pub fn slow_consumers(&self, kind: switchboard_core::metrics::TransportKind) -> IntCounter {
        self.node.slow_consumers(kind)
    }

    /// Every metric in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text format always encodes");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

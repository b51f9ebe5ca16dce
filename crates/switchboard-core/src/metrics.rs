//! What the node counts for the metrics endpoint (Prometheus): the
//! deliveries and slow consumers of the hub, the group commits and store
//! errors of history, and the Redis engine's errors and reconnects. Each
//! is counted where it happens; the server registers them beside its own.
//!
//! The hub counts a fan-out's deliveries once per run, not once per
//! subscriber, so the counters cost the delivery path one atomic add per
//! transport per run.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::wire::Wire;

/// The transports a delivery is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket = 0,
    Sse = 1,
    SocketIo = 2,
}

impl TransportKind {
    pub const ALL: [TransportKind; 3] = [
        TransportKind::WebSocket,
        TransportKind::Sse,
        TransportKind::SocketIo,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::SocketIo => "socketio",
        }
    }

    pub fn of(wire: &Wire) -> TransportKind {
        match wire {
            Wire::WebSocket(_) => TransportKind::WebSocket,
            Wire::EventStream(_) | Wire::ChunkedEventStream => TransportKind::Sse,
            Wire::SocketIo(_) => TransportKind::SocketIo,
        }
    }
}

/// The node's counters.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// `switchboard_subscriptions`: channel subscriptions on this node.
    pub subscriptions: IntGauge,
    delivered: [IntCounter; 3],
    slow_consumers: [IntCounter; 3],
    /// `switchboard_history_commit_seconds`: one group commit.
    pub commit_seconds: Histogram,
    /// `switchboard_history_batch_size`: messages in one group commit.
    pub batch_size: Histogram,
    /// `switchboard_store_errors_total`: failed appends and reads.
    pub store_errors: IntCounter,
    /// `switchboard_redis_errors_total` (`--engine redis`).
    pub redis_errors: IntCounter,
    /// `switchboard_redis_reconnects_total` (`--engine redis`).
    pub redis_reconnects: IntCounter,
    delivered_vec: IntCounterVec,
    slow_consumers_vec: IntCounterVec,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let by_transport = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["transport"]).expect("valid metric")
        };
        let delivered_vec = by_transport(
            "switchboard_messages_delivered_total",
            "Messages queued to subscribers, by the subscriber's transport.",
        );
        let slow_consumers_vec = by_transport(
            "switchboard_slow_consumers_total",
            "Subscribers closed for falling --max-queued-bytes behind.",
        );
        let per_kind = |vec: &IntCounterVec| {
            TransportKind::ALL.map(|kind| vec.with_label_values(&[kind.label()]))
        };
        NodeMetrics {
            subscriptions: IntGauge::new(
                "switchboard_subscriptions",
                "Channel subscriptions on this node.",
            )
            .expect("valid metric"),
            delivered: per_kind(&delivered_vec),
            slow_consumers: per_kind(&slow_consumers_vec),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_history_commit_seconds",
                    "Time of one group commit (write and sync).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_history_batch_size",
                    "Messages stored by one group commit.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
                ]),
            )
            .expect("valid metric"),
            store_errors: IntCounter::new(
                "switchboard_store_errors_total",
                "Appends and reads the history store failed.",
            )
            .expect("valid metric"),
            redis_errors: IntCounter::new(
                "switchboard_redis_errors_total",
                "Redis commands that failed (--engine redis).",
            )
            .expect("valid metric"),
            redis_reconnects: IntCounter::new(
                "switchboard_redis_reconnects_total",
                "Times the pub/sub connection to Redis was made again (--engine redis).",
            )
            .expect("valid metric"),
            delivered_vec,
            slow_consumers_vec,
        }
    }

    /// Adds every metric of the node to `registry`.
    pub fn register(&self, registry: &Registry, redis: bool) -> prometheus::Result<()> {
        registry.register(Box::new(self.subscriptions.clone()))?;
        registry.register(Box::new(self.delivered_vec.clone()))?;
        registry.register(Box::new(self.slow_consumers_vec.clone()))?;
        registry.register(Box::new(self.commit_seconds.clone()))?;
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.store_errors.clone()))?;
        if redis {
            registry.register(Box::new(self.redis_errors.clone()))?;
            registry.register(Box::new(self.redis_reconnects.clone()))?;
        }
        Ok(())
    }

    pub fn delivered(&self, kind: TransportKind, messages: u64) {
        if messages > 0 {
            self.delivered[kind as usize].inc_by(messages);
        }
    }

    /// The counter an outbox of `kind`'s transport counts slow consumers in.
    /// Messages queued to subscribers, on every transport.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.iter().map(IntCounter::get).sum()
    }

    pub fn slow_consumers(&self, kind: TransportKind) -> IntCounter {
        self.slow_consumers[kind as usize].clone()
    }
}

//! Every live connection (WebSocket, SSE stream, Socket.IO session), so
//! that shutdown can reach them all, and the limits on how many there may
//! be: in all (`--max-connections`) and from one client address
//! (`--max-connections-per-ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use axum::extract::ConnectInfo;
use http::{HeaderMap, StatusCode};
use prometheus::IntGauge;

use parking_lot::Mutex;
use switchboard_ws::CloseFrame;
use tokio_util::task::TaskTracker;

use switchboard_core::hub::ConnectionId;
use switchboard_core::outbox::Outbox;

use crate::error::ApiError;

/// Shards keep registration from serialising on one lock under connect storms.
const SHARDS: usize = 16;

/// The registry of live connections and the tasks that serve them.
#[derive(Debug)]
pub struct Connections {
    next_id: AtomicU64,
    /// Lock order: a shard, then an outbox (closing it at shutdown), which
    /// only queues the close and wakes the connection's task.
    shards: [Mutex<HashMap<ConnectionId, Arc<Outbox>>>; SHARDS],
    /// Set once shutdown starts: new connections are closed at once.
    closing: Mutex<Option<CloseFrame>>,
    closing_flag: AtomicBool,
    /// Every connection task, so shutdown can wait for them to finish.
    pub tasks: TaskTracker,
    limits: ConnectionLimits,
    /// Seats taken: connections admitted and not yet gone.
    seated: AtomicUsize,
    /// Seats taken per client address (only addresses with one).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// How many connections the server holds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_total: usize,
    pub max_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_total: usize::MAX,
            max_per_ip: usize::MAX,
        }
    }
}

/// A connection refused for the limits; the ones open are untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the server holds as many connections as it takes ({0}); try again later")]
    Total(usize),
    #[error("{ip} holds as many connections as one address may ({max})")]
    PerIp { ip: IpAddr, max: usize },
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let status = match e {
            LimitError::Total(_) => StatusCode::SERVICE_UNAVAILABLE,
            LimitError::PerIp { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError::new(status, "too_many_connections", e.to_string())
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections::new(ConnectionLimits::default())
    }
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Self {
        Connections {
            next_id: AtomicU64::new(1),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            closing: Mutex::new(None),
            closing_flag: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            limits,
            seated: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A seat for a new connection from `ip`, if the limits leave one;
    /// it is given back when the seat is dropped (with the connection).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Seat, LimitError> {
        let max_total = self.limits.max_total;
        if self.seated.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.seated.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitError::Total(max_total));
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock();
            let held = per_ip.entry(ip).or_insert(0);
            if *held >= self.limits.max_per_ip {
                drop(per_ip);
                self.seated.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitError::PerIp {
                    ip,
                    max: self.limits.max_per_ip,
                });
            }
            *held += 1;
        }
        Ok(Seat {
            taken: Some((self.clone(), ip)),
        })
    }

    /// Adds a connection admitted to `seat`, counted in `gauge` (its
    /// transport's `switchboard_connections`); it stays registered, seated
    /// and counted until the guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        outbox: Arc<Outbox>,
        seat: Seat,
        gauge: IntGauge,
    ) -> Registration {
        gauge.inc();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shard(id).lock().insert(id, outbox.clone());
        // Checked after inserting, so a connection racing with shutdown is
        // either seen by `close_all` or sees the flag here.
        if self.closing_flag.load(Ordering::Acquire) {
            if let Some(frame) = self.closing.lock().clone() {
                outbox.close(frame);
            }
        }
        Registration {
            id,
            connections: Arc::clone(self),
            _seat: seat,
            gauge: Mutex::new(gauge),
        }
    }

    /// Asks every connection, present and future, to close with `frame`.
    pub fn close_all(&self, frame: CloseFrame) {
        *self.closing.lock() = Some(frame.clone());
        self.closing_flag.store(true, Ordering::Release);
        for shard in &self.shards {
            for outbox in shard.lock().values() {
                outbox.close(frame.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: ConnectionId) -> &Mutex<HashMap<ConnectionId, Arc<Outbox>>> {
        &self.shards[id as usize % SHARDS]
    }
}

/// A connection's place under the limits; given back on drop.
#[derive(Debug)]
pub struct Seat {
    taken: Option<(Arc<Connections>, Option<IpAddr>)>,
}

impl Seat {
    /// For a connection that is part of another (the WebSocket that
    /// upgrades a Socket.IO session, which holds the seat).
    pub fn within_another() -> Seat {
        Seat { taken: None }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let Some((connections, ip)) = self.taken.take() else {
            return;
        };
        connections.seated.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = ip {
            let mut per_ip = connections.per_ip.lock();
            if let Some(held) = per_ip.get_mut(&ip) {
                *held -= 1;
                if *held == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// The address a request comes from: the peer, or with `--trust-proxy`
/// the first address of `X-Forwarded-For`.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<std::net::SocketAddr>>,
    trust_proxy: bool,
) -> Option<IpAddr> {
    let forwarded = trust_proxy
        .then(|| headers.get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|list| list.split(',').next())
        .and_then(|first| first.trim().parse().ok());
    forwarded.or_else(|| peer.map(|ConnectInfo(addr)| addr.ip()))
}

/// Keeps a connection registered; unregisters it on drop.
#[derive(Debug)]
pub struct Registration {
    pub id: ConnectionId,
    connections: Arc<Connections>,
    _seat: Seat,
    /// Where the connection is counted, until it changes transport.
    gauge: Mutex<IntGauge>,
}

impl Registration {
    /// Counts the connection under another transport from now on (a
    /// Socket.IO session upgraded from polling to a WebSocket).
    pub fn count_as(&self, gauge: IntGauge) {
        let mut current = self.gauge.lock();
        current.dec();
        gauge.inc();
        *current = gauge;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.gauge.lock().dec();
        self.connections.shard(self.id).lock().remove(&self.id);
    }
}

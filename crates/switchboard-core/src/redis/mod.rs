//! The Redis engine: many nodes share one history, one order and one
//! presence through a Redis server.
//!
//! - [`RedisHistory`] (`history`): the [`crate::history::HistoryStore`]
//!   whose appends run one Lua script per group commit, which assigns
//!   offsets, stores, trims and announces the messages atomically.
//! - [`RedisBroker`] (`broker`): the [`crate::broker::Broker`] between
//!   nodes. Its `fanout` task listens (pub/sub) to the channels this node
//!   has subscribers in and delivers their messages in offset order, filling
//!   any gap from history; its `presence` task keeps this node's part of
//!   presence in Redis, with a heartbeat that lets the others drop a dead
//!   node's users.
//! - [`Relay`] (`relay`): messages from node to node, for the server's
//!   Socket.IO long-polling without sticky sessions.
//!
//! Keys, all under the prefix (`--redis-prefix`, `switchboard` by default):
//! `P:meta:CH` (hash: `epoch`, `offset`), `P:history:CH` (sorted set of
//! entries scored by offset), `P:channels` (set), `P:key:…` (idempotency
//! keys, expiring), `P:presence:CH` (hash: user → nodes they are on),
//! `P:node:ID` (set: a node's presence entries), `P:nodes` (sorted set:
//! node → lease end). Pub/sub topic `P:ch:CH` carries a channel's events,
//! `P:relay:ADDRESS` what is relayed to a node.
//!
//! The scripts name keys they compute, so Redis Cluster (which needs every
//! key declared and in one slot) is refused at start.

mod broker;
mod entry;
mod fanout;
mod history;
mod presence;
mod relay;

pub use broker::RedisBroker;
pub use history::RedisHistory;
pub use relay::{Relay, RelayError};

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::history::HistoryError;

/// Where the Redis engine connects and how it behaves.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB` or `rediss://…` (TLS).
    pub url: String,
    /// Prefix of every key and topic, so deployments can share a server.
    pub prefix: String,
    /// How soon a node that stops heartbeating leaves presence.
    pub node_ttl: Duration,
    /// For `rediss://`: the PEM certificate of the authority that signed
    /// Redis's, trusted instead of the system's store.
    pub ca_cert: Option<Vec<u8>>,
}

/// How long a command may wait for its answer before it fails (Redis
/// stalled, or the network partitioned): publishes then fail instead of
/// piling up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to Redis shared by a node's engine parts.
#[derive(Clone)]
pub(crate) struct Redis {
    pub(crate) client: redis::Client,
    pub(crate) commands: ConnectionManager,
    pub(crate) prefix: Arc<str>,
}

impl Redis {
    /// Connects, and refuses what the engine cannot run on (a Redis Cluster).
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Redis, HistoryError> {
        let client = match &config.ca_cert {
            None => redis::Client::open(config.url.as_str()),
            Some(ca) => redis::Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
        }
        .map_err(|e| {
            HistoryError::Storage(format!(
                "invalid --redis-url {:?}: {e}",
                redact(&config.url)
            ))
        })?;
        // One quick retry: a command while Redis is away fails within about
        // a second instead of waiting out a long back-off, and the next
        // command tries again.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let commands = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(|e| {
                HistoryError::Unavailable(format!(
                    "cannot reach Redis at {}: {e}",
                    redact(&config.url)
                ))
            })?;
        let redis = Redis {
            client,
            commands,
            prefix: Arc::from(config.prefix.as_str()),
        };
        redis.refuse_cluster().await?;
        Ok(redis)
    }

    async fn refuse_cluster(&self) -> Result<(), HistoryError> {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut self.commands.clone())
            .await
            .map_err(redis_error)?;
        if info.contains("cluster_enabled:1") {
            return Err(HistoryError::Storage(
                "the Redis engine needs a standalone Redis (a primary, with replicas if wanted), \
                 not Redis Cluster: its scripts touch keys of many slots"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The pub/sub topic of `channel`'s events.
    pub(crate) fn topic(&self, channel: &str) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }
}

/// `url` without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A Redis failure as a store error: connection trouble means the store is
/// unavailable (clients may retry), anything else is a failure.
pub(crate) fn redis_error(error: redis::RedisError) -> HistoryError {
    if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
    {
        HistoryError::Unavailable(format!("Redis is unavailable: {error}"))
    } else {
        HistoryError::Backend(Box::new(error))
    }
}

/// A random epoch for a channel new to Redis (kept only if the channel has
/// none yet).
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn the_password_is_kept_out_of_messages() {
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1/2"), "redis://127.0.0.1/2");
    }
}

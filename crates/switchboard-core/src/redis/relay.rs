//! Messages from node to node through Redis pub/sub: a node listens on an
//! address of its own (topic `P:relay:ADDRESS`) and any node can send to
//! it. The server forwards a Socket.IO long-polling request that reaches a
//! node other than its session's this way, so polling needs no sticky
//! sessions.

use bytes::Bytes;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Longest wait for Redis to confirm a new listener.
pub const LISTEN_WAIT: Duration = Duration::from_secs(2);

use super::fanout::Command;
use super::{Redis, redis_error};
use crate::history::HistoryError;

/// Sends to other nodes' addresses and listens on this node's.
#[derive(Clone)]
pub struct Relay {
    pub(crate) redis: Redis,
    pub(crate) fanout: mpsc::UnboundedSender<Command>,
}

/// Why a message could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No node listens on the address (it stopped, or never existed).
    #[error("no node listens on {0}")]
    NobodyListens(String),
    #[error(transparent)]
    Redis(#[from] HistoryError),
}

impl Relay {
    /// Delivers what is sent to `address` from now on (and after every
    /// reconnect) to the returned receiver. Returns once Redis listens for
    /// it, or after [`LISTEN_WAIT`] if Redis is away (it listens once back).
    pub async fn listen(&self, address: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (deliver, receiver) = mpsc::unbounded_channel();
        let (listening, confirmed) = oneshot::channel();
        let command = Command::Listen(self.topic(address), deliver, Some(listening));
        if self.fanout.send(command).is_ok() {
            let _ = tokio::time::timeout(LISTEN_WAIT, confirmed).await;
        }
        receiver
    }

    /// Sends `message` to the node listening on `address`.
    pub async fn send(&self, address: &str, message: Vec<u8>) -> Result<(), RelayError> {
        let receivers: u64 = ::redis::cmd("PUBLISH")
            .arg(self.topic(address))
            .arg(message)
            .query_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        if receivers == 0 {
            return Err(RelayError::NobodyListens(address.to_owned()));
        }
        Ok(())
    }

    fn topic(&self, address: &str) -> String {
        format!("{}:relay:{address}", self.redis.prefix)
    }
}

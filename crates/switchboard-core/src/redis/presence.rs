//! This node's part of presence in Redis, and its heartbeat.
//!
//! The hub tells the broker when a user's first connection on this node
//! joins a channel and their last one leaves; this task applies those
//! changes in order (several per round trip), and the script announces a
//! user only on their first node in and last node out. Every beat renews
//! the node's lease and removes nodes whose lease ran out, with their users.
//! After a failed write, or when the node finds it was taken for dead (a
//! long outage) or Redis lost its data, it writes its whole presence again.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use tokio::sync::{mpsc, oneshot};

use super::{Redis, redis_error};
use crate::channel::ChannelName;
use crate::history::HistoryError;
use crate::user::Username;

static PRESENCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/presence.lua")));
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));

/// A change in who is on this node.
pub(crate) enum Change {
    Arrive(ChannelName, Username),
    Depart(ChannelName, Username),
    /// The node is stopping: remove its presence now, then answer.
    Stop(oneshot::Sender<()>),
}

/// Most changes written in one round trip.
const CHANGES_PER_WRITE: usize = 512;

pub(crate) struct PresenceKeeper {
    pub(crate) redis: Redis,
    pub(crate) node: String,
    pub(crate) changes: mpsc::UnboundedReceiver<Change>,
    pub(crate) node_ttl: Duration,
}

impl PresenceKeeper {
    /// Beats every fifth of the node TTL with a lease of three fifths: a
    /// dead node's lease ends at most 3/5 TTL after its last beat and the
    /// next beat of any other node removes it, within the TTL.
    pub(crate) async fn run(mut self) {
        let mut here: HashSet<(ChannelName, Username)> = HashSet::new();
        let mut beat = tokio::time::interval(self.node_ttl / 5);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease = self.node_ttl * 3 / 5;
        let mut out_of_sync = false;
        let mut changes = Vec::with_capacity(CHANGES_PER_WRITE);
        let mut applied = Vec::with_capacity(CHANGES_PER_WRITE);
        loop {
            tokio::select! {
                received = self.changes.recv_many(&mut changes, CHANGES_PER_WRITE) => {
                    if received == 0 {
                        break;
                    }
                    let mut stopped = None;
                    for change in changes.drain(..) {
                        match change {
                            Change::Arrive(c, u) => {
                                here.insert((c.clone(), u.clone()));
                                applied.push(Change::Arrive(c, u));
                            }
                            Change::Depart(c, u) => {
                                here.remove(&(c.clone(), u.clone()));
                                applied.push(Change::Depart(c, u));
                            }
                            Change::Stop(done) => stopped = Some(done),
                        }
                    }
                    let changes = std::mem::take(&mut applied);
                    if !out_of_sync && !changes.is_empty()
                        && let Err(e) = self.write_changes(&changes).await
                    {
                        tracing::warn!("presence not written to Redis, resyncing later: {e}");
                        out_of_sync = true;
                    }
                    applied = changes;
                    applied.clear();
                    if let Some(done) = stopped {
                        self.leave_all().await;
                        let _ = done.send(());
                        return;
                    }
                }
                _ = beat.tick() => {
                    match self.heartbeat(lease).await {
                        Ok(registered) if registered && !out_of_sync => {}
                        Ok(_) => out_of_sync = self.sync(&here).await.is_err(),
                        Err(e) => {
                            tracing::warn!("Redis heartbeat failed: {e}");
                            out_of_sync = true;
                        }
                    }
                }
            }
        }
        self.leave_all().await;
    }

    /// The node is stopping: its users leave now rather than at its TTL.
    async fn leave_all(&self) {
        if let Err(e) = self.sync(&HashSet::new()).await {
            tracing::warn!("presence not removed from Redis at stop: {e}");
        }
        let _ = ::redis::cmd("ZREM")
            .arg(format!("{}:nodes", self.redis.prefix))
            .arg(&self.node)
            .query_async::<()>(&mut self.redis.commands.clone())
            .await;
    }

    async fn write_changes(&self, changes: &[Change]) -> Result<(), HistoryError> {
        let mut invocation = PRESENCE.prepare_invoke();
        invocation
            .arg(&*self.redis.prefix)
            .arg(&self.node)
            .arg("change");
        for change in changes {
            let (op, channel, user) = match change {
                Change::Arrive(c, u) => ("j", c, u),
                Change::Depart(c, u) => ("l", c, u),
                Change::Stop(_) => continue,
            };
            invocation.arg(op).arg(channel.as_str()).arg(user.as_str());
        }
        invocation
            .invoke_async::<u64>(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Makes this node's presence in Redis exactly `here`.
    async fn sync(&self, here: &HashSet<(ChannelName, Username)>) -> Result<(), HistoryError> {
        let mut invocation = PRESENCE.prepare_invoke();
        invocation
            .arg(&*self.redis.prefix)
            .arg(&self.node)
            .arg("sync");
        for (channel, user) in here {
            invocation.arg(channel.as_str()).arg(user.as_str());
        }
        let changed: u64 = invocation
            .invoke_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        if changed > 0 {
            tracing::info!(changed, "presence in Redis resynced");
        }
        Ok(())
    }

    /// Renews the lease; false if the node was not registered.
    async fn heartbeat(&self, lease: Duration) -> Result<bool, HistoryError> {
        let registered: u64 = HEARTBEAT
            .prepare_invoke()
            .arg(&*self.redis.prefix)
            .arg(&self.node)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        Ok(registered == 1)
    }
}

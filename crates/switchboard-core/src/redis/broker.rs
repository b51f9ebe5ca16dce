//! The broker between nodes: presence changes go to Redis (the presence
//! task), channels are listened to while this node has subscribers in them
//! (the fan-out task). Messages need nothing from it: the append script
//! announces them as it stores them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::fanout::{Command, Fanout};
use super::history::RedisHistory;
use super::presence::{Change, PresenceKeeper};
use super::{Redis, Relay, redis_error};
use crate::broker::{Broker, ChannelEvent};
use crate::channel::ChannelName;
use crate::history::HistoryError;
use crate::hub::Hub;
use crate::node::AckTarget;
use crate::pipeline::PipelineStats;
use switchboard_proto::Publication;

/// The Redis engine's broker.
pub struct RedisBroker {
    redis: Redis,
    fanout: mpsc::UnboundedSender<Command>,
    presence: mpsc::UnboundedSender<Change>,
}

impl RedisBroker {
    /// Starts the fan-out and presence tasks of a node whose hub is `hub`.
    pub(crate) fn start(
        redis: Redis,
        history: Arc<RedisHistory>,
        hub: Arc<Hub>,
        stats: Arc<PipelineStats>,
        node_ttl: Duration,
    ) -> RedisBroker {
        let (fanout, commands) = mpsc::unbounded_channel();
        tokio::spawn(Fanout::new(redis.clone(), history, hub, stats, commands).run());
        let (presence, changes) = mpsc::unbounded_channel();
        let node = format!("{:016x}", fastrand::u64(..));
        tracing::info!(node, "joined the Redis engine");
        tokio::spawn(
            PresenceKeeper {
                redis: redis.clone(),
                node,
                changes,
                node_ttl,
            }
            .run(),
        );
        RedisBroker {
            redis,
            fanout,
            presence,
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn publish(&self, event: ChannelEvent) {
        let change = match event {
            // Announced by the append script with the write itself.
            ChannelEvent::Message { .. } => return,
            ChannelEvent::Join { channel, username } => Change::Arrive(channel, username),
            ChannelEvent::Leave { channel, username } => Change::Depart(channel, username),
        };
        let _ = self.presence.send(change);
    }

    fn spans_nodes(&self) -> bool {
        true
    }

    fn acknowledge(&self, acks: Vec<(Arc<Publication>, AckTarget)>) {
        if let Err(mpsc::error::SendError(Command::Acks(acks))) =
            self.fanout.send(Command::Acks(acks))
        {
            // No fan-out task: nobody here to deliver to first.
            for (publication, ack) in acks {
                ack.succeed(&publication);
            }
        }
    }

    fn watch(&self, channel: &ChannelName) {
        let _ = self.fanout.send(Command::Watch(channel.clone()));
    }

    fn unwatch(&self, channel: &ChannelName) {
        let _ = self.fanout.send(Command::Unwatch(channel.clone()));
    }

    async fn ready(&self, channel: &ChannelName) -> Result<(), HistoryError> {
        let (reply, answer) = oneshot::channel();
        let _ = self.fanout.send(Command::Ready(channel.clone(), reply));
        answer
            .await
            .map_err(|_| HistoryError::Storage("the Redis fan-out task has stopped".into()))?
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Option<Vec<String>>, HistoryError> {
        let users: Vec<String> = ::redis::cmd("HKEYS")
            .arg(format!("{}:presence:{channel}", self.redis.prefix))
            .query_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        Ok(Some(users))
    }

    fn relay(&self) -> Option<Relay> {
        Some(Relay {
            redis: self.redis.clone(),
            fanout: self.fanout.clone(),
        })
    }

    async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.presence.send(Change::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

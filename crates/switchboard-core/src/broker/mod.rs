//! Delivery of channel events to every node that has subscribers.
//!
//! Local and remote events take the same path: a node publishes to the
//! broker, and the broker hands every event (its own included) to each
//! node's hub. The in-process broker ([`MemoryBroker`]) makes that a direct
//! call; the Redis broker ([`crate::redis::RedisBroker`]) carries events
//! between nodes through Redis pub/sub.

mod memory;

pub use memory::MemoryBroker;

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_proto::Publication;

use crate::channel::ChannelName;
use crate::history::HistoryError;
use crate::node::AckTarget;
use crate::user::Username;

/// Something that happened in a channel, for its subscribers.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// A message, durably stored.
    Message {
        channel: ChannelName,
        publication: Arc<Publication>,
    },
    /// A user's first connection subscribed.
    Join {
        channel: ChannelName,
        username: Username,
    },
    /// A user's last connection left.
    Leave {
        channel: ChannelName,
        username: Username,
    },
}

/// Receives every event a broker delivers: the node's hub.
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, event: ChannelEvent);

    /// Delivers events in order; a sink may deliver a channel's run of
    /// messages together (one queue operation per subscriber, not per message).
    fn deliver_all(&self, events: Vec<ChannelEvent>) {
        for event in events {
            self.deliver(event);
        }
    }
}

/// Fans channel events out to every node.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes in order: two events published one after the other by the
    /// same caller reach every node in that order. A broker whose store
    /// announces messages as it appends them (Redis) takes only presence
    /// events here.
    fn publish(&self, event: ChannelEvent);

    /// Publishes events in order, as consecutive [`Broker::publish`] calls
    /// would; a broker may pass them on as one batch.
    fn publish_all(&self, events: Vec<ChannelEvent>) {
        for event in events {
            self.publish(event);
        }
    }

    /// Whether events reach this node's hub from elsewhere (Redis) rather
    /// than from [`Broker::publish`]: then acks go through
    /// [`Broker::acknowledge`], and a subscription's start is read from the
    /// shared store.
    fn spans_nodes(&self) -> bool {
        false
    }

    /// Acknowledges stored messages once this node has delivered them, so
    /// a publisher subscribed to the channel gets its message before its
    /// ack (only called when [`Broker::spans_nodes`]).
    fn acknowledge(&self, acks: Vec<(Arc<Publication>, AckTarget)>) {
        for (publication, ack) in acks {
            ack.succeed(&publication);
        }
    }

    /// A subscriber on this node joined `channel`: its events from every
    /// node are to reach this node's hub. Each call is matched by one
    /// [`Broker::unwatch`].
    fn watch(&self, _channel: &ChannelName) {}

    /// A subscriber on this node left `channel`.
    fn unwatch(&self, _channel: &ChannelName) {}

    /// Returns once every message stored in `channel` from now on will be
    /// delivered to this node (after [`Broker::watch`]): a subscriber's
    /// replay may start.
    async fn ready(&self, _channel: &ChannelName) -> Result<(), HistoryError> {
        Ok(())
    }

    /// Who is online in `channel` on every node, if the broker spans nodes
    /// (`None`: this node's hub knows everyone).
    async fn presence(&self, _channel: &ChannelName) -> Result<Option<Vec<String>>, HistoryError> {
        Ok(None)
    }

    /// Messages between nodes, when the broker spans them.
    fn relay(&self) -> Option<crate::redis::Relay> {
        None
    }

    /// The node is stopping: what it holds in a shared store (its presence)
    /// goes now instead of expiring.
    async fn stop(&self) {}
}

//! Delivery of channel events to every node that has subscribers.
//!
//! Local and remote events take the same path: a node publishes to the
//! broker, and the broker hands every event (its own included) to each
//! node's hub. The in-process broker ([`MemoryBroker`]) makes that a direct
//! call; a broker between nodes would implement the same trait.

mod memory;

pub use memory::MemoryBroker;

use std::sync::Arc;

use switchboard_proto::Publication;

use crate::channel::ChannelName;
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
pub trait Broker: Send + Sync + 'static {
    /// Publishes in order: two events published one after the other by the
    /// same caller reach every node in that order.
    fn publish(&self, event: ChannelEvent);

    /// Publishes events in order, as consecutive [`Broker::publish`] calls
    /// would; a broker may pass them on as one batch.
    fn publish_all(&self, events: Vec<ChannelEvent>) {
        for event in events {
            self.publish(event);
        }
    }
}

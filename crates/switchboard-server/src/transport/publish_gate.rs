//! On an engine shared by many nodes (Redis) a new subscription reads its
//! start from the store, one round trip after the client asked. A publish
//! the same session makes meanwhile could be stored before that start and
//! never come back to its own publisher. Such publishes wait here, in
//! order, until the session's subscriptions have started.

use std::collections::VecDeque;

use parking_lot::Mutex;
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::idempotency::IdempotencyKey;
use switchboard_core::node::{AckTarget, PublishError};
use switchboard_core::{ChannelName, Node};

use super::channel_session::{publish_error_code, send_error};

/// A publish held until the session's subscriptions have started.
pub struct HeldPublish {
    pub channel: ChannelName,
    pub msg: String,
    pub idempotency_key: Option<IdempotencyKey>,
    pub ack: AckTarget,
}

#[derive(Default)]
pub struct PublishGate(Mutex<GateState>);

#[derive(Default)]
struct GateState {
    /// Subscriptions still reading their start.
    starting: usize,
    held: VecDeque<HeldPublish>,
}

impl PublishGate {
    /// A subscription of the session begins to start.
    pub fn starting(&self) {
        self.0.lock().starting += 1;
    }

    /// Publishes now, or holds the publish behind the ones held before.
    pub fn publish(
        &self,
        node: &Node,
        me: &SubscriberHandle,
        publish: HeldPublish,
    ) -> Result<(), PublishError> {
        let mut state = self.0.lock();
        if state.starting > 0 {
            state.held.push_back(publish);
            return Ok(());
        }
        let (channel, username) = (publish.channel, me.username.clone());
        node.publish(
            channel,
            username,
            publish.msg,
            publish.idempotency_key,
            publish.ack,
        )
    }

    /// A subscription has started (or failed to): once none is starting,
    /// the held publishes go, in order; one refused gets its error.
    pub fn started(&self, node: &Node, me: &SubscriberHandle) {
        let mut state = self.0.lock();
        state.starting = state.starting.saturating_sub(1);
        if state.starting > 0 {
            return;
        }
        for held in state.held.drain(..) {
            let id = match &held.ack {
                AckTarget::Connection { id, .. } => id.clone(),
                AckTarget::Reply(_) => None,
            };
            let (channel, username) = (held.channel, me.username.clone());
            if let Err(e) =
                node.publish(channel, username, held.msg, held.idempotency_key, held.ack)
            {
                send_error(me, publish_error_code(&e), &e.to_string(), id.as_ref());
            }
        }
    }
}

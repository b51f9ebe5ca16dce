//! What a client's session does in channels, whatever protocol it speaks:
//! its subscriptions (with presence and replay), publishing with a durable
//! ack, and history reads. The native protocol (`/ws`) and Socket.IO
//! (`/socket.io/`) parse their own requests and call this; replies go out
//! in the subscriber's wire format ([`Wire::encode_reply`]).
//!
//! [`Wire::encode_reply`]: switchboard_core::wire::Wire::encode_reply

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use switchboard_core::history::{HistoryError, HistoryQuery};
use switchboard_core::hub::{SubscribeError, SubscriberHandle};
use switchboard_core::idempotency::IdempotencyKey;
use switchboard_core::node::{
    AckTarget, Greeting, PublishError, storage_error_code, subscribed_reply,
};
use switchboard_core::{ChannelName, Node};
use switchboard_proto::native::{ErrorCode, RequestError, RequestId, ServerMessage};

use crate::access::{AccessError, Permits};
use crate::metrics::{Limit, Metrics, PublishedOver};
use crate::rate_limit::{RateLimit, RateRefusal};
use crate::transport::publish_gate::{HeldPublish, PublishGate};
use crate::transport::work_budget::{WorkBudget, WorkPermit};

/// Default and largest `limit` of a history request.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// What one session may make the server do.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub publish: RateLimit,
    /// Channels subscribed at once.
    pub max_subscriptions: usize,
    /// History reads and subscriptions (with their replay) in flight.
    pub work: WorkBudget,
    /// Where publishes and refusals are counted.
    pub counted: Counted,
}

/// Where a session's publishes and refusals are counted.
#[derive(Debug, Clone)]
pub struct Counted {
    pub metrics: Arc<Metrics>,
    pub over: PublishedOver,
}

/// How handling a request went wrong.
#[derive(Debug)]
pub enum Failure {
    /// Answered with an `error`; the session stays.
    Request(RequestError),
    /// The session is closed: it kept publishing over its rate after
    /// being told to wait.
    RateExceeded,
}

/// One client's subscriptions and requests.
pub struct ChannelSession {
    node: Arc<Node>,
    me: SubscriberHandle,
    /// A few channels at most (`--max-subscriptions`): a vector costs an
    /// idle connection less than a hash set, and a scan of it is as quick.
    subscriptions: Vec<ChannelName>,
    limits: SessionLimits,
    /// With an engine shared by many nodes, from the first subscription:
    /// publishes wait while a subscription reads its start.
    gate: Option<Arc<PublishGate>>,
    /// What the session's token allows (everything without tokens).
    permits: Permits,
}

impl ChannelSession {
    pub fn new(
        node: Arc<Node>,
        me: SubscriberHandle,
        limits: SessionLimits,
        permits: Permits,
    ) -> Self {
        ChannelSession {
            node,
            me,
            subscriptions: Vec::new(),
            limits,
            gate: None,
            permits,
        }
    }

    /// Whether the session's token lets it read `channel` (subscribe, or
    /// ask its history or presence); the refusal answers request `id`.
    fn may_read(&self, channel: &ChannelName, id: &Option<RequestId>) -> Result<(), Failure> {
        self.permits
            .check_subscribe(channel)
            .map_err(|e| access_error(&e, id.clone()))
    }

    /// The session as the hub reaches it.
    pub fn me(&self) -> &SubscriberHandle {
        &self.me
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn is_subscribed_anywhere(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.subscriptions.contains(channel)
    }

    /// Ready when another request that starts work may be taken.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.limits.work.poll_ready(cx)
    }

    /// Joins `channel`: the reply (with presence) first, then with `since`
    /// every stored message after it, then live ones.
    pub fn subscribe(
        &mut self,
        channel: ChannelName,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        self.subscribe_with(channel, since, epoch, id, None)
    }

    /// Joins `channel` from now on, with `prelude` sent once the join's
    /// start is fixed: a Socket.IO CONNECT, so that nothing the client
    /// does or hears of after it can fall before its subscription.
    pub fn subscribe_after(&mut self, channel: ChannelName, prelude: Bytes) -> Result<(), Failure> {
        self.subscribe_with(channel, None, None, None, Some(prelude))
    }

    fn subscribe_with(
        &mut self,
        channel: ChannelName,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<RequestId>,
        prelude: Option<Bytes>,
    ) -> Result<(), Failure> {
        self.may_read(&channel, &id)?;
        if self.subscriptions.len() >= self.limits.max_subscriptions
            && !self.subscriptions.contains(&channel)
        {
            self.limits
                .counted
                .metrics
                .rejected(Limit::MaxSubscriptions);
            let reason = format!(
                "a connection may subscribe to at most {} channels",
                self.limits.max_subscriptions
            );
            return Err(request_error(ErrorCode::TooManySubscriptions, reason, id));
        }
        let presence = self.node.join(&self.me, &channel).map_err(|e| match e {
            SubscribeError::AlreadySubscribed => {
                request_error(ErrorCode::AlreadySubscribed, e.to_string(), id.clone())
            }
        })?;
        if self.subscriptions.capacity() == 0 {
            // Most sessions stay in one channel: room for one, not four.
            self.subscriptions.reserve_exact(1);
        }
        // Listed already if a subscription failed to catch up (the node
        // undid that join): the channel is joined again, listed once.
        if !self.subscriptions.contains(&channel) {
            self.subscriptions.push(channel.clone());
        }
        // Without `since` the subscription starts where the store is when it
        // reads: this session's publishes wait for that, to come back to it.
        let gate = (since.is_none() && self.node.spans_nodes()).then(|| {
            let gate = self.gate.get_or_insert_with(Default::default).clone();
            gate.starting();
            gate
        });
        let node = self.node.clone();
        let me = self.me.clone();
        let permit = self.limits.work.start();
        tokio::spawn(async move {
            let _permit = permit;
            let result = node
                .catch_up(
                    me.clone(),
                    channel.clone(),
                    since,
                    Greeting::Subscribed {
                        id: id.clone(),
                        epoch,
                        presence,
                        prelude,
                    },
                )
                .await;
            if let Some(gate) = gate {
                gate.started(&node, &me);
            }
            if let Err(e) = result {
                tracing::debug!(conn = me.id, %channel, "subscribe failed: {e}");
                send_error(&me, e.code(), &e.to_string(), id.as_ref());
            }
        });
        Ok(())
    }

    /// Leaves `channel`; the caller sends the reply.
    pub fn unsubscribe(
        &mut self,
        channel: &ChannelName,
        id: &Option<RequestId>,
    ) -> Result<(), Failure> {
        let Some(at) = self.subscriptions.iter().position(|c| c == channel) else {
            return Err(request_error(
                ErrorCode::NotSubscribed,
                "not subscribed to this channel",
                id.clone(),
            ));
        };
        self.subscriptions.swap_remove(at);
        self.leave(channel);
        Ok(())
    }

    /// Leaves a channel taken off the list.
    fn leave(&self, channel: &ChannelName) {
        self.node.unsubscribe(channel, self.me.id);
        if let Some(positions) = &self.me.recovery {
            positions.remove(channel);
        }
    }

    /// Queues a message for storage; its ack (or error) follows once stored.
    pub fn publish(
        &mut self,
        channel: ChannelName,
        msg: String,
        idempotency_key: Option<IdempotencyKey>,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        if let Err(refusal) = self.limits.publish.try_take() {
            self.limits.counted.metrics.rejected(Limit::PublishRate);
            return Err(rate_limited(refusal, id));
        }
        self.permits
            .check_publish(&channel)
            .map_err(|e| access_error(&e, id.clone()))?;
        let ack = AckTarget::Connection {
            subscriber: self.me.clone(),
            id: id.clone(),
        };
        let published = match &self.gate {
            Some(gate) => {
                let held = HeldPublish {
                    channel,
                    msg,
                    idempotency_key,
                    ack,
                };
                gate.publish(&self.node, &self.me, held)
            }
            None => {
                let username = self.me.username.clone();
                self.node
                    .publish(channel, username, msg, idempotency_key, ack)
            }
        };
        published.map_err(|e| {
            self.limits.counted.metrics.publish_refused(&e);
            request_error(publish_error_code(&e), e.to_string(), id)
        })?;
        self.limits
            .counted
            .metrics
            .published(self.limits.counted.over);
        Ok(())
    }

    /// Takes a new token: the session lasts until its expiry, and leaves
    /// the channels it no longer allows. Returns the expiry and the
    /// channels left, for the transport to tell the client.
    pub fn refresh(
        &mut self,
        token: &str,
        id: &Option<RequestId>,
    ) -> Result<(u64, Vec<ChannelName>), Failure> {
        let exp = self
            .permits
            .refresh(token)
            .map_err(|e| access_error(&e, id.clone()))?;
        let (kept, left): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .partition(|channel| self.permits.check_subscribe(channel).is_ok());
        self.subscriptions = kept;
        for channel in &left {
            self.leave(channel);
        }
        Ok((exp, left))
    }

    /// Reads a page of history and queues it as the reply.
    pub fn spawn_history(
        &self,
        channel: ChannelName,
        query: HistoryQuery,
        limit: usize,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        self.may_read(&channel, &id)?;
        let node = self.node.clone();
        let read = async move {
            let page = node.history(&channel, query, limit).await?;
            Ok((channel, page))
        };
        let permit = self.limits.work.start();
        self.spawn_answer(id, Some(permit), read, |(channel, page), id| {
            ServerMessage::History {
                id,
                channel: channel.as_str(),
                epoch: &page.epoch,
                messages: &page.messages,
            }
        });
        Ok(())
    }

    /// Reads who is online in `channel` (on every node) and queues the reply.
    pub fn spawn_presence(
        &self,
        channel: ChannelName,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        self.may_read(&channel, &id)?;
        let node = self.node.clone();
        let read = async move {
            let users = node.presence(&channel).await?;
            Ok((channel, users))
        };
        self.spawn_answer(id, None, read, |(channel, users), id| {
            ServerMessage::Presence {
                id,
                channel: channel.as_str(),
                users,
            }
        });
        Ok(())
    }

    /// Runs `read` in a task of its own and queues `answer` to what it read
    /// as the reply to `id`, or the error it met.
    fn spawn_answer<T: Send + 'static>(
        &self,
        id: Option<RequestId>,
        permit: Option<WorkPermit>,
        read: impl Future<Output = Result<T, HistoryError>> + Send + 'static,
        answer: impl for<'a> FnOnce(&'a T, Option<&'a RequestId>) -> ServerMessage<'a> + Send + 'static,
    ) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match read.await {
                Ok(value) => {
                    if let Some(reply) = me.wire.encode_reply(id.as_ref(), |id| answer(&value, id))
                    {
                        let _ = me.outbox.push_when_room(reply).await;
                    }
                }
                Err(e) => send_error(&me, storage_error_code(&e), &e.to_string(), id.as_ref()),
            }
        });
    }

    /// Answers a `join` for a channel already joined: the same reply as the
    /// first, with the channel's position now, and nothing replayed.
    pub fn spawn_rejoin_reply(&self, channel: ChannelName, id: Option<RequestId>) {
        let node = self.node.clone();
        let me = self.me.clone();
        let permit = self.limits.work.start();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                let position = node.position(&channel).await?;
                let presence: Vec<String> = node.presence(&channel).await?;
                Ok::<_, HistoryError>((position, presence))
            };
            match answer.await {
                Ok((position, presence)) => {
                    let reply =
                        subscribed_reply(&me.wire, id.as_ref(), &channel, &position, &presence);
                    if let Some(reply) = reply {
                        let _ = me.outbox.push_when_room(reply).await;
                    }
                }
                Err(e) => send_error(&me, storage_error_code(&e), &e.to_string(), id.as_ref()),
            }
        });
    }
}

impl Drop for ChannelSession {
    fn drop(&mut self) {
        for channel in self.subscriptions.drain(..) {
            self.node.unsubscribe(&channel, self.me.id);
        }
    }
}

/// A request its token does not allow, or a refused refresh.
pub fn access_error(error: &AccessError, id: Option<RequestId>) -> Failure {
    request_error(error.error_code(), error.to_string(), id)
}

/// A publish over the rate: answered with when to retry; a connection
/// that goes on regardless is closed (see [`RateRefusal::persistent`]).
fn rate_limited(refusal: RateRefusal, id: Option<RequestId>) -> Failure {
    if refusal.persistent {
        return Failure::RateExceeded;
    }
    let retry_after_ms = refusal.retry_after.as_millis().max(1) as u64;
    Failure::Request(RequestError {
        code: ErrorCode::RateLimited,
        reason: format!("over the publish rate: not stored; retry in {retry_after_ms} ms"),
        id,
        retry_after_ms: Some(retry_after_ms),
    })
}

pub fn request_error(code: ErrorCode, reason: impl Into<String>, id: Option<RequestId>) -> Failure {
    Failure::Request(RequestError {
        code,
        reason: reason.into(),
        id,
        retry_after_ms: None,
    })
}

/// A publish's `idempotency_key`, if it has one.
pub fn parse_idempotency_key(
    key: Option<String>,
    id: &Option<RequestId>,
) -> Result<Option<IdempotencyKey>, Failure> {
    key.map(|key| IdempotencyKey::parse(&key))
        .transpose()
        .map_err(|e| request_error(ErrorCode::InvalidIdempotencyKey, e.to_string(), id.clone()))
}

pub fn parse_channel(name: &str, id: &Option<RequestId>) -> Result<ChannelName, Failure> {
    ChannelName::parse(name)
        .map_err(|e| request_error(ErrorCode::InvalidChannel, e.to_string(), id.clone()))
}

/// A history `limit`: default 100, 1..=1000.
pub fn history_limit(limit: Option<usize>) -> Result<usize, String> {
    match limit {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(l) if (1..=MAX_HISTORY_LIMIT).contains(&l) => Ok(l),
        Some(l) => Err(format!("limit {l} is outside 1..={MAX_HISTORY_LIMIT}")),
    }
}

/// Queues an error reply (or, for a Socket.IO event without an ack, an
/// `error` event).
pub fn send_error(me: &SubscriberHandle, code: ErrorCode, reason: &str, id: Option<&RequestId>) {
    send_request_error(
        me,
        &RequestError {
            code,
            reason: reason.to_owned(),
            id: id.cloned(),
            retry_after_ms: None,
        },
    );
}

/// [`send_error`] for a refused request, with all it says.
pub fn send_request_error(me: &SubscriberHandle, error: &RequestError) {
    if let Some(frame) = me
        .wire
        .encode_reply(error.id.as_ref(), |id| ServerMessage::Error {
            code: error.code,
            reason: &error.reason,
            id,
            retry_after_ms: error.retry_after_ms,
        })
    {
        let _ = me.outbox.try_push(frame);
    }
}

/// The error code of a refused publish.
pub fn publish_error_code(error: &PublishError) -> ErrorCode {
    match error {
        PublishError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        PublishError::Overloaded => ErrorCode::Overloaded,
        PublishError::Storage(e) => storage_error_code(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_limit_defaults_and_bounds() {
        assert_eq!(history_limit(None), Ok(100));
        assert_eq!(history_limit(Some(1000)), Ok(1000));
        assert!(history_limit(Some(0)).is_err());
        assert!(history_limit(Some(1001)).is_err());
    }
}

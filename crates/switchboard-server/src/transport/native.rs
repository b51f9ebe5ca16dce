//! The native protocol on `GET /ws`: one chat session per WebSocket
//! connection, speaking the JSON messages of `docs/protocol.md`.
//!
//! A request's mistakes are answered with an `error` and the connection
//! stays open; abuse (binary frames, going over the publish rate) closes it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use switchboard_core::history::HistoryQuery;
use switchboard_core::hub::{SubscribeError, SubscriberHandle};
use switchboard_core::idempotency::IdempotencyKey;
use switchboard_core::node::{AckTarget, Greeting, PublishError};
use switchboard_core::wire::Wire;
use switchboard_core::{ChannelName, Node, Username};
use switchboard_proto::native::{
    ErrorCode, Inbound, Request, RequestError, RequestId, ServerMessage, parse_inbound,
};
use switchboard_ws::{CloseCode, CloseFrame, Message};

use crate::transport::websocket::{ConnectionContext, MessageHandler, Replies};
use crate::transport::work_budget::WorkBudget;

/// Default and largest `limit` of a history request.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// The version announced in `welcome`.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What one `/ws` session may make the server do.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub publish: RateLimit,
    /// Channels subscribed at once.
    pub max_subscriptions: usize,
    /// History reads and subscriptions (with their replay) in flight.
    pub work: WorkBudget,
}

/// One client on `/ws`.
pub struct ChatSession {
    node: Arc<Node>,
    me: SubscriberHandle,
    /// Where plain-text frames are published (`?channel=` at connect).
    default_channel: Option<ChannelName>,
    /// A few channels at most (`--max-subscriptions`): a vector costs an
    /// idle connection less than a hash set, and a scan of it is as quick.
    subscriptions: Vec<ChannelName>,
    limits: SessionLimits,
}

impl ChatSession {
    /// Starts a session: `welcome`, then the subscription named at connect.
    pub fn open(
        node: Arc<Node>,
        connection: ConnectionContext,
        username: Username,
        default_channel: Option<ChannelName>,
        limits: SessionLimits,
    ) -> ChatSession {
        let me = SubscriberHandle {
            id: connection.id,
            username,
            outbox: connection.outbox,
            wire: Wire::WebSocket(connection.encoder),
            in_presence: true,
        };
        let welcome = ServerMessage::Welcome {
            username: me.username.as_str(),
            connection_id: me.id,
            server_version: SERVER_VERSION,
        };
        let _ = me.outbox.try_push(me.wire.encode_text(&welcome.to_json()));
        let mut session = ChatSession {
            node,
            me,
            default_channel: default_channel.clone(),
            subscriptions: Vec::new(),
            limits,
        };
        if let Some(channel) = default_channel {
            // A new session cannot already be subscribed: this cannot fail.
            let _ = session.subscribe(channel, None, None, None);
        }
        session
    }

    fn handle(&mut self, request: Request, replies: &mut Replies<'_>) -> Result<(), Failure> {
        match request {
            Request::Subscribe {
                channel,
                since,
                epoch,
                id,
            } => {
                let channel = parse_channel(&channel, &id)?;
                self.subscribe(channel, since, epoch, id)
            }
            Request::Unsubscribe { channel, id } => {
                let channel = parse_channel(&channel, &id)?;
                let Some(at) = self.subscriptions.iter().position(|c| *c == channel) else {
                    return Err(request_error(
                        ErrorCode::NotSubscribed,
                        "not subscribed to this channel",
                        id,
                    ));
                };
                self.subscriptions.swap_remove(at);
                self.node.unsubscribe(&channel, self.me.id);
                let reply = ServerMessage::Unsubscribed {
                    channel: channel.as_str(),
                    id: id.as_ref(),
                };
                replies.send_text(&reply.to_json());
                Ok(())
            }
            Request::Publish {
                channel,
                msg,
                idempotency_key,
                id,
            } => {
                let channel = parse_channel(&channel, &id)?;
                let key = idempotency_key
                    .map(|key| IdempotencyKey::parse(&key))
                    .transpose()
                    .map_err(|e| {
                        request_error(ErrorCode::InvalidIdempotencyKey, e.to_string(), id.clone())
                    })?;
                self.publish(channel, msg, key, id)
            }
            Request::History {
                channel,
                since,
                limit,
                id,
            } => {
                let channel = parse_channel(&channel, &id)?;
                let limit = history_limit(limit.map(|l| l as usize))
                    .map_err(|reason| request_error(ErrorCode::InvalidLimit, reason, id.clone()))?;
                let query = since.map_or(HistoryQuery::Latest, HistoryQuery::Since);
                self.spawn_history(channel, query, limit, id);
                Ok(())
            }
            Request::Presence { channel, id } => {
                let channel = parse_channel(&channel, &id)?;
                let users = self.node.presence(&channel);
                let reply = ServerMessage::Presence {
                    id: id.as_ref(),
                    channel: channel.as_str(),
                    users: &users,
                };
                replies.send_text(&reply.to_json());
                Ok(())
            }
            Request::Ping { id } => {
                replies.send_text(&ServerMessage::Pong { id: id.as_ref() }.to_json());
                Ok(())
            }
        }
    }

    fn subscribe(
        &mut self,
        channel: ChannelName,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        if self.subscriptions.len() >= self.limits.max_subscriptions
            && !self.subscriptions.contains(&channel)
        {
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
        self.subscriptions.push(channel.clone());
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
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::debug!(conn = me.id, %channel, "subscribe failed: {e}");
                send_error(&me, ErrorCode::Internal, &e.to_string(), id.as_ref());
            }
        });
        Ok(())
    }

    fn publish(
        &mut self,
        channel: ChannelName,
        msg: String,
        idempotency_key: Option<IdempotencyKey>,
        id: Option<RequestId>,
    ) -> Result<(), Failure> {
        if !self.limits.publish.try_take() {
            return Err(Failure::Close(CloseFrame::new(
                CloseCode::POLICY_VIOLATION,
                "publish rate limit exceeded",
            )));
        }
        let ack = AckTarget::Connection {
            subscriber: self.me.clone(),
            id: id.clone(),
        };
        self.node
            .publish(channel, self.me.username.clone(), msg, idempotency_key, ack)
            .map_err(|e| {
                let code = match e {
                    PublishError::TooLarge { .. } => ErrorCode::MessageTooLarge,
                    PublishError::Overloaded => ErrorCode::Overloaded,
                    PublishError::Storage(_) => ErrorCode::Internal,
                };
                request_error(code, e.to_string(), id)
            })
    }

    fn spawn_history(
        &self,
        channel: ChannelName,
        query: HistoryQuery,
        limit: usize,
        id: Option<RequestId>,
    ) {
        let node = self.node.clone();
        let me = self.me.clone();
        let permit = self.limits.work.start();
        tokio::spawn(async move {
            let _permit = permit;
            match node.history(&channel, query, limit).await {
                Ok(page) => {
                    let reply = ServerMessage::History {
                        id: id.as_ref(),
                        channel: channel.as_str(),
                        epoch: &page.epoch,
                        messages: &page.messages,
                    };
                    let _ = me
                        .outbox
                        .push_when_room(me.wire.encode_text(&reply.to_json()))
                        .await;
                }
                Err(e) => send_error(&me, ErrorCode::Internal, &e.to_string(), id.as_ref()),
            }
        });
    }
}

impl MessageHandler for ChatSession {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.limits.work.poll_ready(cx)
    }

    fn on_message(
        &mut self,
        message: Message,
        replies: &mut Replies<'_>,
    ) -> Result<(), CloseFrame> {
        let Some(text) = message.as_text() else {
            return Err(CloseFrame::new(
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not supported on /ws; send JSON text",
            ));
        };
        let outcome = match parse_inbound(text) {
            Ok(Inbound::Request(request)) => self.handle(request, replies),
            Ok(Inbound::PlainText(msg)) => match self.default_channel.clone() {
                Some(channel) => self.publish(channel, msg, None, None),
                None => Err(request_error(
                    ErrorCode::NoDefaultChannel,
                    "plain text needs a channel: connect with ?channel=NAME or send a JSON publish",
                    None,
                )),
            },
            Err(error) => Err(Failure::Request(error)),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Request(error)) => {
                let reply = ServerMessage::Error {
                    code: error.code,
                    reason: &error.reason,
                    id: error.id.as_ref(),
                };
                replies.send_text(&reply.to_json());
                Ok(())
            }
            Err(Failure::Close(frame)) => Err(frame),
        }
    }
}

impl Drop for ChatSession {
    fn drop(&mut self) {
        for channel in self.subscriptions.drain(..) {
            self.node.unsubscribe(&channel, self.me.id);
        }
    }
}

/// How handling a request went wrong.
enum Failure {
    /// Answered with an `error`; the connection stays.
    Request(RequestError),
    /// The connection is closed with this frame.
    Close(CloseFrame),
}

fn request_error(code: ErrorCode, reason: impl Into<String>, id: Option<RequestId>) -> Failure {
    Failure::Request(RequestError {
        code,
        reason: reason.into(),
        id,
    })
}

fn parse_channel(name: &str, id: &Option<RequestId>) -> Result<ChannelName, Failure> {
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

fn send_error(me: &SubscriberHandle, code: ErrorCode, reason: &str, id: Option<&RequestId>) {
    let message = ServerMessage::Error { code, reason, id };
    let _ = me.outbox.try_push(me.wire.encode_text(&message.to_json()));
}

/// A token bucket: `rate` per second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_burst_then_refuses() {
        let mut limit = RateLimit::new(0.001, 3.0);
        assert!(limit.try_take() && limit.try_take() && limit.try_take());
        assert!(!limit.try_take());
    }

    #[test]
    fn history_limit_defaults_and_bounds() {
        assert_eq!(history_limit(None), Ok(100));
        assert_eq!(history_limit(Some(1000)), Ok(1000));
        assert!(history_limit(Some(0)).is_err());
        assert!(history_limit(Some(1001)).is_err());
    }
}

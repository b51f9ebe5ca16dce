//! The native protocol on `GET /ws`: one chat session per WebSocket
//! connection, speaking the JSON messages of `docs/protocol.md`.
//!
//! A request's mistakes are answered with an `error` and the connection
//! stays open; abuse (binary frames, going over the publish rate) closes it.

use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard_core::history::HistoryQuery;
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::wire::Wire;
use switchboard_core::{ChannelName, Node, Username};
use switchboard_proto::native::{ErrorCode, Inbound, Request, ServerMessage, parse_inbound};
use switchboard_ws::{CloseCode, CloseFrame, Message};

use crate::access::Permits;
use crate::transport::channel_session::{
    ChannelSession, Failure, SessionLimits, history_limit, parse_channel, parse_idempotency_key,
    request_error,
};
use crate::transport::websocket::{ConnectionContext, MessageHandler, Replies};

/// The version announced in `welcome`.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One client on `/ws`.
pub struct ChatSession {
    channels: ChannelSession,
    /// Where plain-text frames are published (`?channel=` at connect).
    default_channel: Option<ChannelName>,
}

impl ChatSession {
    /// Starts a session: `welcome`, then the subscription named at connect.
    pub fn open(
        node: Arc<Node>,
        connection: ConnectionContext,
        username: Username,
        default_channel: Option<ChannelName>,
        limits: SessionLimits,
        permits: Permits,
    ) -> ChatSession {
        let me = SubscriberHandle {
            id: connection.id,
            username,
            outbox: connection.outbox,
            wire: Wire::WebSocket(connection.encoder),
            in_presence: true,
            recovery: None,
        };
        let welcome = ServerMessage::Welcome {
            username: me.username.as_str(),
            connection_id: me.id,
            server_version: SERVER_VERSION,
        };
        let _ = me.outbox.try_push(me.wire.encode_text(&welcome.to_json()));
        let mut session = ChatSession {
            channels: ChannelSession::new(node, me, limits, permits),
            default_channel: default_channel.clone(),
        };
        if let Some(channel) = default_channel {
            // A new session cannot already be subscribed: this cannot fail.
            let _ = session.channels.subscribe(channel, None, None, None);
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
                self.channels.subscribe(channel, since, epoch, id)
            }
            Request::Unsubscribe { channel, id } => {
                let channel = parse_channel(&channel, &id)?;
                self.channels.unsubscribe(&channel, &id)?;
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
                let key = parse_idempotency_key(idempotency_key, &id)?;
                self.channels.publish(channel, msg, key, id)
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
                self.channels.spawn_history(channel, query, limit, id)
            }
            Request::Presence { channel, id } => {
                let channel = parse_channel(&channel, &id)?;
                self.channels.spawn_presence(channel, id)
            }
            Request::Ping { id } => {
                replies.send_text(&ServerMessage::Pong { id: id.as_ref() }.to_json());
                Ok(())
            }
            Request::Refresh { token, id } => {
                let (exp, left) = self.channels.refresh(&token, &id)?;
                let reply = ServerMessage::Refreshed {
                    exp,
                    id: id.as_ref(),
                };
                replies.send_text(&reply.to_json());
                for channel in left {
                    let notice = ServerMessage::Unsubscribed {
                        channel: channel.as_str(),
                        id: None,
                    };
                    replies.send_text(&notice.to_json());
                }
                Ok(())
            }
        }
    }
}

impl MessageHandler for ChatSession {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.channels.poll_ready(cx)
    }

    fn is_subscribed(&self) -> bool {
        self.channels.is_subscribed_anywhere()
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
                Some(channel) => self.channels.publish(channel, msg, None, None),
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
                    retry_after_ms: error.retry_after_ms,
                };
                replies.send_text(&reply.to_json());
                Ok(())
            }
            Err(Failure::RateExceeded) => Err(CloseFrame::new(
                CloseCode::POLICY_VIOLATION,
                "publish rate limit exceeded",
            )),
        }
    }
}

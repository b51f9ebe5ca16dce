//! The channels over Socket.IO: the event contract of `docs/protocol.md`
//! on the main namespace, mirroring the native protocol.
//!
//! Client events: `join {channel, since?}`, `leave {channel}`,
//! `publish {channel, msg, idempotency_key?}`, `history {channel, since?,
//! limit?}` and `presence {channel}`, each answered through its
//! acknowledgement. Server events: `message`, `join`, `leave` and `error`
//! (a failed request that asked for no acknowledgement).

use bytes::Bytes;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use switchboard_core::history::HistoryQuery;
use switchboard_core::hub::SubscriberHandle;
use switchboard_core::recovery::RecoveryPositions;
use switchboard_core::wire::{SocketIoEvents, Wire};
use switchboard_core::{ChannelName, Node, Username};
use switchboard_proto::native::{ErrorCode, RequestId, ServerMessage};
use switchboard_proto::socketio;

use super::namespaces::{Connected, Event, Namespaces, Refusal};
use super::recovery::{Pid, Recovery, Resumed};
use super::session::{Fatal, Session};
use crate::access::token::TokenError;
use crate::access::{Access, AccessError, Admission, Grant, token_expired};
use crate::transport::channel_session::{
    ChannelSession, Failure, SessionLimits, history_limit, parse_channel, parse_idempotency_key,
    request_error, send_error, send_request_error,
};

/// Who the handshake says the client is, from the query string; version 4
/// clients may say it in `auth` instead.
#[derive(Debug, Default)]
pub struct Handshake {
    pub user: Option<String>,
    pub channel: Option<String>,
    /// With `--auth token`: the grant of the handshake's token (`?token=`
    /// or `Authorization: Bearer`), if it had one.
    pub grant: Option<Grant>,
}

/// The `auth` of a version 4 connection: who, and the session to recover.
#[derive(Debug, Default, Deserialize)]
struct Auth {
    user: Option<String>,
    channel: Option<String>,
    pid: Option<String>,
    offset: Option<String>,
    /// A connection token (`--auth token`); wins over the handshake's.
    token: Option<String>,
}

/// The main namespace of one session.
pub struct ChatNamespaces {
    node: Arc<Node>,
    access: Arc<Access>,
    /// The handshake's query and the session's limits, until `/` is
    /// connected: then its connection holds them.
    before_connect: Option<Box<(Handshake, SessionLimits)>>,
    /// Connection-state recovery, for sessions that may use it (version 4,
    /// unless `--socketio-recovery off`).
    recovery: Option<Arc<Recovery>>,
    /// Set while `/` is connected.
    connected: Option<Connection>,
}

/// The main namespace while connected.
struct Connection {
    channels: ChannelSession,
    /// The session under its recovery id, and where it stands.
    recoverable: Option<(Pid, Arc<RecoveryPositions>)>,
    /// What to subscribe once the connection is answered: the channel named
    /// at connect, or a recovered session's channels. Boxed, and gone
    /// once done: an idle session holds a word for it.
    rejoin: Option<Box<Rejoin>>,
}

enum Rejoin {
    Channel(ChannelName),
    Recovered(Resumed),
}

impl ChatNamespaces {
    pub fn new(
        node: Arc<Node>,
        access: Arc<Access>,
        query: Handshake,
        limits: SessionLimits,
        recovery: Option<Arc<Recovery>>,
    ) -> Self {
        ChatNamespaces {
            node,
            access,
            before_connect: Some(Box::new((query, limits))),
            recovery,
            connected: None,
        }
    }

    /// Leaves `/`: the session may be recovered for a while.
    fn end(&mut self) {
        let Some(connection) = self.connected.take() else {
            return;
        };
        if let (Some(recovery), Some((pid, positions))) = (&self.recovery, &connection.recoverable)
        {
            let username = connection.channels.me().username.clone();
            recovery.ended(*pid, username, positions.joined_at());
        }
    }
}

impl Drop for ChatNamespaces {
    fn drop(&mut self) {
        self.end();
    }
}

#[derive(Deserialize)]
struct JoinArgs {
    channel: String,
    since: Option<u64>,
}

#[derive(Deserialize)]
struct ChannelArgs {
    channel: String,
}

#[derive(Deserialize)]
struct PublishArgs {
    channel: String,
    msg: String,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct RefreshArgs {
    token: String,
}

#[derive(Deserialize)]
struct HistoryArgs {
    channel: String,
    since: Option<u64>,
    limit: Option<u64>,
}

/// The event's first argument as `T`.
fn args<T: DeserializeOwned>(event: &Event<'_>, id: &Option<RequestId>) -> Result<T, Failure> {
    let first = event.args.first().map_or("null", |a| a.get());
    serde_json::from_str(first).map_err(|e| {
        request_error(
            ErrorCode::BadRequest,
            format!("{}: {e}", event.name),
            id.clone(),
        )
    })
}

impl Namespaces for ChatNamespaces {
    fn connect(
        &mut self,
        namespace: &str,
        auth: Option<&RawValue>,
        session: &Session,
    ) -> Result<Connected, Refusal> {
        if namespace != "/" {
            return Err(Refusal::from(format!(
                "namespace {namespace} does not exist: switchboard serves its channels on /"
            )));
        }
        let Some((query, _)) = self.before_connect.as_deref_mut() else {
            return Err(Refusal::from(
                "the main namespace was connected already".to_owned(),
            ));
        };
        let auth: Auth = auth
            .and_then(|a| serde_json::from_str(a.get()).ok())
            .unwrap_or_default();
        let admission =
            admit(&self.access, auth.token.as_deref(), query.grant.take()).map_err(refusal)?;
        let username = match (
            admission.username(),
            auth.user.or_else(|| query.user.clone()),
        ) {
            (Some(name), _) => name.clone(),
            (None, None) => Username::guest(),
            (None, Some(name)) if name.is_empty() => Username::guest(),
            (None, Some(name)) => Username::parse(&name).map_err(|e| e.to_string())?,
        };
        let default_channel = auth
            .channel
            .or_else(|| query.channel.clone())
            .filter(|c| !c.is_empty())
            .map(|c| ChannelName::parse(&c))
            .transpose()
            .map_err(|e| e.to_string())?;
        if let Some(channel) = &default_channel {
            admission.check_subscribe(channel).map_err(refusal)?;
        }
        let resumed = match (&self.recovery, auth.pid.as_deref().and_then(Pid::parse)) {
            (Some(recovery), Some(pid)) => recovery
                .resume(pid, auth.offset.as_deref(), &username)
                .map(|resumed| (pid, resumed)),
            _ => None,
        };
        let recoverable = self.recovery.as_ref().map(|_| {
            let pid = resumed.as_ref().map_or_else(Pid::random, |(pid, _)| *pid);
            (pid, RecoveryPositions::new())
        });
        let me = SubscriberHandle {
            id: session.id(),
            username,
            outbox: session.outbox.clone(),
            wire: Wire::SocketIo(SocketIoEvents {
                recovery_offsets: recoverable.is_some(),
            }),
            in_presence: true,
            recovery: recoverable.as_ref().map(|(_, positions)| positions.clone()),
        };
        let rejoin = match (resumed, default_channel) {
            (Some((_, resumed)), _) => Some(Rejoin::Recovered(resumed)),
            (None, Some(channel)) => Some(Rejoin::Channel(channel)),
            (None, None) => None,
        };
        let pid = recoverable.as_ref().map(|(pid, _)| pid.to_string().into());
        let (_, limits) = *self.before_connect.take().expect("checked above");
        let permits = self.access.permits(admission, disconnect_on_expiry(&me));
        self.connected = Some(Connection {
            channels: ChannelSession::new(self.node.clone(), me, limits, permits),
            recoverable,
            rejoin: rejoin.map(Box::new),
        });
        Ok(Connected { pid })
    }

    fn connected(&mut self, _namespace: &str, session: &Session, reply: Bytes) {
        let Some(connection) = &mut self.connected else {
            return session.send_frame(reply);
        };
        if let (Some(recovery), Some((pid, _))) = (&self.recovery, &connection.recoverable) {
            recovery.live(*pid);
        }
        // Subscribing cannot fail on a new session (nothing is subscribed,
        // and a recovered one has at most its former channels).
        match connection.rejoin.take().map(|rejoin| *rejoin) {
            None => session.send_frame(reply),
            // CONNECT once the channel's start is fixed: what the client
            // publishes, or anyone else does, after it is delivered to it.
            Some(Rejoin::Channel(channel)) => {
                let _ = connection.channels.subscribe_after(channel, reply);
            }
            // Replayed from the recovery offsets: nothing can fall between.
            Some(Rejoin::Recovered(resumed)) => {
                session.send_frame(reply);
                for (channel, offset) in resumed.channels {
                    // Refused only if the token no longer allows it.
                    if let Err(Failure::Request(error)) =
                        connection
                            .channels
                            .subscribe(channel, Some(offset), None, None)
                    {
                        let me = connection.channels.me();
                        send_error(me, error.code, &error.reason, None);
                    }
                }
            }
        }
    }

    fn disconnect(&mut self, _namespace: &str) {
        self.end();
    }

    fn is_subscribed(&self) -> bool {
        self.connected
            .as_ref()
            .is_some_and(|connection| connection.channels.is_subscribed_anywhere())
    }

    fn event(&mut self, event: Event<'_>, _session: &Session) -> Result<(), Fatal> {
        let Some(Connection { channels, .. }) = self.connected.as_mut() else {
            return Ok(());
        };
        let id = event.ack.map(RequestId::from);
        let outcome = if event.attachments.is_empty() {
            handle(channels, &event, id.clone())
        } else {
            Err(request_error(
                ErrorCode::BadRequest,
                "binary attachments are not supported: send JSON",
                id.clone(),
            ))
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Request(error)) => {
                send_request_error(channels.me(), &error);
                Ok(())
            }
            Err(Failure::RateExceeded) => Err(Fatal("publish rate limit exceeded".into())),
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.connected {
            Some(connection) => connection.channels.poll_ready(cx),
            None => Poll::Ready(()),
        }
    }
}

/// One event of the contract.
fn handle(
    channels: &mut ChannelSession,
    event: &Event<'_>,
    id: Option<RequestId>,
) -> Result<(), Failure> {
    match event.name.as_str() {
        "join" => {
            let JoinArgs { channel, since } = args(event, &id)?;
            let channel = parse_channel(&channel, &id)?;
            if channels.is_subscribed(&channel) {
                channels.spawn_rejoin_reply(channel, id);
                return Ok(());
            }
            channels.subscribe(channel, since, None, id)
        }
        "leave" => {
            let ChannelArgs { channel } = args(event, &id)?;
            let channel = parse_channel(&channel, &id)?;
            channels.unsubscribe(&channel, &id)?;
            reply(channels.me(), id.as_ref(), |id| {
                ServerMessage::Unsubscribed {
                    channel: channel.as_str(),
                    id,
                }
            });
            Ok(())
        }
        "publish" => {
            let PublishArgs {
                channel,
                msg,
                idempotency_key,
            } = args(event, &id)?;
            let channel = parse_channel(&channel, &id)?;
            let key = parse_idempotency_key(idempotency_key, &id)?;
            channels.publish(channel, msg, key, id)
        }
        "history" => {
            let HistoryArgs {
                channel,
                since,
                limit,
            } = args(event, &id)?;
            let channel = parse_channel(&channel, &id)?;
            let limit = history_limit(limit.map(|l| l as usize))
                .map_err(|reason| request_error(ErrorCode::InvalidLimit, reason, id.clone()))?;
            let query = since.map_or(HistoryQuery::Latest, HistoryQuery::Since);
            channels.spawn_history(channel, query, limit, id)
        }
        "presence" => {
            let ChannelArgs { channel } = args(event, &id)?;
            let channel = parse_channel(&channel, &id)?;
            channels.spawn_presence(channel, id)
        }
        "refresh" => {
            let RefreshArgs { token } = args(event, &id)?;
            let (exp, left) = channels.refresh(&token, &id)?;
            reply(channels.me(), id.as_ref(), |id| ServerMessage::Refreshed {
                exp,
                id,
            });
            let me = channels.me();
            for channel in left {
                let notice = serde_json::json!({ "channel": channel.as_str() }).to_string();
                let packet = socketio::main_namespace_event("unsubscribed", &notice, None);
                let _ = me.outbox.try_push(me.wire.encode_text(&packet));
            }
            Ok(())
        }
        other => Err(request_error(
            ErrorCode::UnknownType,
            format!(
                "unknown event {other:?}; expected join, leave, publish, history, presence or refresh"
            ),
            id,
        )),
    }
}

/// Who connects: with tokens, the holder of `auth.token`, else of the
/// handshake's token; a connection with neither is refused.
fn admit(
    access: &Access,
    auth_token: Option<&str>,
    handshake: Option<Grant>,
) -> Result<Admission, AccessError> {
    if !access.tokens_required() {
        return Ok(Admission::Anonymous);
    }
    match (auth_token, handshake) {
        (Some(token), _) => access.admit_token(token),
        (None, Some(grant)) => Ok(Admission::Token(grant)),
        (None, None) => Err(AccessError::Token(TokenError::Missing)),
    }
}

/// A `CONNECT_ERROR` whose `data.code` is the refusal's.
fn refusal(error: AccessError) -> Refusal {
    Refusal {
        message: error.to_string(),
        data: Some(serde_json::json!({ "code": error.code() })),
    }
}

/// How long a session told of its expiry has to take the DISCONNECT.
const DISCONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// When the token expires: the namespace is disconnected (the client does
/// not reconnect by itself) and the session closed with 1008.
fn disconnect_on_expiry(me: &SubscriberHandle) -> Box<dyn FnOnce() + Send> {
    let me = me.clone();
    Box::new(move || disconnect_by_server(&me, token_expired()))
}

/// Ends a session from the server's side: a Socket.IO DISCONNECT of `/`,
/// so the client does not reconnect by itself, then `close` a moment later.
pub fn disconnect_by_server(me: &SubscriberHandle, close: switchboard_ws::CloseFrame) {
    let outbox = me.outbox.clone();
    // An Engine.IO message (`4`) carrying the Socket.IO DISCONNECT of `/`.
    let packet = socketio::encode(socketio::PacketType::Disconnect, "/", 0, None, None);
    let _ = outbox.try_push(me.wire.encode_text(&format!("4{packet}")));
    // A long poll takes the DISCONNECT only if the session is still there
    // when it comes back: the session ends a moment later (the client,
    // told, usually closes it first).
    tokio::spawn(async move {
        tokio::time::sleep(DISCONNECT_GRACE).await;
        outbox.close(close);
    });
}

fn reply<'a>(
    me: &SubscriberHandle,
    id: Option<&'a RequestId>,
    message: impl FnOnce(Option<&'a RequestId>) -> ServerMessage<'a>,
) {
    if let Some(frame) = me.wire.encode_reply(id, message) {
        let _ = me.outbox.try_push(frame);
    }
}

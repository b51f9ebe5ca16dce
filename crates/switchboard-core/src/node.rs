//! The node: the facade every transport calls (publish, subscribe, history,
//! presence).
//!
//! A publish is acknowledged and delivered only after the store has made it
//! durable: appends queue for the group-commit writer
//! ([`crate::group_commit`]), which commits many in one transaction. A
//! subscription joins the hub first and then replays history, so nothing
//! falls between the two. Retention runs in the background
//! ([`crate::retention`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::Publication;
use switchboard_proto::native::{RequestId, ServerMessage};
use switchboard_proto::sse;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, ChannelEvent, MemoryBroker};
use crate::channel::ChannelName;
use crate::durability::{SyncPolicy, SyncWindow};
use crate::group_commit::{self, AppendRequest, WriterConfig};
use crate::history::{
    HistoryError, HistoryPage, HistoryQuery, HistoryStore, NewMessage, Retention, SqliteHistory,
    StreamPosition,
};
use crate::hub::{ConnectionId, Hub, SubscribeError, SubscriberHandle, push_or_close};
use crate::idempotency::{IdempotencyKey, KeyRetention};
use crate::outbox::PushError;
use crate::pipeline::PipelineStats;
use crate::redis::{RedisBroker, RedisConfig, RedisHistory};
use crate::retention::run_retention;
use crate::user::Username;
use crate::wire::{EventKind, SharedFrame};

/// Node settings; every one has a flag in the server.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Longest `msg` accepted, in bytes.
    pub max_msg_bytes: usize,
    /// How much history each channel keeps.
    pub retention: Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Publishes that may wait for the writer before new ones are refused.
    pub append_queue: usize,
    /// Most messages committed in one transaction.
    pub max_batch: usize,
    /// Whether a commit is fsynced before delivery or only before the ack.
    pub sync: SyncPolicy,
    /// Least time between the starts of two commits; a batch ready sooner
    /// waits, taking in what arrives meanwhile (zero: never wait).
    pub commit_interval: Duration,
    /// How long and how many idempotency keys the store remembers.
    pub idempotency: KeyRetention,
}

/// Messages read from history per page while replaying a subscription.
const REPLAY_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("msg is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("too many messages waiting to be stored; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Storage(#[from] HistoryError),
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error(transparent)]
    Storage(#[from] HistoryError),
    #[error("connection closed")]
    Closed,
}

impl From<PushError> for NodeError {
    fn from(_: PushError) -> Self {
        NodeError::Closed
    }
}

/// Who hears that a message was stored.
#[derive(Debug)]
pub enum AckTarget {
    /// An `ack` frame into a connection's outbox.
    Connection {
        subscriber: SubscriberHandle,
        id: Option<RequestId>,
    },
    /// A waiting caller (the HTTP publish API).
    Reply(oneshot::Sender<Result<Arc<Publication>, PublishError>>),
}

impl AckTarget {
    pub fn succeed(self, publication: &Arc<Publication>) {
        match self {
            AckTarget::Connection { subscriber, id } => {
                let ack = subscriber
                    .wire
                    .encode_reply(id.as_ref(), |id| ServerMessage::Ack {
                        id,
                        channel: &publication.channel,
                        offset: publication.offset,
                        time: publication.time,
                    });
                if let Some(frame) = ack {
                    push_or_close(&subscriber.outbox, frame);
                }
            }
            AckTarget::Reply(reply) => {
                let _ = reply.send(Ok(publication.clone()));
            }
        }
    }

    pub(crate) fn fail(self, error: &Arc<HistoryError>) {
        match self {
            AckTarget::Connection { subscriber, id } => {
                let reason = error.to_string();
                let message =
                    subscriber
                        .wire
                        .encode_reply(id.as_ref(), |id| ServerMessage::Error {
                            code: storage_error_code(error),
                            reason: &reason,
                            id,
                            retry_after_ms: None,
                        });
                if let Some(frame) = message {
                    push_or_close(&subscriber.outbox, frame);
                }
            }
            AckTarget::Reply(reply) => {
                let _ = reply.send(Err(PublishError::Storage(HistoryError::Shared(
                    error.clone(),
                ))));
            }
        }
    }
}

/// The error code for a failed store: `unavailable` when it could not be
/// reached, else `internal`.
pub fn storage_error_code(error: &HistoryError) -> switchboard_proto::native::ErrorCode {
    use switchboard_proto::native::ErrorCode;
    if error.is_unavailable() {
        ErrorCode::Unavailable
    } else {
        ErrorCode::Internal
    }
}

impl NodeError {
    /// The error code a client is sent for this failure.
    pub fn code(&self) -> switchboard_proto::native::ErrorCode {
        match self {
            NodeError::Storage(e) => storage_error_code(e),
            _ => switchboard_proto::native::ErrorCode::Internal,
        }
    }
}

/// What a new subscription sends before its replay.
#[derive(Debug)]
pub enum Greeting {
    /// The native protocol: a `subscribed` reply. A `since` from another
    /// `epoch` replays everything retained.
    Subscribed {
        id: Option<RequestId>,
        epoch: Option<String>,
        presence: Vec<String>,
        /// A frame to send first, once the subscription's start is fixed
        /// (a Socket.IO CONNECT: whatever the client does after it, it
        /// does after the start), or at the failure, if it fails.
        prelude: Option<bytes::Bytes>,
    },
    /// An event stream (SSE): the presence list as an event, and an
    /// `event: reset` when the resume point is no longer in history (trimmed,
    /// or beyond the latest offset because the channel was reset).
    EventStream { presence: Vec<String> },
}

impl Greeting {
    fn without_prelude(self) -> (Greeting, Option<bytes::Bytes>) {
        match self {
            Greeting::Subscribed {
                id,
                epoch,
                presence,
                prelude,
            } => (
                Greeting::Subscribed {
                    id,
                    epoch,
                    presence,
                    prelude: None,
                },
                prelude,
            ),
            stream => (stream, None),
        }
    }
}

/// The `reset` event for a stream resuming after `since` whose first page
/// of history is `page`, if messages after `since` are missing from it.
fn reset_event(
    subscriber: &SubscriberHandle,
    channel: &ChannelName,
    since: u64,
    page: &HistoryPage,
    position: &StreamPosition,
) -> Option<bytes::Bytes> {
    let first_offset = page
        .messages
        .first()
        .map_or(position.offset + 1, |m| m.offset);
    let beyond_latest = since > position.offset;
    if first_offset <= since + 1 && !beyond_latest {
        return None;
    }
    let reset = sse::Reset {
        kind: "reset",
        channel: channel.as_str(),
        since,
        first_offset,
        last_offset: position.offset,
        epoch: &position.epoch,
    };
    let json = serde_json::to_string(&reset).expect("serializes");
    Some(
        subscriber
            .wire
            .encode_event(channel, EventKind::Reset, json),
    )
}

/// The reply to a subscription in `wire`'s protocol (`subscribed`, or a
/// Socket.IO `join` acknowledgement): the channel's position and presence.
pub fn subscribed_reply(
    wire: &crate::wire::Wire,
    id: Option<&RequestId>,
    channel: &ChannelName,
    position: &StreamPosition,
    presence: &[String],
) -> Option<bytes::Bytes> {
    wire.encode_reply(id, |id| ServerMessage::Subscribed {
        channel: channel.as_str(),
        epoch: &position.epoch,
        offset: position.offset,
        presence,
        id,
    })
}

/// Queues one replayed message, waiting for room: with its position beside
/// it for an outbox that keeps them, through the recovery positions of a
/// session that has them.
async fn push_replayed(
    subscriber: &SubscriberHandle,
    frame: &SharedFrame,
) -> Result<(), PushError> {
    let outbox = &subscriber.outbox;
    match &subscriber.recovery {
        Some(tracked) => {
            outbox
                .push_when_room_with(|| tracked.try_push(subscriber, frame))
                .await
        }
        None => {
            let position = frame.position().filter(|_| outbox.keeps_positions());
            outbox
                .push_when_room_at(frame.frame_for(&subscriber.wire), position)
                .await
        }
    }
}

/// A channel as `GET /api/channels` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub channel: String,
    pub subscribers: usize,
    pub last_offset: u64,
}

/// The engine facade.
pub struct Node {
    hub: Arc<Hub>,
    history: Arc<dyn HistoryStore>,
    broker: Arc<dyn Broker>,
    appends: mpsc::Sender<AppendRequest>,
    config: NodeConfig,
    /// The sync window under `--sync before-ack`.
    window: Option<Arc<SyncWindow>>,
    pipeline: Arc<PipelineStats>,
}

impl Node {
    /// The embedded default: SQLite history in `data_dir`, in-process broker.
    pub fn embedded(config: NodeConfig, data_dir: &Path) -> Result<Arc<Node>, HistoryError> {
        let history = Arc::new(SqliteHistory::open_with(data_dir, config.idempotency)?);
        let hub = Arc::new(Hub::default());
        let broker = Arc::new(MemoryBroker::default());
        broker.attach(hub.clone());
        let pipeline = Arc::new(PipelineStats::with_metrics(hub.metrics().clone()));
        Node::start(config, hub, history, broker, pipeline)
    }

    /// A node of the Redis engine: history, offsets and presence shared
    /// with every node on the same Redis (and `prefix`).
    pub async fn redis(config: NodeConfig, redis: &RedisConfig) -> Result<Arc<Node>, HistoryError> {
        let connection = crate::redis::Redis::connect(redis).await?;
        let history = Arc::new(RedisHistory::new(
            connection.clone(),
            config.retention.max_count,
            config.idempotency,
        ));
        let hub = Arc::new(Hub::default());
        let pipeline = Arc::new(PipelineStats::with_metrics(hub.metrics().clone()));
        let broker = Arc::new(RedisBroker::start(
            connection,
            history.clone(),
            hub.clone(),
            pipeline.clone(),
            redis.node_ttl,
        ));
        Node::start(config, hub, history, broker, pipeline)
    }

    /// Builds a node from its parts and starts its writer thread and
    /// background tasks. The broker must already deliver to `hub` (and
    /// time its fan-outs in `pipeline`).
    pub fn start(
        config: NodeConfig,
        hub: Arc<Hub>,
        history: Arc<dyn HistoryStore>,
        broker: Arc<dyn Broker>,
        pipeline: Arc<PipelineStats>,
    ) -> Result<Arc<Node>, HistoryError> {
        let writer = group_commit::start(
            WriterConfig {
                append_queue: config.append_queue,
                max_batch: config.max_batch,
                commit_interval: config.commit_interval,
                sync: config.sync,
            },
            history.clone(),
            broker.clone(),
            pipeline.clone(),
        )?;
        tokio::spawn(run_retention(
            Arc::downgrade(&history),
            config.retention,
            config.retention_interval,
        ));
        Ok(Arc::new(Node {
            hub,
            history,
            broker,
            appends: writer.appends,
            config,
            window: writer.window,
            pipeline,
        }))
    }

    /// Waits until every delivered message is durable and lifts the
    /// store's guard, so a restart need not move offsets forward. For a
    /// clean stop, once no connection can publish; a no-op unless
    /// `--sync before-ack`.
    pub async fn settle_history(&self) -> Result<(), HistoryError> {
        let Some(window) = self.window.clone() else {
            return Ok(());
        };
        let history = self.history.clone();
        tokio::task::spawn_blocking(move || window.settle(&*history))
            .await
            .map_err(|e| HistoryError::io("settle task failed", e.into()))?
    }

    /// The node is stopping, its connections closed: what it holds in a
    /// shared store (its users' presence in Redis) goes now.
    pub async fn stop(&self) {
        self.broker.stop().await;
    }

    /// Where published messages spend their time (`GET /api/pipeline`).
    pub fn pipeline(&self) -> &PipelineStats {
        &self.pipeline
    }

    /// Messages to other nodes on the same engine (Redis only).
    pub fn relay(&self) -> Option<crate::redis::Relay> {
        self.broker.relay()
    }

    /// Whether the engine is shared with other nodes (Redis).
    pub fn spans_nodes(&self) -> bool {
        self.broker.spans_nodes()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Queues a message for durable storage, then delivery and `ack`. With
    /// an idempotency key already used by `username` in `channel` within the
    /// window, nothing is stored or delivered and the ack repeats the first.
    pub fn publish(
        &self,
        channel: ChannelName,
        username: Username,
        msg: String,
        idempotency_key: Option<IdempotencyKey>,
        ack: AckTarget,
    ) -> Result<(), PublishError> {
        if msg.len() > self.config.max_msg_bytes {
            return Err(PublishError::TooLarge {
                len: msg.len(),
                limit: self.config.max_msg_bytes,
            });
        }
        let request = AppendRequest {
            message: NewMessage {
                channel,
                username,
                msg,
                time: 0,
                idempotency_key,
            },
            ack,
            accepted: std::time::Instant::now(),
        };
        self.appends
            .try_send(request)
            .map_err(|_| PublishError::Overloaded)
    }

    /// Adds a connection to a channel, announcing a `join` if it is the
    /// user's first connection there. The subscriber holds live messages
    /// until [`Node::catch_up`] has sent `subscribed` and any replay.
    /// Returns the presence list.
    pub fn join(
        &self,
        subscriber: &SubscriberHandle,
        channel: &ChannelName,
    ) -> Result<Vec<String>, SubscribeError> {
        // Joining the hub comes first: whatever is stored after this point
        // also arrives live, so the replay that follows cannot leave a gap.
        let joined = self.hub.subscribe(channel, subscriber.clone())?;
        self.broker.watch(channel);
        if joined.first_for_user {
            self.broker.publish(ChannelEvent::Join {
                channel: channel.clone(),
                username: subscriber.username.clone(),
            });
        }
        Ok(joined.presence)
    }

    /// Completes a [`Node::join`]: the greeting, then (with `since`) every
    /// stored message after it, then live messages — no gap, no duplicate.
    /// On failure (the store unreachable) the join is undone.
    pub async fn catch_up(
        &self,
        subscriber: SubscriberHandle,
        channel: ChannelName,
        since: Option<u64>,
        greeting: Greeting,
    ) -> Result<(), NodeError> {
        let id = subscriber.id;
        let outbox = subscriber.outbox.clone();
        let (greeting, mut prelude) = greeting.without_prelude();
        let result = self
            .try_catch_up(subscriber, &channel, since, greeting, &mut prelude)
            .await;
        if let Err(NodeError::Storage(_)) = &result {
            self.unsubscribe(&channel, id);
        }
        if let Some(prelude) = prelude {
            // The failure, or an error, comes after it.
            let _ = outbox.push_when_room(prelude).await;
        }
        result
    }

    async fn try_catch_up(
        &self,
        subscriber: SubscriberHandle,
        channel: &ChannelName,
        since: Option<u64>,
        greeting: Greeting,
        prelude: &mut Option<bytes::Bytes>,
    ) -> Result<(), NodeError> {
        let channel = channel.clone();
        // Live messages from other nodes first, so the replay below meets them.
        self.broker.ready(&channel).await?;
        let greeting = self.with_cluster_presence(&channel, greeting).await?;
        let position = self.history.position(&channel).await?;
        let outbox = &subscriber.outbox;
        // For an event stream, the offset the client asked for (`reset`
        // reports it); `since` becomes where the replay starts.
        let (since, requested) = match greeting {
            Greeting::Subscribed {
                id,
                epoch,
                presence,
                ..
            } => {
                if let Some(prelude) = prelude.take() {
                    outbox.push_when_room(prelude).await?;
                }
                let subscribed = subscribed_reply(
                    &subscriber.wire,
                    id.as_ref(),
                    &channel,
                    &position,
                    &presence,
                );
                if let Some(frame) = subscribed {
                    outbox.push_when_room(frame).await?;
                }
                // An offset from another epoch means nothing: replay everything kept.
                let since = match (since, epoch) {
                    (Some(_), Some(epoch)) if epoch != position.epoch => Some(0),
                    (since, _) => since.map(|s| s.min(position.offset)),
                };
                (since, None)
            }
            Greeting::EventStream { presence } => {
                let event = sse::Presence {
                    kind: "presence",
                    channel: channel.as_str(),
                    users: &presence,
                    offset: position.offset,
                };
                let json = serde_json::to_string(&event).expect("serializes");
                outbox
                    .push_when_room(subscriber.wire.encode_event(
                        &channel,
                        EventKind::Presence,
                        json,
                    ))
                    .await?;
                // Beyond the latest offset: the channel was reset since the
                // client was here; everything retained is new to it.
                let start = since.map(|s| if s > position.offset { 0 } else { s });
                (start, since)
            }
        };
        if let Some(tracked) = &subscriber.recovery {
            tracked.start(&channel, since.unwrap_or(position.offset));
        }
        let mut delivered = position.offset;
        if let Some(since) = since {
            let replayed = self
                .replay(
                    &subscriber,
                    &channel,
                    since,
                    requested.map(|r| (r, &position)),
                )
                .await?;
            delivered = delivered.max(replayed);
        }
        self.hub.go_live(&channel, subscriber.id, delivered);
        Ok(())
    }

    /// Sends every stored message after `since`; returns the last offset
    /// sent (or `since`). With `resume` (the offset a stream asked for, and
    /// the channel's position), a resume point that history no longer
    /// covers is announced first with `event: reset`.
    async fn replay(
        &self,
        subscriber: &SubscriberHandle,
        channel: &ChannelName,
        since: u64,
        resume: Option<(u64, &StreamPosition)>,
    ) -> Result<u64, NodeError> {
        let outbox = &subscriber.outbox;
        let mut cursor = since;
        let mut first_page = true;
        loop {
            let page = self
                .history
                .read(channel, HistoryQuery::Since(cursor), REPLAY_PAGE)
                .await?;
            if let Some((requested, position)) = resume.filter(|_| first_page)
                && let Some(reset) = reset_event(subscriber, channel, requested, &page, position)
            {
                outbox.push_when_room(reset).await?;
            }
            first_page = false;
            for message in &page.messages {
                let kind = EventKind::Message {
                    offset: message.offset,
                };
                let json = ServerMessage::Message(message).to_json();
                let frame = SharedFrame::new(channel.clone(), kind, json);
                push_replayed(subscriber, &frame).await?;
                cursor = message.offset;
            }
            if page.messages.len() < REPLAY_PAGE {
                return Ok(cursor);
            }
        }
    }

    /// A greeting whose presence list covers every node, when the broker
    /// spans nodes (with this node's own, which Redis may not have yet).
    async fn with_cluster_presence(
        &self,
        channel: &ChannelName,
        greeting: Greeting,
    ) -> Result<Greeting, HistoryError> {
        Ok(match greeting {
            Greeting::Subscribed {
                id,
                epoch,
                presence,
                prelude,
            } => Greeting::Subscribed {
                id,
                epoch,
                presence: self.merge_presence(channel, presence).await?,
                prelude,
            },
            Greeting::EventStream { presence } => Greeting::EventStream {
                presence: self.merge_presence(channel, presence).await?,
            },
        })
    }

    async fn merge_presence(
        &self,
        channel: &ChannelName,
        mut local: Vec<String>,
    ) -> Result<Vec<String>, HistoryError> {
        if let Some(everywhere) = self.broker.presence(channel).await? {
            local.extend(everywhere);
            local.sort_unstable();
            local.dedup();
        }
        Ok(local)
    }

    /// Ends one subscription, announcing a `leave` if it was the user's last.
    pub fn unsubscribe(&self, channel: &ChannelName, id: ConnectionId) {
        let Some(left) = self.hub.unsubscribe(channel, id) else {
            return;
        };
        self.broker.unwatch(channel);
        if let Some(username) = left {
            self.broker.publish(ChannelEvent::Leave {
                channel: channel.clone(),
                username,
            });
        }
    }

    /// A channel's epoch and latest offset.
    /// What the node counts, for the metrics endpoint.
    pub fn metrics(&self) -> &Arc<crate::metrics::NodeMetrics> {
        self.hub.metrics()
    }

    /// Whether the engine's store (SQLite, or Redis) answers now.
    pub async fn ping(&self) -> Result<(), HistoryError> {
        self.history.ping().await
    }

    pub async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError> {
        self.history.position(channel).await
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        self.history
            .read(channel, query, limit)
            .await
            .inspect_err(|_| self.metrics().store_errors.inc())
    }

    /// Usernames online in `channel`, sorted: on every node, with the
    /// Redis engine.
    pub async fn presence(&self, channel: &ChannelName) -> Result<Vec<String>, HistoryError> {
        self.merge_presence(channel, self.hub.presence(channel))
            .await
    }

    /// The connections of `username` subscribed to something on this node.
    pub fn connections_of(&self, username: &Username) -> Vec<SubscriberHandle> {
        self.hub.connections_of(username)
    }

    /// Every channel with history or subscribers.
    pub async fn channels(&self) -> Result<Vec<ChannelSummary>, HistoryError> {
        let mut counts = self.hub.subscriber_counts();
        let mut summaries: Vec<ChannelSummary> = self
            .history
            .channels()
            .await?
            .into_iter()
            .map(|info| ChannelSummary {
                subscribers: counts.remove(&info.channel).unwrap_or(0),
                channel: info.channel,
                last_offset: info.last_offset,
            })
            .collect();
        summaries.extend(
            counts
                .into_iter()
                .map(|(channel, subscribers)| ChannelSummary {
                    channel,
                    subscribers,
                    last_offset: 0,
                }),
        );
        summaries.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(summaries)
    }
}

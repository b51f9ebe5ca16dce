//! The node: the facade every transport calls (publish, subscribe, history,
//! presence), and what runs behind it: group commit of appends, and
//! retention.
//!
//! A publish is acknowledged and delivered only after the store has made it
//! durable. Appends queue for one writer thread, which takes everything
//! queued (up to a batch limit) and commits it in one transaction: one fsync
//! for many messages. Under [`SyncPolicy::BeforeAck`] delivery comes right
//! after the write and only the ack waits for the fsync, which a thread of
//! its own runs behind the writer (see [`crate::durability`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::Publication;
use switchboard_proto::message::now_millis;
use switchboard_proto::native::{RequestId, ServerMessage};
use switchboard_proto::sse;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, ChannelEvent, MemoryBroker};
use crate::channel::ChannelName;
use crate::durability::{SyncPolicy, SyncWindow, Unsynced, run_syncer};
use crate::history::{
    HistoryError, HistoryPage, HistoryQuery, HistoryStore, NewMessage, Retention, SqliteHistory,
    Stored, StreamPosition,
};
use crate::hub::{ConnectionId, Hub, SubscribeError, SubscriberHandle, push_or_close};
use crate::idempotency::{IdempotencyKey, KeyRetention};
use crate::outbox::{HeldWakes, PushError, defer_wakes};
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

/// Most messages in a group commit whose subscribers are written through
/// by the writer (see `GroupCommit::send`). At a steady pace batches hold
/// one or two messages; flat out, dozens.
const WRITE_THROUGH_MAX_BATCH: usize = 8;

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
    pub(crate) fn succeed(self, publication: &Arc<Publication>) {
        match self {
            AckTarget::Connection { subscriber, id } => {
                let ack = ServerMessage::Ack {
                    id: id.as_ref(),
                    channel: &publication.channel,
                    offset: publication.offset,
                    time: publication.time,
                };
                let frame = subscriber.wire.encode_text(&ack.to_json());
                push_or_close(&subscriber.outbox, frame);
            }
            AckTarget::Reply(reply) => {
                let _ = reply.send(Ok(publication.clone()));
            }
        }
    }

    pub(crate) fn fail(self, error: &HistoryError) {
        match self {
            AckTarget::Connection { subscriber, id } => {
                let message = ServerMessage::Error {
                    code: switchboard_proto::native::ErrorCode::Internal,
                    reason: &error.to_string(),
                    id: id.as_ref(),
                };
                push_or_close(
                    &subscriber.outbox,
                    subscriber.wire.encode_text(&message.to_json()),
                );
            }
            AckTarget::Reply(reply) => {
                let _ = reply.send(Err(PublishError::Storage(HistoryError::Storage(
                    error.to_string(),
                ))));
            }
        }
    }
}

struct AppendRequest {
    message: NewMessage,
    ack: AckTarget,
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
    },
    /// An event stream (SSE): the presence list as an event, and an
    /// `event: reset` when the resume point is no longer in history (trimmed,
    /// or beyond the latest offset because the channel was reset).
    EventStream { presence: Vec<String> },
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
}

impl Node {
    /// The embedded default: SQLite history in `data_dir`, in-process broker.
    pub fn embedded(config: NodeConfig, data_dir: &Path) -> Result<Arc<Node>, HistoryError> {
        let history = Arc::new(SqliteHistory::open_with(data_dir, config.idempotency)?);
        let hub = Arc::new(Hub::default());
        let broker = Arc::new(MemoryBroker::default());
        broker.attach(hub.clone());
        Node::start(config, hub, history, broker)
    }

    /// Builds a node from its parts and starts its writer thread and
    /// background tasks. The broker must already deliver to `hub`.
    pub fn start(
        config: NodeConfig,
        hub: Arc<Hub>,
        history: Arc<dyn HistoryStore>,
        broker: Arc<dyn Broker>,
    ) -> Result<Arc<Node>, HistoryError> {
        let (appends, queue) = mpsc::channel(config.append_queue);
        let ack_after_sync = match config.sync {
            SyncPolicy::BeforeDelivery => None,
            SyncPolicy::BeforeAck => Some(start_syncer(&history, config.max_batch)?),
        };
        let window = ack_after_sync.as_ref().map(|a| a.window.clone());
        let writer = GroupCommit {
            runtime: tokio::runtime::Handle::current(),
            queue,
            history: history.clone(),
            broker: broker.clone(),
            max_batch: config.max_batch,
            commit_interval: config.commit_interval,
            ack_after_sync,
        };
        // A thread of its own: a commit waits for fsync without holding up
        // a runtime worker, and delivery follows on the same thread with no
        // hand-over in between (each hop costs latency on a busy machine).
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                HistoryError::Storage(format!("cannot start the history writer thread: {e}"))
            })?;
        tokio::spawn(run_retention(
            Arc::downgrade(&history),
            config.retention,
            config.retention_interval,
        ));
        Ok(Arc::new(Node {
            hub,
            history,
            broker,
            appends,
            config,
            window,
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
            .map_err(|e| HistoryError::Storage(format!("settle task failed: {e}")))?
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
    pub async fn catch_up(
        &self,
        subscriber: SubscriberHandle,
        channel: ChannelName,
        since: Option<u64>,
        greeting: Greeting,
    ) -> Result<(), NodeError> {
        let position = self.history.position(&channel).await?;
        let outbox = &subscriber.outbox;
        // For an event stream, the offset the client asked for (`reset`
        // reports it); `since` becomes where the replay starts.
        let (since, requested) = match greeting {
            Greeting::Subscribed {
                id,
                epoch,
                presence,
            } => {
                let subscribed = ServerMessage::Subscribed {
                    channel: channel.as_str(),
                    epoch: &position.epoch,
                    offset: position.offset,
                    presence: &presence,
                    id: id.as_ref(),
                };
                outbox
                    .push_when_room(subscriber.wire.encode_text(&subscribed.to_json()))
                    .await?;
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
                outbox
                    .push_when_room(frame.frame_for(&subscriber.wire))
                    .await?;
                cursor = message.offset;
            }
            if page.messages.len() < REPLAY_PAGE {
                return Ok(cursor);
            }
        }
    }

    /// Ends one subscription, announcing a `leave` if it was the user's last.
    pub fn unsubscribe(&self, channel: &ChannelName, id: ConnectionId) {
        if let Some(username) = self.hub.unsubscribe(channel, id) {
            self.broker.publish(ChannelEvent::Leave {
                channel: channel.clone(),
                username,
            });
        }
    }

    /// A channel's epoch and latest offset.
    pub async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError> {
        self.history.position(channel).await
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        self.history.read(channel, query, limit).await
    }

    pub fn presence(&self, channel: &ChannelName) -> Vec<String> {
        self.hub.presence(channel)
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

/// The writer: takes every queued publish (up to `max_batch`) into one
/// durable append, then delivers the batch in offset order and acks it.
/// Ends when the node, holder of the queue's sender, is dropped.
struct GroupCommit {
    runtime: tokio::runtime::Handle,
    queue: mpsc::Receiver<AppendRequest>,
    history: Arc<dyn HistoryStore>,
    broker: Arc<dyn Broker>,
    max_batch: usize,
    commit_interval: Duration,
    /// Set under `--sync before-ack`: the fsync thread the acks go through.
    ack_after_sync: Option<AckAfterSync>,
}

struct AckAfterSync {
    window: Arc<SyncWindow>,
    syncer: std::sync::mpsc::Sender<Unsynced>,
}

/// Starts the fsync thread. The window holds two batches: the one being
/// fsynced and the next, written and delivered meanwhile.
fn start_syncer(
    history: &Arc<dyn HistoryStore>,
    max_batch: usize,
) -> Result<AckAfterSync, HistoryError> {
    let window = Arc::new(SyncWindow::new(2 * max_batch));
    let (syncer, batches) = std::sync::mpsc::channel();
    let (history, thread_window) = (history.clone(), window.clone());
    std::thread::Builder::new()
        .name("history-sync".into())
        .spawn(move || run_syncer(batches, history, thread_window))
        .map_err(|e| HistoryError::Storage(format!("cannot start the fsync thread: {e}")))?;
    Ok(AckAfterSync { window, syncer })
}

impl GroupCommit {
    fn run(mut self) {
        let mut requests = Vec::with_capacity(self.max_batch);
        let mut previous = None;
        while self
            .runtime
            .block_on(self.queue.recv_many(&mut requests, self.max_batch))
            > 0
        {
            if !self.commit_interval.is_zero() {
                self.linger(&mut requests, previous);
                previous = Some(Instant::now());
            }
            self.commit(&mut requests);
        }
    }

    /// Holds a batch until `commit_interval` after the previous commit
    /// began, taking what else arrives meanwhile (up to `max_batch`). Under
    /// a steady stream, messages then share each subscriber's send, the
    /// one cost per delivery no server avoids otherwise. A message after a
    /// lull is not held.
    fn linger(&mut self, requests: &mut Vec<AppendRequest>, previous: Option<Instant>) {
        let Some(deadline) = previous.map(|p| p + self.commit_interval) else {
            return;
        };
        while requests.len() < self.max_batch && Instant::now() < deadline {
            let room = self.max_batch - requests.len();
            let queue = &mut self.queue;
            let more = self.runtime.block_on(async {
                tokio::time::timeout_at(deadline.into(), queue.recv_many(requests, room)).await
            });
            if !matches!(more, Ok(n) if n > 0) {
                return;
            }
        }
    }

    fn commit(&self, requests: &mut Vec<AppendRequest>) {
        let time = now_millis();
        let (batch, acks): (Vec<NewMessage>, Vec<AckTarget>) = requests
            .drain(..)
            .map(|request| {
                (
                    NewMessage {
                        time,
                        ..request.message
                    },
                    request.ack,
                )
            })
            .unzip();
        let channels: Vec<ChannelName> = batch.iter().map(|m| m.channel.clone()).collect();
        if let Some(ack_after_sync) = &self.ack_after_sync {
            return self.deliver_then_sync(ack_after_sync, batch, channels, acks);
        }
        fail::fail_point!("history-before-commit", |_| kill_self());
        match self.history.append_blocking(&self.runtime, batch) {
            Ok(stored) => {
                fail::fail_point!("history-after-commit", |_| kill_self());
                let (publications, events) = message_events(stored, channels);
                // Subscribers' wake-ups wait until the acks are queued: a
                // publisher with a window of messages in flight sends its
                // next ones that much sooner.
                let subscribers = defer_wakes(|| self.broker.publish_all(events));
                for (publication, ack) in publications.iter().zip(acks) {
                    ack.succeed(publication);
                }
                self.send(subscribers, publications.len());
            }
            Err(error) => {
                tracing::warn!("append failed: {error}");
                for ack in acks {
                    ack.fail(&error);
                }
            }
        }
    }

    /// `--sync before-ack`: write, deliver, and hand the acks to the fsync
    /// thread, which sends them once the batch is durable.
    fn deliver_then_sync(
        &self,
        ack_after_sync: &AckAfterSync,
        batch: Vec<NewMessage>,
        channels: Vec<ChannelName>,
        acks: Vec<AckTarget>,
    ) {
        let count = batch.len();
        let written = ack_after_sync
            .window
            .reserve(count, &*self.history)
            .and_then(|()| {
                self.history
                    .append_unsynced_blocking(&self.runtime, batch)
                    .inspect_err(|_| ack_after_sync.window.release(count))
            });
        let stored = match written {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!("append failed: {error}");
                for ack in acks {
                    ack.fail(&error);
                }
                return;
            }
        };
        let (publications, events) = message_events(stored, channels);
        let subscribers = defer_wakes(|| self.broker.publish_all(events));
        let unsynced = Unsynced { publications, acks };
        if let Err(std::sync::mpsc::SendError(unsynced)) = ack_after_sync.syncer.send(unsynced) {
            // The fsync thread is gone: nothing will make these durable.
            let error = HistoryError::Storage("the fsync thread has stopped".into());
            ack_after_sync.window.release(count);
            for ack in unsynced.acks {
                ack.fail(&error);
            }
        }
        // After the fsync thread has its batch: it syncs while these are written.
        self.send(subscribers, count);
    }

    /// Sends a delivered batch of `count` messages on its way. A small batch
    /// is written through subscribers' sockets from here at once. A big one
    /// means publishes arrive faster than commits: its subscribers' tasks
    /// are woken instead, and each joins whatever has accumulated by the
    /// time it runs into one `writev`, where writing every batch through
    /// would cost a send per batch, and the writer is free for the next.
    fn send(&self, subscribers: HeldWakes, count: usize) {
        if count > WRITE_THROUGH_MAX_BATCH {
            subscribers.wake_tasks();
        } else {
            subscribers.wake_all_sharing(&self.runtime);
        }
    }
}

/// What a batch stored: every publication, in batch order, for the acks;
/// and the events to deliver, one per message stored anew (a repeat of an
/// idempotency key was delivered when it was first stored).
fn message_events(
    stored: Vec<Stored>,
    channels: Vec<ChannelName>,
) -> (Vec<Arc<Publication>>, Vec<ChannelEvent>) {
    let mut publications = Vec::with_capacity(stored.len());
    let mut events = Vec::with_capacity(stored.len());
    for (stored, channel) in stored.into_iter().zip(channels) {
        let publication = Arc::new(stored.publication);
        if !stored.repeat {
            events.push(ChannelEvent::Message {
                channel,
                publication: publication.clone(),
            });
        }
        publications.push(publication);
    }
    (publications, events)
}

/// A fail point's action in crash tests: the process ends at once, as by
/// `kill -9`, with nothing flushed or answered.
#[cfg(feature = "failpoints")]
fn kill_self() {
    // SAFETY: kill(2) with our own pid; no memory is involved.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

async fn run_retention(
    history: std::sync::Weak<dyn HistoryStore>,
    retention: Retention,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(history) = history.upgrade() else {
            return;
        };
        match history.trim(retention, now_millis()).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "history trimmed"),
            Err(e) => tracing::warn!("history trim failed: {e}"),
        }
    }
}

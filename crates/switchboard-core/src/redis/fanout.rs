//! The receiving side of fan-out between nodes: one pub/sub connection
//! listening to the channels this node has subscribers in, and a task that
//! hands their events to the hub in offset order.
//!
//! Every node, the publishing one included, delivers a message when it
//! arrives on the channel's topic, and only then: one connection carries
//! every channel's events in the order Redis published them, which is
//! offset order. A message past the next expected offset (the connection
//! dropped, or Redis lost a pub/sub message) first brings the missing ones
//! from history; one at or below it is a repeat and is skipped. So a
//! subscriber never sees a gap, a duplicate or a reorder.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::Msg;
use ::redis::aio::{PubSubSink, PubSubStream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use switchboard_proto::Publication;
use tokio::sync::{mpsc, oneshot};

use super::Redis;
use super::entry::{TopicEvent, parse_event};
use super::history::RedisHistory;
use crate::broker::{ChannelEvent, EventSink};
use crate::channel::ChannelName;
use crate::history::{HistoryError, HistoryQuery, HistoryStore};
use crate::hub::Hub;
use crate::node::AckTarget;
use crate::outbox::defer_wakes;
use crate::pipeline::PipelineStats;
use crate::user::Username;

/// What the node asks of its fan-out task.
pub(crate) enum Command {
    /// A local subscriber joined the channel.
    Watch(ChannelName),
    /// A local subscriber left it.
    Unwatch(ChannelName),
    /// Answer once the channel's events are arriving.
    Ready(ChannelName, oneshot::Sender<Result<(), HistoryError>>),
    /// Acks of messages this node stored, sent once it has delivered them.
    Acks(Vec<(Arc<Publication>, AckTarget)>),
    /// Messages to a relay topic go to this receiver; told once listening.
    Listen(
        String,
        mpsc::UnboundedSender<Bytes>,
        Option<oneshot::Sender<()>>,
    ),
}

/// Most events taken off the connection before they are handed to the hub:
/// a burst is delivered as one batch, one queue operation per subscriber.
const BURST: usize = 256;
/// Messages read from history per page while filling a gap.
const FILL_PAGE: usize = 500;
/// Delivered batches larger than this wake subscribers' tasks instead of
/// writing through their sockets from here (as the group commit does).
const WRITE_THROUGH_MAX_BATCH: usize = 8;
/// Pause between attempts to reconnect the pub/sub connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// A channel this node listens to.
struct Watched {
    /// Local subscriptions; the topic is dropped when none is left.
    subscribers: i64,
    /// Where the channel's delivery stands, once known (subscribed to the
    /// topic, then its position read).
    delivered: Option<Delivered>,
    /// Acks of this node's publishes not delivered here yet.
    waiting_acks: Vec<(Arc<Publication>, AckTarget)>,
}

impl Watched {
    fn new() -> Watched {
        Watched {
            subscribers: 0,
            delivered: None,
            waiting_acks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Delivered {
    epoch: String,
    offset: u64,
}

pub(crate) struct Fanout {
    pub(crate) redis: Redis,
    pub(crate) history: Arc<RedisHistory>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Arc<PipelineStats>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    channels: HashMap<ChannelName, Watched>,
    /// `P:ch:`, stripped from topics to find their channel.
    topic_prefix: String,
    /// Acks whose messages were delivered, sent after the delivery.
    released: Vec<(Arc<Publication>, AckTarget)>,
    /// Relay topics this node listens on, and where their messages go.
    relays: HashMap<String, mpsc::UnboundedSender<Bytes>>,
    /// Set once the pub/sub connection has been made: the next one is a
    /// reconnect.
    connected_before: bool,
}

/// Why serving a connection ended.
enum Ended {
    /// The node is gone.
    Stopped,
    /// The connection failed; reconnect.
    Disconnected,
}

impl Fanout {
    pub(crate) fn new(
        redis: Redis,
        history: Arc<RedisHistory>,
        hub: Arc<Hub>,
        stats: Arc<PipelineStats>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Fanout {
        let topic_prefix = redis.topic("");
        Fanout {
            redis,
            history,
            hub,
            stats,
            commands,
            channels: HashMap::new(),
            topic_prefix,
            released: Vec::new(),
            relays: HashMap::new(),
            connected_before: false,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let Some((mut sink, stream)) = self.connect().await else {
                return;
            };
            match self.serve(&mut sink, stream).await {
                Ended::Stopped => return,
                Ended::Disconnected => {
                    tracing::warn!("Redis pub/sub connection lost; reconnecting");
                    self.hub.metrics().redis_errors.inc();
                }
            }
        }
    }

    /// Opens the pub/sub connection and listens to every watched channel
    /// again, filling in what was missed meanwhile. While Redis is away,
    /// commands are still taken (readiness is refused). `None` once the
    /// node is gone.
    async fn connect(&mut self) -> Option<(PubSubSink, PubSubStream)> {
        loop {
            match self.redis.client.get_async_pubsub().await {
                Ok(pubsub) => {
                    let (mut sink, stream) = pubsub.split();
                    if self.resubscribe(&mut sink).await.is_ok() {
                        if self.connected_before {
                            self.hub.metrics().redis_reconnects.inc();
                        }
                        self.connected_before = true;
                        return Some((sink, stream));
                    }
                    self.hub.metrics().redis_errors.inc();
                }
                Err(e) => {
                    tracing::debug!("Redis pub/sub connect failed: {e}");
                    self.hub.metrics().redis_errors.inc();
                }
            }
            let retry = tokio::time::sleep(RECONNECT_DELAY);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    command = self.commands.recv() => match command {
                        None => return None,
                        Some(command) => self.command_offline(command),
                    },
                }
            }
        }
    }

    async fn resubscribe(&mut self, sink: &mut PubSubSink) -> Result<(), HistoryError> {
        for topic in self.relays.keys() {
            sink.subscribe(topic).await.map_err(super::redis_error)?;
        }
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for channel in channels {
            sink.subscribe(self.redis.topic(channel.as_str()))
                .await
                .map_err(super::redis_error)?;
            let mut events = Vec::new();
            self.catch_up(&channel, &mut events).await?;
            self.hand_to_hub(events);
        }
        Ok(())
    }

    async fn serve(&mut self, sink: &mut PubSubSink, mut stream: PubSubStream) -> Ended {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return Ended::Stopped,
                    Some(command) => {
                        if self.command(sink, command).await.is_err() {
                            return Ended::Disconnected;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(first) = message else {
                        return Ended::Disconnected;
                    };
                    let mut burst = vec![first];
                    while burst.len() < BURST {
                        match stream.next().now_or_never() {
                            Some(Some(message)) => burst.push(message),
                            _ => break,
                        }
                    }
                    self.deliver(burst).await;
                }
            }
        }
    }

    /// Handles a command; an error means the connection failed.
    async fn command(
        &mut self,
        sink: &mut PubSubSink,
        command: Command,
    ) -> Result<(), HistoryError> {
        match command {
            Command::Watch(channel) => {
                let watched = self
                    .channels
                    .entry(channel.clone())
                    .or_insert_with(Watched::new);
                watched.subscribers += 1;
                if watched.subscribers == 1 && watched.delivered.is_none() {
                    sink.subscribe(self.redis.topic(channel.as_str()))
                        .await
                        .map_err(super::redis_error)?;
                    let mut events = Vec::new();
                    // A failed read leaves the channel unready; the next
                    // `Ready` tries again.
                    let _ = self.catch_up(&channel, &mut events).await;
                    self.hand_to_hub(events);
                }
            }
            Command::Unwatch(channel) => {
                if let Some(watched) = self.channels.get_mut(&channel) {
                    watched.subscribers -= 1;
                    if watched.subscribers <= 0 {
                        self.unwatched(&channel);
                        sink.unsubscribe(self.redis.topic(channel.as_str()))
                            .await
                            .map_err(super::redis_error)?;
                    }
                }
            }
            Command::Ready(channel, reply) => {
                let answer = match self.channels.get(&channel) {
                    Some(Watched {
                        delivered: Some(_), ..
                    }) => Ok(()),
                    Some(_) => {
                        let mut events = Vec::new();
                        let caught_up = self.catch_up(&channel, &mut events).await;
                        self.hand_to_hub(events);
                        caught_up
                    }
                    // Unwatched already: its subscriber has gone.
                    None => Ok(()),
                };
                let _ = reply.send(answer);
            }
            Command::Acks(acks) => self.hold_acks(acks),
            Command::Listen(topic, deliver, listening) => {
                self.relays.insert(topic.clone(), deliver);
                sink.subscribe(&topic).await.map_err(super::redis_error)?;
                if let Some(listening) = listening {
                    let _ = listening.send(());
                }
            }
        }
        Ok(())
    }

    /// Sends each ack whose message was delivered here (or that no local
    /// subscriber waits for); holds the others until their delivery.
    fn hold_acks(&mut self, acks: Vec<(Arc<Publication>, AckTarget)>) {
        for (publication, ack) in acks {
            let watched = ChannelName::parse(&publication.channel)
                .ok()
                .and_then(|channel| self.channels.get_mut(&channel));
            match watched {
                Some(Watched {
                    delivered: Some(delivered),
                    waiting_acks,
                    ..
                }) if publication.offset > delivered.offset => {
                    waiting_acks.push((publication, ack));
                }
                _ => ack.succeed(&publication),
            }
        }
    }

    /// Forgets a channel no local subscriber is in; its held acks go.
    fn unwatched(&mut self, channel: &ChannelName) {
        if let Some(watched) = self.channels.remove(channel) {
            for (publication, ack) in watched.waiting_acks {
                ack.succeed(&publication);
            }
        }
    }

    /// A command while Redis is away: counts change, readiness is refused.
    fn command_offline(&mut self, command: Command) {
        match command {
            Command::Watch(channel) => {
                self.channels
                    .entry(channel)
                    .or_insert_with(Watched::new)
                    .subscribers += 1;
            }
            Command::Unwatch(channel) => {
                if let Some(watched) = self.channels.get_mut(&channel) {
                    watched.subscribers -= 1;
                    if watched.subscribers <= 0 {
                        self.unwatched(&channel);
                    }
                }
            }
            Command::Ready(_, reply) => {
                let _ = reply.send(Err(HistoryError::Unavailable(
                    "Redis is unavailable: not connected".into(),
                )));
            }
            // Held until the reconnect delivers them.
            Command::Acks(acks) => self.hold_acks(acks),
            // Subscribed at the reconnect.
            Command::Listen(topic, deliver, _) => {
                self.relays.insert(topic, deliver);
            }
        }
    }

    /// Brings a channel's delivery up to its stored position, once its
    /// topic is subscribed: the first time, from the position itself; after
    /// a reconnect, every message missed meanwhile (all of a new epoch's,
    /// if Redis lost its data).
    async fn catch_up(
        &mut self,
        channel: &ChannelName,
        events: &mut Vec<ChannelEvent>,
    ) -> Result<(), HistoryError> {
        let position = self.history.position(channel).await?;
        let Some(watched) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        let from = match &watched.delivered {
            None => {
                watched.delivered = Some(Delivered {
                    epoch: position.epoch,
                    offset: position.offset,
                });
                return Ok(());
            }
            Some(delivered) if delivered.epoch == position.epoch => delivered.offset,
            Some(delivered) => {
                tracing::warn!(
                    channel = channel.as_str(),
                    "channel {channel} has a new epoch in Redis ({} → {}): its history was lost",
                    delivered.epoch,
                    position.epoch
                );
                watched.delivered = Some(Delivered {
                    epoch: position.epoch,
                    offset: 0,
                });
                0
            }
        };
        if position.offset > from {
            self.fill(channel, from, position.offset, events).await?;
        }
        Ok(())
    }

    /// Reads `channel`'s messages after `from` up to `to` from history into
    /// `events`, advancing its delivered offset.
    async fn fill(
        &mut self,
        channel: &ChannelName,
        mut from: u64,
        to: u64,
        events: &mut Vec<ChannelEvent>,
    ) -> Result<(), HistoryError> {
        while from < to {
            let want = ((to - from) as usize).min(FILL_PAGE);
            let page = self
                .history
                .read(channel, HistoryQuery::Since(from), want)
                .await?;
            let Some(last) = page.messages.last().map(|m| m.offset) else {
                // Trimmed away: nothing left to deliver before `to`.
                break;
            };
            for publication in page.messages {
                if publication.offset <= to {
                    self.push_message(channel, publication, events);
                }
            }
            from = last;
        }
        self.advance(channel, to);
        Ok(())
    }

    /// Records delivery up to `offset`, releasing the acks it covers.
    fn advance(&mut self, channel: &ChannelName, offset: u64) {
        if let Some(Watched {
            delivered: Some(delivered),
            waiting_acks,
            ..
        }) = self.channels.get_mut(channel)
        {
            delivered.offset = delivered.offset.max(offset);
            if !waiting_acks.is_empty() {
                let up_to = delivered.offset;
                let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(waiting_acks)
                    .into_iter()
                    .partition(|(publication, _)| publication.offset <= up_to);
                *waiting_acks = waiting;
                self.released.extend(done);
            }
        }
    }

    fn push_message(
        &mut self,
        channel: &ChannelName,
        publication: Publication,
        events: &mut Vec<ChannelEvent>,
    ) {
        self.advance(channel, publication.offset);
        events.push(ChannelEvent::Message {
            channel: channel.clone(),
            publication: Arc::new(publication),
        });
    }

    /// Delivers a burst of topic messages in order, filling gaps first.
    async fn deliver(&mut self, burst: Vec<Msg>) {
        let mut events = Vec::with_capacity(burst.len());
        for message in burst {
            if let Some(relay) = self.relays.get(message.get_channel_name()) {
                let _ = relay.send(Bytes::copy_from_slice(message.get_payload_bytes()));
                continue;
            }
            let Some(channel) = message
                .get_channel_name()
                .strip_prefix(&self.topic_prefix)
                .and_then(|name| ChannelName::parse(name).ok())
            else {
                continue;
            };
            match parse_event(&channel, message.get_payload_bytes()) {
                Ok(TopicEvent::Messages(publications)) => {
                    for publication in publications {
                        self.sequence(&channel, publication, &mut events).await;
                    }
                }
                Ok(TopicEvent::Join(name)) if self.channels.contains_key(&channel) => {
                    if let Ok(username) = Username::parse(&name) {
                        events.push(ChannelEvent::Join { channel, username });
                    }
                }
                Ok(TopicEvent::Leave(name)) if self.channels.contains_key(&channel) => {
                    if let Ok(username) = Username::parse(&name) {
                        events.push(ChannelEvent::Leave { channel, username });
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(channel = channel.as_str(), "{e}"),
            }
        }
        self.hand_to_hub(events);
    }

    /// Puts one announced message in its place: skipped if already
    /// delivered, after the missing ones if it is ahead.
    async fn sequence(
        &mut self,
        channel: &ChannelName,
        publication: Publication,
        events: &mut Vec<ChannelEvent>,
    ) {
        let Some(Watched {
            delivered: Some(delivered),
            ..
        }) = self.channels.get(channel)
        else {
            // Not listening, or not caught up yet: its catch-up reads this.
            return;
        };
        let next = delivered.offset + 1;
        if publication.offset < next {
            return;
        }
        if publication.offset > next {
            let missing_to = publication.offset - 1;
            if let Err(e) = self.fill(channel, next - 1, missing_to, events).await {
                // Delivering this one would leave a hole: hold back until the
                // next message or the reconnect fills both.
                tracing::warn!(channel = channel.as_str(), "cannot fill a gap: {e}");
                return;
            }
        }
        self.push_message(channel, publication, events);
    }

    /// Delivers events to the local subscribers, writing small batches
    /// through their sockets from here.
    fn hand_to_hub(&mut self, events: Vec<ChannelEvent>) {
        let count = events.len();
        let received = Instant::now();
        let hub = &self.hub;
        let wakes = defer_wakes(|| hub.deliver_all(events));
        // Publishers, woken at once, go ahead of the subscribers' writes.
        for (publication, ack) in self.released.drain(..) {
            ack.succeed(&publication);
        }
        let fan_out = |shares| self.stats.fan_out(received, shares);
        if count > WRITE_THROUGH_MAX_BATCH {
            wakes.wake_tasks_timed(fan_out);
        } else {
            wakes.wake_all_sharing(&tokio::runtime::Handle::current(), fan_out);
        }
    }
}

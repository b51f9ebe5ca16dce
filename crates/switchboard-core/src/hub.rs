//! The local side of fan-out: which connections on this node subscribe to
//! which channels, who is present, and delivery into their outboxes.
//!
//! Every event is serialized once; each subscriber's outbox gets a clone of
//! the same bytes (per frame variant). Delivery never waits: a subscriber
//! whose outbox is full is closed as slow and may resume with `since`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use switchboard_proto::Publication;
use switchboard_proto::native::ServerMessage;
use switchboard_ws::{CloseCode, CloseFrame};

use crate::broker::{ChannelEvent, EventSink};
use crate::channel::ChannelName;
use crate::metrics::{NodeMetrics, TransportKind};
use crate::outbox::{Outbox, Position, PushError};
use crate::recovery::RecoveryPositions;
use crate::user::Username;
use crate::wire::{EventIds, EventKind, SharedFrame, Wire, http_chunk};

/// A process-unique connection number.
pub type ConnectionId = u64;

/// What the hub needs to reach one connection.
#[derive(Debug, Clone)]
pub struct SubscriberHandle {
    pub id: ConnectionId,
    pub username: Username,
    pub outbox: Arc<Outbox>,
    pub wire: Wire,
    /// Whether the connection counts in presence (and hears about others'
    /// comings and goings as someone who is there). Anonymous listeners,
    /// such as an SSE stream without `user`, do not.
    pub in_presence: bool,
    /// A Socket.IO session with connection-state recovery: its position in
    /// each channel, which every message it is sent names.
    pub recovery: Option<Arc<RecoveryPositions>>,
}

/// The result of adding a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Usernames present after the subscriber was added, sorted.
    pub presence: Vec<String>,
    /// Whether this was the user's first connection in the channel.
    pub first_for_user: bool,
}

/// Why a subscription could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("already subscribed to this channel")]
    AlreadySubscribed,
}

/// Channel subscriptions on this node, sharded by channel name.
pub struct Hub {
    /// Lock order: one shard at a time, then (pushing a frame) a
    /// subscriber's outbox; never a shard while holding an outbox. Nothing
    /// is sent to a socket under a shard: pushes only queue, and the
    /// write-through of a delivery runs once the shard is released (see
    /// [`crate::outbox`]).
    shards: Box<[Mutex<HashMap<ChannelName, Channel>>]>,
    hasher: RandomState,
    /// Subscriptions and deliveries, for the metrics endpoint.
    metrics: Arc<NodeMetrics>,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<ConnectionId, Subscriber>,
    /// Connections per username: presence counts a user once.
    presence: HashMap<Username, u32>,
}

struct Subscriber {
    handle: SubscriberHandle,
    /// Set while history is being replayed to this subscriber: live events
    /// wait here so they follow the replay instead of overtaking it.
    catching_up: Option<CatchUp>,
    /// The last offset its catch-up delivered: a live message up to it is
    /// one the replay already sent. With an engine shared by nodes, a
    /// message can be in the store (and so in the replay) before it comes
    /// back from Redis to this node's hub.
    live_after: u64,
}

#[derive(Default)]
struct CatchUp {
    held: Vec<Arc<SharedFrame>>,
    bytes: usize,
}

/// How many shards: enough that unrelated channels rarely share a lock.
const SHARDS: usize = 64;

/// The close a lagging subscriber gets.
pub fn slow_consumer_close() -> CloseFrame {
    CloseFrame::new(
        CloseCode::TRY_AGAIN_LATER,
        "slow consumer: reconnect and resume with since",
    )
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            metrics: Arc::default(),
        }
    }
}

impl Hub {
    /// What the node counts (the hub's deliveries and subscriptions among it).
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    fn shard(&self, channel: &ChannelName) -> &Mutex<HashMap<ChannelName, Channel>> {
        let index = self.hasher.hash_one(channel) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds a subscriber that holds live events until [`Hub::go_live`].
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        handle: SubscriberHandle,
    ) -> Result<Joined, SubscribeError> {
        let mut shard = self.shard(channel).lock();
        let state = shard.entry(channel.clone()).or_default();
        let id = handle.id;
        let username = handle.in_presence.then(|| handle.username.clone());
        match state.subscribers.entry(id) {
            Entry::Occupied(_) => return Err(SubscribeError::AlreadySubscribed),
            Entry::Vacant(slot) => {
                slot.insert(Subscriber {
                    handle,
                    catching_up: Some(CatchUp::default()),
                    live_after: 0,
                });
                self.metrics.subscriptions.inc();
            }
        }
        let first_for_user = username.is_some_and(|username| {
            let count = state.presence.entry(username).or_insert(0);
            *count += 1;
            *count == 1
        });
        Ok(Joined {
            first_for_user,
            presence: sorted_names(&state.presence),
        })
    }

    /// Ends a subscriber's catch-up: sends what it held, skipping messages
    /// at or below `delivered_up_to` (already sent from history).
    pub fn go_live(&self, channel: &ChannelName, id: ConnectionId, delivered_up_to: u64) {
        let mut shard = self.shard(channel).lock();
        let Some(subscriber) = shard
            .get_mut(channel)
            .and_then(|c| c.subscribers.get_mut(&id))
        else {
            return;
        };
        let Some(catch_up) = subscriber.catching_up.take() else {
            return;
        };
        subscriber.live_after = delivered_up_to;
        let handle = &subscriber.handle;
        for held in catch_up.held {
            if held
                .offset()
                .is_some_and(|offset| offset <= delivered_up_to)
            {
                continue;
            }
            if !push_event(handle, &held) {
                break;
            }
        }
    }

    /// Removes a subscription: `None` if there was none; else the username
    /// if it was that user's last connection in the channel (a `leave`).
    pub fn unsubscribe(&self, channel: &ChannelName, id: ConnectionId) -> Option<Option<Username>> {
        let mut shard = self.shard(channel).lock();
        let state = shard.get_mut(channel)?;
        let removed = state.subscribers.remove(&id)?;
        self.metrics.subscriptions.dec();
        let username = removed.handle.username;
        let left = match state.presence.get_mut(&username) {
            _ if !removed.handle.in_presence => None,
            Some(count) if *count > 1 => {
                *count -= 1;
                None
            }
            _ => {
                state.presence.remove(&username);
                Some(username)
            }
        };
        if state.subscribers.is_empty() {
            shard.remove(channel);
        }
        Some(left)
    }

    /// Usernames online in a channel on this node, sorted.
    pub fn presence(&self, channel: &ChannelName) -> Vec<String> {
        self.shard(channel)
            .lock()
            .get(channel)
            .map(|c| sorted_names(&c.presence))
            .unwrap_or_default()
    }

    /// Every connection of `username` subscribed to some channel on this
    /// node, each once.
    pub fn connections_of(&self, username: &Username) -> Vec<SubscriberHandle> {
        let mut found: HashMap<ConnectionId, SubscriberHandle> = HashMap::new();
        for shard in self.shards.iter() {
            for channel in shard.lock().values() {
                if !channel.presence.contains_key(username) {
                    continue;
                }
                for (id, subscriber) in &channel.subscribers {
                    if subscriber.handle.username == *username {
                        found
                            .entry(*id)
                            .or_insert_with(|| subscriber.handle.clone());
                    }
                }
            }
        }
        found.into_values().collect()
    }

    /// Subscriber count per channel with any subscribers.
    pub fn subscriber_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for shard in self.shards.iter() {
            for (name, channel) in shard.lock().iter() {
                counts.insert(name.as_str().to_owned(), channel.subscribers.len());
            }
        }
        counts
    }

    /// Delivers a run of events about one channel to each of its
    /// subscribers. A run of several (a group commit's worth of messages)
    /// is joined into one buffer per wire variant, so each subscriber costs
    /// one queue operation and one shared-buffer reference for the whole
    /// run, and its connection writes the run as one piece.
    fn fan_out(
        &self,
        channel: &ChannelName,
        frames: &[Arc<SharedFrame>],
        about: Option<&Username>,
    ) {
        let mut shard = self.shard(channel).lock();
        let Some(state) = shard.get_mut(channel) else {
            return;
        };
        let run_bytes: usize = frames.iter().map(|f| f.json().len()).sum();
        let messages = frames.iter().filter(|f| f.offset().is_some()).count() as u64;
        // Counted here, added to the shared counters once per run.
        let mut delivered = [0u64; TransportKind::ALL.len()];
        let mut joined = JoinedRuns::default();
        for subscriber in state.subscribers.values_mut() {
            // Nobody is told about their own arrival or departure.
            if about.is_some_and(|name| {
                subscriber.handle.in_presence && *name == subscriber.handle.username
            }) {
                continue;
            }
            let handle = &subscriber.handle;
            // Runs are in offset order: nearly all start past `live_after`,
            // and are shared whole; the rest go frame by frame.
            let (frames, whole) = match frames.first().and_then(|f| f.offset()) {
                Some(first) if first <= subscriber.live_after => {
                    let live_after = subscriber.live_after;
                    let skip = frames
                        .iter()
                        .take_while(|f| f.offset().is_some_and(|o| o <= live_after))
                        .count();
                    (&frames[skip..], false)
                }
                _ => (frames, true),
            };
            if frames.is_empty() {
                continue;
            }
            delivered[TransportKind::of(&handle.wire) as usize] +=
                if whole { messages } else { frames.len() as u64 };
            match &mut subscriber.catching_up {
                Some(catch_up) => {
                    catch_up.bytes += run_bytes;
                    if catch_up.bytes > handle.outbox.max_bytes() {
                        handle.outbox.close(slow_consumer_close());
                    } else {
                        catch_up.held.extend(frames.iter().cloned());
                    }
                }
                None if whole && frames.len() > 1 && handle.wire.joins_events() => {
                    let run = joined.get(frames, &handle.wire);
                    let pushed = match (&handle.recovery, frames.last().and_then(|f| f.offset())) {
                        (Some(tracked), Some(last)) => {
                            tracked.push_shared_run(handle, channel, last, run)
                        }
                        _ => Some(push_or_close(&handle.outbox, run)),
                    };
                    if pushed.is_none() {
                        for frame in frames {
                            if !push_event(handle, frame) {
                                break;
                            }
                        }
                    }
                }
                None => {
                    for frame in frames {
                        if !push_event(handle, frame) {
                            break;
                        }
                    }
                }
            }
        }
        for kind in TransportKind::ALL {
            self.metrics.delivered(kind, delivered[kind as usize]);
        }
    }
}

/// A run of frames joined into one buffer, once per wire variant met.
#[derive(Default)]
struct JoinedRuns {
    /// Few entries: one per distinct wire among the subscribers.
    variants: Vec<(Wire, Bytes)>,
}

impl JoinedRuns {
    fn get(&mut self, frames: &[Arc<SharedFrame>], wire: &Wire) -> Bytes {
        if let Some((_, bytes)) = self.variants.iter().find(|(w, _)| w == wire) {
            return bytes.clone();
        }
        // A chunked event stream takes the run as one chunk, not one each.
        let (framing, events) = match wire {
            Wire::ChunkedEventStream => (true, Wire::EventStream(EventIds::Offset)),
            other => (false, *other),
        };
        let mut run = BytesMut::new();
        for frame in frames {
            run.extend_from_slice(&frame.frame_for(&events));
        }
        let run = if framing {
            http_chunk(&run)
        } else {
            run.freeze()
        };
        self.variants.push((*wire, run.clone()));
        run
    }
}

/// Queues a frame; a full outbox closes its connection as slow. Returns
/// whether the connection can still take frames.
pub fn push_or_close(outbox: &Arc<Outbox>, frame: Bytes) -> bool {
    push_or_close_at(outbox, frame, None)
}

/// Queues `event` for `handle` in its wire's encoding, with the message's
/// position beside it if the outbox keeps positions (an SSE stream of
/// several channels, which writes them back as its resume point).
pub fn push_event(handle: &SubscriberHandle, event: &SharedFrame) -> bool {
    if let Some(tracked) = &handle.recovery {
        return tracked.push_live(handle, event);
    }
    let position = event.position().filter(|_| handle.outbox.keeps_positions());
    push_or_close_at(&handle.outbox, event.frame_for(&handle.wire), position)
}

fn push_or_close_at(outbox: &Arc<Outbox>, frame: Bytes, position: Option<Position>) -> bool {
    match outbox.try_push_at(frame, position) {
        Ok(()) => true,
        Err(PushError::Full) => {
            outbox.close(slow_consumer_close());
            false
        }
        Err(PushError::Closed) => false,
    }
}

fn sorted_names(presence: &HashMap<Username, u32>) -> Vec<String> {
    let mut names: Vec<String> = presence.keys().map(|u| u.as_str().to_owned()).collect();
    names.sort();
    names
}

/// The frame every subscriber of `channel` gets for a stored message.
fn message_frame(channel: ChannelName, publication: &Publication) -> Arc<SharedFrame> {
    let json = ServerMessage::Message(publication).to_json();
    let kind = EventKind::Message {
        offset: publication.offset,
    };
    Arc::new(SharedFrame::new(channel, kind, json))
}

impl EventSink for Hub {
    fn deliver(&self, event: ChannelEvent) {
        match event {
            ChannelEvent::Message {
                channel,
                publication,
            } => {
                let frame = message_frame(channel.clone(), &publication);
                self.fan_out(&channel, &[frame], None);
            }
            ChannelEvent::Join { channel, username } => {
                let json = ServerMessage::Join {
                    channel: channel.as_str(),
                    username: username.as_str(),
                }
                .to_json();
                self.announce(channel, EventKind::Join, &username, json);
            }
            ChannelEvent::Leave { channel, username } => {
                let json = ServerMessage::Leave {
                    channel: channel.as_str(),
                    username: username.as_str(),
                }
                .to_json();
                self.announce(channel, EventKind::Leave, &username, json);
            }
        }
    }

    /// Consecutive messages of one channel (a group commit's worth) go to
    /// each subscriber together.
    fn deliver_all(&self, events: Vec<ChannelEvent>) {
        let mut run: Option<MessageRun> = None;
        for event in events {
            match event {
                ChannelEvent::Message {
                    channel,
                    publication,
                } => {
                    let frame = message_frame(channel.clone(), &publication);
                    match &mut run {
                        Some((run_channel, frames)) if *run_channel == channel => {
                            frames.push(frame)
                        }
                        _ => {
                            self.fan_out_run(run.take());
                            run = Some((channel, vec![frame]));
                        }
                    }
                }
                other => {
                    self.fan_out_run(run.take());
                    self.deliver(other);
                }
            }
        }
        self.fan_out_run(run);
    }
}

/// Consecutive messages of one channel.
type MessageRun = (ChannelName, Vec<Arc<SharedFrame>>);

impl Hub {
    /// A presence event about `username`, to everyone else in the channel.
    fn announce(&self, channel: ChannelName, kind: EventKind, username: &Username, json: String) {
        let frame = Arc::new(SharedFrame::new(channel.clone(), kind, json));
        self.fan_out(&channel, &[frame], Some(username));
    }

    fn fan_out_run(&self, run: Option<MessageRun>) {
        if let Some((channel, frames)) = run {
            self.fan_out(&channel, &frames, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::wire::{EventIds, FrameEncoder};

    fn lobby() -> ChannelName {
        ChannelName::parse("lobby").unwrap()
    }

    fn subscriber(hub: &Hub, id: ConnectionId, wire: Wire) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let handle = SubscriberHandle {
            id,
            username: Username::parse(&format!("user{id}")).unwrap(),
            outbox: outbox.clone(),
            wire,
            in_presence: true,
            recovery: None,
        };
        hub.subscribe(&lobby(), handle).unwrap();
        outbox
    }

    fn message(offset: u64) -> ChannelEvent {
        ChannelEvent::Message {
            channel: lobby(),
            publication: Arc::new(Publication {
                channel: "lobby".into(),
                offset,
                username: "ann".into(),
                msg: format!("m{offset}"),
                time: 0,
            }),
        }
    }

    fn frame(offset: u64, wire: &Wire) -> Bytes {
        let ChannelEvent::Message { publication, .. } = message(offset) else {
            unreachable!()
        };
        message_frame(lobby(), &publication).frame_for(wire)
    }

    fn taken(outbox: &Outbox) -> VecDeque<Bytes> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut frames = VecDeque::new();
        match outbox.poll_take(&mut cx, &mut frames, true) {
            Poll::Ready(_) => frames,
            Poll::Pending => VecDeque::new(),
        }
    }

    #[test]
    fn a_run_of_messages_reaches_a_live_subscriber_as_one_buffer_in_order() {
        let hub = Hub::default();
        let ws = Wire::WebSocket(FrameEncoder::plain());
        let outbox = subscriber(&hub, 1, ws);
        hub.go_live(&lobby(), 1, 0);
        hub.deliver_all(vec![message(1), message(2), message(3)]);
        let frames = taken(&outbox);
        assert_eq!(frames.len(), 1, "one buffer for the run");
        let expected: Vec<u8> = (1..=3).flat_map(|o| frame(o, &ws).to_vec()).collect();
        assert_eq!(frames[0], expected);
    }

    #[test]
    fn live_messages_the_replay_already_sent_are_not_sent_again() {
        // The replay went up to 2 while 1..=3 were on their way from Redis.
        let hub = Hub::default();
        let ws = Wire::WebSocket(FrameEncoder::plain());
        let caught_up = subscriber(&hub, 1, ws);
        let fresh = subscriber(&hub, 2, ws);
        hub.go_live(&lobby(), 1, 2);
        hub.go_live(&lobby(), 2, 0);
        hub.deliver_all(vec![message(1), message(2), message(3)]);
        assert_eq!(taken(&caught_up), [frame(3, &ws)]);
        let whole: Vec<u8> = (1..=3).flat_map(|o| frame(o, &ws).to_vec()).collect();
        assert_eq!(taken(&fresh), [Bytes::from(whole)]);
        hub.deliver_all(vec![message(2)]);
        assert!(taken(&caught_up).is_empty(), "a repeat of 2 is dropped");
        assert_eq!(hub.metrics().subscriptions.get(), 2);
    }

    #[test]
    fn a_chunked_event_stream_gets_a_run_as_one_chunk() {
        let hub = Hub::default();
        let outbox = subscriber(&hub, 1, Wire::ChunkedEventStream);
        hub.go_live(&lobby(), 1, 0);
        hub.deliver_all(vec![message(1), message(2)]);
        let sse = Wire::EventStream(EventIds::Offset);
        let events = [frame(1, &sse), frame(2, &sse)].concat();
        assert_eq!(taken(&outbox), [http_chunk(&events)]);
    }

    #[test]
    fn a_stream_of_several_channels_gets_the_run_event_by_event() {
        let hub = Hub::default();
        let sse = Wire::EventStream(EventIds::ChannelAndOffset);
        let outbox = subscriber(&hub, 1, sse);
        hub.go_live(&lobby(), 1, 0);
        hub.deliver_all(vec![message(1), message(2)]);
        assert_eq!(taken(&outbox), [frame(1, &sse), frame(2, &sse)]);
    }

    #[test]
    fn a_recovering_session_names_its_position_in_every_channel_it_is_in() {
        let hub = Hub::default();
        let wire = Wire::SocketIo(crate::wire::SocketIoEvents {
            recovery_offsets: true,
        });
        let positions = RecoveryPositions::new();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let handle = SubscriberHandle {
            id: 1,
            username: Username::parse("rosa").unwrap(),
            outbox: outbox.clone(),
            wire,
            in_presence: true,
            recovery: Some(positions.clone()),
        };
        hub.subscribe(&lobby(), handle).unwrap();
        positions.start(&lobby(), 0);
        hub.go_live(&lobby(), 1, 0);
        // In one channel: the run goes as the frames every such session shares.
        hub.deliver_all(vec![message(1), message(2)]);
        assert_eq!(
            taken(&outbox),
            [[frame(1, &wire), frame(2, &wire)].concat()]
        );
        assert!(frame(2, &wire).ends_with(br#","lobby:2"]"#));
        // In two: each message names both positions.
        positions.start(&ChannelName::parse("ops").unwrap(), 5);
        hub.deliver_all(vec![message(3)]);
        let own = taken(&outbox);
        assert!(own[0].ends_with(br#","lobby:3,ops:5"]"#), "{own:?}");
        assert_eq!(positions.offsets(), "lobby:3,ops:5");
    }

    #[test]
    fn a_catching_up_subscriber_holds_the_run_and_skips_what_history_sent() {
        let hub = Hub::default();
        let ws = Wire::WebSocket(FrameEncoder::plain());
        let outbox = subscriber(&hub, 1, ws);
        hub.deliver_all(vec![message(1), message(2), message(3)]);
        assert!(taken(&outbox).is_empty(), "held during the replay");
        hub.go_live(&lobby(), 1, 2);
        assert_eq!(taken(&outbox), [frame(3, &ws)]);
    }
}

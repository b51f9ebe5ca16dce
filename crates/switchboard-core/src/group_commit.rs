//! The group-commit writer behind [`crate::Node::publish`]: one thread
//! takes every queued publish (up to a batch limit) into one durable append,
//! then delivers the batch in offset order and acknowledges it. Under
//! [`SyncPolicy::BeforeAck`] it delivers right after the write and hands
//! the acks to the fsync thread (see [`crate::durability`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::Publication;
use switchboard_proto::message::now_millis;
use tokio::sync::mpsc;

use crate::broker::{Broker, ChannelEvent};
use crate::channel::ChannelName;
use crate::durability::{SyncPolicy, SyncWindow, Unsynced, run_syncer};
use crate::history::{HistoryError, HistoryStore, NewMessage, Stored};
use crate::node::AckTarget;
use crate::outbox::{HeldWakes, defer_wakes};
use crate::pipeline::PipelineStats;

/// Most messages in a group commit whose subscribers are written through
/// by the writer (see `GroupCommit::send`). At a steady pace batches hold
/// one or two messages; flat out, dozens.
const WRITE_THROUGH_MAX_BATCH: usize = 8;

/// A publish waiting for the writer.
pub(crate) struct AppendRequest {
    pub(crate) message: NewMessage,
    pub(crate) ack: AckTarget,
    /// When the node accepted it (for the pipeline's histograms).
    pub(crate) accepted: Instant,
}

/// What the node keeps of its writer: where publishes queue, and the sync
/// window under `--sync before-ack`.
pub(crate) struct Writer {
    pub(crate) appends: mpsc::Sender<AppendRequest>,
    pub(crate) window: Option<Arc<SyncWindow>>,
}

/// Settings of the writer.
pub(crate) struct WriterConfig {
    pub(crate) append_queue: usize,
    pub(crate) max_batch: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) sync: SyncPolicy,
}

/// Starts the writer thread (and the fsync thread, under `--sync
/// before-ack`). It ends when the returned sender is dropped.
pub(crate) fn start(
    config: WriterConfig,
    history: Arc<dyn HistoryStore>,
    broker: Arc<dyn Broker>,
    stats: Arc<PipelineStats>,
) -> Result<Writer, HistoryError> {
    let (appends, queue) = mpsc::channel(config.append_queue);
    let ack_after_sync = match config.sync {
        SyncPolicy::BeforeDelivery => None,
        SyncPolicy::BeforeAck => Some(start_syncer(&history, config.max_batch)?),
    };
    let window = ack_after_sync.as_ref().map(|a| a.window.clone());
    let writer = GroupCommit {
        runtime: tokio::runtime::Handle::current(),
        queue,
        history,
        broker,
        max_batch: config.max_batch,
        commit_interval: config.commit_interval,
        ack_after_sync,
        stats,
        accepted: Vec::new(),
    };
    // A thread of its own: a commit waits for fsync without holding up
    // a runtime worker, and delivery follows on the same thread with no
    // hand-over in between (each hop costs latency on a busy machine).
    std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || writer.run())
        .map_err(|e| HistoryError::io("cannot start the history writer thread", e))?;
    Ok(Writer { appends, window })
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
    stats: Arc<PipelineStats>,
    /// When each publish of the batch being committed was accepted.
    accepted: Vec<Instant>,
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
        .map_err(|e| HistoryError::io("cannot start the fsync thread", e))?;
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

    fn commit(&mut self, requests: &mut Vec<AppendRequest>) {
        let time = now_millis();
        let began = Instant::now();
        self.accepted.clear();
        self.accepted.extend(requests.iter().map(|r| r.accepted));
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
                let stored_at = Instant::now();
                self.stats.record_commit(&self.accepted, began, stored_at);
                let (publications, events) = message_events(stored, channels);
                // Subscribers' wake-ups wait until the acks are queued: a
                // publisher with a window of messages in flight sends its
                // next ones that much sooner.
                if self.broker.spans_nodes() {
                    // Delivered when the messages come back from Redis.
                    self.broker.publish_all(events);
                    self.broker
                        .acknowledge(publications.into_iter().zip(acks).collect());
                    return;
                }
                let subscribers = defer_wakes(|| self.broker.publish_all(events));
                for (publication, ack) in publications.iter().zip(acks) {
                    ack.succeed(publication);
                }
                self.send(subscribers, publications.len(), stored_at);
            }
            Err(error) => {
                tracing::warn!("append failed: {error}");
                self.stats.metrics.store_errors.inc();
                fail_all(acks, error);
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
        let began = Instant::now();
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
                self.stats.metrics.store_errors.inc();
                fail_all(acks, error);
                return;
            }
        };
        let stored_at = Instant::now();
        self.stats.record_commit(&self.accepted, began, stored_at);
        let (publications, events) = message_events(stored, channels);
        let subscribers = defer_wakes(|| self.broker.publish_all(events));
        let unsynced = Unsynced { publications, acks };
        if let Err(std::sync::mpsc::SendError(unsynced)) = ack_after_sync.syncer.send(unsynced) {
            // The fsync thread is gone: nothing will make these durable.
            let error = HistoryError::Storage("the fsync thread has stopped".into());
            ack_after_sync.window.release(count);
            fail_all(unsynced.acks, error);
        }
        // After the fsync thread has its batch: it syncs while these are written.
        self.send(subscribers, count, stored_at);
    }

    /// Sends a delivered batch of `count` messages on its way. A small batch
    /// is written through subscribers' sockets from here at once. A big one
    /// means publishes arrive faster than commits: its subscribers' tasks
    /// are woken instead, and each joins whatever has accumulated by the
    /// time it runs into one `writev`, where writing every batch through
    /// would cost a send per batch, and the writer is free for the next.
    fn send(&self, subscribers: HeldWakes, count: usize, stored: Instant) {
        let fan_out = |shares| self.stats.fan_out(stored, shares);
        if count > WRITE_THROUGH_MAX_BATCH {
            subscribers.wake_tasks_timed(fan_out);
        } else {
            subscribers.wake_all_sharing(&self.runtime, fan_out);
        }
    }
}

/// Answers every publish of a failed batch with the one error.
pub(crate) fn fail_all(acks: impl IntoIterator<Item = AckTarget>, error: HistoryError) {
    let error = Arc::new(error);
    for ack in acks {
        ack.fail(&error);
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

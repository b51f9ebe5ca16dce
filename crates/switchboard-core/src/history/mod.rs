//! Durable channel history behind a trait, with the embedded SQLite store
//! as its implementation. A store also remembers the idempotency keys of
//! recent publishes, since a key is only as durable as the message it names.
//!
//! A store assigns offsets: it is the one place that knows a channel's last
//! offset durably, so appends must go through a single writer per channel
//! (the node's group-commit task) for offsets to stay gap-free.

mod sqlite;

pub use sqlite::{SqliteHistory, UNSYNCED_GUARD_FILE};

use std::time::Duration;

use async_trait::async_trait;
use switchboard_proto::Publication;

use crate::channel::ChannelName;
use crate::idempotency::IdempotencyKey;
use crate::user::Username;

/// Where a channel's stream stands: `epoch` changes whenever its history is
/// reset, so an `offset` from another epoch means nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// A message to append; the store gives it an offset.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel: ChannelName,
    pub username: Username,
    pub msg: String,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    /// Names the publish: a second append with the same key from the same
    /// user in the same channel, within the store's key window, stores
    /// nothing and answers with the first one's offset and time.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What an append did with one message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The message under its offset. For a repeat, the offset and time are
    /// those of the publish that first used the key.
    pub publication: Publication,
    /// The key was seen before: nothing new was stored, nothing is to be
    /// delivered, and the ack repeats the first one.
    pub repeat: bool,
}

/// Which stored messages to read, ascending by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// Messages with offset greater than this, oldest first.
    Since(u64),
    /// The latest messages.
    Latest,
}

/// A page of a channel's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: String,
    pub messages: Vec<Publication>,
}

/// A channel the store knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub channel: String,
    pub epoch: String,
    pub last_offset: u64,
}

/// How much history each channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest messages kept per channel.
    pub max_count: u64,
    /// Older messages are dropped, if set.
    pub max_age: Option<Duration>,
}

/// Why the store failed; the underlying error stays attached as the source.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store's engine failed (a database error).
    #[error("storage error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file or thread of the store could not be made or used.
    #[error("storage error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// One failure answered to every publish of a batch.
    #[error(transparent)]
    Shared(std::sync::Arc<HistoryError>),
    /// A condition with no underlying error (a damaged guard file, a
    /// stopped thread).
    #[error("storage error: {0}")]
    Storage(String),
    /// The store cannot be reached (Redis down or partitioned): nothing was
    /// stored, and a retry may succeed once it is back.
    #[error("{0}")]
    Unavailable(String),
}

impl HistoryError {
    /// Whether the store was out of reach (as opposed to failing).
    pub fn is_unavailable(&self) -> bool {
        match self {
            HistoryError::Unavailable(_) => true,
            HistoryError::Shared(shared) => shared.is_unavailable(),
            _ => false,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> HistoryError {
        HistoryError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Durable, ordered per-channel history.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends messages (any channels) in one durable write, assigning each
    /// channel's next offsets in order. Returns once the write is durable.
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Stored>, HistoryError>;

    /// [`HistoryStore::append`] from a thread that may block: the node's
    /// writer thread, which commits and then delivers without handing the
    /// batch between threads. A store that writes with async I/O keeps this
    /// default, which drives `append` on `runtime`.
    fn append_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Stored>, HistoryError> {
        runtime.block_on(self.append(batch))
    }

    /// [`HistoryStore::append_blocking`] without waiting for durability:
    /// the write survives a crash of this process, and a power cut only
    /// once [`HistoryStore::sync_blocking`] has returned. A store with no
    /// cheaper write keeps the default, a durable append.
    fn append_unsynced_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Stored>, HistoryError> {
        self.append_blocking(runtime, batch)
    }

    /// Makes every append so far durable.
    fn sync_blocking(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    /// Records durably, before any unsynced append, that up to `window`
    /// messages per channel may be delivered and then lost to a power cut.
    /// A store opened with the guard still in place moves every channel's
    /// offsets `window` ahead, so no offset a subscriber saw is reused.
    fn guard_unsynced(&self, _window: u64) -> Result<(), HistoryError> {
        Ok(())
    }

    /// Removes the guard once everything appended is durable.
    fn lift_unsynced_guard(&self) -> Result<(), HistoryError> {
        Ok(())
    }

    /// Up to `limit` messages, ascending by offset.
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError>;

    /// The channel's current position (offset 0 and a fresh epoch if unknown).
    async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError>;

    /// Every channel that has history.
    async fn channels(&self) -> Result<Vec<ChannelInfo>, HistoryError>;

    /// Drops what `retention` no longer keeps; returns how many messages went.
    async fn trim(&self, retention: Retention, now_millis: u64) -> Result<u64, HistoryError>;

    /// Whether the store answers now: what a readiness check asks.
    async fn ping(&self) -> Result<(), HistoryError>;
}

//! The embedded history store: SQLite in WAL mode with `synchronous=FULL`,
//! so a committed append survives a crash (SIGKILL or power loss). Under
//! `--sync before-ack` appends are written with `synchronous=NORMAL` and
//! made durable by an `fdatasync` of the WAL behind them, with a guard file
//! on disk meanwhile (see [`crate::durability`]).
//!
//! SQLite, because it is the most proven embedded store there is, an
//! operator can open the file with the `sqlite3` shell, and a channel's
//! history is a primary-key range. One connection writes (appends are
//! batched by the node, one transaction and one fsync per batch); another
//! reads, concurrently, as WAL allows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use switchboard_proto::Publication;

use super::{
    ChannelInfo, HistoryError, HistoryPage, HistoryQuery, HistoryStore, NewMessage, Retention,
    Stored, StreamPosition,
};
use crate::channel::ChannelName;
use crate::idempotency::KeyRetention;

/// The file inside the data directory.
pub const DATABASE_FILE: &str = "switchboard.db";

/// Present while delivered messages may not be durable yet; holds how many
/// per channel (the sync window). Found at open, it means an unclean stop.
pub const UNSYNCED_GUARD_FILE: &str = "switchboard.db-unsynced";

/// Most rows one retention transaction deletes.
const TRIM_CHUNK: u64 = 2_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    name        TEXT PRIMARY KEY,
    epoch       TEXT NOT NULL,
    last_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    channel  TEXT NOT NULL,
    offset   INTEGER NOT NULL,
    time     INTEGER NOT NULL,
    username TEXT NOT NULL,
    msg      TEXT NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    channel  TEXT NOT NULL,
    username TEXT NOT NULL,
    key      TEXT NOT NULL,
    offset   INTEGER NOT NULL,
    time     INTEGER NOT NULL,
    PRIMARY KEY (channel, username, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_time ON idempotency_keys (time);
";

/// `store_meta` key: offsets a channel new to the store starts after.
/// Raised by every recovery from an unclean stop, since a channel whose
/// first messages were delivered and then lost has no row to move forward.
const NEW_CHANNEL_FLOOR: &str = "new_channel_floor";

/// `store_meta` key: a random number drawn when the store is created, from
/// which every channel's epoch is derived (see [`channel_epoch`]).
const STORE_SEED: &str = "store_seed";

/// History in a SQLite database under the data directory.
#[derive(Clone)]
pub struct SqliteHistory {
    inner: Arc<Inner>,
}

/// Lock order: `writer` before `channels`; `reader` is never held with
/// either. No lock is held across an await.
struct Inner {
    /// The one connection that writes: appends, trims, the guard's pragma.
    writer: Mutex<Connection>,
    /// Reads (history pages, positions of channels not cached).
    reader: Mutex<Connection>,
    /// Epoch and last committed offset of every channel that has messages:
    /// a cache of the `channels` table. Naming a channel adds nothing here;
    /// only a commit does, and retention drops a channel whose messages are
    /// all gone (its row keeps the offset, read back on demand).
    channels: Mutex<HashMap<ChannelName, ChannelMeta>>,
    /// Where a channel new to the store starts counting (0 unless a
    /// recovery moved offsets forward).
    new_channel_floor: u64,
    /// Seeds the epochs of channels new to the store.
    seed: u64,
    /// How long and how many idempotency keys are kept.
    keys: KeyRetention,
    /// Keys stored, as counted by the writer: exact after each prune, an
    /// overestimate in between (a replaced expired key counts again).
    key_count: AtomicU64,
    data_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
struct ChannelMeta {
    epoch: String,
    last_offset: u64,
}

impl From<rusqlite::Error> for HistoryError {
    fn from(e: rusqlite::Error) -> Self {
        HistoryError::Backend(Box::new(e))
    }
}

impl SqliteHistory {
    /// Opens (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteHistory, HistoryError> {
        SqliteHistory::open_with(data_dir, KeyRetention::default())
    }

    /// [`SqliteHistory::open`], remembering idempotency keys as `keys` says.
    pub fn open_with(data_dir: &Path, keys: KeyRetention) -> Result<SqliteHistory, HistoryError> {
        std::fs::create_dir_all(data_dir).map_err(|e| storage_error("create", data_dir, e))?;
        let path = data_dir.join(DATABASE_FILE);
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        recover_unsynced(&writer, data_dir)?;
        let reader = open_connection(&path)?;
        let channels = load_channels(&writer)?;
        let new_channel_floor = load_meta(&writer, NEW_CHANNEL_FLOOR)?.unwrap_or(0);
        let seed = load_or_create_seed(&writer)?;
        let key_count = count_keys(&writer)?;
        tracing::info!(
            path = %path.display(),
            channels = channels.len(),
            "history store open"
        );
        Ok(SqliteHistory {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                channels: Mutex::new(channels),
                new_channel_floor,
                seed,
                keys,
                key_count: AtomicU64::new(key_count),
                data_dir: data_dir.to_owned(),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| HistoryError::io("storage task failed", e.into()))?
    }
}

fn open_connection(path: &Path) -> Result<Connection, HistoryError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: every commit is fsynced; an acknowledged message survives a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // SQLite ignores a setting it cannot apply: make sure both took.
    let journal: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    let synchronous = synchronous_mode(&conn)?;
    if !journal.eq_ignore_ascii_case("wal") || synchronous != SYNCHRONOUS_FULL {
        return Err(HistoryError::Storage(format!(
            "{}: journal_mode={journal}, synchronous={synchronous}; \
             WAL with synchronous=FULL (2) is required",
            path.display()
        )));
    }
    Ok(conn)
}

/// `PRAGMA synchronous` as SQLite numbers it: 0 OFF, 1 NORMAL, 2 FULL.
const SYNCHRONOUS_FULL: i64 = 2;

fn synchronous_mode(conn: &Connection) -> Result<i64, HistoryError> {
    Ok(conn.pragma_query_value(None, "synchronous", |row| row.get(0))?)
}

/// After an unclean stop with deliveries ahead of fsync (the guard file is
/// still there), moves every channel's offsets past the messages that may
/// have been delivered and lost, so none is handed out twice.
fn recover_unsynced(conn: &Connection, data_dir: &Path) -> Result<(), HistoryError> {
    let guard = data_dir.join(UNSYNCED_GUARD_FILE);
    let window = match std::fs::read_to_string(&guard) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            HistoryError::Storage(format!("{}: not a window size: {e}", guard.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage_error("read", &guard, e)),
    };
    let tx = conn.unchecked_transaction()?;
    let moved = tx.execute(
        "UPDATE channels SET last_offset = last_offset + ?1",
        [window as i64],
    )?;
    tx.execute(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
        params![NEW_CHANNEL_FLOOR, window as i64],
    )?;
    tx.commit()?;
    tracing::warn!(
        channels = moved,
        window,
        "the last run stopped while delivered messages were not all fsynced: \
         offsets move {window} ahead so none is reused"
    );
    remove_durably(&guard, data_dir)
}

fn load_meta(conn: &Connection, key: &str) -> Result<Option<u64>, HistoryError> {
    let value = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = ?1",
            [key],
            |row| row.get::<_, i64>(0),
        )
        .optional()?;
    Ok(value.map(|v| v as u64))
}

fn load_or_create_seed(conn: &Connection) -> Result<u64, HistoryError> {
    if let Some(seed) = load_meta(conn, STORE_SEED)? {
        return Ok(seed);
    }
    let seed = fastrand::u64(..);
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2)",
        params![STORE_SEED, seed as i64],
    )?;
    Ok(seed)
}

fn count_keys(conn: &Connection) -> Result<u64, HistoryError> {
    let count = conn.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |row| {
        row.get::<_, i64>(0)
    })?;
    Ok(count as u64)
}

/// The epoch of a channel new to the store: the same every time it is
/// asked for, with no state kept, so a client that saw an empty channel's
/// epoch finds it unchanged once messages arrive. Derived from the store's
/// seed, so a new store (history wiped) means new epochs. FNV-1a, 64 bits.
fn channel_epoch(seed: u64, channel: &ChannelName) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(channel.as_str().as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn storage_error(what: &str, path: &Path, e: std::io::Error) -> HistoryError {
    HistoryError::io(format!("cannot {what} {}", path.display()), e)
}

/// Makes a file's creation or removal durable: fsync of its directory.
fn sync_dir(dir: &Path) -> Result<(), HistoryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage_error("fsync", dir, e))
}

fn remove_durably(file: &Path, dir: &Path) -> Result<(), HistoryError> {
    match std::fs::remove_file(file) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(storage_error("remove", file, e)),
    }
}

/// The oldest offset still stored for `channel`, if any.
fn first_offset(conn: &Connection, channel: &str) -> Result<Option<u64>, HistoryError> {
    let first = conn.query_row(
        "SELECT MIN(offset) FROM messages WHERE channel = ?1",
        [channel],
        |row| row.get::<_, Option<i64>>(0),
    )?;
    Ok(first.map(|o| o as u64))
}

/// The channels that have messages; the others are read when asked for.
fn load_channels(conn: &Connection) -> Result<HashMap<ChannelName, ChannelMeta>, HistoryError> {
    let mut statement = conn.prepare(
        "SELECT name, epoch, last_offset FROM channels
         WHERE EXISTS (SELECT 1 FROM messages WHERE channel = name)",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut channels = HashMap::new();
    for row in rows {
        let (name, epoch, last_offset) = row?;
        // Names were validated before they were stored; skip any that were not.
        if let Ok(channel) = ChannelName::parse(&name) {
            channels.insert(
                channel,
                ChannelMeta {
                    epoch,
                    last_offset: last_offset as u64,
                },
            );
        }
    }
    Ok(channels)
}

impl Inner {
    /// `channel`'s epoch and last offset, through `conn` when not cached.
    /// Adds nothing to the cache: naming a channel must not create state.
    fn meta_via(
        &self,
        conn: &Connection,
        channel: &ChannelName,
    ) -> Result<ChannelMeta, HistoryError> {
        if let Some(meta) = self.channels.lock().get(channel) {
            return Ok(meta.clone());
        }
        let stored = conn
            .prepare_cached("SELECT epoch, last_offset FROM channels WHERE name = ?1")?
            .query_row([channel.as_str()], |row| {
                Ok(ChannelMeta {
                    epoch: row.get(0)?,
                    last_offset: row.get::<_, i64>(1)? as u64,
                })
            })
            .optional()?;
        Ok(stored.unwrap_or_else(|| ChannelMeta {
            epoch: channel_epoch(self.seed, channel),
            last_offset: self.new_channel_floor,
        }))
    }

    fn meta(&self, channel: &ChannelName) -> Result<ChannelMeta, HistoryError> {
        if let Some(meta) = self.channels.lock().get(channel) {
            return Ok(meta.clone());
        }
        self.meta_via(&self.reader.lock(), channel)
    }

    fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Stored>, HistoryError> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        let mut touched: HashMap<ChannelName, ChannelMeta> = HashMap::new();
        let mut stored = Vec::with_capacity(batch.len());
        let mut keys_added = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (channel, offset, time, username, msg) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for message in batch {
                if let Some(first) = self.repeated_key(&tx, &message)? {
                    stored.push(first);
                    continue;
                }
                let meta = match touched.entry(message.channel.clone()) {
                    std::collections::hash_map::Entry::Occupied(meta) => meta.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(self.meta_via(&tx, &message.channel)?)
                    }
                };
                meta.last_offset += 1;
                insert.execute(params![
                    message.channel.as_str(),
                    meta.last_offset as i64,
                    message.time as i64,
                    message.username.as_str(),
                    message.msg,
                ])?;
                if let Some(key) = &message.idempotency_key {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys (channel, username, key, offset, time)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        message.channel.as_str(),
                        message.username.as_str(),
                        key.as_str(),
                        meta.last_offset as i64,
                        message.time as i64,
                    ])?;
                    keys_added += 1;
                }
                stored.push(Stored {
                    publication: Publication {
                        channel: message.channel.as_str().to_owned(),
                        offset: meta.last_offset,
                        username: message.username.as_str().to_owned(),
                        msg: message.msg,
                        time: message.time,
                    },
                    repeat: false,
                });
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO channels (name, epoch, last_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET last_offset = excluded.last_offset",
            )?;
            for (channel, meta) in &touched {
                upsert.execute(params![
                    channel.as_str(),
                    meta.epoch,
                    meta.last_offset as i64
                ])?;
            }
        }
        if keys_added > 0 {
            self.bound_keys(&tx, keys_added)?;
        }
        tx.commit()?;
        // Only a committed offset becomes visible to `position`.
        self.channels.lock().extend(touched);
        Ok(stored)
    }

    /// The first publish under `message`'s idempotency key, if the key was
    /// used within the window by the same user in the same channel.
    fn repeated_key(
        &self,
        tx: &Connection,
        message: &NewMessage,
    ) -> Result<Option<Stored>, HistoryError> {
        let Some(key) = &message.idempotency_key else {
            return Ok(None);
        };
        let since = message
            .time
            .saturating_sub(self.keys.window.as_millis() as u64);
        let first = tx
            .prepare_cached(
                "SELECT offset, time FROM idempotency_keys
                 WHERE channel = ?1 AND username = ?2 AND key = ?3 AND time >= ?4",
            )?
            .query_row(
                params![
                    message.channel.as_str(),
                    message.username.as_str(),
                    key.as_str(),
                    since as i64
                ],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            )
            .optional()?;
        Ok(first.map(|(offset, time)| Stored {
            publication: Publication {
                channel: message.channel.as_str().to_owned(),
                offset,
                username: message.username.as_str().to_owned(),
                msg: message.msg.clone(),
                time,
            },
            repeat: true,
        }))
    }

    /// Keeps at most `max_keys` keys: past it, the oldest tenth goes, in the
    /// same transaction as the append that crossed the line.
    fn bound_keys(&self, tx: &Connection, added: u64) -> Result<(), HistoryError> {
        let max = self.keys.max_keys;
        if self.key_count.fetch_add(added, Ordering::Relaxed) + added <= max {
            return Ok(());
        }
        let count = count_keys(tx)?;
        let excess = count.saturating_sub(max - max / 10);
        if count > max {
            tx.prepare_cached(
                "DELETE FROM idempotency_keys WHERE (channel, username, key) IN
                 (SELECT channel, username, key FROM idempotency_keys ORDER BY time LIMIT ?1)",
            )?
            .execute([excess as i64])?;
            self.key_count.store(count - excess, Ordering::Relaxed);
        } else {
            self.key_count.store(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Forgets the keys older than the window.
    fn expire_keys(&self, now_millis: u64) -> Result<u64, HistoryError> {
        let cutoff = now_millis.saturating_sub(self.keys.window.as_millis() as u64);
        let conn = self.writer.lock();
        let expired = conn
            .prepare_cached("DELETE FROM idempotency_keys WHERE time < ?1")?
            .execute([cutoff as i64])?;
        self.key_count.store(count_keys(&conn)?, Ordering::Relaxed);
        Ok(expired as u64)
    }

    fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let epoch = self.meta(channel)?.epoch;
        let conn = self.reader.lock();
        let (sql, after) = match query {
            HistoryQuery::Since(since) => (
                "SELECT offset, time, username, msg FROM messages
                 WHERE channel = ?1 AND offset > ?2 ORDER BY offset ASC LIMIT ?3",
                since,
            ),
            HistoryQuery::Latest => (
                "SELECT offset, time, username, msg FROM messages
                 WHERE channel = ?1 AND offset > ?2 ORDER BY offset DESC LIMIT ?3",
                0,
            ),
        };
        let mut statement = conn.prepare_cached(sql)?;
        let rows = statement.query_map(
            params![channel.as_str(), after as i64, limit as i64],
            |row| {
                Ok(Publication {
                    channel: channel.as_str().to_owned(),
                    offset: row.get::<_, i64>(0)? as u64,
                    time: row.get::<_, i64>(1)? as u64,
                    username: row.get(2)?,
                    msg: row.get(3)?,
                })
            },
        )?;
        let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
        if query == HistoryQuery::Latest {
            messages.reverse();
        }
        Ok(HistoryPage { epoch, messages })
    }

    /// Drops what `retention` no longer keeps, oldest first, in
    /// transactions of at most [`TRIM_CHUNK`] rows: between them appends
    /// get the writer, so a large trim (millions of rows after a burst)
    /// never holds publishing up for long.
    fn trim(&self, retention: Retention, now_millis: u64) -> Result<u64, HistoryError> {
        let channels: Vec<(ChannelName, u64)> = self
            .channels
            .lock()
            .iter()
            .map(|(name, meta)| (name.clone(), meta.last_offset))
            .collect();
        let cutoff = retention
            .max_age
            .map(|age| now_millis.saturating_sub(age.as_millis() as u64));
        let mut removed = 0;
        for (channel, last_offset) in channels {
            let Some(mut oldest) = first_offset(&self.writer.lock(), channel.as_str())? else {
                self.forget_if_empty(&channel)?;
                continue;
            };
            let keep_from = self.keep_from(&channel, oldest, last_offset, retention.max_count)?;
            while oldest < keep_from {
                let end = keep_from.min(oldest + TRIM_CHUNK);
                removed += self.delete_range(&channel, oldest, end, None)?;
                oldest = end;
            }
            // Times grow with offsets: stop once the oldest message left is
            // not too old. Each chunk starts at the oldest message left, so
            // a gap a recovery left in the offsets is stepped over.
            if let Some(cutoff) = cutoff {
                loop {
                    let end = oldest + TRIM_CHUNK;
                    let deleted = self.delete_range(&channel, oldest, end, Some(cutoff))?;
                    removed += deleted;
                    if deleted == 0 {
                        break;
                    }
                    match first_offset(&self.writer.lock(), channel.as_str())? {
                        Some(next) => oldest = next,
                        None => break,
                    }
                }
            }
            self.forget_if_empty(&channel)?;
        }
        self.expire_keys(now_millis)?;
        Ok(removed)
    }

    /// Drops `channel` from the cache if it has no messages left: its row
    /// keeps its offset and epoch. Under the writer's lock, so no append
    /// can add a message in between.
    fn forget_if_empty(&self, channel: &ChannelName) -> Result<(), HistoryError> {
        let conn = self.writer.lock();
        if first_offset(&conn, channel.as_str())?.is_none() {
            self.channels.lock().remove(channel);
        }
        Ok(())
    }

    /// Where `channel`'s history starts once trimmed to its newest
    /// `max_count` messages. Offsets count up without gaps unless a recovery
    /// from an unclean stop moved them forward: until one has, that is
    /// arithmetic; after one, the newest messages are counted, so a gap
    /// never counts as messages kept.
    fn keep_from(
        &self,
        channel: &ChannelName,
        oldest: u64,
        last_offset: u64,
        max_count: u64,
    ) -> Result<u64, HistoryError> {
        let span = last_offset.saturating_sub(oldest) + 1;
        if span <= max_count {
            return Ok(oldest);
        }
        if self.new_channel_floor == 0 || max_count == 0 {
            return Ok(last_offset - max_count + 1);
        }
        let nth_newest = self
            .writer
            .lock()
            .query_row(
                "SELECT offset FROM messages WHERE channel = ?1
                 ORDER BY offset DESC LIMIT 1 OFFSET ?2",
                params![channel.as_str(), (max_count - 1) as i64],
                |row| row.get::<_, i64>(0),
            )
            .optional()?;
        // Fewer than `max_count` messages: all are kept.
        Ok(nth_newest.map_or(oldest, |offset| offset as u64))
    }

    /// Deletes `channel`'s messages with `start <= offset < end` (and, with
    /// a cutoff, `time < cutoff`) in one transaction.
    fn delete_range(
        &self,
        channel: &ChannelName,
        start: u64,
        end: u64,
        older_than: Option<u64>,
    ) -> Result<u64, HistoryError> {
        let conn = self.writer.lock();
        let deleted = conn
            .prepare_cached(
                "DELETE FROM messages WHERE channel = ?1 AND offset >= ?2 AND offset < ?3 AND time < ?4",
            )?
            .execute(params![
                channel.as_str(),
                start as i64,
                end as i64,
                older_than.map_or(i64::MAX, |t| t as i64),
            ])?;
        Ok(deleted as u64)
    }
}

#[async_trait]
impl HistoryStore for SqliteHistory {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Stored>, HistoryError> {
        self.blocking(move |inner| inner.append(batch)).await
    }

    fn append_blocking(
        &self,
        _runtime: &tokio::runtime::Handle,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Stored>, HistoryError> {
        self.inner.append(batch)
    }

    /// fdatasync of the WAL, through a descriptor of its own: fsync flushes
    /// the file, whoever wrote it. A commit is in the WAL once it returns.
    fn sync_blocking(&self) -> Result<(), HistoryError> {
        let wal = self.inner.data_dir.join(format!("{DATABASE_FILE}-wal"));
        match std::fs::File::open(&wal) {
            Ok(file) => file
                .sync_data()
                .map_err(|e| storage_error("fsync", &wal, e)),
            // No WAL yet: nothing was written.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_error("open", &wal, e)),
        }
    }

    fn guard_unsynced(&self, window: u64) -> Result<(), HistoryError> {
        let dir = &self.inner.data_dir;
        let guard = dir.join(UNSYNCED_GUARD_FILE);
        std::fs::write(&guard, format!("{window}\n"))
            .and_then(|()| std::fs::File::open(&guard)?.sync_all())
            .map_err(|e| storage_error("write", &guard, e))?;
        sync_dir(dir)?;
        // NORMAL in WAL mode: commits skip the fsync (so the trait's default
        // `append_unsynced_blocking`, a plain commit, returns once the WAL is
        // written); checkpoints still sync.
        self.inner
            .writer
            .lock()
            .pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    fn lift_unsynced_guard(&self) -> Result<(), HistoryError> {
        self.inner
            .writer
            .lock()
            .pragma_update(None, "synchronous", "FULL")?;
        self.sync_blocking()?;
        let dir = &self.inner.data_dir;
        remove_durably(&dir.join(UNSYNCED_GUARD_FILE), dir)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let channel = channel.clone();
        self.blocking(move |inner| inner.read(&channel, query, limit))
            .await
    }

    async fn ping(&self) -> Result<(), HistoryError> {
        self.blocking(|inner| {
            inner.reader.lock().query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError> {
        let meta = self.inner.meta(channel)?;
        Ok(StreamPosition {
            offset: meta.last_offset,
            epoch: meta.epoch,
        })
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, HistoryError> {
        let mut channels: Vec<ChannelInfo> = self
            .inner
            .channels
            .lock()
            .iter()
            .filter(|(_, meta)| meta.last_offset > 0)
            .map(|(name, meta)| ChannelInfo {
                channel: name.as_str().to_owned(),
                epoch: meta.epoch.clone(),
                last_offset: meta.last_offset,
            })
            .collect();
        channels.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(channels)
    }

    async fn trim(&self, retention: Retention, now_millis: u64) -> Result<u64, HistoryError> {
        self.blocking(move |inner| inner.trim(retention, now_millis))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::IdempotencyKey;
    use crate::user::Username;
    use std::time::Duration;

    fn message(channel: &str, msg: &str, time: u64) -> NewMessage {
        NewMessage {
            channel: ChannelName::parse(channel).unwrap(),
            username: Username::parse("alice").unwrap(),
            msg: msg.into(),
            time,
            idempotency_key: None,
        }
    }

    fn lobby() -> ChannelName {
        ChannelName::parse("lobby").unwrap()
    }

    fn keyed(channel: &str, msg: &str, time: u64, key: &str) -> NewMessage {
        NewMessage {
            idempotency_key: Some(IdempotencyKey::parse(key).unwrap()),
            ..message(channel, msg, time)
        }
    }

    fn offsets(stored: &[Stored]) -> Vec<(u64, bool)> {
        stored
            .iter()
            .map(|s| (s.publication.offset, s.repeat))
            .collect()
    }

    #[tokio::test]
    async fn a_repeated_key_is_answered_with_the_first_offset_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let first = store
            .append(vec![keyed("lobby", "hello", 1_000, "k1")])
            .await
            .unwrap();
        assert_eq!(offsets(&first), [(1, false)]);
        // Same key twice in one batch, beside a new key and no key.
        let again = store
            .append(vec![
                keyed("lobby", "hello", 2_000, "k1"),
                keyed("lobby", "other", 2_000, "k2"),
                keyed("lobby", "other", 2_000, "k2"),
                message("lobby", "plain", 2_000),
            ])
            .await
            .unwrap();
        assert_eq!(
            offsets(&again),
            [(1, true), (2, false), (2, true), (3, false)]
        );
        // The repeat carries the first publish's time.
        assert_eq!(again[0].publication.time, 1_000);
        // The key is scoped to user and channel.
        let elsewhere = store
            .append(vec![
                keyed("other", "hello", 3_000, "k1"),
                NewMessage {
                    username: Username::parse("bob").unwrap(),
                    ..keyed("lobby", "hello", 3_000, "k1")
                },
            ])
            .await
            .unwrap();
        assert_eq!(offsets(&elsewhere), [(1, false), (4, false)]);
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 10)
            .await
            .unwrap();
        let texts: Vec<&str> = page.messages.iter().map(|m| m.msg.as_str()).collect();
        assert_eq!(texts, ["hello", "other", "plain", "hello"]);
        // Restarting forgets nothing.
        drop(store);
        let store = SqliteHistory::open(dir.path()).unwrap();
        let after_restart = store
            .append(vec![keyed("lobby", "hello", 4_000, "k1")])
            .await
            .unwrap();
        assert_eq!(offsets(&after_restart), [(1, true)]);
    }

    #[tokio::test]
    async fn a_key_past_its_window_names_a_new_message_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRetention {
            window: Duration::from_secs(10),
            max_keys: 100,
        };
        let store = SqliteHistory::open_with(dir.path(), keys).unwrap();
        store
            .append(vec![keyed("lobby", "a", 1_000, "k")])
            .await
            .unwrap();
        let within = store
            .append(vec![keyed("lobby", "a", 11_000, "k")])
            .await
            .unwrap();
        assert_eq!(offsets(&within), [(1, true)]);
        let past = store
            .append(vec![keyed("lobby", "a", 11_001, "k")])
            .await
            .unwrap();
        assert_eq!(offsets(&past), [(2, false)]);
        // Retention forgets keys older than the window.
        store
            .append(vec![keyed("lobby", "b", 11_002, "old")])
            .await
            .unwrap();
        store
            .trim(
                Retention {
                    max_count: 100,
                    max_age: None,
                },
                30_000,
            )
            .await
            .unwrap();
        assert_eq!(count_keys(&store.inner.reader.lock()).unwrap(), 0);
    }

    #[tokio::test]
    async fn keys_past_the_count_bound_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRetention {
            window: Duration::from_secs(3600),
            max_keys: 20,
        };
        let store = SqliteHistory::open_with(dir.path(), keys).unwrap();
        for i in 0..50u64 {
            let key = format!("k{i}");
            store
                .append(vec![keyed("lobby", "m", 1_000 + i, &key)])
                .await
                .unwrap();
            assert!(count_keys(&store.inner.reader.lock()).unwrap() <= 20);
        }
        // The newest is remembered, the oldest forgotten.
        let newest = store
            .append(vec![keyed("lobby", "m", 2_000, "k49")])
            .await
            .unwrap();
        assert!(newest[0].repeat);
        let oldest = store
            .append(vec![keyed("lobby", "m", 2_000, "k0")])
            .await
            .unwrap();
        assert!(!oldest[0].repeat);
    }

    #[tokio::test]
    async fn naming_channels_creates_no_state_and_their_epochs_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        for i in 0..1_000 {
            let channel = ChannelName::parse(&format!("nobody-{i}")).unwrap();
            store.position(&channel).await.unwrap();
            store
                .read(&channel, HistoryQuery::Latest, 10)
                .await
                .unwrap();
        }
        assert!(store.inner.channels.lock().is_empty());
        // An empty channel's epoch is the one it keeps once it has messages,
        // across a restart.
        let before = store.position(&lobby()).await.unwrap();
        assert_eq!(before.offset, 0);
        store
            .append(vec![message("lobby", "first", 1)])
            .await
            .unwrap();
        let after = store.position(&lobby()).await.unwrap();
        assert_eq!((after.offset, &after.epoch), (1, &before.epoch));
        drop(store);
        let store = SqliteHistory::open(dir.path()).unwrap();
        assert_eq!(store.position(&lobby()).await.unwrap(), after);
    }

    #[tokio::test]
    async fn a_channel_trimmed_empty_leaves_the_cache_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        store
            .append((1..=3).map(|i| message("lobby", "m", i)).collect())
            .await
            .unwrap();
        let epoch = store.position(&lobby()).await.unwrap().epoch;
        let an_hour = Retention {
            max_count: 100,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(store.trim(an_hour, 10_000_000).await.unwrap(), 3);
        assert!(store.inner.channels.lock().is_empty());
        // Its position is read back from its row: no offset is reused.
        assert_eq!(
            store.position(&lobby()).await.unwrap(),
            StreamPosition { offset: 3, epoch }
        );
        let next = store
            .append(vec![message("lobby", "n", 10_000_001)])
            .await
            .unwrap();
        assert_eq!(next[0].publication.offset, 4);
        assert_eq!(store.channels().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn assigns_gap_free_offsets_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let out = store
            .append(vec![
                message("lobby", "a", 1),
                message("other", "x", 1),
                message("lobby", "b", 2),
            ])
            .await
            .unwrap();
        let offsets: Vec<(String, u64)> = out
            .iter()
            .map(|s| (s.publication.channel.clone(), s.publication.offset))
            .collect();
        assert_eq!(
            offsets,
            [
                ("lobby".into(), 1),
                ("other".into(), 1),
                ("lobby".into(), 2)
            ]
        );
        let more = store.append(vec![message("lobby", "c", 3)]).await.unwrap();
        assert_eq!(more[0].publication.offset, 3);
        assert_eq!(store.position(&lobby()).await.unwrap().offset, 3);
    }

    #[tokio::test]
    async fn reads_since_and_latest_in_ascending_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let batch = (1..=10)
            .map(|i| message("lobby", &i.to_string(), i))
            .collect();
        store.append(batch).await.unwrap();
        let since = store
            .read(&lobby(), HistoryQuery::Since(7), 100)
            .await
            .unwrap();
        let msgs: Vec<&str> = since.messages.iter().map(|m| m.msg.as_str()).collect();
        assert_eq!(msgs, ["8", "9", "10"]);
        let latest = store.read(&lobby(), HistoryQuery::Latest, 3).await.unwrap();
        let offsets: Vec<u64> = latest.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [8, 9, 10]);
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 2)
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 2);
    }

    #[tokio::test]
    async fn survives_reopening_with_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let store = SqliteHistory::open(dir.path()).unwrap();
            store
                .append(vec![message("lobby", "kept", 5)])
                .await
                .unwrap();
            store.position(&lobby()).await.unwrap().epoch
        };
        let store = SqliteHistory::open(dir.path()).unwrap();
        let position = store.position(&lobby()).await.unwrap();
        assert_eq!(position, StreamPosition { offset: 1, epoch });
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 10)
            .await
            .unwrap();
        assert_eq!(page.messages[0].msg, "kept");
        assert_eq!(store.channels().await.unwrap().len(), 1);
    }

    /// Appends `count` messages to `channel` without waiting for an fsync,
    /// under the guard, and returns the last offset.
    fn append_unsynced(store: &SqliteHistory, channel: &str, count: u64) -> u64 {
        let runtime = tokio::runtime::Handle::current();
        let batch = (0..count).map(|i| message(channel, "m", i)).collect();
        let stored = store.append_unsynced_blocking(&runtime, batch).unwrap();
        stored.last().unwrap().publication.offset
    }

    /// A store that wrote `count` messages to `lobby` under a guard of
    /// `window`, synced them, and was dropped with the guard in place.
    fn stop_uncleanly(dir: &Path, window: u64, count: u64) {
        let store = SqliteHistory::open(dir).unwrap();
        store.guard_unsynced(window).unwrap();
        append_unsynced(&store, "lobby", count);
        store.sync_blocking().unwrap();
    }

    #[tokio::test]
    async fn reopening_under_the_guard_moves_every_offset_past_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let store = SqliteHistory::open(dir.path()).unwrap();
            store.guard_unsynced(8).unwrap();
            assert!(dir.path().join(UNSYNCED_GUARD_FILE).exists());
            assert_eq!(append_unsynced(&store, "lobby", 3), 3);
            store.sync_blocking().unwrap();
            store.position(&lobby()).await.unwrap().epoch
            // Dropped with the guard in place: an unclean stop.
        };
        let store = SqliteHistory::open(dir.path()).unwrap();
        assert!(!dir.path().join(UNSYNCED_GUARD_FILE).exists());
        // What was stored is all there, under the same epoch…
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 10)
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 3);
        assert_eq!(page.epoch, epoch);
        // …and offsets go on past anything that could have been delivered.
        let next = store
            .append(vec![message("lobby", "after", 9)])
            .await
            .unwrap();
        assert_eq!(next[0].publication.offset, 3 + 8 + 1);
        // A channel new to the store starts past the window too: its first
        // messages may have been delivered and lost with no row left.
        let fresh = store
            .append(vec![message("fresh", "first", 9)])
            .await
            .unwrap();
        assert_eq!(fresh[0].publication.offset, 8 + 1);
        // Opening again, cleanly, moves nothing.
        drop(store);
        let store = SqliteHistory::open(dir.path()).unwrap();
        assert_eq!(store.position(&lobby()).await.unwrap().offset, 12);
    }

    #[tokio::test]
    async fn retention_by_count_does_not_count_the_gap_a_recovery_left() {
        let dir = tempfile::tempdir().unwrap();
        // Offsets 6..=105 are skipped.
        stop_uncleanly(dir.path(), 100, 5);
        let store = SqliteHistory::open(dir.path()).unwrap();
        let after: Vec<NewMessage> = (0..5).map(|i| message("lobby", "after", i)).collect();
        assert_eq!(
            store.append(after).await.unwrap()[0].publication.offset,
            106
        );
        let keep_eight = Retention {
            max_count: 8,
            max_age: None,
        };
        assert_eq!(store.trim(keep_eight, 0).await.unwrap(), 2);
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 20)
            .await
            .unwrap();
        let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [3, 4, 5, 106, 107, 108, 109, 110]);
        // Fewer than the limit, across the gap: nothing goes.
        let keep_twenty = Retention {
            max_count: 20,
            max_age: None,
        };
        assert_eq!(store.trim(keep_twenty, 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn retention_by_age_steps_over_a_gap_wider_than_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        stop_uncleanly(dir.path(), 3 * TRIM_CHUNK, 5);
        let store = SqliteHistory::open(dir.path()).unwrap();
        let old = (0..5).map(|i| message("lobby", "old", 100 + i)).collect();
        store.append(old).await.unwrap();
        store
            .append(vec![message("lobby", "new", 5_000)])
            .await
            .unwrap();
        let a_second = Retention {
            max_count: 1_000,
            max_age: Some(Duration::from_secs(1)),
        };
        // Everything before time 4,000 goes in one run, on both sides of the gap.
        assert_eq!(store.trim(a_second, 5_000).await.unwrap(), 10);
        let page = store
            .read(&lobby(), HistoryQuery::Since(0), 20)
            .await
            .unwrap();
        let kept: Vec<&str> = page.messages.iter().map(|m| m.msg.as_str()).collect();
        assert_eq!(kept, ["new"]);
    }

    #[test]
    fn a_damaged_guard_stops_the_open_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteHistory::open(dir.path()).unwrap());
        std::fs::write(dir.path().join(UNSYNCED_GUARD_FILE), "not a number").unwrap();
        let error = SqliteHistory::open(dir.path()).err().expect("refused");
        assert!(error.to_string().contains(UNSYNCED_GUARD_FILE), "{error}");
        // Left in place: offsets must not be handed out until it is resolved.
        assert!(dir.path().join(UNSYNCED_GUARD_FILE).exists());
    }

    #[tokio::test]
    async fn a_lifted_guard_leaves_offsets_contiguous() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteHistory::open(dir.path()).unwrap();
            store.guard_unsynced(8).unwrap();
            append_unsynced(&store, "lobby", 3);
            store.lift_unsynced_guard().unwrap();
            assert!(!dir.path().join(UNSYNCED_GUARD_FILE).exists());
        }
        let store = SqliteHistory::open(dir.path()).unwrap();
        let next = store
            .append(vec![message("lobby", "after", 9)])
            .await
            .unwrap();
        assert_eq!(next[0].publication.offset, 4);
    }

    #[test]
    fn commits_are_fsynced_unless_the_guard_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let mode = || synchronous_mode(&store.inner.writer.lock()).unwrap();
        assert_eq!(mode(), SYNCHRONOUS_FULL);
        store.guard_unsynced(8).unwrap();
        assert_eq!(mode(), 1, "NORMAL: the fsync thread syncs behind");
        store.lift_unsynced_guard().unwrap();
        assert_eq!(mode(), SYNCHRONOUS_FULL);
    }

    #[tokio::test]
    async fn a_new_store_gives_a_new_epoch() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ea = SqliteHistory::open(a.path())
            .unwrap()
            .position(&lobby())
            .await
            .unwrap();
        let eb = SqliteHistory::open(b.path())
            .unwrap()
            .position(&lobby())
            .await
            .unwrap();
        assert_ne!(ea.epoch, eb.epoch);
        assert_eq!(ea.offset, 0);
    }

    #[tokio::test]
    async fn trims_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let batch = (1..=10).map(|i| message("lobby", "m", i * 1000)).collect();
        store.append(batch).await.unwrap();
        let by_count = Retention {
            max_count: 6,
            max_age: None,
        };
        assert_eq!(store.trim(by_count, 10_000).await.unwrap(), 4);
        let first = first_offset(&store.inner.reader.lock(), "lobby").unwrap();
        assert_eq!(first, Some(5));
        let by_age = Retention {
            max_count: 100,
            max_age: Some(Duration::from_secs(3)),
        };
        // Cutoff 7000 ms: offsets 5 and 6 (times 5000, 6000) go.
        assert_eq!(store.trim(by_age, 10_000).await.unwrap(), 2);
        // Offsets keep counting after a trim.
        let next = store
            .append(vec![message("lobby", "n", 11_000)])
            .await
            .unwrap();
        assert_eq!(next[0].publication.offset, 11);
    }

    #[tokio::test]
    async fn trims_more_than_a_chunk_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteHistory::open(dir.path()).unwrap();
        let total = TRIM_CHUNK * 2 + 500;
        // Message i has time i ms, in both channels.
        let batch = (1..=total)
            .flat_map(|i| [message("lobby", "m", i), message("other", "m", i)])
            .collect();
        store.append(batch).await.unwrap();
        let by_count = Retention {
            max_count: 100,
            max_age: None,
        };
        // Both channels keep their newest 100; `now` is before every message.
        assert_eq!(store.trim(by_count, 0).await.unwrap(), 2 * (total - 100));
        let first = first_offset(&store.inner.reader.lock(), "lobby").unwrap();
        assert_eq!(first, Some(total - 99));
        // By age, across chunks: a fresh channel, keep the last 50 ms.
        let batch = (1..=total).map(|i| message("aged", "m", i)).collect();
        store.append(batch).await.unwrap();
        let by_age = Retention {
            max_count: u64::MAX,
            max_age: Some(Duration::from_millis(50)),
        };
        // Cutoff total - 49: lobby and other lose 50 each, aged all but 50.
        let removed = store.trim(by_age, total + 1).await.unwrap();
        assert_eq!(removed, 50 + 50 + (total - 50));
        let first = first_offset(&store.inner.reader.lock(), "aged").unwrap();
        assert_eq!(first, Some(total - 49));
    }
}

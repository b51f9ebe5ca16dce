//! Channel history in Redis: one sorted set of entries per channel, scored
//! by offset, and a hash with the channel's epoch and last offset. Appends
//! go through one script per group commit (one round trip for the batch).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::entry::parse_entry;
use super::{Redis, new_epoch, redis_error};
use crate::channel::ChannelName;
use crate::history::{
    ChannelInfo, HistoryError, HistoryPage, HistoryQuery, HistoryStore, NewMessage, Retention,
    Stored, StreamPosition,
};
use crate::idempotency::KeyRetention;
use switchboard_proto::Publication;

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/append.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/read.lua")));
static TRIM_AGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/trim_age.lua")));

/// The Redis engine's history store.
pub struct RedisHistory {
    redis: Redis,
    /// Newest messages kept per channel, trimmed at every append.
    max_count: u64,
    /// How long an idempotency key is remembered (Redis expires it).
    keys: KeyRetention,
}

impl RedisHistory {
    pub(crate) fn new(redis: Redis, max_count: u64, keys: KeyRetention) -> RedisHistory {
        RedisHistory {
            redis,
            max_count,
            keys,
        }
    }

    /// Runs the read script: the channel's position and up to `limit` entries.
    async fn read_script(
        &self,
        channel: &ChannelName,
        since: Option<u64>,
        limit: usize,
    ) -> Result<(StreamPosition, Vec<Publication>), HistoryError> {
        let reply: Vec<Vec<u8>> = READ
            .prepare_invoke()
            .arg(&*self.redis.prefix)
            .arg(channel.as_str())
            .arg(new_epoch())
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            .arg(limit)
            .invoke_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        let mut reply = reply.into_iter();
        let malformed = |what| HistoryError::Storage(format!("malformed read reply: {what}"));
        let epoch = reply
            .next()
            .and_then(|e| String::from_utf8(e).ok())
            .ok_or_else(|| malformed("epoch"))?;
        let offset = reply
            .next()
            .and_then(|o| String::from_utf8(o).ok()?.parse().ok())
            .ok_or_else(|| malformed("offset"))?;
        let messages = reply
            .map(|entry| parse_entry(channel, &entry))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HistoryError::Storage(e.to_string()))?;
        Ok((StreamPosition { offset, epoch }, messages))
    }
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Stored>, HistoryError> {
        let mut invocation = APPEND.prepare_invoke();
        invocation
            .arg(&*self.redis.prefix)
            .arg(new_epoch())
            .arg(self.max_count)
            .arg(self.keys.window.as_millis().max(1) as u64);
        for message in &batch {
            invocation
                .arg(message.channel.as_str())
                .arg(message.username.as_str())
                .arg(message.msg.as_str())
                .arg(message.time)
                .arg(message.idempotency_key.as_ref().map_or("", |k| k.as_str()));
        }
        let reply: Vec<u64> = invocation
            .invoke_async(&mut self.redis.commands.clone())
            .await
            .map_err(redis_error)?;
        if reply.len() != batch.len() * 3 {
            return Err(HistoryError::Storage(format!(
                "append answered {} numbers for {} messages",
                reply.len(),
                batch.len()
            )));
        }
        Ok(batch
            .into_iter()
            .zip(reply.chunks_exact(3))
            .map(|(message, stored)| Stored {
                publication: Publication {
                    channel: message.channel.as_str().to_owned(),
                    offset: stored[0],
                    username: message.username.as_str().to_owned(),
                    msg: message.msg,
                    time: stored[1],
                },
                repeat: stored[2] == 1,
            })
            .collect())
    }

    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let since = match query {
            HistoryQuery::Since(since) => Some(since),
            HistoryQuery::Latest => None,
        };
        let (position, messages) = self.read_script(channel, since, limit).await?;
        Ok(HistoryPage {
            epoch: position.epoch,
            messages,
        })
    }

    async fn ping(&self) -> Result<(), HistoryError> {
        let mut connection = self.redis.commands.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(redis_error)
    }

    async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError> {
        Ok(self.read_script(channel, None, 0).await?.0)
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, HistoryError> {
        let mut connection = self.redis.commands.clone();
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}:channels", self.redis.prefix))
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for name in &names {
            pipeline
                .cmd("HMGET")
                .arg(format!("{}:meta:{name}", self.redis.prefix))
                .arg("epoch")
                .arg("offset");
        }
        let metas: Vec<(Option<String>, Option<u64>)> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(names
            .into_iter()
            .zip(metas)
            .map(|(channel, (epoch, offset))| ChannelInfo {
                channel,
                epoch: epoch.unwrap_or_default(),
                last_offset: offset.unwrap_or(0),
            })
            .collect())
    }

    /// Count is trimmed at every append; this drops what is older than
    /// `retention.max_age`, one script per channel, in one round trip.
    async fn trim(&self, retention: Retention, now_millis: u64) -> Result<u64, HistoryError> {
        let Some(max_age) = retention.max_age else {
            return Ok(0);
        };
        let cutoff = now_millis.saturating_sub(max_age.as_millis() as u64);
        let channels = self.channels().await?;
        if channels.is_empty() {
            return Ok(0);
        }
        let mut pipeline = redis::pipe();
        for channel in &channels {
            pipeline
                .cmd("EVALSHA")
                .arg(TRIM_AGE.get_hash())
                .arg(0)
                .arg(&*self.redis.prefix)
                .arg(&channel.channel)
                .arg(cutoff);
        }
        let mut connection = self.redis.commands.clone();
        // Loads the script first: a pipeline does not retry on NOSCRIPT.
        TRIM_AGE
            .load_async(&mut connection)
            .await
            .map_err(redis_error)?;
        let removed: Vec<u64> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(removed.iter().sum())
    }
}

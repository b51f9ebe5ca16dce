//! Where a Socket.IO session stands in each of its channels, for
//! connection-state recovery.
//!
//! A client keeps one opaque string from the last event it received and
//! sends it back when it reconnects. Here that string names the session's
//! position in every channel it is in: `lobby:42,ops:7`, the offset of the
//! last message queued for it per channel. The session's frames reach the
//! client in the order they are queued, so when the client has seen a
//! message, it has seen every message queued before it: the positions the
//! message names are exactly what it has. A session in one channel gets
//! the frame every subscriber shares (`lobby:42` names the message's own
//! position); a session in several gets the string built for it.
//!
//! The positions change and the frame is queued under one lock, so no
//! message can name a position whose frame is not yet ahead of it.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::channel::ChannelName;
use crate::hub::{SubscriberHandle, slow_consumer_close};
use crate::outbox::PushError;
use crate::wire::SharedFrame;

/// One session's positions, shared by its subscriptions.
#[derive(Debug, Default)]
pub struct RecoveryPositions {
    channels: Mutex<Vec<Tracked>>,
}

#[derive(Debug, Clone)]
struct Tracked {
    channel: ChannelName,
    /// Where the subscription started: what the client has of it before
    /// any of its messages arrives.
    joined_at: u64,
    /// The offset of the last message queued.
    queued: u64,
}

impl RecoveryPositions {
    pub fn new() -> Arc<Self> {
        Arc::new(RecoveryPositions::default())
    }

    /// A subscription starts after `offset`: replayed messages follow it.
    pub fn start(&self, channel: &ChannelName, offset: u64) {
        let mut channels = self.channels.lock();
        let tracked = Tracked {
            channel: channel.clone(),
            joined_at: offset,
            queued: offset,
        };
        match channels.iter_mut().find(|t| t.channel == *channel) {
            Some(existing) => *existing = tracked,
            None => {
                if channels.capacity() == 0 {
                    // Most sessions stay in one channel: room for one, not four.
                    channels.reserve_exact(1);
                }
                channels.push(tracked);
            }
        }
    }

    pub fn remove(&self, channel: &ChannelName) {
        self.channels.lock().retain(|t| t.channel != *channel);
    }

    /// Each channel and where its subscription started.
    pub fn joined_at(&self) -> Vec<(ChannelName, u64)> {
        let channels = self.channels.lock();
        channels
            .iter()
            .map(|t| (t.channel.clone(), t.joined_at))
            .collect()
    }

    /// The positions as the recovery offset names them.
    pub fn offsets(&self) -> String {
        encode(self.channels.lock().iter().map(|t| (&t.channel, t.queued)))
    }

    /// Queues a live message (or a presence event) for `handle`, closing
    /// the session as slow if its outbox is full.
    pub fn push_live(&self, handle: &SubscriberHandle, frame: &SharedFrame) -> bool {
        match self.try_push(handle, frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                handle.outbox.close(slow_consumer_close());
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Queues `run`, the joined shared frames of consecutive messages of
    /// `channel` up to `last`, if the session is in that channel alone (its
    /// shared frames name its whole position). `None`: it is in several,
    /// and each frame must be built for it.
    pub fn push_shared_run(
        &self,
        handle: &SubscriberHandle,
        channel: &ChannelName,
        last: u64,
        run: Bytes,
    ) -> Option<bool> {
        let mut channels = self.channels.lock();
        match channels.as_mut_slice() {
            [only] if only.channel == *channel => {
                let pushed = crate::hub::push_or_close(&handle.outbox, run);
                if pushed {
                    only.queued = last;
                }
                Some(pushed)
            }
            _ => None,
        }
    }

    /// Queues a frame with the offset it makes true, if there is room.
    pub fn try_push(
        &self,
        handle: &SubscriberHandle,
        frame: &SharedFrame,
    ) -> Result<(), PushError> {
        let mut channels = self.channels.lock();
        let Some((channel, offset)) = frame.position() else {
            return handle.outbox.try_push(frame.frame_for(&handle.wire));
        };
        let at = channels.iter().position(|t| t.channel == channel);
        let bytes = match (channels.len(), at) {
            // One channel: the shared frame names the message's own
            // position, which is the whole of the session's.
            (1, Some(_)) => frame.frame_for(&handle.wire),
            _ => {
                let mut positions: Vec<(&ChannelName, u64)> =
                    channels.iter().map(|t| (&t.channel, t.queued)).collect();
                match at {
                    Some(at) => positions[at].1 = offset,
                    None => positions.push((&channel, offset)),
                }
                frame.socketio_frame_with_offset(&encode(positions))
            }
        };
        handle.outbox.try_push(bytes)?;
        if let Some(at) = at {
            channels[at].queued = offset;
        }
        Ok(())
    }
}

fn encode<'a>(positions: impl IntoIterator<Item = (&'a ChannelName, u64)>) -> String {
    let mut out = String::new();
    for (i, (channel, offset)) in positions.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(channel.as_str());
        out.push(':');
        out.push_str(&offset.to_string());
    }
    out
}

/// Reads a recovery offset back: each channel and its last offset.
/// `None` if it is not one this server wrote.
pub fn parse_offsets(text: &str) -> Option<Vec<(ChannelName, u64)>> {
    text.split(',')
        .map(|position| {
            let (channel, offset) = position.rsplit_once(':')?;
            Some((ChannelName::parse(channel).ok()?, offset.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ChannelName {
        ChannelName::parse(n).unwrap()
    }

    #[test]
    fn offsets_round_trip_with_colons_in_channel_names() {
        let positions = RecoveryPositions::new();
        positions.start(&name("lobby"), 42);
        positions.start(&name("team:ops"), 7);
        assert_eq!(positions.offsets(), "lobby:42,team:ops:7");
        assert_eq!(
            parse_offsets(&positions.offsets()).unwrap(),
            vec![(name("lobby"), 42), (name("team:ops"), 7)]
        );
        positions.remove(&name("lobby"));
        assert_eq!(positions.offsets(), "team:ops:7");
        assert!(parse_offsets("lobby").is_none());
        assert!(parse_offsets("lobby:x").is_none());
        assert!(parse_offsets("no way:1").is_none());
    }
}

//! A stream's resume point across all its channels.

use std::fmt::Write as _;

use switchboard_core::ChannelName;
use switchboard_core::wire::EventIds;

/// Every channel's position, for streams of several channels: written as
/// an id-only block after each message event.
#[derive(Debug)]
pub(super) struct StreamCursor {
    pub(super) ids: EventIds,
    positions: Vec<(ChannelName, u64)>,
}

impl StreamCursor {
    pub(super) fn new(starts: &[(ChannelName, u64, Vec<String>)], ids: EventIds) -> Self {
        StreamCursor {
            ids,
            positions: starts
                .iter()
                .map(|(channel, since, _)| (channel.clone(), *since))
                .collect(),
        }
    }

    /// `id: …` and a blank line: sets the client's last event id without
    /// dispatching an event.
    pub(super) fn write_id(&self, out: &mut String) {
        out.push_str("id: ");
        match self.ids {
            EventIds::Offset => {
                let _ = write!(out, "{}", self.positions.first().map_or(0, |p| p.1));
            }
            EventIds::ChannelAndOffset => {
                for (i, (channel, offset)) in self.positions.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{channel}:{offset}");
                }
            }
        }
        out.push_str("\n\n");
    }

    /// Notes a message of `channel` at `offset` (its position, kept beside
    /// its frame) and returns the id-only block that records every
    /// channel's position after it.
    pub(super) fn after_message(&mut self, channel: &ChannelName, offset: u64) -> String {
        if let Some(slot) = self.positions.iter_mut().find(|(name, _)| name == channel) {
            slot.1 = slot.1.max(offset);
        }
        let mut block = String::with_capacity(16 * self.positions.len());
        self.write_id(&mut block);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_follows_message_events_of_every_channel() {
        let lobby = ChannelName::parse("lobby").unwrap();
        let ops = ChannelName::parse("news:ops").unwrap();
        let starts = vec![(lobby, 3, vec![]), (ops.clone(), 0, vec![])];
        let mut cursor = StreamCursor::new(&starts, EventIds::ChannelAndOffset);
        let mut first = String::new();
        cursor.write_id(&mut first);
        assert_eq!(first, "id: lobby:3,news:ops:0\n\n");
        let block = cursor.after_message(&ops, 7);
        assert_eq!(block, "id: lobby:3,news:ops:7\n\n");
        // An older offset (a replay overlapping live) never moves it back.
        assert_eq!(cursor.after_message(&ops, 5), "id: lobby:3,news:ops:7\n\n");
        let single = StreamCursor::new(&starts[..1], EventIds::Offset);
        let mut id = String::new();
        single.write_id(&mut id);
        assert_eq!(id, "id: 3\n\n");
    }
}

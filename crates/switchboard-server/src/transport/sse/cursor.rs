//! A stream's resume point across all its channels.

use std::fmt::Write as _;

use switchboard_core::ChannelName;
use switchboard_core::wire::EventIds;

/// Every channel's position, for streams of several channels: written as
/// an id-only block after each message event.
#[derive(Debug)]
pub(super) struct StreamCursor {
    pub(super) ids: EventIds,
    positions: Vec<(String, u64)>,
}

impl StreamCursor {
    pub(super) fn new(starts: &[(ChannelName, u64, Vec<String>)], ids: EventIds) -> Self {
        StreamCursor {
            ids,
            positions: starts
                .iter()
                .map(|(channel, since, _)| (channel.as_str().to_owned(), *since))
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

    /// Notes a message event (`id: CHANNEL:OFFSET` first line) and returns
    /// the id-only block that records every position after it.
    pub(super) fn after_event(&mut self, event: &[u8]) -> Option<String> {
        if self.ids != EventIds::ChannelAndOffset {
            return None;
        }
        let line = event.strip_prefix(b"id: ")?;
        let line = &line[..line.iter().position(|&b| b == b'\n')?];
        let (channel, offset) = std::str::from_utf8(line).ok()?.rsplit_once(':')?;
        let offset: u64 = offset.parse().ok()?;
        let slot = self
            .positions
            .iter_mut()
            .find(|(name, _)| name == channel)?;
        slot.1 = slot.1.max(offset);
        let mut block = String::with_capacity(16 * self.positions.len());
        self.write_id(&mut block);
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_follows_message_events_of_every_channel() {
        let lobby = ChannelName::parse("lobby").unwrap();
        let ops = ChannelName::parse("news:ops").unwrap();
        let starts = vec![(lobby, 3, vec![]), (ops, 0, vec![])];
        let mut cursor = StreamCursor::new(&starts, EventIds::ChannelAndOffset);
        let mut first = String::new();
        cursor.write_id(&mut first);
        assert_eq!(first, "id: lobby:3,news:ops:0\n\n");
        let block = cursor.after_event(b"id: news:ops:7\nevent: message\ndata: {}\n\n");
        assert_eq!(block.as_deref(), Some("id: lobby:3,news:ops:7\n\n"));
        assert_eq!(cursor.after_event(b"event: join\ndata: {}\n\n"), None);
        let single = StreamCursor::new(&starts[..1], EventIds::Offset);
        let mut id = String::new();
        single.write_id(&mut id);
        assert_eq!(id, "id: 3\n\n");
    }
}

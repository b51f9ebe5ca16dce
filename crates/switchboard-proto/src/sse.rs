//! The Server-Sent Events wire format (HTML Living Standard, "Server-sent
//! events"): how `GET /sse` writes events, and its event-id grammar.
//!
//! Event data is the same JSON as on WebSocket; JSON from `serde_json` never
//! contains a raw newline, but [`event`] splits on lines anyway so any text
//! stays one event.

use serde::Serialize;

/// Appends one event: optional `id:`, optional `event:`, then `data:` lines.
pub fn event(out: &mut String, id: Option<&str>, name: Option<&str>, data: &str) {
    if let Some(id) = id {
        field(out, "id", id);
    }
    if let Some(name) = name {
        field(out, "event", name);
    }
    for line in data.split('\n') {
        field(out, "data", line.strip_suffix('\r').unwrap_or(line));
    }
    out.push('\n');
}

/// Appends `retry: MS` (how long the client waits before reconnecting).
pub fn retry(out: &mut String, millis: u128) {
    field(out, "retry", &millis.to_string());
    out.push('\n');
}

/// A comment line: ignored by clients, keeps proxies from timing out.
pub const HEARTBEAT: &str = ": ping\n\n";

fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

/// `event: reset`: the client asked to resume from an offset history no
/// longer holds (trimmed, or from a reset channel). The retained messages
/// from `first_offset` on follow.
#[derive(Debug, Serialize)]
pub struct Reset<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: &'a str,
    /// The offset the client asked to resume after.
    pub since: u64,
    /// The oldest message still retained (`last_offset + 1` if none is).
    pub first_offset: u64,
    /// The channel's latest offset.
    pub last_offset: u64,
    pub epoch: &'a str,
}

/// `event: presence`: who is online in a channel when the stream subscribes.
#[derive(Debug, Serialize)]
pub struct Presence<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: &'a str,
    pub users: &'a [String],
    /// The channel's latest offset then: messages up to it that follow are
    /// replayed history, later ones are live (as `subscribed.offset`).
    pub offset: u64,
}

/// A resume point: one offset per channel. Written as `id:` values and read
/// back from `Last-Event-ID` or `?since=`.
///
/// Grammar: `42` (every channel, or the only one), or `lobby:42,ops:17`
/// (channel names never contain `,`; they may contain `:`, so the offset is
/// after the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    All(u64),
    PerChannel(Vec<(String, u64)>),
}

/// Why a cursor could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id: expected OFFSET or CHANNEL:OFFSET[,CHANNEL:OFFSET…], got {0:?}")]
pub struct CursorError(pub String);

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        let text = text.trim();
        let error = || CursorError(text.chars().take(200).collect());
        if let Ok(offset) = text.parse() {
            return Ok(Cursor::All(offset));
        }
        text.split(',')
            .map(|pair| {
                let (channel, offset) = pair.trim().rsplit_once(':').ok_or_else(error)?;
                let offset = offset.parse().map_err(|_| error())?;
                if channel.is_empty() {
                    return Err(error());
                }
                Ok((channel.to_owned(), offset))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Cursor::PerChannel)
    }

    /// The offset to resume `channel` after, if the cursor names it.
    pub fn offset_for(&self, channel: &str) -> Option<u64> {
        match self {
            Cursor::All(offset) => Some(*offset),
            Cursor::PerChannel(pairs) => pairs
                .iter()
                .rev()
                .find(|(name, _)| name == channel)
                .map(|(_, offset)| *offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_id_name_and_one_data_line_per_line() {
        let mut out = String::new();
        event(&mut out, Some("7"), Some("message"), r#"{"a":1}"#);
        assert_eq!(out, "id: 7\nevent: message\ndata: {\"a\":1}\n\n");
        out.clear();
        event(&mut out, None, None, "two\r\nlines");
        assert_eq!(out, "data: two\ndata: lines\n\n");
        out.clear();
        retry(&mut out, 2000);
        assert_eq!(out, "retry: 2000\n\n");
    }

    #[test]
    fn cursors_parse_single_offsets_and_channel_lists() {
        assert_eq!(Cursor::parse("42"), Ok(Cursor::All(42)));
        let cursor = Cursor::parse("lobby:3, news:sport:9").unwrap();
        assert_eq!(cursor.offset_for("lobby"), Some(3));
        assert_eq!(cursor.offset_for("news:sport"), Some(9));
        assert_eq!(cursor.offset_for("ops"), None);
        assert_eq!(Cursor::All(5).offset_for("any"), Some(5));
        for bad in ["", "x", "lobby:", ":3", "lobby:-1", "a:1,,b:2", "1.5"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}

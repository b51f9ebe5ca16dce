//! The shapes the Lua scripts write: a history entry
//! (`offset\ntime\nusername\nmsg`), and a channel topic's events (`m` and
//! length-prefixed entries for messages, `j`/`l` and a username for
//! presence).

use switchboard_proto::Publication;

use crate::channel::ChannelName;

/// Why a stored entry or an event could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed entry in Redis: {0}")]
pub(crate) struct Malformed(&'static str);

/// A history entry as a publication of `channel`.
pub(crate) fn parse_entry(channel: &ChannelName, entry: &[u8]) -> Result<Publication, Malformed> {
    let text = std::str::from_utf8(entry).map_err(|_| Malformed("not UTF-8"))?;
    let mut fields = text.splitn(4, '\n');
    let mut number = |what| {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or(Malformed(what))
    };
    let offset = number("offset")?;
    let time = number("time")?;
    let username = fields.next().ok_or(Malformed("username"))?;
    let msg = fields.next().ok_or(Malformed("msg"))?;
    Ok(Publication {
        channel: channel.as_str().to_owned(),
        offset,
        username: username.to_owned(),
        msg: msg.to_owned(),
        time,
    })
}

/// An event on a channel's topic.
#[derive(Debug, PartialEq)]
pub(crate) enum TopicEvent {
    /// Messages stored by one append, in offset order.
    Messages(Vec<Publication>),
    Join(String),
    Leave(String),
}

/// Reads a topic's event about `channel`.
pub(crate) fn parse_event(channel: &ChannelName, payload: &[u8]) -> Result<TopicEvent, Malformed> {
    let (&tag, rest) = payload.split_first().ok_or(Malformed("empty event"))?;
    let name = || {
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|_| Malformed("username not UTF-8"))
    };
    match tag {
        b'm' => parse_messages(channel, rest).map(TopicEvent::Messages),
        b'j' => name().map(TopicEvent::Join),
        b'l' => name().map(TopicEvent::Leave),
        _ => Err(Malformed("unknown event")),
    }
}

/// `<bytes>:<entry>` repeated.
fn parse_messages(channel: &ChannelName, mut rest: &[u8]) -> Result<Vec<Publication>, Malformed> {
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or(Malformed("entry length"))?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or(Malformed("entry length"))?;
        let entry = rest
            .get(colon + 1..colon + 1 + len)
            .ok_or(Malformed("entry cut short"))?;
        messages.push(parse_entry(channel, entry)?);
        rest = &rest[colon + 1 + len..];
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lobby() -> ChannelName {
        ChannelName::parse("lobby").unwrap()
    }

    #[test]
    fn an_entry_keeps_newlines_and_colons_in_its_message() {
        let publication =
            parse_entry(&lobby(), b"7\n1700000000123\nann\nhello\nthere: 3:x").unwrap();
        assert_eq!(publication.offset, 7);
        assert_eq!(publication.time, 1_700_000_000_123);
        assert_eq!(publication.username, "ann");
        assert_eq!(publication.msg, "hello\nthere: 3:x");
    }

    #[test]
    fn a_run_of_messages_is_split_by_lengths() {
        let first = "1\n5\nann\nhi";
        let second = "2\n6\nbob\n4:é";
        let payload = format!("m{}:{first}{}:{second}", first.len(), second.len());
        let TopicEvent::Messages(messages) = parse_event(&lobby(), payload.as_bytes()).unwrap()
        else {
            panic!("messages expected");
        };
        let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [1, 2]);
        assert_eq!(messages[1].msg, "4:é");
    }

    #[test]
    fn presence_events_and_garbage() {
        assert_eq!(
            parse_event(&lobby(), b"jann").unwrap(),
            TopicEvent::Join("ann".into())
        );
        assert_eq!(
            parse_event(&lobby(), b"lann").unwrap(),
            TopicEvent::Leave("ann".into())
        );
        assert!(parse_event(&lobby(), b"").is_err());
        assert!(parse_event(&lobby(), b"x").is_err());
        assert!(parse_event(&lobby(), b"m99:1\n2\nann\nhi").is_err());
        assert!(parse_entry(&lobby(), b"one\n2\nann\nhi").is_err());
    }
}

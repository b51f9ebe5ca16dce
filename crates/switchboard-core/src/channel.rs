//! Channel names: validated once, at the edge, then trusted everywhere.

use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 128;

/// A channel (chat room) name: 1-128 characters of `[A-Za-z0-9_.:@-]`.
/// Cheap to clone: the hub keys maps with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name {0:?}: use 1-128 characters of A-Z a-z 0-9 _ . : @ -")]
pub struct InvalidChannel(pub String);

impl ChannelName {
    pub fn parse(name: &str) -> Result<ChannelName, InvalidChannel> {
        let valid = (1..=MAX_CHANNEL_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
        if valid {
            Ok(ChannelName(Arc::from(name)))
        } else {
            // Echo back a bounded prefix: the input may be huge.
            Err(InvalidChannel(
                name.chars().take(MAX_CHANNEL_LEN + 8).collect(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "lobby",
            "a",
            "room:42",
            "team.dev@acme-corp_1",
            &"x".repeat(128),
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "with space",
            "slash/es",
            "ünï",
            "semi;colon",
            &"x".repeat(129),
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The channel patterns of a token's `subscribe` and `publish` claims: an
//! exact channel name, a prefix ending in `*` (`team:*`), or `*` alone for
//! every channel.

use switchboard_core::ChannelName;

/// One claim's patterns; none allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPatterns(Box<[Pattern]>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Every,
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl ChannelPatterns {
    /// Reads a claim's list; a pattern that could match no channel name
    /// (a character a name cannot have, a `*` not at the end) is refused.
    pub fn parse(list: &[String]) -> Result<ChannelPatterns, String> {
        list.iter()
            .map(|text| Pattern::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map(|patterns| ChannelPatterns(patterns.into_boxed_slice()))
    }

    pub fn allows(&self, channel: &ChannelName) -> bool {
        let name = channel.as_str();
        self.0.iter().any(|pattern| match pattern {
            Pattern::Every => true,
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Prefix(prefix) => name.starts_with(&**prefix),
        })
    }
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if text == "*" {
            return Ok(Pattern::Every);
        }
        let invalid = || format!("{text:?} is not a channel name, a prefix ending in *, or *");
        match text.strip_suffix('*') {
            Some(prefix) => {
                // A prefix is the start of a valid name: checked as one.
                ChannelName::parse(prefix).map_err(|_| invalid())?;
                Ok(Pattern::Prefix(prefix.into()))
            }
            None => {
                ChannelName::parse(text).map_err(|_| invalid())?;
                Ok(Pattern::Exact(text.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> ChannelPatterns {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        ChannelPatterns::parse(&list).unwrap()
    }

    fn allows(patterns: &ChannelPatterns, channel: &str) -> bool {
        patterns.allows(&ChannelName::parse(channel).unwrap())
    }

    #[test]
    fn exact_names_prefixes_and_every_channel() {
        let p = patterns(&["lobby", "team:*"]);
        assert!(allows(&p, "lobby"));
        assert!(!allows(&p, "lobby2"));
        assert!(allows(&p, "team:red"));
        assert!(allows(&p, "team:"));
        assert!(!allows(&p, "team"));
        assert!(!allows(&p, "teams:red"));
        assert!(allows(&patterns(&["*"]), "anything.at@all"));
        assert!(!allows(&patterns(&[]), "lobby"));
    }

    #[test]
    fn patterns_that_match_no_name_are_refused() {
        for bad in ["", "a b", "a*b", "**", "team:**", "caf\u{e9}*"] {
            assert!(
                ChannelPatterns::parse(&[bad.to_string()]).is_err(),
                "{bad:?}"
            );
        }
    }
}

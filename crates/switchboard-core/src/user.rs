//! Usernames: bound to a connection when it opens, never read from messages.

use std::fmt;
use std::sync::Arc;

/// Longest username accepted, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;

/// A validated username: 1-64 characters, no control characters, no
/// leading or trailing whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid username: use 1-64 characters without control characters or surrounding spaces")]
pub struct InvalidUsername;

impl Username {
    pub fn parse(name: &str) -> Result<Username, InvalidUsername> {
        let chars = name.chars().count();
        let valid = (1..=MAX_USERNAME_CHARS).contains(&chars)
            && !name.chars().any(char::is_control)
            && name.trim() == name;
        if valid {
            Ok(Username(Arc::from(name)))
        } else {
            Err(InvalidUsername)
        }
    }

    /// `guest-` and four random hex digits, for connections that give no name.
    pub fn guest() -> Username {
        Username(Arc::from(format!("guest-{:04x}", fastrand::u16(..))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_characters() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("Zoë Ångström").is_ok());
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        assert_eq!(Username::parse(""), Err(InvalidUsername));
        assert_eq!(Username::parse(&"a".repeat(65)), Err(InvalidUsername));
        assert_eq!(Username::parse("bell\u{7}"), Err(InvalidUsername));
        assert_eq!(Username::parse("line\nbreak"), Err(InvalidUsername));
        assert_eq!(Username::parse(" padded"), Err(InvalidUsername));
    }

    #[test]
    fn guests_get_a_generated_name() {
        let guest = Username::guest();
        assert!(guest.as_str().starts_with("guest-"));
        assert_eq!(guest.as_str().len(), 10);
    }
}

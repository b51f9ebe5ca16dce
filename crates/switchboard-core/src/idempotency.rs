//! Idempotent publish: a client names a publish with a key of its choosing,
//! and a repeat of the key (a resend after a dropped connection) is answered
//! with the first publish's offset instead of being stored again.

use std::fmt;
use std::time::Duration;

/// Longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 64;

/// A client-chosen key: 1 to 64 characters. Keys are scoped to a channel
/// and a username, so two users (or channels) never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idempotency_key must be 1 to {MAX_KEY_CHARS} characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        // Counting stops past the limit: a huge key costs no more than a long one.
        let chars = key.chars().take(MAX_KEY_CHARS + 1).count();
        if (1..=MAX_KEY_CHARS).contains(&chars) {
            Ok(IdempotencyKey(key.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long, and how many, keys the store remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRetention {
    /// A repeat later than this after the first publish is a new message.
    pub window: Duration,
    /// Most keys kept; past it the oldest are forgotten first, so the
    /// window shrinks under a flood rather than the store growing.
    pub max_keys: u64,
}

impl Default for KeyRetention {
    fn default() -> Self {
        KeyRetention {
            window: Duration::from_secs(300),
            max_keys: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_sixty_four_characters() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"é".repeat(64)).is_ok());
        assert!(IdempotencyKey::parse(&"é".repeat(65)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(100_000)).is_err());
    }
}

//! UTF-8 validation that can be fed a message one fragment at a time, so an
//! invalid text message is rejected as soon as the bad byte arrives.

/// Remembers how much of a growing buffer is known to be valid.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    valid_up_to: usize,
}

impl Utf8Validator {
    /// Checks the bytes of `text` not yet checked. A sequence cut off at the end
    /// is fine while `complete` is false: the next fragment may finish it.
    pub(crate) fn feed(&mut self, text: &[u8], complete: bool) -> Result<(), InvalidUtf8> {
        let unchecked = &text[self.valid_up_to..];
        match simdutf8::compat::from_utf8(unchecked) {
            Ok(_) => {
                self.valid_up_to = text.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !complete => {
                self.valid_up_to += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }
}

#[derive(Debug)]
pub(crate) struct InvalidUtf8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_sequence_split_across_fragments() {
        let text = "κόσμε".as_bytes();
        let mut v = Utf8Validator::default();
        v.feed(&text[..3], false).unwrap();
        v.feed(&text[..7], false).unwrap();
        v.feed(text, true).unwrap();
    }

    #[test]
    fn rejects_a_bad_byte_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"ok\xff", false).is_err());
    }

    #[test]
    fn rejects_a_truncated_sequence_at_the_end() {
        let mut v = Utf8Validator::default();
        v.feed(b"\xce", false).unwrap();
        assert!(v.feed(b"\xce", true).is_err());
    }
}

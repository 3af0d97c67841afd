//! Incremental UTF-8 validation for text messages whose bytes arrive in arbitrary pieces.
//! The decoder feeds each unmasked chunk of a text message to [`Utf8Validator`], which keeps at
//! most 3 bytes of an unfinished character between chunks and fails as soon as bytes are invalid.

/// Validates a byte stream as UTF-8 one chunk at a time.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    /// Start of a multi-byte character cut off at the end of the previous chunk; only
    /// `carry[..carry_len]` is meaningful. 4 bytes so a completed character fits for checking.
    carry: [u8; 4],
    carry_len: u8,
}

/// Total length of a UTF-8 sequence by its lead byte (only called on leads `from_utf8` accepted
/// as the start of an incomplete sequence, so 2..=4).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

impl Utf8Validator {
    /// Checks the next chunk. `Err(())` as soon as the bytes so far cannot be valid UTF-8.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ()> {
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let want = sequence_len(self.carry[0]);
            let take = want.saturating_sub(have).min(chunk.len());
            let (head, rest) = chunk.split_at(take);
            let filled = have + take;
            self.carry[have..filled].copy_from_slice(head);
            match std::str::from_utf8(&self.carry[..filled]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() && filled < want => {
                    // Still incomplete (the chunk was tiny) but not yet invalid.
                    self.carry_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(()),
            }
            chunk = rest;
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = chunk.get(e.valid_up_to()..).unwrap_or_default();
                // `error_len() == None` means an incomplete sequence: at most 3 bytes.
                let n = tail.len().min(3);
                self.carry[..n].copy_from_slice(&tail[..n]);
                self.carry_len = n as u8;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// Ends the message: an unfinished character at its end is invalid. Resets for the next one.
    pub(crate) fn finish(&mut self) -> Result<(), ()> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], cuts: &[usize]) -> Result<(), ()> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.finish()
    }

    #[test]
    fn valid_text_split_anywhere_is_accepted() {
        let text = "aé€😀z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(validate_split(text, &[i, j]), Ok(()), "cuts {i} {j}");
            }
        }
    }

    #[test]
    fn every_single_byte_split_is_accepted() {
        let text = "€😀é".as_bytes();
        let cuts: Vec<usize> = (1..text.len()).collect();
        assert_eq!(validate_split(text, &cuts), Ok(()));
    }

    #[test]
    fn invalid_bytes_are_rejected_wherever_split() {
        // Overlong encoding, surrogate, code point above U+10FFFF, stray continuation.
        for bad in [&[0xC0, 0x80][..], &[0xED, 0xA0, 0x80], &[0xF4, 0x90, 0x80, 0x80], &[0x80]] {
            for i in 0..=bad.len() {
                assert_eq!(validate_split(bad, &[i]), Err(()), "{bad:x?} cut {i}");
            }
        }
    }

    #[test]
    fn invalid_continuation_fails_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xE2]), Ok(()));
        assert_eq!(v.feed(&[0x28]), Err(()));
    }

    #[test]
    fn truncated_character_at_message_end_is_rejected() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[b'a', 0xE2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(()));
        // The validator is reusable after finish.
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}

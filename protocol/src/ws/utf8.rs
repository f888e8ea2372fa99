//! UTF-8 validation that streams across frames and pieces of frames (RFC 6455 section 8.1) and
//! fails at the first byte that cannot be UTF-8, not at the message's end: a piece is checked
//! as it arrives (simdutf8), and a code point cut by the piece's end is kept (at most 3 bytes)
//! to be finished by the next piece.

/// The bytes seen are not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

/// The validator's state between pieces: the start of a cut code point, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Stream {
    pending: [u8; 4],
    pending_len: u8,
}

/// The length of the sequence a valid lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Stream {
    /// Checks the next piece. An error is final: the message is not UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let take = (sequence_len(self.pending[0]) - have).min(bytes.len());
            self.pending[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            match simdutf8::compat::from_utf8(&self.pending[..have + take]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still cut, and still a valid start: `bytes` is empty.
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The message ended: a code point still cut is an error. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let cut = self.pending_len != 0;
        *self = Utf8Stream::default();
        if cut {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<Result<(), InvalidUtf8>> {
        (0..=bytes.len())
            .flat_map(|a| (a..=bytes.len()).map(move |b| (a, b)))
            .map(|(a, b)| {
                let mut v = Utf8Stream::default();
                v.feed(&bytes[..a])?;
                v.feed(&bytes[a..b])?;
                v.feed(&bytes[b..])?;
                v.finish()
            })
            .collect()
    }

    #[test]
    fn valid_text_passes_cut_at_any_two_points() {
        let text = "κόσμε a€𝄞 z".as_bytes();
        assert!(split_everywhere(text).iter().all(Result::is_ok));
    }

    #[test]
    fn invalid_text_fails_cut_at_any_two_points() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..], // a surrogate
            b"\xf4\x90\x80\x80", // above U+10FFFF
            b"\xc0\xaf",         // overlong
            b"abc\xff",
            b"\xe2\x82", // cut at the end
        ] {
            assert!(split_everywhere(bad).iter().all(Result::is_err), "{bad:?}");
        }
    }

    #[test]
    fn it_fails_at_the_first_bad_byte_before_the_message_ends() {
        // Autobahn 6.4.x: the bad byte arrives in the first piece; the rest never comes.
        let mut v = Utf8Stream::default();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90"),
            Err(InvalidUtf8)
        );
        let mut v = Utf8Stream::default();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(
            v.feed(b"\x90"),
            Err(InvalidUtf8),
            "U+110000 is refused at its second byte"
        );
    }

    #[test]
    fn finish_resets_for_the_next_message() {
        let mut v = Utf8Stream::default();
        v.feed(b"\xe2").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }
}

//! Request bodies (chunked and Content-Length): decoding at arbitrary splits gives the same
//! payload and outcome as decoding the whole input, every step consumes within its input, and a
//! body never yields more than `max_body` bytes.
#![no_main]

use coreplex_protocol::{BodyDecoder, BodyKind};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` in pieces of `step` bytes: (payload, done, failed, bytes consumed).
fn decode(kind: BodyKind, input: &[u8], step: usize) -> (Vec<u8>, bool, bool, usize) {
    let mut d = BodyDecoder::new(kind, 4096);
    let mut payload = Vec::new();
    let mut pos = 0;
    let mut avail = 0;
    while pos < input.len() || avail < input.len() {
        avail = (avail + step).min(input.len()).max(pos);
        loop {
            match d.decode(&input[pos..avail]) {
                Ok(s) => {
                    assert!(s.consumed <= avail - pos);
                    assert!(s.payload.end <= s.consumed && s.payload.start <= s.payload.end);
                    payload.extend_from_slice(&input[pos + s.payload.start..pos + s.payload.end]);
                    pos += s.consumed;
                    if s.done {
                        assert!(d.is_done());
                        return (payload, true, false, pos);
                    }
                    if s.consumed == 0 {
                        assert_eq!(pos, avail, "no progress with input left");
                        break;
                    }
                }
                Err(_) => return (payload, false, true, pos),
            }
        }
        if avail == input.len() {
            break;
        }
    }
    (payload, false, false, pos)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let kind = if ctl & 0x80 == 0 {
        BodyKind::Chunked
    } else {
        BodyKind::Length(u64::from(ctl & 0x7f) * 37)
    };
    let whole = decode(kind, input, input.len().max(1));
    let split = decode(kind, input, usize::from(ctl % 7) + 1);
    assert!(whole.0.len() <= 4096);
    assert_eq!(whole.1, split.1, "done differs");
    assert_eq!(whole.2, split.2, "failure differs");
    if whole.1 {
        assert_eq!(whole.0, split.0, "payload differs");
        assert_eq!(whole.3, split.3, "body length differs");
    } else if !whole.2 {
        assert_eq!(whole.0, split.0, "payload differs");
    }
});

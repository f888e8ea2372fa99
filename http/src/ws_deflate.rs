//! permessage-deflate (RFC 7692) for WebSocket endpoints: a shard's decompressors and
//! compressors, lent to a connection only while a compressed message passes, and the client's
//! window kept per connection where the client keeps its compression context.
//!
//! A message's compressed payload is inflated piece by piece as it arrives, with the four bytes
//! the sender removed (`00 00 ff ff`) appended at its end; the inflated size is bounded by the
//! message limit, so a compression bomb costs at most that. Where the client keeps context, the
//! last 2^client_max_window_bits bytes of plaintext are kept between messages and given to the
//! decompressor as its dictionary when the next message begins: the decompressor itself is never
//! kept by an idle connection.

use coreplex_protocol::ws::deflate::{Agreed, TAIL};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Decompressors kept per shard for reuse (each about 40 KiB with its 32 KiB window).
const POOL_MAX: usize = 64;
/// Compressors kept per shard for reuse (up to about 260 KiB each at 15 window bits).
const DEFLATERS_MAX: usize = 16;

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Not a deflate stream (1007, as RFC 7692 section 8.2.3.4 leaves it to 1002/1007: the
    /// payload data is invalid).
    Corrupt,
    /// Inflated beyond the message limit (1009).
    TooBig,
}

/// A shard's idle decompressors.
#[derive(Default)]
pub(crate) struct Inflaters {
    idle: Vec<Decompress>,
}

impl Inflaters {
    /// A decompressor ready for a new message, primed with `window` (the client's context).
    pub(crate) fn lend(&mut self, window: &[u8]) -> Decompress {
        let mut d = match self.idle.pop() {
            Some(mut d) => {
                d.reset(false);
                d
            }
            None => Decompress::new_with_window_bits(false, 15),
        };
        if !window.is_empty() {
            // A raw stream takes a dictionary right after a reset.
            let _ = d.set_dictionary(window);
        }
        d
    }

    /// Takes a decompressor back after its message.
    pub(crate) fn give_back(&mut self, d: Decompress) {
        if self.idle.len() < POOL_MAX {
            self.idle.push(d);
        }
    }
}

/// Inflates `input` (part of a message's payload; `last`: the rest of it, after which the tail
/// is appended) onto `out`, which may grow to `budget` more bytes.
pub(crate) fn inflate(
    d: &mut Decompress,
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
    budget: u64,
) -> Result<(), InflateError> {
    let start = out.len();
    inflate_part(d, input, out, start, budget)?;
    if last {
        inflate_part(d, &TAIL, out, start, budget)?;
    }
    Ok(())
}

fn inflate_part(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    start: usize,
    budget: u64,
) -> Result<(), InflateError> {
    loop {
        if out.capacity() - out.len() < 4096 {
            // Exact, so one call cannot inflate far past the budget.
            out.reserve_exact(16 * 1024);
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let used = (d.total_in() - in_before) as usize;
        input = &input[used..];
        if (out.len() - start) as u64 > budget {
            return Err(InflateError::TooBig);
        }
        let room_left = out.len() < out.capacity();
        match status {
            // A final block ended the stream: anything after it is not deflate data.
            Status::StreamEnd if !input.is_empty() => return Err(InflateError::Corrupt),
            Status::StreamEnd => return Ok(()),
            _ if input.is_empty() && room_left => return Ok(()),
            _ if used == 0 && out.len() == out_before && room_left => {
                return Err(InflateError::Corrupt)
            }
            _ => {}
        }
    }
}

/// A connection's compression state between messages.
pub(crate) struct DeflateConn {
    pub(crate) agreed: Agreed,
    /// The client's last 2^client_max_window_bits plaintext bytes (empty without context).
    pub(crate) window: Vec<u8>,
}

impl DeflateConn {
    pub(crate) fn new(agreed: Agreed) -> DeflateConn {
        DeflateConn {
            agreed,
            window: Vec::new(),
        }
    }

    /// Remembers plaintext the client compressed, when it keeps context.
    pub(crate) fn remember(&mut self, plain: &[u8]) {
        if self.agreed.client_no_context_takeover {
            return;
        }
        let keep = 1usize << self.agreed.client_max_window_bits;
        if plain.len() >= keep {
            self.window.clear();
            self.window.extend_from_slice(&plain[plain.len() - keep..]);
        } else {
            let excess = (self.window.len() + plain.len()).saturating_sub(keep);
            self.window.drain(..excess);
            self.window.extend_from_slice(plain);
        }
    }
}

/// A shard's idle compressors, by window bits and level (`bits | level << 4`). The server
/// never keeps context between messages (`server_no_context_takeover`), so a compressor is lent
/// for one message.
#[derive(Default)]
pub(crate) struct Deflaters {
    idle: Vec<(u8, Compress)>,
}

impl Deflaters {
    /// A compressor with a `bits` window (9-15) at `level` (1-9), reset for a new message.
    pub(crate) fn lend(&mut self, bits: u8, level: u8) -> (u8, Compress) {
        let key = bits | level << 4;
        match self.idle.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (k, mut c) = self.idle.swap_remove(i);
                c.reset();
                (k, c)
            }
            None => (
                key,
                Compress::new_with_window_bits(Compression::new(u32::from(level)), false, bits),
            ),
        }
    }

    /// Takes a compressor back after its message.
    pub(crate) fn give_back(&mut self, c: (u8, Compress)) {
        if self.idle.len() < DEFLATERS_MAX {
            self.idle.push(c);
        }
    }
}

/// Compresses `input` onto `out`; `last`: the message ends here, so the output is flushed and
/// the flush's four-byte tail removed (RFC 7692 section 7.2.1).
pub(crate) fn deflate(c: &mut Compress, mut input: &[u8], last: bool, out: &mut Vec<u8>) {
    let flush = if last {
        FlushCompress::Sync
    } else {
        FlushCompress::None
    };
    let start = out.len();
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(input.len() / 2 + 4096);
        }
        let before = c.total_in();
        if c.compress_vec(input, out, flush).is_err() {
            unreachable!("deflate of a stream we own cannot fail");
        }
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if last {
        debug_assert!(out[start..].ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client's inflater sees: the frames' payloads joined, and the tail put back.
    fn inflate_all(payload: &[u8], window: &[u8]) -> Vec<u8> {
        let mut pool = Inflaters::default();
        let mut d = pool.lend(window);
        let mut out = Vec::new();
        inflate(&mut d, payload, true, &mut out, u64::MAX).unwrap();
        out
    }

    #[test]
    fn a_message_compressed_in_pieces_inflates_back() {
        let mut pool = Deflaters::default();
        for (bits, level) in [(9u8, 6u8), (12, 1), (15, 9)] {
            let (b, mut c) = pool.lend(bits, level);
            let text: Vec<u8> = (0..50_000u32)
                .flat_map(|i| format!("{} ", i % 97).into_bytes())
                .collect();
            let mut packed = Vec::new();
            for piece in text.chunks(7_000) {
                deflate(&mut c, piece, false, &mut packed);
            }
            deflate(&mut c, &[], true, &mut packed);
            assert!(
                packed.len() < text.len() / 2,
                "{bits} bits: {} of {}",
                packed.len(),
                text.len()
            );
            assert_eq!(inflate_all(&packed, &[]), text);
            pool.give_back((b, c));
        }
        // A reused compressor starts a fresh stream.
        let (_, mut c) = pool.lend(15, 9);
        let mut packed = Vec::new();
        deflate(&mut c, b"hello", true, &mut packed);
        assert_eq!(inflate_all(&packed, &[]), b"hello");
    }

    #[test]
    fn a_bomb_stops_at_the_budget() {
        let (_, mut c) = Deflaters::default().lend(15, 6);
        let mut packed = Vec::new();
        deflate(&mut c, &vec![0u8; 10 << 20], true, &mut packed);
        assert!(packed.len() < 20_000);
        let mut d = Inflaters::default().lend(&[]);
        let mut out = Vec::new();
        assert_eq!(
            inflate(&mut d, &packed, true, &mut out, 1 << 20),
            Err(InflateError::TooBig)
        );
        assert!(out.len() < (1 << 20) + 64 * 1024, "{}", out.len());
    }

    #[test]
    fn garbage_is_corrupt_and_the_window_primes_the_next_message() {
        let mut d = Inflaters::default().lend(&[]);
        assert_eq!(
            inflate(&mut d, &[0xff; 8], true, &mut Vec::new(), 1 << 20),
            Err(InflateError::Corrupt)
        );
        // A client keeping context refers back to the previous message: with the window as the
        // dictionary it inflates, without it it does not.
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let first = b"a sentence long enough to be referred back to later";
        let mut p1 = Vec::new();
        deflate(&mut c, first, true, &mut p1);
        // The same compressor, not reset: the second message refers back to the first.
        let mut p2 = Vec::new();
        deflate(&mut c, first, true, &mut p2);
        assert!(p2.len() < first.len() / 2, "{}", p2.len());
        assert_eq!(inflate_all(&p2, first), first);
        let mut d = Inflaters::default().lend(&[]);
        assert!(inflate(&mut d, &p2, true, &mut Vec::new(), 1 << 20).is_err());
        let mut conn = DeflateConn::new(
            coreplex_protocol::ws::deflate::negotiate(
                [&b"permessage-deflate; client_max_window_bits=9"[..]],
                &Default::default(),
            )
            .unwrap(),
        );
        conn.remember(&[1; 300]);
        conn.remember(&[2; 300]);
        assert_eq!(conn.window.len(), 512);
        assert_eq!(&conn.window[..212], &[1; 212][..]);
    }
}

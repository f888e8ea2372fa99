//! `coreplex-bench ws-deflate`: permessage-deflate on a JSON corpus at window bits 9 to 15, the
//! way coreplex's WebSocket routes use it (flate2 on zlib-rs, level 6, raw deflate, a sync flush
//! per message with its four-byte tail removed):
//!
//! - compress: the server's direction (`server_no_context_takeover`, always): the shard's
//!   compressor reset per message, then the message compressed; the ratio and CPU per message.
//! - reset vs new: the cost of resetting a pooled compressor per message against making a new
//!   one, which is what the shared-compressor design must beat.
//! - inflate with context: a client that keeps its context compresses each message against the
//!   ones before; coreplex lends a decompressor per message and primes it with the client's
//!   window (the last 2^bits plaintext bytes) as its dictionary: the CPU per message.
//! - memory: zlib's documented state sizes for a compressor and a decompressor (lent per
//!   message in flight, never kept by an idle connection), and the context a client that keeps
//!   its own costs between messages (2^bits bytes).
//!
//! The corpus is generated (seeded): API-style JSON objects of 100 B to 2 KB with repeated keys
//! and varying values.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::{Duration, Instant};

/// One window-bits setting's figures.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub bits: u8,
    pub messages: usize,
    pub plain_bytes: usize,
    pub compressed_bytes: usize,
    pub compress_us: f64,
    pub reset_us: f64,
    pub new_us: f64,
    pub inflate_context_us: f64,
    pub context_bytes: usize,
    pub compressor_bytes: f64,
    pub decompressor_bytes: f64,
}

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A seeded corpus of JSON messages.
pub fn corpus(n: usize) -> Vec<Vec<u8>> {
    let mut s: u64 = 0x5EED_CAFE;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    (0..n)
        .map(|i| {
            let items = 1 + (next() % 12) as usize;
            let mut m = format!(
                "{{\"id\":{},\"type\":\"{}\",\"ts\":{},\"user\":{{\"name\":\"{} {}\",\"id\":{}}},\"items\":[",
                100_000 + i,
                words[(next() % 4) as usize],
                1_765_000_000_000u64 + next() % 1_000_000,
                words[(next() % 16) as usize],
                words[(next() % 16) as usize],
                next() % 100_000
            );
            for j in 0..items {
                if j > 0 {
                    m.push(',');
                }
                m.push_str(&format!(
                    "{{\"sku\":\"{}-{}\",\"qty\":{},\"price\":{}.{:02},\"tags\":[\"{}\",\"{}\"]}}",
                    words[(next() % 16) as usize],
                    next() % 10_000,
                    1 + next() % 9,
                    next() % 500,
                    next() % 100,
                    words[(next() % 16) as usize],
                    words[(next() % 16) as usize]
                ));
            }
            m.push_str("],\"ok\":true}");
            m.into_bytes()
        })
        .collect()
}

/// Compresses one whole message with `c` (sync flush, tail removed) onto `out`.
fn compress(c: &mut Compress, msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(msg.len() + 64);
    let mut input = msg;
    loop {
        let before = c.total_in();
        c.compress_vec(input, out, FlushCompress::Sync)
            .expect("deflate of our own stream");
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(4096);
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    }
}

/// Inflates one message (tail appended) with `d` onto `out`.
fn inflate(d: &mut Decompress, packed: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut input: Vec<u8> = packed.to_vec();
    input.extend_from_slice(&TAIL);
    let mut rest = &input[..];
    loop {
        out.reserve(4096);
        let before = d.total_in();
        d.decompress_vec(rest, out, FlushDecompress::Sync)
            .expect("inflate of our own stream");
        rest = &rest[(d.total_in() - before) as usize..];
        if rest.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
}

/// Runs every window-bits setting over `messages` messages (each timing at least `min`) at
/// compression `level` (coreplex uses 6).
pub fn run(messages: usize, min: Duration, level: u32) -> Vec<Row> {
    let msgs = corpus(messages);
    let plain_bytes: usize = msgs.iter().map(Vec::len).sum();
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for bits in 9..=15u8 {
        let level = Compression::new(level);
        // Compress: reset per message, as the shard's pooled compressor is.
        let mut c = Compress::new_with_window_bits(level, false, bits);
        let mut compressed_bytes = 0;
        let mut rounds = 0;
        let t = Instant::now();
        while rounds == 0 || t.elapsed() < min {
            compressed_bytes = 0;
            for m in &msgs {
                c.reset();
                compress(&mut c, m, &mut out);
                compressed_bytes += out.len();
            }
            rounds += 1;
        }
        let compress_us = t.elapsed().as_secs_f64() * 1e6 / (rounds * messages) as f64;
        // Reset alone, and a new compressor, per message.
        let n = 2_000;
        let t = Instant::now();
        for _ in 0..n {
            c.reset();
            std::hint::black_box(&mut c);
        }
        let reset_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for m in msgs.iter().take(n) {
            let mut fresh = Compress::new_with_window_bits(level, false, bits);
            compress(&mut fresh, &m[..m.len().min(64)], &mut out);
            std::hint::black_box(&out);
        }
        let new_with_one = t.elapsed().as_secs_f64() * 1e6 / n.min(messages) as f64;
        let t = Instant::now();
        for m in msgs.iter().take(n) {
            c.reset();
            compress(&mut c, &m[..m.len().min(64)], &mut out);
            std::hint::black_box(&out);
        }
        let reset_with_one = t.elapsed().as_secs_f64() * 1e6 / n.min(messages) as f64;
        let new_us = new_with_one - reset_with_one + reset_us;
        // A client keeping context: its stream, then our inflate per message primed with the
        // window of the plaintext before it.
        let mut client = Compress::new_with_window_bits(level, false, bits);
        let packed: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| {
                compress(&mut client, m, &mut out);
                out.clone()
            })
            .collect();
        let window = 1usize << bits;
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut plain = Vec::new();
        let mut history: Vec<u8> = Vec::new();
        let t = Instant::now();
        for (p, m) in packed.iter().zip(&msgs) {
            d.reset(false);
            if !history.is_empty() {
                d.set_dictionary(&history)
                    .expect("a raw stream takes a dictionary");
            }
            inflate(&mut d, p, &mut plain);
            debug_assert_eq!(&plain, m);
            history.extend_from_slice(&plain);
            if history.len() > window {
                history.drain(..history.len() - window);
            }
        }
        let inflate_context_us = t.elapsed().as_secs_f64() * 1e6 / messages as f64;
        // zlib's documented state sizes (zconf.h), which zlib-rs keeps: deflate
        // 2^(windowBits+2) + 2^(memLevel+9) with memLevel 8; inflate 2^windowBits plus about
        // 7 KiB (coreplex's decompressors always have 15-bit windows: any client's stream fits).
        let compressor_bytes = ((1usize << (bits + 2)) + (1 << 17)) as f64;
        let decompressor_bytes = ((1usize << 15) + 7 * 1024) as f64;
        rows.push(Row {
            bits,
            messages,
            plain_bytes,
            compressed_bytes,
            compress_us,
            reset_us,
            new_us,
            inflate_context_us,
            context_bytes: window,
            compressor_bytes,
            decompressor_bytes,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_and_without_context() {
        let msgs = corpus(20);
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 9);
        let mut d = Decompress::new_with_window_bits(false, 15);
        let (mut out, mut plain) = (Vec::new(), Vec::new());
        for m in &msgs {
            c.reset();
            compress(&mut c, m, &mut out);
            d.reset(false);
            inflate(&mut d, &out, &mut plain);
            assert_eq!(&plain, m);
            assert!(out.len() < m.len());
        }
    }
}

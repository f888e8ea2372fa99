//! A server connection fed arbitrary bytes after the preface, at arbitrary splits: never
//! panics, consumes only whole frames within its input, reports Data events inside the input,
//! and keeps its memory bounded (no frame sequence makes it hold more than its limits allow).
#![no_main]

use coreplex_protocol::h2::conn::{Connection, Event, Role, Settings};
use coreplex_protocol::h2::frame::PREFACE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (usize::from(*s).max(1), r),
        None => return,
    };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let mut c = Connection::new(Role::Server, Settings::default());
    let mut out = Vec::new();
    c.start(&mut out);
    let mut buf: Vec<u8> = Vec::new();
    let mut now = 0u64;
    for chunk in input.chunks(split * 7) {
        buf.extend_from_slice(chunk);
        loop {
            match c.recv(&buf, now, &mut out) {
                Err(_) => return,
                Ok((used, ev)) => {
                    assert!(used <= buf.len());
                    if let Some(Event::Data { start, len, stream, .. }) = ev {
                        assert!(start + len <= used);
                        c.consumed(stream, len, &mut out);
                    }
                    if let Some(Event::Headers { stream, end_stream: true }) = ev {
                        // Answer, as a server would.
                        c.send_headers(stream, true, &mut out, |w| {
                            w.field(b":status", b"204", coreplex_protocol::h2::hpack::Indexing::Index)
                        });
                    }
                    buf.drain(..used);
                    if ev.is_none() {
                        break;
                    }
                }
            }
            assert!(c.active_streams() <= 100);
            assert!(c.heap_bytes() < 1 << 20, "{}", c.heap_bytes());
        }
        now += 3;
        out.clear();
    }
});

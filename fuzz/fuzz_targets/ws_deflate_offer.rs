//! permessage-deflate negotiation on arbitrary `Sec-WebSocket-Extensions` values (the input cut
//! into several field values at its NUL bytes): never panics; an agreement has window bits in
//! range (a server window of 9-15, a client window of 8-15); and the response it writes is
//! itself an acceptable offer that agrees to no more than it did.
#![no_main]

use coreplex_protocol::ws::deflate::{negotiate, write_response, DeflateConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, text)) = data.split_first() else {
        return;
    };
    let config = DeflateConfig {
        server_max_window_bits: 9 + knobs % 7,
        client_max_window_bits: 8 + (knobs >> 4) % 8,
    };
    let Some(a) = negotiate(text.split(|&b| b == 0), &config) else {
        return;
    };
    assert!((9..=config.server_max_window_bits).contains(&a.server_max_window_bits));
    assert!((8..=15).contains(&a.client_max_window_bits));
    let mut out = Vec::new();
    write_response(&mut out, &a);
    let value = out
        .strip_prefix(b"Sec-WebSocket-Extensions: ")
        .and_then(|v| v.strip_suffix(b"\r\n"))
        .expect("a response field");
    let again = negotiate([value], &config).expect("our response is a valid offer");
    assert!(again.server_max_window_bits <= a.server_max_window_bits);
    assert!(again.client_max_window_bits <= a.client_max_window_bits);
    assert!(again.client_no_context_takeover || !a.client_no_context_takeover);
});

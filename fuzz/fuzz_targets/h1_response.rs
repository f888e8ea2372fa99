//! HTTP/1.1 response heads from a backend (untrusted): `parse_response` for every request method
//! never panics, and a parsed head lies within the input.
#![no_main]

use coreplex_protocol::h1::parse_response;
use coreplex_protocol::{Limits, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, input)) = data.split_first() else {
        return;
    };
    let method = [Method::Get, Method::Head, Method::Post, Method::Connect][usize::from(m % 4)];
    let limits = Limits {
        max_request_line: 512,
        max_header_bytes: 2048,
        max_headers: 16,
        max_body: 1 << 20,
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    if let Ok(Some(head)) = parse_response(input, method, &limits, &mut headers) {
        assert!(head.head_len <= input.len());
        assert!((100..=599).contains(&head.status), "status {}", head.status);
    }
});

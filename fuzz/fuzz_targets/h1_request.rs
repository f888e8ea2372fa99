//! HTTP/1.1 request heads: the incremental scanner fed at arbitrary splits must agree with one
//! scan of the whole input, and a head it calls complete must parse (or fail) rather than look
//! incomplete to `parse_request`.
#![no_main]

use coreplex_protocol::{parse_request, HeadScanner, Limits, Scan};
use libfuzzer_sys::fuzz_target;
use std::mem::MaybeUninit;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_request_line: 512,
        max_header_bytes: 2048,
        max_headers: 16,
        max_body: 1 << 20,
    };
    let whole = HeadScanner::new().scan(input, &limits);
    // The same input in pieces of 1..=16 bytes (the first byte picks the size).
    let step = usize::from(split % 16) + 1;
    let mut scanner = HeadScanner::new();
    let mut pieces = Ok(Scan::Incomplete);
    let mut end = 0;
    while end < input.len() {
        end = (end + step).min(input.len());
        pieces = scanner.scan(&input[..end], &limits);
        if !matches!(pieces, Ok(Scan::Incomplete)) {
            break;
        }
    }
    if !input.is_empty() {
        assert_eq!(whole, pieces, "split scans disagree");
    }
    let mut headers = [const { MaybeUninit::uninit() }; 32];
    let parsed = parse_request(input, &limits, &mut headers);
    if let Ok(Scan::Complete { head_len }) = whole {
        assert!(head_len <= input.len());
        if let Ok(Some(head)) = &parsed {
            assert!(head.head_len <= input.len());
        }
        assert!(
            !matches!(parsed, Ok(None)),
            "the scanner's complete head is incomplete to the parser"
        );
    }
});

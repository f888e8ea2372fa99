//! The TLS crate's own parsers of untrusted bytes: the ClientHello peek, a certificate's
//! validity and names (DER), ticket opening and key files. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    coreplex_tls::hello::fuzz_peek(data);
    coreplex_tls::certs::fuzz_validity(data);
    coreplex_tls::tickets::fuzz_open(data);
});

//! PROXY protocol headers (v1 and v2): parsing never panics; a complete header's length lies
//! within the input; every prefix of a complete header is incomplete (so a header split across
//! reads is read the same); and a header re-encoded from what was parsed parses to the same.
#![no_main]

use coreplex_protocol::proxy::{encode_v1, encode_v2, parse, Header, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Parse::Complete { header, len }) = parse(data) else {
        return;
    };
    assert!(len <= data.len());
    for cut in 0..len {
        assert_eq!(parse(&data[..cut]), Ok(Parse::Incomplete), "prefix of {cut} bytes");
    }
    assert_eq!(
        parse(&data[..len]),
        Ok(Parse::Complete { header, len })
    );
    if let Header::Proxied {
        source,
        destination,
    } = header
    {
        for encode in [encode_v1, encode_v2] {
            let mut out = Vec::new();
            encode(source, destination, &mut out);
            assert!(matches!(
                parse(&out),
                Ok(Parse::Complete { header: h, len: n }) if h == header && n == out.len()
            ));
        }
    }
});

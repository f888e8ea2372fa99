//! The HPACK decoder on arbitrary blocks: never panics, keeps at most the size limit of fields,
//! and its table stays within the size the peer may use; what the encoder writes for the
//! decoded fields decodes back to them.
#![no_main]

use coreplex_protocol::h2::hpack::{Decoder, Encoder, HeaderList, Indexing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::default();
    // Several blocks on one table: the input split at 0xfe bytes.
    for block in data.split(|&b| b == 0xfe) {
        if d.decode(block, &mut out, 8192).is_err() {
            return;
        }
        assert!(d.table().size() <= 4096);
        if out.oversize {
            assert!(out.size > 8192);
            continue;
        }
        let kept: usize = out.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert!(kept <= 8192);
        // Round trip through our encoder and a fresh decoder.
        let mut e = Encoder::new(4096);
        let mut enc = Vec::new();
        e.begin_block(&mut enc);
        for (n, v) in out.iter() {
            e.encode(n, v, Indexing::Index, &mut enc);
        }
        let mut back = HeaderList::default();
        Decoder::new(4096).decode(&enc, &mut back, usize::MAX).expect("our own block decodes");
        assert!(out.iter().eq(back.iter()));
    }
});

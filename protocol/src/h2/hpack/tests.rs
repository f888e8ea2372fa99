//! RFC 7541 Appendix C vectors, bounds and encoder round trips.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fields(l: &HeaderList) -> Vec<(String, String)> {
    l.iter()
        .map(|(n, v)| {
            (
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// C.3 (plain) and C.4 (Huffman): three requests on one connection.
#[test]
fn appendix_c3_and_c4_requests() {
    let blocks = [
        [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
        ],
        ["828684be58086e6f2d6361636865", "828684be5886a8eb10649cbf"],
        [
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        ],
    ];
    let want = [
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]),
    ];
    let sizes = [57, 110, 164];
    for variant in 0..2 {
        let mut d = Decoder::new(4096);
        let mut out = HeaderList::default();
        for (i, b) in blocks.iter().enumerate() {
            d.decode(&hex(b[variant]), &mut out, 16 << 10).unwrap();
            assert_eq!(fields(&out), want[i]);
            assert_eq!(d.table().size(), sizes[i]);
        }
    }
}

/// C.5 (plain) and C.6 (Huffman): responses with a 256-octet table, so entries are evicted.
#[test]
fn appendix_c5_and_c6_responses_evict() {
    let blocks = [
        [
            "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
            "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
        ],
        [
            "4803333037c1c0bf",
            "4883640effc1c0bf",
        ],
        [
            "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
            "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ],
    ];
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let want = [
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", "https://www.example.com"),
        ]),
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", "https://www.example.com"),
        ]),
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ]),
    ];
    let sizes = [222, 222, 215];
    for variant in 0..2 {
        let mut d = Decoder::new(256);
        let mut out = HeaderList::default();
        for (i, b) in blocks.iter().enumerate() {
            d.decode(&hex(b[variant]), &mut out, 16 << 10).unwrap();
            assert_eq!(fields(&out), want[i], "block {i} variant {variant}");
            assert_eq!(d.table().size(), sizes[i]);
        }
    }
}

#[test]
fn malformed_blocks_are_errors() {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::default();
    // Index 0, and an index past the tables.
    assert_eq!(
        d.decode(&[0x80], &mut out, 1 << 20),
        Err(HpackError::Index(0))
    );
    assert_eq!(
        d.decode(&[0xbe], &mut out, 1 << 20),
        Err(HpackError::Index(62))
    );
    // A literal whose name index is out of range.
    assert_eq!(
        d.decode(&[0x7f, 0x10, 0x00], &mut out, 1 << 20),
        Err(HpackError::Index(79))
    );
    // Strings running past the block.
    assert_eq!(
        d.decode(&[0x40, 0x05, b'a'], &mut out, 1 << 20),
        Err(HpackError::Truncated)
    );
    assert_eq!(
        d.decode(&[0x40], &mut out, 1 << 20),
        Err(HpackError::Truncated)
    );
    // A table size update above our limit, and one after a field.
    assert_eq!(
        d.decode(&[0x3f, 0xe2, 0x1f], &mut out, 1 << 20),
        Err(HpackError::TableSize(4097))
    );
    assert_eq!(
        d.decode(&[0x82, 0x20], &mut out, 1 << 20),
        Err(HpackError::LateTableSize)
    );
    // Size updates at the start are fine (several, too).
    assert_eq!(
        d.decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x82], &mut out, 1 << 20),
        Ok(())
    );
    // A Huffman string with EOS.
    assert_eq!(
        d.decode(&[0x40, 0x81, 0xff, 0x81, 0x00], &mut out, 1 << 20),
        Err(HpackError::Huffman)
    );
}

#[test]
fn an_hpack_bomb_is_decoded_without_keeping_its_fields() {
    // One 4,000-byte entry inserted, then referenced 10,000 times: 40 MB decoded if kept.
    let mut block = vec![0x40];
    write_string(b"x-bomb", &mut block);
    write_string(&[b'a'; 4000], &mut block);
    block.extend(std::iter::repeat_n(0xbe, 10_000)); // index 62: the entry
    block.push(0x82); // and a field after it
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::default();
    d.decode(&block, &mut out, 16 << 10).unwrap();
    assert!(out.oversize);
    assert!(out.size > 40_000_000);
    assert!(out.heap_bytes() < 64 << 10, "{}", out.heap_bytes());
    // The table stayed in step: the next block can reference the entry.
    d.decode(&[0xbe], &mut out, 16 << 10).unwrap();
    assert!(!out.oversize);
    assert_eq!(out.get(0).0, b"x-bomb");
}

#[test]
fn encoder_output_decodes_to_the_same_fields() {
    let list = [
        (":status", "200", Indexing::Index),
        ("content-type", "text/plain", Indexing::Index),
        ("server", "coreplex", Indexing::Index),
        ("date", "Thu, 03 Dec 2026 16:00:00 GMT", Indexing::Literal),
        ("content-length", "13", Indexing::Literal),
        ("set-cookie", "secret=1", Indexing::Never),
        ("x-empty", "", Indexing::Index),
    ];
    for cap in [0, 256, 4096, 65536] {
        let mut e = Encoder::new(cap);
        let mut d = Decoder::new(4096);
        let mut out = HeaderList::default();
        let mut sizes = vec![];
        for _ in 0..3 {
            let mut block = vec![];
            e.begin_block(&mut block);
            for (n, v, how) in list {
                e.encode(n.as_bytes(), v.as_bytes(), how, &mut block);
            }
            sizes.push(block.len());
            d.decode(&block, &mut out, 1 << 20).unwrap();
            let got = fields(&out);
            let want: Vec<_> = list
                .iter()
                .map(|(n, v, _)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "cap {cap}");
            assert!(out.get(5).2, "never-indexed is marked");
            assert_eq!(d.table().size(), e.table().size(), "tables in step");
        }
        if cap >= 256 {
            assert!(sizes[1] < sizes[0], "repeats are indexed: {sizes:?}");
        } else {
            assert_eq!(e.table().size(), 0);
        }
    }
}

#[test]
fn encoder_follows_the_peers_table_limit() {
    let mut e = Encoder::new(4096);
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::default();
    let mut block = vec![];
    e.begin_block(&mut block);
    e.encode(b"x-a", b"1", Indexing::Index, &mut block);
    d.decode(&block, &mut out, 1 << 20).unwrap();
    // The peer lowers its limit to 0 then raises it to 100: both are signalled.
    e.set_peer_limit(0);
    e.set_peer_limit(100);
    let mut block = vec![];
    e.begin_block(&mut block);
    assert_eq!(&block, &[0x20, 0x3f, 0x45]);
    e.encode(b"x-a", b"1", Indexing::Index, &mut block);
    d.set_max_allowed(100);
    d.decode(&block, &mut out, 1 << 20).unwrap();
    assert_eq!(fields(&out), pairs(&[("x-a", "1")]));
    assert_eq!(d.table().max_size(), 100);
    assert_eq!(d.table().size(), e.table().size());
}

//! The HPACK Huffman code (RFC 7541 section 5.2 and Appendix B): table-driven decoding four
//! bits at a time, and encoding with a 64-bit accumulator.
//!
//! The tables are generated (`protocol/tools/gen_huffman.py`): `ENCODE` holds each symbol's
//! code; `DECODE` is an automaton over the code tree's 256 internal nodes, so decoding is two
//! table lookups per input byte and never allocates.

use super::huffman_table::{DECODE, ENCODE};

const FLAG_SYM: u8 = 1;
const FLAG_ACCEPT: u8 = 2;
const FLAG_FAIL: u8 = 4;

/// Why a Huffman string did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanError {
    /// The input contains the EOS symbol (RFC 7541 section 5.2: a decoding error).
    Eos,
    /// The padding is longer than 7 bits or not all ones.
    Padding,
    /// The decoded string would exceed the room the caller gave.
    TooLong,
}

/// Decodes `input`, appending the symbols to `out`, at most `max_out` bytes in all.
pub fn decode(input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<(), HuffmanError> {
    let start = out.len();
    // A Huffman string expands to at most 8/5 of its length.
    out.reserve((input.len() * 8 / 5 + 1).min(max_out.saturating_sub(out.len()).max(1)));
    let mut state = 0u8;
    let mut accept = true;
    for &b in input {
        for nibble in [b >> 4, b & 0x0f] {
            let (next, flags, sym) = DECODE[usize::from(state)][usize::from(nibble)];
            if flags & FLAG_FAIL != 0 {
                return Err(HuffmanError::Eos);
            }
            if flags & FLAG_SYM != 0 {
                if out.len() - start >= max_out {
                    return Err(HuffmanError::TooLong);
                }
                out.push(sym);
            }
            state = next;
            accept = flags & FLAG_ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

/// The encoded length of `input` in bytes.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&b| usize::from(ENCODE[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `input` to `out`, padded with ones (the EOS prefix).
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(input));
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let (code, len) = ENCODE[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 7541 Appendix C.4 and C.6 strings.
    const VECTORS: &[(&str, &str)] = &[
        ("www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
        ("no-cache", "a8eb10649cbf"),
        ("custom-key", "25a849e95ba97d7f"),
        ("custom-value", "25a849e95bb8e8b4bf"),
        ("302", "6402"),
        ("private", "aec3771a4b"),
        (
            "Mon, 21 Oct 2013 20:13:21 GMT",
            "d07abe941054d444a8200595040b8166e082a62d1bff",
        ),
        ("https://www.example.com", "9d29ad171863c78f0b97c8e9ae82ae43d3"),
        (
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ),
    ];

    #[test]
    fn rfc_vectors_encode_and_decode() {
        for (plain, coded) in VECTORS {
            let mut out = Vec::new();
            encode(plain.as_bytes(), &mut out);
            assert_eq!(out, hex(coded), "{plain}");
            assert_eq!(encoded_len(plain.as_bytes()), out.len());
            let mut back = Vec::new();
            decode(&out, &mut back, 1000).unwrap();
            assert_eq!(back, plain.as_bytes());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut out = Vec::new();
        encode(&all, &mut out);
        let mut back = Vec::new();
        decode(&out, &mut back, all.len()).unwrap();
        assert_eq!(back, all);
        for n in 0..all.len() {
            let mut out = Vec::new();
            encode(&all[..n], &mut out);
            let mut back = Vec::new();
            decode(&out, &mut back, n).unwrap();
            assert_eq!(back, &all[..n]);
        }
    }

    #[test]
    fn padding_and_eos_errors() {
        // 'a' is 00011 (5 bits): padded with 111 it is valid.
        let mut out = Vec::new();
        assert_eq!(decode(&[0b0001_1111], &mut out, 10), Ok(()));
        assert_eq!(out, b"a");
        // Padded with zeros: invalid.
        assert_eq!(
            decode(&[0b0001_1000], &mut Vec::new(), 10),
            Err(HuffmanError::Padding)
        );
        // A whole byte of padding (8 ones) after a full symbol: too long.
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut Vec::new(), 10),
            Err(HuffmanError::Padding)
        );
        // EOS (30 ones) spelled out.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new(), 10),
            Err(HuffmanError::Eos)
        );
        // The room bound holds.
        let mut coded = Vec::new();
        encode(b"abcdef", &mut coded);
        assert_eq!(
            decode(&coded, &mut Vec::new(), 5),
            Err(HuffmanError::TooLong)
        );
        // Empty input is the empty string.
        assert_eq!(decode(&[], &mut Vec::new(), 0), Ok(()));
    }
}

//! Masking (RFC 6455 section 5.3): `byte[i] ^= key[i % 4]`, in place or while copying, eight
//! bytes at a time. A payload may arrive in pieces: `phase` is how many of its bytes came before
//! this piece, so each piece continues the key where the last one stopped.

/// The key rotated to start at `phase`, as a word repeating it twice.
fn key_word(key: [u8; 4], phase: usize) -> u64 {
    let r = phase % 4;
    let k = [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]];
    u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]])
}

/// Masks (or unmasks: the operation is its own inverse) `buf` in place.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let word = key_word(key, phase);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    let bytes = word.to_ne_bytes();
    for (b, k) in chunks.into_remainder().iter_mut().zip(bytes) {
        *b ^= k;
    }
}

/// Appends `src` masked (or unmasked) to `out`: one pass, no second copy.
pub fn extend_masked(out: &mut Vec<u8>, src: &[u8], key: [u8; 4], phase: usize) {
    let word = key_word(key, phase);
    out.reserve(src.len());
    let mut chunks = src.chunks_exact(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ word;
        out.extend_from_slice(&v.to_ne_bytes());
    }
    let bytes = word.to_ne_bytes();
    out.extend(chunks.remainder().iter().zip(bytes).map(|(b, k)| b ^ k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], key: [u8; 4], phase: usize) -> Vec<u8> {
        src.iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(i + phase) % 4])
            .collect()
    }

    #[test]
    fn the_rfc_example_unmasks_to_hello() {
        let mut p = *b"\x7f\x9f\x4d\x51\x58";
        apply_mask(&mut p, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&p, b"Hello");
    }

    #[test]
    fn in_place_and_copying_agree_with_the_definition_for_every_length_and_phase() {
        let key = [0xA1, 0x5B, 0x07, 0xEE];
        let src: Vec<u8> = (0..67u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..src.len() {
            for phase in 0..8 {
                let want = naive(&src[..len], key, phase);
                let mut in_place = src[..len].to_vec();
                apply_mask(&mut in_place, key, phase);
                assert_eq!(in_place, want, "len {len} phase {phase}");
                let mut copied = vec![0xFF];
                extend_masked(&mut copied, &src[..len], key, phase);
                assert_eq!(&copied[1..], &want[..], "len {len} phase {phase}");
            }
        }
    }

    #[test]
    fn a_payload_masked_in_pieces_equals_one_masked_whole() {
        let key = [1, 2, 3, 4];
        let src: Vec<u8> = (0..100u8).collect();
        let want = naive(&src, key, 0);
        let mut pieces = src.clone();
        let mut at = 0;
        for step in [1usize, 3, 5, 8, 13, 21, 49] {
            apply_mask(&mut pieces[at..at + step], key, at);
            at += step;
        }
        assert_eq!(pieces, want);
    }
}

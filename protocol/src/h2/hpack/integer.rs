//! HPACK integers (RFC 7541 section 5.1): an N-bit prefix, then 7-bit continuation bytes.

/// Why an integer did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntError {
    /// The input ended inside the integer.
    Truncated,
    /// The value exceeds `u32` (no HPACK quantity needs more; longer encodings are attacks).
    Overflow,
}

/// Decodes an integer whose first byte is `input[0]` with a `prefix_bits`-bit prefix. Returns the
/// value and the bytes used.
pub fn decode(input: &[u8], prefix_bits: u8) -> Result<(u32, usize), IntError> {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = (1u32 << prefix_bits) - 1;
    let first = *input.first().ok_or(IntError::Truncated)?;
    let mut value = u32::from(first) & max_prefix;
    if value < max_prefix {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &b) in input[1..].iter().enumerate() {
        let part = u32::from(b & 0x7f);
        if shift > 28 || (shift == 28 && part > 0x0f) {
            return Err(IntError::Overflow);
        }
        value = value.checked_add(part << shift).ok_or(IntError::Overflow)?;
        if b & 0x80 == 0 {
            return Ok((value, i + 2));
        }
        shift += 7;
    }
    Err(IntError::Truncated)
}

/// Appends `value` with a `prefix_bits`-bit prefix; `flags` holds the first byte's other bits.
pub fn encode(value: u32, prefix_bits: u8, flags: u8, out: &mut Vec<u8>) {
    let max_prefix = (1u32 << prefix_bits) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with 5 bits; C.1.3: 42 with 8 bits.
        for (value, prefix, bytes) in [
            (10u32, 5u8, vec![0x0au8]),
            (1337, 5, vec![0x1f, 0x9a, 0x0a]),
            (42, 8, vec![0x2a]),
        ] {
            let mut out = Vec::new();
            encode(value, prefix, 0, &mut out);
            assert_eq!(out, bytes);
            assert_eq!(decode(&bytes, prefix), Ok((value, bytes.len())));
        }
    }

    #[test]
    fn round_trips_bounds_and_errors() {
        for prefix in 1..=8u8 {
            for v in [
                0,
                1,
                126,
                127,
                128,
                254,
                255,
                256,
                16_383,
                1 << 20,
                u32::MAX,
            ] {
                let mut out = vec![];
                encode(v, prefix, 0, &mut out);
                assert_eq!(decode(&out, prefix), Ok((v, out.len())), "{v} {prefix}");
            }
        }
        assert_eq!(decode(&[], 5), Err(IntError::Truncated));
        assert_eq!(decode(&[0x1f, 0x80], 5), Err(IntError::Truncated));
        // u32::MAX + 1 and absurdly long encodings overflow.
        assert_eq!(
            decode(&[0xff, 0x80, 0xff, 0xff, 0xff, 0x0f], 8),
            Err(IntError::Overflow)
        );
        assert_eq!(
            decode(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 5),
            Err(IntError::Overflow)
        );
        // Flags in the first byte are kept and ignored on decode.
        let mut out = vec![];
        encode(3, 6, 0x40, &mut out);
        assert_eq!(out, [0x43]);
        assert_eq!(decode(&out, 6), Ok((3, 1)));
    }
}

//! Writing frames (RFC 6455 section 5.2) straight into an output buffer: the header in its
//! minimal length encoding, then the payload, masked while it is copied when a key is given (a
//! client must mask, a server must not).

use super::close::fit_reason;
use super::frame::{Opcode, MAX_CONTROL_PAYLOAD};
use super::mask::extend_masked;

/// Appends a frame header.
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: u64,
) {
    out.push(if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 } | opcode.as_u8());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Appends a whole frame (RSV bits clear).
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    write_header(out, fin, false, opcode, mask, payload.len() as u64);
    match mask {
        Some(key) => extend_masked(out, payload, key, 0),
        None => out.extend_from_slice(payload),
    }
}

/// Appends a close frame: empty without a code, else the code and `reason` (cut to fit 125
/// bytes at a character boundary).
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let len = match code {
        None => 0,
        Some(c) => {
            let reason = fit_reason(reason).as_bytes();
            payload[..2].copy_from_slice(&c.to_be_bytes());
            payload[2..2 + reason.len()].copy_from_slice(reason);
            2 + reason.len()
        }
    };
    write_frame(out, true, Opcode::Close, &payload[..len], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_as_the_rfc_examples() {
        let mut out = Vec::new();
        write_frame(&mut out, true, Opcode::Text, b"Hello", None);
        assert_eq!(out, b"\x81\x05Hello");
        out.clear();
        write_frame(
            &mut out,
            true,
            Opcode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(out, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        out.clear();
        write_header(&mut out, true, false, Opcode::Binary, None, 256);
        assert_eq!(out, b"\x82\x7E\x01\x00");
        out.clear();
        write_header(&mut out, true, false, Opcode::Binary, None, 65_536);
        assert_eq!(out, b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00");
    }

    #[test]
    fn lengths_use_the_fewest_bytes_at_each_boundary() {
        for (len, header) in [(125u64, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            write_header(&mut out, true, true, Opcode::Binary, None, len);
            assert_eq!(out.len(), header, "len {len}");
            assert_eq!(out[0], 0xC2);
        }
    }

    #[test]
    fn close_frames_carry_code_and_a_fitted_reason() {
        let mut out = Vec::new();
        write_close(&mut out, Some(1000), "bye", None);
        assert_eq!(out, b"\x88\x05\x03\xe8bye");
        out.clear();
        write_close(&mut out, None, "ignored", None);
        assert_eq!(out, b"\x88\x00");
        out.clear();
        write_close(&mut out, Some(1001), &"x".repeat(300), None);
        assert_eq!(out.len(), 2 + 125);
    }
}

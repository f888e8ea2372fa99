//! The frame header (RFC 6455 section 5.2), parsed from the front of a byte slice:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! [`parse_header`] checks what a header can be checked for on its own: reserved opcodes, the
//! minimal length encoding, the 64-bit length's top bit, and the control-frame rules (FIN set,
//! payload <= 125). Masking by role, RSV bits by negotiated extension and the fragmentation
//! rules are the [`Decoder`](super::Decoder)'s.

use super::error::WsError;

/// The longest header: 2 bytes, a 64-bit length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// The largest control-frame payload (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// RSV bits as they sit in the first header byte.
#[allow(missing_docs)] // the RFC's names
pub mod rsv {
    pub const RSV1: u8 = 0x40;
    pub const RSV2: u8 = 0x20;
    pub const RSV3: u8 = 0x10;
}

/// The opcodes RFC 6455 defines (section 5.2); every other one is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the RFC's names
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// The opcode read from the wire, `None` for a reserved one.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The opcode on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong (section 5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// This is the message's last frame.
    pub fin: bool,
    /// The RSV bits, in their header-byte positions ([`rsv`]).
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload's length in bytes.
    pub payload_len: u64,
}

/// Parses the header at the front of `input`: `Ok(None)` until the whole header is there,
/// then the header and its length in bytes.
pub fn parse_header(input: &[u8]) -> Result<Option<(FrameHeader, usize)>, WsError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(WsError::ReservedOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = input.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([b[0], b[1]]) as u64;
            if len < 126 {
                return Err(WsError::NonMinimalLength);
            }
            (len, 4)
        }
        127 => {
            let Some(b) = input.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(WsError::LengthOverflow);
            }
            if len <= u16::MAX as u64 {
                return Err(WsError::NonMinimalLength);
            }
            (len, 10)
        }
        short => (short as u64, 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::ControlTooLong);
        }
    }
    let mask = if masked {
        let Some(key) = input.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some(key.try_into().expect("4 bytes"))
    } else {
        None
    };
    let header = FrameHeader {
        fin,
        rsv: b0 & (rsv::RSV1 | rsv::RSV2 | rsv::RSV3),
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, WsError> {
        parse_header(bytes)
    }

    #[test]
    fn the_rfc_examples_parse() {
        // RFC 6455 section 5.7.
        let (h, n) = parse(b"\x81\x05Hello").unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, Opcode::Text, None, 5, 2)
        );
        let (h, n) = parse(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        let (h, _) = parse(b"\x01\x03Hel").unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, Opcode::Text));
        let (h, _) = parse(b"\x80\x02lo").unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, Opcode::Continuation));
        let (h, n) = parse(b"\x82\x7E\x01\x00").unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (Opcode::Binary, 256, 4));
        let (h, n) = parse(b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00")
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65_536, 10));
    }

    #[test]
    fn a_header_split_anywhere_waits_for_the_rest() {
        let whole = b"\x82\xFF\x00\x00\x00\x00\x00\x01\x00\x00\x01\x02\x03\x04";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (h, n) = parse(whole).unwrap().unwrap();
        assert_eq!((h.payload_len, h.mask, n), (65_536, Some([1, 2, 3, 4]), 14));
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(parse(&[0x80 | op, 0]), Err(WsError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn lengths_must_use_their_minimal_encoding() {
        assert_eq!(parse(b"\x82\x7E\x00\x7D"), Err(WsError::NonMinimalLength));
        assert!(parse(b"\x82\x7E\x00\x7E").unwrap().is_some());
        assert_eq!(
            parse(b"\x82\x7F\x00\x00\x00\x00\x00\x00\xFF\xFF"),
            Err(WsError::NonMinimalLength)
        );
        assert_eq!(
            parse(b"\x82\x7F\x80\x00\x00\x00\x00\x00\x00\x00"),
            Err(WsError::LengthOverflow)
        );
    }

    #[test]
    fn control_frames_are_short_and_whole() {
        assert_eq!(parse(b"\x09\x00"), Err(WsError::FragmentedControl));
        assert_eq!(parse(b"\x89\x7E\x00\x7E"), Err(WsError::ControlTooLong));
        assert!(parse(b"\x89\x7D").unwrap().is_some());
    }

    #[test]
    fn rsv_bits_are_reported_as_they_sit() {
        let (h, _) = parse(b"\xC1\x00").unwrap().unwrap();
        assert_eq!(h.rsv, rsv::RSV1);
        let (h, _) = parse(b"\xB1\x00").unwrap().unwrap();
        assert_eq!(h.rsv, rsv::RSV2 | rsv::RSV3);
    }
}

//! Close frames (RFC 6455 section 5.5.1) and status codes (section 7.4): the payload is empty or
//! a 2-byte code followed by a UTF-8 reason.

use super::error::WsError;
use super::frame::MAX_CONTROL_PAYLOAD;

/// Status codes (section 7.4.1, and 1012-1014 from the IANA registry).
#[allow(missing_docs)] // the RFC's names
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Never on the wire: the close frame had no code.
    pub const NO_STATUS: u16 = 1005;
    /// Never on the wire: the connection ended without a close frame.
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const MANDATORY_EXTENSION: u16 = 1010;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_GATEWAY: u16 = 1014;
}

/// Whether `c` may appear in a close frame: the codes defined for the wire (1004, 1005, 1006
/// and 1015 are not), and 3000-4999 for libraries and applications.
pub fn is_valid_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A parsed close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code; `None` for an empty payload (reported as 1005).
    pub code: Option<u16>,
    /// The reason, possibly empty.
    pub reason: &'a str,
}

/// Parses an (unmasked) close payload.
pub fn parse_close(payload: &[u8]) -> Result<CloseFrame<'_>, WsError> {
    match payload {
        [] => Ok(CloseFrame {
            code: None,
            reason: "",
        }),
        [_] => Err(WsError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let c = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(c) {
                return Err(WsError::InvalidCloseCode(c));
            }
            let reason = simdutf8::basic::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(CloseFrame {
                code: Some(c),
                reason,
            })
        }
    }
}

/// The longest reason that fits a close frame beside its code.
pub const MAX_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// `reason` cut to [`MAX_REASON`] bytes at a character boundary.
pub fn fit_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_autobahn_and_the_rfc_allow_are_allowed() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_code(c), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_code(c), "{c}");
        }
    }

    #[test]
    fn close_payloads_parse_strictly() {
        assert_eq!(
            parse_close(b""),
            Ok(CloseFrame {
                code: None,
                reason: ""
            })
        );
        assert_eq!(parse_close(b"\x03"), Err(WsError::CloseTooShort));
        assert_eq!(
            parse_close(b"\x03\xe8bye"),
            Ok(CloseFrame {
                code: Some(1000),
                reason: "bye"
            })
        );
        assert_eq!(
            parse_close(b"\x03\xed"),
            Err(WsError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close(b"\x03\xe8\xce\xba\xff"),
            Err(WsError::InvalidUtf8)
        );
        assert_eq!(WsError::InvalidUtf8.close_code(), code::INVALID_PAYLOAD);
        assert_eq!(
            WsError::InvalidCloseCode(5).close_code(),
            code::PROTOCOL_ERROR
        );
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = fit_reason(&long);
        assert_eq!(cut.len(), 122);
        assert_eq!(fit_reason("short"), "short");
    }
}

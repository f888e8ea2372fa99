//! HTTP/2 error codes (RFC 9113 section 7) and the two kinds of error (section 5.4).

/// An error code as carried by RST_STREAM and GOAWAY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub enum ErrorCode {
    NoError,
    ProtocolError,
    InternalError,
    FlowControlError,
    SettingsTimeout,
    StreamClosed,
    FrameSizeError,
    RefusedStream,
    Cancel,
    CompressionError,
    ConnectError,
    EnhanceYourCalm,
    InadequateSecurity,
    Http11Required,
    /// A code this implementation does not know (treated as INTERNAL_ERROR, section 7).
    Unknown(u32),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::NoError => 0x0,
            ErrorCode::ProtocolError => 0x1,
            ErrorCode::InternalError => 0x2,
            ErrorCode::FlowControlError => 0x3,
            ErrorCode::SettingsTimeout => 0x4,
            ErrorCode::StreamClosed => 0x5,
            ErrorCode::FrameSizeError => 0x6,
            ErrorCode::RefusedStream => 0x7,
            ErrorCode::Cancel => 0x8,
            ErrorCode::CompressionError => 0x9,
            ErrorCode::ConnectError => 0xa,
            ErrorCode::EnhanceYourCalm => 0xb,
            ErrorCode::InadequateSecurity => 0xc,
            ErrorCode::Http11Required => 0xd,
            ErrorCode::Unknown(c) => c,
        }
    }

    /// The code read from the wire.
    pub fn from_code(c: u32) -> ErrorCode {
        match c {
            0x0 => ErrorCode::NoError,
            0x1 => ErrorCode::ProtocolError,
            0x2 => ErrorCode::InternalError,
            0x3 => ErrorCode::FlowControlError,
            0x4 => ErrorCode::SettingsTimeout,
            0x5 => ErrorCode::StreamClosed,
            0x6 => ErrorCode::FrameSizeError,
            0x7 => ErrorCode::RefusedStream,
            0x8 => ErrorCode::Cancel,
            0x9 => ErrorCode::CompressionError,
            0xa => ErrorCode::ConnectError,
            0xb => ErrorCode::EnhanceYourCalm,
            0xc => ErrorCode::InadequateSecurity,
            0xd => ErrorCode::Http11Required,
            c => ErrorCode::Unknown(c),
        }
    }

    /// The name used in metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::NoError => "no_error",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::FlowControlError => "flow_control_error",
            ErrorCode::SettingsTimeout => "settings_timeout",
            ErrorCode::StreamClosed => "stream_closed",
            ErrorCode::FrameSizeError => "frame_size_error",
            ErrorCode::RefusedStream => "refused_stream",
            ErrorCode::Cancel => "cancel",
            ErrorCode::CompressionError => "compression_error",
            ErrorCode::ConnectError => "connect_error",
            ErrorCode::EnhanceYourCalm => "enhance_your_calm",
            ErrorCode::InadequateSecurity => "inadequate_security",
            ErrorCode::Http11Required => "http_1_1_required",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// Every known code (for metrics that list each).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::NoError,
        ErrorCode::ProtocolError,
        ErrorCode::InternalError,
        ErrorCode::FlowControlError,
        ErrorCode::SettingsTimeout,
        ErrorCode::StreamClosed,
        ErrorCode::FrameSizeError,
        ErrorCode::RefusedStream,
        ErrorCode::Cancel,
        ErrorCode::CompressionError,
        ErrorCode::ConnectError,
        ErrorCode::EnhanceYourCalm,
        ErrorCode::InadequateSecurity,
        ErrorCode::Http11Required,
    ];

    /// Position in [`ErrorCode::ALL`] (unknown codes count with INTERNAL_ERROR).
    pub fn slot(self) -> usize {
        match self {
            ErrorCode::Unknown(_) => 2,
            c => c.code() as usize,
        }
    }
}

/// What a protocol violation costs (RFC 9113 section 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Error {
    /// The whole connection: GOAWAY with the code, then close.
    Connection(ErrorCode),
    /// One stream: RST_STREAM with the code; the connection goes on.
    Stream(u32, ErrorCode),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(ErrorCode::from_code(c.code()), *c);
            assert_eq!(c.slot(), i);
        }
        assert_eq!(ErrorCode::from_code(0x99), ErrorCode::Unknown(0x99));
        assert_eq!(ErrorCode::Unknown(0x99).code(), 0x99);
    }
}

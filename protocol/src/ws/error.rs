//! Why a peer's frames were refused, and the close code each reason is answered with (RFC 6455
//! section 7.4.1).

use super::close::code;

/// A receive error: the connection is failed with [`WsError::close_code`] (section 7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// An opcode the RFC reserves (0x3-0x7, 0xB-0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV1-3 set where no negotiated extension defines them (section 5.2).
    #[error("reserved bits set that no negotiated extension defines")]
    ReservedBits,
    /// A client frame without a mask (section 5.1).
    #[error("a client frame is not masked")]
    UnmaskedClientFrame,
    /// A server frame with a mask (section 5.1).
    #[error("a server frame is masked")]
    MaskedServerFrame,
    /// A control frame without FIN (section 5.5).
    #[error("a control frame is fragmented")]
    FragmentedControl,
    /// A control frame whose payload exceeds 125 bytes (section 5.5).
    #[error("a control frame's payload is longer than 125 bytes")]
    ControlTooLong,
    /// A payload length not written in the fewest bytes (section 5.2).
    #[error("a payload length not in its minimal encoding")]
    NonMinimalLength,
    /// A 64-bit payload length with its most significant bit set (section 5.2).
    #[error("a 64-bit payload length with its most significant bit set")]
    LengthOverflow,
    /// A continuation frame with no data message in progress (section 5.4).
    #[error("a continuation frame with no message in progress")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still in progress (section 5.4).
    #[error("a new data message before the previous one ended")]
    UnfinishedMessage,
    /// A close frame with a one-byte payload (section 5.5.1).
    #[error("a close frame with a one-byte payload")]
    CloseTooShort,
    /// A close code that may not appear on the wire (section 7.4).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// Text (or a close reason) that is not UTF-8 (section 8.1).
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    /// A frame longer than the configured limit.
    #[error("a frame longer than the limit")]
    FrameTooBig,
    /// A message longer than the configured limit.
    #[error("a message longer than the limit")]
    MessageTooBig,
}

impl WsError {
    /// The close code to fail the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::InvalidUtf8 => code::INVALID_PAYLOAD,
            WsError::FrameTooBig | WsError::MessageTooBig => code::TOO_BIG,
            _ => code::PROTOCOL_ERROR,
        }
    }

    /// The name used in metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            WsError::ReservedOpcode(_) => "reserved_opcode",
            WsError::ReservedBits => "reserved_bits",
            WsError::UnmaskedClientFrame => "unmasked_client_frame",
            WsError::MaskedServerFrame => "masked_server_frame",
            WsError::FragmentedControl => "fragmented_control",
            WsError::ControlTooLong => "control_too_long",
            WsError::NonMinimalLength => "non_minimal_length",
            WsError::LengthOverflow => "length_overflow",
            WsError::UnexpectedContinuation => "unexpected_continuation",
            WsError::UnfinishedMessage => "unfinished_message",
            WsError::CloseTooShort => "close_too_short",
            WsError::InvalidCloseCode(_) => "invalid_close_code",
            WsError::InvalidUtf8 => "invalid_utf8",
            WsError::FrameTooBig => "frame_too_big",
            WsError::MessageTooBig => "message_too_big",
        }
    }
}

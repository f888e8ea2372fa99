//! WebSocket (RFC 6455), sans-I/O: frames parsed from a byte slice and unmasked while their
//! payload is copied where it goes, the receive rules for fragmentation and control frames, close frames and their
//! codes, and UTF-8 validation that streams across frames and fails at the first bad byte.
//!
//! Nothing here keeps a buffer per connection: a [`Decoder`] is a few words of state, and a frame
//! header or a control frame split across reads stays in the caller's input buffer until it is
//! whole (as HTTP/1 heads do), while data payloads stream out as they arrive.
//!
//! [`handshake`] checks a server's opening handshake and writes its 101; [`deflate`] negotiates
//! permessage-deflate (RFC 7692), whose compression is the caller's: a decoder only needs to
//! know whether RSV1 may be set ([`Decoder::new`]). RFC 8441 is not here yet.

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod encode;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::CloseFrame;
pub use decoder::{
    Close, ControlPayload, Decoded, Decoder, DecoderConfig, Event, MessageKind, Role,
};
pub use error::WsError;
pub use frame::{FrameHeader, Opcode};
pub use handshake::HandshakeError;
pub use utf8::Utf8Stream;

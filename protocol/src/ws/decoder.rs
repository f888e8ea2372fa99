//! The receive side of a WebSocket connection (RFC 6455 sections 5.1-5.5): frames in, events out.
//!
//! [`Decoder::decode`] takes the connection's unread input and returns how many bytes it
//! consumed and at most one [`Event`]. Data payloads are unmasked while they are copied to the
//! caller's `out` buffer as they arrive ([`Event::Data`]: the last `len` bytes of `out`); a
//! header or a control frame (<= 131 bytes) is only consumed once it is whole, so a caller keeps
//! the unconsumed bytes in its input buffer and calls again when more arrive. Call until a call
//! consumes nothing and yields no event. An error is final (fail the connection with
//! [`WsError::close_code`]), and the failing call leaves `out` as it found it, so bytes that
//! broke a rule are never passed on.
//!
//! Checked here: masking by role (section 5.1), RSV bits (RSV1 only on a message's first frame
//! and only where permessage-deflate was negotiated), the fragmentation rules (section 5.4:
//! control frames may come between a message's frames, a continuation needs a message, a new
//! message needs the last one finished), close frames (section 5.5.1), frame and message size
//! limits (checked on each header, before any payload arrives), and UTF-8 of uncompressed text
//! as it arrives (section 8.1). Compressed text is validated by whoever inflates it, with a
//! [`Utf8Stream`] of its own.
//!
//! The state is a few words and holds no buffer; limits and role come from a [`DecoderConfig`]
//! passed to each call, so that one config serves every connection of a route.

use super::close::parse_close;
use super::error::WsError;
use super::frame::{parse_header, rsv, Opcode, MAX_CONTROL_PAYLOAD};
use super::mask::{apply_mask, extend_masked};
use super::utf8::Utf8Stream;

/// Which end of the connection this decoder is: a server reads masked frames, a client
/// unmasked ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every frame received must be masked.
    Server,
    /// We are the client: no frame received may be masked.
    Client,
}

/// What every connection of a route shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Our end of the connection.
    pub role: Role,
    /// The longest frame payload accepted (1009 beyond it).
    pub max_frame: u64,
    /// The longest data message accepted, all its frames together (1009 beyond it).
    pub max_message: u64,
}

impl Default for DecoderConfig {
    /// A server accepting frames and messages up to 16 MiB.
    fn default() -> Self {
        DecoderConfig {
            role: Role::Server,
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// A data message's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
}

/// A control frame's payload (at most 125 bytes), unmasked, held by value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    len: u8,
    bytes: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    fn unmasked(payload: &[u8], mask: Option<[u8; 4]>) -> ControlPayload {
        let mut bytes = [0; MAX_CONTROL_PAYLOAD];
        bytes[..payload.len()].copy_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut bytes[..payload.len()], key, 0);
        }
        ControlPayload {
            len: payload.len() as u8,
            bytes,
        }
    }

    /// The payload's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

/// A received close frame: its code, and its reason (valid UTF-8) in the payload after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The status code; `None` for an empty payload (reported as 1005).
    pub code: Option<u16>,
    payload: ControlPayload,
}

impl Close {
    /// The reason, possibly empty.
    pub fn reason(&self) -> &str {
        let bytes = self.payload.as_bytes();
        std::str::from_utf8(bytes.get(2..).unwrap_or_default()).expect("validated by parse_close")
    }
}

/// What the peer sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A data frame's header: its payload follows as [`Event::Data`] (`len` bytes in all).
    /// `opcode` is `Text` or `Binary` for a message's first frame, `Continuation` after it;
    /// `rsv1` is set on a compressed message's first frame (permessage-deflate).
    DataFrame {
        /// Text, binary or continuation.
        opcode: Opcode,
        /// The message's last frame.
        fin: bool,
        /// RSV1 (only ever set on a first frame, and only where it was allowed).
        rsv1: bool,
        /// The payload's length.
        len: u64,
    },
    /// `len` more payload bytes of the current message were unmasked onto the end of `out`;
    /// uncompressed text is valid UTF-8 so far (a code point may be cut at the end). `last`:
    /// these end the message (its UTF-8 is complete).
    Data {
        /// Bytes appended to `out`.
        len: usize,
        /// The message's final bytes.
        last: bool,
    },
    /// The current message ended (after its last [`Event::Data`], or after an empty final
    /// frame).
    MessageEnd,
    /// A ping and its payload (answer with a pong carrying the same payload).
    Ping(ControlPayload),
    /// A pong and its payload.
    Pong(ControlPayload),
    /// A valid close frame; later input is discarded.
    Close(Close),
}

/// The result of one [`Decoder::decode`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed; drop them before the next call.
    pub consumed: usize,
    /// What they carried, if anything completed.
    pub event: Option<Event>,
}

impl Decoded {
    const NEED_MORE: Decoded = Decoded {
        consumed: 0,
        event: None,
    };
}

/// Where the decoder is in the byte stream (sections 5.2, 5.4, 5.5.1):
///
/// ```text
///                 data frame header                  last payload byte
///   +--------+ ---------------------> +---------+ ---------------------> +--------+
///   | Header |                        | Payload |   (FIN: MessageEnd     | Header |
///   +--------+                        +---------+    in between)         +--------+
///     |  ^       ping / pong, whole      Data events as bytes arrive
///     |  +-----------------------------+
///     +-- close, whole ---> +--------+
///                           | Closed |  later bytes are discarded
///                           +--------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Header,
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        phase: u8,
        fin: bool,
    },
    MessageEnd,
    Closed,
}

/// The data message in progress; control frames may arrive between its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InProgress {
    kind: MessageKind,
    compressed: bool,
}

/// A connection's receive state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder {
    read: Read,
    message: Option<InProgress>,
    message_len: u64,
    utf8: Utf8Stream,
    rsv1_allowed: bool,
}

impl Decoder {
    /// A decoder at a message boundary. `rsv1_allowed`: permessage-deflate was negotiated.
    pub fn new(rsv1_allowed: bool) -> Decoder {
        Decoder {
            read: Read::Header,
            message: None,
            message_len: 0,
            utf8: Utf8Stream::default(),
            rsv1_allowed,
        }
    }

    /// Between messages with no frame begun: the state [`Decoder::new`] would give, so an idle
    /// connection may drop the decoder and make a new one when bytes arrive.
    pub fn is_idle(&self) -> bool {
        self.read == Read::Header && self.message.is_none()
    }

    /// A close frame was received.
    pub fn is_closed(&self) -> bool {
        self.read == Read::Closed
    }

    /// Consumes what it can from the front of `input`, appending payload bytes to `out`; see
    /// the module docs.
    pub fn decode(
        &mut self,
        config: &DecoderConfig,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Decoded, WsError> {
        match self.read {
            Read::Header => self.header(config, input),
            Read::Payload { .. } => self.payload(input, out),
            Read::MessageEnd => {
                self.read = Read::Header;
                self.message = None;
                self.message_len = 0;
                Ok(Decoded {
                    consumed: 0,
                    event: Some(Event::MessageEnd),
                })
            }
            Read::Closed => Ok(Decoded {
                consumed: input.len(),
                event: None,
            }),
        }
    }

    fn header(&mut self, config: &DecoderConfig, input: &[u8]) -> Result<Decoded, WsError> {
        let Some((h, header_len)) = parse_header(input)? else {
            return Ok(Decoded::NEED_MORE);
        };
        match (config.role, h.mask) {
            (Role::Server, None) => return Err(WsError::UnmaskedClientFrame),
            (Role::Client, Some(_)) => return Err(WsError::MaskedServerFrame),
            _ => {}
        }
        let first_data_frame = matches!(h.opcode, Opcode::Text | Opcode::Binary);
        let allowed = if self.rsv1_allowed && first_data_frame {
            rsv::RSV1
        } else {
            0
        };
        if h.rsv & !allowed != 0 {
            return Err(WsError::ReservedBits);
        }
        if h.opcode.is_control() {
            let total = header_len + h.payload_len as usize;
            if input.len() < total {
                return Ok(Decoded::NEED_MORE);
            }
            let payload = ControlPayload::unmasked(&input[header_len..total], h.mask);
            let event = match h.opcode {
                Opcode::Ping => Event::Ping(payload),
                Opcode::Pong => Event::Pong(payload),
                _ => {
                    let code = parse_close(payload.as_bytes())?.code;
                    self.read = Read::Closed;
                    Event::Close(Close { code, payload })
                }
            };
            return Ok(Decoded {
                consumed: total,
                event: Some(event),
            });
        }
        if h.payload_len > config.max_frame {
            return Err(WsError::FrameTooBig);
        }
        let start = match (h.opcode, self.message) {
            (Opcode::Continuation, None) => return Err(WsError::UnexpectedContinuation),
            (Opcode::Continuation, Some(_)) => None,
            (_, Some(_)) => return Err(WsError::UnfinishedMessage),
            (op, None) => Some(InProgress {
                kind: if op == Opcode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                },
                compressed: h.rsv & rsv::RSV1 != 0,
            }),
        };
        let so_far = if start.is_some() { 0 } else { self.message_len };
        let message_len = so_far.saturating_add(h.payload_len);
        if message_len > config.max_message {
            return Err(WsError::MessageTooBig);
        }
        if start.is_some() {
            self.message = start;
            self.utf8 = Utf8Stream::default();
        }
        if h.payload_len == 0 && h.fin {
            self.check_end()?;
        }
        self.message_len = message_len;
        self.read = match (h.payload_len, h.fin) {
            (0, false) => Read::Header,
            (0, true) => Read::MessageEnd,
            _ => Read::Payload {
                remaining: h.payload_len,
                mask: h.mask,
                phase: 0,
                fin: h.fin,
            },
        };
        let event = Event::DataFrame {
            opcode: h.opcode,
            fin: h.fin,
            rsv1: h.rsv & rsv::RSV1 != 0,
            len: h.payload_len,
        };
        Ok(Decoded {
            consumed: header_len,
            event: Some(event),
        })
    }

    fn payload(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, WsError> {
        let Read::Payload {
            remaining,
            mask,
            phase,
            fin,
        } = self.read
        else {
            unreachable!("payload() runs in the Payload state");
        };
        let n = remaining.min(input.len() as u64) as usize;
        if n == 0 {
            return Ok(Decoded::NEED_MORE);
        }
        let before = out.len();
        match mask {
            Some(key) => extend_masked(out, &input[..n], key, phase as usize),
            None => out.extend_from_slice(&input[..n]),
        }
        let left = remaining - n as u64;
        let last = left == 0 && fin;
        let checked =
            self.check_utf8(&out[before..])
                .and_then(|()| if last { self.check_end() } else { Ok(()) });
        if let Err(e) = checked {
            out.truncate(before);
            return Err(e);
        }
        self.read = match (left, fin) {
            (0, false) => Read::Header,
            (0, true) => Read::MessageEnd,
            _ => Read::Payload {
                remaining: left,
                mask,
                phase: ((phase as usize + n) % 4) as u8,
                fin,
            },
        };
        Ok(Decoded {
            consumed: n,
            event: Some(Event::Data { len: n, last }),
        })
    }

    /// Uncompressed text must be UTF-8 so far.
    fn check_utf8(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        if self.validates_utf8() {
            self.utf8.feed(bytes).map_err(|_| WsError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// The message's last byte arrived: uncompressed text must not end inside a code point.
    fn check_end(&mut self) -> Result<(), WsError> {
        if self.validates_utf8() {
            self.utf8.finish().map_err(|_| WsError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn validates_utf8(&self) -> bool {
        self.message
            == Some(InProgress {
                kind: MessageKind::Text,
                compressed: false,
            })
    }
}

//! HTTP/2 frames (RFC 9113 section 4 and 6): parsed from a byte slice without copying, and
//! written straight into an output buffer.
//!
//! [`parse`] checks what a frame can be checked for on its own (lengths, stream 0 rules,
//! padding); the connection checks the rest (states, flow control, limits).

use super::error::{ErrorCode, H2Error};

/// The client connection preface (section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;
/// The smallest SETTINGS_MAX_FRAME_SIZE (and its initial value).
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame types (section 6).
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (section 6.5.2, RFC 8441).
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// A frame header (section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    /// Reads the 9 header bytes (the reserved bit of the stream id is ignored).
    pub fn read(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    /// Whether a flag is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Priority information (parsed, then ignored: RFC 9113 deprecates the scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct Priority {
    pub depends_on: u32,
    pub exclusive: bool,
    pub weight: u8,
}

/// A parsed frame borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub enum Frame<'a> {
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
        /// The whole payload length, padding included: what flow control counts.
        flow_len: u32,
    },
    Headers {
        stream: u32,
        fragment: &'a [u8],
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        code: ErrorCode,
    },
    Settings {
        ack: bool,
        /// Six bytes per setting: use [`settings`] to read them.
        payload: &'a [u8],
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        fragment: &'a [u8],
        end_headers: bool,
    },
    /// An extension frame type: ignored (section 5.5).
    Unknown {
        kind: u8,
        stream: u32,
    },
}

fn conn(code: ErrorCode) -> H2Error {
    H2Error::Connection(code)
}

/// Removes padding (section 6.1), returning the data between the pad length and the padding.
fn unpad<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], H2Error> {
    if !h.has(flag::PADDED) {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(conn(ErrorCode::FrameSizeError))?;
    if usize::from(pad) > rest.len() {
        return Err(conn(ErrorCode::ProtocolError));
    }
    Ok(&rest[..rest.len() - usize::from(pad)])
}

fn priority(b: &[u8]) -> Priority {
    let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Priority {
        depends_on: dep & MAX_WINDOW,
        exclusive: dep & !MAX_WINDOW != 0,
        weight: b[4],
    }
}

/// Parses one frame whose header is `h` and whose payload (`h.len` bytes) is `payload`.
pub fn parse<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<Frame<'a>, H2Error> {
    debug_assert_eq!(payload.len(), h.len as usize);
    let on_stream = |s: u32| {
        if s == 0 {
            Err(conn(ErrorCode::ProtocolError))
        } else {
            Ok(s)
        }
    };
    let on_conn = |s: u32| {
        if s != 0 {
            Err(conn(ErrorCode::ProtocolError))
        } else {
            Ok(())
        }
    };
    Ok(match h.kind {
        kind::DATA => Frame::Data {
            stream: on_stream(h.stream)?,
            data: unpad(h, payload)?,
            end_stream: h.has(flag::END_STREAM),
            flow_len: h.len,
        },
        kind::HEADERS => {
            let stream = on_stream(h.stream)?;
            let mut body = unpad(h, payload)?;
            let mut prio = None;
            if h.has(flag::PRIORITY) {
                if body.len() < 5 {
                    return Err(conn(ErrorCode::FrameSizeError));
                }
                prio = Some(priority(body));
                body = &body[5..];
            }
            Frame::Headers {
                stream,
                fragment: body,
                end_stream: h.has(flag::END_STREAM),
                end_headers: h.has(flag::END_HEADERS),
                priority: prio,
            }
        }
        kind::PRIORITY => {
            let stream = on_stream(h.stream)?;
            if payload.len() != 5 {
                return Err(H2Error::Stream(stream, ErrorCode::FrameSizeError));
            }
            Frame::Priority {
                stream,
                priority: priority(payload),
            }
        }
        kind::RST_STREAM => {
            let stream = on_stream(h.stream)?;
            if payload.len() != 4 {
                return Err(conn(ErrorCode::FrameSizeError));
            }
            Frame::RstStream {
                stream,
                code: ErrorCode::from_code(u32::from_be_bytes(payload.try_into().expect("4"))),
            }
        }
        kind::SETTINGS => {
            on_conn(h.stream)?;
            let ack = h.has(flag::ACK);
            if (ack && !payload.is_empty()) || payload.len() % 6 != 0 {
                return Err(conn(ErrorCode::FrameSizeError));
            }
            Frame::Settings { ack, payload }
        }
        kind::PUSH_PROMISE => Frame::PushPromise {
            stream: on_stream(h.stream)?,
        },
        kind::PING => {
            on_conn(h.stream)?;
            if payload.len() != 8 {
                return Err(conn(ErrorCode::FrameSizeError));
            }
            Frame::Ping {
                ack: h.has(flag::ACK),
                data: payload.try_into().expect("8"),
            }
        }
        kind::GOAWAY => {
            on_conn(h.stream)?;
            if payload.len() < 8 {
                return Err(conn(ErrorCode::FrameSizeError));
            }
            Frame::GoAway {
                last_stream: u32::from_be_bytes(payload[..4].try_into().expect("4")) & MAX_WINDOW,
                code: ErrorCode::from_code(u32::from_be_bytes(
                    payload[4..8].try_into().expect("4"),
                )),
                debug: &payload[8..],
            }
        }
        kind::WINDOW_UPDATE => {
            if payload.len() != 4 {
                return Err(conn(ErrorCode::FrameSizeError));
            }
            let increment = u32::from_be_bytes(payload.try_into().expect("4")) & MAX_WINDOW;
            if increment == 0 {
                return Err(if h.stream == 0 {
                    conn(ErrorCode::ProtocolError)
                } else {
                    H2Error::Stream(h.stream, ErrorCode::ProtocolError)
                });
            }
            Frame::WindowUpdate {
                stream: h.stream,
                increment,
            }
        }
        kind::CONTINUATION => Frame::Continuation {
            stream: on_stream(h.stream)?,
            fragment: payload,
            end_headers: h.has(flag::END_HEADERS),
        },
        k => Frame::Unknown {
            kind: k,
            stream: h.stream,
        },
    })
}

/// Reads the (identifier, value) pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    })
}

/// Appends a frame header.
pub fn write_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Appends a SETTINGS frame.
pub fn write_settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    write_header(out, values.len() * 6, kind::SETTINGS, 0, 0);
    for (id, v) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a PING (or its acknowledgement).
pub fn write_ping(out: &mut Vec<u8>, data: [u8; 8], ack: bool) {
    write_header(out, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    out.extend_from_slice(&data);
}

/// Appends a GOAWAY.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    write_header(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a RST_STREAM.
pub fn write_rst(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_header(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&code.code().to_be_bytes());
}

/// Appends a WINDOW_UPDATE.
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_header(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// Appends one DATA frame (the caller keeps it within the peer's frame size and windows).
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    write_header(out, data.len(), kind::DATA, flags, stream);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Frame<'_>, H2Error> {
        let h = FrameHeader::read(bytes[..9].try_into().unwrap());
        parse(&h, &bytes[9..9 + h.len as usize])
    }

    #[test]
    fn written_frames_parse_back() {
        let mut out = vec![];
        write_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
        match one(&out).unwrap() {
            Frame::Settings {
                ack: false,
                payload,
            } => {
                assert_eq!(settings(payload).collect::<Vec<_>>(), [(3, 100)])
            }
            f => panic!("{f:?}"),
        }
        for (w, want) in [
            (
                {
                    let mut o = vec![];
                    write_ping(&mut o, *b"12345678", true);
                    o
                },
                Frame::Ping {
                    ack: true,
                    data: *b"12345678",
                },
            ),
            (
                {
                    let mut o = vec![];
                    write_goaway(&mut o, 7, ErrorCode::EnhanceYourCalm, b"x");
                    o
                },
                Frame::GoAway {
                    last_stream: 7,
                    code: ErrorCode::EnhanceYourCalm,
                    debug: b"x",
                },
            ),
            (
                {
                    let mut o = vec![];
                    write_rst(&mut o, 3, ErrorCode::Cancel);
                    o
                },
                Frame::RstStream {
                    stream: 3,
                    code: ErrorCode::Cancel,
                },
            ),
            (
                {
                    let mut o = vec![];
                    write_window_update(&mut o, 0, 1000);
                    o
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 1000,
                },
            ),
            (
                {
                    let mut o = vec![];
                    write_data(&mut o, 5, b"abc", true);
                    o
                },
                Frame::Data {
                    stream: 5,
                    data: b"abc",
                    end_stream: true,
                    flow_len: 3,
                },
            ),
        ] {
            assert_eq!(one(&w).unwrap(), want);
        }
    }

    #[test]
    fn padding_priority_and_errors() {
        // DATA, padded: pad length 2, "hi", 2 bytes of padding; flow control counts all 5.
        let f = [0, 0, 5, 0, flag::PADDED, 0, 0, 0, 1, 2, b'h', b'i', 0, 0];
        assert_eq!(
            one(&f).unwrap(),
            Frame::Data {
                stream: 1,
                data: b"hi",
                end_stream: false,
                flow_len: 5
            }
        );
        // Padding longer than the payload.
        let f = [0, 0, 2, 0, flag::PADDED, 0, 0, 0, 1, 2, b'h'];
        assert_eq!(one(&f), Err(H2Error::Connection(ErrorCode::ProtocolError)));
        // HEADERS with priority and padding.
        let f = [
            0,
            0,
            8,
            1,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            0,
            0,
            0,
            3,
            1,
            0x80,
            0,
            0,
            1,
            15,
            0x82,
            0,
        ];
        assert_eq!(
            one(&f).unwrap(),
            Frame::Headers {
                stream: 3,
                fragment: &[0x82],
                end_stream: false,
                end_headers: true,
                priority: Some(Priority {
                    depends_on: 1,
                    exclusive: true,
                    weight: 15
                })
            }
        );
        // Stream 0 where a stream is needed, and the reverse.
        assert_eq!(
            one(&[0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(H2Error::Connection(ErrorCode::ProtocolError))
        );
        assert_eq!(
            one(&[0, 0, 0, 4, 0, 0, 0, 0, 1]),
            Err(H2Error::Connection(ErrorCode::ProtocolError))
        );
        // Bad lengths.
        assert_eq!(
            one(&[0, 0, 1, 4, 1, 0, 0, 0, 0, 0]),
            Err(H2Error::Connection(ErrorCode::FrameSizeError))
        );
        assert_eq!(
            one(&[0, 0, 4, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(H2Error::Stream(1, ErrorCode::FrameSizeError))
        );
        assert_eq!(
            one(&[0, 0, 7, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(H2Error::Connection(ErrorCode::FrameSizeError))
        );
        // A zero window increment: a stream error on a stream, a connection error on 0.
        assert_eq!(
            one(&[0, 0, 4, 8, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(H2Error::Stream(1, ErrorCode::ProtocolError))
        );
        assert_eq!(
            one(&[0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(H2Error::Connection(ErrorCode::ProtocolError))
        );
        // Unknown types are ignored, the reserved bit is dropped.
        assert_eq!(
            one(&[0, 0, 1, 0xfa, 0, 0x80, 0, 0, 1, 9]).unwrap(),
            Frame::Unknown {
                kind: 0xfa,
                stream: 1
            }
        );
    }
}

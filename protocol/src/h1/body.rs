//! [`BodyDecoder`]: sans-I/O decoding of request bodies framed by
//! Content-Length or the chunked transfer coding (RFC 9112 §6, §7.1).
//!
//! Invariants:
//! - the decoder never needs bytes it already consumed: its whole state is a
//!   few integers (at most 32 bytes), so input may be split anywhere, down to
//!   one byte per call, with identical results;
//! - each [`decode`](BodyDecoder::decode) step returns at most one payload
//!   range, which lies inside the consumed prefix; framing bytes are never
//!   reported as payload;
//! - once done, the decoder consumes nothing more: the bytes after the last
//!   consumed one belong to the next request;
//! - the payload never exceeds `max_body`: a chunk size that would exceed it
//!   is rejected as soon as its digits are read, before any of its data.
//!
//! Chunked grammar enforced (RFC 9112 §7.1):
//! ```text
//! chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size = 1*HEXDIG                 ; <= 16 significant digits
//! chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
//! ext-val    = token / quoted-string
//! last-chunk = 1*("0") [ chunk-ext ] CRLF
//! trailer    = *( field-name ":" OWS field-value CRLF ) CRLF
//! ```
//! A chunk-size line (excluding CRLF) is at most [`MAX_CHUNK_LINE`] bytes;
//! the trailer section (every byte after the last-chunk line, through the
//! final CRLF) at most [`MAX_TRAILER_BYTES`].

use std::ops::Range;

use super::{is_tchar, BodyError, BodyKind};

/// Maximum length of a chunk-size line, excluding its CRLF.
pub const MAX_CHUNK_LINE: u16 = 4096;
/// Maximum size of the trailer section, including its final CRLF.
pub const MAX_TRAILER_BYTES: u16 = 8192;

/// Result of one [`BodyDecoder::decode`] step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeStep {
    /// How many bytes of the input were consumed.
    pub consumed: usize,
    /// The payload bytes among them, as a range of the input (may be empty).
    pub payload: Range<usize>,
    /// The body is complete; input after `consumed` is the next request.
    pub done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Content-Length body; `n` is the remaining length.
    Length,
    /// Content-Length above the limit: every decode fails.
    TooLarge,
    /// Start of a chunk-size line.
    SizeStart,
    /// Inside the hex digits; `n` accumulates the size.
    Size,
    /// SP/HTAB after the size: only more whitespace or ';' may follow.
    SizeWs,
    /// After ';' (BWS allowed), before an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// SP/HTAB after an extension name: '=' or ';' must follow.
    ExtNameWs,
    /// After '=' (BWS allowed), before the value.
    ExtValStart,
    /// Inside a token value.
    ExtValToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedEsc,
    /// After the closing quote of a value.
    ExtValEnd,
    /// SP/HTAB after a value: ';' must follow.
    ExtValWs,
    /// CR of the chunk-size line seen; LF expected.
    LineLf,
    /// Inside chunk data; `n` is the remaining chunk length.
    Data,
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// Start of a trailer line (or of the final CRLF).
    TrailerLineStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// CR of a trailer line seen; LF expected.
    TrailerLf,
    /// CR of the final empty line seen; LF expected.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

/// Incremental decoder for one request body.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    /// Remaining Content-Length, chunk-size accumulator, or remaining chunk
    /// data, depending on `phase`.
    n: u64,
    /// Payload bytes delivered so far.
    received: u64,
    max_body: u64,
    /// Bytes of the current chunk-size line, or of the trailer section.
    line: u16,
    /// Significant hex digits of the chunk size read so far.
    digits: u8,
    phase: Phase,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`, with at most `max_body`
    /// payload bytes. [`BodyKind::None`] and `Length(0)` are immediately
    /// done; a `Length` above `max_body` fails on the first decode.
    pub fn new(kind: BodyKind, max_body: u64) -> BodyDecoder {
        let (phase, n) = match kind {
            BodyKind::None | BodyKind::Length(0) => (Phase::Done, 0),
            BodyKind::Length(n) if n > max_body => (Phase::TooLarge, n),
            BodyKind::Length(n) => (Phase::Length, n),
            BodyKind::Chunked => (Phase::SizeStart, 0),
        };
        BodyDecoder {
            n,
            received: 0,
            max_body,
            line: 0,
            digits: 0,
            phase,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Payload bytes decoded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Processes a prefix of `input`.
    ///
    /// Returns how many bytes were consumed, which sub-range of `input`
    /// (within the consumed part) is payload (may be empty), and whether the
    /// body is complete (then the bytes after `consumed` belong to the next
    /// request). A step stops right after a payload range, so call again
    /// with the unconsumed rest. With non-empty input and a body not yet
    /// done, at least one byte is consumed. After an error the decoder must
    /// not be used again.
    pub fn decode(&mut self, input: &[u8]) -> Result<DecodeStep, BodyError> {
        match self.phase {
            Phase::Done => return Ok(step(0, 0..0, true)),
            Phase::TooLarge => return Err(BodyError::BodyTooLarge),
            Phase::Length => {
                let take = self.n.min(input.len() as u64) as usize;
                self.n -= take as u64;
                self.received += take as u64;
                let done = self.n == 0;
                if done {
                    self.phase = Phase::Done;
                }
                return Ok(step(take, 0..take, done));
            }
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if self.phase == Phase::Data {
                let take = self.n.min((input.len() - i) as u64) as usize;
                self.n -= take as u64;
                self.received += take as u64;
                if self.n == 0 {
                    self.phase = Phase::DataCr;
                }
                return Ok(step(i + take, i..i + take, false));
            }
            let b = input[i];
            i += 1;
            self.byte(b)?;
            if self.phase == Phase::Done {
                return Ok(step(i, i..i, true));
            }
        }
        Ok(step(i, i..i, false))
    }

    /// Advances the chunked framing state machine by one byte.
    fn byte(&mut self, b: u8) -> Result<(), BodyError> {
        use Phase::*;
        match self.phase {
            SizeStart | Size | SizeWs | ExtNameStart | ExtName | ExtNameWs | ExtValStart
            | ExtValToken | ExtQuoted | ExtQuotedEsc | ExtValEnd | ExtValWs
                if b != b'\r' && b != b'\n' =>
            {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(if matches!(self.phase, SizeStart | Size) {
                        BodyError::InvalidChunkSize
                    } else {
                        BodyError::InvalidChunkExtension
                    });
                }
            }
            TrailerLineStart | TrailerName | TrailerValue | TrailerLf | TrailerEndLf => {
                self.line += 1;
                if self.line > MAX_TRAILER_BYTES {
                    return Err(BodyError::TrailersTooLarge);
                }
            }
            _ => {}
        }
        if b == b'\n' && !matches!(self.phase, LineLf | DataLf | TrailerLf | TrailerEndLf) {
            return Err(match self.phase {
                DataCr => BodyError::MissingChunkCrlf,
                _ => BodyError::BareLf,
            });
        }
        self.phase = match (self.phase, b) {
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                self.size_digit(b)?;
                Size
            }
            (SizeStart, _) => return Err(BodyError::InvalidChunkSize),
            (Size, b'\r') => LineLf,
            (Size | SizeWs, b' ' | b'\t') => SizeWs,
            (Size | SizeWs, b';') => ExtNameStart,
            (Size | SizeWs, _) => return Err(BodyError::InvalidChunkSize),

            (ExtNameStart, b' ' | b'\t') => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b'\r') => LineLf,
            (ExtName | ExtNameWs, b' ' | b'\t') => ExtNameWs,
            (ExtName | ExtNameWs, b'=') => ExtValStart,
            (ExtName | ExtNameWs, b';') => ExtNameStart,
            (ExtValStart, b' ' | b'\t') => ExtValStart,
            (ExtValStart, b'"') => ExtQuoted,
            (ExtValStart | ExtValToken, _) if is_tchar(b) => ExtValToken,
            (ExtQuoted, b'"') => ExtValEnd,
            (ExtQuoted, b'\\') => ExtQuotedEsc,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEsc, _) if is_qdtext(b) || b == b'"' || b == b'\\' => ExtQuoted,
            (ExtValToken | ExtValEnd, b'\r') => LineLf,
            (ExtValToken | ExtValEnd | ExtValWs, b' ' | b'\t') => ExtValWs,
            (ExtValToken | ExtValEnd | ExtValWs, b';') => ExtNameStart,
            (
                ExtNameStart | ExtName | ExtNameWs | ExtValStart | ExtValToken | ExtQuoted
                | ExtQuotedEsc | ExtValEnd | ExtValWs,
                _,
            ) => return Err(BodyError::InvalidChunkExtension),

            (LineLf, b'\n') => {
                self.line = 0;
                self.digits = 0;
                if self.n == 0 {
                    TrailerLineStart
                } else {
                    Data
                }
            }
            (LineLf, _) => return Err(BodyError::InvalidChunkSize),

            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.n = 0;
                SizeStart
            }
            (DataCr | DataLf, _) => return Err(BodyError::MissingChunkCrlf),

            (TrailerLineStart, b'\r') => TrailerEndLf,
            (TrailerLineStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || b == b' ' || is_field_vchar(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerLineStart,
            (TrailerEndLf, b'\n') => Done,
            (TrailerLineStart | TrailerName | TrailerValue | TrailerLf | TrailerEndLf, _) => {
                return Err(BodyError::InvalidTrailer)
            }

            (Length | TooLarge | Data | Done, _) => unreachable!("not a framing phase"),
        };
        Ok(())
    }

    /// Accumulates one hex digit of a chunk size.
    #[inline]
    fn size_digit(&mut self, b: u8) -> Result<(), BodyError> {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        if self.digits > 0 || d != 0 {
            if self.digits == 16 {
                return Err(BodyError::ChunkSizeOverflow);
            }
            self.digits += 1;
        }
        // At most 16 significant digits: the shift cannot overflow.
        self.n = (self.n << 4) | u64::from(d);
        if self.n > self.max_body - self.received {
            return Err(BodyError::BodyTooLarge);
        }
        Ok(())
    }
}

#[inline]
fn step(consumed: usize, payload: Range<usize>, done: bool) -> DecodeStep {
    DecodeStep {
        consumed,
        payload,
        done,
    }
}

/// `qdtext` (RFC 9110 §5.6.4) without the quote and backslash.
#[inline]
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5B).contains(&b)
        || (0x5D..=0x7E).contains(&b)
        || b >= 0x80
}

/// `VCHAR / obs-text`.
#[inline]
fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outcome of feeding a whole body: payload, bytes consumed, done.
    type Outcome = Result<(Vec<u8>, usize, bool), BodyError>;

    /// Feeds `pieces` in order, keeping unconsumed bytes like a server would.
    fn feed(kind: BodyKind, max: u64, pieces: &[&[u8]]) -> Outcome {
        let mut dec = BodyDecoder::new(kind, max);
        let mut pending: Vec<u8> = Vec::new();
        let mut payload = Vec::new();
        let mut total = 0;
        for piece in pieces {
            pending.extend_from_slice(piece);
            loop {
                if dec.is_done() {
                    break;
                }
                let step = dec.decode(&pending)?;
                assert!(step.payload.start <= step.payload.end);
                assert!(step.payload.end <= step.consumed);
                assert!(step.consumed <= pending.len());
                assert!(step.consumed > 0 || pending.is_empty() || step.done);
                payload.extend_from_slice(&pending[step.payload.clone()]);
                pending.drain(..step.consumed);
                total += step.consumed;
                assert_eq!(dec.received(), payload.len() as u64);
                assert_eq!(step.done, dec.is_done());
                if step.done || step.consumed == 0 {
                    break;
                }
            }
        }
        Ok((payload, total, dec.is_done()))
    }

    /// Whole, byte by byte, and split at every position must all agree.
    fn consistent(kind: BodyKind, max: u64, input: &[u8]) -> Outcome {
        let whole = feed(kind, max, &[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(kind, max, &bytes), whole, "byte by byte: {input:?}");
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(feed(kind, max, &[a, b]), whole, "split at {k}: {input:?}");
        }
        whole
    }

    fn chunked(input: &[u8]) -> Outcome {
        consistent(BodyKind::Chunked, u64::MAX, input)
    }

    fn chunked_err(input: &[u8]) -> BodyError {
        chunked(input).unwrap_err()
    }

    fn done(payload: &[u8], consumed: usize) -> Outcome {
        Ok((payload.to_vec(), consumed, true))
    }

    #[test]
    fn decoder_is_small() {
        assert!(std::mem::size_of::<BodyDecoder>() <= 32);
    }

    #[test]
    fn none_and_zero_length() {
        for kind in [BodyKind::None, BodyKind::Length(0)] {
            let mut d = BodyDecoder::new(kind, 10);
            assert!(d.is_done());
            assert_eq!(
                d.decode(b"GET / HTTP/1.1\r\n"),
                Ok(DecodeStep {
                    consumed: 0,
                    payload: 0..0,
                    done: true
                })
            );
            assert_eq!(d.received(), 0);
        }
    }

    #[test]
    fn content_length() {
        let input = b"hello worldGET /next";
        assert_eq!(
            consistent(BodyKind::Length(11), 100, input),
            done(b"hello world", 11)
        );
        let mut d = BodyDecoder::new(BodyKind::Length(5), 5);
        assert_eq!(
            d.decode(b"he"),
            Ok(DecodeStep {
                consumed: 2,
                payload: 0..2,
                done: false
            })
        );
        assert_eq!(d.decode(b""), Ok(step(0, 0..0, false)));
        assert_eq!(
            d.decode(b"lloXYZ"),
            Ok(DecodeStep {
                consumed: 3,
                payload: 0..3,
                done: true
            })
        );
        assert!(d.is_done());
        assert_eq!(d.received(), 5);
        assert_eq!(d.decode(b"XYZ"), Ok(step(0, 0..0, true)));
        // Incomplete body.
        assert_eq!(
            feed(BodyKind::Length(10), 100, &[b"abc"]),
            Ok((b"abc".to_vec(), 3, false))
        );
    }

    #[test]
    fn content_length_limit_boundary() {
        assert_eq!(feed(BodyKind::Length(4), 4, &[b"abcd"]), done(b"abcd", 4));
        let mut d = BodyDecoder::new(BodyKind::Length(5), 4);
        assert!(!d.is_done());
        assert_eq!(d.decode(b"abcde"), Err(BodyError::BodyTooLarge));
        assert_eq!(d.decode(b""), Err(BodyError::BodyTooLarge));
    }

    #[test]
    fn simple_chunked() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(chunked(input), done(b"hello world", input.len()));
    }

    #[test]
    fn chunked_pipelined() {
        let body = b"3\r\nabc\r\n0\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(chunked(&input), done(b"abc", body.len()));
        // Stops exactly at the end; the next call consumes nothing.
        let mut d = BodyDecoder::new(BodyKind::Chunked, 100);
        let mut off = 0;
        while !d.is_done() {
            off += d.decode(&input[off..]).unwrap().consumed;
        }
        assert_eq!(&input[off..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(d.decode(&input[off..]).unwrap(), step(0, 0..0, true));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunked(b"0\r\n\r\n"), done(b"", 5));
        assert_eq!(chunked(b"000\r\n\r\n"), done(b"", 7));
        assert_eq!(
            chunked(b"A\r\n0123456789\r\n0\r\n\r\n"),
            done(b"0123456789", 20)
        );
        assert_eq!(
            chunked(b"a\r\n0123456789\r\n0\r\n\r\n"),
            done(b"0123456789", 20)
        );
        assert_eq!(chunked(b"0001\r\nx\r\n0\r\n\r\n"), done(b"x", 14));
        let big = b"10\r\n0123456789abcdef\r\n0\r\n\r\n";
        assert_eq!(chunked(big), done(b"0123456789abcdef", big.len()));
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x1\r\n",
            b" 1\r\n",
            b"1 \r\n",
            b"1\t\r\n",
            b"1g\r\n",
            b"1\rx",
            b"0\r\r\n",
        ] {
            assert_eq!(chunked_err(bad), BodyError::InvalidChunkSize, "{bad:?}");
        }
    }

    #[test]
    fn chunk_size_overflow() {
        // 16 significant digits fit (leading zeros do not count).
        let mut d = BodyDecoder::new(BodyKind::Chunked, u64::MAX);
        let step = d.decode(b"0000ffffffffffffffff\r\nab").unwrap();
        assert_eq!(step.payload, 22..24);
        assert_eq!(
            chunked_err(b"10000000000000000\r\n"),
            BodyError::ChunkSizeOverflow
        );
        assert_eq!(
            chunked_err(b"fffffffffffffffff\r\n"),
            BodyError::ChunkSizeOverflow
        );
        let zeros = b"0000000000000000000000001\r\nx\r\n0\r\n\r\n";
        assert_eq!(chunked(zeros), done(b"x", zeros.len()));
    }

    #[test]
    fn chunk_extensions() {
        for ext in [
            &b";a"[..],
            b";a=b",
            b" ;a=b",
            b"\t; a = b",
            b";a=\"quoted; \\\" value\"",
            b";a=\"\"",
            b";a;b=c;d=\"e\"",
            b";a ;b",
            b";a=b ;c",
            b";a=\"x\" ;c",
            b"  ;  a  =  \"x\\\\\"",
        ] {
            let mut input = b"3".to_vec();
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\nabc\r\n0");
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\n\r\n");
            assert_eq!(chunked(&input), done(b"abc", input.len()), "{ext:?}");
        }
        for ext in [
            &b";"[..],
            b";=b",
            b";a=",
            b";a =",
            b";a b",
            b";a=b c",
            b";a=\"unterminated",
            b";a=\"x\"y",
            b";a=b ",
            b";a ",
            b";a=\"\x01\"",
            b";a=\x01",
            b";a=b=c",
            b";a,b",
            b"; ",
        ] {
            let mut input = b"3".to_vec();
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
            assert_eq!(
                chunked_err(&input),
                BodyError::InvalidChunkExtension,
                "{ext:?}"
            );
        }
    }

    #[test]
    fn chunk_line_limit_boundary() {
        // A chunk line of exactly MAX_CHUNK_LINE bytes (excluding CRLF) is fine.
        let mut line = b"1;a=".to_vec();
        line.resize(usize::from(MAX_CHUNK_LINE), b'x');
        let mut input = line.clone();
        input.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(
            feed(BodyKind::Chunked, 100, &[&input]),
            done(b"z", input.len())
        );
        let mut input = line.clone();
        input.push(b'x');
        input.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(
            feed(BodyKind::Chunked, 100, &[&input]),
            Err(BodyError::InvalidChunkExtension)
        );
        // Byte by byte gives the same.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            feed(BodyKind::Chunked, 100, &bytes),
            Err(BodyError::InvalidChunkExtension)
        );
        // Endless leading zeros are bounded too.
        let zeros = vec![b'0'; usize::from(MAX_CHUNK_LINE) + 1];
        assert_eq!(
            feed(BodyKind::Chunked, 100, &[&zeros]),
            Err(BodyError::InvalidChunkSize)
        );
        let zeros = vec![b'0'; usize::from(MAX_CHUNK_LINE)];
        assert_eq!(
            feed(BodyKind::Chunked, 100, &[&zeros]),
            Ok((Vec::new(), zeros.len(), false))
        );
    }

    #[test]
    fn missing_chunk_crlf() {
        for bad in [
            &b"3\r\nabcX"[..],
            b"3\r\nabc\rX",
            b"3\r\nabc\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\r\r\n",
        ] {
            assert_eq!(chunked_err(bad), BodyError::MissingChunkCrlf, "{bad:?}");
        }
    }

    #[test]
    fn bare_lf() {
        for bad in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"\n",
            b"3;a\nabc",
            b"3;a=\"x\n",
            b"3 \n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX\n",
        ] {
            assert_eq!(chunked_err(bad), BodyError::BareLf, "{bad:?}");
        }
    }

    #[test]
    fn trailers() {
        let input = b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nExpires: never ever\r\nEmpty:\r\n\r\n";
        assert_eq!(chunked(input), done(b"abc", input.len()));
        let input = b"0\r\nA:b\r\n\r\nNEXT";
        assert_eq!(chunked(input), done(b"", input.len() - 4));
        for bad in [
            &b"0\r\n X: y\r\n\r\n"[..],
            b"0\r\nX: y\r\n\tcontinued\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nX : v\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\x7f\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\n\rX",
            b"0\r\nX(: v\r\n\r\n",
        ] {
            assert_eq!(chunked_err(bad), BodyError::InvalidTrailer, "{bad:?}");
        }
    }

    fn with_trailer_section(len: usize) -> Vec<u8> {
        // "0\r\n" + "X: vvv...\r\n" + "\r\n" with a trailer section of `len` bytes.
        let mut v = b"0\r\nX: ".to_vec();
        v.resize(3 + len - 4, b'v');
        v.extend_from_slice(b"\r\n\r\n");
        assert_eq!(v.len() - 3, len);
        v
    }

    #[test]
    fn trailer_limit_boundary() {
        let at = with_trailer_section(usize::from(MAX_TRAILER_BYTES));
        assert_eq!(feed(BodyKind::Chunked, 10, &[&at]), done(b"", at.len()));
        let over = with_trailer_section(usize::from(MAX_TRAILER_BYTES) + 1);
        assert_eq!(
            feed(BodyKind::Chunked, 10, &[&over]),
            Err(BodyError::TrailersTooLarge)
        );
        let bytes: Vec<&[u8]> = over.chunks(1).collect();
        assert_eq!(
            feed(BodyKind::Chunked, 10, &bytes),
            Err(BodyError::TrailersTooLarge)
        );
    }

    #[test]
    fn chunked_body_limit_boundary() {
        let input = b"4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
        assert_eq!(
            consistent(BodyKind::Chunked, 10, input),
            done(b"abcdefghij", input.len())
        );
        assert_eq!(
            consistent(BodyKind::Chunked, 9, input),
            Err(BodyError::BodyTooLarge)
        );
        // Detected from the size alone, before any data arrives.
        let mut d = BodyDecoder::new(BodyKind::Chunked, 1 << 20);
        assert_eq!(d.decode(b"100001"), Err(BodyError::BodyTooLarge));
        let mut d = BodyDecoder::new(BodyKind::Chunked, 1 << 20);
        assert!(d.decode(b"100000\r\n").is_ok());
        // Second chunk pushes over the limit before its data.
        let mut d = BodyDecoder::new(BodyKind::Chunked, 5);
        assert_eq!(d.decode(b"3\r\nabc").unwrap().payload, 3..6);
        assert_eq!(d.decode(b"\r\n3"), Err(BodyError::BodyTooLarge));
        assert_eq!(BodyError::BodyTooLarge.status(), 413);
    }

    #[test]
    fn one_payload_range_per_step() {
        let input = b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
        let mut d = BodyDecoder::new(BodyKind::Chunked, 100);
        let s1 = d.decode(input).unwrap();
        assert_eq!(s1, step(5, 3..5, false));
        let rest = &input[s1.consumed..];
        let s2 = d.decode(rest).unwrap();
        assert_eq!(&rest[s2.payload.clone()], b"cd");
        assert!(!s2.done);
        let rest = &rest[s2.consumed..];
        let s3 = d.decode(rest).unwrap();
        assert_eq!(s3, step(rest.len(), rest.len()..rest.len(), true));
        assert_eq!(d.received(), 4);
    }

    #[test]
    fn incomplete_chunked() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        for k in 0..input.len() {
            let (payload, consumed, is_done) =
                feed(BodyKind::Chunked, 100, &[&input[..k]]).unwrap();
            assert!(!is_done, "{k}");
            assert_eq!(consumed, k);
            assert!(b"hello".starts_with(&payload));
        }
    }

    #[test]
    fn errors_cover_all_body_variants() {
        let produced = [
            chunked_err(b"x\r\n"),
            chunked_err(b"10000000000000000\r\n"),
            chunked_err(b"1;\r\n"),
            chunked_err(b"1\r\naX"),
            chunked_err(b"1\nx"),
            feed(
                BodyKind::Chunked,
                10,
                &[&with_trailer_section(usize::from(MAX_TRAILER_BYTES) + 1)],
            )
            .unwrap_err(),
            chunked_err(b"0\r\nbad\r\n\r\n"),
            consistent(BodyKind::Chunked, 1, b"2\r\n").unwrap_err(),
        ];
        for e in BodyError::ALL {
            assert!(produced.contains(e), "{e:?} never produced");
        }
    }
}

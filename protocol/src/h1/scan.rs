//! [`HeadScanner`]: incremental search for the end of a request head.
//!
//! The scanner is fed the whole buffered input of the current request each
//! time more bytes arrive; it remembers how far it got and only examines the
//! new bytes, so a head trickling in byte by byte costs O(total bytes).
//!
//! Invariants checked while scanning (RFC 9112 §2.2):
//! - every LF is preceded by CR ([`RequestError::BareLf`]) and every CR is
//!   followed by LF ([`RequestError::BareCr`]); a CR as the very last byte is
//!   simply incomplete;
//! - at most [`MAX_LEADING_EMPTY_LINES`] empty lines (CRLF) before the
//!   request line, counted in the head ([`RequestError::Syntax`] beyond);
//! - the request line (first non-empty line, excluding its CRLF) is at most
//!   `Limits::max_request_line` bytes, also while it is still incomplete;
//! - the head, from byte 0 through the final CRLFCRLF, is at most
//!   `Limits::max_header_bytes` bytes, also while it is still incomplete.
//!
//! The scanner never looks past `max_header_bytes`, so an oversized buffer
//! costs no more than a maximal head. Its state is 12 bytes; offsets are
//! `u32`, so limits above `u32::MAX` are clamped to it.

use super::{Limits, RequestError};

/// The number of empty lines tolerated before the request line.
pub const MAX_LEADING_EMPTY_LINES: u8 = 8;

/// Outcome of [`HeadScanner::scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head has not ended yet: read more input and call again.
    Incomplete,
    /// The head ends after `head_len` bytes (through its final CRLFCRLF);
    /// everything after belongs to the body or the next request.
    Complete {
        /// Length of the head in bytes, including leading empty lines.
        head_len: usize,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Before or inside the request line (leading empty lines allowed).
    #[default]
    RequestLine,
    /// Inside the field section.
    Fields,
    /// The head is complete; `pos` is its length.
    Done,
}

/// Incremental search for the end of a request head; repeated calls on a
/// growing buffer cost O(new bytes).
#[derive(Default, Debug, Clone)]
pub struct HeadScanner {
    /// Bytes of the buffer already examined.
    pos: u32,
    /// Offset of the first byte of the current line.
    line_start: u32,
    phase: Phase,
    /// Empty lines seen before the request line.
    empty_lines: u8,
    /// The byte at `pos - 1` is a CR whose LF has not been seen yet.
    cr_pending: bool,
}

impl HeadScanner {
    /// A scanner at the start of a request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all progress, for the next request on the connection.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Scans the bytes of `buf` not seen by previous calls.
    ///
    /// `buf` is the whole buffered input of the current request (it only
    /// grows between calls, same prefix). After [`Scan::Complete`] further
    /// calls return the same result until [`reset`](Self::reset). After an
    /// error the scanner must be reset before reuse. If `buf` is shorter than
    /// what was already scanned (a caller bug) the scan restarts from 0.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Scan, RequestError> {
        if self.phase == Phase::Done {
            return Ok(Scan::Complete {
                head_len: self.pos as usize,
            });
        }
        if buf.len() < self.pos as usize {
            self.reset();
        }
        let max_head = limits.max_header_bytes.min(u32::MAX as usize);
        let mut i = self.pos as usize;
        // `max(i)`: never slice backwards, even if the limits shrank.
        let end = buf.len().min(max_head).max(i);
        loop {
            if self.cr_pending {
                if i >= end {
                    break;
                }
                if buf[i] != b'\n' {
                    return Err(RequestError::BareCr);
                }
                self.cr_pending = false;
                i += 1;
                if self.line_end(i)? {
                    self.phase = Phase::Done;
                    self.pos = i as u32;
                    return Ok(Scan::Complete { head_len: i });
                }
                continue;
            }
            match find_cr_or_lf(&buf[i..end]) {
                None => {
                    i = end;
                    break;
                }
                Some(off) => {
                    let j = i + off;
                    self.check_request_line(j, limits)?;
                    if buf[j] == b'\n' {
                        return Err(RequestError::BareLf);
                    }
                    self.cr_pending = true;
                    i = j + 1;
                }
            }
        }
        self.pos = i as u32;
        self.check_request_line(i - usize::from(self.cr_pending), limits)?;
        if buf.len() > max_head {
            return Err(RequestError::HeadersTooLarge);
        }
        Ok(Scan::Incomplete)
    }

    /// Checks the length of the request line if it is the current line and
    /// its content extends at least to `content_end` (exclusive).
    #[inline]
    fn check_request_line(&self, content_end: usize, limits: &Limits) -> Result<(), RequestError> {
        if self.phase == Phase::RequestLine
            && content_end - self.line_start as usize > limits.max_request_line
        {
            return Err(RequestError::RequestLineTooLong);
        }
        Ok(())
    }

    /// Handles a CRLF ending just before `next` (the start of the next line).
    /// Returns whether the head is complete.
    #[inline]
    fn line_end(&mut self, next: usize) -> Result<bool, RequestError> {
        let empty = next - 2 == self.line_start as usize;
        match self.phase {
            Phase::RequestLine if empty => {
                self.empty_lines += 1;
                if self.empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Err(RequestError::Syntax);
                }
            }
            Phase::RequestLine => self.phase = Phase::Fields,
            Phase::Fields if empty => return Ok(true),
            Phase::Fields | Phase::Done => {}
        }
        self.line_start = next as u32;
        Ok(false)
    }
}

/// Index of the first CR or LF in `hay`, eight bytes at a time (SWAR).
#[inline]
pub(crate) fn find_cr_or_lf(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const CR: u64 = LO * b'\r' as u64;
    const LF: u64 = LO * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let a = v ^ CR;
        let b = v ^ LF;
        // The lowest flagged byte of each term is exactly the first zero byte
        // (borrows only propagate upwards), so the lowest bit set is exact;
        // bits above it may be spurious and are never used.
        let m = (a.wrapping_sub(LO) & !a & HI) | (b.wrapping_sub(LO) & !b & HI);
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|p| base + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8], limits: &Limits) -> Result<Scan, RequestError> {
        HeadScanner::new().scan(buf, limits)
    }

    /// Feeds growing prefixes of `buf` at the given cut points; returns the
    /// first error or the final result.
    fn fed(buf: &[u8], cuts: &[usize], limits: &Limits) -> Result<Scan, RequestError> {
        let mut s = HeadScanner::new();
        for &c in cuts {
            match s.scan(&buf[..c], limits)? {
                Scan::Complete { head_len } => return Ok(Scan::Complete { head_len }),
                Scan::Incomplete => {}
            }
        }
        s.scan(buf, limits)
    }

    /// Byte-by-byte and every single split must agree with the whole scan.
    fn consistent(buf: &[u8], limits: &Limits) -> Result<Scan, RequestError> {
        let want = whole(buf, limits);
        let all: Vec<usize> = (0..=buf.len()).collect();
        assert_eq!(fed(buf, &all, limits), want, "byte by byte: {buf:?}");
        for k in 0..=buf.len() {
            assert_eq!(fed(buf, &[k], limits), want, "split at {k}: {buf:?}");
        }
        want
    }

    fn complete(n: usize) -> Result<Scan, RequestError> {
        Ok(Scan::Complete { head_len: n })
    }

    const REQ: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

    #[test]
    fn simple_complete() {
        let l = Limits::default();
        assert_eq!(consistent(REQ, &l), complete(REQ.len()));
        let mut with_body = REQ.to_vec();
        with_body.extend_from_slice(b"hello\r\n\n\r");
        assert_eq!(consistent(&with_body, &l), complete(REQ.len()));
    }

    #[test]
    fn incomplete_prefixes() {
        let l = Limits::default();
        for k in 0..REQ.len() {
            assert_eq!(whole(&REQ[..k], &l), Ok(Scan::Incomplete), "{k}");
        }
    }

    #[test]
    fn no_headers() {
        let l = Limits::default();
        assert_eq!(consistent(b"GET / HTTP/1.0\r\n\r\n", &l), complete(18));
    }

    #[test]
    fn pipelined() {
        let l = Limits::default();
        let mut buf = REQ.to_vec();
        buf.extend_from_slice(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3");
        let mut s = HeadScanner::new();
        assert_eq!(s.scan(&buf, &l), complete(REQ.len()));
        // Stays complete.
        assert_eq!(s.scan(&buf, &l), complete(REQ.len()));
        s.reset();
        let rest = &buf[REQ.len()..];
        assert_eq!(s.scan(rest, &l), complete(28));
        s.reset();
        assert_eq!(s.scan(&rest[28..], &l), Ok(Scan::Incomplete));
    }

    #[test]
    fn bare_lf() {
        let l = Limits::default();
        for buf in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
        ] {
            assert_eq!(consistent(buf, &l), Err(RequestError::BareLf), "{buf:?}");
        }
    }

    #[test]
    fn bare_cr() {
        let l = Limits::default();
        for buf in [
            &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
        ] {
            assert_eq!(consistent(buf, &l), Err(RequestError::BareCr), "{buf:?}");
        }
        // A CR at the very end is just incomplete.
        assert_eq!(
            whole(b"GET / HTTP/1.1\r\nHost: a\r", &l),
            Ok(Scan::Incomplete)
        );
        assert_eq!(whole(b"GET / HTTP/1.1\r", &l), Ok(Scan::Incomplete));
        assert_eq!(whole(b"\r", &l), Ok(Scan::Incomplete));
    }

    #[test]
    fn leading_empty_lines() {
        let l = Limits::default();
        let mut buf = Vec::new();
        for n in 0..=usize::from(MAX_LEADING_EMPTY_LINES) {
            buf.clear();
            for _ in 0..n {
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(REQ);
            assert_eq!(consistent(&buf, &l), complete(REQ.len() + 2 * n), "{n}");
        }
        buf.clear();
        for _ in 0..=MAX_LEADING_EMPTY_LINES {
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(REQ);
        assert_eq!(consistent(&buf, &l), Err(RequestError::Syntax));
        // Only empty lines so far: incomplete.
        assert_eq!(whole(b"\r\n\r\n\r\n", &l), Ok(Scan::Incomplete));
    }

    fn request_with_line(line_len: usize) -> Vec<u8> {
        // "GET /aaa... HTTP/1.1" of exactly line_len bytes.
        let mut v = b"GET /".to_vec();
        v.resize(line_len - " HTTP/1.1".len(), b'a');
        v.extend_from_slice(b" HTTP/1.1");
        assert_eq!(v.len(), line_len);
        v.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        v
    }

    #[test]
    fn request_line_limit_boundary() {
        let l = Limits {
            max_request_line: 64,
            ..Limits::default()
        };
        let at = request_with_line(64);
        assert_eq!(consistent(&at, &l), complete(at.len()));
        let over = request_with_line(65);
        assert_eq!(consistent(&over, &l), Err(RequestError::RequestLineTooLong));
        // With leading empty lines the limit applies to the request line only.
        let mut lead = b"\r\n\r\n".to_vec();
        lead.extend_from_slice(&at);
        assert_eq!(consistent(&lead, &l), complete(lead.len()));
        // Detected while incomplete: 64 bytes without CRLF are fine, 65 are not.
        assert_eq!(whole(&over[..64], &l), Ok(Scan::Incomplete));
        assert_eq!(
            whole(&over[..65], &l),
            Err(RequestError::RequestLineTooLong)
        );
        // A pending CR does not count towards the line.
        assert_eq!(whole(&at[..65], &l), Ok(Scan::Incomplete));
        // Header lines may be longer than the request line limit.
        let mut long_field = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_field.resize(long_field.len() + 200, b'x');
        long_field.extend_from_slice(b"\r\n\r\n");
        assert_eq!(consistent(&long_field, &l), complete(long_field.len()));
    }

    #[test]
    fn request_line_too_long_beats_bare_lf() {
        let l = Limits {
            max_request_line: 10,
            ..Limits::default()
        };
        let buf = b"GET /aaaaaaaaaa HTTP/1.1\n\r\n";
        assert_eq!(consistent(buf, &l), Err(RequestError::RequestLineTooLong));
    }

    #[test]
    fn head_limit_boundary() {
        let at = REQ.len();
        let l = Limits {
            max_header_bytes: at,
            ..Limits::default()
        };
        assert_eq!(consistent(REQ, &l), complete(at));
        // Bytes after the head do not count.
        let mut more = REQ.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(consistent(&more, &l), complete(at));
        let l = Limits {
            max_header_bytes: at - 1,
            ..Limits::default()
        };
        assert_eq!(consistent(REQ, &l), Err(RequestError::HeadersTooLarge));
        // Detected while incomplete: an unterminated head of max+1 bytes.
        let l = Limits {
            max_header_bytes: 20,
            ..Limits::default()
        };
        let buf = b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaa";
        assert_eq!(whole(&buf[..20], &l), Ok(Scan::Incomplete));
        assert_eq!(whole(&buf[..21], &l), Err(RequestError::HeadersTooLarge));
        assert_eq!(consistent(buf, &l), Err(RequestError::HeadersTooLarge));
    }

    #[test]
    fn shrunk_buffer_restarts() {
        let l = Limits::default();
        let mut s = HeadScanner::new();
        assert_eq!(s.scan(&REQ[..30], &l), Ok(Scan::Incomplete));
        assert_eq!(s.scan(&REQ[..10], &l), Ok(Scan::Incomplete));
        assert_eq!(s.scan(REQ, &l), complete(REQ.len()));
    }

    #[test]
    fn shrinking_limits_do_not_panic() {
        let mut s = HeadScanner::new();
        assert_eq!(s.scan(&REQ[..40], &Limits::default()), Ok(Scan::Incomplete));
        let tight = Limits {
            max_header_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(s.scan(REQ, &tight), Err(RequestError::HeadersTooLarge));
    }

    #[test]
    fn scanner_is_small() {
        assert!(std::mem::size_of::<HeadScanner>() <= 16);
    }

    #[test]
    fn find_cr_or_lf_matches_naive() {
        let mut buf = [b'a'; 40];
        assert_eq!(find_cr_or_lf(&buf), None);
        assert_eq!(find_cr_or_lf(&[]), None);
        for pos in 0..40 {
            for &c in b"\r\n" {
                buf = [b'a'; 40];
                buf[pos] = c;
                for start in 0..=pos {
                    assert_eq!(find_cr_or_lf(&buf[start..]), Some(pos - start));
                }
                // Bytes near CR/LF in value must not match.
                buf[pos] = c ^ 0x80;
                assert_eq!(find_cr_or_lf(&buf), None);
                buf[pos] = c + 1;
                assert_eq!(find_cr_or_lf(&buf), None);
                buf[pos] = c - 1;
                assert_eq!(find_cr_or_lf(&buf), None);
            }
        }
        // First of several, including 0x00 and 0xFF neighbours.
        let hay = b"\x00\xff\x0b\x0c\x0e\x09abc\x0a\x0d";
        assert_eq!(find_cr_or_lf(hay), Some(9));
    }
}

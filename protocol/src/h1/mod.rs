//! HTTP/1.1 message syntax and framing (RFC 9112), request side.
//!
//! Submodules:
//! - [`scan`]: [`HeadScanner`], incremental search for the end of a request
//!   head with line-ending and size-limit checks.
//! - [`request`]: [`parse_request`], which turns a complete head into a
//!   [`RequestHead`] and interprets the framing-relevant header fields.
//! - [`response`]: [`parse_response`], a backend's response head and its framing.
//! - [`body`]: [`BodyDecoder`], for `Content-Length` and `chunked` bodies.
//! - [`error`]: [`RequestError`] and [`BodyError`], each mapping to a status.
//! - [`status`]: reason phrases and status classes.
//!
//! Invariants shared by the whole module: no allocation, no I/O, and every
//! parsed view borrows from the caller's buffer. [`Limits`] bounds every
//! quantity an attacker controls.

pub mod body;
pub mod encode;
pub mod error;
pub mod request;
pub mod response;
pub mod scan;
pub mod status;

pub use body::{BodyDecoder, DecodeStep};
pub use error::{BodyError, RequestError};
pub use request::{parse_request, BodyKind, RequestHead};
pub use response::{parse_response, ResponseBody, ResponseError, ResponseHead};
pub use scan::{HeadScanner, Scan};
pub use status::{reason_phrase, StatusClass};

/// Size limits applied while reading a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Maximum length in bytes of the request line, excluding its CRLF
    /// (longer: [`RequestError::RequestLineTooLong`], 414).
    pub max_request_line: usize,
    /// Maximum length in bytes of the whole head, from the first byte
    /// (including tolerated leading empty lines) through the final CRLFCRLF
    /// (longer: [`RequestError::HeadersTooLarge`], 431).
    pub max_header_bytes: usize,
    /// Maximum number of header field lines
    /// (more: [`RequestError::TooManyHeaders`], 431).
    pub max_headers: usize,
    /// Maximum body payload size in bytes (larger: `BodyTooLarge`, 413).
    pub max_body: u64,
}

impl Default for Limits {
    /// 8 KiB request line, 32 KiB head, 100 header lines, 1 MiB body.
    fn default() -> Self {
        Limits {
            max_request_line: 8192,
            max_header_bytes: 32768,
            max_headers: 100,
            max_body: 1 << 20,
        }
    }
}

/// HTTP protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

impl Version {
    /// The version as it appears on the wire, e.g. `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is
/// [`Method::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `CONNECT`.
    Connect,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
    /// `PATCH`.
    Patch,
    /// Any other (syntactically valid) method; see `RequestHead::method_str`.
    Other,
}

impl Method {
    /// Maps a method token to a [`Method`] (exact, case-sensitive match).
    pub fn from_bytes(bytes: &[u8]) -> Method {
        match bytes {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// Whether the method is idempotent per RFC 9110 §9.2.2
    /// (GET, HEAD, PUT, DELETE, OPTIONS, TRACE). [`Method::Other`] is not.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// `tchar` from RFC 9110 §5.6.2.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Trims optional whitespace (SP / HTAB) from both ends.
#[inline]
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_request_line, 8192);
        assert_eq!(l.max_header_bytes, 32768);
        assert_eq!(l.max_headers, 100);
        assert_eq!(l.max_body, 1 << 20);
    }

    #[test]
    fn methods() {
        let all = [
            (&b"GET"[..], Method::Get),
            (b"HEAD", Method::Head),
            (b"POST", Method::Post),
            (b"PUT", Method::Put),
            (b"DELETE", Method::Delete),
            (b"CONNECT", Method::Connect),
            (b"OPTIONS", Method::Options),
            (b"TRACE", Method::Trace),
            (b"PATCH", Method::Patch),
            (b"get", Method::Other),
            (b"PROPFIND", Method::Other),
            (b"", Method::Other),
            (b"GETX", Method::Other),
        ];
        for (bytes, m) in all {
            assert_eq!(Method::from_bytes(bytes), m, "{bytes:?}");
        }
        for m in [
            Method::Get,
            Method::Head,
            Method::Put,
            Method::Delete,
            Method::Options,
            Method::Trace,
        ] {
            assert!(m.is_idempotent(), "{m:?}");
        }
        for m in [Method::Post, Method::Connect, Method::Patch, Method::Other] {
            assert!(!m.is_idempotent(), "{m:?}");
        }
    }

    #[test]
    fn version_str() {
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert!(is_tchar(b'a') && is_tchar(b'~') && is_tchar(b'9'));
        assert!(!is_tchar(b' ') && !is_tchar(b',') && !is_tchar(b';') && !is_tchar(b'"'));
        assert!(!is_tchar(0) && !is_tchar(0x80) && !is_tchar(b'('));
    }
}

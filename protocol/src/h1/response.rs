//! [`parse_response`]: a backend's response head, with the framing a proxy (or a load generator)
//! needs to find where the response ends (RFC 9112 §6.3), and whether the connection stays open.
//!
//! Invariants: framing is unambiguous or rejected. A proxy must not guess where a backend's
//! response ends: invalid or repeated Content-Length, Content-Length together with
//! Transfer-Encoding, bare CR/LF and obs-fold are errors (the proxy answers 502 and closes the
//! backend connection). The request method matters: a response to HEAD, 1xx, 204 and 304 carry no
//! body, a 2xx to CONNECT starts a tunnel.

use httparse::Header;

use super::request::{cr_lf_balanced, parse_content_length, TransferCodings};
use super::{trim_ows, Limits, Method, Version};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseBody {
    /// No body (HEAD, 1xx, 204, 304, or Content-Length: 0).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length: the body runs until the server closes (the connection cannot be reused).
    UntilClose,
    /// A 2xx to CONNECT or a 101: the connection becomes a tunnel.
    Tunnel,
}

/// A parsed response head; strings borrow from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead<'h, 'b> {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: &'b str,
    /// Protocol version.
    pub version: Version,
    /// Body framing.
    pub body: ResponseBody,
    /// The connection may carry another request after this response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`; never with a body
    /// delimited by close).
    pub keep_alive: bool,
    /// An interim (1xx) response other than 101: the final response follows.
    pub interim: bool,
    /// Bytes of input the head took.
    pub head_len: usize,
    /// The header fields.
    pub headers: &'h [Header<'b>],
}

impl<'b> ResponseHead<'_, 'b> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Why a response head was rejected.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not a valid HTTP/1.x status line and header section.
    #[error("invalid response syntax")]
    Syntax,
    /// Head larger than `max_header_bytes`.
    #[error("response head too large")]
    HeadersTooLarge,
    /// More header fields than `max_headers` (or the scratch space).
    #[error("too many response header fields")]
    TooManyHeaders,
    /// A line ending in a bare LF or a CR not followed by LF.
    #[error("bare CR or LF in the response head")]
    BareLineEnding,
    /// A field line starting with whitespace.
    #[error("obsolete line folding in the response head")]
    ObsFold,
    /// Content-Length not a plain decimal number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length repeated or a list.
    #[error("repeated Content-Length")]
    DuplicateContentLength,
    /// Content-Length with Transfer-Encoding.
    #[error("Content-Length with Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// An empty or malformed Transfer-Encoding.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
}

impl ResponseError {
    /// A stable snake_case label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResponseError::Syntax => "syntax",
            ResponseError::HeadersTooLarge => "headers_too_large",
            ResponseError::TooManyHeaders => "too_many_headers",
            ResponseError::BareLineEnding => "bare_line_ending",
            ResponseError::ObsFold => "obs_fold",
            ResponseError::InvalidContentLength => "invalid_content_length",
            ResponseError::DuplicateContentLength => "duplicate_content_length",
            ResponseError::ContentLengthWithTransferEncoding => {
                "content_length_with_transfer_encoding"
            }
            ResponseError::InvalidTransferEncoding => "invalid_transfer_encoding",
        }
    }
}

/// Parses a response head at the start of `buf` (`Ok(None)`: incomplete). `method` is the method
/// of the request it answers. `headers` is caller-provided scratch (e.g.
/// `[httparse::EMPTY_HEADER; 64]`).
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    method: Method,
    limits: &Limits,
    headers: &'h mut [Header<'b>],
) -> Result<Option<ResponseHead<'h, 'b>>, ResponseError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        if buf.len() > limits.max_header_bytes {
            return Err(ResponseError::HeadersTooLarge);
        }
        if buf.windows(2).any(|w| w == b"\n\n") {
            return Err(ResponseError::BareLineEnding);
        }
        return Ok(None);
    };
    if end > limits.max_header_bytes {
        return Err(ResponseError::HeadersTooLarge);
    }
    let head = &buf[..end];
    if !cr_lf_balanced(head) || head.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') {
        return Err(ResponseError::BareLineEnding);
    }
    if head
        .windows(3)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
    {
        return Err(ResponseError::ObsFold);
    }
    let max = limits.max_headers.min(headers.len());
    let mut resp = httparse::Response::new(&mut headers[..max]);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ResponseError::Syntax),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(_) => return Err(ResponseError::Syntax),
    }
    let status = resp.code.ok_or(ResponseError::Syntax)?;
    // RFC 9110 section 15: codes outside 100..599 are invalid (a proxy answers 502 for them).
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Syntax);
    }
    let version = match resp.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ResponseError::Syntax),
    };
    let reason = resp.reason.unwrap_or("");
    let fields: &'h [Header<'b>] = resp.headers;

    let mut content_length = None;
    let mut cl_count = 0;
    let mut te = TransferCodings::default();
    let (mut close, mut keep_alive_token) = (false, false);
    for f in fields {
        if f.name.eq_ignore_ascii_case("content-length") {
            cl_count += 1;
            content_length = Some(f.value);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            te.add_line(f.value);
        } else if f.name.eq_ignore_ascii_case("connection") {
            for token in f.value.split(|&b| b == b',') {
                let token = trim_ows(token);
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let interim = (100..200).contains(&status) && status != 101;
    let no_body =
        method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    let tunnel = status == 101 || (method == Method::Connect && (200..300).contains(&status));
    let length = match content_length {
        None => None,
        Some(_) if cl_count > 1 => return Err(ResponseError::DuplicateContentLength),
        Some(v) => Some(parse_content_length(v).map_err(|e| match e {
            super::RequestError::DuplicateContentLength => ResponseError::DuplicateContentLength,
            _ => ResponseError::InvalidContentLength,
        })?),
    };
    // Chunked applied twice is forbidden (RFC 9112 §7): a proxy must not guess.
    if te.present && (te.invalid || te.chunked > 1) {
        return Err(ResponseError::InvalidTransferEncoding);
    }
    if te.present && length.is_some() {
        return Err(ResponseError::ContentLengthWithTransferEncoding);
    }
    let body = if tunnel {
        ResponseBody::Tunnel
    } else if no_body {
        ResponseBody::None
    } else if te.present {
        // RFC 9112 §6.3: chunked last -> chunked; otherwise the body runs until close.
        if te.last_is_chunked && te.chunked == 1 {
            ResponseBody::Chunked
        } else {
            ResponseBody::UntilClose
        }
    } else {
        match length {
            Some(0) => ResponseBody::None,
            Some(n) => ResponseBody::Length(n),
            None => ResponseBody::UntilClose,
        }
    };
    let persistent = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    Ok(Some(ResponseHead {
        status,
        reason,
        version,
        body,
        keep_alive: persistent && body != ResponseBody::UntilClose && body != ResponseBody::Tunnel,
        interim,
        head_len: end,
        headers: fields,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        buf: &[u8],
        method: Method,
    ) -> Result<Option<(u16, ResponseBody, bool, usize)>, ResponseError> {
        let mut h = [httparse::EMPTY_HEADER; 32];
        parse_response(buf, method, &Limits::default(), &mut h)
            .map(|o| o.map(|r| (r.status, r.body, r.keep_alive, r.head_len)))
    }

    #[test]
    fn framing_by_status_method_and_fields() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse(ok, Method::Get),
            Ok(Some((200, ResponseBody::Length(5), true, ok.len() - 5)))
        );
        assert_eq!(
            parse(ok, Method::Head).unwrap().unwrap().1,
            ResponseBody::None
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            parse(chunked, Method::Get).unwrap().unwrap().1,
            ResponseBody::Chunked
        );
        let until_close = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(
            parse(until_close, Method::Get),
            Ok(Some((
                200,
                ResponseBody::UntilClose,
                false,
                until_close.len()
            )))
        );
        let gz = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(
            parse(gz, Method::Get).unwrap().unwrap().1,
            ResponseBody::UntilClose
        );
        for s in [204u16, 304] {
            let r = format!("HTTP/1.1 {s} X\r\nContent-Length: 7\r\n\r\n");
            assert_eq!(
                parse(r.as_bytes(), Method::Get).unwrap().unwrap().1,
                ResponseBody::None
            );
        }
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut h = [httparse::EMPTY_HEADER; 4];
        let r = parse_response(interim, Method::Post, &Limits::default(), &mut h)
            .unwrap()
            .unwrap();
        assert!(r.interim && r.body == ResponseBody::None);
        let tunnel = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(
            parse(tunnel, Method::Get).unwrap().unwrap().1,
            ResponseBody::Tunnel
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n", Method::Connect)
                .unwrap()
                .unwrap()
                .1,
            ResponseBody::Tunnel
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get)
                .unwrap()
                .unwrap()
                .1,
            ResponseBody::None
        );
    }

    #[test]
    fn persistence() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse(close, Method::Get).unwrap().unwrap().2);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse(old, Method::Get).unwrap().unwrap().2);
        let old_ka = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(parse(old_ka, Method::Get).unwrap().unwrap().2);
    }

    #[test]
    fn ambiguous_framing_is_rejected() {
        let cases: [(&[u8], ResponseError); 9] = [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                ResponseError::InvalidTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::InvalidTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                ResponseError::DuplicateContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                ResponseError::DuplicateContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::ContentLengthWithTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
                ResponseError::ObsFold,
            ),
            (
                b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
                ResponseError::BareLineEnding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
                ResponseError::InvalidTransferEncoding,
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(
                parse(buf, Method::Get),
                Err(want),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(
            parse(b"garbage\r\n\r\n", Method::Get),
            Err(ResponseError::Syntax)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", Method::Get),
            Ok(None)
        );
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(40_000));
        assert_eq!(
            parse(big.as_bytes(), Method::Get),
            Err(ResponseError::HeadersTooLarge)
        );
    }

    #[test]
    fn split_at_every_byte_is_incomplete_until_the_end() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
        for i in 0..r.len() {
            assert_eq!(parse(&r[..i], Method::Get), Ok(None), "prefix {i}");
        }
        assert!(parse(r, Method::Get).unwrap().is_some());
    }
}

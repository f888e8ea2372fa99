//! [`parse_request`]: turns a complete request head into a [`RequestHead`]
//! and interprets the header fields that decide framing and connection
//! management (Host, Content-Length, Transfer-Encoding, Connection, Expect,
//! Upgrade).
//!
//! Invariants:
//! - syntax is checked by `httparse`; on top of it every line must end in
//!   CRLF, obs-fold is rejected, and the [`Limits`] are enforced exactly as
//!   [`HeadScanner`](super::HeadScanner) does, so the function is safe to use
//!   standalone on any buffer;
//! - framing is unambiguous or rejected (RFC 9112 §6): at most one
//!   Content-Length with a plain decimal value, no Content-Length together
//!   with Transfer-Encoding, `chunked` exactly once and last;
//! - the success path allocates nothing and zeroes nothing: the caller
//!   provides uninitialized header scratch space.
//!
//! Error precedence (first match wins): head-level errors (syntax, line
//! endings, limits), then request target, Host, Content-Length,
//! Transfer-Encoding, Expect, and finally the body-size limit.

use std::mem::MaybeUninit;

use httparse::Header;

use super::scan::{HeadScanner, MAX_LEADING_EMPTY_LINES};
use super::{is_tchar, trim_ows, Limits, Method, RequestError, Version};

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// No Content-Length and no Transfer-Encoding: the request has no body.
    None,
    /// `Content-Length: n` (possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head; all strings borrow from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'h, 'b> {
    /// The method, classified.
    pub method: Method,
    /// The method token as sent.
    pub method_str: &'b str,
    /// The request target as sent.
    pub target: &'b str,
    /// The path of an origin-form or absolute-form target without the query
    /// (`"/"` for an absolute-form target with an empty path, `"*"` for an
    /// OPTIONS request with such a target); `"*"` for the asterisk-form; the
    /// authority for CONNECT.
    pub path: &'b str,
    /// The protocol version.
    pub version: Version,
    /// The authority of an absolute-form target if present, else the Host
    /// header value (`None` when absent or empty, which only HTTP/1.0 or an
    /// absolute-form target allows).
    pub host: Option<&'b str>,
    /// Body framing.
    pub body: BodyKind,
    /// Whether the connection may be reused after this request: HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `Connection:
    /// keep-alive` (and no `close`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` (case-insensitive) in an HTTP/1.1 request
    /// (ignored in HTTP/1.0 per RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// The Connection header has the `upgrade` token and an Upgrade header
    /// is present.
    pub upgrade: bool,
    /// Bytes of input the head took, including leading empty lines and the
    /// final CRLFCRLF; the body (or the next request) starts here.
    pub head_len: usize,
    /// All header fields in order, values with surrounding whitespace
    /// removed.
    pub headers: &'h [Header<'b>],
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Parses a complete request head at the start of `buf`.
///
/// Call after [`HeadScanner`] reports complete; it also works standalone on
/// any buffer and returns `Ok(None)` when the head is incomplete (limits and
/// line endings are still checked on the partial input). `headers` is
/// caller-provided scratch, e.g. `[const { MaybeUninit::uninit() }; 128]`;
/// more header lines than `limits.max_headers` or than `headers.len()` give
/// [`RequestError::TooManyHeaders`].
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    limits: &Limits,
    headers: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<RequestHead<'h, 'b>>, RequestError> {
    let slots = headers.len().min(limits.max_headers);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers[..slots]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            HeadScanner::new().scan(buf, limits)?;
            return Ok(None);
        }
        Err(err) => {
            failure(buf, limits, err)?;
            return Ok(None);
        }
    };
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Syntax);
    };
    let fields: &'h [Header<'b>] = req.headers;

    if head_len > limits.max_header_bytes {
        return Err(RequestError::HeadersTooLarge);
    }
    // httparse accepts bare LF as a line ending but rejects every bare CR, so
    // each CR in a parsed head starts a CRLF: the counts match iff no bare LF.
    let head = &buf[..head_len];
    if !cr_lf_balanced(head) {
        return Err(RequestError::BareLf);
    }
    if matches!(head[0], b'\r' | b'\n') {
        let lead = head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(head.len());
        let lines = head[..lead].iter().filter(|&&b| b == b'\n').count();
        if lines > usize::from(MAX_LEADING_EMPTY_LINES) {
            return Err(RequestError::Syntax);
        }
    }
    // httparse requires exactly one SP between the three parts.
    let request_line = method_str.len() + target.len() + 2 + "HTTP/1.1".len();
    if request_line > limits.max_request_line {
        return Err(RequestError::RequestLineTooLong);
    }
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(RequestError::UnsupportedVersion),
    };
    let method = Method::from_bytes(method_str.as_bytes());
    let (path, target_authority) = classify_target(method, target)?;
    let info = interpret_fields(fields, version)?;

    if let BodyKind::Length(n) = info.body {
        if n > limits.max_body {
            return Err(RequestError::BodyTooLarge);
        }
    }
    let keep_alive = match version {
        Version::Http11 => !info.close,
        Version::Http10 => info.keep_alive && !info.close,
    };
    Ok(Some(RequestHead {
        method,
        method_str,
        target,
        path,
        version,
        host: target_authority.or(info.host),
        body: info.body,
        keep_alive,
        expect_continue: info.expect_continue,
        upgrade: info.upgrade_token && info.upgrade_header,
        head_len,
        headers: fields,
    }))
}

/// Whether `bytes` holds as many CRs as LFs. Counts per byte lane in `i8`
/// (flushed before it can overflow) so that the loop vectorizes.
#[inline]
pub(crate) fn cr_lf_balanced(bytes: &[u8]) -> bool {
    const LANES: usize = 32;
    let mut total: i64 = 0;
    let mut lanes = [0i8; LANES];
    let mut rounds = 0;
    let mut chunks = bytes.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &b) in lanes.iter_mut().zip(chunk) {
            *lane += i8::from(b == b'\r') - i8::from(b == b'\n');
        }
        rounds += 1;
        if rounds == i8::MAX {
            total += lanes.iter().map(|&l| i64::from(l)).sum::<i64>();
            lanes = [0; LANES];
            rounds = 0;
        }
    }
    total += lanes.iter().map(|&l| i64::from(l)).sum::<i64>();
    for &b in chunks.remainder() {
        total += i64::from(b == b'\r') - i64::from(b == b'\n');
    }
    total == 0
}

/// Maps an httparse error to the most precise [`RequestError`]. `Ok(())`
/// means the input is merely incomplete.
#[cold]
fn failure(buf: &[u8], limits: &Limits, err: httparse::Error) -> Result<(), RequestError> {
    match err {
        httparse::Error::TooManyHeaders => Err(RequestError::TooManyHeaders),
        httparse::Error::Version => version_failure(buf, limits),
        _ => {
            HeadScanner::new().scan(buf, limits)?;
            if has_obs_fold(buf) {
                return Err(RequestError::ObsFold);
            }
            Err(RequestError::Syntax)
        }
    }
}

/// httparse reports any version other than `HTTP/1.0` / `HTTP/1.1` (and any
/// garbage in the version position) as a version error: a well-formed
/// `HTTP/DIGIT.DIGIT` is unsupported (505), anything else is a syntax error.
#[cold]
fn version_failure(buf: &[u8], limits: &Limits) -> Result<(), RequestError> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let (line, terminated) = match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(p) => (&rest[..p], true),
        None => (rest, false),
    };
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        HeadScanner::new().scan(buf, limits)?;
        return Err(RequestError::Syntax);
    };
    let shape_ok = !method.is_empty() && !target.is_empty() && !version.contains(&b' ');
    const PATTERN: &[u8] = b"HTTP/0.0";
    let matches_pattern = version.len() <= PATTERN.len()
        && version.iter().zip(PATTERN).all(|(&b, &p)| {
            if p == b'0' {
                b.is_ascii_digit()
            } else {
                b == p
            }
        });
    if shape_ok && matches_pattern {
        if version.len() == PATTERN.len() && terminated {
            return Err(RequestError::UnsupportedVersion);
        }
        if !terminated {
            // Could still become a valid (or unsupported) version.
            HeadScanner::new().scan(buf, limits)?;
            return Ok(());
        }
    }
    HeadScanner::new().scan(buf, limits)?;
    Err(RequestError::Syntax)
}

/// Whether a field line of the (possibly partial) head starts with SP or
/// HTAB: obsolete line folding, or whitespace before the first field.
#[cold]
fn has_obs_fold(buf: &[u8]) -> bool {
    let mut seen_request_line = false;
    for line in buf.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !seen_request_line {
            seen_request_line = !line.is_empty();
            continue;
        }
        match line.first() {
            None => return false,
            Some(b' ' | b'\t') => return true,
            Some(_) => {}
        }
    }
    false
}

/// Validates the request target against the method (RFC 9112 §3.2) and
/// returns the path and, for the absolute-form, the authority.
fn classify_target(method: Method, target: &str) -> Result<(&str, Option<&str>), RequestError> {
    let bytes = target.as_bytes();
    if !target.is_ascii() {
        return Err(RequestError::InvalidTarget);
    }
    if method == Method::Connect {
        // authority-form only, with a port (RFC 9112 §3.2.3).
        if !valid_authority(bytes, true) {
            return Err(RequestError::InvalidTarget);
        }
        return Ok((target, None));
    }
    if bytes == b"*" {
        if method != Method::Options {
            return Err(RequestError::InvalidTarget);
        }
        return Ok(("*", None));
    }
    if bytes.first() == Some(&b'/') {
        let path = path_part(target)?;
        return Ok((path, None));
    }
    let scheme_len = if starts_with_ignore_case(bytes, b"http://") {
        7
    } else if starts_with_ignore_case(bytes, b"https://") {
        8
    } else {
        return Err(RequestError::InvalidTarget);
    };
    let rest = &target[scheme_len..];
    let auth_end = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    if !valid_authority(authority.as_bytes(), false) {
        return Err(RequestError::InvalidTarget);
    }
    let path = path_part(&rest[auth_end..])?;
    let path = if !path.is_empty() {
        path
    } else if method == Method::Options {
        "*"
    } else {
        "/"
    };
    Ok((path, Some(authority)))
}

/// The part of `s` before the query; rejects fragments.
#[inline]
fn path_part(s: &str) -> Result<&str, RequestError> {
    match s.bytes().position(|b| b == b'?' || b == b'#') {
        None => Ok(s),
        Some(p) if s.as_bytes()[p] == b'?' => {
            if s.as_bytes()[p..].contains(&b'#') {
                return Err(RequestError::InvalidTarget);
            }
            Ok(&s[..p])
        }
        Some(_) => Err(RequestError::InvalidTarget),
    }
}

#[inline]
fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `unreserved / sub-delims` (RFC 3986 §2.2, §2.3), as a table.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

#[inline]
fn is_reg_name_char(b: u8) -> bool {
    REG_NAME[usize::from(b)]
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2, §3.2.3) with a non-empty host
/// and no userinfo; `require_port` demands a non-empty port.
fn valid_authority(a: &[u8], require_port: bool) -> bool {
    let (host_ok, port) = if a.first() == Some(&b'[') {
        let Some(close) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &a[1..close];
        // IPv6address (has a ':') or IPvFuture ("v" ...), both drawn from
        // unreserved / sub-delims / ":".
        let inner_ok = inner.iter().all(|&b| b == b':' || is_reg_name_char(b))
            && (inner.contains(&b':') || matches!(inner.first(), Some(b'v' | b'V')));
        match &a[close + 1..] {
            [] => (inner_ok, None),
            [b':', port @ ..] => (inner_ok, Some(port)),
            _ => return false,
        }
    } else {
        let (host, port) = match a.iter().position(|&b| b == b':') {
            Some(p) => (&a[..p], Some(&a[p + 1..])),
            None => (a, None),
        };
        (!host.is_empty() && valid_reg_name(host), port)
    };
    if !host_ok {
        return false;
    }
    match port {
        None => !require_port,
        Some(p) => {
            p.len() <= 5 && p.iter().all(u8::is_ascii_digit) && !(require_port && p.is_empty())
        }
    }
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            if i + 2 >= host.len() {
                return false;
            }
            if !host[i + 1].is_ascii_hexdigit() || !host[i + 2].is_ascii_hexdigit() {
                return false;
            }
            i += 3;
        } else if is_reg_name_char(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// What the framing-relevant header fields say.
struct FieldInfo<'b> {
    host: Option<&'b str>,
    body: BodyKind,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_header: bool,
    expect_continue: bool,
}

/// Transfer-Encoding across all its field lines.
#[derive(Default)]
pub(crate) struct TransferCodings {
    pub(crate) present: bool,
    pub(crate) invalid: bool,
    pub(crate) chunked: u32,
    pub(crate) other: bool,
    pub(crate) last_is_chunked: bool,
}

impl TransferCodings {
    pub(crate) fn add_line(&mut self, value: &[u8]) {
        self.present = true;
        if value.is_empty() {
            self.invalid = true;
            return;
        }
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            let name_len = element
                .iter()
                .position(|&b| !is_tchar(b))
                .unwrap_or(element.len());
            if name_len == 0 {
                self.invalid = true;
                return;
            }
            let (name, params) = element.split_at(name_len);
            if !params.is_empty() && trim_ows(params).first() != Some(&b';') {
                self.invalid = true;
                return;
            }
            if params.is_empty() && name.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.last_is_chunked = true;
            } else {
                self.other = true;
                self.last_is_chunked = false;
            }
        }
    }
}

#[inline]
fn name_is(name: &str, lower: &[u8]) -> bool {
    name.as_bytes().eq_ignore_ascii_case(lower)
}

fn interpret_fields<'b>(
    fields: &[Header<'b>],
    version: Version,
) -> Result<FieldInfo<'b>, RequestError> {
    let mut host: Option<&'b [u8]> = None;
    let mut host_count = 0u32;
    let mut content_length: Option<&'b [u8]> = None;
    let mut cl_count = 0u32;
    let mut te = TransferCodings::default();
    let mut close = false;
    let mut keep_alive = false;
    let mut upgrade_token = false;
    let mut upgrade_header = false;
    let mut expect_continue = false;
    let mut expect_failed = false;

    for field in fields {
        let name = field.name;
        // Dispatch on length first: almost all fields are rejected by one
        // integer compare.
        match name.len() {
            4 if name_is(name, b"host") => {
                host_count += 1;
                host = Some(field.value);
            }
            6 if name_is(name, b"expect") => {
                if field.value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    expect_failed = true;
                }
            }
            7 if name_is(name, b"upgrade") => upgrade_header = true,
            10 if name_is(name, b"connection") => {
                for token in field.value.split(|&b| b == b',') {
                    let token = trim_ows(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        upgrade_token = true;
                    }
                }
            }
            14 if name_is(name, b"content-length") => {
                cl_count += 1;
                content_length = Some(field.value);
            }
            17 if name_is(name, b"transfer-encoding") => te.add_line(field.value),
            _ => {}
        }
    }

    // Host (RFC 9112 §3.2).
    if host_count > 1 {
        return Err(RequestError::DuplicateHost);
    }
    let host = match host {
        None if version == Version::Http11 => return Err(RequestError::MissingHost),
        None => None,
        // An empty Host is what a client sends for a target URI without an authority (RFC 9112
        // section 3.2): accepted, with no host to route by.
        Some([]) => None,
        Some(value) => {
            if !valid_authority(value, false) {
                return Err(RequestError::InvalidHost);
            }
            // Validated as ASCII above.
            Some(std::str::from_utf8(value).map_err(|_| RequestError::InvalidHost)?)
        }
    };

    // Content-Length (RFC 9112 §6.3, RFC 9110 §8.6).
    let length = match content_length {
        None => None,
        Some(_) if cl_count > 1 => return Err(RequestError::DuplicateContentLength),
        Some(value) => Some(parse_content_length(value)?),
    };

    // Transfer-Encoding (RFC 9112 §6.1).
    let body = if te.present {
        if te.invalid {
            return Err(RequestError::InvalidTransferEncoding);
        }
        if length.is_some() {
            return Err(RequestError::ContentLengthWithTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(RequestError::TransferEncodingHttp10);
        }
        if te.chunked > 1 {
            return Err(RequestError::DuplicateChunked);
        }
        if !te.last_is_chunked {
            return Err(RequestError::ChunkedNotFinal);
        }
        if te.other {
            return Err(RequestError::UnsupportedTransferCoding);
        }
        BodyKind::Chunked
    } else {
        match length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        }
    };

    if expect_failed {
        return Err(RequestError::ExpectationFailed);
    }

    Ok(FieldInfo {
        host,
        body,
        close,
        keep_alive,
        upgrade_token,
        upgrade_header,
        expect_continue: expect_continue && version == Version::Http11,
    })
}

/// `Content-Length = 1*DIGIT`, at most 19 digits (always fits in `u64`).
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    if value.contains(&b',') {
        return Err(RequestError::DuplicateContentLength);
    }
    if value.is_empty() || value.len() > 19 {
        return Err(RequestError::InvalidContentLength);
    }
    let mut n = 0u64;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(RequestError::InvalidContentLength);
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{HeadScanner, Scan};

    const SLOTS: usize = 128;

    fn scratch<'b>() -> [MaybeUninit<Header<'b>>; SLOTS] {
        [const { MaybeUninit::uninit() }; SLOTS]
    }

    /// Parses with `limits` and hands the head to `f`.
    fn with<R>(
        buf: &[u8],
        limits: &Limits,
        f: impl FnOnce(Result<Option<RequestHead<'_, '_>>, RequestError>) -> R,
    ) -> R {
        let mut h = scratch();
        f(parse_request(buf, limits, &mut h))
    }

    fn ok<R>(buf: &[u8], f: impl FnOnce(RequestHead<'_, '_>) -> R) -> R {
        with(buf, &Limits::default(), |r| match r {
            Ok(Some(head)) => f(head),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        })
    }

    fn err_with(buf: &[u8], limits: &Limits) -> RequestError {
        with(buf, limits, |r| match r {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        })
    }

    fn err(buf: &[u8]) -> RequestError {
        err_with(buf, &Limits::default())
    }

    fn err_str(s: &str) -> RequestError {
        err(s.as_bytes())
    }

    fn incomplete(buf: &[u8]) -> bool {
        with(buf, &Limits::default(), |r| matches!(r, Ok(None)))
    }

    /// A request with the given request line and extra field lines.
    fn req(line: &str, fields: &str) -> Vec<u8> {
        format!("{line}\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        ok(buf, |h| {
            assert_eq!(h.method, Method::Get);
            assert_eq!(h.method_str, "GET");
            assert_eq!(h.target, "/a/b?x=1&y=2");
            assert_eq!(h.path, "/a/b");
            assert_eq!(h.version, Version::Http11);
            assert_eq!(h.host, Some("example.com"));
            assert_eq!(h.body, BodyKind::None);
            assert!(h.keep_alive);
            assert!(!h.expect_continue);
            assert!(!h.upgrade);
            assert_eq!(h.head_len, buf.len());
            assert_eq!(h.headers.len(), 2);
            assert_eq!(h.headers[1].name, "Accept");
            assert_eq!(h.headers[1].value, b"*/*");
            assert_eq!(h.header("accept"), Some(&b"*/*"[..]));
            assert_eq!(h.header("HOST"), Some(&b"example.com"[..]));
            assert_eq!(h.header("missing"), None);
        });
    }

    #[test]
    fn http10_defaults() {
        ok(b"GET / HTTP/1.0\r\n\r\n", |h| {
            assert_eq!(h.version, Version::Http10);
            assert_eq!(h.host, None);
            assert!(!h.keep_alive);
        });
        ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", |h| {
            assert!(h.keep_alive);
        });
        ok(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            |h| {
                assert!(!h.keep_alive);
            },
        );
        ok(b"GET / HTTP/1.0\r\nHost: a.b\r\n\r\n", |h| {
            assert_eq!(h.host, Some("a.b"));
        });
        // Empty Host is tolerated in HTTP/1.0.
        ok(b"GET / HTTP/1.0\r\nHost:\r\n\r\n", |h| {
            assert_eq!(h.host, None)
        });
        // Expect is ignored in HTTP/1.0.
        ok(
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            |h| {
                assert!(!h.expect_continue);
            },
        );
    }

    #[test]
    fn connection_tokens() {
        let cases = [
            ("Connection: close", false, false),
            ("Connection: CLOSE", false, false),
            ("Connection: keep-alive", true, false),
            ("Connection: keep-alive, close", false, false),
            ("Connection: close, keep-alive", false, false),
            ("Connection: foo,  Close ,bar", false, false),
            ("Connection: closed", true, false),
            ("Connection: Upgrade", true, false),
            ("Connection: Upgrade\r\nUpgrade: websocket", true, true),
            (
                "Connection: keep-alive, upgrade\r\nUpgrade: h2c",
                true,
                true,
            ),
            ("Upgrade: websocket", true, false),
            (
                "Connection: close\r\nConnection: upgrade\r\nUpgrade: x",
                false,
                true,
            ),
            ("Connection:", true, false),
        ];
        for (fields, keep_alive, upgrade) in cases {
            let buf = req("GET / HTTP/1.1", &format!("Host: a\r\n{fields}\r\n"));
            ok(&buf, |h| {
                assert_eq!(h.keep_alive, keep_alive, "{fields}");
                assert_eq!(h.upgrade, upgrade, "{fields}");
            });
        }
    }

    #[test]
    fn expect() {
        for v in ["100-continue", "100-Continue", "100-CONTINUE"] {
            let buf = req(
                "PUT /x HTTP/1.1",
                &format!("Host: a\r\nContent-Length: 5\r\nExpect: {v}\r\n"),
            );
            ok(&buf, |h| assert!(h.expect_continue, "{v}"));
        }
        for v in [
            "",
            "100-continue, foo",
            "200-ok",
            "100-continue;x",
            "continue",
        ] {
            let buf = req("PUT /x HTTP/1.1", &format!("Host: a\r\nExpect: {v}\r\n"));
            assert_eq!(err(&buf), RequestError::ExpectationFailed, "{v:?}");
            assert_eq!(err(&buf).status(), 417);
        }
        // Other expectations fail in HTTP/1.0 too.
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n"),
            RequestError::ExpectationFailed
        );
    }

    #[test]
    fn content_length() {
        for (v, n) in [
            ("0", 0),
            ("5", 5),
            ("00012", 12),
            ("1048576", 1 << 20),
            (" 7 ", 7),
            ("\t7\t", 7),
        ] {
            let buf = req(
                "POST / HTTP/1.1",
                &format!("Host: a\r\nContent-Length:{v}\r\n"),
            );
            ok(&buf, |h| assert_eq!(h.body, BodyKind::Length(n), "{v:?}"));
        }
        let huge = Limits {
            max_body: u64::MAX,
            ..Limits::default()
        };
        let buf = req(
            "POST / HTTP/1.1",
            "Host: a\r\nContent-Length: 9999999999999999999\r\n",
        );
        with(&buf, &huge, |r| {
            assert_eq!(
                r.unwrap().unwrap().body,
                BodyKind::Length(9_999_999_999_999_999_999)
            );
        });
        for v in [
            "-1",
            "+5",
            "5 5",
            "0x10",
            "",
            "99999999999999999999999",
            "18446744073709551616",
            "00000000000000000001",
            "1e3",
            "5.0",
            "５",
        ] {
            let buf = req(
                "POST / HTTP/1.1",
                &format!("Host: a\r\nContent-Length: {v}\r\n"),
            );
            assert_eq!(err(&buf), RequestError::InvalidContentLength, "{v:?}");
        }
        for fields in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\ncontent-length: 6\r\n",
            "Content-Length: 5,5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5,6\r\n",
            "Content-Length: ,5\r\n",
        ] {
            let buf = req("POST / HTTP/1.1", &format!("Host: a\r\n{fields}"));
            assert_eq!(
                err(&buf),
                RequestError::DuplicateContentLength,
                "{fields:?}"
            );
        }
    }

    #[test]
    fn body_limit_boundary() {
        let limits = Limits {
            max_body: 100,
            ..Limits::default()
        };
        let at = req("POST / HTTP/1.1", "Host: a\r\nContent-Length: 100\r\n");
        with(&at, &limits, |r| {
            assert_eq!(r.unwrap().unwrap().body, BodyKind::Length(100));
        });
        let over = req("POST / HTTP/1.1", "Host: a\r\nContent-Length: 101\r\n");
        assert_eq!(err_with(&over, &limits), RequestError::BodyTooLarge);
        assert_eq!(RequestError::BodyTooLarge.status(), 413);
        // Chunked is checked by the body decoder, not here.
        let chunked = req(
            "POST / HTTP/1.1",
            "Host: a\r\nTransfer-Encoding: chunked\r\n",
        );
        with(&chunked, &limits, |r| {
            assert_eq!(r.unwrap().unwrap().body, BodyKind::Chunked);
        });
    }

    #[test]
    fn transfer_encoding() {
        for v in ["chunked", "Chunked", "CHUNKED", " chunked "] {
            let buf = req(
                "POST / HTTP/1.1",
                &format!("Host: a\r\nTransfer-Encoding:{v}\r\n"),
            );
            ok(&buf, |h| assert_eq!(h.body, BodyKind::Chunked, "{v:?}"));
        }
        let cases: &[(&str, RequestError)] = &[
            (
                "Transfer-Encoding: gzip, chunked",
                RequestError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
                RequestError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: identity, chunked",
                RequestError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: gzip;q=1, chunked",
                RequestError::UnsupportedTransferCoding,
            ),
            (
                "Transfer-Encoding: chunked, gzip",
                RequestError::ChunkedNotFinal,
            ),
            ("Transfer-Encoding: gzip", RequestError::ChunkedNotFinal),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
                RequestError::ChunkedNotFinal,
            ),
            (
                "Transfer-Encoding: chunked;x=1",
                RequestError::ChunkedNotFinal,
            ),
            (
                "Transfer-Encoding: chunked, chunked",
                RequestError::DuplicateChunked,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                RequestError::DuplicateChunked,
            ),
            ("Transfer-Encoding:", RequestError::InvalidTransferEncoding),
            (
                "Transfer-Encoding: ,chunked",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked,",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked, , chunked",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: \"chunked\"",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: chun ked",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding:",
                RequestError::InvalidTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5",
                RequestError::ContentLengthWithTransferEncoding,
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                RequestError::ContentLengthWithTransferEncoding,
            ),
            (
                "Content-Length: 0\r\nTransfer-Encoding: gzip",
                RequestError::ContentLengthWithTransferEncoding,
            ),
        ];
        for (fields, want) in cases {
            let buf = req("POST / HTTP/1.1", &format!("Host: a\r\n{fields}\r\n"));
            assert_eq!(err(&buf), *want, "{fields:?}");
        }
        assert_eq!(RequestError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(RequestError::ChunkedNotFinal.status(), 400);
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            RequestError::TransferEncodingHttp10
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), RequestError::MissingHost);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            RequestError::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
            RequestError::DuplicateHost
        );
        // Empty: accepted, no host (RFC 9112 section 3.2).
        ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", |h| {
            assert_eq!(h.host, None)
        });
        ok(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", |h| {
            assert_eq!(h.host, None)
        });
        for v in [
            "a b",
            "a/b",
            "user@host",
            "a:b",
            "a:123456",
            ":80",
            "[::1",
            "[::1]x",
            "[]",
            "[zz]",
            "a%2",
            "a%zz",
            "a?",
            "a#",
            "a\"b",
            "ex ample.com",
        ] {
            let buf = req("GET / HTTP/1.1", &format!("Host: {v}\r\n"));
            assert_eq!(err(&buf), RequestError::InvalidHost, "{v:?}");
        }
        for v in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[v1.fe80::a+en1]",
            "a%2Fb",
            "xn--bcher-kva.example",
            "a_b-c~d!$&'()*+,;=",
        ] {
            let buf = req("GET / HTTP/1.1", &format!("Host: {v}\r\n"));
            ok(&buf, |h| assert_eq!(h.host, Some(v), "{v:?}"));
        }
    }

    #[test]
    fn targets() {
        let good: &[(&str, &str, Option<&str>)] = &[
            ("GET / HTTP/1.1", "/", Some("h")),
            ("GET //x HTTP/1.1", "//x", Some("h")),
            ("GET /?q HTTP/1.1", "/", Some("h")),
            ("GET /p?a=/b?c HTTP/1.1", "/p", Some("h")),
            ("OPTIONS * HTTP/1.1", "*", Some("h")),
            (
                "GET http://example.com/x?y HTTP/1.1",
                "/x",
                Some("example.com"),
            ),
            (
                "GET HTTP://Example.com:8080 HTTP/1.1",
                "/",
                Some("Example.com:8080"),
            ),
            (
                "GET https://example.com?q HTTP/1.1",
                "/",
                Some("example.com"),
            ),
            (
                "OPTIONS http://example.com HTTP/1.1",
                "*",
                Some("example.com"),
            ),
            (
                "OPTIONS http://example.com/ HTTP/1.1",
                "/",
                Some("example.com"),
            ),
            (
                "CONNECT example.com:443 HTTP/1.1",
                "example.com:443",
                Some("h"),
            ),
            ("CONNECT [::1]:443 HTTP/1.1", "[::1]:443", Some("h")),
            ("PROPFIND /dav HTTP/1.1", "/dav", Some("h")),
        ];
        for (line, path, host) in good {
            let buf = req(line, "Host: h\r\n");
            ok(&buf, |h| {
                assert_eq!(h.path, *path, "{line}");
                assert_eq!(h.host, *host, "{line}");
                assert_eq!(h.target, line.split(' ').nth(1).unwrap());
            });
        }
        let bad = [
            "GET * HTTP/1.1",
            "POST * HTTP/1.1",
            "GET example.com:80 HTTP/1.1",
            "GET x HTTP/1.1",
            "GET ftp://example.com/ HTTP/1.1",
            "GET http:// HTTP/1.1",
            "GET http:///x HTTP/1.1",
            "GET http://user@example.com/ HTTP/1.1",
            "GET /#frag HTTP/1.1",
            "GET /a?b#frag HTTP/1.1",
            "GET http://example.com#f HTTP/1.1",
            "GET /caf\u{e9} HTTP/1.1",
            "CONNECT / HTTP/1.1",
            "CONNECT example.com HTTP/1.1",
            "CONNECT example.com: HTTP/1.1",
            "CONNECT http://example.com:443/ HTTP/1.1",
            "CONNECT * HTTP/1.1",
            "OPTIONS ** HTTP/1.1",
        ];
        for line in bad {
            let buf = req(line, "Host: h\r\n");
            assert_eq!(err(&buf), RequestError::InvalidTarget, "{line}");
        }
    }

    #[test]
    fn absolute_form_host() {
        // The target's authority wins; the Host header must still be present
        // and valid in HTTP/1.1 but may be empty.
        ok(
            b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
            |h| {
                assert_eq!(h.host, Some("a.example"));
            },
        );
        ok(b"GET http://a.example/ HTTP/1.1\r\nHost:\r\n\r\n", |h| {
            assert_eq!(h.host, Some("a.example"));
        });
        ok(b"GET http://a.example/ HTTP/1.0\r\n\r\n", |h| {
            assert_eq!(h.host, Some("a.example"));
        });
        assert_eq!(
            err(b"GET http://a.example/ HTTP/1.1\r\n\r\n"),
            RequestError::MissingHost
        );
        assert_eq!(
            err(b"GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n"),
            RequestError::InvalidHost
        );
    }

    #[test]
    fn versions() {
        for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/1.2", "HTTP/0.9", "HTTP/9.9"] {
            let e = err_str(&format!("GET / {v}\r\nHost: a\r\n\r\n"));
            assert_eq!(e, RequestError::UnsupportedVersion, "{v}");
            assert_eq!(e.status(), 505);
        }
        for v in [
            "HTTX/1.1",
            "http/1.1",
            "HTTP/1.",
            "HTTP/11",
            "HTTP/1.1x",
            "HTTP/10.0",
            "HTTP/1.10",
            "HTTP/2",
            "HTTP",
            "",
            "HTTP/1.1 ",
            "1.1",
        ] {
            let e = err_str(&format!("GET / {v}\r\nHost: a\r\n\r\n"));
            assert_eq!(e, RequestError::Syntax, "{v:?}");
        }
        // Extra request-line parts are syntax errors, not version errors.
        assert_eq!(err(b"GET / x HTTP/2.0\r\n\r\n"), RequestError::Syntax);
        // Incomplete versions wait for more input.
        assert!(incomplete(b"GET / HTTP/2"));
        assert!(incomplete(b"GET / HTTP/2.0"));
        assert!(incomplete(b"GET / HTTP/1.1\r\n"));
        assert_eq!(err(b"GET / HTTX"), RequestError::Syntax);
    }

    #[test]
    fn syntax_errors() {
        for buf in [
            &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\"st: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                RequestError::Syntax,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn obs_fold() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                RequestError::ObsFold,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // Detected even before the head is complete.
        assert_eq!(err(b"GET / HTTP/1.1\r\nX: b\r\n c"), RequestError::ObsFold);
    }

    #[test]
    fn bare_line_endings() {
        for buf in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\n",
        ] {
            assert_eq!(
                err(buf),
                RequestError::BareLf,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        for buf in [
            &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                RequestError::BareCr,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // A bare LF after the head (in the body) is not the head's business.
        let buf = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n\n";
        ok(buf, |h| assert_eq!(h.head_len, buf.len() - 1));
    }

    #[test]
    fn leading_empty_lines() {
        let mut buf = b"\r\n".repeat(8);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        ok(&buf, |h| {
            assert_eq!(h.head_len, buf.len());
            assert_eq!(h.path, "/");
        });
        let mut buf = b"\r\n".repeat(9);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(err(&buf), RequestError::Syntax);
        assert!(incomplete(b"\r\n\r\n"));
    }

    #[test]
    fn incomplete_inputs() {
        let full = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        for k in 0..full.len() {
            assert!(incomplete(&full[..k]), "{k}");
        }
        ok(full, |h| assert_eq!(h.head_len, full.len()));
    }

    /// Every prefix of a head, and the head split at every position, agrees
    /// with the scanner.
    #[test]
    fn agrees_with_scanner() {
        let limits = Limits::default();
        let inputs: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest",
            b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
        ];
        for input in inputs {
            for k in 0..=input.len() {
                let prefix = &input[..k];
                let scan = HeadScanner::new().scan(prefix, &limits);
                with(prefix, &limits, |r| match (&scan, r) {
                    (Err(a), Err(b)) => assert_eq!(*a, b, "{k}"),
                    (Ok(Scan::Incomplete), Ok(None)) => {}
                    (Ok(Scan::Complete { head_len }), Ok(Some(h))) => {
                        assert_eq!(*head_len, h.head_len)
                    }
                    (a, b) => panic!("{input:?} at {k}: scanner {a:?}, parser {b:?}"),
                });
            }
        }
    }

    #[test]
    fn pipelined() {
        let buf = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello\
GET /three HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
        let limits = Limits::default();
        let mut off = 0;
        let mut seen = Vec::new();
        while off < buf.len() {
            let rest = &buf[off..];
            let mut scanner = HeadScanner::new();
            let Scan::Complete { head_len } = scanner.scan(rest, &limits).unwrap() else {
                panic!("incomplete at {off}");
            };
            let mut h = scratch();
            let head = parse_request(rest, &limits, &mut h).unwrap().unwrap();
            assert_eq!(head.head_len, head_len);
            let body = match head.body {
                BodyKind::Length(n) => n as usize,
                BodyKind::None => 0,
                BodyKind::Chunked => unreachable!(),
            };
            seen.push((
                head.path.to_owned(),
                head.host.unwrap().to_owned(),
                head.keep_alive,
            ));
            off += head_len + body;
        }
        assert_eq!(
            seen,
            [
                ("/one".to_owned(), "a".to_owned(), true),
                ("/two".to_owned(), "b".to_owned(), true),
                ("/three".to_owned(), "c".to_owned(), false),
            ]
        );
    }

    fn with_fields(n: usize) -> Vec<u8> {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        buf
    }

    #[test]
    fn header_count_boundary() {
        let limits = Limits {
            max_headers: 10,
            ..Limits::default()
        };
        let at = with_fields(10);
        with(&at, &limits, |r| {
            assert_eq!(r.unwrap().unwrap().headers.len(), 10)
        });
        assert_eq!(
            err_with(&with_fields(11), &limits),
            RequestError::TooManyHeaders
        );
        // The default limit (100) with 128 slots.
        ok(&with_fields(100), |h| assert_eq!(h.headers.len(), 100));
        assert_eq!(err(&with_fields(101)), RequestError::TooManyHeaders);
        // Scratch smaller than the limit also bounds the count.
        let mut small = [const { MaybeUninit::uninit() }; 4];
        let buf = with_fields(4);
        let head = parse_request(&buf, &Limits::default(), &mut small)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), 4);
        let buf = with_fields(5);
        let mut small = [const { MaybeUninit::uninit() }; 4];
        assert_eq!(
            parse_request(&buf, &Limits::default(), &mut small).unwrap_err(),
            RequestError::TooManyHeaders
        );
        assert_eq!(RequestError::TooManyHeaders.status(), 431);
    }

    fn with_line(line_len: usize) -> Vec<u8> {
        let mut v = b"GET /".to_vec();
        v.resize(line_len - " HTTP/1.1".len(), b'a');
        v.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        v
    }

    #[test]
    fn request_line_boundary() {
        let limits = Limits {
            max_request_line: 100,
            ..Limits::default()
        };
        with(&with_line(100), &limits, |r| assert!(r.unwrap().is_some()));
        assert_eq!(
            err_with(&with_line(101), &limits),
            RequestError::RequestLineTooLong
        );
        assert_eq!(RequestError::RequestLineTooLong.status(), 414);
        // Also while incomplete.
        let line = with_line(101);
        with(&line[..100], &limits, |r| assert_eq!(r, Ok(None)));
        assert_eq!(
            err_with(&line[..101], &limits),
            RequestError::RequestLineTooLong
        );
        // Default limit.
        ok(&with_line(8192), |h| assert_eq!(h.target.len(), 8192 - 13));
        assert_eq!(err(&with_line(8193)), RequestError::RequestLineTooLong);
    }

    #[test]
    fn head_size_boundary() {
        let buf = with_fields(5);
        let at = Limits {
            max_header_bytes: buf.len(),
            ..Limits::default()
        };
        with(&buf, &at, |r| {
            assert_eq!(r.unwrap().unwrap().head_len, buf.len())
        });
        let below = Limits {
            max_header_bytes: buf.len() - 1,
            ..Limits::default()
        };
        assert_eq!(err_with(&buf, &below), RequestError::HeadersTooLarge);
        // Incomplete and already too large.
        assert_eq!(
            err_with(
                &buf[..buf.len() - 1],
                &Limits {
                    max_header_bytes: buf.len() - 2,
                    ..Limits::default()
                }
            ),
            RequestError::HeadersTooLarge
        );
        // Leading empty lines count.
        let mut lead = b"\r\n".to_vec();
        lead.extend_from_slice(&buf);
        assert_eq!(err_with(&lead, &at), RequestError::HeadersTooLarge);
        // A syntax error beyond the limit is reported as too large.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(40_000, b'x');
        big.extend_from_slice(b"\x00\r\n\r\n");
        assert_eq!(err(&big), RequestError::HeadersTooLarge);
    }

    #[test]
    fn errors_cover_all_request_variants() {
        let long_line = with_line(9000);
        let many = with_fields(101);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(40_000, b'x');
        let cases: &[(&[u8], RequestError)] = &[
            (&long_line, RequestError::RequestLineTooLong),
            (&big, RequestError::HeadersTooLarge),
            (&many, RequestError::TooManyHeaders),
            (b"GET / HTTP/2.0\r\n\r\n", RequestError::UnsupportedVersion),
            (b"GET / HTTX/1.1\r\n\r\n", RequestError::Syntax),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", RequestError::BareLf),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", RequestError::BareCr),
            (b"GET / HTTP/1.1\r\nHost: a\r\n x\r\n\r\n", RequestError::ObsFold),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", RequestError::InvalidTarget),
            (b"GET / HTTP/1.1\r\n\r\n", RequestError::MissingHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", RequestError::DuplicateHost),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", RequestError::InvalidHost),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                RequestError::InvalidContentLength,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n",
                RequestError::DuplicateContentLength,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestError::ContentLengthWithTransferEncoding,
            ),
            (
                b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestError::TransferEncodingHttp10,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                RequestError::ChunkedNotFinal,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                RequestError::DuplicateChunked,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
                RequestError::InvalidTransferEncoding,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                RequestError::UnsupportedTransferCoding,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n",
                RequestError::BodyTooLarge,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n",
                RequestError::ExpectationFailed,
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(err(buf), *want, "{:?}", String::from_utf8_lossy(buf));
        }
        for e in RequestError::ALL {
            assert!(cases.iter().any(|(_, w)| w == e), "{e:?} not covered");
        }
    }

    #[test]
    fn method_variants() {
        for (m, want) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("TRACE", Method::Trace),
            ("PATCH", Method::Patch),
            ("get", Method::Other),
            ("M-SEARCH", Method::Other),
        ] {
            let buf = req(&format!("{m} / HTTP/1.1"), "Host: a\r\n");
            ok(&buf, |h| {
                assert_eq!(h.method, want);
                assert_eq!(h.method_str, m);
            });
        }
    }

    #[test]
    fn cr_lf_balance() {
        assert!(cr_lf_balanced(b""));
        assert!(cr_lf_balanced(b"\r\n"));
        assert!(!cr_lf_balanced(b"\n"));
        assert!(!cr_lf_balanced(b"\r"));
        // Long inputs cross the lane flush boundary (127 rounds of 32 bytes).
        for len in [31, 32, 33, 4063, 4064, 4065, 10_000, 100_000] {
            let mut v = b"\r\n".repeat(len / 2);
            v.resize(len, b'a');
            assert!(cr_lf_balanced(&v), "{len}");
            for pos in [0, len / 2, len - 1] {
                let mut w = v.clone();
                w[pos] = b'\n';
                let cr = w.iter().filter(|&&b| b == b'\r').count();
                let lf = w.iter().filter(|&&b| b == b'\n').count();
                assert_eq!(cr_lf_balanced(&w), cr == lf, "{len} {pos}");
            }
        }
        // Many LFs in one lane.
        let v = vec![b'\n'; 32 * 200];
        assert!(!cr_lf_balanced(&v));
        let mut v = vec![b'\r'; 32 * 200];
        v.extend(vec![b'\n'; 32 * 200]);
        assert!(cr_lf_balanced(&v));
    }

    #[test]
    fn header_values_trimmed() {
        ok(
            b"GET / HTTP/1.1\r\nHost: \t a \t\r\nX:\r\nY:  two words  \r\n\r\n",
            |h| {
                assert_eq!(h.host, Some("a"));
                assert_eq!(h.header("x"), Some(&b""[..]));
                assert_eq!(h.header("y"), Some(&b"two words"[..]));
            },
        );
    }
}

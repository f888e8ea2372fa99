//! HTTP/2 <-> HTTP/1.1 head translation for streams proxied to HTTP/1.1 backends.
//!
//! To an h2 backend, the HTTP/1.1 head the proxy built is turned back into HTTP/2 fields
//! ([`h2_request`]): one request representation whatever the server speaks (a server of an
//! `auto` backend may turn out to speak HTTP/1.1), and the rewrite applied once.
//!
//! Requests (RFC 9113 section 8.3.1): `:method` and `:path` make the request line, `:authority`
//! becomes `Host` (it wins over a `host` field), the `cookie` crumbs of section 8.2.3 are joined
//! with `"; "` into one field, and the rest goes through the same rewrite as an HTTP/1.1 request
//! (hop-by-hop fields removed, forwarding fields added). A body without `content-length` is sent
//! chunked.
//!
//! Responses (section 8.2.2): hop-by-hop fields and `transfer-encoding` are dropped (the h2
//! framing delimits the body), names are lowercased; the fields are kept in a [`ResponseFields`]
//! buffer until the stream's HEADERS can be written.

use super::rewrite::{self, Forwarding};
use coreplex_protocol::h2::conn::HeaderWriter;
use coreplex_protocol::h2::hpack::{HeaderList, Indexing};
use coreplex_protocol::h2::message::Checked;
use httparse::Header;

/// Why an h2 request cannot be sent as HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// A field name or the method is not valid UTF-8 (checked names are ASCII tokens, so only
    /// a value such as `:path` can be).
    NotUtf8,
    /// More header fields than an HTTP/1.1 backend request may carry.
    TooManyFields,
}

/// Most fields one translated request carries (as the HTTP/1.1 listener's cap).
const MAX_FIELDS: usize = 256;

/// Writes the HTTP/1.1 request head for the checked h2 request `list` into `out`. `chunked`:
/// the body is sent with chunked framing (the request has a body and no `content-length`).
/// Returns whether the request asked for `100-continue` (the field is not forwarded: the proxy
/// answers it itself, as nginx does, and streams the body as it comes).
pub fn request_head(
    out: &mut Vec<u8>,
    list: &HeaderList,
    c: &Checked,
    fwd: &Forwarding<'_>,
    chunked: bool,
) -> Result<bool, TranslateError> {
    let method = c
        .pseudo
        .method
        .map_or(&b"GET"[..], |i| list.get(usize::from(i)).1);
    let method = std::str::from_utf8(method).map_err(|_| TranslateError::NotUtf8)?;
    let (path, authority) = path_and_authority(list, c)?;
    let mut cookie: Vec<u8> = Vec::new();
    let mut expect_continue = false;
    let mut fields = regular_fields(list, c, &mut cookie, |name, value| {
        if name == b"expect" {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            return false;
        }
        true
    })?;
    if !cookie.is_empty() {
        fields.push(Header {
            name: "cookie",
            value: &cookie,
        });
    }
    if chunked {
        fields.push(Header {
            name: "transfer-encoding",
            value: b"chunked",
        });
    }
    if fields.len() > MAX_FIELDS {
        return Err(TranslateError::TooManyFields);
    }
    rewrite::request_head(out, method, path, &fields, authority, fwd);
    Ok(expect_continue)
}

/// The `:path` (`/` without one) and `:authority` of a checked request, as text.
fn path_and_authority<'a>(
    list: &'a HeaderList,
    c: &Checked,
) -> Result<(&'a str, Option<&'a str>), TranslateError> {
    let get = |i: Option<u16>| i.map(|i| list.get(usize::from(i)).1);
    let path = get(c.pseudo.path).unwrap_or(b"/");
    let path = std::str::from_utf8(path).map_err(|_| TranslateError::NotUtf8)?;
    let authority = match get(c.pseudo.authority) {
        Some(a) => Some(std::str::from_utf8(a).map_err(|_| TranslateError::NotUtf8)?),
        None => None,
    };
    Ok((path, authority))
}

/// The regular fields of a checked request for an HTTP/1.1 head: the `cookie` crumbs joined
/// into `cookie` (RFC 9113 section 8.2.3: the caller adds it as one field), and every other
/// field for which `keep(name, value)` holds.
fn regular_fields<'a>(
    list: &'a HeaderList,
    c: &Checked,
    cookie: &mut Vec<u8>,
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<Vec<Header<'a>>, TranslateError> {
    let mut fields = Vec::with_capacity(list.len() - c.regular_start + 3);
    for i in c.regular_start..list.len() {
        let (name, value, _) = list.get(i);
        if name == b"cookie" {
            if !cookie.is_empty() {
                cookie.extend_from_slice(b"; ");
            }
            cookie.extend_from_slice(value);
            continue;
        }
        if !keep(name, value) {
            continue;
        }
        let name = std::str::from_utf8(name).map_err(|_| TranslateError::NotUtf8)?;
        fields.push(Header { name, value });
    }
    Ok(fields)
}

/// The HTTP/1.1 upgrade request an RFC 8441 extended CONNECT (`:protocol`) becomes (section
/// 5 of the RFC): `GET` of its `:path` with `Host` from `:authority`, its regular fields, and
/// `Upgrade: <protocol>` with `Connection: upgrade`; for `websocket`, `key` as
/// `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13` unless the request carries a version.
pub fn extended_connect_head(
    out: &mut Vec<u8>,
    list: &HeaderList,
    c: &Checked,
    fwd: &Forwarding<'_>,
    protocol: &[u8],
    key: Option<&[u8; 24]>,
) -> Result<(), TranslateError> {
    let (path, authority) = path_and_authority(list, c)?;
    let mut cookie: Vec<u8> = Vec::new();
    let mut has_version = false;
    let mut fields = regular_fields(list, c, &mut cookie, |name, _| {
        has_version |= name == b"sec-websocket-version";
        // A key is ours to make; a body has no place in an upgrade request.
        !matches!(name, b"sec-websocket-key" | b"content-length")
    })?;
    if !cookie.is_empty() {
        fields.push(Header {
            name: "cookie",
            value: &cookie,
        });
    }
    if let Some(k) = key {
        fields.push(Header {
            name: "sec-websocket-key",
            value: k,
        });
        if !has_version {
            fields.push(Header {
                name: "sec-websocket-version",
                value: b"13",
            });
        }
    }
    if fields.len() > MAX_FIELDS {
        return Err(TranslateError::TooManyFields);
    }
    rewrite::request_head(out, "GET", path, &fields, authority, fwd);
    rewrite::add_upgrade(out, protocol);
    Ok(())
}

/// A response's fields for an h2 HEADERS frame: names lowercased, each name and value with a
/// 4-byte length in front, in one buffer.
#[derive(Clone, Debug, Default)]
pub struct ResponseFields {
    bytes: Vec<u8>,
}

impl ResponseFields {
    /// The fields of an HTTP/1.1 response head that cross to HTTP/2.
    pub fn from_h1(headers: &[Header<'_>]) -> ResponseFields {
        ResponseFields::from_h1_in(headers, Vec::new())
    }

    /// [`ResponseFields::from_h1`] written into `bytes` (emptied first; a buffer to reuse).
    pub fn from_h1_in(headers: &[Header<'_>], mut bytes: Vec<u8>) -> ResponseFields {
        bytes.clear();
        bytes.reserve(
            headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 8)
                .sum(),
        );
        let mut f = ResponseFields { bytes };
        for h in rewrite::end_to_end(headers) {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            f.push(h.name.as_bytes(), h.value);
        }
        f
    }

    /// The regular fields of an h2 response head (from `start` in `list`; the message checks
    /// already refused connection-specific ones).
    pub fn from_h2(list: &HeaderList, start: usize) -> ResponseFields {
        let mut f = ResponseFields {
            bytes: Vec::with_capacity(list.heap_bytes().min(8192)),
        };
        for i in start..list.len() {
            let (name, value, _) = list.get(i);
            f.push(name, value);
        }
        f
    }

    /// Adds a field (`name` is lowercased).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.bytes
            .extend_from_slice(&(name.len() as u32).to_le_bytes());
        self.bytes.extend(name.iter().map(u8::to_ascii_lowercase));
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value);
    }

    /// The buffer, to reuse.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let name = take(&mut rest)?;
            let value = take(&mut rest)?;
            Some((name, value))
        })
    }
}

/// Writes the fields of an HTTP/2 request for an h2 backend from the HTTP/1.1 request head the
/// proxy built (`head`: request line and fields, already rewritten): `:method`, `:scheme`,
/// `:authority` from `Host`, `:path` from the target, then the fields lowercased without the
/// connection-specific ones (RFC 9113 section 8.2.2: `connection`, `keep-alive`,
/// `proxy-connection`, `transfer-encoding`, `upgrade`, and `te` unless it is `trailers`).
/// `extended`: the head is a WebSocket upgrade sent as an RFC 8441 extended CONNECT with this
/// `:protocol` (its `Sec-WebSocket-Key` left out). Returns `false` when `head` does not parse
/// (it is the proxy's own, so that is a bug).
pub fn h2_request(
    head: &[u8],
    scheme: &[u8],
    extended: Option<&[u8]>,
    w: &mut HeaderWriter<'_>,
) -> bool {
    // Most heads have a few dozen fields: a small array on the stack, the full cap on the heap
    // for the rare large one.
    let mut small = [httparse::EMPTY_HEADER; 48];
    let mut large;
    let mut req = httparse::Request::new(&mut small);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            large = vec![httparse::EMPTY_HEADER; MAX_FIELDS + 8];
            req = httparse::Request::new(&mut large);
            if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
                return false;
            }
        }
        _ => return false,
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return false;
    };
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    match extended {
        // RFC 8441: the upgrade as an extended CONNECT; the key and the Upgrade stay behind.
        Some(protocol) => {
            w.field(b":method", b"CONNECT", Indexing::Index);
            w.field(b":protocol", protocol, Indexing::Index);
        }
        None => w.field(b":method", method.as_bytes(), Indexing::Index),
    }
    w.field(b":scheme", scheme, Indexing::Index);
    if let Some(host) = host {
        w.field(b":authority", host, Indexing::Index);
    }
    w.field(b":path", path.as_bytes(), Indexing::Index);
    let mut name = Vec::with_capacity(32);
    for h in req.headers.iter() {
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        match &name[..] {
            b"host" | b"connection" | b"keep-alive" | b"proxy-connection"
            | b"transfer-encoding" | b"upgrade" => continue,
            b"sec-websocket-key" if extended.is_some() => continue,
            b"te" if !h.value.eq_ignore_ascii_case(b"trailers") => continue,
            _ => {}
        }
        w.field(&name, h.value, request_indexing(&name));
    }
    true
}

/// How a request field is put in the backend connection's HPACK table.
fn request_indexing(name: &[u8]) -> Indexing {
    match name {
        b"content-length" => Indexing::Literal,
        b"authorization" | b"proxy-authorization" | b"cookie" => Indexing::Never,
        _ => Indexing::Index,
    }
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let v = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coreplex_protocol::h2::message::{check, Kind};

    fn list(fields: &[(&str, &str)]) -> HeaderList {
        let mut list = HeaderList::default();
        for (n, v) in fields {
            list.push(n.as_bytes(), v.as_bytes());
        }
        list
    }

    fn fwd() -> Forwarding<'static> {
        Forwarding {
            client: None,
            forwarded_for: false,
            forwarded: false,
            default_host: "backend",
            via: false,
            tls: false,
        }
    }

    fn translate(fields: &[(&str, &str)], chunked: bool) -> String {
        let l = list(fields);
        let c = check(
            &l,
            Kind::Request {
                extended_connect: false,
            },
        )
        .expect("a valid request");
        let mut out = Vec::new();
        request_head(&mut out, &l, &c, &fwd(), chunked).expect("translates");
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn authority_becomes_host_and_cookies_are_joined() {
        let head = translate(
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "example.com"),
                (":path", "/a?b=1"),
                ("cookie", "a=1"),
                ("accept", "*/*"),
                ("cookie", "b=2"),
            ],
            false,
        );
        assert!(head.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nHost: example.com\r\n"), "{head}");
        assert!(head.contains("\r\ncookie: a=1; b=2\r\n"), "{head}");
        assert_eq!(head.matches("cookie").count(), 1, "{head}");
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn authority_wins_over_host_and_te_is_dropped() {
        let head = translate(
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "a.example"),
                (":path", "/"),
                ("te", "trailers"),
                ("expect", "100-continue"),
            ],
            true,
        );
        assert!(!head.contains("expect"), "{head}");
        assert!(head.contains("Host: a.example\r\n"), "{head}");
        assert!(!head.contains("te: trailers"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    }

    #[test]
    fn host_field_is_kept_without_authority() {
        let head = translate(
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/x"),
                ("host", "h.example"),
            ],
            false,
        );
        assert!(head.contains("host: h.example\r\n"), "{head}");
        assert!(!head.contains("Host: backend"), "{head}");
    }

    #[test]
    fn response_fields_lose_hop_by_hop_and_framing() {
        let headers = [
            Header {
                name: "Content-Type",
                value: b"text/plain",
            },
            Header {
                name: "Connection",
                value: b"keep-alive, X-Private",
            },
            Header {
                name: "X-Private",
                value: b"1",
            },
            Header {
                name: "Transfer-Encoding",
                value: b"chunked",
            },
            Header {
                name: "Keep-Alive",
                value: b"timeout=5",
            },
            Header {
                name: "Set-Cookie",
                value: b"a=1",
            },
        ];
        let f = ResponseFields::from_h1(&headers);
        let got: Vec<(&[u8], &[u8])> = f.iter().collect();
        assert_eq!(
            got,
            vec![
                (&b"content-type"[..], &b"text/plain"[..]),
                (&b"set-cookie"[..], &b"a=1"[..]),
            ]
        );
    }

    /// Runs `h2_request` on `head` and decodes the HEADERS block it wrote.
    fn to_h2(head: &str) -> Vec<(String, String)> {
        use coreplex_protocol::h2::conn::{Connection, Role, Settings};
        use coreplex_protocol::h2::hpack::Decoder;
        let mut conn = Connection::new(Role::Client, Settings::default());
        let mut out = Vec::new();
        let mut ok = false;
        conn.send_headers(1, true, &mut out, |w| {
            ok = h2_request(head.as_bytes(), b"https", None, w);
        });
        assert!(ok, "{head}");
        let mut list = HeaderList::default();
        Decoder::new(4096)
            .decode(&out[9..], &mut list, 1 << 20)
            .expect("a valid block");
        (0..list.len())
            .map(|i| {
                let (n, v, _) = list.get(i);
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_rewritten_head_becomes_h2_fields() {
        let f = to_h2(
            "POST /a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nTE: gzip\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=1; b=2\r\n\r\n",
        );
        let want = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/a?b"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cookie", "a=1; b=2"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(f, want);
        let f = to_h2("GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n");
        assert!(f.contains(&("te".into(), "trailers".into())), "{f:?}");
    }

    #[test]
    fn a_head_with_many_fields_translates_whole() {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..200 {
            head.push_str(&format!("X-F{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        let f = to_h2(&head);
        assert_eq!(f.len(), 4 + 200);
        assert_eq!(f.last(), Some(&("x-f199".into(), "199".into())));
    }
}

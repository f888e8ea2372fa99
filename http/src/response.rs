//! Response bytes: routes' direct responses pre-rendered at startup, error responses, and the
//! `Date` header cached per second.
//!
//! A rendered response is `head` + Date value + `tail` + connection header + CRLF + body, so writing
//! one is a few `extend_from_slice` calls with no formatting on the hot path.

use crate::runtime::Respond;
use coreplex_protocol::h1::{encode, reason_phrase};
use std::time::{Duration, Instant, SystemTime};

/// Value of the `Server` header.
pub const SERVER: &str = "coreplex";

/// A response rendered once, written many times.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Status code.
    pub status: u16,
    head: Vec<u8>,
    tail: Vec<u8>,
    body: Vec<u8>,
    /// The header fields for HTTP/2 (names lowercased; `server`, the configured fields and
    /// `content-length`; `date` is added when written).
    h2_fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The status as three ASCII digits.
    status_digits: [u8; 3],
}

/// How the response ends the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive: no Connection header.
    KeepAlive11,
    /// HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// `Connection: close`.
    Close,
}

impl Rendered {
    /// Bytes of the body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Renders a configured direct response.
    pub fn new(r: &Respond) -> Rendered {
        let extra: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Rendered::build(r.status, &extra, r.body.clone())
    }

    /// Renders a response with a plain-text body.
    pub fn text(status: u16, body: &str) -> Rendered {
        Rendered::build(
            status,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body.as_bytes().to_vec(),
        )
    }

    /// Renders a response with extra header fields.
    pub(crate) fn with_headers(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Rendered {
        Rendered::build(status, headers, body)
    }

    /// The answer to `OPTIONS *`: 200 with the methods the server handles, no body.
    pub fn options() -> Rendered {
        Rendered::build(
            200,
            &[("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")],
            Vec::new(),
        )
    }

    fn build(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Rendered {
        // The head around the date, written once by the protocol's HTTP/1 encoder.
        let mut head = Vec::new();
        encode::write_status_line(&mut head, status);
        encode::write_field(&mut head, b"Server", SERVER.as_bytes());
        head.extend_from_slice(b"Date: ");
        let mut tail = b"\r\n".to_vec();
        for (k, v) in headers {
            encode::write_field(&mut tail, k.as_bytes(), v.as_bytes());
        }
        encode::write_field(
            &mut tail,
            b"Content-Length",
            body.len().to_string().as_bytes(),
        );
        let mut h2_fields = vec![(b"server".to_vec(), SERVER.as_bytes().to_vec())];
        for (k, v) in headers {
            let name = k.to_ascii_lowercase();
            // Connection-specific fields have no place in HTTP/2 (RFC 9113 section 8.2.2).
            if !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
            ) {
                h2_fields.push((name.into_bytes(), v.as_bytes().to_vec()));
            }
        }
        h2_fields.push((
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        ));
        let d = status.to_string().into_bytes();
        Rendered {
            status,
            head,
            tail,
            body,
            h2_fields,
            status_digits: [d[0], d[1], d[2]],
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The HTTP/2 header fields (see the field's docs).
    pub fn h2_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.h2_fields.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    /// The status as three ASCII digits (the `:status` value).
    pub fn status_digits(&self) -> &[u8] {
        &self.status_digits
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>, date: &[u8], persist: Persist, with_body: bool) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(date);
        out.extend_from_slice(&self.tail);
        match persist {
            Persist::KeepAlive11 => {}
            Persist::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Error responses by status, rendered once.
#[derive(Debug, Clone)]
pub struct ErrorPages {
    pages: Vec<Rendered>,
}

impl ErrorPages {
    /// Renders the statuses the server can emit on its own.
    pub fn new() -> ErrorPages {
        let pages = [
            400u16, 404, 408, 413, 414, 417, 426, 431, 500, 501, 502, 503, 504, 505,
        ]
        .iter()
        .map(|&s| Rendered::text(s, &format!("{}\n", reason_phrase(s))))
        .collect();
        ErrorPages { pages }
    }

    /// The page for `status` (400 for statuses without one).
    pub fn get(&self, status: u16) -> &Rendered {
        self.pages
            .iter()
            .find(|p| p.status == status)
            .unwrap_or(&self.pages[0])
    }
}

/// The `Date` header value, refreshed at most once per second.
pub struct DateCache {
    value: [u8; 29],
    next_refresh: Instant,
}

impl DateCache {
    /// A cache holding the current date.
    pub fn new(now: Instant) -> DateCache {
        let mut d = DateCache {
            value: [b' '; 29],
            next_refresh: now,
        };
        d.refresh(now);
        d
    }

    /// The current value (IMF-fixdate, 29 bytes).
    pub fn get(&mut self, now: Instant) -> &[u8] {
        if now >= self.next_refresh {
            self.refresh(now);
        }
        &self.value
    }

    fn refresh(&mut self, now: Instant) {
        let wall = SystemTime::now();
        // Formatted straight into the cache (no String: nothing is allocated once a second).
        let mut w = std::io::Cursor::new(&mut self.value[..]);
        let _ =
            std::io::Write::write_fmt(&mut w, format_args!("{}", httpdate::HttpDate::from(wall)));
        let sub = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.next_refresh = now + Duration::from_nanos(1_000_000_000 - sub as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_direct_response() {
        let r = Rendered::new(&Respond {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"Hello, World!".to_vec(),
        });
        let mut out = Vec::new();
        let date = b"Sun, 22 Nov 2026 22:00:00 GMT";
        r.write(&mut out, date, Persist::KeepAlive11, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: coreplex\r\nDate: Sun, 22 Nov 2026 22:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
        );
        let mut out = Vec::new();
        r.write(&mut out, date, Persist::Close, false);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("Content-Length: 13\r\nConnection: close\r\n\r\n"),
            "{s}"
        );
    }

    #[test]
    fn date_is_imf_fixdate() {
        let mut d = DateCache::new(Instant::now());
        let v = std::str::from_utf8(d.get(Instant::now()))
            .unwrap()
            .to_string();
        assert!(v.ends_with(" GMT") && v.len() == 29, "{v}");
    }

    #[test]
    fn error_pages_cover_parser_statuses() {
        let p = ErrorPages::new();
        for s in [400, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505] {
            assert_eq!(p.get(s).status, s);
        }
    }
}

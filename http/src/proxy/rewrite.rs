//! Header rewriting between client and backend (RFC 9110 §7.6.1): hop-by-hop fields are removed
//! in both directions (`Connection` and every field it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Upgrade`), `X-Forwarded-For`/`X-Forwarded-Proto` and optionally `Forwarded`
//! are added to requests, and the response gets the client's own connection header.
//!
//! Requests always go to the backend as HTTP/1.1 with keep-alive (the pool decides about reuse);
//! framing fields (`Content-Length`, `Transfer-Encoding: chunked`) pass through unchanged, since
//! bodies are forwarded byte for byte. Only a chunked response to an HTTP/1.0 client changes
//! framing: it loses `Transfer-Encoding` and is delimited by close.

use crate::response::Persist;
use coreplex_protocol::h1::encode::{
    write_field as push_field, write_request_line, write_status_line_with,
};
use httparse::Header;
use std::net::IpAddr;

/// Fields that never cross the proxy.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The field names a `Connection` header lists (besides `close`/`keep-alive`), at most 16.
struct Named<'b> {
    names: [&'b [u8]; 16],
    len: usize,
}

impl<'b> Named<'b> {
    fn from_headers(headers: &[Header<'b>]) -> Named<'b> {
        let mut n = Named {
            names: [&[]; 16],
            len: 0,
        };
        for h in headers {
            if !h.name.eq_ignore_ascii_case("connection") {
                continue;
            }
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                if !tok.is_empty() && n.len < n.names.len() {
                    n.names[n.len] = tok;
                    n.len += 1;
                }
            }
        }
        n
    }

    fn contains(&self, name: &str) -> bool {
        self.names[..self.len]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Fields a `Connection` header may not remove: the message's framing and `Host` (removing
/// them would let the bytes of a body be read as another request: request smuggling).
const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

fn is_hop_by_hop(name: &str, named: &Named<'_>) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (named.contains(name) && !PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)))
}

/// What the request rewrite adds.
#[derive(Clone, Copy, Debug)]
pub struct Forwarding<'a> {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Add `X-Forwarded-For` (appended to the client's) and `X-Forwarded-Proto` (when absent).
    pub forwarded_for: bool,
    /// Add an RFC 7239 `Forwarded` element (appended to the client's).
    pub forwarded: bool,
    /// `Host` to send when the request has none (an HTTP/1.0 request goes out as HTTP/1.1,
    /// which requires one): the backend's first server address, as nginx's `$proxy_host`.
    pub default_host: &'a str,
    /// Add `Via: 1.1 coreplex` (RFC 9110 §7.6.3: a gateway must send one in each inbound
    /// request), after any the request already has.
    pub via: bool,
    /// The client spoke TLS: `X-Forwarded-Proto: https` and `proto=https` in `Forwarded`.
    pub tls: bool,
}

/// Asks the backend for the upgrade the client asked for: `Connection: upgrade` and the
/// client's `Upgrade` value, added to a request head written by [`request_head`] (which
/// removed both as hop-by-hop).
pub fn add_upgrade(out: &mut Vec<u8>, protocols: &[u8]) {
    debug_assert!(out.ends_with(b"\r\n\r\n"));
    out.truncate(out.len() - 2);
    push_field(out, b"connection", b"upgrade");
    push_field(out, b"upgrade", protocols);
    out.extend_from_slice(b"\r\n");
}

/// An absolute-form target (`http://host:port/path?q`) as the origin-form target and the
/// authority to send as `Host` (RFC 9112 §3.2.2: the target's authority wins over any Host
/// field). `None` for other forms.
pub fn split_absolute(target: &str) -> Option<(String, &str)> {
    let (_, rest) = target.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let tail = tail.split('#').next().unwrap_or_default();
    let origin = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Some((origin, authority))
}

/// Writes the request head to send to the backend into `out`. `host`: replaces the request's
/// Host fields (the authority of an absolute-form target).
pub fn request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[Header<'_>],
    host: Option<&str>,
    fwd: &Forwarding<'_>,
) {
    let named = Named::from_headers(headers);
    write_request_line(out, method.as_bytes(), target.as_bytes());
    let mut xff: Option<Vec<u8>> = None;
    let mut forwarded: Option<Vec<u8>> = None;
    let mut has_proto = false;
    let mut has_host = false;
    for h in headers {
        if is_hop_by_hop(h.name, &named) {
            continue;
        }
        if fwd.forwarded_for && h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let v = xff.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(h.value);
            continue;
        }
        if fwd.forwarded && h.name.eq_ignore_ascii_case("forwarded") {
            let v = forwarded.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(h.value);
            continue;
        }
        let is_host = h.name.eq_ignore_ascii_case("host");
        if is_host && host.is_some() {
            continue;
        }
        has_proto |= h.name.eq_ignore_ascii_case("x-forwarded-proto");
        has_host |= is_host;
        push_field(out, h.name.as_bytes(), h.value);
    }
    if let Some(authority) = host {
        push_field(out, b"Host", authority.as_bytes());
    } else if !has_host {
        push_field(out, b"Host", fwd.default_host.as_bytes());
    }
    if fwd.via {
        push_field(out, b"Via", b"1.1 coreplex");
    }
    let ip = fwd.client.map(|ip| ip.to_canonical());
    if fwd.forwarded_for {
        let mut v = xff.unwrap_or_default();
        if let Some(ip) = ip {
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(ip.to_string().as_bytes());
        }
        if !v.is_empty() {
            push_field(out, b"X-Forwarded-For", &v);
        }
        if !has_proto {
            let proto: &[u8] = if fwd.tls { b"https" } else { b"http" };
            push_field(out, b"X-Forwarded-Proto", proto);
        }
    }
    if fwd.forwarded {
        let mut v = forwarded.unwrap_or_default();
        if !v.is_empty() {
            v.extend_from_slice(b", ");
        }
        match ip {
            Some(IpAddr::V6(a)) => v.extend_from_slice(format!("for=\"[{a}]\"").as_bytes()),
            Some(IpAddr::V4(a)) => v.extend_from_slice(format!("for={a}").as_bytes()),
            None => v.extend_from_slice(b"for=unknown"),
        }
        v.extend_from_slice(if fwd.tls {
            b";proto=https"
        } else {
            b";proto=http"
        });
        push_field(out, b"Forwarded", &v);
    }
    out.extend_from_slice(b"\r\n");
}

/// The end-to-end fields of a head: without the hop-by-hop ones and those its `Connection`
/// field names.
pub fn end_to_end<'h, 'b>(headers: &'h [Header<'b>]) -> impl Iterator<Item = &'h Header<'b>> {
    let named = Named::from_headers(headers);
    headers
        .iter()
        .filter(move |h| !is_hop_by_hop(h.name, &named))
}

/// Writes a response head for the client into `out`. `dechunk`: the body will be sent without
/// chunked framing (drop `Transfer-Encoding`).
pub fn response_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    headers: &[Header<'_>],
    persist: Persist,
    dechunk: bool,
) {
    let named = Named::from_headers(headers);
    write_status_line_with(out, status, reason.as_bytes());
    // RFC 9110 section 8.6: no Content-Length on a 1xx or 204.
    let no_length = matches!(status, 100..=199 | 204);
    for h in headers {
        if is_hop_by_hop(h.name, &named)
            || (dechunk && h.name.eq_ignore_ascii_case("transfer-encoding"))
            || (no_length && h.name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        push_field(out, h.name.as_bytes(), h.value);
    }
    match persist {
        Persist::KeepAlive11 => {}
        Persist::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A 401/407 whose authentication challenge binds the connection to the client (NTLM, Negotiate).
pub fn is_connection_auth(status: u16, headers: &[Header<'_>]) -> bool {
    let field = match status {
        401 => "www-authenticate",
        407 => "proxy-authenticate",
        _ => return false,
    };
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case(field) && {
            let v = h.value.trim_ascii_start();
            starts_with_ci(v, b"ntlm") || starts_with_ci(v, b"negotiate")
        }
    })
}

fn starts_with_ci(v: &[u8], prefix: &[u8]) -> bool {
    v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing added, `b` as the default Host.
    fn plain() -> Forwarding<'static> {
        Forwarding {
            client: None,
            forwarded_for: false,
            forwarded: false,
            default_host: "b",
            via: false,
            tls: false,
        }
    }

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn request_drops_hop_by_hop_and_appends_forwarded_for() {
        let headers = [
            h("Host", "example.com"),
            h("Connection", "keep-alive, X-Secret"),
            h("X-Secret", "s"),
            h("Keep-Alive", "timeout=5"),
            h("TE", "trailers"),
            h("Upgrade", "websocket"),
            h("Proxy-Connection", "close"),
            h("X-Forwarded-For", "10.0.0.1"),
            h("Content-Length", "3"),
        ];
        let mut out = Vec::new();
        let fwd = Forwarding {
            client: Some("127.0.0.1".parse().unwrap()),
            forwarded_for: true,
            forwarded: true,
            default_host: "backend:80",
            ..plain()
        };
        request_head(&mut out, "POST", "/a?b", &headers, None, &fwd);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "POST /a?b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\
             X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\
             Forwarded: for=127.0.0.1;proto=http\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_forwarded_is_quoted_and_mapped_v4_is_canonical() {
        let mut out = Vec::new();
        let fwd = Forwarding {
            client: Some("::1".parse().unwrap()),
            forwarded: true,
            ..plain()
        };
        request_head(&mut out, "GET", "/", &[h("Host", "a")], None, &fwd);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Forwarded: for=\"[::1]\";proto=http\r\n"));
        let mut out = Vec::new();
        let fwd = Forwarding {
            client: Some("::ffff:10.1.2.3".parse().unwrap()),
            forwarded_for: true,
            ..plain()
        };
        request_head(&mut out, "GET", "/", &[h("Host", "a")], None, &fwd);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("X-Forwarded-For: 10.1.2.3\r\n"));
    }

    #[test]
    fn connection_cannot_remove_framing_or_host() {
        let headers = [
            h("Host", "a"),
            h(
                "Connection",
                "content-length, transfer-encoding, host, x-drop",
            ),
            h("Content-Length", "4"),
            h("X-Drop", "1"),
        ];
        let mut out = Vec::new();
        let fwd = plain();
        request_head(&mut out, "POST", "/", &headers, None, &fwd);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
        );
        let mut out = Vec::new();
        let headers = [
            h("Connection", "transfer-encoding"),
            h("Transfer-Encoding", "chunked"),
        ];
        response_head(&mut out, 200, "OK", &headers, Persist::KeepAlive11, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_targets_host() {
        assert_eq!(
            split_absolute("http://x:80/p?q=1"),
            Some(("/p?q=1".to_string(), "x:80"))
        );
        assert_eq!(split_absolute("http://x"), Some(("/".to_string(), "x")));
        assert_eq!(
            split_absolute("https://[::1]?a"),
            Some(("/?a".to_string(), "[::1]"))
        );
        assert_eq!(split_absolute("/p"), None);
        let mut out = Vec::new();
        let fwd = plain();
        request_head(
            &mut out,
            "GET",
            "/p",
            &[h("Host", "internal.example"), h("Accept", "*/*")],
            Some("x"),
            &fwd,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p HTTP/1.1\r\nAccept: */*\r\nHost: x\r\n\r\n"
        );
    }

    #[test]
    fn via_is_added_after_the_clients() {
        let mut out = Vec::new();
        let fwd = Forwarding {
            via: true,
            ..plain()
        };
        request_head(
            &mut out,
            "GET",
            "/",
            &[h("Host", "a"), h("Via", "1.0 fred")],
            None,
            &fwd,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 fred\r\nVia: 1.1 coreplex\r\n\r\n"
        );
    }

    #[test]
    fn a_request_without_host_gets_the_backends() {
        let mut out = Vec::new();
        let fwd = Forwarding {
            default_host: "10.0.0.5:8080",
            ..plain()
        };
        request_head(&mut out, "GET", "/", &[h("Accept", "*/*")], None, &fwd);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nAccept: */*\r\nHost: 10.0.0.5:8080\r\n\r\n"
        );
    }

    #[test]
    fn response_gets_the_clients_connection_header() {
        let headers = [
            h("Content-Length", "2"),
            h("Connection", "keep-alive"),
            h("Keep-Alive", "timeout=60"),
            h("Transfer-Encoding", "chunked"),
        ];
        let mut out = Vec::new();
        response_head(&mut out, 200, "OK", &headers, Persist::Close, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        response_head(
            &mut out,
            204,
            "No Content",
            &[],
            Persist::KeepAlive10,
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn ntlm_and_negotiate_bind_the_connection() {
        assert!(is_connection_auth(401, &[h("WWW-Authenticate", "NTLM")]));
        assert!(is_connection_auth(
            407,
            &[h("Proxy-Authenticate", " Negotiate abc")]
        ));
        assert!(!is_connection_auth(401, &[h("WWW-Authenticate", "Basic")]));
        assert!(!is_connection_auth(200, &[h("WWW-Authenticate", "NTLM")]));
    }
}

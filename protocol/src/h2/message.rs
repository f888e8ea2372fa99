//! The HTTP/2 message rules (RFC 9113 section 8.2 and 8.3): what makes a header list a valid
//! request, response or trailer section. A list that breaks them is malformed: a stream error
//! of type PROTOCOL_ERROR (section 8.1.1).

use super::hpack::HeaderList;

/// Why a header list is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub enum Malformed {
    #[error("field name with an uppercase letter or an invalid character")]
    Name,
    #[error("field value with NUL, CR, LF or surrounding whitespace")]
    Value,
    #[error("connection-specific field")]
    ConnectionField,
    #[error("TE other than \"trailers\"")]
    Te,
    #[error("unknown pseudo-header field")]
    UnknownPseudo,
    #[error("pseudo-header field after a regular field")]
    PseudoAfterRegular,
    #[error("repeated pseudo-header field")]
    RepeatedPseudo,
    #[error("missing :method, :scheme or :path")]
    MissingPseudo,
    #[error("empty :path")]
    EmptyPath,
    #[error("CONNECT with :scheme or :path, or without :authority")]
    Connect,
    #[error("pseudo-header field in trailers")]
    PseudoInTrailers,
    #[error("invalid or repeated content-length")]
    ContentLength,
    #[error("invalid :status")]
    Status,
    #[error("Host differs from :authority")]
    HostMismatch,
}

/// Indexes of the pseudo-header fields in the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub struct Pseudo {
    pub method: Option<u16>,
    pub scheme: Option<u16>,
    pub authority: Option<u16>,
    pub path: Option<u16>,
    /// RFC 8441 extended CONNECT.
    pub protocol: Option<u16>,
    pub status: Option<u16>,
}

/// A checked header list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Where the pseudo-header fields are.
    pub pseudo: Pseudo,
    /// The content-length field's value, if any.
    pub content_length: Option<u64>,
    /// Index of the first regular (non-pseudo) field.
    pub regular_start: usize,
    /// The response status (responses only).
    pub status: u16,
}

/// What the list is meant to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // variants and fields carry the RFC's names
pub enum Kind {
    Request {
        /// Whether `:protocol` is allowed (we sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1).
        extended_connect: bool,
    },
    Response,
    Trailers,
}

fn valid_name(n: &[u8]) -> bool {
    // RFC 9110 token characters, lowercase only (RFC 9113 section 8.2.1).
    !n.is_empty()
        && n.iter().all(|&c| {
            matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*'
                | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
        })
}

fn valid_value(v: &[u8]) -> bool {
    let edge = |c: u8| c == b' ' || c == b'\t';
    !v.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n')
        && !v.first().is_some_and(|&c| edge(c))
        && !v.last().is_some_and(|&c| edge(c))
}

/// Checks a header list (RFC 9113 section 8.2 and 8.3).
pub fn check(list: &HeaderList, kind: Kind) -> Result<Checked, Malformed> {
    let mut c = Checked::default();
    let mut regular_seen = false;
    for i in 0..list.len() {
        let (name, value, _) = list.get(i);
        if let Some(p) = name.strip_prefix(b":") {
            if regular_seen {
                return Err(Malformed::PseudoAfterRegular);
            }
            let slot = match (kind, p) {
                (Kind::Trailers, _) => return Err(Malformed::PseudoInTrailers),
                (Kind::Request { .. }, b"method") => &mut c.pseudo.method,
                (Kind::Request { .. }, b"scheme") => &mut c.pseudo.scheme,
                (Kind::Request { .. }, b"authority") => &mut c.pseudo.authority,
                (Kind::Request { .. }, b"path") => &mut c.pseudo.path,
                (
                    Kind::Request {
                        extended_connect: true,
                    },
                    b"protocol",
                ) => &mut c.pseudo.protocol,
                (Kind::Response, b"status") => &mut c.pseudo.status,
                _ => return Err(Malformed::UnknownPseudo),
            };
            if slot.replace(i as u16).is_some() {
                return Err(Malformed::RepeatedPseudo);
            }
            if !valid_value(value) {
                return Err(Malformed::Value);
            }
            c.regular_start = i + 1;
            continue;
        }
        regular_seen = true;
        if !valid_name(name) {
            return Err(Malformed::Name);
        }
        if !valid_value(value) {
            return Err(Malformed::Value);
        }
        match name {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => return Err(Malformed::ConnectionField),
            b"te" if value != b"trailers" => return Err(Malformed::Te),
            b"content-length" if kind != Kind::Trailers => {
                let n = parse_length(value).ok_or(Malformed::ContentLength)?;
                if c.content_length.replace(n).is_some_and(|m| m != n) {
                    return Err(Malformed::ContentLength);
                }
            }
            _ => {}
        }
    }
    if !regular_seen {
        c.regular_start = list.len();
    }
    let get = |i: Option<u16>| i.map(|i| list.get(usize::from(i)).1);
    match kind {
        Kind::Request { .. } => {
            // RFC 9113 section 8.3.1: a Host naming another authority is malformed.
            if let Some(authority) = get(c.pseudo.authority) {
                let differs = (c.regular_start..list.len())
                    .map(|i| list.get(i))
                    .any(|(n, v, _)| n == b"host" && !v.eq_ignore_ascii_case(authority));
                if differs {
                    return Err(Malformed::HostMismatch);
                }
            }
            let method = get(c.pseudo.method).ok_or(Malformed::MissingPseudo)?;
            if method == b"CONNECT" && c.pseudo.protocol.is_none() {
                // RFC 9113 section 8.5.
                if c.pseudo.scheme.is_some()
                    || c.pseudo.path.is_some()
                    || c.pseudo.authority.is_none()
                {
                    return Err(Malformed::Connect);
                }
            } else {
                if c.pseudo.protocol.is_some() && method != b"CONNECT" {
                    return Err(Malformed::Connect);
                }
                if c.pseudo.scheme.is_none() {
                    return Err(Malformed::MissingPseudo);
                }
                match get(c.pseudo.path) {
                    None => return Err(Malformed::MissingPseudo),
                    Some(b"") => return Err(Malformed::EmptyPath),
                    Some(_) => {}
                }
            }
        }
        Kind::Response => {
            let s = get(c.pseudo.status).ok_or(Malformed::Status)?;
            if s.len() != 3 || !s.iter().all(u8::is_ascii_digit) || s[0] == b'0' {
                return Err(Malformed::Status);
            }
            c.status = s.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        }
        Kind::Trailers => {}
    }
    Ok(c)
}

/// A content-length value: digits only, at most 19 of them.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(fields: &[(&str, &str)]) -> HeaderList {
        let mut l = HeaderList::default();
        for (n, v) in fields {
            l.push(n.as_bytes(), v.as_bytes());
        }
        l
    }

    const REQ: Kind = Kind::Request {
        extended_connect: false,
    };

    #[test]
    fn valid_requests_responses_and_trailers() {
        let l = list(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a.example"),
            (":path", "/x"),
            ("accept", "*/*"),
            ("te", "trailers"),
            ("content-length", "0"),
        ]);
        let c = check(&l, REQ).unwrap();
        assert_eq!(c.pseudo.path, Some(3));
        assert_eq!(c.regular_start, 4);
        assert_eq!(c.content_length, Some(0));
        let l = list(&[(":method", "CONNECT"), (":authority", "a:443")]);
        assert!(check(&l, REQ).is_ok());
        let l = list(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/chat"),
            (":authority", "a"),
        ]);
        assert_eq!(check(&l, REQ), Err(Malformed::UnknownPseudo));
        assert!(check(
            &l,
            Kind::Request {
                extended_connect: true
            }
        )
        .is_ok());
        let l = list(&[(":status", "204"), ("server", "x")]);
        assert_eq!(check(&l, Kind::Response).unwrap().status, 204);
        assert!(check(&list(&[("grpc-status", "0")]), Kind::Trailers).is_ok());
    }

    #[test]
    fn malformed_lists() {
        let base = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            list(&v)
        };
        for (l, want) in [
            (with(&[("Accept", "x")]), Malformed::Name),
            (with(&[("a b", "x")]), Malformed::Name),
            (with(&[("x", "a\r\nb")]), Malformed::Value),
            (with(&[("x", " a")]), Malformed::Value),
            (with(&[("connection", "close")]), Malformed::ConnectionField),
            (
                with(&[("transfer-encoding", "chunked")]),
                Malformed::ConnectionField,
            ),
            (with(&[("te", "gzip")]), Malformed::Te),
            (with(&[(":foo", "x")]), Malformed::UnknownPseudo),
            (with(&[(":status", "200")]), Malformed::UnknownPseudo),
            (
                with(&[("x", "1"), (":authority", "a")]),
                Malformed::PseudoAfterRegular,
            ),
            (with(&[(":path", "/again")]), Malformed::RepeatedPseudo),
            (
                with(&[("content-length", "1"), ("content-length", "2")]),
                Malformed::ContentLength,
            ),
            (with(&[("content-length", "1x")]), Malformed::ContentLength),
            (
                list(&[(":method", "GET"), (":path", "/")]),
                Malformed::MissingPseudo,
            ),
            (
                list(&[(":method", "GET"), (":scheme", "http"), (":path", "")]),
                Malformed::EmptyPath,
            ),
            (
                list(&[(":method", "CONNECT"), (":authority", "a"), (":path", "/")]),
                Malformed::Connect,
            ),
        ] {
            assert_eq!(check(&l, REQ), Err(want));
        }
        assert_eq!(
            check(&with(&[]), Kind::Trailers),
            Err(Malformed::PseudoInTrailers)
        );
        assert_eq!(
            check(&list(&[(":status", "20")]), Kind::Response),
            Err(Malformed::Status)
        );
        assert_eq!(
            check(&list(&[("server", "x")]), Kind::Response),
            Err(Malformed::Status)
        );
        // The same content-length twice is allowed (RFC 9110 section 8.6).
        assert!(check(
            &with(&[("content-length", "1"), ("content-length", "1")]),
            REQ
        )
        .is_ok());
    }
}

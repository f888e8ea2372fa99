//! A first look at what a client sends to a TLS listener, before rustls sees it: plaintext HTTP
//! (answered with a readable 400, as nginx does), and the ClientHello's server name, so that an
//! unknown name can be refused with `unrecognized_name` (rustls itself could only answer
//! `access_denied`) and the name is known to the session.
//!
//! Grammar read (RFC 8446 4.1.2, RFC 6066 3; all lengths big-endian):
//! ```text
//! record   = type(1)=22 version(2) length(2) fragment
//! fragment = msg_type(1)=1 length(3) legacy_version(2) random(32)
//!            session_id<0..32> cipher_suites<2..2^16-2> compression<1..2^8-1>
//!            extensions<0..2^16-1>
//! extension = type(2) data<0..2^16-1>; server_name (type 0) data =
//!            list<1..2^16-1> of { name_type(1)=0 host_name<1..2^16-1> }
//! ```
//! Only the first record is read: a ClientHello that does not fit one record (16 KiB) is left to
//! rustls, as one without the extension is. A client offering nothing newer than TLS 1.1 (its
//! `legacy_version` below 1.2 and no `supported_versions` extension, type 43, listing 1.2 or
//! 1.3), or an SSLv2-format hello, is answered `protocol_version` (RFC 8446 6.2; rustls would
//! say `handshake_failure`).

/// What the first bytes from a client are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// An HTTP/1 request sent in plaintext (starts with an uppercase token and a space).
    PlainHttp,
    /// A TLS ClientHello; its server name if it has one (lowercase, as sent).
    Hello(Option<String>),
    /// A ClientHello of SSL 3.0, TLS 1.0 or 1.1 only (or SSLv2's format).
    OldVersion,
    /// Something else: left to rustls, which answers it with an alert.
    Other,
}

/// Looks at the start of a client's first bytes.
pub fn peek(input: &[u8]) -> Peek {
    let Some(&first) = input.first() else {
        return Peek::NeedMore;
    };
    // SSLv2's record header: a length with the top bit set, then message type 1 (CLIENT-HELLO).
    if first & 0x80 != 0 && input.get(2) == Some(&1) {
        return Peek::OldVersion;
    }
    if first != 22 {
        return if looks_like_http(input) {
            Peek::PlainHttp
        } else if input.len() < 8 && input.iter().all(u8::is_ascii_uppercase) {
            Peek::NeedMore
        } else {
            Peek::Other
        };
    }
    if input.len() < 5 {
        return Peek::NeedMore;
    }
    let len = usize::from(u16::from_be_bytes([input[3], input[4]]));
    if len > MAX_PLAINTEXT_RECORD {
        // Not worth waiting for: rustls answers record_overflow.
        return Peek::Other;
    }
    if input.len() < 5 + len {
        return Peek::NeedMore;
    }
    match parse_hello(&input[5..5 + len]) {
        Some(h) if !h.modern => Peek::OldVersion,
        Some(h) => Peek::Hello(h.name),
        None => Peek::Other,
    }
}

/// The largest plaintext record (RFC 8446 5.1: 2^14 bytes).
const MAX_PLAINTEXT_RECORD: usize = 1 << 14;

/// An uppercase method of 3 to 7 letters followed by a space.
fn looks_like_http(input: &[u8]) -> bool {
    let token = input.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&token) && input.get(token) == Some(&b' ')
}

/// A cursor over big-endian fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<usize> {
        Some(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// What is read of a ClientHello.
struct Hello {
    /// The server name, if sent.
    name: Option<String>,
    /// TLS 1.2 or newer is offered.
    modern: bool,
}

/// Reads a ClientHello handshake message in `fragment`; `None` for something that is not a
/// (whole) ClientHello.
fn parse_hello(fragment: &[u8]) -> Option<Hello> {
    let mut r = Reader(fragment);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut h = Reader(r.take(len)?);
    let legacy = h.u16()?;
    h.take(32)?; // random
    let mut hello = Hello {
        name: None,
        modern: legacy >= 0x0303,
    };
    let n = h.u8()?;
    h.take(n)?; // session id
    let n = h.u16()?;
    h.take(n)?; // cipher suites
    let n = h.u8()?;
    h.take(n)?; // compression methods
    if h.0.is_empty() {
        return Some(hello); // no extensions
    }
    let n = h.u16()?;
    let mut exts = Reader(h.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        match kind {
            0 if hello.name.is_none() => {
                let mut list = Reader(data);
                let n = list.u16()?;
                let mut names = Reader(list.take(n)?);
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let n = names.u16()?;
                    let name = names.take(n)?;
                    if name_type == 0 {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.name = Some(name.to_ascii_lowercase());
                        break;
                    }
                }
            }
            43 => {
                let mut list = Reader(data);
                let n = list.u8()?;
                let mut versions = Reader(list.take(n)?);
                while !versions.0.is_empty() {
                    // 0x0303 is TLS 1.2, 0x0304 TLS 1.3; GREASE values (0x?a?a) are skipped.
                    let v = versions.u16()?;
                    if (0x0303..0x0400).contains(&v) {
                        hello.modern = true;
                    }
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// The plaintext answer to an HTTP request sent to a TLS port.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 48\r\nConnection: close\r\n\r\nThis port speaks TLS: use https:// to reach it.\n";

/// A fatal `unrecognized_name` alert (RFC 8446 6.2: level 2, description 112) in a TLS 1.2
/// record, understood by clients of any version before a version is agreed.
pub const UNRECOGNIZED_NAME_ALERT: &[u8] = &[21, 3, 3, 0, 2, 2, 112];

/// A fatal `protocol_version` alert (description 70) in a TLS 1.0 record, which a client of an
/// old version reads.
pub const PROTOCOL_VERSION_ALERT: &[u8] = &[21, 3, 1, 0, 2, 2, 70];

/// A fatal `decode_error` alert (description 50) in a TLS 1.2 record: sent for a first flight
/// rustls rejects without queueing an alert of its own (an oversized handshake message).
pub const DECODE_ERROR_ALERT: &[u8] = &[21, 3, 3, 0, 2, 2, 50];

/// A fatal `handshake_failure` alert (description 40) in a TLS 1.2 record: for other first
/// flights rustls rejects in silence.
pub const HANDSHAKE_FAILURE_ALERT: &[u8] = &[21, 3, 3, 0, 2, 2, 40];

/// Runs [`peek`] over untrusted input (the fuzz target).
#[doc(hidden)]
pub fn fuzz_peek(data: &[u8]) {
    let _ = peek(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with extensions `exts` (each `(type, data)`).
    fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1, (msg.len() >> 8) as u8, msg.len() as u8];
        rec.extend_from_slice(&msg);
        rec
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0, (name.len() >> 8) as u8, name.len() as u8];
        entry.extend_from_slice(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&entry);
        (0, d)
    }

    #[test]
    fn reads_the_server_name_at_any_split() {
        let rec = hello(&[(10, vec![0, 2, 0, 29]), sni("Api.Example")]);
        assert_eq!(peek(&rec), Peek::Hello(Some("api.example".into())));
        for n in 0..rec.len() {
            assert_eq!(peek(&rec[..n]), Peek::NeedMore, "at {n}");
        }
        assert_eq!(peek(&hello(&[])), Peek::Hello(None));
        assert_eq!(peek(&hello(&[(10, vec![0, 2, 0, 29])])), Peek::Hello(None));
    }

    #[test]
    fn old_versions_are_told_apart() {
        let mut tls10 = hello(&[sni("a")]);
        tls10[10] = 1; // legacy_version 3.1
        assert_eq!(peek(&tls10), Peek::OldVersion);
        // A TLS 1.3 client says 3.3 in legacy_version and lists 1.3 in supported_versions.
        let mut modern = hello(&[(43, vec![4, 0x0a, 0x0a, 3, 4])]);
        modern[10] = 1;
        assert_eq!(peek(&modern), Peek::Hello(None));
        assert_eq!(peek(&[0x80, 0x2e, 0x01, 0x00, 0x02]), Peek::OldVersion);
    }

    #[test]
    fn tells_plaintext_http_from_garbage() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::PlainHttp);
        assert_eq!(peek(b"OPTIONS * HTTP/1.1\r\n"), Peek::PlainHttp);
        assert_eq!(peek(b"GE"), Peek::NeedMore);
        assert_eq!(peek(b"\x00\x01garbage"), Peek::Other);
        assert_eq!(peek(b"get / HTTP/1.1"), Peek::Other);
        // A handshake record that is not a ClientHello, or a corrupt one.
        let mut rec = hello(&[sni("a")]);
        rec[5] = 2;
        assert_eq!(peek(&rec), Peek::Other);
        let mut rec = hello(&[sni("a")]);
        rec[8] = 0xff;
        assert_eq!(peek(&rec), Peek::Other);
        // A record longer than TLS allows is not waited for.
        assert_eq!(peek(&[22, 3, 1, 0x40, 0x01]), Peek::Other);
        assert_eq!(peek(&[22, 3, 1, 0x40, 0x00]), Peek::NeedMore);
    }
}

//! The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4 balancer or another proxy
//! puts in front of a TCP connection's bytes to name the client's address. Sans-I/O: [`parse`]
//! reads a header from the first bytes of a connection (or says it needs more), [`encode_v1`] and
//! [`encode_v2`] write one for a backend connection.
//!
//! Parsing is strict (a malformed header closes the connection rather than guessing): version 1
//! is `PROXY TCP4|TCP6 src dst sport dport\r\n` with single spaces, addresses of the named family,
//! ports in decimal without leading zeros, at most 107 bytes; `PROXY UNKNOWN ...\r\n` means "use
//! the connection's own addresses". Version 2 is the 12-byte signature, version 2, command LOCAL
//! (the balancer's own health check: use the connection's addresses) or PROXY, a stream family
//! (TCP over IPv4 or IPv6; UNSPEC and UNIX are taken as LOCAL), an address block of the family's
//! size, and TLVs that must tile the rest exactly.
//!
//! ```text
//!  v1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF     (<= 107 bytes)
//!      "PROXY" SP "UNKNOWN" [anything but CRLF] CRLF
//!  v2: sig(12) | ver_cmd(1) | fam(1) | len(2, big endian) | addresses | TLVs  (16 + len bytes)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header (spec section 2.1), CRLF included.
pub const V1_MAX: usize = 107;

/// The longest version 2 header accepted (the format allows 16 + 65,535 bytes; TLVs beyond this
/// are not worth buffering for).
pub const V2_MAX: usize = 16 + 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address and the address it connected to.
    Proxied {
        /// Where the connection came from.
        source: SocketAddr,
        /// Where it was going.
        destination: SocketAddr,
    },
    /// No client address (v1 `UNKNOWN`, v2 `LOCAL`, or a family without one): the connection's
    /// own addresses stand.
    Local,
}

/// The outcome of [`parse`] on the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A header may still come: more bytes are needed.
    Incomplete,
    /// A complete header of `len` bytes; the connection's own bytes follow it.
    Complete {
        /// What it says.
        header: Header,
        /// Its length.
        len: usize,
    },
}

/// Why the bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes do not begin with either signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 line that breaks the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    MalformedV1(&'static str),
    /// A version 2 header that breaks the format.
    #[error("malformed PROXY v2 header: {0}")]
    MalformedV2(&'static str),
    /// Longer than [`V1_MAX`] or [`V2_MAX`].
    #[error("PROXY header too long")]
    TooLong,
}

/// Whether `input` begins like a header: `Some(true)` for either signature, `Some(false)` when
/// it cannot, `None` when too few bytes tell.
pub fn looks_like_header(input: &[u8]) -> Option<bool> {
    let v1 = b"PROXY ";
    let v1_match = input.iter().zip(v1).all(|(a, b)| a == b);
    let v2_match = input.iter().zip(&V2_SIGNATURE).all(|(a, b)| a == b);
    if input.len() >= v1.len() && v1_match || input.len() >= V2_SIGNATURE.len() && v2_match {
        Some(true)
    } else if v1_match || v2_match {
        None
    } else {
        Some(false)
    }
}

/// Reads a header from the first bytes of a connection.
pub fn parse(input: &[u8]) -> Result<Parse, ProxyError> {
    match looks_like_header(input) {
        None => Ok(Parse::Incomplete),
        Some(false) => Err(ProxyError::Missing),
        Some(true) if input[0] == b'P' => parse_v1(input),
        Some(true) => parse_v2(input),
    }
}

fn parse_v1(input: &[u8]) -> Result<Parse, ProxyError> {
    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
        // A CR may only be the last byte so far (its LF may follow).
        let before_last = &input[..input.len() - 1];
        if input.contains(&b'\n') || before_last.contains(&b'\r') {
            return Err(ProxyError::MalformedV1("a bare CR or LF"));
        }
        if input.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        return Ok(Parse::Incomplete);
    };
    let len = end + 2;
    if input[..end].contains(&b'\n') || input[..end].contains(&b'\r') {
        // The same verdict as on any prefix of it.
        return Err(ProxyError::MalformedV1("a bare CR or LF"));
    }
    if len > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line =
        std::str::from_utf8(&input[..end]).map_err(|_| ProxyError::MalformedV1("not ASCII"))?;
    let mut words = line.split(' ');
    let _proxy = words.next();
    let family = words.next().ok_or(ProxyError::MalformedV1("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(Parse::Complete {
            header: Header::Local,
            len,
        });
    }
    let want_v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::MalformedV1(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut field = || {
        words
            .next()
            .ok_or(ProxyError::MalformedV1("too few fields"))
    };
    let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
    if words.next().is_some() {
        return Err(ProxyError::MalformedV1("too many fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| ProxyError::MalformedV1("an address does not parse"))?;
        if ip.is_ipv6() != want_v6 {
            return Err(ProxyError::MalformedV1("an address of the other family"));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits || (s.len() > 1 && s.starts_with('0')) {
            return Err(ProxyError::MalformedV1(
                "a port is not a decimal without leading zeros",
            ));
        }
        s.parse()
            .map_err(|_| ProxyError::MalformedV1("a port above 65535"))
    };
    Ok(Parse::Complete {
        header: Header::Proxied {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        len,
    })
}

fn parse_v2(input: &[u8]) -> Result<Parse, ProxyError> {
    if input.len() < 16 {
        return Ok(Parse::Incomplete);
    }
    let (ver_cmd, fam) = (input[12], input[13]);
    let body = u16::from_be_bytes([input[14], input[15]]) as usize;
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::MalformedV2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(ProxyError::MalformedV2(
                "command is neither LOCAL nor PROXY",
            ))
        }
    };
    let len = 16 + body;
    if len > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    let addr_len = match fam {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        0x12 | 0x22 | 0x32 => {
            return Err(ProxyError::MalformedV2(
                "a datagram family on a stream connection",
            ))
        }
        _ => {
            return Err(ProxyError::MalformedV2(
                "unknown address family or transport",
            ))
        }
    };
    if body < addr_len {
        return Err(ProxyError::MalformedV2("shorter than its address block"));
    }
    if input.len() < len {
        return Ok(Parse::Incomplete);
    }
    let block = &input[16..len];
    check_tlvs(&block[addr_len..])?;
    let header = if local {
        Header::Local
    } else {
        match fam {
            0x11 => {
                let ip = |o: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        block[o],
                        block[o + 1],
                        block[o + 2],
                        block[o + 3],
                    ))
                };
                let port = |o: usize| u16::from_be_bytes([block[o], block[o + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            0x21 => {
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&block[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([block[o], block[o + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            // UNSPEC and UNIX name no TCP client: the connection's own addresses stand.
            _ => Header::Local,
        }
    };
    Ok(Parse::Complete { header, len })
}

/// TLVs (type, 16-bit length, value) must tile `tlvs` exactly.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(ProxyError::MalformedV2("a truncated TLV"));
        }
        let n = u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize;
        if tlvs.len() < 3 + n {
            return Err(ProxyError::MalformedV2("a TLV longer than the header"));
        }
        tlvs = &tlvs[3 + n..];
    }
    Ok(())
}

/// Appends a version 1 header for a connection from `source` to `destination` (`UNKNOWN` if
/// their families differ).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    let family = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => {
            out.extend_from_slice(b"PROXY UNKNOWN\r\n");
            return;
        }
    };
    let _ = write!(
        out,
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
}

/// Appends a version 2 header (command PROXY, TCP, no TLVs) for a connection from `source` to
/// `destination` (`LOCAL` if their families differ).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            parse(h),
            Ok(Parse::Complete {
                header: Header::Proxied {
                    source: a("192.0.2.1:56324"),
                    destination: a("198.51.100.2:443")
                },
                len: 45
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
        assert!(matches!(
            parse(h),
            Ok(Parse::Complete { header: Header::Proxied { source, .. }, len }) if source == a("[2001:db8::1]:65535") && len == h.len()
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Parse::Complete {
                header: Header::Local,
                len: 24
            })
        );
    }

    #[test]
    fn v1_is_incomplete_until_its_crlf_and_strict() {
        assert_eq!(parse(b"PRO"), Ok(Parse::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parse::Incomplete));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::MalformedV1(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        // Found by the fuzz target: a bare LF inside an UNKNOWN line is malformed whether or
        // not its CRLF has arrived.
        let lf = b"PROXY UNKNOWN NK\n\0Nx\r\n";
        assert!(matches!(parse(lf), Err(ProxyError::MalformedV1(_))));
        assert!(matches!(parse(&lf[..18]), Err(ProxyError::MalformedV1(_))));
        assert!(matches!(
            parse(b"PROXY UNKNOWN \rx"),
            Err(ProxyError::MalformedV1(_))
        ));
        assert_eq!(parse(b"PROXY UNKNOWN \r"), Ok(Parse::Incomplete));
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_round_trips_and_is_strict() {
        for (s, d) in [
            (a("10.1.2.3:4567"), a("10.0.0.1:80")),
            (a("[2001:db8::7]:1"), a("[::1]:443")),
        ] {
            let mut out = Vec::new();
            encode_v2(s, d, &mut out);
            let n = out.len();
            out.extend_from_slice(b"GET");
            assert_eq!(
                parse(&out),
                Ok(Parse::Complete {
                    header: Header::Proxied {
                        source: s,
                        destination: d
                    },
                    len: n
                })
            );
            for cut in 0..n {
                assert_eq!(parse(&out[..cut]), Ok(Parse::Incomplete), "cut at {cut}");
            }
            let mut v1 = Vec::new();
            encode_v1(s, d, &mut v1);
            assert!(
                matches!(parse(&v1), Ok(Parse::Complete { header: Header::Proxied { source, destination }, .. }) if source == s && destination == d)
            );
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Ok(Parse::Complete {
                header: Header::Local,
                len: 16
            })
        );
        let base = {
            let mut v = Vec::new();
            encode_v2(a("1.2.3.4:5"), a("6.7.8.9:10"), &mut v);
            v
        };
        let with = |i: usize, b: u8| {
            let mut v = base.clone();
            v[i] = b;
            v
        };
        assert!(matches!(
            parse(&with(12, 0x11)),
            Err(ProxyError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&with(12, 0x22)),
            Err(ProxyError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&with(13, 0x12)),
            Err(ProxyError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&with(13, 0x41)),
            Err(ProxyError::MalformedV2(_))
        ));
        assert!(matches!(
            parse(&with(15, 4)),
            Err(ProxyError::MalformedV2(_))
        ));
        // A TLV that does not fit the length.
        let mut tlv = base.clone();
        tlv[15] = 12 + 4;
        tlv.extend_from_slice(&[0x01, 0x00, 0x05, b'h']);
        assert!(matches!(parse(&tlv), Err(ProxyError::MalformedV2(_))));
        let mut ok = base.clone();
        ok[15] = 12 + 5;
        ok.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        assert!(matches!(parse(&ok), Ok(Parse::Complete { len: 33, .. })));
        let mut big = base.clone();
        big[14] = 0x20;
        assert_eq!(parse(&big), Err(ProxyError::TooLong));
    }
}

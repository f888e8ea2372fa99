//! permessage-deflate negotiation (RFC 7692 section 7.1), server side: which of the client's
//! offers to accept, with which parameters, and the response header that says so.
//!
//! The server never keeps compressor context between messages: every accepted offer is answered
//! with `server_no_context_takeover`, so a shard shares its compressors. The client keeps context
//! unless it offered `client_no_context_takeover` (then the response includes it too); where it
//! keeps context, the server must keep the last 2^client_max_window_bits bytes of plaintext, so a
//! client that allows it (`client_max_window_bits` in its offer) is limited to the configured
//! bits. An offer that asks for a server window of 8 bits is declined (the raw deflate of zlib
//! does not write 8-bit windows) and the next offer is tried, as is an offer with an unknown,
//! repeated or malformed parameter (section 7.1: a server must decline such an offer).

/// What the server is willing to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The largest window the server compresses with (9-15).
    pub server_max_window_bits: u8,
    /// The largest window asked of a client that allows a limit (8-15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// The parameters agreed for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The server's window bits (9-15): what it compresses with.
    pub server_max_window_bits: u8,
    /// The client's window bits (8-15): how much plaintext the server keeps when the client keeps
    /// context.
    pub client_max_window_bits: u8,
    /// The client resets its compressor per message (the server keeps no window).
    pub client_no_context_takeover: bool,
    /// The response names `server_max_window_bits` (the offer asked, or the server limits it).
    announce_server_bits: bool,
    /// The response names `client_max_window_bits` (the offer allowed it).
    announce_client_bits: bool,
}

/// One parsed `permessage-deflate` offer.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: Option<&[u8]>) -> Option<u8> {
    let v = value?;
    if v.is_empty() || v.len() > 2 || v[0] == b'0' || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u8 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// Parses the parameters of one offer (after its name); `None` if the offer must be declined.
fn parse_offer<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<Offer> {
    let mut o = Offer::default();
    for p in params {
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(i) => {
                let v = p[i + 1..].trim_ascii();
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                (p[..i].trim_ascii(), Some(v))
            }
            None => (p.trim_ascii(), None),
        };
        match name.to_ascii_lowercase().as_slice() {
            b"server_no_context_takeover" if value.is_none() && !o.server_no_context_takeover => {
                o.server_no_context_takeover = true
            }
            b"client_no_context_takeover" if value.is_none() && !o.client_no_context_takeover => {
                o.client_no_context_takeover = true
            }
            b"server_max_window_bits" if o.server_max_window_bits.is_none() => {
                o.server_max_window_bits = Some(window_bits(value)?)
            }
            b"client_max_window_bits" if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(window_bits(value)?),
                })
            }
            _ => return None,
        }
    }
    Some(o)
}

/// The first acceptable `permessage-deflate` offer among the `Sec-WebSocket-Extensions` field
/// values, and what is agreed for it; `None`: no compression.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Option<Agreed> {
    for value in values {
        for offer in value.split(|&b| b == b',') {
            let mut parts = offer.split(|&b| b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            if !name.eq_ignore_ascii_case(b"permessage-deflate") {
                continue;
            }
            let Some(o) = parse_offer(parts) else {
                continue;
            };
            let server_bits = match o.server_max_window_bits {
                Some(8) => continue,
                Some(n) => n.min(config.server_max_window_bits),
                None => config.server_max_window_bits,
            };
            let client_bits = match o.client_max_window_bits {
                Some(offered) => offered.unwrap_or(15).min(config.client_max_window_bits),
                None => 15,
            };
            return Some(Agreed {
                server_max_window_bits: server_bits,
                client_max_window_bits: client_bits,
                client_no_context_takeover: o.client_no_context_takeover,
                announce_server_bits: o.server_max_window_bits.is_some() || server_bits < 15,
                announce_client_bits: o.client_max_window_bits.is_some(),
            });
        }
    }
    None
}

/// Appends the `Sec-WebSocket-Extensions` response field for `a`.
pub fn write_response(out: &mut Vec<u8>, a: &Agreed) {
    out.extend_from_slice(
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover",
    );
    if a.client_no_context_takeover {
        out.extend_from_slice(b"; client_no_context_takeover");
    }
    if a.announce_server_bits {
        out.extend_from_slice(
            format!("; server_max_window_bits={}", a.server_max_window_bits).as_bytes(),
        );
    }
    if a.announce_client_bits {
        out.extend_from_slice(
            format!("; client_max_window_bits={}", a.client_max_window_bits).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// The bytes a sync flush ends a message's compressed data with, which the sender removes and
/// the receiver appends back before inflating (section 7.2.1).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(offer: &str) -> Option<String> {
        let a = negotiate(
            [offer.as_bytes()],
            &DeflateConfig {
                server_max_window_bits: 15,
                client_max_window_bits: 12,
            },
        )?;
        let mut out = Vec::new();
        write_response(&mut out, &a);
        Some(
            String::from_utf8(out)
                .unwrap()
                .trim_end()
                .trim_start_matches("Sec-WebSocket-Extensions: ")
                .to_string(),
        )
    }

    #[test]
    fn offers_are_answered_per_rfc_7692() {
        let base = "permessage-deflate; server_no_context_takeover";
        assert_eq!(agree("permessage-deflate").as_deref(), Some(base));
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits").as_deref(),
            Some(&*format!("{base}; client_max_window_bits=12"))
        );
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits=9; client_no_context_takeover")
                .as_deref(),
            Some(&*format!(
                "{base}; client_no_context_takeover; client_max_window_bits=9"
            ))
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=10").as_deref(),
            Some(&*format!("{base}; server_max_window_bits=10"))
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=\"11\"; server_no_context_takeover")
                .as_deref(),
            Some(&*format!("{base}; server_max_window_bits=11"))
        );
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; foo",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(agree(bad), None, "{bad}");
        }
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
    }
}

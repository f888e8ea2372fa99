//! The opening handshake, server side (RFC 6455 section 4.2): is an HTTP/1.1 request a valid
//! WebSocket upgrade, and the 101 that accepts it.
//!
//! A request is an upgrade when it is `GET` over HTTP/1.1 with `Connection: upgrade` and an
//! `Upgrade` field listing `websocket`. A valid one also carries `Sec-WebSocket-Version: 13`
//! (else 426 with the version we speak, section 4.4) and a `Sec-WebSocket-Key` that is the
//! base64 of 16 bytes (else 400); it has no body.

use super::super::h1::{BodyKind, Method, RequestHead, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID appended to the key (section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused, each with its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a WebSocket upgrade at all (426 Upgrade Required, naming websocket).
    #[error("not a WebSocket upgrade")]
    NotUpgrade,
    /// An upgrade with a method other than GET (405).
    #[error("a WebSocket upgrade must be GET")]
    NotGet,
    /// An upgrade over HTTP/1.0 (400).
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    /// A version other than 13, or none (426 with `Sec-WebSocket-Version: 13`).
    #[error("Sec-WebSocket-Version is not 13")]
    Version,
    /// A missing key, or one that is not the base64 of 16 bytes (400).
    #[error("Sec-WebSocket-Key is missing or not 16 bytes in base64")]
    Key,
    /// The request has a body (400).
    #[error("a WebSocket upgrade with a body")]
    Body,
}

impl HandshakeError {
    /// The status to answer with.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::NotUpgrade | HandshakeError::Version => 426,
            HandshakeError::NotGet => 405,
            HandshakeError::NotHttp11 | HandshakeError::Key | HandshakeError::Body => 400,
        }
    }

    /// The name used in metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "not_upgrade",
            HandshakeError::NotGet => "not_get",
            HandshakeError::NotHttp11 => "not_http11",
            HandshakeError::Version => "version",
            HandshakeError::Key => "key",
            HandshakeError::Body => "body",
        }
    }
}

/// Whether a comma-separated field value lists `token` (case-insensitively).
fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Checks an upgrade request and returns its `Sec-WebSocket-Accept` value.
pub fn accept(head: &RequestHead<'_, '_>) -> Result<[u8; 28], HandshakeError> {
    let websocket = head.upgrade
        && head
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade") && lists(h.value, b"websocket"));
    if !websocket {
        return Err(HandshakeError::NotUpgrade);
    }
    if head.method != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if head.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    if !matches!(head.body, BodyKind::None | BodyKind::Length(0)) {
        return Err(HandshakeError::Body);
    }
    if head.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = head
        .header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or(HandshakeError::Key)?;
    let mut raw = [0u8; 18];
    match STANDARD.decode_slice(key, &mut raw) {
        Ok(16) if key.len() == 24 => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(accept_for_key(key))
}

/// `base64(SHA-1(key + GUID))` (section 4.2.2, item 5.4).
pub fn accept_for_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    let mut out = [0u8; 28];
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes are 28 in base64");
    debug_assert_eq!(n, 28);
    out
}

/// A client's `Sec-WebSocket-Key` for 16 nonce bytes (base64: 24 characters), as a proxy
/// that translates an RFC 8441 extended CONNECT into an HTTP/1.1 upgrade sends it.
pub fn key_for_nonce(nonce: &[u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    let n = STANDARD
        .encode_slice(nonce, &mut out)
        .expect("16 bytes are 24 in base64");
    debug_assert_eq!(n, 24);
    out
}

/// Appends the 101's status line and fields without the empty line that ends the head, so that
/// the caller can add fields (`Sec-WebSocket-Extensions`) and then end it.
pub fn write_accept_head(out: &mut Vec<u8>, accept: &[u8; 28]) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{parse_request, Limits};
    use std::mem::MaybeUninit;

    fn check(request: &str) -> Result<[u8; 28], HandshakeError> {
        let mut headers = [const { MaybeUninit::uninit() }; 32];
        let head = parse_request(request.as_bytes(), &Limits::default(), &mut headers)
            .unwrap()
            .unwrap();
        accept(&head)
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn the_rfc_example_is_accepted_with_its_accept_value() {
        // RFC 6455 section 1.3.
        assert_eq!(&check(GOOD).unwrap(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut out = Vec::new();
        write_accept_head(&mut out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(out.ends_with(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn tokens_are_matched_in_lists_and_any_case() {
        let r = GOOD
            .replace("Upgrade: websocket", "Upgrade: foo, WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, upgrade");
        assert!(check(&r).is_ok());
    }

    #[test]
    fn each_broken_rule_gets_its_status() {
        let cases = [
            (
                GOOD.replace("Upgrade: websocket\r\n", ""),
                HandshakeError::NotUpgrade,
                426,
            ),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::NotUpgrade,
                426,
            ),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::NotUpgrade,
                426,
            ),
            (GOOD.replace("GET", "POST"), HandshakeError::NotGet, 405),
            (
                GOOD.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::NotHttp11,
                400,
            ),
            (
                GOOD.replace("Version: 13", "Version: 8"),
                HandshakeError::Version,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::Version,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::Key,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::Key,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ!!"),
                HandshakeError::Key,
                400,
            ),
            (
                GOOD.replace("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\n"),
                HandshakeError::Body,
                400,
            ),
        ];
        for (request, want, status) in cases {
            assert_eq!(check(&request), Err(want), "{request}");
            assert_eq!(want.status(), status);
        }
    }
}

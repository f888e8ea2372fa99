//! HTTP/1.1 encoding into an output buffer: request and status lines, fields and chunked framing
//! (RFC 9112 sections 4, 5 and 7.1). No validation: callers pass names and values that came
//! through a parser (or the proxy's own), already free of CR and LF.

use super::status::reason_phrase;

/// The last chunk and the empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes `HTTP/1.1 <status> <reason>\r\n` with the registered reason (`status` clamped to
/// three digits).
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    write_status_line_with(
        out,
        status,
        reason_phrase(status.clamp(100, 999)).as_bytes(),
    );
}

/// Writes `HTTP/1.1 <status> <reason>\r\n` with the given reason (a backend's own).
pub fn write_status_line_with(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    let s = status.clamp(100, 999);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Writes `<method> <target> HTTP/1.1\r\n`.
pub fn write_request_line(out: &mut Vec<u8>, method: &[u8], target: &[u8]) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Writes `name: value\r\n`.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `data` as one chunk (nothing for empty data: an empty chunk would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut i = digits.len();
    while n > 0 || i == digits.len() {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Bytes a chunk of `len` payload bytes takes with its framing.
pub fn chunk_overhead(len: usize) -> usize {
    let mut digits = 1;
    let mut n = len >> 4;
    while n > 0 {
        digits += 1;
        n >>= 4;
    }
    digits + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{BodyDecoder, BodyKind};

    #[test]
    fn status_lines_carry_the_reason() {
        let mut out = Vec::new();
        write_status_line(&mut out, 200);
        write_status_line(&mut out, 404);
        write_status_line(&mut out, 599);
        write_status_line_with(&mut out, 200, b"Fine");
        write_request_line(&mut out, b"GET", b"/a?b");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nHTTP/1.1 404 Not Found\r\nHTTP/1.1 599 \r\nHTTP/1.1 200 Fine\r\nGET /a?b HTTP/1.1\r\n"
        );
    }

    #[test]
    fn chunks_decode_back_to_the_payload() {
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        for part in [
            &payload[..1],
            &payload[1..16],
            &payload[16..17],
            &payload[17..],
        ] {
            let before = out.len();
            write_chunk(&mut out, part);
            assert_eq!(out.len() - before, part.len() + chunk_overhead(part.len()));
        }
        write_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert!(out.starts_with(b"1\r\n\x00\r\nf\r\n"));
        let mut d = BodyDecoder::new(BodyKind::Chunked, u64::MAX);
        let mut got = Vec::new();
        let mut at = 0;
        loop {
            let step = d.decode(&out[at..]).expect("valid chunks");
            got.extend_from_slice(&out[at..][step.payload.clone()]);
            at += step.consumed;
            if step.done {
                break;
            }
        }
        assert_eq!(at, out.len());
        assert_eq!(got, payload);
    }
}

//! Malformed and unsupported requests: each is answered with the right status and
//! `Connection: close`, then the connection is closed. Also checks that the server keeps serving
//! new connections afterwards and counts the errors in `coreplex_parse_errors_total`.

use crate::harness::{config, get, metric, parse_responses, raw, Conn, Server};
use std::time::Duration;

/// Sends `req` to a fresh server with `listener_extra` and checks status, `Connection: close`
/// and EOF.
fn reject_with(listener_extra: &str, req: &[u8], status: u16) {
    let s = Server::start(&config("", listener_extra));
    let (bytes, closed) = raw(s.addr(), req, Duration::from_secs(3));
    let text = String::from_utf8_lossy(&bytes);
    let rs = parse_responses(&bytes, &[]);
    assert!(
        !rs.is_empty(),
        "no response to {:?}; got {text:?}",
        String::from_utf8_lossy(req)
    );
    assert_eq!(
        rs[0].status,
        status,
        "request {:?}; got {text:?}",
        String::from_utf8_lossy(req)
    );
    assert!(
        rs[0].head.starts_with("HTTP/1.1 "),
        "status line: {}",
        rs[0].head
    );
    assert_eq!(rs[0].header("connection"), Some("close"), "{}", rs[0].head);
    assert_eq!(rs.len(), 1, "more than one response: {text:?}");
    assert!(closed, "connection not closed after {status}: {text:?}");
}

fn reject(req: &[u8], status: u16) {
    reject_with("", req, status);
}

macro_rules! rejects {
    ($($name:ident: $req:expr => $status:expr;)*) => {
        $(
            #[test]
            fn $name() {
                reject($req, $status);
            }
        )*
    };
}

rejects! {
    content_length_with_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => 400;
    duplicate_content_length:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" => 400;
    negative_content_length:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" => 400;
    content_length_overflow:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n" => 400;
    content_length_list:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc" => 400;
    bad_chunk_size:
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" => 400;
    missing_crlf_after_chunk_data:
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n" => 400;
    obs_fold:
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n  two\r\n\r\n" => 400;
    bare_lf:
        b"GET / HTTP/1.1\nHost: a\n\n" => 400;
    bare_cr:
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n" => 400;
    missing_host_in_http11:
        b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n" => 400;
    two_host_headers:
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" => 400;
    http2_version:
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n" => 505;
    http3_version:
        b"GET / HTTP/3.0\r\nHost: a\r\n\r\n" => 505;
    gzip_chunked_transfer_coding:
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" => 501;
    transfer_encoding_in_http10:
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" => 400;
    unknown_expectation:
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: something-else\r\n\r\nabc" => 417;
    double_space_in_request_line:
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n" => 400;
    nul_in_header_value:
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n" => 400;
}

const HUGE_CHUNK: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n";

#[test]
fn chunk_size_overflow() {
    // With max_body at u64::MAX only the 17th significant hex digit can fail: an overflow, 400.
    reject_with(
        "limits = { max_body = \"18446744073709551615\" }",
        HUGE_CHUNK,
        400,
    );
}

#[test]
fn chunk_size_above_max_body() {
    // With the default 1 MiB max_body the same size line is refused as too large first.
    reject(HUGE_CHUNK, 413);
}

#[test]
fn request_line_too_long() {
    let mut req = b"GET /".to_vec();
    req.extend_from_slice(&[b'a'; 9000]);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    reject(&req, 414);
}

#[test]
fn header_section_too_large() {
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..20 {
        req.extend_from_slice(format!("X-Fill-{i}: ").as_bytes());
        req.extend_from_slice(&[b'v'; 2000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    assert!(req.len() > 32 * 1024);
    reject(&req, 431);
}

#[test]
fn too_many_headers() {
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..100 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    reject(&req, 431); // 101 header lines with Host
}

#[test]
fn content_length_above_max_body() {
    reject_with(
        "limits = { max_body = \"1KiB\" }",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n",
        413,
    );
}

#[test]
fn server_survives_errors_and_counts_them() {
    let s = Server::start(&config("", ""));
    let admin = s.admin();
    let cl_te = "coreplex_parse_errors_total{kind=\"content_length_with_transfer_encoding\"}";
    let bare_lf = "coreplex_parse_errors_total{kind=\"bare_lf\"}";
    let before = (metric(admin, cl_te), metric(admin, bare_lf));
    for req in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        &b"GET / HTTP/1.1\nHost: a\n\n"[..],
    ] {
        let (bytes, closed) = raw(s.addr(), req, Duration::from_secs(3));
        assert!(
            bytes.starts_with(b"HTTP/1.1 400 "),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(closed);
    }
    for _ in 0..3 {
        let mut c = Conn::connect(s.addr());
        c.send(&get("/"));
        let r = c.response();
        assert_eq!(
            r.status, 200,
            "server stopped serving after malformed requests"
        );
    }
    let after = (metric(admin, cl_te), metric(admin, bare_lf));
    assert_eq!(after.0 - before.0, 1.0, "{cl_te}");
    assert_eq!(after.1 - before.1, 1.0, "{bare_lf}");
}

//! HTTP/1.1 behaviour on well-formed traffic: connection reuse (curl), 404 with keep-alive, HEAD,
//! pipelining order, HTTP/1.0 persistence rules, `Connection: close`, Content-Length and chunked
//! request bodies, `Expect: 100-continue`, requests split into many writes, absolute-form targets.

use crate::harness::{config, curl, get, parse_responses, raw, Conn, Server};
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

fn server() -> Server {
    Server::start(&config("", ""))
}

#[test]
fn curl_reuses_the_connection_for_two_urls() {
    let s = server();
    let a = s.addr();
    let out = curl(&["-sv", &format!("http://{a}/"), &format!("http://{a}/api/x")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(stdout, "Hello, World!api", "bodies; stderr:\n{stderr}");
    assert!(
        stderr.contains("Re-using existing connection"),
        "curl did not reuse the connection:\n{stderr}"
    );
    assert!(stderr.contains("< HTTP/1.1 200 OK"), "{stderr}");
    assert!(stderr.contains("< HTTP/1.1 201"), "{stderr}");
}

#[test]
fn not_found_keeps_the_connection_alive() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(&get("/nope"));
    let r = c.response();
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(r.header("connection"), None, "{}", r.head);
    c.send(&get("/"));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn head_has_headers_and_no_body() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    // HEAD then GET pipelined: the GET's status line must follow the HEAD's head directly.
    let mut req = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    req.extend_from_slice(&get("/api"));
    c.send(&req);
    let r = c.response_within(T, true);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-length"), Some("13"), "{}", r.head);
    assert_eq!(r.header("content-type"), Some("text/plain"), "{}", r.head);
    let next = c.response();
    assert_eq!(
        (next.status, next.text().as_str()),
        (201, "api"),
        "HEAD response carried a body? next: {}",
        next.head
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = server();
    let mut req = Vec::new();
    for i in 0..16 {
        req.extend_from_slice(&get(if i % 2 == 0 { "/" } else { "/api" }));
    }
    let mut c = Conn::connect(s.addr());
    c.send(&req);
    for i in 0..16 {
        let r = c.response();
        if i % 2 == 0 {
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "Hello, World!"),
                "#{i}"
            );
        } else {
            assert_eq!((r.status, r.text().as_str()), (201, "api"), "#{i}");
        }
    }
    assert!(c.pending().is_empty(), "extra bytes: {:?}", c.pending());
}

#[test]
fn http10_without_keep_alive_closes() {
    let s = server();
    let (bytes, closed) = raw(s.addr(), b"GET / HTTP/1.0\r\n\r\n", T);
    let rs = parse_responses(&bytes, &[]);
    assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), "Hello, World!");
    assert_ne!(
        rs[0].header("connection").map(str::to_ascii_lowercase),
        Some("keep-alive".into())
    );
    assert!(closed, "HTTP/1.0 connection without keep-alive stayed open");
}

#[test]
fn http10_keep_alive_stays_open() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    c.send(req);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection").map(str::to_ascii_lowercase),
        Some("keep-alive".into()),
        "{}",
        r.head
    );
    let (closed, extra) = c.expect_eof(Duration::from_millis(300));
    assert!(
        !closed && extra.is_empty(),
        "connection closed after a 1.0 keep-alive response"
    );
    c.send(req);
    let r = c.response();
    assert_eq!(
        r.status, 200,
        "second request on the 1.0 keep-alive connection"
    );
}

#[test]
fn connection_close_is_honoured() {
    let s = server();
    let (bytes, closed) = raw(
        s.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        T,
    );
    let rs = parse_responses(&bytes, &[]);
    assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].header("connection"), Some("close"), "{}", rs[0].head);
    assert!(closed, "no EOF after Connection: close");
}

#[test]
fn content_length_body_is_consumed() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world".to_vec();
    req.extend_from_slice(&get("/api"));
    c.send(&req);
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (201, "api"),
        "pipelined request after a body"
    );
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_consumed() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n\
        6;name=\"quoted value\";flag\r\n world\r\n\
        A\r\n0123456789\r\n\
        0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n"
        .to_vec();
    req.extend_from_slice(&get("/api"));
    c.send(&req);
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (201, "api"),
        "pipelined request after chunked body"
    );
}

#[test]
fn expect_100_continue() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100, "{}", interim.head);
    assert!(
        interim.head.starts_with("HTTP/1.1 100 Continue"),
        "{}",
        interim.head
    );
    assert!(
        c.pending().is_empty(),
        "final response before the body: {:?}",
        c.pending()
    );
    c.send(b"hello");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
}

#[test]
fn request_split_into_30_writes() {
    let s = server();
    let req = b"GET / HTTP/1.1\r\nHost: abcd\r\n\r\n";
    assert_eq!(req.len(), 30);
    let mut c = Conn::connect(s.addr());
    for b in req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
}

#[test]
fn absolute_form_target_routes_by_path() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"GET http://x/api HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (201, "api"), "{}", r.head);
}

#[test]
fn content_length_zero_is_answered_at_once() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /api HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response_within(Duration::from_secs(3), false);
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let r = c.response_within(Duration::from_secs(3), false);
    assert_eq!((r.status, r.text().as_str()), (201, "api"));
}

#[test]
fn deep_pipeline_is_backpressured_not_dropped() {
    // 20,000 requests in one write produce ~2.4 MB of responses: far more than the 256 KiB of
    // unsent output at which coreplex stops reading. The client writes everything before reading;
    // every response must still arrive, in order, and the connection stay open.
    const N: usize = 20_000;
    let s = server();
    let stream = std::net::TcpStream::connect(s.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut batch = Vec::new();
    for _ in 0..N {
        batch.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    let w = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&batch).unwrap();
    });
    let want = N * b"Hello, World!".len();
    let mut got = Vec::new();
    let mut reader = stream;
    let mut buf = vec![0u8; 1 << 16];
    let mut bodies = 0;
    while bodies < want {
        use std::io::Read;
        let n = reader.read(&mut buf).expect("read responses");
        assert!(n > 0, "closed after {} responses", bodies / 13);
        got.extend_from_slice(&buf[..n]);
        bodies = got.windows(13).filter(|w| w == b"Hello, World!").count() * 13;
    }
    w.join().unwrap();
    let count = got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert_eq!(count, N);
}

#[test]
fn half_close_after_a_deep_pipeline_gets_every_response() {
    // The client sends 3000 requests and shuts down its side at once: the requests waiting behind
    // output backpressure must still be answered before the server closes.
    const N: usize = 3000;
    let s = server();
    let stream = std::net::TcpStream::connect(s.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    {
        use std::io::Write;
        w.write_all(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(N))
            .unwrap();
    }
    w.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    {
        use std::io::Read;
        let mut r = stream;
        r.read_to_end(&mut got).expect("read to EOF");
    }
    let count = got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert_eq!(count, N, "responses before EOF");
}

#[test]
fn options_asterisk_is_answered_and_the_connection_kept() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    );
    assert_eq!(r.header("content-length"), Some("0"));
    c.send(&get("/"));
    assert_eq!(c.response().status, 200, "kept alive");
}

#[test]
fn connect_without_tunnels_is_501_then_close() {
    let s = server();
    let (bytes, closed) = raw(
        s.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01",
        T,
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 501 "), "{text}");
    assert!(closed);
}

#[test]
fn an_empty_host_with_an_origin_form_target_is_served() {
    // RFC 9112 section 3.2: the Host a client sends for a target URI without an authority.
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn a_later_http1_minor_version_is_served_as_http11() {
    // RFC 9112 section 2.3: HTTP/1.2 is answered as HTTP/1.1 (keep-alive, HTTP/1.1 semantics).
    let s = server();
    let mut c = Conn::connect(s.addr());
    c.send(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!");
    c.send(b"GET /api HTTP/1.9\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 201, "kept alive");
    // Other majors stay unsupported.
    let (bytes, _) = raw(s.addr(), b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", T);
    assert!(
        bytes.starts_with(b"HTTP/1.1 505 "),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
}

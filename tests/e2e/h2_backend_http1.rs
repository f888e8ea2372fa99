//! HTTP/1.1 clients proxied to h2 backends (`protocol = "h2"`): their requests travel as
//! streams of a few multiplexed backend connections. The backend is the independent Python
//! `h2` one (`tests/e2e/tools/h2_backend.py`, which counts its stream-limit violations); the
//! clients are curl, h2load in HTTP/1.1 mode and raw sockets.

use crate::h2_backend::H2Backend;
use crate::harness::{curl, metric_in, metrics_text, Server};
use crate::proxy::{closed_port, proxy_config, srv};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A plaintext HTTP/1.1 listener proxying every path to `servers` over h2.
fn h1_to_h2(servers: &[String], extra: &str) -> String {
    proxy_config(servers, &format!("protocol = \"h2\"\n{extra}"), "")
}

fn curl_text(args: &[&str]) -> String {
    let o = curl(&[&["-sS", "--http1.1"][..], args].concat());
    assert!(
        o.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sends `request` on a new connection and reads until the server closes it.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http1_requests_reach_an_h2_backend_with_their_fields_and_bodies() {
    let b = H2Backend::start(&[]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    let base = format!("http://{}", s.addr());
    // The request as the backend got it: pseudo-fields from the request line and Host,
    // hop-by-hop fields (and those Connection names) gone, forwarding fields added.
    let echo = curl_text(&[
        "-H",
        "X-Custom: 1",
        "-H",
        "Connection: x-hop",
        "-H",
        "X-Hop: gone",
        &format!("{base}/echo?x=1"),
    ]);
    assert!(echo.contains(":method: GET\n"), "{echo}");
    assert!(echo.contains(":path: /echo?x=1\n"), "{echo}");
    assert!(echo.contains(":scheme: http\n"), "{echo}");
    assert!(
        echo.contains(&format!(":authority: {}\n", s.addr())),
        "{echo}"
    );
    assert!(echo.contains("x-custom: 1\n"), "{echo}");
    assert!(echo.contains("x-forwarded-for: 127.0.0.1\n"), "{echo}");
    assert!(
        !echo.contains("x-hop") && !echo.contains("connection"),
        "{echo}"
    );
    // Bodies with a length, chunked, and behind Expect: 100-continue.
    let body = "x".repeat(300_000);
    let path = std::env::temp_dir().join(format!("coreplex-h1h2-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let file = format!("@{}", path.display());
    let upload = format!("{base}/upload");
    assert_eq!(curl_text(&["--data-binary", &file, &upload]), "300000");
    let chunked = curl_text(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &file,
        &upload,
    ]);
    assert_eq!(chunked, "300000");
    let expect = curl(&[
        "-sS",
        "--http1.1",
        "-v",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &file,
        &upload,
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(String::from_utf8_lossy(&expect.stdout), "300000");
    assert!(
        String::from_utf8_lossy(&expect.stderr).contains("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&expect.stderr)
    );
    // A response with a length keeps it; one without is chunked for the HTTP/1.1 client.
    let head = curl_text(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{base}/bytes/200000"),
    ]);
    assert!(head.contains("content-length: 200000\r\n"), "{head}");
    assert!(head.contains("server: h2-backend\r\n"), "{head}");
    let head = curl_text(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{base}/nolength/70000"),
    ]);
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let got = curl_text(&[&format!("{base}/nolength/70000")]);
    assert_eq!(got.len(), 70_000);
    assert!(got.bytes().all(|c| c == b'n'));
    // HEAD: the length, no body.
    let head = curl_text(&["-I", &format!("{base}/bytes/5000")]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 5000\r\n"), "{head}");
    // Several requests on one client connection (keep-alive), one backend connection.
    let many = curl_text(&[
        "-w",
        "%{num_connects}\n",
        &format!("{base}/a"),
        &format!("{base}/b"),
        &format!("{base}/c"),
    ]);
    assert_eq!(many, format!("h2 ok /a1\nh2 ok /b0\nh2 ok /c0\n"), "{many}");
    let text = metrics_text(s.admin());
    assert_eq!(
        metric_in(&text, "coreplex_backend_h2_sessions_total{backend=\"app\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn an_http10_client_gets_a_body_without_length_delimited_by_the_close() {
    let b = H2Backend::start(&[]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], ""));
    let out = raw(s.addr(), b"GET /nolength/5000 HTTP/1.0\r\nHost: a\r\n\r\n");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    let head = format!("{head}\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body.len(), 5000, "{head}\n{body:?}");
    // HTTP/1.0 with keep-alive and a length: the connection stays for the next request.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = b"GET /bytes/10 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    let mut got = Vec::new();
    for _ in 0..2 {
        c.write_all(req).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"bbbbbbbbbb") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(
        text.matches("connection: keep-alive\r\n").count(),
        2,
        "{text}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = H2Backend::start(&[]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], ""));
    let out = raw(
        s.addr(),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let one = out.find("h2 ok /one").expect("first answer");
    let two = out.find("\r\n\r\n5").expect("second answer");
    let three = out.find("h2 ok /three").expect("third answer");
    assert!(one < two && two < three, "{out}");
}

#[test]
fn many_http1_clients_share_a_few_h2_connections_within_the_stream_limit() {
    let b = H2Backend::start(&["--max-streams", "3"]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    // 30 HTTP/1.1 connections, each waiting 20 ms per request: about 30 streams at once.
    let o = Command::new("h2load")
        .args([
            "--h1",
            "-n",
            "1500",
            "-c",
            "30",
            &format!("http://{}/slow/20", s.addr()),
        ])
        .output()
        .expect("h2load runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("1500 succeeded, 0 failed"), "{out}");
    let st = b.stats();
    assert!(st.peak <= 3, "{st:?}");
    assert_eq!(st.violations, 0, "{st:?}");
    // ceil(30 / 3) = 10 connections carry them (a few more while the load ramps up), not 30.
    assert!(
        st.connections - 1 <= 14,
        "{} backend connections for 30 clients: {st:?}",
        st.connections - 1
    );
    let text = metrics_text(s.admin());
    let reused = metric_in(
        &text,
        &format!(
            "coreplex_backend_connections_reused_total{{backend=\"app\",server=\"{}\"}}",
            b.addr
        ),
    )
    .unwrap_or(0.0);
    assert!(reused >= 1400.0, "reused {reused}: {text}");
}

#[test]
fn a_backend_goaway_mid_load_loses_no_http1_request() {
    let b = H2Backend::start(&["--goaway-after", "40"]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    let o = Command::new("h2load")
        .args([
            "--h1",
            "-n",
            "600",
            "-c",
            "10",
            &format!("http://{}/slow/5", s.addr()),
        ])
        .output()
        .expect("h2load runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("600 succeeded, 0 failed"), "{out}");
    assert!(out.contains("600 2xx"), "{out}");
}

#[test]
fn a_dead_h2_server_gives_503_and_the_pool_heals() {
    let addr = closed_port();
    let s = Server::start(&h1_to_h2(&[srv(addr, "")], "retries = 0"));
    let url = format!("http://{}/x", s.addr());
    let o = curl(&[
        "-sS",
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");
    let _b = H2Backend::start_on(addr, &[]);
    // Passive health may hold the server down for a moment; it comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let o = curl(&["-sS", "--http1.1", &url]);
        if String::from_utf8_lossy(&o.stdout) == "h2 ok /x" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never healed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_stop_lets_relayed_requests_in_flight_finish() {
    let b = H2Backend::start(&[]);
    let mut s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    // One request waiting for its response, one download under way, when the stop begins.
    let mut waiting = TcpStream::connect(s.addr()).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting
        .write_all(b"GET /slow/1200 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut download = TcpStream::connect(s.addr()).unwrap();
    download
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    download
        .write_all(b"GET /bytes/3000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let n = download.read(&mut first).unwrap();
    assert!(n > 0);
    std::thread::sleep(Duration::from_millis(200));
    s.signal("TERM");
    let mut got = Vec::new();
    let _ = waiting.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nslow"), "{text}");
    let mut rest = first[..n].to_vec();
    let _ = download.read_to_end(&mut rest);
    let body_at = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert_eq!(rest.len() - body_at, 3_000_000);
    assert!(s.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn head_answers_of_an_h2_backend_keep_their_length() {
    // nginx over h2c answers HEAD with its content-length and END_STREAM on HEADERS.
    let n = crate::h2_backend::nginx_h2c();
    let s = Server::start(&proxy_config(
        &[srv(n.addr, "")],
        "protocol = \"h2\"",
        "http2 = { h2c = true }",
    ));
    let head = curl_text(&["-I", &format!("http://{}/", s.addr())]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    // And an h2 client's HEAD the same way.
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-I",
        &format!("http://{}/", s.addr()),
    ]);
    let h2 = String::from_utf8_lossy(&o.stdout);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
}

#[test]
fn refused_uploads_go_again_with_their_bodies() {
    // Every third stream is refused before the server processes it (RFC 9113 section 8.7):
    // the uploads are sent again, bodies included, and every one is answered.
    let b = H2Backend::start(&["--refuse-every", "3"]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    for _ in 0..6 {
        let got = curl_text(&["-d", "hello", &format!("http://{}/upload", s.addr())]);
        assert_eq!(got, "5");
    }
    assert!(b.stats().refused >= 2);
    // Concurrent uploads on connections the server rotates with GOAWAY: none is lost.
    let b = H2Backend::start(&["--goaway-after", "7"]);
    let s = Server::start(&h1_to_h2(&[srv(b.addr, "")], "reuse = \"always\""));
    let body = std::env::temp_dir().join(format!("coreplex-refused-{}", std::process::id()));
    std::fs::write(&body, "x".repeat(1000)).unwrap();
    let o = Command::new("h2load")
        .args(["--h1", "-n", "200", "-c", "10", "-d"])
        .arg(&body)
        .arg(format!("http://{}/upload", s.addr()))
        .output()
        .expect("h2load runs");
    let _ = std::fs::remove_file(&body);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("200 succeeded, 0 failed"), "{out}");
    assert!(out.contains("200 2xx"), "{out}");
}

#[test]
fn a_body_delimited_by_the_close_is_reset_when_its_client_stops_reading() {
    let b = H2Backend::start(&[]);
    let s = Server::start(&proxy_config(
        &[srv(b.addr, "")],
        "protocol = \"h2\"",
        "timeouts = { client = \"1s\" }",
    ));
    // A small receive buffer, so that the proxy's output waits soon.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr().into()).unwrap();
    let mut c: TcpStream = sock.into();
    c.write_all(b"GET /nolength/5000000 HTTP/1.0\r\nHost: a\r\n\r\n")
        .unwrap();
    // The output waits for the client: `client` (1 s) without progress cuts it.
    std::thread::sleep(Duration::from_millis(4000));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let end = loop {
        match c.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(end, "reset", "after {total} bytes");
    assert!(total < 5_000_000);
}

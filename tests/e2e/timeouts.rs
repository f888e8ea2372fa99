//! Timers, with `http_request = 300ms`, `http_keep_alive = 400ms`, `client = 500ms`: a slow
//! request head gets 408, a silent connection and an idle keep-alive connection are closed
//! without a response, a stalled body gets 408; each within a bounded window.

use crate::harness::{config, get, metric, Conn, Server, SHORT_TIMEOUTS};
use std::time::{Duration, Instant};

fn server() -> Server {
    Server::start(&config(SHORT_TIMEOUTS, ""))
}

/// Reads until EOF (3 s max) and returns the bytes and when EOF came, measured from `t0`.
fn until_eof(c: &mut Conn, t0: Instant) -> (Vec<u8>, Option<Duration>) {
    let (closed, bytes) = c.expect_eof(Duration::from_secs(3));
    (bytes, closed.then(|| t0.elapsed()))
}

#[test]
fn slowloris_head_gets_408() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let r = c.response_within(Duration::from_secs(3), false);
    let at = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(at >= Duration::from_millis(250), "408 too early: {at:?}");
    assert!(at <= Duration::from_millis(1500), "408 too late: {at:?}");
    let (extra, eof) = until_eof(&mut c, t0);
    assert!(extra.is_empty(), "bytes after the 408: {extra:?}");
    let eof = eof.expect("no EOF after the 408");
    assert!(
        eof <= Duration::from_millis(2500),
        "EOF after 408 too late: {eof:?}"
    );
}

#[test]
fn silent_connection_is_closed_without_response() {
    let s = server();
    let t0 = Instant::now();
    let mut c = Conn::connect(s.addr());
    let (bytes, eof) = until_eof(&mut c, t0);
    assert!(
        bytes.is_empty(),
        "silent connection got bytes: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let eof = eof.expect("silent connection not closed within 3 s");
    assert!(
        eof >= Duration::from_millis(250),
        "closed too early: {eof:?}"
    );
    assert!(
        eof <= Duration::from_millis(1500),
        "closed too late: {eof:?}"
    );
}

#[test]
fn idle_keep_alive_is_closed_silently() {
    let s = server();
    let admin = s.admin();
    let key = "coreplex_connections_closed_total{reason=\"keepalive_timeout\"}";
    let before = metric(admin, key);
    let mut c = Conn::connect(s.addr());
    // Taken before the request: the keep-alive timer starts after it, so the close comes at
    // least http_keep_alive (400 ms) later whatever the scheduling of this thread.
    let t0 = Instant::now();
    c.send(&get("/"));
    let r = c.response();
    assert_eq!(r.status, 200);
    let (bytes, eof) = until_eof(&mut c, t0);
    assert!(
        bytes.is_empty(),
        "idle close sent bytes: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let eof = eof.expect("idle keep-alive connection not closed within 3 s");
    assert!(
        eof >= Duration::from_millis(390), // the wheel counts whole ms: a little slack
        "closed too early: {eof:?}"
    );
    assert!(
        eof <= Duration::from_millis(1500),
        "closed too late: {eof:?}"
    );
    let after = metric(admin, key);
    assert_eq!(after, before + 1.0, "{key}: {before} -> {after}");
}

#[test]
fn stalled_body_gets_408() {
    let s = server();
    let mut c = Conn::connect(s.addr());
    let t0 = Instant::now();
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello");
    let r = c.response_within(Duration::from_secs(3), false);
    let at = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(at >= Duration::from_millis(400), "408 too early: {at:?}");
    assert!(at <= Duration::from_millis(2500), "408 too late: {at:?}");
    let (_, eof) = until_eof(&mut c, t0);
    assert!(eof.is_some(), "no EOF after the 408");
}

#[test]
fn a_client_that_never_reads_its_final_response_is_closed() {
    // Three 1 MB responses, the last a final one (`Connection: close`), to a client that never
    // reads: the output cannot drain, and the client timeout must still end the connection.
    let big = "x".repeat(1_000_000);
    let cfg = format!(
        "{}\n[[listener.route]]\npath = \"/big\"\nrespond = {{ body = \"{big}\" }}\n",
        config(SHORT_TIMEOUTS, "")
    );
    let s = Server::start(&cfg);
    // A small receive buffer, so the responses cannot all sit in the client's kernel buffers.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr().into()).unwrap();
    let mut c: std::net::TcpStream = sock.into();
    {
        use std::io::Write;
        let mut req = b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2);
        req.extend_from_slice(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        c.write_all(&req).unwrap();
    }
    let t0 = Instant::now();
    loop {
        let open = metric(s.admin(), "coreplex_connections_current");
        if open == 0.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "connection still open {:?} after the client stopped reading",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
}

/// Seconds until `coreplex_connections_current` drops to 0 (polled; `None` after `limit`).
fn until_no_connections(s: &Server, t0: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if metric(s.admin(), "coreplex_connections_current") == 0.0 {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_fin_bounds_a_final_response_the_client_does_not_read() {
    // A final response (`Connection: close`) of 1 MB to a client that never reads: once it is
    // queued, `client_fin` (300 ms) governs, not `client` (30 s), nor `linger` (10 s, which
    // would apply had the kernel taken the whole response).
    let big = "x".repeat(1_000_000);
    let cfg = format!(
        "{}\n[[listener.route]]\npath = \"/big\"\nrespond = {{ body = \"{big}\" }}\n",
        config(
            "linger = \"10s\"\n[defaults.timeouts]\nclient = \"30s\"\nclient_fin = \"300ms\"\n",
            ""
        )
    );
    let s = Server::start(&cfg);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.addr().into()).unwrap();
    let mut c: std::net::TcpStream = sock.into();
    // Keep the kernel from taking the whole response: a small send buffer on the server's side
    // of this connection leaves most of it in coreplex's output.
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        metric(s.admin(), "coreplex_connections_current") == 1.0
    }));
    let peer = c.local_addr().unwrap().to_string();
    crate::harness::sockopt(&["sndbuf", &s.pid().to_string(), &peer, "4096"]);
    use std::io::Write;
    c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let closed = until_no_connections(&s, t0, Duration::from_secs(10))
        .expect("the stuck final response outlived client_fin by far");
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(3),
        "closed after {closed:?}: expected about client_fin (300 ms), far below client (30 s)"
    );
    drop(c);
}

#[test]
fn linger_bounds_the_drain_after_a_final_response() {
    // After a final response the server stops sending and reads (drains) what the client still
    // sends, for at most `global.linger`, then closes: the client reads its response, not a reset.
    for (linger, min, max) in [
        (
            "300ms",
            Duration::from_millis(250),
            Duration::from_millis(2000),
        ),
        (
            "3s",
            Duration::from_millis(2500),
            Duration::from_millis(6000),
        ),
    ] {
        let s = Server::start(&config(&format!("linger = \"{linger}\""), ""));
        let mut c = Conn::connect(s.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200);
        let t0 = Instant::now();
        // The server's FIN arrives at once; the client keeps its side open (and sends more).
        assert!(
            c.expect_eof(Duration::from_secs(3)).0,
            "no FIN after the final response"
        );
        c.send_lossy(b"more bytes the server drains");
        let closed = until_no_connections(&s, t0, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("linger {linger}: never closed"));
        assert!(
            closed >= min && closed < max,
            "linger {linger}: closed after {closed:?}"
        );
    }
}

//! Graceful stop on SIGTERM: idle connections are closed and the process exits 0, a request in
//! flight is finished with `Connection: close`, and `shutdown_timeout` bounds a stuck request.

use crate::harness::{config, get, Conn, Server};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn sigterm_closes_idle_connections_and_exits_0() {
    let mut s = Server::start(&config("", ""));
    let addr = s.addr();
    let mut c = Conn::connect(addr);
    c.send(&get("/"));
    assert_eq!(c.response().status, 200);
    let t0 = Instant::now();
    s.signal("TERM");
    let (closed, extra) = c.expect_eof(Duration::from_secs(2));
    assert!(closed, "idle connection not closed within 2 s of SIGTERM");
    assert!(extra.is_empty(), "bytes on idle close: {extra:?}");
    let st = s
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM; stderr:\n{}", s.log_text()));
    assert!(st.success(), "exit status {st}; stderr:\n{}", s.log_text());
    assert!(t0.elapsed() < Duration::from_secs(5));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "{addr} still accepts connections after exit"
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let mut s = Server::start(&config("", ""));
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello");
    std::thread::sleep(Duration::from_millis(100));
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight; stderr:\n{}",
        s.log_text()
    );
    c.send(b"world");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "response finished during shutdown must say Connection: close: {}",
        r.head
    );
    let (closed, extra) = c.expect_eof(Duration::from_secs(2));
    assert!(
        closed && extra.is_empty(),
        "no clean EOF after the response: {extra:?}"
    );
    let st = s
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running; stderr:\n{}", s.log_text()));
    assert!(st.success(), "exit status {st}; stderr:\n{}", s.log_text());
}

#[test]
fn shutdown_timeout_bounds_a_stuck_request() {
    let mut s = Server::start(&config("shutdown_timeout = \"500ms\"", ""));
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel");
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(2)).unwrap_or_else(|| {
        panic!(
            "still running 2 s after SIGTERM with shutdown_timeout 500ms; stderr:\n{}",
            s.log_text()
        )
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "exited before the grace period: {took:?}"
    );
    assert!(st.code().is_some(), "killed by a signal: {st}");
    let (closed, _) = c.expect_eof(Duration::from_secs(1));
    assert!(closed, "stuck connection not closed after exit");
}

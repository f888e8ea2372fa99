//! Graceful stop on SIGTERM and SIGINT: idle connections are closed and the process exits 0; a
//! request in flight (direct or proxied) is finished with `Connection: close`; `/health` answers
//! 503 while stopping; `shutdown_timeout` closes what is left at the deadline (seen by the client
//! then, and logged by the shard, before the process exits 0); a second signal exits at once
//! with status 1. With `close_spread_time` idle keep-alive connections close at points spread
//! over it, and one that sends a request first is answered with `Connection: close`.

use crate::backend::{wait_until, Client, TestBackend};
use crate::harness::{config, get, raw, Conn, Server};
use crate::proxy::start;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// The status of `GET /health` on the admin endpoint (`None`: no answer).
fn health(admin: SocketAddr) -> Option<u16> {
    let (bytes, _) = raw(
        admin,
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&bytes);
    text.split(' ').nth(1)?.parse().ok()
}

/// Waits (up to 3 s) until `/health` says the server is stopping.
fn wait_stopping(s: &Server) {
    assert!(
        wait_until(Duration::from_secs(3), || health(s.admin()) == Some(503)),
        "/health does not answer 503 after the stop signal; stderr:\n{}",
        s.log_text()
    );
}

/// Waits (up to 3 s) until the server side of `c` has read everything `c` sent: its socket's
/// receive queue (`ss`, Recv-Q) is empty.
fn wait_read_by_server(server: SocketAddr, c: &Conn) {
    let client = c.stream.local_addr().unwrap();
    let consumed = || {
        let out = Command::new("ss")
            .args([
                "-tnH",
                "state",
                "established",
                "src",
                &server.to_string(),
                "dst",
                &client.to_string(),
            ])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            == Some(0)
    };
    assert!(
        wait_until(Duration::from_secs(3), consumed),
        "the server did not read the request"
    );
}

fn idle_connection_closed_and_exit_0(signal: &str) {
    let mut s = Server::start(&config("", ""));
    let addr = s.addr();
    assert_eq!(health(s.admin()), Some(200));
    let mut c = Conn::connect(addr);
    c.send(&get("/"));
    assert_eq!(c.response().status, 200);
    let t0 = Instant::now();
    s.signal(signal);
    let (closed, extra) = c.expect_eof(Duration::from_secs(3));
    assert!(
        closed,
        "idle connection not closed within 3 s of SIG{signal}"
    );
    assert!(extra.is_empty(), "bytes on idle close: {extra:?}");
    let st = s.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "still running 5 s after SIG{signal}; stderr:\n{}",
            s.log_text()
        )
    });
    assert_eq!(st.code(), Some(0), "exit status; stderr:\n{}", s.log_text());
    assert!(t0.elapsed() < Duration::from_secs(5));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "{addr} still accepts connections after exit"
    );
}

#[test]
fn sigterm_closes_idle_connections_and_exits_0() {
    idle_connection_closed_and_exit_0("TERM");
}

#[test]
fn sigint_stops_gracefully_too() {
    idle_connection_closed_and_exit_0("INT");
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let mut s = Server::start(&config("", ""));
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello");
    wait_read_by_server(s.addr(), &c);
    s.signal("TERM");
    wait_stopping(&s);
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight; stderr:\n{}",
        s.log_text()
    );
    // The listener closes (new connections are refused) while the old one finishes.
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect_timeout(
            &s.addr(),
            Duration::from_secs(1)
        )
        .is_err()),
        "still accepting while stopping"
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
    let (closed, extra) = c.expect_eof(Duration::from_secs(3));
    assert!(
        closed && extra.is_empty(),
        "no clean EOF after the response: {extra:?}"
    );
    let st = s
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running; stderr:\n{}", s.log_text()));
    assert_eq!(st.code(), Some(0), "exit status; stderr:\n{}", s.log_text());
}

#[test]
fn shutdown_timeout_closes_a_stuck_request_at_the_deadline() {
    let mut s = Server::start(&config("shutdown_timeout = \"500ms\"", ""));
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel");
    wait_read_by_server(s.addr(), &c);
    // The client watches for the close while the process is still running.
    let mut stream = c.stream.try_clone().unwrap();
    let watcher = std::thread::spawn(move || {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 64];
        let n = stream.read(&mut b);
        (Instant::now(), n.map_err(|e| e.kind()))
    });
    let t0 = Instant::now();
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "still running 5 s after SIGTERM with shutdown_timeout 500ms; stderr:\n{}",
            s.log_text()
        )
    });
    let exited = t0.elapsed();
    let (closed_at, read) = watcher.join().unwrap();
    let closed = closed_at.duration_since(t0);
    assert!(
        matches!(read, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the stuck connection got {read:?}"
    );
    assert!(
        closed >= Duration::from_millis(400) && closed < Duration::from_millis(1500),
        "closed {closed:?} after SIGTERM, expected at shutdown_timeout (500 ms)"
    );
    assert!(
        exited >= Duration::from_millis(400),
        "exited after {exited:?}"
    );
    // The shard closed it at the deadline (not the process exit): it says so before exiting.
    assert!(
        s.log_text()
            .contains("shutdown_timeout reached: closing 1 connection(s)"),
        "stderr:\n{}",
        s.log_text()
    );
    assert_eq!(
        st.code(),
        Some(0),
        "a stop that reached shutdown_timeout still exits 0; stderr:\n{}",
        s.log_text()
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut s = Server::start(&config("shutdown_timeout = \"30s\"", ""));
    let mut c = Conn::connect(s.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel");
    wait_read_by_server(s.addr(), &c);
    s.signal("TERM");
    wait_stopping(&s);
    let t0 = Instant::now();
    s.signal("INT");
    let st = s.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "still running 3 s after a second signal; stderr:\n{}",
            s.log_text()
        )
    });
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(st.code(), Some(1), "stderr:\n{}", s.log_text());
    assert!(
        s.log_text().contains("second stop signal"),
        "stderr:\n{}",
        s.log_text()
    );
}

#[test]
fn a_proxied_exchange_in_flight_finishes() {
    let b = TestBackend::start();
    let mut s = start(&b, "");
    let mut c = Client::connect(s.addr());
    c.send(b"GET /delay/800 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    s.signal("TERM");
    wait_stopping(&s);
    let r = c.response(false, true).expect("the proxied response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(c.closed_within(Duration::from_secs(3)));
    let st = s
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running; stderr:\n{}", s.log_text()));
    assert_eq!(st.code(), Some(0), "stderr:\n{}", s.log_text());
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 0),
        "the backend connection outlived the proxy"
    );
    assert_eq!(b.requests(), 1);
}

#[test]
fn close_spread_time_spreads_idle_closes_and_a_request_before_its_point_is_told_to_close() {
    use std::io::{Read, Write};
    let mut s = Server::start(&config(
        "close_spread_time = \"1s\"\nshutdown_timeout = \"5s\"",
        "",
    ));
    let addr = s.addr();
    // Eight idle keep-alive connections, each served once; a thread per connection reads until
    // the server closes it and notes when.
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let mut c = Conn::connect(addr);
        c.send(&get("/"));
        assert_eq!(c.response().status, 200);
        let mut r = c.stream.try_clone().unwrap();
        writers.push(c.stream.try_clone().unwrap());
        readers.push(std::thread::spawn(move || {
            r.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            (Instant::now(), got)
        }));
    }
    let stop = Instant::now();
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(100));
    // A request on every connection still open: answered, with `Connection: close`.
    let mut asked = Vec::new();
    for (i, w) in writers.iter_mut().enumerate() {
        if !readers[i].is_finished() && w.write_all(&get("/")).is_ok() {
            asked.push(i);
        }
    }
    let ends: Vec<(Instant, Vec<u8>)> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let closed_at: Vec<Duration> = ends.iter().map(|(t, _)| t.duration_since(stop)).collect();
    let first = *closed_at.iter().min().unwrap();
    let last = *closed_at.iter().max().unwrap();
    assert!(
        last < Duration::from_millis(1500),
        "an idle connection was still open {last:?} after SIGTERM with close_spread_time 1s: {closed_at:?}"
    );
    assert!(
        !asked.is_empty() && asked.len() < 8,
        "expected some connections to close before 100 ms and others after: {closed_at:?}"
    );
    assert!(first < Duration::from_millis(100), "{closed_at:?}");
    for &i in &asked {
        let text = String::from_utf8_lossy(&ends[i].1).to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.1 200") && text.contains("connection: close"),
            "connection {i}, asked after SIGTERM, got {text:?}"
        );
        assert!(
            closed_at[i] < Duration::from_millis(600),
            "connection {i} told to close yet open {:?}",
            closed_at[i]
        );
    }
    assert_eq!(
        s.wait_exit(Duration::from_secs(5)).and_then(|st| st.code()),
        Some(0)
    );
}

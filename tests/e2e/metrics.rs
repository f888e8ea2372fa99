//! The admin endpoint: `/health`, unknown paths, and the Prometheus counters and gauges moving
//! with real traffic (requests by class, connections, bytes, latency count, slab capacity).

use crate::harness::{
    config, get, metric_in, metrics_text, parse_responses, raw, test_shards, Conn, Server,
};
use std::time::Duration;

fn m(text: &str, key: &str) -> f64 {
    metric_in(text, key).unwrap_or_else(|| panic!("{key} missing from:\n{text}"))
}

#[test]
fn health_is_ok() {
    let s = Server::start(&config("", ""));
    let (bytes, closed) = raw(
        s.admin(),
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    let rs = parse_responses(&bytes, &[]);
    assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), "ok\n");
    assert!(closed);
}

#[test]
fn unknown_admin_path_is_404() {
    let s = Server::start(&config("", ""));
    let (bytes, _) = raw(
        s.admin(),
        b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(
        bytes.starts_with(b"HTTP/1.1 404 "),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
}

#[test]
fn counters_follow_traffic() {
    let shards = test_shards("counters_follow_traffic", 2);
    let s = Server::start(&config(
        &format!("shards = {shards}\nmax_connections = 64"),
        "",
    ));
    let before = metrics_text(s.admin());
    const N: usize = 25;
    let mut c = Conn::connect(s.addr());
    let mut sent = 0;
    let mut received = 0;
    for _ in 0..N {
        c.send(&get("/"));
        received += get("/").len();
        let r = c.response();
        assert_eq!(r.status, 200);
        sent += r.head.len() + 4 + r.body.len();
    }
    c.send(&get("/missing"));
    received += get("/missing").len();
    let r = c.response();
    assert_eq!(r.status, 404);
    sent += r.head.len() + 4 + r.body.len();
    drop(c);
    let after = metrics_text(s.admin());
    let delta = |k: &str| m(&after, k) - m(&before, k);
    assert_eq!(delta("coreplex_requests_total{class=\"2xx\"}"), N as f64);
    assert_eq!(delta("coreplex_requests_total{class=\"4xx\"}"), 1.0);
    assert_eq!(delta("coreplex_connections_accepted_total"), 1.0);
    assert_eq!(delta("coreplex_bytes_received_total"), received as f64);
    assert_eq!(delta("coreplex_bytes_sent_total"), sent as f64);
    assert_eq!(
        delta("coreplex_request_duration_seconds_count"),
        (N + 1) as f64
    );
    assert_eq!(m(&after, "coreplex_slab_capacity"), (64 * shards) as f64);
    assert_eq!(m(&after, "coreplex_shards"), shards as f64);
    assert_eq!(m(&after, "coreplex_shards_reporting"), shards as f64);
}

#[test]
fn idle_admin_connections_do_not_block_health_checks() {
    let s = Server::start(&config("", ""));
    let idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(s.admin()).unwrap())
        .collect();
    let t0 = std::time::Instant::now();
    let (bytes, _) = raw(
        s.admin(),
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        std::time::Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "/health took {:?} behind idle admin connections",
        t0.elapsed()
    );
    drop(idle);
}

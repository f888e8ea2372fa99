//! The backend side of the proxy end to end, each behaviour in a scenario that only it passes:
//! passive health (a server marked down after connect failures, skipped while down, used again
//! once back), retries exhausting with `retries_total`, a dead reused connection (a GET resent, a
//! later POST's close mirrored, a first POST answered 502), `max_reuse`, `idle_timeout`,
//! `purge_delay` draining a burst by halves, `max_private_per_session`, `leastconn`, `weight`,
//! interim 1xx responses, an invalid response (502), a body over `max_body` (413), `timeouts.server`
//! expiring mid-body and the backend's `timeouts.queue` overriding the defaults.

use crate::backend::{wait_until, Client, Framing, TestBackend};
use crate::harness::{assert_metric, metric, metric_in, metrics_text, Server};
use crate::proxy::{closed_port, errors_key, proxy_config, srv, start};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `NAME{backend="app",server="ADDR"}`.
fn per_server(name: &str, server: SocketAddr) -> String {
    format!("{name}{{backend=\"app\",server=\"{server}\"}}")
}

/// `NAME{backend="app"}`.
fn per_backend(name: &str) -> String {
    format!("{name}{{backend=\"app\"}}")
}

/// `n` client connections one after another, one `GET path` each, every one answered 200.
fn separate_gets(s: &Server, n: usize, path: &str) {
    for i in 0..n {
        let mut c = Client::connect(s.addr());
        let r = c.get(path);
        assert_eq!(r.status, 200, "client {i}: {}", r.head);
    }
}

// ---- passive health and retries ----------------------------------------------------------------

#[test]
fn a_server_marked_down_is_skipped_then_used_again() {
    let x = TestBackend::start();
    let y = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(x.addr(), ""), srv(y.addr(), "")],
        "reuse = \"never\"\nretries = 1\nhealth = { fail_threshold = 2, down_for = \"1s\" }",
        "",
    ));
    separate_gets(&s, 4, "/");
    assert_eq!((x.requests(), y.requests()), (2, 2), "round robin");
    // X stops accepting: connects to it fail (and are retried on Y) until it is marked down.
    x.close_listener();
    let failures = per_server("coreplex_backend_server_connect_failures_total", x.addr());
    let down = per_server("coreplex_backend_server_down", x.addr());
    let mut clients = 0;
    // Taken before the request that marks X down, so down_for runs out after `marked + 1 s`
    // whatever the time the steps below take.
    let mut marked = Instant::now();
    while metric(s.admin(), &failures) < 2.0 {
        marked = Instant::now();
        separate_gets(&s, 1, "/");
        clients += 1;
        assert!(clients <= 8, "X never failed twice");
    }
    assert_metric(s.admin(), &down, 1.0);
    assert_eq!(x.requests(), 2);
    // While down, X is not tried at all: every request goes to Y at once.
    let y_before = y.requests();
    separate_gets(&s, 6, "/");
    assert_eq!(y.requests(), y_before + 6);
    assert_eq!(
        metric(s.admin(), &failures),
        2.0,
        "a server marked down was tried"
    );
    // X comes back; once down_for has passed it gets traffic again.
    x.reopen_listener();
    assert!(
        wait_until(Duration::from_secs(5), || {
            separate_gets(&s, 1, "/");
            x.requests() > 2
        }),
        "X was never used again after down_for"
    );
    assert!(
        marked.elapsed() >= Duration::from_millis(990), // whole-ms clocks: a little slack
        "X was used again {:?} after it was marked down, before down_for (1 s) ran out",
        marked.elapsed()
    );
    assert_metric(s.admin(), &down, 0.0);
    assert_eq!(metric(s.admin(), &failures), 2.0);
}

#[test]
fn retries_exhaust_then_503_with_every_retry_counted() {
    let (d1, d2) = (closed_port(), closed_port());
    let s = Server::start(&proxy_config(
        &[srv(d1, ""), srv(d2, "")],
        "retries = 2\nhealth = { fail_threshold = 0 }",
        "",
    ));
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.head);
    // One try and two retries, alternating servers.
    assert_metric(
        s.admin(),
        &per_backend("coreplex_backend_retries_total"),
        2.0,
    );
    let tried = metric(
        s.admin(),
        &per_server("coreplex_backend_server_connect_failures_total", d1),
    ) + metric(
        s.admin(),
        &per_server("coreplex_backend_server_connect_failures_total", d2),
    );
    assert_eq!(tried, 3.0);
    assert_metric(s.admin(), &errors_key("connect_failed"), 1.0);
    // fail_threshold = 0: never marked down.
    assert_metric(
        s.admin(),
        &per_server("coreplex_backend_server_down", d1),
        0.0,
    );
}

// ---- a pooled connection that dies as it is reused ---------------------------------------------

#[test]
fn a_get_on_a_dead_reused_connection_is_resent() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/drop-next").text(), "ok");
    // The second request goes to the same connection, which reads it and closes.
    let r = c.get("/conn");
    assert_eq!((r.status, r.text().as_str()), (200, "c1"), "{}", r.head);
    assert_eq!(
        b.dropped(),
        1,
        "the reused connection was not the armed one"
    );
    assert_metric(
        s.admin(),
        &per_backend("coreplex_backend_retries_total"),
        1.0,
    );
    // The client connection is still in step.
    assert_eq!(c.get("/conn").text(), "c1");
}

#[test]
fn a_later_post_on_a_dead_reused_connection_is_not_resent_and_the_close_is_mirrored() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/drop-next").text(), "ok");
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    // Not the session's first request: the backend's close is passed on as a close, so the
    // client may retry it itself (HAProxy's behaviour), and the POST is not sent twice.
    assert!(
        c.response(false, true).is_none(),
        "the dropped POST got an answer"
    );
    assert!(c.closed_within(Duration::from_secs(3)));
    assert_eq!(b.dropped(), 1);
    assert_eq!(b.requests(), 2, "the POST was sent again");
    assert_eq!(
        metric(s.admin(), &per_backend("coreplex_backend_retries_total")),
        0.0
    );
}

#[test]
fn a_first_post_on_a_dead_reused_connection_gets_502_and_a_first_get_is_resent() {
    let b = TestBackend::start();
    // `always`: a client's first request may take another client's idle connection.
    let s = start(&b, "reuse = \"always\"");
    let mut a = Client::connect(s.addr());
    assert_eq!(a.get("/drop-next").text(), "ok");
    let mut c = Client::connect(s.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let r = c
        .response(false, true)
        .expect("an answer to the first POST");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(
        (b.dropped(), b.requests()),
        (1, 2),
        "the POST was sent again"
    );
    assert_metric(s.admin(), &errors_key("backend_closed"), 1.0);
    // The same with a GET: resent on a new connection.
    assert_eq!(a.get("/drop-next").text(), "ok");
    let mut c = Client::connect(s.addr());
    let r = c.get("/conn");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(b.dropped(), 2);
    assert_metric(
        s.admin(),
        &per_backend("coreplex_backend_retries_total"),
        1.0,
    );
}

// ---- pool sizing and eviction ------------------------------------------------------------------

#[test]
fn max_reuse_bounds_the_requests_of_one_connection() {
    let b = TestBackend::start();
    let s = start(&b, "pool = { max_reuse = 3 }");
    let mut c = Client::connect(s.addr());
    let served: Vec<String> = (0..7).map(|_| c.get("/conn").text()).collect();
    assert_eq!(served, ["c0", "c0", "c0", "c1", "c1", "c1", "c2"]);
    // The exhausted connections are closed, not parked.
    assert!(wait_until(Duration::from_secs(3), || b.open() == 1));
}

#[test]
fn idle_timeout_closes_pooled_connections() {
    let b = TestBackend::start();
    let s = start(&b, "pool = { idle_timeout = \"300ms\" }");
    let mut c = Client::connect(s.addr());
    // Taken before the request: the connection goes idle after it.
    let t0 = Instant::now();
    assert_eq!(c.get("/conn").text(), "c0");
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 0),
        "the idle pooled connection was kept past idle_timeout"
    );
    let took = t0.elapsed();
    // The wheel counts whole milliseconds: a little slack.
    assert!(took >= Duration::from_millis(290), "closed after {took:?}");
    // The client's own connection is untouched (keep-alive is 75 s) and gets a new backend one.
    assert_eq!(c.get("/conn").text(), "c1");
}

#[test]
fn purge_delay_drains_a_burst_by_halves() {
    let b = TestBackend::start();
    let s = start(
        &b,
        "reuse = \"always\"\npool = { purge_delay = \"300ms\", idle_timeout = \"60s\" }",
    );
    // A burst of 8 concurrent requests: 8 backend connections. The clients send together and
    // the backend holds each answer a second, so no request finds another's connection idle.
    let addr = s.addr();
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                start.wait();
                c.get("/delay/1000").status
            })
        })
        .collect();
    for h in burst {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(b.accepted(), 8);
    // Then nothing: the pool keeps them a couple of intervals, then closes half the excess per
    // interval. Sample the open count until it reaches 0.
    let mut seen = vec![b.open()];
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.open() > 0 {
        assert!(
            Instant::now() < deadline,
            "not drained by the purge: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        if seen.last() != Some(&b.open()) {
            seen.push(b.open());
        }
    }
    if seen.last() != Some(&0) {
        seen.push(0);
    }
    assert_eq!(seen[0], 8, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
    assert!(
        seen.len() >= 4,
        "closed in too few steps for halving (8 -> 4 -> 2 -> 1 -> 0 or so): {seen:?}"
    );
}

#[test]
fn max_private_per_session_caps_the_connections_a_client_keeps() {
    // With `never`, a client's connection on X is private. X goes down: its requests go to Y, on
    // new private connections; with a cap of 1 each one is closed after its response (the idle
    // one on X fills the cap), with a cap of 2 one is kept and reused.
    for (cap, new_y_conns) in [(1, 3), (2, 1)] {
        let x = TestBackend::start();
        let y = TestBackend::start();
        let s = Server::start(&proxy_config(
            &[srv(x.addr(), ""), srv(y.addr(), "")],
            &format!(
                "reuse = \"never\"\nretries = 1\nhealth = {{ fail_threshold = 1, down_for = \"60s\" }}\npool = {{ max_private_per_session = {cap} }}"
            ),
            "",
        ));
        let mut c = Client::connect(s.addr());
        assert_eq!(c.get("/").text(), "ok");
        assert_eq!(x.requests(), 1, "round robin starts on X");
        // Mark X down: another client's new connection to it fails.
        x.close_listener();
        let down = per_server("coreplex_backend_server_down", x.addr());
        let mut tries = 0;
        while metric(s.admin(), &down) < 1.0 {
            separate_gets(&s, 1, "/");
            tries += 1;
            assert!(tries <= 4, "X never marked down");
        }
        let y_before = y.accepted();
        for _ in 0..3 {
            assert_eq!(c.get("/").text(), "ok");
        }
        assert_eq!(x.requests(), 1);
        assert_eq!(
            y.accepted() - y_before,
            new_y_conns,
            "max_private_per_session = {cap}"
        );
    }
}

// ---- balancing ---------------------------------------------------------------------------------

#[test]
fn leastconn_avoids_the_busy_server() {
    let x = TestBackend::start();
    let y = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(x.addr(), ""), srv(y.addr(), "")],
        "balance = \"leastconn\"\nreuse = \"never\"",
        "",
    ));
    let mut busy = Client::connect(s.addr());
    busy.send(b"GET /delay/3000 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || x.requests()
        + y.requests()
        == 1));
    let (busy_b, idle_b) = if x.requests() == 1 {
        (&x, &y)
    } else {
        (&y, &x)
    };
    separate_gets(&s, 4, "/");
    assert_eq!(
        busy_b.requests(),
        1,
        "leastconn sent a request to the busy server"
    );
    assert_eq!(idle_b.requests(), 4);
    drop(busy);
}

#[test]
fn weights_share_requests_in_proportion() {
    let x = TestBackend::start();
    let y = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(x.addr(), "weight = 3"), srv(y.addr(), "weight = 1")],
        "reuse = \"never\"",
        "",
    ));
    separate_gets(&s, 8, "/");
    assert_eq!((x.requests(), y.requests()), (6, 2));
}

// ---- responses -----------------------------------------------------------------------------------

#[test]
fn interim_responses_reach_http11_clients_only() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let r = c.get("/early-hints");
    assert_eq!(r.status, 103, "{}", r.head);
    assert_eq!(
        r.header("link").as_deref(),
        Some("</style.css>; rel=preload"),
        "{}",
        r.head
    );
    // The backend's Content-Length on its 103 is not passed on (RFC 9110 section 8.6).
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    let r = c.response(false, true).expect("the final response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    // HTTP/1.0 has no 1xx: only the final response.
    let (raw, closed) = crate::harness::raw(
        s.addr(),
        b"GET /early-hints HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(!text.contains("103"), "{text}");
    assert!(closed);
}

#[test]
fn an_invalid_backend_response_is_a_502() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let r = c.get("/bad-response");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_metric(s.admin(), &errors_key("bad_response"), 1.0);
    // A status outside 100..599 is invalid (RFC 9110 section 15): 502 too.
    let mut c = Client::connect(s.addr());
    let r = c.get("/status/600");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_metric(s.admin(), &errors_key("bad_response"), 2.0);
    // The server is not blamed: the next request works.
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/").text(), "ok");
}

#[test]
fn a_proxied_body_over_max_body_gets_413_without_reaching_the_backend() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        "limits = { max_body = 1000 }",
    ));
    let mut c = Client::connect(s.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n");
    let r = c.response(false, true).expect("413");
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(3)));
    assert_eq!(b.requests(), 0);
    // At the limit it passes.
    let mut c = Client::connect(s.addr());
    let mut req = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 1000]);
    c.send(&req);
    let r = c.response(false, true).expect("200");
    assert_eq!((r.status, r.text().as_str()), (200, "1000"));
}

#[test]
fn server_timeout_mid_body_cuts_the_client_connection() {
    let b = TestBackend::start();
    let s = start(&b, "timeouts = { server = \"300ms\" }");
    let mut c = Client::connect(s.addr());
    let t0 = Instant::now();
    c.send(b"GET /stall-mid-body/3000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response(false, false).expect("the head before the stall");
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Length(20_000));
    assert!(!r.complete, "a complete body from a stalled backend");
    assert_eq!(r.body_len, 10_000);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2500),
        "cut after {took:?}, expected about 300 ms"
    );
    assert_metric(s.admin(), &errors_key("server_timeout"), 1.0);
    assert!(wait_until(Duration::from_secs(3), || b.open() == 0));
}

#[test]
fn the_backends_queue_timeout_overrides_the_default() {
    let b = TestBackend::start();
    let cfg = proxy_config(
        &[srv(b.addr(), "maxconn = 1")],
        "timeouts = { queue = \"300ms\", server = \"10s\" }",
        "",
    )
    .replace("[admin]", "[defaults.timeouts]\nqueue = \"10s\"\n\n[admin]");
    let s = Server::start(&cfg);
    let mut a = Client::connect(s.addr());
    a.send(b"GET /delay/2000 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    let t0 = Instant::now();
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "503 after {waited:?}: the backend's 300 ms did not override the default 10 s"
    );
    assert_metric(s.admin(), &errors_key("queue_timeout"), 1.0);
    let text = metrics_text(s.admin());
    assert!(metric_in(&text, &per_backend("coreplex_backend_queued_total")) == Some(1.0));
}

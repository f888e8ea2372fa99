//! The reverse proxy, black-box: a `[[listener.route]]` with `backend = "app"` forwarding to a
//! [`TestBackend`] (or to nginx). Covers bodies both ways, hop-by-hop header removal and
//! `X-Forwarded-For`, the four reuse modes against HAProxy's reference counts, server `maxconn`
//! queueing and `timeouts.queue`, `conn_rate`, connect failures, retries and connect timeouts,
//! `timeouts.server`, pooled connections closed by the backend, resets, close-delimited bodies,
//! 1 GiB each way in bounded memory, client aborts, the backend metrics and `coreplex check`.
//!
//! Every proxy runs with `shards = 1` so that connection counts are deterministic, and every
//! count is taken after the responses it depends on were read in full.

use crate::backend::{wait_until, Client, Framing, Resp, TestBackend, FILL_BYTE};
use crate::harness::{
    assert_metric, assert_metric_at_least, get, metric_in, metrics_text, run_cli, write_temp,
    Server,
};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Peak resident memory allowed to the proxy while it moves 1 GiB.
const MAX_RSS_KIB: u64 = 100 * 1024;

/// One `servers` entry: `{ address = "ADDR", OPTS }`.
pub(crate) fn srv(addr: SocketAddr, opts: &str) -> String {
    if opts.is_empty() {
        format!("{{ address = \"{addr}\" }}")
    } else {
        format!("{{ address = \"{addr}\", {opts} }}")
    }
}

/// A proxy configuration: one listener `front` routing every path to backend `app` with
/// `servers`; `listener_extra` goes in the `[[listener]]` table, `backend_extra` in
/// `[backend.app]`.
pub(crate) fn proxy_config(
    servers: &[String],
    backend_extra: &str,
    listener_extra: &str,
) -> String {
    format!(
        r#"version = 1

[global]
shards = 1
max_connections = 1024

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"
{listener_extra}

[[listener.route]]
path_prefix = "/"
backend = "app"

[backend.app]
servers = [ {servers} ]
{backend_extra}
"#,
        servers = servers.join(", ")
    )
}

/// Starts a proxy in front of `b` alone, with `backend_extra` in `[backend.app]`.
pub(crate) fn start(b: &TestBackend, backend_extra: &str) -> Server {
    start_for(b.addr(), backend_extra)
}

/// Starts a proxy in front of the one server at `addr`.
pub(crate) fn start_for(addr: SocketAddr, backend_extra: &str) -> Server {
    Server::start(&proxy_config(&[srv(addr, "")], backend_extra, ""))
}

/// `coreplex_backend_errors_total` of backend `app` for `kind`.
pub(crate) fn errors_key(kind: &str) -> String {
    format!("coreplex_backend_errors_total{{backend=\"app\",kind=\"{kind}\"}}")
}

/// `n` requests `GET /` on one client connection, each answered 200 `ok`.
pub(crate) fn on_one_connection(s: &Server, n: usize) {
    let mut c = Client::connect(s.addr());
    for i in 0..n {
        let r = c.get("/");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok"),
            "request {i}: {}",
            r.head
        );
    }
}

/// `n` client connections one after another, one `GET /` each, closed after its response.
pub(crate) fn on_separate_connections(s: &Server, n: usize) {
    for i in 0..n {
        let mut c = Client::connect(s.addr());
        let r = c.get("/");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok"),
            "connection {i}: {}",
            r.head
        );
    }
}

/// Header fields of an echoed request head (after the request line).
pub(crate) fn fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Every value of header `name` (lowercase) among `f`.
pub(crate) fn values(f: &[(String, String)], name: &str) -> Vec<String> {
    f.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub(crate) fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A listener with backlog 1 that never accepts, its accept queue filled so that new SYNs are
/// dropped: connecting to it hangs until the connect timeout. Returns the socket (keep it), its
/// address and the connections that filled the queue (keep them too).
pub(crate) fn unaccepting_listener() -> (socket2::Socket, SocketAddr, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    sock.bind(&any.into()).unwrap();
    sock.listen(1).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (sock, addr, fillers),
        }
    }
    panic!("the accept queue of a backlog-1 listener did not fill after 16 connections");
}

/// The peak resident set size of process `pid` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

// ---- forwarding ---------------------------------------------------------------------------------

#[test]
fn get_head_and_request_bodies_pass_through() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);

    c.send(b"HEAD /bytes/1234 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response(true, true).expect("response to HEAD");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.header("content-length").as_deref(),
        Some("1234"),
        "{}",
        r.head
    );
    assert!(
        b.last_head().starts_with("HEAD /bytes/1234 HTTP/1.1\r\n"),
        "{}",
        b.last_head()
    );

    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c
        .response(false, true)
        .expect("response to a Content-Length POST");
    assert_eq!((r.status, r.text().as_str()), (200, "11"), "{}", r.head);

    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let r = c.response(false, true).expect("response to a chunked POST");
    assert_eq!((r.status, r.text().as_str()), (200, "21"), "{}", r.head);

    let big = vec![b'b'; 300_000];
    let mut req = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n".to_vec();
    req.extend_from_slice(&big);
    c.send(&req);
    let r = c.response(false, true).expect("response to a 300 kB POST");
    assert_eq!((r.status, r.text().as_str()), (200, "300000"), "{}", r.head);

    // The HEAD answer carried no body and every body was framed exactly: the connection is
    // still in step.
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(b.body_bytes(), 11 + 21 + 300_000);
    assert_eq!(b.requests(), 6);
}

#[test]
fn chunked_response_passes_through() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let n = 100_000;
    let r = c.get(&format!("/chunked/{n}"));
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.complete, "chunked body cut short: {} bytes", r.body_len);
    assert_eq!(r.body.len() as u64, n);
    assert!(r.body.iter().all(|&x| x == FILL_BYTE), "body corrupted");
    let r = c.get("/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "after a chunked body"
    );
}

#[test]
fn hop_by_hop_headers_are_removed_and_x_forwarded_for_appended() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    c.send(
        b"GET /echo HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Foo\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n\
          Proxy-Connection: keep-alive\r\nX-Foo: secret\r\nX-Keep: yes\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\r\n",
    );
    let r = c.response(false, true).expect("response to /echo");
    assert_eq!(r.status, 200, "{}", r.head);
    let echoed = r.text();
    assert!(
        echoed.starts_with("GET /echo HTTP/1.1\r\n"),
        "request line: {echoed}"
    );
    let f = fields(&echoed);
    assert_eq!(values(&f, "host"), ["example.test"], "Host: {echoed}");
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "x-foo",
    ] {
        assert!(
            values(&f, name).is_empty(),
            "hop-by-hop header {name} reached the backend:\n{echoed}"
        );
    }
    assert_eq!(values(&f, "x-keep"), ["yes"], "{echoed}");
    assert_eq!(
        values(&f, "x-forwarded-for").join(", "),
        "10.0.0.1, 127.0.0.1",
        "{echoed}"
    );

    let r = c.get("/echo");
    let f = fields(&r.text());
    assert_eq!(values(&f, "x-forwarded-for"), ["127.0.0.1"], "{}", r.text());
    assert_eq!(values(&f, "host"), ["a"], "{}", r.text());
}

#[test]
fn backend_statuses_pass_through_and_are_counted() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    for code in [404, 500, 503] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!((r.status, r.text().as_str()), (code, "s"), "{}", r.head);
    }
    let r = c.get("/");
    assert_eq!(r.status, 200);
    let key = |class: &str| {
        format!("coreplex_backend_responses_total{{backend=\"app\",class=\"{class}\"}}")
    };
    assert_metric(s.admin(), &key("2xx"), 1.0);
    assert_metric(s.admin(), &key("4xx"), 1.0);
    assert_metric(s.admin(), &key("5xx"), 2.0);
    assert_eq!(
        b.accepted(),
        1,
        "error statuses must not cost the connection"
    );
}

#[test]
fn backend_connection_close_is_not_reused() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let r = c.get("/close");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    // The backend's `Connection: close` is hop-by-hop: the client connection stays usable.
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(
        b.accepted(),
        2,
        "a connection the backend closed was reused"
    );
}

// ---- connection reuse (HAProxy's reference counts, and scenarios that tell the modes apart) ------

/// Whether, in three situations, a request reused a backend connection rather than opening one:
/// 0. a second client's **first** request while the only pooled connection is another client's
///    unproven one (it served one request);
/// 1. a client's **later** request while the only pooled connection is another client's;
/// 2. a second client's **first** request while the only pooled connection is proven (it served
///    two requests).
///
/// Expected (HAProxy's table): never [no, no, no], safe [no, yes, no], aggressive [no, yes, yes],
/// always [yes, yes, yes]: each mode has a signature of its own, so a mode mapped onto another
/// fails its test.
fn reuse_signature(mode: &str) -> [bool; 3] {
    let extra = format!("reuse = \"{mode}\"");
    // 0.
    let b = TestBackend::start();
    let s = start(&b, &extra);
    let mut a = Client::connect(s.addr());
    assert_eq!(a.get("/").text(), "ok");
    let mut other = Client::connect(s.addr());
    assert_eq!(other.get("/").text(), "ok");
    let first_on_unproven = b.accepted() == 1;
    drop((a, other, s, b));
    // 1. B's first request is answered with `Connection: close`, so B keeps no connection; then A
    // (still open) leaves one idle, and B's second request finds only A's.
    let b = TestBackend::start();
    let s = start(&b, &extra);
    let mut bee = Client::connect(s.addr());
    assert_eq!(bee.get("/close").text(), "ok");
    let mut a = Client::connect(s.addr());
    assert_eq!(a.get("/").text(), "ok");
    assert_eq!(b.accepted(), 2);
    assert_eq!(bee.get("/").text(), "ok");
    let later_on_others = b.accepted() == 2;
    drop((a, bee, s, b));
    // 2.
    let b = TestBackend::start();
    let s = start(&b, &extra);
    let mut a = Client::connect(s.addr());
    assert_eq!(a.get("/").text(), "ok");
    assert_eq!(a.get("/").text(), "ok");
    assert_eq!(b.accepted(), 1);
    let mut other = Client::connect(s.addr());
    assert_eq!(other.get("/").text(), "ok");
    let first_on_proven = b.accepted() == 1;
    [first_on_unproven, later_on_others, first_on_proven]
}

/// `coreplex_backend_connections_{new,reused}_total` of the one server of backend `app`.
fn new_and_reused(s: &Server, server: SocketAddr) -> (f64, f64) {
    let text = metrics_text(s.admin());
    let get = |name: &str| {
        let key = format!("{name}{{backend=\"app\",server=\"{server}\"}}");
        metric_in(&text, &key).unwrap_or_else(|| panic!("{key} missing:\n{text}"))
    };
    (
        get("coreplex_backend_connections_new_total"),
        get("coreplex_backend_connections_reused_total"),
    )
}

#[test]
fn reuse_safe_counts_and_metrics() {
    assert_eq!(reuse_signature("safe"), [false, true, false]);
    let b = TestBackend::start();
    let s = start(&b, r#"reuse = "safe""#);
    on_one_connection(&s, 20);
    assert_eq!(
        b.accepted(),
        1,
        "safe: 20 requests on one client connection"
    );
    assert_eq!(new_and_reused(&s, b.addr()), (1.0, 19.0));
    assert_metric(
        s.admin(),
        "coreplex_backend_responses_total{backend=\"app\",class=\"2xx\"}",
        20.0,
    );
    on_separate_connections(&s, 20);
    assert_eq!(
        b.accepted(),
        21,
        "safe: the first request of each of 20 client connections needs a new connection"
    );
    assert_eq!(new_and_reused(&s, b.addr()), (21.0, 19.0));
}

#[test]
fn reuse_never_counts() {
    assert_eq!(reuse_signature("never"), [false, false, false]);
    let b = TestBackend::start();
    let s = start(&b, r#"reuse = "never""#);
    on_one_connection(&s, 20);
    assert_eq!(
        b.accepted(),
        1,
        "never: 20 requests on one client connection"
    );
    on_separate_connections(&s, 20);
    assert_eq!(
        b.accepted(),
        21,
        "never: 20 client connections, 20 new backend connections"
    );
    assert_eq!(new_and_reused(&s, b.addr()), (21.0, 19.0));
}

#[test]
fn reuse_aggressive_takes_a_proven_connection() {
    assert_eq!(reuse_signature("aggressive"), [false, true, true]);
    let b = TestBackend::start();
    let s = start(&b, r#"reuse = "aggressive""#);
    // Two requests make the backend connection proven ("safe").
    on_one_connection(&s, 2);
    assert_eq!(b.accepted(), 1);
    on_separate_connections(&s, 20);
    assert_eq!(
        b.accepted(),
        1,
        "aggressive: 20 client connections took new backend connections despite a proven one"
    );
    assert_eq!(new_and_reused(&s, b.addr()), (1.0, 21.0));
    // From cold no connection ever serves two requests: 20 separate clients open 20.
    let b = TestBackend::start();
    let s = start(&b, r#"reuse = "aggressive""#);
    on_separate_connections(&s, 20);
    assert_eq!(b.accepted(), 20, "aggressive reused an unproven connection");
}

#[test]
fn reuse_always_shares_one_connection() {
    assert_eq!(reuse_signature("always"), [true, true, true]);
    let b = TestBackend::start();
    let s = start(&b, r#"reuse = "always""#);
    on_separate_connections(&s, 20);
    assert_eq!(
        b.accepted(),
        1,
        "always: 20 client connections, one backend connection"
    );
    assert_eq!(new_and_reused(&s, b.addr()), (1.0, 19.0));
}

#[test]
fn ntlm_and_negotiate_connections_stay_private_even_with_reuse_always() {
    for (path, scheme) in [("/ntlm", "NTLM"), ("/negotiate", "Negotiate")] {
        let b = TestBackend::start();
        let s = start(&b, r#"reuse = "always""#);
        let mut a = Client::connect(s.addr());
        let r = a.get(path);
        assert_eq!(r.status, 401, "{}", r.head);
        assert_eq!(r.header("www-authenticate").as_deref(), Some(scheme));
        assert_eq!(b.accepted(), 1);
        let mut other = Client::connect(s.addr());
        assert_eq!(
            other.get("/conn").text(),
            "c1",
            "another client took the connection that answered 401 {scheme}"
        );
        // The authenticating client goes on on its own connection, even with another idle.
        assert_eq!(a.get("/conn").text(), "c0", "{scheme}");
        assert_eq!(a.get("/conn").text(), "c0", "{scheme}");
        assert_eq!(b.accepted(), 2);
        assert_metric(
            s.admin(),
            &format!(
                "coreplex_backend_connections_idle{{backend=\"app\",server=\"{}\",list=\"private\"}}",
                b.addr()
            ),
            1.0,
        );
    }
}

// ---- limits: maxconn, queue, conn_rate ----------------------------------------------------------

#[test]
fn request_queues_behind_a_busy_server_then_succeeds() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "maxconn = 1")],
        r#"timeouts = { queue = "5s", server = "10s" }"#,
        "",
    ));
    let mut a = Client::connect(s.addr());
    a.send(&get("/delay/1500"));
    assert!(
        wait_until(Duration::from_secs(3), || b.requests() == 1),
        "A's request did not reach the backend"
    );
    let t0 = Instant::now();
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    let waited = t0.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert!(
        waited >= Duration::from_millis(1000),
        "B was answered after {waited:?}: not queued behind A (maxconn = 1)"
    );
    let r = a.response(false, true).expect("A's response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(b.requests(), 2);
}

#[test]
fn queue_timeout_gives_503() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "maxconn = 1")],
        r#"timeouts = { queue = "300ms", server = "10s" }"#,
        "",
    ));
    let mut a = Client::connect(s.addr());
    a.send(&get("/delay/1500"));
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    let t0 = Instant::now();
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "503 after {waited:?}, expected about 300 ms"
    );
    let r = a.response(false, true).expect("A's response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(b.requests(), 1, "the timed-out request reached the backend");
    assert_metric_at_least(s.admin(), &errors_key("queue_timeout"), 1.0);
}

#[test]
fn connection_rate_limit_delays_instead_of_refusing() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "conn_rate = 2")],
        "reuse = \"never\"\ntimeouts = { queue = \"5s\" }",
        "",
    ));
    let addr = s.addr();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.get("/");
                (r.status, r.text())
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let took = t0.elapsed();
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!((*status, body.as_str()), (200, "ok"), "client {i}");
    }
    assert_eq!(b.accepted(), 6);
    assert!(
        took >= Duration::from_millis(1400),
        "6 connections at conn_rate = 2/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

// ---- connect failures and timeouts ----------------------------------------------------------------

#[test]
fn dead_server_gives_503_and_counts_connect_failed() {
    let s = Server::start(&proxy_config(&[srv(closed_port(), "")], "retries = 0", ""));
    let mut c = Client::connect(s.addr());
    let t0 = Instant::now();
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_metric(s.admin(), &errors_key("connect_failed"), 1.0);
}

#[test]
fn connect_failure_is_retried_on_another_server() {
    let b = TestBackend::start();
    let dead = closed_port();
    let s = Server::start(&proxy_config(
        &[srv(dead, ""), srv(b.addr(), "")],
        "reuse = \"never\"\nretries = 1\nbalance = \"roundrobin\"",
        "",
    ));
    for i in 0..10 {
        let mut c = Client::connect(s.addr());
        let r = c.get("/");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok"),
            "request {i}: {}",
            r.head
        );
    }
    assert_eq!(b.accepted(), 10);
    // Every request was saved by its retry: no request failed, each failed attempt was retried.
    assert_metric(s.admin(), &errors_key("connect_failed"), 0.0);
    let text = metrics_text(s.admin());
    let failures = metric_in(
        &text,
        &format!(
            "coreplex_backend_server_connect_failures_total{{backend=\"app\",server=\"{dead}\"}}"
        ),
    )
    .unwrap();
    assert!(failures >= 1.0, "the dead server was never tried:\n{text}");
    assert_eq!(
        metric_in(&text, "coreplex_backend_retries_total{backend=\"app\"}"),
        Some(failures)
    );
}

#[test]
fn connect_timeout_gives_503() {
    let (_listener, addr, _fillers) = unaccepting_listener();
    let s = Server::start(&proxy_config(
        &[srv(addr, "")],
        "retries = 0\ntimeouts = { connect = \"300ms\" }",
        "",
    ));
    let mut c = Client::connect(s.addr());
    let t0 = Instant::now();
    let r = c.get("/");
    let took = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "answered after {took:?}, expected about 300 ms"
    );
    assert_metric(s.admin(), &errors_key("connect_timeout"), 1.0);
}

#[test]
fn server_timeout_gives_504_and_closes_the_backend_connection() {
    let b = TestBackend::start();
    let s = start(&b, r#"timeouts = { server = "500ms" }"#);
    let mut c = Client::connect(s.addr());
    let t0 = Instant::now();
    let r = c.get("/delay/3000");
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "504 after {took:?}, expected about 500 ms"
    );
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "the client connection stays open after the 504"
    );
    assert_metric(s.admin(), &errors_key("server_timeout"), 1.0);
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 0),
        "the timed-out backend connection stays open"
    );
    // The proxy lingers (reading) until the client closes too.
    drop(c);
    assert_metric(s.admin(), "coreplex_connections_current", 0.0);
}

// ---- backend connections closing ----------------------------------------------------------------

#[test]
fn pooled_connection_closed_by_the_backend_is_not_used() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/").text(), "ok");
    let idle = format!(
        "coreplex_backend_connections_idle{{backend=\"app\",server=\"{}\",list=\"idle\"}}",
        b.addr()
    );
    assert_metric(s.admin(), &idle, 1.0);
    assert_eq!(b.close_idle(), 1, "the pooled connection was not idle");
    // The proxy notices the close while the connection idles, not when it next uses it.
    assert_metric(s.admin(), &idle, 0.0);
    assert_metric(s.admin(), "coreplex_outbound_connections_current", 0.0);
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(b.accepted(), 2);
    assert_eq!(b.requests(), 2, "a request was sent on the dead connection");
    assert_metric(
        s.admin(),
        "coreplex_backend_retries_total{backend=\"app\"}",
        0.0,
    );
}

#[test]
fn reset_mid_body_truncates_and_closes_the_client_connection() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let stream = TcpStream::connect(s.addr()).unwrap();
    let mut c = Client::from_stream(stream, Duration::from_secs(5));
    c.send(&get("/reset-mid-body"));
    let r = c
        .response(false, false)
        .expect("the head the backend sent before its reset");
    assert!(
        !r.complete,
        "a complete response for a body the backend cut short: {}",
        r.head
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.framing, Framing::Length(1_000_000), "{}", r.head);
    assert_eq!(r.body_len, 10_000, "the bytes sent before the reset");
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "client connection open after a truncated body"
    );
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
}

#[test]
fn reset_before_response_gives_502() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    let r = c.get("/reset-before-response");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_metric_at_least(s.admin(), &errors_key("backend_closed"), 1.0);
}

#[test]
fn close_delimited_body_is_chunked_for_http11_clients_and_until_close_for_http10() {
    let b = TestBackend::start();
    let s = start(&b, "");
    // HTTP/1.1: the proxy frames it (chunked), so the client connection lives on.
    let mut c = Client::connect(s.addr());
    let r = c.get("/eof-body");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head);
    assert!(r.complete, "body cut short: {:?}", r.text());
    assert_eq!(r.text(), "until-close");
    assert_eq!(
        c.get("/").text(),
        "ok",
        "the connection after a reframed body"
    );
    // HTTP/1.0 has no chunks: the body ends with the close.
    let (raw, closed) = crate::harness::raw(
        s.addr(),
        b"GET /eof-body HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("\r\n\r\nuntil-close"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(
        closed,
        "HTTP/1.0 connection open after a close-delimited body"
    );
}

#[test]
fn client_abort_closes_the_backend_connection() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    c.send(&get("/delay/5000"));
    assert!(
        wait_until(Duration::from_secs(3), || b.requests() == 1),
        "the request did not reach the backend"
    );
    assert_eq!(b.open(), 1);
    drop(c);
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 0),
        "the backend connection of an aborted request stays open"
    );
    assert_metric_at_least(s.admin(), &errors_key("client_abort"), 1.0);
}

// ---- 1 GiB each way -------------------------------------------------------------------------------

#[test]
fn one_gib_download_in_bounded_memory() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::from_stream(
        TcpStream::connect(s.addr()).unwrap(),
        Duration::from_secs(60),
    );
    let t0 = Instant::now();
    c.send(format!("GET /bytes/{GIB} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let r = c.response(false, false).expect("response to the 1 GiB GET");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.framing, Framing::Length(GIB), "{}", r.head);
    assert!(r.complete, "download cut short at {} bytes", r.body_len);
    assert_eq!(r.body_len, GIB);
    let rss = peak_rss_kib(s.pid());
    eprintln!("1 GiB download: {:?}, proxy VmHWM {rss} KiB", t0.elapsed());
    assert!(rss < MAX_RSS_KIB, "proxy peak RSS {rss} KiB");
    assert_eq!(c.get("/").text(), "ok", "connection unusable after 1 GiB");
}

#[test]
fn one_gib_upload_in_bounded_memory() {
    let b = TestBackend::start();
    // `limits.max_body` (1 MiB by default, as nginx's client_max_body_size) applies to proxied
    // requests too: raise it for this listener.
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        "limits = { max_body = \"2GiB\" }",
    ));
    let stream = TcpStream::connect(s.addr()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut c = Client::from_stream(stream, Duration::from_secs(60));
    let t0 = Instant::now();
    let w = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {GIB}\r\n\r\n").as_bytes(),
        )?;
        let buf = vec![b'u'; 256 * 1024];
        let mut left = GIB;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            writer.write_all(&buf[..k])?;
            left -= k as u64;
        }
        Ok(())
    });
    let r = c.response(false, true).expect("response to the 1 GiB POST");
    assert_eq!(r.status, 200, "{}", r.head);
    w.join().unwrap().expect("upload writer");
    assert_eq!(r.text(), GIB.to_string());
    assert_eq!(b.body_bytes(), GIB);
    let rss = peak_rss_kib(s.pid());
    eprintln!("1 GiB upload: {:?}, proxy VmHWM {rss} KiB", t0.elapsed());
    assert!(rss < MAX_RSS_KIB, "proxy peak RSS {rss} KiB");
}

// ---- coreplex check ---------------------------------------------------------------------------------

#[test]
fn check_reports_backend_errors_with_their_paths() {
    let text = r#"version = 1

[[listener]]
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/"
backend = "nope"

[backend.app]
servers = [ { address = "not-an-address" } ]
reuse = "sometimes"

[backend.empty]
servers = []
"#;
    let path = write_temp("bad-backend.toml", text);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit status; stderr:\n{err}");
    for p in [
        "listener[0].route[0].backend",
        "backend.app.reuse",
        "backend.app.servers[0].address",
        "backend.empty.servers",
    ] {
        let want = format!("error: {file}: {p}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "no `{want}` line in stderr:\n{err}"
        );
    }
}

#[test]
fn check_accepts_every_backend_key() {
    let text = r#"version = 1

[global]
shards = 1

[defaults.timeouts]
connect = "2s"

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"
timeouts = { client = "5s" }

[[listener.route]]
path_prefix = "/"
backend = "app"

[backend.app]
servers = [ { address = "127.0.0.1:18080", weight = 1, maxconn = 10, maxqueue = 10, conn_rate = 100 } ]
balance = "leastconn"
reuse = "aggressive"
maxconn = 1000
queue_length = 1000
retries = 3
timeouts = { connect = "1s", server = "2s", queue = "500ms" }
pool = { max_idle_per_server = 100, idle_timeout = "60s", purge_delay = "5s", max_reuse = 1000 }
health = { fail_threshold = 3, down_for = "10s" }
tcp_keepalive = { idle = "60s", interval = "10s", count = 6 }
"#;
    let path = write_temp("full-backend.toml", text);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    assert!(
        o.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("configuration OK"),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

// ---- nginx as the backend -----------------------------------------------------------------------------

/// A Debian nginx on a temporary prefix, answering `200 nginx-ok`; stopped with SIGTERM (SIGKILL
/// would orphan its worker), then SIGKILL if it has not exited within 5 s.
pub(crate) struct Nginx {
    child: Child,
    dir: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Nginx {
    fn start() -> Nginx {
        Nginx::start_with(
            "",
            "location / {\n            default_type text/plain;\n            return 200 \"nginx-ok\";\n        }",
        )
    }

    /// nginx with `listen_options` after its `listen ADDR` and `server_body` in its server
    /// block (e.g. TLS: `ssl` and the `ssl_*` directives).
    pub(crate) fn start_with(listen_options: &str, server_body: &str) -> Nginx {
        Nginx::start_at(closed_port(), listen_options, server_body)
    }

    /// [`Nginx::start_with`] on `addr` (to start a new nginx where a stopped one listened).
    pub(crate) fn start_at(addr: SocketAddr, listen_options: &str, server_body: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "coreplex-e2e-nginx-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let conf = format!(
            r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr} {listen_options};
        {server_body}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: run tests/setup.sh");
        let child = Command::new(bin)
            .args(["-c", conf_path.to_str().unwrap(), "-p", d])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = n.child.try_wait().unwrap().is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                panic!("nginx did not open {addr} (exited: {exited}); error.log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn nginx_backend_through_the_proxy() {
    let n = Nginx::start();
    let s = Server::start(&proxy_config(&[srv(n.addr, "")], "", ""));
    for conn in 0..5 {
        let mut c = Client::connect(s.addr());
        for i in 0..10 {
            let r = c.get("/");
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "nginx-ok"),
                "connection {conn}, request {i}: {}",
                r.head
            );
        }
    }
    assert_metric(
        s.admin(),
        "coreplex_backend_responses_total{backend=\"app\",class=\"2xx\"}",
        50.0,
    );
}

// ---- listener rate limit, half-close, TCP keepalive, body limit -------------------------------

#[test]
fn listener_rate_limit_makes_new_connections_wait() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(&[srv(b.addr(), "")], "", "rate_limit = 4"));
    let addr = s.addr();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c =
                    Client::from_stream(TcpStream::connect(addr).unwrap(), Duration::from_secs(10));
                c.get("/").status
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let took = t0.elapsed();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // A burst of 4, then 4 per second: the last 8 take about 2 s.
    assert!(
        took >= Duration::from_millis(1500),
        "12 connections at rate_limit = 4/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let limited = crate::harness::metric(s.admin(), "coreplex_accept_rate_limited_total");
    assert!(limited >= 1.0, "rate limiting was not counted");
}

#[test]
fn half_close_reaches_the_backend_which_may_abandon_the_request() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let stream = TcpStream::connect(s.addr()).unwrap();
    let mut c = Client::from_stream(stream.try_clone().unwrap(), Duration::from_secs(5));
    c.send(b"GET /delay/2000 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 0),
        "the backend connection of an abandoned request stays open"
    );
    assert!(c.closed_within(Duration::from_secs(3)));
    assert_metric_at_least(s.admin(), &errors_key("client_abort"), 1.0);
}

#[test]
fn half_closed_client_gets_the_answer_of_a_backend_that_still_answers() {
    let b = TestBackend::start();
    let s = start(&b, "");
    for _ in 0..5 {
        let stream = TcpStream::connect(s.addr()).unwrap();
        let mut c = Client::from_stream(stream.try_clone().unwrap(), Duration::from_secs(5));
        // Request and FIN at once, as `printf ... | nc -N` does.
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let r = c.response(false, true).expect("the backend's answer");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert!(c.closed_within(Duration::from_secs(3)));
    }
    // The backend connections saw the FIN: none is reused or kept.
    assert!(wait_until(Duration::from_secs(3), || b.open() == 0));
    assert_eq!(b.accepted(), 5);
}

/// A half-closed client of a backend that ignores EOF (`/deaf-delay/1500`, a GET or, with
/// `post`, a POST with a body), under `client_close = MODE` and `reuse = "always"`: what the
/// client gets (`None`: closed without a response) and how long it waited, and how many backend
/// connections a second client then finds in the pool.
fn half_close_to_a_deaf_backend(mode: &str, post: bool) -> (Option<Resp>, Duration, usize) {
    let b = TestBackend::start();
    let s = start(
        &b,
        &format!("client_close = \"{mode}\"\nreuse = \"always\""),
    );
    let stream = TcpStream::connect(s.addr()).unwrap();
    let mut c = Client::from_stream(stream.try_clone().unwrap(), Duration::from_secs(5));
    if post {
        c.send(b"POST /deaf-delay/1500 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    } else {
        c.send(b"GET /deaf-delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    let t0 = Instant::now();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response(false, true);
    let waited = t0.elapsed();
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "{mode}: not closed"
    );
    // Once the deaf backend is done, a new client's first request shows whether the connection
    // went back to the pool.
    assert!(wait_until(Duration::from_secs(5), || b.requests() == 1
        && (b.open() == 0 || mode == "wait")));
    let mut next = Client::connect(s.addr());
    assert_eq!(next.get("/").text(), "ok");
    let pooled = 2 - b.accepted();
    (r, waited, pooled)
}

#[test]
fn client_close_abort_closes_the_backend_at_once() {
    for post in [false, true] {
        let (r, waited, pooled) = half_close_to_a_deaf_backend("abort", post);
        assert!(
            r.is_none(),
            "abort (post {post}): the client got a response: {r:?}"
        );
        assert!(
            waited < Duration::from_millis(1000),
            "abort: closed after {waited:?}, not at the FIN (the backend answers at 1.5 s)"
        );
        assert_eq!(pooled, 0, "abort: the backend connection was kept");
    }
}

#[test]
fn client_close_forward_lets_a_backend_that_ignores_eof_answer() {
    for post in [false, true] {
        let (r, waited, pooled) = half_close_to_a_deaf_backend("forward", post);
        let r = r.expect("forward: the backend's answer");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert!(
            waited >= Duration::from_millis(1000),
            "answered after {waited:?}"
        );
        assert_eq!(
            pooled, 0,
            "forward: a connection that saw the FIN was reused"
        );
    }
}

#[test]
fn client_close_wait_keeps_the_backend_connection_for_reuse() {
    for post in [false, true] {
        let (r, _, pooled) = half_close_to_a_deaf_backend("wait", post);
        let r = r.expect("wait: the backend's answer");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(pooled, 1, "wait: the backend connection was not reused");
    }
}

/// `(SO_KEEPALIVE, idle, interval, count)` of process `pid`'s connected socket whose local
/// (`local == true`) or peer address is `addr`, read by `tools/sockopt.py` (pidfd_getfd).
fn keepalive_of(pid: u32, addr: SocketAddr, local: bool) -> (u32, u32, u32, u32) {
    let text = crate::harness::sockopt(&["keepalive", &pid.to_string()]);
    let addr = addr.to_string();
    let line = text
        .lines()
        .find(|l| {
            let cols: Vec<&str> = l.split(' ').collect();
            cols[if local { 0 } else { 1 }] == addr
        })
        .unwrap_or_else(|| panic!("no socket with {addr} in:\n{text}"));
    let v: Vec<u32> = line
        .split(' ')
        .skip(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2], v[3])
}

#[test]
fn tcp_keepalive_is_set_on_both_sides() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "tcp_keepalive = { idle = \"77s\", interval = \"5s\", count = 3 }",
        "tcp_keepalive = { idle = \"66s\" }",
    ));
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/").status, 200);
    // The accepted socket: idle as configured, interval and count at their defaults (10 s, 6).
    assert_eq!(keepalive_of(s.pid(), s.addr(), true), (1, 66, 10, 6));
    // The backend connection: all three as configured.
    assert_eq!(keepalive_of(s.pid(), b.addr(), false), (1, 77, 5, 3));
    // `ss -o` agrees that the kernel runs a keepalive timer on both.
    let out = Command::new("ss")
        .args(["-tno", "state", "established"])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for addr in [s.addr(), b.addr()] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!(" {addr} ")) && l.contains("timer:(keepalive,")),
            "no keepalive timer on {addr}:\n{text}"
        );
    }
}

#[test]
fn tcp_keepalive_defaults_and_off() {
    let b = TestBackend::start();
    // An empty table turns keepalive on with the defaults (60 s, 10 s, 6); no table leaves it off.
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        "tcp_keepalive = {}",
    ));
    let mut c = Client::connect(s.addr());
    assert_eq!(c.get("/").status, 200);
    assert_eq!(keepalive_of(s.pid(), s.addr(), true), (1, 60, 10, 6));
    assert_eq!(keepalive_of(s.pid(), b.addr(), false).0, 0, "backend side");
}

#[test]
fn chunked_request_over_max_body_gets_413() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        "limits = { max_body = 1000 }",
    ));
    let mut c = Client::connect(s.addr());
    let chunk = vec![b'x'; 800];
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req);
    let r = c.response(false, true).expect("an answer");
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn http10_client_gets_host_added_and_a_dechunked_closed_response() {
    let b = TestBackend::start();
    let s = start(&b, "");
    // No Host: the request goes out as HTTP/1.1 with the backend's address as Host.
    let (raw, closed) = crate::harness::raw(
        s.addr(),
        b"GET /echo HTTP/1.0\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(
        closed,
        "an HTTP/1.0 connection without keep-alive stayed open"
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&format!("Host: {}\r\n", b.addr())),
        "backend saw no Host: {text}"
    );
    assert!(text.contains("GET /echo HTTP/1.1\r\n"), "{text}");
    // A chunked response to an HTTP/1.0 client loses its chunked framing and ends with a close.
    let (raw, closed) = crate::harness::raw(
        s.addr(),
        b"GET /chunked/40000 HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(
        closed,
        "a close-delimited response did not end with a close"
    );
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(raw.len() - split, 40000, "de-chunked body length");
    assert!(raw[split..].iter().all(|&c| c == FILL_BYTE));
}

#[test]
fn full_backend_queue_answers_503_at_once_and_backend_maxconn_holds() {
    let b = TestBackend::start();
    // Backend-level maxconn 1 (the server has none) and a queue of one.
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "maxconn = 1\nqueue_length = 1\ntimeouts = { queue = \"5s\", server = \"10s\" }",
        "",
    ));
    let mut a = Client::connect(s.addr());
    a.send(&get("/delay/1000"));
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    let mut queued = Client::connect(s.addr());
    queued.send(&get("/"));
    assert_metric(
        s.admin(),
        "coreplex_backend_queue_current{backend=\"app\"}",
        1.0,
    );
    assert_eq!(
        b.requests(),
        1,
        "backend maxconn 1 let a second request through"
    );
    let t0 = Instant::now();
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(
        t0.elapsed() < Duration::from_millis(2000),
        "the full queue was not refused at once (timeouts.queue is 5 s)"
    );
    assert_eq!(a.response(false, true).expect("A").status, 200);
    assert_eq!(queued.response(false, true).expect("queued").status, 200);
    assert_metric_at_least(s.admin(), &errors_key("queue_full"), 1.0);
}

// ---- regressions found by the adversarial pass ----------------------------------------------------

#[test]
fn connection_header_cannot_strip_framing_or_host() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n";
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length, host\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    req.extend_from_slice(smuggled);
    let mut c = Client::connect(s.addr());
    c.send(&req);
    let r = c.response(false, true).expect("the POST's answer");
    assert_eq!(r.status, 200, "{}", r.head);
    let echoed = r.text();
    assert!(
        echoed.contains(&format!("Content-Length: {}\r\n", smuggled.len())),
        "framing removed: {echoed}"
    );
    assert!(echoed.contains("Host: x\r\n"), "Host removed: {echoed}");
    // A follow-up on the same backend connection is answered after anything the backend might
    // have read from the body: it counts exactly two requests unless the body became one.
    assert_eq!(c.get("/").text(), "ok");
    assert_eq!(b.requests(), 2, "the body was read as a second request");
    // The same through a chunked body.
    let mut c = Client::connect(s.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let r = c.response(false, true).expect("the chunked POST's answer");
    assert_eq!((r.status, r.text().as_str()), (200, "5"), "{}", r.head);
    assert_eq!(c.get("/").text(), "ok");
    assert_eq!(b.requests(), 4);
    assert_eq!(
        b.accepted(),
        2,
        "a follow-up did not share its client's backend connection"
    );
}

#[test]
fn client_leaving_while_connecting_returns_the_slot() {
    // `abort`: the slot comes back at once. `forward` (the default) keeps the attempt for the
    // half-closed client until the connect timeout, then returns it.
    for (mode, connect) in [("abort", "10s"), ("forward", "500ms")] {
        client_leaves_while_connecting(mode, connect);
    }
}

fn client_leaves_while_connecting(mode: &str, connect: &str) {
    let (_l, addr, _fill) = unaccepting_listener();
    let s = Server::start(&proxy_config(
        &[srv(addr, "maxconn = 1")],
        &format!(
            "client_close = \"{mode}\"\nretries = 0\ntimeouts = {{ connect = \"{connect}\", queue = \"300ms\" }}"
        ),
        "",
    ));
    let server = format!("backend=\"app\",server=\"{addr}\"");
    for i in 0..2 {
        let mut c = Client::connect(s.addr());
        c.send(&get("/"));
        // The request reached the pool: the first one is connecting (its SYN is dropped); the
        // second is connecting too (`abort` returned the first slot) or queued behind the first
        // attempt (`forward` keeps it).
        if i == 0 || mode == "abort" {
            assert_metric(
                s.admin(),
                "coreplex_backend_requests_total{backend=\"app\"}",
                f64::from(i + 1),
            );
            assert_metric(
                s.admin(),
                &format!("coreplex_backend_connecting{{{server}}}"),
                1.0,
            );
        } else {
            assert_metric(
                s.admin(),
                "coreplex_backend_queue_current{backend=\"app\"}",
                1.0,
            );
        }
        drop(c);
    }
    assert_metric(
        s.admin(),
        &format!("coreplex_backend_connections_used{{{server}}}"),
        0.0,
    );
    assert_metric(
        s.admin(),
        &format!("coreplex_backend_connecting{{{server}}}"),
        0.0,
    );
    assert_metric(
        s.admin(),
        "coreplex_backend_queue_current{backend=\"app\"}",
        0.0,
    );
    assert_metric(s.admin(), "coreplex_outbound_connections_current", 0.0);
}

#[test]
fn close_delimited_body_cut_by_the_backend_is_a_reset() {
    let b = TestBackend::start();
    let s = start(&b, "");
    // HTTP/1.1: the reframed body stops without its last chunk, then the connection closes.
    let mut c = Client::connect(s.addr());
    c.send(&get("/eof-reset"));
    let r = c.response(false, true).expect("the response head");
    assert_eq!((r.status, r.framing), (200, Framing::Chunked), "{}", r.head);
    assert!(!r.complete, "a cut body looked complete: {:?}", r.text());
    assert_eq!(r.text(), "partial");
    assert!(c.closed_within(Duration::from_secs(3)));
    // HTTP/1.0: the body is delimited by the close, so only a reset can show the cut.
    let mut c = crate::harness::Conn::connect(s.addr());
    c.send(b"GET /eof-reset HTTP/1.0\r\nHost: a\r\n\r\n");
    let mut stream = c.stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break "eof",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("read: {e}"),
        }
    };
    assert!(
        String::from_utf8_lossy(&got).contains("partial"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        end, "reset",
        "a cut close-delimited body ended like a complete one"
    );
}

#[test]
fn slow_reader_is_not_a_server_timeout() {
    let b = TestBackend::start();
    // The backend is held back by the client for longer than timeouts.server: that is the
    // client's pace, bounded by the client timeout, not a late server.
    let s = start(&b, "timeouts = { server = \"400ms\" }");
    let mut c = crate::harness::Conn::connect(s.addr());
    let total = 64_000_000usize;
    c.send(format!("GET /bytes/{total} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let mut stream = c.stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_seen = false;
    let mut body = 0usize;
    let mut pauses = 0;
    let mut pending: Vec<u8> = Vec::new();
    while !head_seen || body < total {
        let n = std::io::Read::read(&mut stream, &mut buf).expect("read");
        assert!(n > 0, "closed after {body} body bytes");
        got += n;
        if !head_seen {
            pending.extend_from_slice(&buf[..n]);
            if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                head_seen = true;
                body = pending.len() - (p + 4);
            }
        } else {
            body += n;
        }
        if pauses < 2 && got > 100_000 * (pauses + 1) {
            pauses += 1;
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
    assert_eq!(body, total);
}

#[test]
fn absolute_form_goes_out_in_origin_form_with_its_own_host() {
    let b = TestBackend::start();
    let s = start(&b, "");
    let mut c = Client::connect(s.addr());
    c.send(b"GET http://x:8080/echo?q=1 HTTP/1.1\r\nHost: internal.example\r\n\r\n");
    let r = c.response(false, true).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.head);
    let echoed = r.text();
    assert!(echoed.starts_with("GET /echo?q=1 HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("Host: x:8080\r\n"), "{echoed}");
    assert!(!echoed.contains("internal.example"), "{echoed}");
    assert!(echoed.contains("Via: 1.1 coreplex\r\n"), "{echoed}");
}

#[test]
fn out_of_descriptors_is_a_503_that_spares_the_server_and_recovers() {
    let b = TestBackend::start();
    // One connect failure would mark the server down for a minute if descriptor exhaustion
    // counted against it.
    let s = start(
        &b,
        "retries = 0\nhealth = { fail_threshold = 1, down_for = \"60s\" }",
    );
    let pid = s.pid();
    // The lowest free descriptor number: a limit there leaves no descriptor to allocate.
    let lowest_free = || {
        let open: std::collections::HashSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        (0..).find(|n| !open.contains(n)).unwrap()
    };
    let prlimit = |n: usize| {
        let st = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .expect("prlimit (util-linux) runs");
        assert!(st.success(), "prlimit failed");
    };
    let hard = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse::<usize>().ok())
        .expect("the proxy's open-files limit");
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_fds();
    // Room for the client's socket (once accepted), none for a backend connection.
    let mut c = Client::connect(s.addr());
    assert!(
        wait_until(Duration::from_secs(3), || open_fds() == before + 1),
        "the client connection was not accepted"
    );
    prlimit(lowest_free());
    let r = c.get("/");
    assert_eq!(r.status, 503, "{}", r.head);
    prlimit(hard);
    drop(c);
    assert_metric_at_least(s.admin(), &errors_key("no_slot"), 1.0);
    let mut c = Client::connect(s.addr());
    let r = c.get("/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "the server was marked down by a local failure: {}",
        r.head
    );
}

#[test]
fn client_fin_during_the_backend_connect_reaches_the_backend() {
    use std::io::Read;
    let (listener, addr, fillers) = unaccepting_listener();
    let s = start_for(addr, "retries = 0\ntimeouts = { connect = \"5s\" }");
    let stream = TcpStream::connect(s.addr()).unwrap();
    let mut c = Client::from_stream(stream.try_clone().unwrap(), Duration::from_secs(6));
    // The proxy's SYN is dropped (full accept queue): it sits connecting while the FIN arrives
    // (its SYN is retried a second after the first, so the connect cannot complete sooner).
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_metric(
        s.admin(),
        &format!("coreplex_backend_connecting{{backend=\"app\",server=\"{addr}\"}}"),
        1.0,
    );
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    // The proxy's kernel has acknowledged the FIN: our socket is in FIN-WAIT-2.
    let local = stream.local_addr().unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || {
            let out = Command::new("ss")
                .args(["-tnH", "state", "fin-wait-2", "src", &local.to_string()])
                .output()
                .expect("ss (iproute2) runs");
            !out.stdout.is_empty()
        }),
        "the FIN was not acknowledged"
    );
    drop(fillers);
    let backend = std::thread::spawn(move || -> Result<bool, String> {
        let deadline = Instant::now() + Duration::from_secs(4);
        loop {
            let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
            let mut sock: TcpStream = sock.into();
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // Fillers were closed without sending: skip them.
            let saw_fin = loop {
                match sock.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break false,
                }
            };
            if got.is_empty() {
                if Instant::now() > deadline {
                    return Err("the proxy's connection never came".into());
                }
                continue;
            }
            let body = if saw_fin { "sawfin" } else { "nofin" };
            let _ = sock.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            return Ok(saw_fin);
        }
    });
    let r = c.response(false, true).expect("the backend's answer");
    let saw_fin = backend.join().unwrap().expect("backend");
    assert!(saw_fin, "the client's FIN was not passed on: {}", r.text());
    assert_eq!(r.text(), "sawfin");
}

#[test]
fn client_side_timeouts_apply_to_proxied_connections() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        "timeouts = { http_keep_alive = \"300ms\", client = \"400ms\" }",
    ));
    // Keep-alive: after a proxied response the connection waits http_keep_alive, then closes.
    let mut c = Client::connect(s.addr());
    // Taken before the request, which the keep-alive timer follows.
    let t0 = Instant::now();
    assert_eq!(c.get("/").status, 200);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "idle connection kept"
    );
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(290), // the wheel counts whole ms: a little slack
        "closed after {idle:?}, before http_keep_alive"
    );
    // Client timeout: a body that stops coming gets 408 and the backend connection is dropped
    // (the first client's pooled connection stays: one left).
    let mut c = Client::connect(s.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\npartial");
    let r = c.response(false, true).expect("408");
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(
        wait_until(Duration::from_secs(3), || b.open() == 1),
        "the backend connection of the cut upload stays open ({} open)",
        b.open()
    );
    assert_eq!(b.accepted(), 2);
}

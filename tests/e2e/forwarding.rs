//! Forwarding options wired from the configuration, seen by the backend in the request head it
//! echoes: `via = false`, `forwarded = true` (RFC 7239, appended), `forwarded_for = false` (the
//! client's `X-Forwarded-For` passed on untouched, nothing added), `X-Forwarded-Proto` added only
//! when absent; routes chosen by `host` (case-insensitive, port ignored, absolute-form authority);
//! and the listener overrides of every request limit, in both directions.

use crate::backend::{Client, TestBackend};
use crate::harness::{config, Conn, Server};
use crate::proxy::{fields, start, values};

/// The request head the backend received for `req` sent through a proxy with `backend_extra`.
fn echoed(backend_extra: &str, req: &[u8]) -> Vec<(String, String)> {
    let b = TestBackend::start();
    let s = start(&b, backend_extra);
    let mut c = Client::connect(s.addr());
    c.send(req);
    let r = c.response(false, true).expect("the echo");
    assert_eq!(r.status, 200, "{}", r.head);
    fields(&r.text())
}

const PLAIN: &[u8] = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n";
const WITH_XFF: &[u8] =
    b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.9\r\n\r\n";

#[test]
fn defaults_add_via_xff_and_proto_but_no_forwarded() {
    let f = echoed("", WITH_XFF);
    assert_eq!(values(&f, "via"), ["1.1 coreplex"]);
    assert_eq!(values(&f, "x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(values(&f, "x-forwarded-proto"), ["http"]);
    // Not ours to extend: the client's Forwarded passes through as it came.
    assert_eq!(values(&f, "forwarded"), ["for=10.0.0.9"]);
}

#[test]
fn via_false_adds_no_via() {
    let f = echoed("via = false", PLAIN);
    assert!(values(&f, "via").is_empty(), "{f:?}");
    assert_eq!(values(&f, "x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn forwarded_true_appends_an_rfc7239_element() {
    let f = echoed("forwarded = true", WITH_XFF);
    assert_eq!(
        values(&f, "forwarded"),
        ["for=10.0.0.9, for=127.0.0.1;proto=http"]
    );
    let f = echoed("forwarded = true", PLAIN);
    assert_eq!(values(&f, "forwarded"), ["for=127.0.0.1;proto=http"]);
}

#[test]
fn forwarded_for_false_passes_the_clients_fields_untouched() {
    let f = echoed("forwarded_for = false", WITH_XFF);
    assert_eq!(values(&f, "x-forwarded-for"), ["10.0.0.1"]);
    assert!(values(&f, "x-forwarded-proto").is_empty(), "{f:?}");
    let f = echoed("forwarded_for = false", PLAIN);
    assert!(values(&f, "x-forwarded-for").is_empty(), "{f:?}");
}

#[test]
fn x_forwarded_proto_is_added_only_when_absent() {
    let f = echoed(
        "",
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(values(&f, "x-forwarded-proto"), ["https"]);
}

#[test]
fn routes_match_the_host_case_insensitively_without_its_port() {
    let b = TestBackend::start();
    let cfg = format!(
        r#"version = 1

[global]
shards = 1
max_connections = 64

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"

[[listener.route]]
host = "API.example"
path_prefix = "/"
backend = "app"

[[listener.route]]
path_prefix = "/"
respond = {{ body = "direct" }}

[backend.app]
servers = [ {{ address = "{}" }} ]
"#,
        b.addr()
    );
    let s = Server::start(&cfg);
    let mut c = Client::connect(s.addr());
    for (req, want) in [
        ("GET / HTTP/1.1\r\nHost: api.example\r\n\r\n", "ok"),
        ("GET / HTTP/1.1\r\nHost: Api.Example:8080\r\n\r\n", "ok"),
        ("GET / HTTP/1.1\r\nHost: other.example\r\n\r\n", "direct"),
        ("GET / HTTP/1.1\r\nHost: api.example.evil\r\n\r\n", "direct"),
        ("GET http://api.example/ HTTP/1.1\r\nHost: x\r\n\r\n", "ok"),
    ] {
        c.send(req.as_bytes());
        let r = c.response(false, true).expect("an answer");
        assert_eq!(r.text(), want, "{req:?}");
    }
    assert_eq!(b.requests(), 3);
}

/// The status of `req` on a direct-response listener configured with `limits` in
/// `[defaults.limits]` and `listener_limits` as the listener's own `limits`.
fn status_with(defaults: &str, listener_limits: &str, req: &[u8]) -> u16 {
    let s = Server::start(&config(
        &format!("[defaults.limits]\n{defaults}\n"),
        &format!("limits = {{ {listener_limits} }}"),
    ));
    let mut c = Conn::connect(s.addr());
    c.send_lossy(req);
    c.response().status
}

#[test]
fn the_listener_overrides_every_default_limit_both_ways() {
    let long_target = format!("GET /?{} HTTP/1.1\r\nHost: a\r\n\r\n", "q".repeat(300));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "h".repeat(3000)
    );
    let many: String = (0..30).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_fields = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let body = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n{}",
        "b".repeat(500)
    );
    // (key, small, large, request, status when too large)
    let cases = [
        ("max_request_line", "128", "4096", &long_target, 414),
        ("max_header_bytes", "1024", "8192", &big_head, 431),
        ("max_headers", "10", "100", &many_fields, 431),
        ("max_body", "100", "1000", &body, 413),
    ];
    for (key, small, large, req, refused) in cases {
        let (small, large) = (format!("{key} = {small}"), format!("{key} = {large}"));
        assert_eq!(
            status_with(&small, &large, req.as_bytes()),
            200,
            "listener {large} over defaults {small}"
        );
        assert_eq!(
            status_with(&large, &small, req.as_bytes()),
            refused,
            "listener {small} over defaults {large}"
        );
    }
}

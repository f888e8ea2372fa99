//! Upgrade tunnels to backends (`proxy::tunnel`): WebSocket upgrades carried to the Python
//! `websockets` server and to a coreplex echo endpoint in another process, a refused upgrade
//! passed on, other protocols only where a route allows them, half-closes both ways, bytes right
//! behind the 101, `timeouts.tunnel`, and the counters going back to zero.

use crate::harness::{metric, wait_metric, Conn, Server};
use crate::ws_proxy::{front_config, Backend};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const H2_PROBE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/e2e/tools/h2_ws_probe.py"
);

/// An h2c proxy (prior knowledge) whose every path goes to backend `app` at `backend`, with
/// `route_extra` in the route.
fn h2c_proxy(backend: SocketAddr, route_extra: &str) -> Server {
    Server::start(&front_config(
        backend,
        "http2 = { h2c = true }",
        route_extra,
        "",
    ))
}

/// `tools/h2_ws_probe.py` with `streams` extended CONNECT streams of `protocol`.
fn h2_probe(addr: SocketAddr, streams: usize, protocol: &str) -> Vec<String> {
    let out = Command::new("python3")
        .arg(H2_PROBE)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("/chat")
        .arg(streams.to_string())
        .arg(protocol)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "h2_ws_probe: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A proxy whose listener routes `/x/...` (with `route_extra`, e.g. `upgrade = [...]`) and
/// every other path to backend `app` at `backend`; `global_extra` goes after `[global]`.
fn proxy(backend: SocketAddr, route_extra: &str, global_extra: &str) -> Server {
    Server::start(&format!(
        r#"version = 1

[global]
shards = 1
max_connections = 1024
{global_extra}

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/x/"
backend = "app"
{route_extra}

[[listener.route]]
path_prefix = "/"
backend = "app"

[backend.app]
servers = [ {{ address = "{backend}" }} ]
"#
    ))
}

/// The sum of series `name` for backend `app` (every server and list).
fn app_sum(admin: SocketAddr, name: &str) -> f64 {
    let prefix = format!("{name}{{backend=\"app\"");
    crate::harness::metrics_text(admin)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Idle connections in backend `app`'s pool (every list).
fn pool_idle(admin: SocketAddr) -> f64 {
    app_sum(admin, "coreplex_backend_connections_idle")
}

/// Backend `app`'s connections in use (slots counted against maxconn).
fn pool_used(admin: SocketAddr) -> f64 {
    app_sum(admin, "coreplex_backend_connections_used")
}

fn probe(mode: &str, addr: SocketAddr, path: &str) -> String {
    crate::websocket::probe_at(mode, addr, path, &[])
}

/// Sends an upgrade request for `protocol` to `path` and reads the response head; returns the
/// connection (bytes after the head are in `pending`) and the head.
fn upgrade(addr: SocketAddr, path: &str, protocol: &str) -> (Conn, String) {
    let mut c = Conn::connect(addr);
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response_within(Duration::from_secs(5), false);
    let head = format!("{} {:?} {}", r.status, r.headers, r.text());
    (c, head)
}

/// Reads exactly `n` bytes (what `c` received already first).
fn read_n(c: &mut Conn, stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = c.take_pending();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while got.len() < n {
        let k = stream.read(&mut buf).expect("tunnel bytes");
        assert!(k > 0, "EOF after {} of {n} bytes: {got:?}", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

#[test]
fn websockets_are_tunnelled_to_an_independent_server() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "", "");
    let out = probe("echo", server.addr(), "/chat");
    for line in [
        "ok messages",
        "ok fragmented",
        "ok ping",
        "ok pipelined",
        "closed 1000",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }
    let admin = server.admin();
    wait_metric(
        admin,
        "coreplex_tunnels_total{kind=\"websocket\"}",
        |v| v == 1.0,
        "1",
    );
    wait_metric(admin, "coreplex_tunnels_current", |v| v == 0.0, "0");
    wait_metric(
        admin,
        "coreplex_websocket_current{kind=\"tunnel\"}",
        |v| v == 0.0,
        "0",
    );
    // The tunnel's backend connection closed with it: none is in use or idle in the pool.
    assert!(crate::backend::wait_until(
        Duration::from_secs(3),
        || pool_used(admin) == 0.0
    ));
    assert_eq!(pool_idle(admin), 0.0);
    assert_eq!(backend.conns(), 1);
}

#[test]
fn websockets_are_tunnelled_to_a_coreplex_echo_endpoint() {
    let echo = Server::start(&crate::harness::config(
        "",
        "[[listener.route]]\npath = \"/chat\"\nwebsocket = \"echo\"",
    ));
    let server = proxy(echo.addr(), "", "");
    let out = probe("echo", server.addr(), "/chat");
    assert!(out.lines().any(|l| l == "ok pipelined"), "{out}");
    assert!(out.lines().any(|l| l == "closed 1000"), "{out}");
    // The echo endpoint saw every message and the close handshake.
    wait_metric(
        echo.admin(),
        "coreplex_websocket_messages_total{direction=\"in\"}",
        |v| v == 1008.0,
        "1008",
    );
    wait_metric(
        server.admin(),
        "coreplex_tunnels_current",
        |v| v == 0.0,
        "0",
    );
}

#[test]
fn a_refused_upgrade_is_passed_on_and_the_connection_goes_on() {
    let backend = Backend::python("raw");
    let server = proxy(backend.addr, "", "");
    let (mut c, head) = upgrade(server.addr(), "/refuse", "websocket");
    assert!(head.starts_with("403"), "{head}");
    // Still HTTP/1.1: the next request on the same connection is answered.
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upgrade=none");
    let admin = server.admin();
    assert_eq!(
        metric(admin, "coreplex_upgrades_refused_by_backend_total"),
        1.0
    );
    assert_eq!(metric(admin, "coreplex_tunnels_current"), 0.0);
    // Both requests rode one backend connection: the refusal left it reusable.
    assert_eq!(backend.conns(), 1);
}

#[test]
fn other_protocols_tunnel_only_where_the_route_allows_them() {
    let backend = Backend::python("raw");
    let server = proxy(backend.addr, "upgrade = [\"x-echo\", \"websocket\"]", "");
    // The default route tunnels only websocket: the backend never sees the Upgrade.
    let (_, head) = upgrade(server.addr(), "/plain", "x-echo");
    assert!(
        head.starts_with("200") && head.ends_with("upgrade=none"),
        "{head}"
    );
    // Where it is allowed, the 101 comes back with its Upgrade and bytes flow both ways.
    let (c, head) = upgrade(server.addr(), "/x/echo", "x-echo");
    assert!(head.starts_with("101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-echo"), "{head}");
    let mut conn = c;
    let mut s = conn.stream.try_clone().unwrap();
    s.write_all(b"ping-through").unwrap();
    assert_eq!(read_n(&mut conn, &mut s, 12), b"ping-through");
    // A protocol the route does not list is not tunnelled, even beside an allowed one.
    let (_, head) = upgrade(server.addr(), "/x/echo", "x-echo, other");
    assert!(
        head.starts_with("200") && head.ends_with("upgrade=none"),
        "{head}"
    );
    let admin = server.admin();
    assert_eq!(metric(admin, "coreplex_tunnels_total{kind=\"other\"}"), 1.0);
    assert_eq!(metric(admin, "coreplex_tunnels_current"), 1.0);
    // The open tunnel holds its slot against maxconn.
    assert_eq!(pool_used(admin), 1.0);
    assert_eq!(app_sum(admin, "coreplex_backend_tunnels"), 1.0);
    drop(s);
    drop(conn);
    wait_metric(admin, "coreplex_tunnels_current", |v| v == 0.0, "0");
    assert!(crate::backend::wait_until(
        Duration::from_secs(3),
        || pool_used(admin) == 0.0
    ));
}

#[test]
fn half_closes_travel_both_ways_and_bytes_behind_the_101_arrive() {
    let backend = Backend::python("raw");
    let server = proxy(backend.addr, "upgrade = [\"x-echo\"]", "");
    let (mut c, head) = upgrade(server.addr(), "/x/early", "x-echo");
    assert!(head.starts_with("101"), "{head}");
    let mut s = c.stream.try_clone().unwrap();
    // `early` was written right behind the 101's head by the backend.
    assert_eq!(read_n(&mut c, &mut s, 5), b"early");
    s.write_all(b"abc").unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    // Our FIN reaches the backend, which answers `bye` and its own FIN: both come back.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the rest, then EOF");
    assert_eq!(rest, b"bye");
    wait_metric(
        server.admin(),
        "coreplex_tunnels_current",
        |v| v == 0.0,
        "0",
    );
    wait_metric(
        server.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "0",
    );
}

#[test]
fn a_backend_that_hangs_up_after_its_101_closes_the_client() {
    let backend = Backend::python("raw");
    let server = proxy(backend.addr, "", "");
    let (mut c, head) = upgrade(server.addr(), "/hangup", "websocket");
    assert!(head.starts_with("101"), "{head}");
    // The backend's FIN is passed on; the client's own FIN then ends the tunnel.
    let (eof, _) = c.expect_eof(Duration::from_secs(5));
    assert!(eof, "the backend's FIN did not reach the client");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let admin = server.admin();
    wait_metric(admin, "coreplex_tunnels_current", |v| v == 0.0, "0");
    wait_metric(admin, "coreplex_connections_current", |v| v == 0.0, "0");
}

#[test]
fn an_idle_tunnel_closes_after_timeouts_tunnel_and_traffic_keeps_it_open() {
    let backend = Backend::python("raw");
    let server = proxy(
        backend.addr,
        "upgrade = [\"x-echo\"]",
        "[defaults.timeouts]\ntunnel = \"400ms\"",
    );
    // Traffic every 100 ms for 1.2 s (three timeouts) keeps it open.
    let (mut c, head) = upgrade(server.addr(), "/x/echo", "x-echo");
    assert!(head.starts_with("101"), "{head}");
    let mut s = c.stream.try_clone().unwrap();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"k").unwrap();
        assert_eq!(read_n(&mut c, &mut s, 1), b"k");
    }
    // Then silence: closed after about 400 ms (not before), on both ends.
    let silent = Instant::now();
    let (eof, _) = c.expect_eof(Duration::from_secs(5));
    let waited = silent.elapsed();
    assert!(eof, "the idle tunnel stayed open");
    assert!(
        waited >= Duration::from_millis(390),
        "closed after {waited:?}"
    );
    let admin = server.admin();
    wait_metric(admin, "coreplex_tunnel_timeouts_total", |v| v == 1.0, "1");
    wait_metric(admin, "coreplex_tunnels_current", |v| v == 0.0, "0");
    wait_metric(admin, "coreplex_connections_current", |v| v == 0.0, "0");
}

#[test]
fn a_hundred_websockets_on_one_h2_connection_are_tunnelled_by_extended_connect() {
    let echo = Server::start(&crate::harness::config(
        "",
        "[[listener.route]]\npath = \"/chat\"\nwebsocket = \"echo\"",
    ));
    let server = h2c_proxy(echo.addr(), "");
    // RFC 8441: announced, then 100 streams at once, each a WebSocket of its own to the
    // HTTP/1.1 backend (a GET with Upgrade and a key made here; its 101 became 200).
    let out = h2_probe(server.addr(), 100, "websocket");
    assert_eq!(
        out,
        [
            "settings enable_connect_protocol=1",
            "status 200 100",
            "echoed 100",
            "ended 100"
        ]
    );
    let admin = server.admin();
    assert_eq!(metric(admin, "coreplex_h2_tunnels_total"), 100.0);
    wait_metric(admin, "coreplex_h2_tunnels_current", |v| v == 0.0, "0");
    wait_metric(
        admin,
        "coreplex_websocket_current{kind=\"h2_stream\"}",
        |v| v == 0.0,
        "0",
    );
    // The backend saw 100 valid upgrades and their messages.
    let backend = echo.admin();
    assert_eq!(metric(backend, "coreplex_websocket_upgrades_total"), 100.0);
    wait_metric(
        backend,
        "coreplex_websocket_messages_total{direction=\"in\"}",
        |v| v == 100.0,
        "100",
    );
    // A protocol the route does not tunnel, and so a plain CONNECT: 501 at once.
    let out = h2_probe(server.addr(), 2, "x-other");
    assert_eq!(out[1..], ["status 501 2", "echoed 0", "ended 2"]);
}

#[test]
fn extended_connect_is_announced_only_where_a_route_tunnels() {
    let echo = Server::start(&crate::harness::config(
        "",
        "[[listener.route]]\npath = \"/chat\"\nwebsocket = \"echo\"",
    ));
    let server = h2c_proxy(echo.addr(), "upgrade = []");
    assert_eq!(
        h2_probe(server.addr(), 1, "websocket"),
        ["settings enable_connect_protocol=0"]
    );
}

const H2_WS_BACKEND: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/e2e/tools/h2_ws_backend.py"
);

/// 20 Python `websockets` clients at once through `addr`, each echoing 3 messages; prints
/// `ok N` with the clients that got every echo back.
const TWENTY_CLIENTS: &str = r#"
import asyncio, sys, websockets
async def one(uri, i):
    async with websockets.connect(uri, compression=None, ping_interval=None) as ws:
        for k in range(3):
            m = f"client {i} message {k} " + "x" * (i * 100)
            await ws.send(m)
            if await ws.recv() != m:
                return 0
        await asyncio.sleep(0.5)  # all 20 open at once
    return 1
async def main():
    uri = sys.argv[1]
    done = await asyncio.gather(*(one(uri, i) for i in range(20)))
    print("ok", sum(done))
asyncio.run(main())
"#;

#[test]
fn http1_websockets_share_one_h2_backend_connection() {
    let backend = Backend::script(H2_WS_BACKEND, &[]);
    let server = Server::start(&front_config(
        backend.addr,
        "",
        "",
        "protocol = \"h2\"\nreuse = \"always\"",
    ));
    let out = Command::new("python3")
        .args(["-c", TWENTY_CLIENTS])
        .arg(format!("ws://{}/chat", server.addr()))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "ok 20",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 WebSockets, each an extended CONNECT stream on one backend connection (`always`
    // lets every client's streams share it; `safe` would give each client its own).
    assert_eq!(backend.conns(), 1);
    let admin = server.admin();
    assert_eq!(metric(admin, "coreplex_tunnels_over_h2_total"), 20.0);
    assert_eq!(
        metric(admin, "coreplex_tunnels_total{kind=\"websocket\"}"),
        20.0
    );
    wait_metric(admin, "coreplex_tunnels_current", |v| v == 0.0, "0");
    wait_metric(admin, "coreplex_connections_current", |v| v == 0.0, "0");
}

#[test]
fn an_h2_backend_without_extended_connect_gets_no_websocket() {
    let backend = Backend::script(H2_WS_BACKEND, &["noext"]);
    let server = Server::start(&front_config(
        backend.addr,
        "",
        "",
        "protocol = \"h2\"\nreuse = \"always\"",
    ));
    let code = |_: ()| {
        let o = crate::harness::curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &format!("http://{}/chat", server.addr()),
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The server's SETTINGS do not announce RFC 8441 and it speaks only h2: 502, learned (the
    // second asks no stream of it).
    assert_eq!(code(()), "502");
    assert_eq!(code(()), "502");
    assert_eq!(
        metric(server.admin(), "coreplex_tunnels_over_h2_total"),
        0.0
    );
}

#[test]
fn h2_clients_websockets_go_on_as_extended_connect_streams_to_an_h2_backend() {
    let backend = Backend::script(H2_WS_BACKEND, &[]);
    let server = Server::start(&front_config(
        backend.addr,
        "http2 = { h2c = true }",
        "",
        "protocol = \"h2\"\nreuse = \"always\"",
    ));
    let out = h2_probe(server.addr(), 100, "websocket");
    assert_eq!(
        out,
        [
            "settings enable_connect_protocol=1",
            "status 200 100",
            "echoed 100",
            "ended 100"
        ]
    );
    // 100 client streams, 100 backend streams, one backend connection.
    assert_eq!(backend.conns(), 1);
    let admin = server.admin();
    assert_eq!(metric(admin, "coreplex_h2_tunnels_total"), 100.0);
    wait_metric(admin, "coreplex_h2_tunnels_current", |v| v == 0.0, "0");
}

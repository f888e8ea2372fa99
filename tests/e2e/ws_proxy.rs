//! WebSocket-aware routes (`websocket = "terminate"` with a `backend`): the client's WebSocket
//! ends at coreplex and its messages go on over coreplex's own WebSocket to independent
//! backends (the npm `ws` server and the Python `websockets` server, both refusing
//! compression), with permessage-deflate offloaded, pings answered here, close codes passed
//! both ways, broken rules closed on the side that broke them, refusals passed on, and a subset
//! of the Autobahn|Testsuite cases through `kosoku`.

use crate::harness::{curl, metric, wait_metric, Server};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/ws_backend.py");
const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/ws_probe.py");
const NODE_ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/ws-node/echo_server.js");

/// A backend process that prints `port N` (Python) or `listening N` (node) once it listens,
/// killed when dropped; keeps every later line it prints (the Python ones print `conn` for
/// each connection). Also used by `tunnel.rs`.
pub(crate) struct Backend {
    child: Child,
    pub(crate) addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    /// `tools/ws_backend.py` in `mode`.
    pub(crate) fn python(mode: &str) -> Backend {
        Backend::script(BACKEND, &[mode])
    }

    /// A Python backend script with `args`.
    pub(crate) fn script(path: &str, args: &[&str]) -> Backend {
        Backend::spawn(Command::new("python3").arg(path).args(args))
    }

    /// The npm `ws` echo server (perMessageDeflate off) on a free port.
    fn node() -> Backend {
        let port = crate::proxy::closed_port().port();
        Backend::spawn(Command::new("node").arg(NODE_ECHO).arg(port.to_string()))
    }

    fn spawn(cmd: &mut Command) -> Backend {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the backend starts (tests/setup.sh installs node's ws)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("backend: {line:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        Backend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
        }
    }

    pub(crate) fn said(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    /// Connections it accepted (its `conn` lines).
    pub(crate) fn conns(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "conn")
            .count()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-shard configuration whose listener `front` (with `listener_extra`) sends every path
/// to backend `app` at `backend` (the route with `route_extra`, the backend with
/// `backend_extra`). Also used by `tunnel.rs`.
pub(crate) fn front_config(
    backend: SocketAddr,
    listener_extra: &str,
    route_extra: &str,
    backend_extra: &str,
) -> String {
    format!(
        r#"version = 1

[global]
shards = 1

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"
{listener_extra}

[[listener.route]]
path_prefix = "/"
backend = "app"
{route_extra}

[backend.app]
servers = [ {{ address = "{backend}" }} ]
{backend_extra}
"#
    )
}

/// A proxy whose every path is a WebSocket-aware route to `backend`; `listener_extra` goes in
/// the `[[listener]]` table.
fn proxy(backend: SocketAddr, listener_extra: &str) -> Server {
    Server::start(&front_config(
        backend,
        listener_extra,
        "websocket = \"terminate\"",
        "",
    ))
}

fn probe(mode: &str, addr: SocketAddr, args: &[&str]) -> String {
    crate::websocket::probe_at(mode, addr, "/chat", args)
}

#[test]
fn messages_go_on_to_python_websockets_and_come_back() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "");
    let out = probe("echo", server.addr(), &[]);
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
    for (key, want) in [
        ("coreplex_websocket_upgrades_total", 1.0),
        ("coreplex_websocket_current{kind=\"terminated\"}", 0.0),
        ("coreplex_tunnels_current", 0.0),
        (
            "coreplex_websocket_messages_total{direction=\"in\"}",
            1008.0,
        ),
        (
            "coreplex_websocket_messages_total{direction=\"out\"}",
            1008.0,
        ),
        // The client's ping was answered here.
        ("coreplex_websocket_pings_received_total", 1.0),
        (
            "coreplex_websocket_closes_total{direction=\"in\",code=\"1000\"}",
            1.0,
        ),
        (
            "coreplex_websocket_closes_total{direction=\"out\",code=\"1000\"}",
            1.0,
        ),
    ] {
        wait_metric(admin, key, |v| v == want, &want.to_string());
    }
    // The backend saw the client's close handshake end normally.
    assert!(
        crate::backend::wait_until(Duration::from_secs(3), || backend.said("closed 1000")),
        "{:?}",
        backend.lines.lock().unwrap()
    );
}

#[test]
fn compression_is_offloaded_in_front_of_npm_ws() {
    // The npm ws backend refuses compression: a compressed frame reaching it would fail.
    let backend = Backend::node();
    let server = proxy(backend.addr, "");
    let out = probe("deflate", server.addr(), &[]);
    assert!(
        out.lines().any(|l| l
            == "extensions permessage-deflate; server_no_context_takeover; client_max_window_bits=15"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "ok compressed") && out.contains("closed 1000"),
        "{out}"
    );
    let admin = server.admin();
    wait_metric(admin, "coreplex_websocket_deflate_total", |v| v == 1.0, "1");
    // Compressed both ways with the client, and much smaller than the plaintext.
    let bytes = |dir: &str, form: &str| {
        metric(
            admin,
            &format!(
                "coreplex_websocket_deflate_bytes_total{{direction=\"{dir}\",form=\"{form}\"}}"
            ),
        )
    };
    assert!(
        bytes("in", "plain") > 1_000_000.0
            && bytes("in", "compressed") < bytes("in", "plain") / 10.0
    );
    assert!(
        bytes("out", "plain") > 1_000_000.0
            && bytes("out", "compressed") < bytes("out", "plain") / 10.0
    );
}

#[test]
fn close_codes_pass_both_ways() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "");
    let out = probe("close", server.addr(), &["4000"]);
    assert_eq!(out.trim(), "closed 4000 bye");
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        backend.said("closed 4000")
    }));
    wait_metric(
        server.admin(),
        "coreplex_websocket_current{kind=\"terminated\"}",
        |v| v == 0.0,
        "0",
    );
}

#[test]
fn a_client_that_breaks_a_rule_gets_its_code_and_the_backend_1001() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "");
    let out = probe("raw", server.addr(), &["R:810568656c6c6f"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["close 1002 unmasked_client_frame", "eof"]
    );
    let out = probe("raw", server.addr(), &["F:1:1:6869c0af"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["close 1007 invalid_utf8", "eof"]
    );
    assert!(
        crate::backend::wait_until(Duration::from_secs(3), || {
            backend
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| *l == "closed 1001")
                .count()
                == 2
        }),
        "{:?}",
        backend.lines.lock().unwrap()
    );
    wait_metric(
        server.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "0",
    );
}

#[test]
fn silent_clients_are_pinged_here_and_an_unanswered_ping_closes_both_ways() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "websocket = { ping_interval = \"300ms\" }");
    let out = probe("alive", server.addr(), &[]);
    assert!(out.contains("ok alive"), "{out}");
    let out = probe("idle", server.addr(), &[]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "frame 9 fin 636f7265706c6578",
            "close 1001 ping unanswered",
            "eof"
        ]
    );
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        backend.said("closed 1001")
    }));
    let admin = server.admin();
    wait_metric(
        admin,
        "coreplex_websocket_pings_unanswered_total",
        |v| v == 1.0,
        "1",
    );
    assert!(metric(admin, "coreplex_websocket_pings_sent_total") >= 3.0);
}

#[test]
fn refusals_and_bad_switches_are_answered_over_http() {
    let backend = Backend::python("raw");
    let server = proxy(backend.addr, "");
    let ws_get = |path: &str| {
        curl(&[
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
            &format!("http://{}{path}", server.addr()),
        ])
    };
    // The backend's refusal is passed on.
    let o = ws_get("/refuse");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "403");
    // A 101 without the accept value of the key is not a WebSocket: 502.
    let o = ws_get("/switch");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "502");
    // A request that is no WebSocket handshake never reaches the backend.
    let before = backend.lines.lock().unwrap().len();
    let o = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/x", server.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "426");
    assert_eq!(backend.lines.lock().unwrap().len(), before);
}

#[test]
fn a_subset_of_the_autobahn_cases_passes_through_to_npm_ws() {
    let backend = Backend::node();
    let server = proxy(backend.addr, "");
    let groups = ["1.*", "2.*", "3.*", "4.*", "5.*", "7.*"];
    let cases = [
        "6.1.1", "6.4.1", "9.1.1", "10.1.1", "12.1.1", "12.1.5", "12.4.5", "13.1.1", "13.3.1",
        "13.7.5",
    ];
    let passed = crate::websocket::kosoku(server.addr(), &groups, &cases);
    assert_eq!(passed, 101 + 10);
}

#[test]
fn the_websocket_example_serves_all_three_kinds() {
    // examples/websocket.toml as shipped, on free ports instead of 8090, 8091 and 9090.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/websocket.toml"
    ))
    .unwrap();
    let ports: Vec<String> = (0..3)
        .map(|_| crate::proxy::closed_port().port().to_string())
        .collect();
    let text = text
        .replace("127.0.0.1:8090", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:8091", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", ports[2]));
    let server = Server::start(&text);
    let run = |mode: &str, path: &str| {
        let out = Command::new("python3")
            .args([PROBE, mode, "127.0.0.1", &ports[0], path])
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for path in ["/echo", "/chat", "/live"] {
        let out = run("echo", path);
        assert!(
            out.contains("ok pipelined") && out.contains("closed 1000"),
            "{path}: {out}"
        );
    }
    // /chat compresses with the client; the application behind it has compression off.
    let out = run("deflate", "/chat");
    assert!(out.contains("ok compressed"), "{out}");
    let out = run("deflate", "/live");
    assert!(
        out.contains("extensions None"),
        "a tunnel passes the app's refusal on: {out}"
    );
    let admin = server.admin();
    assert_eq!(
        metric(admin, "coreplex_tunnels_total{kind=\"websocket\"}"),
        2.0
    );
}

#[test]
fn a_client_beyond_its_message_rate_is_closed_with_1008() {
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "websocket = { max_message_rate = 5 }");
    // 30 messages at once: whatever second boundary falls among them, one second sees more
    // than 5.
    let frames = vec!["F:1:1:61"; 30].join("|");
    let out = probe("raw", server.addr(), &[&frames]);
    let lines: Vec<&str> = out.lines().collect();
    // Echoes of the messages let through may or may not be back before the close.
    let echoed = lines.iter().filter(|l| **l == "frame 1 fin 61").count();
    assert!(echoed <= 10, "{out}");
    assert_eq!(
        lines[lines.len() - 2..],
        ["close 1008 message_rate_limit", "eof"],
        "{out}"
    );
    // The backend was told the client went away.
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        backend.said("closed 1001")
    }));
    assert_eq!(
        metric(server.admin(), "coreplex_websocket_rate_limited_total"),
        1.0
    );
    // A client within the rate is served as before.
    assert!(probe("alive", server.addr(), &[]).contains("ok alive"));
}

/// A WebSocket handshake by hand on a new connection to `addr` (path `/chat`): the connection
/// and the response head, read byte by byte so nothing after it is taken.
fn handshake(addr: SocketAddr) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut byte).unwrap(), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    (c, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn a_half_close_on_either_side_ends_both_with_1001() {
    use std::io::Read;
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "");
    // The client sends its FIN without a close frame: the backend hears 1001.
    let (mut c, head) = handshake(server.addr());
    let text = head.to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(
        text.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        backend.said("closed 1001")
    }));
    wait_metric(
        server.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "0",
    );
    wait_metric(
        server.admin(),
        "coreplex_websocket_current{kind=\"terminated\"}",
        |v| v == 0.0,
        "0",
    );
    // The backend goes away without a close frame: the client hears 1001.
    drop(backend);
    let backend = Backend::python("ws");
    let server = proxy(backend.addr, "");
    let (mut c, head) = handshake(server.addr());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(crate::backend::wait_until(Duration::from_secs(3), || {
        backend.said("conn")
    }));
    drop(backend); // killed: its socket closes without a close frame
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // A close frame: 0x88, length, then the code 1001 (0x03e9).
    assert!(
        rest.len() >= 4 && rest[0] == 0x88 && rest[2..4] == [0x03, 0xe9],
        "{rest:?}"
    );
}

#[test]
fn npm_ws_clients_echo_through_a_tunnel_and_a_websocket_aware_route() {
    // The npm ws load client (bench/ws-node/load.js: each connection sends, waits for its echo,
    // sends again) for one second through both kinds of proxied route.
    let backend = Backend::node();
    for extra in ["", "websocket = \"terminate\""] {
        let server = Server::start(&front_config(backend.addr, "", extra, ""));
        let load = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/ws-node/load.js");
        let out = Command::new("node")
            .arg(load)
            .arg(format!("ws://{}/", server.addr()))
            .args(["5", "1", "json"])
            .output()
            .expect("node runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{extra:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let messages: u64 = text
            .split("\"messages\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(messages > 100, "{extra:?}: {text}");
        let admin = server.admin();
        let kind = if extra.is_empty() {
            "coreplex_tunnels_total{kind=\"websocket\"}"
        } else {
            "coreplex_websocket_upgrades_total"
        };
        assert_eq!(metric(admin, kind), 5.0, "{extra:?}");
    }
}

#[test]
fn a_backend_that_is_not_the_first_closes_its_side_cleanly() {
    // The backend end's timers are the backend's, found by its index: with `app` the second
    // backend and one listener, a close the backend answers (and one it starts) must not look
    // for a second listener.
    let backend = Backend::python("ws");
    let text = front_config(backend.addr, "", "websocket = \"terminate\"", "").replace(
        "[backend.app]",
        &format!(
            "[backend.a_unused]\nservers = [ {{ address = \"{}\" }} ]\n\n[backend.app]",
            backend.addr
        ),
    );
    let server = Server::start(&text);
    let out = probe("close", server.addr(), &["4000"]);
    assert_eq!(out.trim(), "closed 4000 bye");
    assert!(probe("echo", server.addr(), &[]).contains("closed 1000"));
    wait_metric(
        server.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "0",
    );
}

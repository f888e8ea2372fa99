//! Access logs: every request (HTTP/1.1 and HTTP/2; direct, proxied, answered by the backend
//! with an error, failed for lack of a server, malformed) gets one line, JSON (checked with Python's `json`)
//! or HAProxy-like (a WebSocket upgrade at its 101; a request abandoned half way with status 0),
//! with the client (a PROXY header's when one came), the request line, the
//! backend and server, the timers and the termination state; SIGUSR1 reopens the log after a
//! rotation, and a stop writes what is left before the process exits.

use crate::backend::{wait_until, TestBackend};
use crate::harness::{metric, raw, temp_path, Server};
use crate::proxy::{proxy_config, srv};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The proxy configuration (listener `front`, backend `app` on `live`) with the access log, a
/// direct route, and a route to a backend `gone` whose one server is down.
fn config(log: &Path, format: &str, live: SocketAddr, dead: SocketAddr) -> String {
    proxy_config(
        &[srv(live, "name = \"s1\"")],
        &format!(
            "\n[backend.gone]\nservers = [{}]\nretries = 0",
            srv(dead, "name = \"d1\"")
        ),
        &format!(
            r#"access_log = {{ path = "{}", format = "{format}" }}
proxy_protocol = {{ trusted = ["127.0.0.9"] }}
http2 = {{ h2c = true }}
[[listener.route]]
path = "/direct"
respond = {{ status = 200, body = "hi" }}
[[listener.route]]
path = "/ws"
websocket = "echo"
[[listener.route]]
path_prefix = "/gone"
backend = "gone""#,
            log.display()
        ),
    )
}

fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(3), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        got.len() >= n
    });
    got
}

fn send(s: &Server, bytes: &[u8]) -> String {
    let (out, _) = raw(s.addr(), bytes, Duration::from_secs(3));
    String::from_utf8_lossy(&out).into_owned()
}

fn send_from(source: &str, s: &Server, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = crate::proxy_protocol::connect_from(source, s.addr());
    c.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn json_lines_carry_every_field_and_rotate_on_sigusr1() {
    let b = TestBackend::start();
    let dead = crate::proxy::closed_port();
    let log = temp_path("access.json");
    let mut s = Server::start(&config(&log, "json", b.addr(), dead));
    let close = "Host: a\r\nConnection: close\r\n\r\n";
    assert!(
        send(&s, format!("GET /direct HTTP/1.1\r\n{close}").as_bytes()).starts_with("HTTP/1.1 200")
    );
    assert!(
        send(&s, format!("GET /echo?q=1 HTTP/1.1\r\n{close}").as_bytes())
            .starts_with("HTTP/1.1 200")
    );
    assert!(send(
        &s,
        format!("GET /status/404 HTTP/1.1\r\n{close}").as_bytes()
    )
    .starts_with("HTTP/1.1 404"));
    assert!(
        send(&s, format!("GET /gone HTTP/1.1\r\n{close}").as_bytes()).starts_with("HTTP/1.1 503")
    );
    assert!(send(
        &s,
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    .starts_with("HTTP/1.1 400"));
    let proxied = send_from(
        "127.0.0.9",
        &s,
        format!("PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\nGET /direct HTTP/1.0\r\n{close}")
            .as_bytes(),
    );
    assert!(proxied.starts_with("HTTP/1.1 200"), "{proxied}");
    // HTTP/2 (h2c with prior knowledge, nghttp): a direct and a proxied stream on one
    // connection. (curl 7.88 cannot reuse a prior-knowledge connection, with nginx either.)
    let out = Command::new("nghttp")
        .args([
            "-n",
            &format!("http://{}/direct", s.addr()),
            &format!("http://{}/echo", s.addr()),
        ])
        .output()
        .expect("nghttp runs (tests/setup.sh installs nghttp2-client)");
    assert!(
        out.status.success(),
        "nghttp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A request the client abandons half way (its head never completes... then the body
    // stops): logged with status 0 and `CR` when the connection goes.
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"POST /direct HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = lines(&log, 9);
    assert_eq!(got.len(), 9, "{got:#?}");
    // Every line is one JSON object (Python's parser, not ours).
    let check = Command::new("python3")
        .args([
            "-c",
            "import json,sys\nfor l in open(sys.argv[1]):\n    d=json.loads(l)\n    assert set(d)>={'time','listener','client','method','target','protocol','status','bytes','backend','server','queue_ms','connect_ms','response_ms','total_ms','termination'}, d\n    print(d['status'], d['method'], d['target'], d['backend'], d['server'], d['termination'], d['client'].rsplit(':',1)[0], d['protocol'])",
            log.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let rows: Vec<&str> = summary.lines().collect();
    assert_eq!(
        rows,
        [
            "200 GET /direct None None -- 127.0.0.1 HTTP/1.1",
            "200 GET /echo?q=1 app s1 -- 127.0.0.1 HTTP/1.1",
            "404 GET /status/404 app s1 -- 127.0.0.1 HTTP/1.1",
            "503 GET /gone gone None SC 127.0.0.1 HTTP/1.1",
            "400 None None None None PR 127.0.0.1 None",
            "200 GET /direct None None -- 198.51.100.4 HTTP/1.0",
            "200 GET /direct None None -- 127.0.0.1 HTTP/2.0",
            "200 GET /echo app s1 -- 127.0.0.1 HTTP/2.0",
            "0 POST /direct None None CR 127.0.0.1 HTTP/1.1",
        ],
        "{}",
        got.join("\n")
    );
    assert!(
        got[1].contains("\"queue_ms\":0,\"connect_ms\":") && !got[1].contains("\"response_ms\":-1"),
        "{}",
        got[1]
    );
    assert!(
        got[0].contains("\"queue_ms\":-1,\"connect_ms\":-1,\"response_ms\":-1"),
        "{}",
        got[0]
    );

    // Rotation: the file is moved away, SIGUSR1 reopens the path.
    let rotated = temp_path("access.json.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal("USR1");
    assert!(
        wait_until(Duration::from_secs(3), || log.exists()),
        "SIGUSR1 did not reopen the log"
    );
    send(&s, format!("GET /direct HTTP/1.1\r\n{close}").as_bytes());
    assert_eq!(lines(&log, 1).len(), 1);
    assert_eq!(lines(&rotated, 9).len(), 9);
    // A stop writes what is left.
    send(&s, format!("GET /echo HTTP/1.1\r\n{close}").as_bytes());
    s.signal("TERM");
    assert!(s.wait_exit(Duration::from_secs(5)).is_some());
    assert_eq!(lines(&log, 2).len(), 2);
    let _ = std::fs::remove_file(&rotated);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn haproxy_lines_have_the_timers_and_the_termination_state() {
    let b = TestBackend::start();
    let dead = crate::proxy::closed_port();
    let log = temp_path("access.log");
    let s = Server::start(&config(&log, "haproxy", b.addr(), dead));
    let close = "Host: a\r\nConnection: close\r\n\r\n";
    send(&s, format!("GET /delay/120 HTTP/1.1\r\n{close}").as_bytes());
    send(&s, format!("GET /gone HTTP/1.1\r\n{close}").as_bytes());
    // A WebSocket upgrade is logged at its 101.
    let (ws, _) = raw(
        s.addr(),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        Duration::from_millis(300),
    );
    assert!(String::from_utf8_lossy(&ws).starts_with("HTTP/1.1 101"));
    let got = lines(&log, 3);
    assert!(
        got[2].contains(" 101 0 -- \"GET /ws HTTP/1.1\""),
        "{}",
        got[2]
    );
    // 127.0.0.1:PORT [08/Dec/2026:01:02:03.456] web app/s1 Tw/Tc/Tr/Tt 200 BYTES -- "GET ..."
    let fields: Vec<&str> = got[0].split(' ').collect();
    assert!(
        fields[0].starts_with("127.0.0.1:")
            && fields[1].starts_with('[')
            && fields[1].ends_with(']'),
        "{}",
        got[0]
    );
    assert_eq!((fields[2], fields[3]), ("front", "app/s1"), "{}", got[0]);
    let timers: Vec<i64> = fields[4].split('/').map(|t| t.parse().unwrap()).collect();
    assert!(timers[0] >= 0 && timers[1] >= 0, "{}", got[0]);
    assert!(
        timers[2] >= 100 && timers[3] >= timers[2],
        "response and total timers below the 120 ms delay: {}",
        got[0]
    );
    assert_eq!((fields[5], fields[7]), ("200", "--"), "{}", got[0]);
    assert!(
        got[0].ends_with(" \"GET /delay/120 HTTP/1.1\""),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains(" gone/d1 ") || got[1].contains(" gone/<NOSRV> "),
        "{}",
        got[1]
    );
    assert!(
        got[1].contains(" 503 ") && got[1].contains(" SC \"GET /gone HTTP/1.1\""),
        "{}",
        got[1]
    );
    assert!(metric(s.admin(), "coreplex_access_log_bytes_total") > 0.0);
    assert_eq!(
        metric(s.admin(), "coreplex_access_log_dropped_bytes_total"),
        0.0
    );
    let _ = std::fs::remove_file(&log);
}

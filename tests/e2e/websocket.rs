//! WebSocket echo endpoints (`websocket = "echo"`) against independent clients: the Python
//! `websockets` library, hand-built frames from Python sockets for every broken rule, curl and
//! raw requests for the handshake refusals, and a subset of the Autobahn|Testsuite cases
//! through the `kosoku` runner.

use crate::harness::{config, curl, metric, raw, wait_metric, Server};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/ws_probe.py");

/// The base config with an echo route at `/echo` (before the base routes) and `listener_extra`.
fn echo_server(listener_extra: &str) -> Server {
    Server::start(&config(
        "",
        &format!("{listener_extra}\n\n[[listener.route]]\npath = \"/echo\"\nwebsocket = \"echo\""),
    ))
}

fn probe(mode: &str, addr: SocketAddr, args: &[&str]) -> String {
    probe_at(mode, addr, "/echo", args)
}

/// Runs `tools/ws_probe.py` in `mode` against `path` on `addr` (it must succeed); its output.
pub(crate) fn probe_at(mode: &str, addr: SocketAddr, path: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(PROBE)
        .arg(mode)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(path)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ws_probe {mode} {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn messages_of_every_kind_and_size_come_back() {
    let server = echo_server("");
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
    // 6 messages, 2 fragmented ones, 1,000 pipelined: each came back; one ping, one close each way.
    let admin = server.admin();
    for (key, want) in [
        ("coreplex_websocket_upgrades_total", 1.0),
        ("coreplex_websocket_current{kind=\"terminated\"}", 0.0),
        (
            "coreplex_websocket_messages_total{direction=\"in\"}",
            1008.0,
        ),
        (
            "coreplex_websocket_messages_total{direction=\"out\"}",
            1008.0,
        ),
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
    assert!(metric(admin, "coreplex_websocket_frames_total{direction=\"in\"}") >= 1012.0);
}

#[test]
fn a_close_is_answered_with_the_peers_code() {
    let server = echo_server("");
    let out = probe("close", server.addr(), &["3001"]);
    assert!(out.starts_with("closed 3001"), "{out}");
}

#[test]
fn each_broken_rule_gets_its_close_code_and_the_connection_ends() {
    let server = echo_server("");
    let cases = [
        // (what, frames to send, what must be received, in order)
        (
            "unmasked frame",
            "R:810568656c6c6f",
            vec!["close 1002 unmasked_client_frame", "eof"],
        ),
        (
            "reserved opcode",
            "F:3:1:",
            vec!["close 1002 reserved_opcode", "eof"],
        ),
        (
            "RSV1 with no extension",
            "R:c18000000000",
            vec!["close 1002 reserved_bits", "eof"],
        ),
        (
            "fragmented ping",
            "F:9:0:6869",
            vec!["close 1002 fragmented_control", "eof"],
        ),
        (
            "continuation first",
            "F:0:1:6869",
            vec!["close 1002 unexpected_continuation", "eof"],
        ),
        (
            "text inside text",
            "F:1:0:61|F:1:1:62",
            vec!["frame 1 more 61", "close 1002 unfinished_message", "eof"],
        ),
        (
            "invalid UTF-8",
            "F:1:1:6869c0af",
            vec!["close 1007 invalid_utf8", "eof"],
        ),
        (
            "close code 1005",
            "F:8:1:03ed",
            vec!["close 1002 invalid_close_code", "eof"],
        ),
        // A ping before a close: its pong, then the close echoed with its code.
        (
            "ping then close",
            "F:9:1:6869|F:8:1:03e8",
            vec!["frame 10 fin 6869", "close 1000 ", "eof"],
        ),
        ("empty close", "F:8:1:", vec!["close None ", "eof"]),
    ];
    for (what, frames, want) in cases {
        let out = probe("raw", server.addr(), &[frames]);
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got, want, "{what}");
    }
    // A ping of 126 bytes (control frames are at most 125).
    let long_ping = format!("F:9:1:{}", "61".repeat(126));
    let out = probe("raw", server.addr(), &[&long_ping]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["close 1002 control_too_long", "eof"]
    );
    // The server still serves after all of them.
    assert!(probe("echo", server.addr(), &[]).contains("ok messages"));
}

#[test]
fn permessage_deflate_is_negotiated_and_compressed_messages_come_back() {
    let server = echo_server("");
    let out = probe("deflate", server.addr(), &[]);
    assert!(
        out.lines().any(|l| l == "extensions permessage-deflate; server_no_context_takeover; client_max_window_bits=15"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "ok compressed") && out.contains("closed 1000"),
        "{out}"
    );
    let admin = server.admin();
    wait_metric(admin, "coreplex_websocket_deflate_total", |v| v == 1.0, "1");
    let bytes = |dir: &str, form: &str| {
        metric(
            admin,
            &format!(
                "coreplex_websocket_deflate_bytes_total{{direction=\"{dir}\",form=\"{form}\"}}"
            ),
        )
    };
    // The messages are repetitive: both directions compress them well.
    assert!(bytes("in", "plain") > 1_000_000.0);
    assert!(bytes("in", "compressed") * 20.0 < bytes("in", "plain"));
    assert_eq!(bytes("out", "plain"), bytes("in", "plain"));
    assert!(bytes("out", "compressed") * 20.0 < bytes("out", "plain"));
    for (kind, want) in [
        ("bomb", "close 1009 message_too_big"),
        ("corrupt", "close 1007 invalid_deflate_data"),
        ("badutf8", "close 1007 invalid_utf8"),
    ] {
        let out = probe("packed", server.addr(), &[kind]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[lines.len() - 2..], [want, "eof"], "{kind}: {out}");
        // The echo streams: a bomb's first 16 MiB go back compressed, never more.
        assert!(
            lines.iter().filter(|l| l.starts_with("frame")).count() <= 300,
            "{kind}: {out}"
        );
    }
    assert!(probe("deflate", server.addr(), &[]).contains("ok compressed"));
}

#[test]
fn the_listener_sets_the_limits_and_whether_to_compress() {
    let server = echo_server("websocket = { max_message = \"1KiB\", compression = false }");
    let big_frame = format!("F:2:1:{}", "61".repeat(1025));
    let out = probe("raw", server.addr(), &[&big_frame]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["close 1009 frame_too_big", "eof"]
    );
    let two_frames = format!("F:2:0:{}|F:0:1:{}", "61".repeat(600), "62".repeat(600));
    let out = probe("raw", server.addr(), &[&two_frames]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["close 1009 message_too_big", "eof"],
        "{out}"
    );
    // Offers are declined: the client speaks uncompressed.
    let out = probe("deflate", server.addr(), &[]);
    assert!(out.lines().any(|l| l == "extensions None"), "{out}");
}

#[test]
fn handshakes_that_are_not_valid_upgrades_are_refused_with_their_status() {
    let server = echo_server("");
    let out = curl(&["-si", &format!("http://{}/echo", server.addr())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(
        text.contains("Upgrade: websocket") && text.contains("Sec-WebSocket-Version: 13"),
        "{text}"
    );
    let upgrade = |method: &str, version: &str, key: &str| {
        format!(
            "{method} /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    for (request, status) in [
        (upgrade("GET", "8", good_key), "426"),
        (upgrade("POST", "13", good_key), "405"),
        (upgrade("GET", "13", "c2hvcnQ="), "400"),
    ] {
        let (bytes, closed) = raw(server.addr(), request.as_bytes(), Duration::from_secs(5));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {text}"
        );
        assert!(closed, "{request}: the connection closes after a refusal");
    }
    let (bytes, _) = raw(
        server.addr(),
        upgrade("GET", "13", good_key).as_bytes(),
        Duration::from_millis(300),
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{text}"
    );
}

#[test]
fn an_idle_websocket_is_closed_with_1001_after_the_tunnel_timeout() {
    let server = echo_server("timeouts = { tunnel = \"1s\" }");
    let started = std::time::Instant::now();
    let out = probe("idle", server.addr(), &[]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["close 1001 idle", "eof"]);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn silent_clients_get_pings_and_those_that_never_answer_are_closed() {
    let server = echo_server("websocket = { ping_interval = \"300ms\" }");
    // A client that answers pings stays, well past the interval.
    let out = probe("alive", server.addr(), &[]);
    assert!(out.contains("ok alive"), "{out}");
    let admin = server.admin();
    wait_metric(
        admin,
        "coreplex_websocket_pings_sent_total",
        |v| v >= 3.0,
        ">= 3",
    );
    // One that reads but never answers gets a ping, then 1001 an interval later.
    let started = std::time::Instant::now();
    let out = probe("idle", server.addr(), &[]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "frame 9 fin 636f7265706c6578",
            "close 1001 ping unanswered",
            "eof"
        ]
    );
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    wait_metric(
        admin,
        "coreplex_websocket_pings_unanswered_total",
        |v| v == 1.0,
        "1",
    );
}

#[test]
fn a_subset_of_the_autobahn_cases_passes() {
    // Framing, pings and pongs, reserved bits and opcodes, fragmentation, UTF-8 (fail fast),
    // close handling, auto-fragmentation, and the first case of each compression group (every
    // offer kind of 13.*); the rest of 9.* (messages up to 16 MiB) and of 12.* / 13.* (1,000
    // messages each) are the full run in BENCHMARKS.md.
    let server = Server::start(&config(
        "",
        "\n[[listener.route]]\npath_prefix = \"/\"\nwebsocket = \"echo\"",
    ));
    let groups = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"];
    let cases = [
        "9.1.1", "9.7.1", "12.1.1", "12.2.1", "12.3.1", "12.4.1", "12.5.1", "13.1.1", "13.2.1",
        "13.3.1", "13.4.1", "13.5.1", "13.6.1", "13.7.1",
    ];
    let passed = kosoku(server.addr(), &groups, &cases);
    assert_eq!(passed, 247 + 14);
}

/// Runs the Autobahn cases in `groups` (globs) and `cases` (ids) through `kosoku` against
/// `addr` (two runs: kosoku takes either globs or case ids in one run, not both); every case
/// must pass. Returns how many passed.
pub(crate) fn kosoku(addr: SocketAddr, groups: &[&str], cases: &[&str]) -> u32 {
    let mut passed = 0;
    for selection in [groups, cases] {
        let reports = crate::harness::temp_path("kosoku");
        let mut cmd = Command::new("kosoku");
        cmd.arg(addr.to_string());
        for c in selection {
            cmd.args(["-i", c]);
        }
        let out = cmd
            .args(["-p", "2", "-o"])
            .arg(&reports)
            .output()
            .expect("kosoku runs (tests/setup.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let _ = std::fs::remove_dir_all(&reports);
        assert!(out.status.success() && !text.contains("failed"), "{text}");
        passed += text
            .lines()
            .find_map(|l| l.strip_suffix(" cases passed"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no count in: {text}"));
    }
    passed
}

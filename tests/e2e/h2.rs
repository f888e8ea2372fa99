//! HTTP/2 on the front end, against real clients: curl (prior knowledge and ALPN), nghttp and
//! h2load (many concurrent streams), the httpwg conformance suite (h2c, and the TLS listener
//! through a plaintext-to-TLS bridge), and a raw Python client (hyperframe) for floods, HPACK
//! bombs, the graceful GOAWAY and idle timeouts.

use crate::harness::{config, curl, metric, metric_in, metrics_text, wait_metric, Server};
use crate::tls::{cert, tls_table};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/h2_probe.py");
const BRIDGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/tls_bridge.py");

/// A plaintext listener with h2c, `/` and a 200 KB `/big` served directly.
fn h2c_config(http2: &str, global: &str) -> String {
    let big = "b".repeat(200_000);
    config(
        global,
        &format!(
            "http2 = {{ h2c = true {http2} }}\n\n[[listener.route]]\npath = \"/big\"\nrespond = {{ body = \"{big}\" }}"
        ),
    )
}

pub(crate) fn probe(args: &[&str], addr: SocketAddr) -> String {
    let out = Command::new("python3")
        .arg(PROBE)
        .arg(args[0])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(&args[1..])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "h2_probe {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (and reaped) when dropped, also when a test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `h2_probe.py ARGS[0] HOST PORT ARGS[1..]`, its stdout as lines to read.
fn spawn_probe(
    args: &[&str],
    addr: SocketAddr,
) -> (Killed, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Killed(
        Command::new("python3")
            .arg(PROBE)
            .arg(args[0])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args(&args[1..])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let lines = BufReader::new(child.0.stdout.take().expect("piped")).lines();
    (child, lines)
}

/// Resident memory of process `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// The most process `pid`'s resident memory grew above `before` kB, sampled every 50 ms for
/// `over` (a peak between samples of a fixed sleep is not missed, nor is growth that comes late
/// on a busy machine).
pub(crate) fn rss_peak_growth_kib(pid: u32, before: u64, over: Duration) -> u64 {
    let end = std::time::Instant::now() + over;
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(pid).saturating_sub(before));
        if std::time::Instant::now() >= end {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn curl_with_prior_knowledge_gets_h2_and_http1_still_works() {
    let s = Server::start(&h2c_config("", ""));
    let url = format!("http://{}/", s.addr());
    let o = curl(&["-sS", "-v", "--http2-prior-knowledge", &url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello, World!");
    assert!(err.contains("< HTTP/2 200"), "{err}");
    assert!(err.contains("< server: coreplex"), "{err}");
    assert!(err.contains("< content-length: 13"), "{err}");
    // 404, HEAD (no body), a large body through flow control, a query string.
    for (args, want_code, want_len) in [
        (vec!["-o", "/dev/null"], "404", 10),
        (vec!["-I"], "200", 0),
        (vec!["-o", "/dev/null"], "200", 200_000),
    ] {
        let path = match (want_code, want_len) {
            ("404", _) => "/nope", // "Not Found\n"
            (_, 200_000) => "/big?x=1",
            _ => "/",
        };
        let u = format!("http://{}{path}", s.addr());
        let mut a = vec![
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            "%{http_code} %{size_download} %{http_version}",
        ];
        a.extend(args.iter().copied());
        a.push(&u);
        let o = curl(&a);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let tail = out.rsplit('\n').next().unwrap_or_default().to_string();
        let tail = tail.rsplit("\r\n").next().unwrap_or_default();
        assert!(
            tail.ends_with(&format!("{want_code} {want_len} 2")),
            "{path} {args:?}: {out}"
        );
    }
    // The same listener still speaks HTTP/1.1 to clients that do.
    let o = curl(&["-sS", "--http1.1", "-w", " %{http_version}", &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello, World! 1.1");
    let text = metrics_text(s.admin());
    assert_eq!(metric_in(&text, "coreplex_h2_connections_total"), Some(4.0));
    assert_eq!(metric_in(&text, "coreplex_h2_streams_total"), Some(4.0));
}

#[test]
fn a_listener_without_h2c_answers_the_preface_as_http1() {
    let s = Server::start(&config("", ""));
    let url = format!("http://{}/", s.addr());
    let o = curl(&["-sS", "--http2-prior-knowledge", &url]);
    assert!(!o.status.success(), "h2c must be off by default");
    assert_eq!(metric(s.admin(), "coreplex_h2_connections_total"), 0.0);
}

#[test]
fn alpn_h2_over_tls_and_http1_fallback() {
    let cfg = format!(
        "version = 1\n[global]\nshards = 1\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\n{}\n[[listener.route]]\npath_prefix = \"/\"\nrespond = {{ body = \"hi\" }}\n",
        tls_table("")
    );
    let s = Server::start(&cfg);
    let resolve = format!("localhost:{}:127.0.0.1", s.addr().port());
    let url = format!("https://localhost:{}/", s.addr().port());
    let ca = cert("ca.pem");
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let o = curl(&[
            "-sS",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            flag,
            "-w",
            " %{http_version}",
            &url,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("hi {want}"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let text = metrics_text(s.admin());
    assert_eq!(
        metric_in(&text, "coreplex_tls_alpn_total{protocol=\"h2\"}"),
        Some(1.0)
    );
    assert_eq!(metric_in(&text, "coreplex_h2_connections_total"), Some(1.0));
}

#[test]
fn nghttp_and_h2load_with_100_concurrent_streams() {
    let s = Server::start(&h2c_config("", ""));
    let url = format!("http://{}/", s.addr());
    // nghttp: 100 requests at once on one connection (-m 100), all answered.
    let o = Command::new("nghttp")
        .args(["-n", "-s", "-m", "100", &url])
        .output()
        .expect("nghttp runs (tests/setup.sh installs nghttp2-client)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(" 200 ")).count(),
        100,
        "{out}"
    );
    // h2load: 4 connections x 100 streams, 20,000 requests, every one a 2xx.
    let o = Command::new("h2load")
        .args(["-n", "20000", "-c", "4", "-m", "100", &url])
        .output()
        .expect("h2load runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("20000 succeeded, 0 failed, 0 errored"),
        "{out}"
    );
    assert!(out.contains("status codes: 20000 2xx"), "{out}");
    // The 200 KB body, 10 at a time per connection, through the windows.
    let big = format!("http://{}/big", s.addr());
    let o = Command::new("h2load")
        .args(["-n", "100", "-c", "2", "-m", "10", &big])
        .output()
        .expect("h2load runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("100 succeeded, 0 failed"), "{out}");
    wait_metric(
        s.admin(),
        "coreplex_h2_connections_current",
        |v| v == 0.0,
        "h2 connections closed",
    );
    let text = metrics_text(s.admin());
    assert_eq!(
        metric_in(&text, "coreplex_h2_streams_total"),
        Some(20_200.0)
    );
    assert_eq!(metric_in(&text, "coreplex_h2_streams_current"), Some(0.0));
    // 7 connections: nghttp's 100 streams, h2load's 4 x 5,000 and 2 x 50.
    for (bucket, want) in [("10", 0.0), ("100", 3.0), ("1000", 3.0), ("10000", 7.0)] {
        assert_eq!(
            metric_in(
                &text,
                &format!("coreplex_h2_streams_per_connection_bucket{{le=\"{bucket}\"}}")
            ),
            Some(want),
            "le={bucket}"
        );
    }
    assert_eq!(
        metric_in(&text, "coreplex_h2_streams_per_connection_sum"),
        Some(20_200.0)
    );
    assert_eq!(
        metric_in(&text, "coreplex_h2_streams_per_connection_count"),
        Some(7.0)
    );
}

/// Runs httpwg against `addr`; returns its output.
fn httpwg(addr: SocketAddr) -> String {
    // Generous timeouts: a case that passes answers at once, and a loaded machine (the test
    // suite runs in parallel, the TLS run goes through a Python bridge) must not fail one.
    let o = Command::new("httpwg")
        .args(["-a", &addr.to_string()])
        .args(["--connect-timeout", "10000", "--frame-timeout", "10000"])
        .env("NO_COLOR", "1")
        .output()
        .expect("httpwg runs (tests/setup.sh installs httpwg-cli)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{}", failures(&out));
    out
}

fn failures(out: &str) -> String {
    out.lines()
        .filter(|l| l.contains("Test failed") || l.contains("Passed") || l.contains("Message:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn conformance_h2c_passes_every_httpwg_case() {
    let s = Server::start(&h2c_config("", ""));
    let out = httpwg(s.addr());
    assert!(!out.contains("Test failed"), "{}", failures(&out));
    // Each class of error left nothing behind.
    wait_metric(
        s.admin(),
        "coreplex_h2_connections_current",
        |v| v == 0.0,
        "h2 connections closed",
    );
    assert_eq!(metric(s.admin(), "coreplex_connections_current"), 0.0);
}

#[test]
fn conformance_over_tls_passes_every_httpwg_case() {
    let cfg = format!(
        "version = 1\n[global]\nshards = 1\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\n{}\n[[listener.route]]\npath_prefix = \"/\"\nrespond = {{ body = \"hello over h2\" }}\n",
        tls_table("")
    );
    let s = Server::start(&cfg);
    let mut bridge = Killed(
        Command::new("python3")
            .args([
                BRIDGE,
                &s.addr().port().to_string(),
                &cert("ca.pem"),
                "localhost",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    let mut line = String::new();
    BufReader::new(bridge.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the bridge prints its port");
    // (httpwg's flow-control cases need a body of at least 5 bytes.)
    let out = httpwg(SocketAddr::from(([127, 0, 0, 1], port)));
    drop(bridge);
    assert!(!out.contains("Test failed"), "{}", failures(&out));
    assert!(metric(s.admin(), "coreplex_tls_alpn_total{protocol=\"h2\"}") >= 100.0);
}

#[test]
fn floods_get_enhance_your_calm_and_leave_nothing_behind() {
    let s = Server::start(&h2c_config("", ""));
    let baseline = open_fds(s.pid());
    let out = probe(&["floods"], s.addr());
    for class in [
        "rapid_reset",
        "continuation",
        "ping",
        "settings",
        "empty_data",
        "window_update",
    ] {
        assert!(
            out.contains(&format!("{class} goaway enhance_your_calm")),
            "{class}: {out}"
        );
    }
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_h2_goaway_total{direction=\"sent\",code=\"enhance_your_calm\"}"
        ),
        6.0
    );
    // Each class counted under the limit it hit.
    let text = metrics_text(s.admin());
    let hits = |limit: &str| {
        metric_in(
            &text,
            &format!("coreplex_h2_flood_limit_total{{limit=\"{limit}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(hits("resets"), 1.0, "{text}");
    assert_eq!(hits("continuations") + hits("header_block"), 1.0, "{text}");
    assert_eq!(hits("glitches"), 4.0, "{text}");
    wait_metric(
        s.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "flooders closed",
    );
    // (The admin scrape's own socket may take a moment to go.)
    assert!(
        crate::backend::wait_until(Duration::from_secs(3), || open_fds(s.pid()) == baseline),
        "descriptors back to the baseline {baseline}: {}",
        open_fds(s.pid())
    );
    // An HPACK bomb (64 MB if decoded) gets 431 on its stream; the first request is served.
    let out = probe(&["bomb"], s.addr());
    assert!(out.contains("stream 1 status 200"), "{out}");
    assert!(out.contains("stream 3 status 431"), "{out}");
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 64 * 1024, "resident {rss_kb} kB after the bomb");
    // And the server still serves.
    assert!(probe(&["request", "/"], s.addr()).contains("status 200 body 13"));
}

#[test]
fn settings_follow_the_listener_configuration() {
    let s = Server::start(&h2c_config(
        ", max_concurrent_streams = 7, initial_window_size = \"1MiB\", max_frame_size = \"32KiB\", max_header_list_size = \"8KiB\", header_table_size = \"8KiB\"",
        "",
    ));
    let out = probe(&["settings"], s.addr());
    for want in [
        "max_concurrent_streams=7",
        "initial_window_size=1048576",
        "max_frame_size=32768",
        "max_header_list_size=8192",
        "header_table_size=8192",
    ] {
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
}

#[test]
fn sigterm_sends_the_two_step_goaway_then_closes() {
    let s = Server::start(&h2c_config("", ""));
    let (child, mut lines) = spawn_probe(&["shutdown"], s.addr());
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    s.signal("TERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    drop(child);
    // GOAWAY(2^31-1) first, then (after our PING ack) GOAWAY(last stream = 1), then the close.
    assert!(
        rest[0].starts_with("goaway no_error last 2147483647"),
        "{rest:?}"
    );
    assert!(rest[1].starts_with("goaway no_error last 1"), "{rest:?}");
    assert!(rest[2].starts_with("closed"), "{rest:?}");
    let mut s = s;
    let st = s.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(st.success(), "{st}");
}

#[test]
fn an_idle_h2_connection_gets_goaway_at_the_keep_alive_timeout() {
    let s = Server::start(&h2c_config(", idle_timeout = \"500ms\"", ""));
    let out = probe(&["idle"], s.addr());
    let mut lines = out.lines();
    let goaway = lines.next().unwrap_or_default();
    assert!(goaway.starts_with("goaway no_error last 1"), "{out}");
    let after: f64 = goaway.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.3..3.0).contains(&after), "{out}");
    assert!(
        lines.next().unwrap_or_default().starts_with("closed"),
        "{out}"
    );
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_connections_closed_total{reason=\"keepalive_timeout\"}"
        ),
        1.0
    );
}

#[test]
fn check_reports_http2_errors_with_their_key_paths() {
    let bad = format!(
        "version = 1\n[backend.b]\nprotocol = \"h3\"\nservers = [{{ address = \"127.0.0.1:1\" }}]\n[[listener]]\nbind = \"127.0.0.1:0\"\nhttp2 = {{ h2c = true, max_concurrent_streams = 0, max_frame_size = \"1KiB\", initial_window_size = \"4GiB\", idle_timeout = \"0s\" }}\n[[listener.route]]\npath_prefix = \"/\"\nbackend = \"b\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\n{}alpn = [\"h2\", \"spdy/3\"]\n[[listener.route]]\npath_prefix = \"/\"\nbackend = \"b\"\n",
        tls_table("")
    );
    let path = crate::harness::write_temp("h2bad.toml", &bad);
    let o = crate::harness::run_cli(&["check", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for key in [
        "listener[0].http2.max_concurrent_streams",
        "listener[0].http2.max_frame_size",
        "listener[0].http2.initial_window_size",
        "listener[0].http2.idle_timeout",
        "listener[1].tls.alpn[1]",
        "backend.b.protocol",
    ] {
        assert!(err.contains(&format!("{key}:")), "{key}: {err}");
    }
}

#[test]
fn responses_still_go_out_when_the_client_half_closes_after_its_requests() {
    let s = Server::start(&h2c_config("", ""));
    // Preface, SETTINGS, one GET for the 200 KB body, then FIN: the response must arrive whole.
    let out = probe(&["halfclose", "/big"], s.addr());
    assert!(out.contains("status 200 body 200000"), "{out}");
}

#[test]
fn pings_do_not_keep_an_idle_connection_open() {
    let s = Server::start(&h2c_config(", idle_timeout = \"600ms\"", ""));
    let out = probe(&["trickle"], s.addr());
    let closed: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("closed after "))
        .unwrap_or_else(|| panic!("never closed: {out}"))
        .parse()
        .unwrap();
    assert!(out.contains("goaway no_error"), "{out}");
    assert!(
        closed < 3.0,
        "closed after {closed}s with a PING every 200 ms: {out}"
    );
}

#[test]
fn a_stop_whose_ping_is_not_answered_still_sends_the_final_goaway() {
    let s = Server::start(&h2c_config("", ""));
    let (child, mut lines) = spawn_probe(&["shutdown-noack"], s.addr());
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    s.signal("TERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    drop(child);
    assert!(
        rest[0].starts_with("goaway no_error last 2147483647"),
        "{rest:?}"
    );
    assert!(rest[1].starts_with("goaway no_error last 1"), "{rest:?}");
    let after: f64 = rest[1].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(after < 5.0, "final GOAWAY after {after}s: {rest:?}");
    assert!(rest[2].starts_with("closed"), "{rest:?}");
}

#[test]
fn a_client_that_does_not_read_cannot_make_the_server_buffer_its_responses() {
    // 100 responses of 200 KB with windows wide open: 20 MB if buffered; the output bound
    // keeps it to a fraction of a megabyte.
    let s = Server::start(&h2c_config("", ""));
    let rss = || rss_kib(s.pid());
    let before = rss();
    let (child, mut lines) = spawn_probe(&["noread", "/big"], s.addr());
    assert_eq!(lines.next().unwrap().unwrap(), "sent");
    let grown = rss_peak_growth_kib(s.pid(), before, Duration::from_millis(1500));
    drop(child);
    assert!(grown < 8 * 1024, "resident memory grew {grown} kB");
}

#[test]
fn a_client_that_stops_reading_its_streams_is_closed_at_the_client_timeout() {
    // 100 responses of 200 KB and a client that reads none of them: once the output is stuck
    // for a whole `client` (1 s), the connection closes (the probe holds it 3 s).
    let listener = format!(
        "timeouts = {{ client = \"1s\" }}\nhttp2 = {{ h2c = true }}\n\n[[listener.route]]\npath = \"/big\"\nrespond = {{ body = \"{}\" }}",
        "b".repeat(200_000)
    );
    let s = Server::start(&config("", &listener));
    let key = "coreplex_connections_closed_total{reason=\"client_timeout\"}";
    let t0 = std::time::Instant::now();
    let (child, mut lines) = spawn_probe(&["noread", "/big"], s.addr());
    assert_eq!(lines.next().unwrap().unwrap(), "sent");
    // Before the probe gives up at 3 s (that close would be `peer_closed`).
    wait_metric(
        s.admin(),
        key,
        |v| v == 1.0,
        "1 (closed by the client timeout)",
    );
    let took = t0.elapsed();
    drop(child);
    assert!(
        took >= Duration::from_secs(1),
        "closed after {took:?}, before `client`"
    );
    assert_eq!(metric(s.admin(), "coreplex_connections_current"), 0.0);
}

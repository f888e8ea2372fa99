//! HTTP/2 clients proxied to HTTP/2 backends over multiplexed connections. The backends are
//! independent implementations: `tests/e2e/tools/h2_backend.py` (Python `h2`; it enforces and
//! reports its SETTINGS_MAX_CONCURRENT_STREAMS, can refuse streams and send a graceful GOAWAY
//! mid-load) and nginx (h2c, h2 over TLS, and HTTP/1.1-only servers for `protocol = "auto"`).
//! The clients are curl, h2load and the raw Python probe.

use crate::harness::{curl, metric_in, metrics_text, Server};
use crate::proxy::{closed_port, proxy_config, srv, Nginx};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/h2_backend.py");

/// The Python h2 backend, killed when dropped.
pub(crate) struct H2Backend {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl H2Backend {
    pub(crate) fn start(args: &[&str]) -> H2Backend {
        H2Backend::start_on(closed_port(), args)
    }

    /// On `addr` (a port nothing listens on yet).
    pub(crate) fn start_on(addr: SocketAddr, args: &[&str]) -> H2Backend {
        let mut child = Command::new("python3")
            .arg(BACKEND)
            .arg(addr.port().to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "h2 backend: {line:?}");
        H2Backend { child, addr }
    }

    /// The backend's own counters (`/peak`), read directly.
    pub(crate) fn stats(&self) -> Stats {
        let o = curl(&[
            "-sS",
            "--http2-prior-knowledge",
            &format!("http://{}/peak", self.addr),
        ]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        let get = |k: &str| -> u64 {
            let i = words.iter().position(|w| *w == k).expect("a /peak field");
            words[i + 1].parse().unwrap()
        };
        Stats {
            peak: get("peak"),
            violations: get("violations"),
            refused: get("refused"),
            connections: get("connections"),
            resets: get("resets"),
            conn_peak: get("conn_peak"),
        }
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) peak: u64,
    pub(crate) violations: u64,
    pub(crate) refused: u64,
    /// Includes the `/peak` query's own connection.
    pub(crate) connections: u64,
    pub(crate) resets: u64,
    /// The most connections open at once (the `/peak` query's own included).
    pub(crate) conn_peak: u64,
}

/// An h2c listener proxying every path to `servers` over h2 (`extra` in the backend).
fn h2_proxy(servers: &[String], extra: &str) -> String {
    proxy_config(
        servers,
        &format!("protocol = \"h2\"\n{extra}"),
        "http2 = { h2c = true }",
    )
}

fn h2load(url: &str, n: u32, c: u32, m: u32) -> String {
    let o = Command::new("h2load")
        .args([
            "-n",
            &n.to_string(),
            "-c",
            &c.to_string(),
            "-m",
            &m.to_string(),
            url,
        ])
        .output()
        .expect("h2load runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn backend_metric(text: &str, name: &str) -> f64 {
    metric_in(text, &format!("{name}{{backend=\"app\"}}")).unwrap_or(0.0)
}

fn server_metric(text: &str, name: &str, server: SocketAddr) -> f64 {
    metric_in(
        text,
        &format!("{name}{{backend=\"app\",server=\"{server}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn streams_share_h2c_connections_within_the_backends_stream_limit() {
    let b = H2Backend::start(&["--max-streams", "3"]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"always\""));
    let base = format!("http://{}", s.addr());
    // The request as the backend got it: h2 fields, cookies joined, forwarding fields added.
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        &format!("{base}/echo?x=1"),
    ]);
    let echo = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(echo.contains(":path: /echo?x=1\n"), "{echo}");
    assert!(echo.contains(":scheme: http\n"), "{echo}");
    assert!(
        echo.contains(&format!(":authority: {}\n", s.addr())),
        "{echo}"
    );
    assert!(echo.contains("cookie: a=1; b=2\n"), "{echo}");
    assert!(echo.contains("x-forwarded-for: 127.0.0.1\n"), "{echo}");
    assert!(!echo.contains("\nhost:"), "{echo}");
    // Uploads with and without a length reach it whole (DATA within its windows).
    let file = crate::harness::write_temp("h2b-up.bin", &"u".repeat(300_000));
    for args in [
        vec!["--data-binary".to_string(), format!("@{}", file.display())],
        vec!["-T".to_string(), file.display().to_string()],
    ] {
        let mut a = vec!["-sS", "--http2-prior-knowledge", "-X", "POST"];
        a.extend(args.iter().map(String::as_str));
        let url = format!("{base}/upload");
        a.push(&url);
        let o = curl(&a);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "300000", "{args:?}");
    }
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &format!("{base}/bytes/2000000"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200 2000000");
    // 100 streams at once, 3 per backend connection: never a fourth on one.
    let out = h2load(&format!("{base}/slow/5"), 3000, 10, 10);
    assert!(out.contains("3000 succeeded, 0 failed"), "{out}");
    let st = b.stats();
    assert_eq!(st.violations, 0, "{st:?}");
    assert!(st.peak <= 3, "{st:?}");
    // ceil(100 / 3) = 34 connections held for the load, plus the few made before it.
    assert!(st.conn_peak <= 40, "{st:?}");
    let text = metrics_text(s.admin());
    // Connections closed as surplus in a lull are made again later: a few more over the run,
    // never one per stream.
    let new = server_metric(&text, "coreplex_backend_connections_new_total", b.addr);
    assert!(new <= 80.0, "{new} backend connections made\n{text}");
    assert!(
        backend_metric(&text, "coreplex_backend_reuse_ratio") >= 0.98,
        "{text}"
    );
    assert!(backend_metric(&text, "coreplex_backend_h2_sessions_total") >= 1.0);
}

#[test]
fn a_backend_goaway_or_refused_stream_mid_load_loses_no_request() {
    // Every connection goes away after 40 streams (those above its last are not processed),
    // and every 9th stream is refused.
    let b = H2Backend::start(&[
        "--max-streams",
        "20",
        "--goaway-after",
        "40",
        "--refuse-every",
        "9",
    ]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"always\""));
    let out = h2load(&format!("http://{}/slow/2", s.addr()), 2000, 10, 10);
    assert!(out.contains("2000 succeeded, 0 failed"), "{out}");
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
    let st = b.stats();
    assert!(st.refused > 0 && st.connections > 20, "{st:?}");
    let text = metrics_text(s.admin());
    let goaways = backend_metric(&text, "coreplex_backend_h2_goaway_received_total");
    assert!(goaways >= 20.0, "{goaways} GOAWAY received: {st:?}\n{text}");
    assert!(backend_metric(&text, "coreplex_backend_h2_refused_total") >= st.refused as f64);
}

#[test]
fn a_server_rotating_its_connections_every_few_streams_still_serves_every_request() {
    // 64 streams at once on one client connection, the server answering 5 per connection
    // then GOAWAY: most streams are sent again many times, and every one is answered.
    let b = H2Backend::start(&["--goaway-after", "5"]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"always\""));
    let out = h2load(&format!("http://{}/echo", s.addr()), 200, 1, 64);
    assert!(out.contains("200 succeeded, 0 failed"), "{out}");
    assert!(out.contains("status codes: 200 2xx"), "{out}");
}

#[test]
fn safe_mode_keeps_a_clients_streams_on_its_own_connections() {
    let b = H2Backend::start(&["--max-streams", "100"]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"safe\""));
    // Four clients with 10 streams each: one backend connection per client session at most.
    let out = h2load(&format!("http://{}/slow/5", s.addr()), 2000, 4, 10);
    assert!(out.contains("2000 succeeded, 0 failed"), "{out}");
    let text = metrics_text(s.admin());
    let new = server_metric(&text, "coreplex_backend_connections_new_total", b.addr);
    assert!((4.0..=8.0).contains(&new), "{new}\n{text}");
}

#[test]
fn a_client_reset_cancels_only_its_backend_stream() {
    let b = H2Backend::start(&[]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"always\""));
    let out = crate::h2::probe(&["abort", "/bytes/20000000", "/"], s.addr());
    assert!(out.contains("reset after"), "{out}");
    assert!(out.contains("next 200 "), "{out}");
    // The backend saw RST_STREAM(CANCEL) and kept its connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = b.stats();
        if st.resets >= 1 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.resets >= 1, "{st:?}");
    let text = metrics_text(s.admin());
    assert_eq!(
        server_metric(&text, "coreplex_backend_connections_new_total", b.addr),
        1.0,
        "{text}"
    );
}

#[test]
fn failures_answer_the_stream_dead_servers_refusals_and_bad_protocol() {
    // Nothing listens: 503 after the retries.
    let dead = closed_port();
    let s = Server::start(&h2_proxy(&[srv(dead, "")], "retries = 1"));
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/", s.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");
    drop(s);
    // A server that refuses every stream: answered, not retried forever.
    let b = H2Backend::start(&["--refuse-every", "1"]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], ""));
    let o = curl(&[
        "-sS",
        "--max-time",
        "10",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/", s.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");
    drop(s);
    // `protocol = "h2"` to a server that speaks only HTTP/1.1 (nginx plaintext): 503, and the
    // proxy goes on.
    let n = Nginx::start_with(
        "",
        "location / { default_type text/plain; return 200 \"h1 $server_protocol\"; }",
    );
    let s = Server::start(&h2_proxy(&[srv(n.addr, "")], "retries = 0"));
    let o = curl(&[
        "-sS",
        "--max-time",
        "10",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/", s.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "502");
}

/// nginx answering its protocol: `h2c` over plaintext h2, `tls` over TLS (with `h2` for ALPN
/// h2 too).
fn nginx(listen: &str) -> Nginx {
    let tls = if listen.contains("ssl") {
        format!(
            "ssl_certificate {};\n        ssl_certificate_key {};",
            crate::tls::cert("ecdsa.pem"),
            crate::tls::cert("ecdsa.key")
        )
    } else {
        String::new()
    };
    Nginx::start_with(
        listen,
        &format!(
            "{tls}\n        location / {{ default_type text/plain; return 200 \"$server_protocol\"; }}"
        ),
    )
}

/// nginx speaking h2c (prior knowledge), answering its protocol.
pub(crate) fn nginx_h2c() -> Nginx {
    nginx("http2")
}

/// Twenty h2 requests through a proxy whose `auto` backend has an h2 server and an HTTP/1.1
/// one: every one answered, over both protocols, the fallback counted for the second only.
fn auto_backend_falls_back(h2_server: &Nginx, h1_server: &Nginx, tls: &str) {
    let s = Server::start(&proxy_config(
        &[srv(h2_server.addr, ""), srv(h1_server.addr, "")],
        &format!("protocol = \"auto\"\nreuse = \"always\"\n{tls}"),
        "http2 = { h2c = true }",
    ));
    let mut seen = Vec::new();
    for _ in 0..20 {
        let o = curl(&[
            "-sS",
            "--http2-prior-knowledge",
            &format!("http://{}/", s.addr()),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        seen.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    assert!(seen.iter().any(|p| p == "HTTP/2.0"), "{seen:?}");
    assert!(seen.iter().any(|p| p == "HTTP/1.1"), "{seen:?}");
    assert!(
        seen.iter().all(|p| p == "HTTP/2.0" || p == "HTTP/1.1"),
        "{seen:?}"
    );
    // HTTP/1.1 clients' requests take the same servers the same way (`proxy::relay`).
    let mut seen = Vec::new();
    for _ in 0..20 {
        let o = curl(&["-sS", "--http1.1", &format!("http://{}/", s.addr())]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        seen.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    assert!(seen.iter().any(|p| p == "HTTP/2.0"), "{seen:?}");
    assert!(seen.iter().any(|p| p == "HTTP/1.1"), "{seen:?}");
    let text = metrics_text(s.admin());
    let fallbacks = |a| server_metric(&text, "coreplex_backend_alpn_fallbacks_total", a);
    assert_eq!(fallbacks(h2_server.addr), 0.0, "{text}");
    assert!(fallbacks(h1_server.addr) >= 1.0, "{text}");
    assert!(backend_metric(&text, "coreplex_backend_h2_sessions_total") >= 1.0);
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("coreplex_backend_errors_total{backend=\"app\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "{text}");
}

#[test]
fn auto_falls_back_to_http1_per_server_by_alpn_over_tls() {
    let h2_server = nginx("ssl http2");
    let h1_server = nginx("ssl");
    let tls = format!(
        "tls = {{ ca = \"{}\", sni = \"localhost\" }}",
        crate::tls::cert("ca.pem")
    );
    auto_backend_falls_back(&h2_server, &h1_server, &tls);
}

#[test]
fn auto_falls_back_to_http1_per_server_on_plaintext() {
    let h2_server = nginx("http2");
    let h1_server = nginx("");
    auto_backend_falls_back(&h2_server, &h1_server, "");
}

#[test]
fn a_client_that_does_not_read_holds_back_h2_backend_streams_in_bounded_memory() {
    // 100 streams of 2 MB over one backend connection, never read by the client: 200 MB if
    // buffered. Each backend stream's window (64 KiB) is all it may send until the client
    // takes its bytes.
    let b = H2Backend::start(&[]);
    let s = Server::start(&h2_proxy(&[srv(b.addr, "")], "reuse = \"always\""));
    let rss = || crate::h2::rss_kib(s.pid());
    let before = rss();
    let mut child = Command::new("python3")
        .arg(crate::h2::PROBE)
        .args([
            "noread",
            "127.0.0.1",
            &s.addr().port().to_string(),
            "/bytes/2000000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let grown = crate::h2::rss_peak_growth_kib(s.pid(), before, Duration::from_millis(2500));
    let _ = child.kill();
    let _ = child.wait();
    assert!(grown < 24 * 1024, "resident memory grew {grown} kB");
    // The streams were cancelled with the client; the backend connection stays for others.
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        &format!("http://{}/after", s.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "h2 ok /after");
    let st = b.stats();
    assert!(st.resets >= 1, "{st:?}");
}

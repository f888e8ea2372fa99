//! HTTP/2 clients proxied to HTTP/1.1 backends: each stream an exchange of its own, over
//! pooled backend connections. Real clients (curl, nghttp, h2load, the raw Python probe)
//! against the [`TestBackend`]: head translation (`:authority` to Host, cookie crumbs joined,
//! hop-by-hop fields dropped), bodies both ways with and without a length, many streams over
//! reused connections, backend failures answered on the stream while the connection goes on,
//! a client's RST_STREAM closing the backend connection, a client that does not read holding
//! back its backends in bounded memory, and a stop that lets proxied streams finish.

use crate::backend::{wait_until, TestBackend};
use crate::h2::{open_fds, probe, rss_kib, PROBE};
use crate::harness::{curl, metric_in, metrics_text, Server};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// An h2c listener whose every path proxies to `servers` (`backend_extra` in the backend).
fn h2c_proxy(servers: &[String], backend_extra: &str) -> String {
    crate::proxy::proxy_config(servers, backend_extra, "http2 = { h2c = true }")
}

fn srv(addr: SocketAddr) -> String {
    crate::proxy::srv(addr, "")
}

fn h2(args: &[&str]) -> (String, String, bool) {
    let o = curl(&[&["-sS", "--http2-prior-knowledge"][..], args].concat());
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.success(),
    )
}

#[test]
fn streams_reach_http1_backends_with_translated_heads_and_bodies() {
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    let base = format!("http://{}", s.addr());
    // The head as the backend got it.
    let (head, err, ok) = h2(&[
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        "-H",
        "TE: trailers",
        &format!("{base}/echo?q=1"),
    ]);
    assert!(ok, "{err}");
    assert!(head.starts_with("GET /echo?q=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: {}\r\n", s.addr())),
        "the authority is the Host: {head}"
    );
    assert!(head.contains("\r\ncookie: a=1; b=2\r\n"), "{head}");
    assert_eq!(head.matches("cookie:").count(), 1, "{head}");
    assert!(!head.to_ascii_lowercase().contains("\r\nte:"), "{head}");
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    // Bodies: with a length, without one (chunked to the backend), and responses framed
    // both ways.
    let file = crate::harness::write_temp("h2up.bin", &"x".repeat(300_000));
    let data = format!("@{}", file.display());
    let (count, err, ok) = h2(&["--data-binary", &data, &format!("{base}/upload")]);
    assert!(ok, "{err}");
    assert_eq!(count.trim(), "300000");
    assert!(
        b.last_head()
            .to_ascii_lowercase()
            .contains("content-length: 300000"),
        "{}",
        b.last_head()
    );
    for path in ["/bytes/1000000", "/chunked/300000", "/eof-body"] {
        let o = curl(&[
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code} %{size_download}",
            &format!("{base}{path}"),
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let want = match path {
            "/bytes/1000000" => "2 200 1000000",
            "/chunked/300000" => "2 200 300000",
            _ => "2 200 11",
        };
        assert_eq!(out, want, "{path}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // HEAD: the head without a body.
    let o = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-I",
        &format!("{base}/bytes/5000"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(out.contains("content-length: 5000"), "{out}");
    assert!(!out.contains("transfer-encoding"), "{out}");
}

#[test]
fn a_chunked_upload_reaches_the_backend_chunked() {
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    // From stdin: curl sends no content-length over h2, so the body goes chunked.
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-T",
            "-",
            "-X",
            "POST",
            &format!("http://{}/upload", s.addr()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..10 {
            stdin.write_all(&[b'u'; 10_000]).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "100000");
    assert!(
        b.last_head()
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        b.last_head()
    );
}

#[test]
fn many_streams_share_pooled_backend_connections() {
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    let url = format!("http://{}/delay/20", s.addr());
    let o = Command::new("nghttp")
        .args(["-n", "-s", "-m", "100", &url])
        .output()
        .expect("nghttp runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains(" 200 ")).count(),
        100,
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("h2load")
        .args([
            "-n",
            "10000",
            "-c",
            "2",
            "-m",
            "25",
            &format!("http://{}/", s.addr()),
        ])
        .output()
        .expect("h2load runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("10000 succeeded, 0 failed"), "{out}");
    assert!(out.contains("status codes: 10000 2xx"), "{out}");
    // At most one backend connection per stream in flight: 100, then reused (in `safe` mode
    // a session's first request may not take a connection that has served only one: one more
    // per h2load connection).
    assert!(b.accepted() <= 102, "{} backend connections", b.accepted());
    let text = metrics_text(s.admin());
    let key = format!(
        "coreplex_backend_connections_reused_total{{backend=\"app\",server=\"{}\"}}",
        b.addr()
    );
    let reused = metric_in(&text, &key).unwrap_or(0.0);
    assert!(reused >= 9_900.0, "reused {reused}\n{text}");
}

#[test]
fn backend_failures_answer_the_stream_and_the_connection_goes_on() {
    let b = TestBackend::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let s = Server::start(&crate::proxy::proxy_config(
        &[srv(b.addr())],
        "timeouts = { server = \"500ms\" }",
        "http2 = { h2c = true }",
    ));
    let base = format!("http://{}", s.addr());
    // Several streams on one connection: each failure is its own stream's answer.
    let o = Command::new("nghttp")
        .args([
            "-n",
            "-s",
            &format!("{base}/bad-response"),
            &format!("{base}/delay/3000"),
            &format!("{base}/reset-before-response"),
            &format!("{base}/status/404"),
            &format!("{base}/"),
        ])
        .output()
        .expect("nghttp runs");
    let out = String::from_utf8_lossy(&o.stdout);
    for (status, path) in [
        ("502", "/bad-response"),
        ("504", "/delay/3000"),
        ("502", "/reset-before-response"),
        ("404", "/status/404"),
        ("200", "/"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!(" {status} ")) && l.trim_end().ends_with(path)),
            "{path} -> {status}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A response cut after it started is a reset stream, never a complete body.
    let (_, err, ok) = h2(&["-o", "/dev/null", &format!("{base}/reset-mid-body")]);
    assert!(!ok, "a cut body must fail");
    assert!(
        err.contains("INTERNAL_ERROR") || err.contains("stream"),
        "{err}"
    );
    // No server at all: 503.
    let s2 = Server::start(&h2c_proxy(&[srv(dead_addr)], ""));
    let o = curl(&[
        "-s",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}/", s2.addr()),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "503");
}

#[test]
fn a_client_reset_closes_the_backend_connection_and_leaves_nothing() {
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    // Warm up (the admin endpoint and the first backend connection), then the baseline.
    let (_, err, ok) = h2(&[&format!("http://{}/", s.addr())]);
    assert!(ok, "{err}");
    let base_fds = open_fds(s.pid());
    let out = probe(&["abort", "/bytes/50000000", "/"], s.addr());
    assert!(out.contains("reset after"), "{out}");
    assert!(out.contains("next 200 2"), "{out}");
    // The backend connection of the reset stream is closed (it had most of 50 MB to send).
    assert!(
        wait_until(Duration::from_secs(5), || b.open() <= 1),
        "backend connections still open: {}",
        b.open()
    );
    assert!(
        wait_until(Duration::from_secs(5), || open_fds(s.pid()) <= base_fds),
        "descriptors: {} after, {base_fds} before",
        open_fds(s.pid())
    );
    let text = metrics_text(s.admin());
    assert!(
        metric_in(
            &text,
            "coreplex_backend_errors_total{backend=\"app\",kind=\"client_abort\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}

#[test]
fn a_client_that_does_not_read_holds_back_its_backends_in_bounded_memory() {
    // 100 streams of 2 MB with windows wide open, never read: 200 MB if buffered.
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    let rss = || rss_kib(s.pid());
    let before = rss();
    let mut child = Command::new("python3")
        .arg(PROBE)
        .args([
            "noread",
            "127.0.0.1",
            &s.addr().port().to_string(),
            "/bytes/2000000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let grown = crate::h2::rss_peak_growth_kib(s.pid(), before, Duration::from_millis(2500));
    let _ = child.kill();
    let _ = child.wait();
    // Each paused stream holds up to 64 KiB for its window plus what its backend socket had
    // delivered before the pause took hold (a few hundred KB in all): about 30 MB here, 200 MB
    // if the bodies were buffered.
    assert!(grown < 48 * 1024, "resident memory grew {grown} kB");
    // The backends' connections close with the client's.
    assert!(
        wait_until(Duration::from_secs(5), || b.open() == 0),
        "backend connections still open: {}",
        b.open()
    );
}

#[test]
fn a_stop_lets_proxied_streams_finish() {
    let b = TestBackend::start();
    let s = Server::start(&h2c_proxy(&[srv(b.addr())], ""));
    let child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-w",
            " %{http_code}",
            &format!("http://{}/delay/800", s.addr()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    assert!(wait_until(Duration::from_secs(5), || b.requests() >= 1));
    s.signal("TERM");
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ok 200",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn tls_clients_proxy_over_alpn_h2_and_limits_apply_to_streams() {
    let b = TestBackend::start();
    let listener = format!(
        "limits = {{ max_body = \"10KiB\" }}\n[listener.tls]\n{}",
        crate::tls::tls_table("")
    );
    let s = Server::start(&crate::proxy::proxy_config(&[srv(b.addr())], "", &listener));
    let resolve = format!("localhost:{}:127.0.0.1", s.addr().port());
    let url = |path: &str| format!("https://localhost:{}{path}", s.addr().port());
    let ca = crate::tls::cert("ca.pem");
    let tls = ["-sS", "--http2", "--cacert", &ca, "--resolve", &resolve];
    let o = curl(&[&tls[..], &["-w", " %{http_version}", &url("/conn")]].concat());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "c0 2",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The backend hears that the client spoke TLS.
    let o = curl(&[&tls[..], &[url("/echo").as_str()]].concat());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("X-Forwarded-Proto: https\r\n"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A declared length over max_body: 413 before anything reaches the backend.
    let big = crate::harness::write_temp("h2big.bin", &"y".repeat(20_000));
    let data = format!("@{}", big.display());
    let before = b.requests();
    let o = curl(
        &[
            &tls[..],
            &[
                "--data-binary",
                &data,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
            &[url("/upload").as_str()],
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "413");
    assert_eq!(b.requests(), before);
    // Without a length (from stdin), the stream is answered 413 once it passes the limit.
    let o = Command::new("curl")
        .args([&tls[..], &["--max-time", "10", "-T", big.to_str().unwrap()]].concat())
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Length:",
            "-H",
            "Transfer-Encoding: chunked",
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}", &url("/upload")])
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "413",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Expect: 100-continue is answered by the proxy; the body then goes through.
    let small = crate::harness::write_temp("h2small.bin", &"z".repeat(5_000));
    let data = format!("@{}", small.display());
    let o = curl(
        &[
            &tls[..],
            &["-H", "Expect: 100-continue", "--data-binary", &data],
            &[url("/upload").as_str()],
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "5000");
    assert!(
        !b.last_head().to_ascii_lowercase().contains("expect"),
        "{}",
        b.last_head()
    );
}

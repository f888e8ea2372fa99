//! Black-box tests of `coreplex-bench` against the real coreplex binary and nginx: request counts
//! add up and agree with the server's own count, the open loop never sends ahead of its schedule,
//! `hold` keeps every connection alive, and failures (a killed server, nothing listening, garbage
//! answers) end as counted errors, never a hang. These are behaviour checks: how fast the tool
//! goes and how closely the open loop holds its rate are figures in BENCHMARKS.md ("The load
//! generator"), not assertions here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_coreplex-bench");

/// The coreplex binary built beside this test (the workspace test build builds it).
fn coreplex_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("coreplex");
    assert!(
        p.exists(),
        "{} missing: run the workspace tests (cargo test --workspace)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first, so nginx's master stops its workers (SIGKILL would orphan them), then
    /// SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts coreplex on a free port with its admin endpoint on another; returns the process, the
/// port and the admin port.
fn start_coreplex_with_admin() -> (Proc, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let cfg = std::env::temp_dir().join(format!("cpbench-{}-{port}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "version = 1\n[global]\nshards = 1\nmax_connections = 4000\n[admin]\nbind = \"127.0.0.1:{admin}\"\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n[[listener.route]]\npath_prefix = \"/\"\nrespond = {{ body = \"Hello, World!\" }}\n"
        ),
    )
    .unwrap();
    let child = Command::new(coreplex_bin())
        .args(["run", "-c", cfg.to_str().unwrap(), "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    wait_port(admin);
    (Proc(child), port, admin)
}

fn start_coreplex() -> (Proc, u16) {
    let (p, port, _) = start_coreplex_with_admin();
    (p, port)
}

/// The 2xx responses coreplex counted (`coreplex_requests_total{class="2xx"}` on its admin port).
fn server_2xx(admin: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("coreplex_requests_total{class=\"2xx\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no 2xx count in:\n{text}")) as u64
}

/// The tool's count agrees with the server's: every response it counted was sent by the server,
/// and the server answered no request the tool did not send.
fn assert_agrees_with_the_server(r: &serde_json::Value, admin: u16) {
    let served = server_2xx(admin);
    let (answered, sent) = (n(r, &["answered"]), n(r, &["sent"]));
    assert!(
        answered <= served && served <= sent,
        "answered {answered} <= served {served} <= sent {sent} fails: {r}"
    );
}

fn start_nginx() -> (Proc, u16, PathBuf) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("cpbench-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/peers/nginx-direct.conf"
    ))
    .unwrap()
    .replace("@PORT@", &port.to_string())
    .replace("@DIR@", dir.to_str().unwrap());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run tests/setup.sh");
    let child = Command::new(nginx)
        .args(["-c", path.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Proc(child), port, dir)
}

/// Runs coreplex-bench with a hard time limit; returns its output.
fn bench(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coreplex-bench {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

/// sent = answered + requests lost to errors + requests in flight at the end.
fn assert_counts_add_up(r: &serde_json::Value) {
    let lost: u64 = ["timeout", "reset", "closed", "parse"]
        .iter()
        .map(|k| n(r, &["errors", k]))
        .sum();
    assert_eq!(
        n(r, &["sent"]),
        n(r, &["answered"]) + lost + n(r, &["in_flight_at_end"]),
        "counts do not add up: {r}"
    );
}

#[test]
fn closed_loop_counts_add_up_against_coreplex() {
    let (_s, port, admin) = start_coreplex_with_admin();
    let url = format!("http://127.0.0.1:{port}/");
    let o = bench(
        &["load", &url, "-c", "20", "-d", "1s", "--json"],
        Duration::from_secs(20),
    );
    assert!(o.status.success());
    let r = json(&o);
    assert_counts_add_up(&r);
    assert_agrees_with_the_server(&r, admin);
    assert!(n(&r, &["answered"]) > 0, "{r}");
    assert_eq!(n(&r, &["errors", "non_2xx"]), 0);
    assert_eq!(
        r["status"][1].as_u64(),
        Some(n(&r, &["answered"])),
        "all 2xx: {r}"
    );
}

#[test]
fn pipelined_load_against_nginx_counts_add_up() {
    let (_s, port, dir) = start_nginx();
    let url = format!("http://127.0.0.1:{port}/");
    let o = bench(
        &["load", &url, "-c", "10", "-d", "1s", "-p", "8", "--json"],
        Duration::from_secs(20),
    );
    let r = json(&o);
    assert_counts_add_up(&r);
    assert!(n(&r, &["answered"]) > 0, "{r}");
    assert_eq!(
        r["status"][1].as_u64(),
        Some(n(&r, &["answered"])),
        "all 2xx: {r}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn open_loop_sends_on_its_schedule_and_counts_what_it_did_not_send() {
    let (_s, port, admin) = start_coreplex_with_admin();
    let url = format!("http://127.0.0.1:{port}/");
    let rate = 2000.0;
    let o = bench(
        &["load", &url, "-c", "50", "-d", "2s", "-R", "2000", "--json"],
        Duration::from_secs(30),
    );
    let r = json(&o);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["target_rate"].as_f64(), Some(rate));
    assert_counts_add_up(&r);
    assert_agrees_with_the_server(&r, admin);
    // Every request due by the end was sent or counted as unsent: never more than the schedule
    // (one per thread may be due at the last instant), and the schedule did run.
    let scheduled = n(&r, &["sent"]) + n(&r, &["unsent_at_end"]);
    let due = rate * r["duration_s"].as_f64().unwrap();
    let threads = n(&r, &["threads"]) as f64;
    assert!(
        scheduled as f64 <= due + threads,
        "{scheduled} requests for {due:.0} due: ahead of the schedule: {r}"
    );
    assert!(
        scheduled as f64 >= due / 2.0,
        "{scheduled} requests scheduled for {due:.0} due: {r}"
    );
}

#[test]
fn hold_keeps_every_connection_alive() {
    let (_s, port) = start_coreplex();
    let target = format!("127.0.0.1:{port}");
    let o = bench(
        &[
            "hold",
            "--target",
            &target,
            "--conns",
            "1500",
            "--duration",
            "2",
            "--processes",
            "2",
            "--active-fraction",
            "0.1",
            "--interval",
            "1",
        ],
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("alive after 2s: 1500/1500"), "{out}");
}

#[test]
fn a_killed_server_shows_up_as_errors_not_a_hang() {
    let (mut s, port) = start_coreplex();
    let url = format!("http://127.0.0.1:{port}/");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let _ = s.0.kill();
        let _ = s.0.wait();
    });
    let t0 = Instant::now();
    let o = bench(
        &[
            "load",
            &url,
            "-c",
            "20",
            "-d",
            "3s",
            "--timeout",
            "1s",
            "--json",
        ],
        Duration::from_secs(30),
    );
    killer.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    let r = json(&o);
    assert_counts_add_up(&r);
    let e = &r["errors"];
    let failures: u64 = ["connect", "reset", "closed", "timeout"]
        .iter()
        .map(|k| e[*k].as_u64().unwrap())
        .sum();
    assert!(failures > 0, "no errors after the server died: {r}");
    assert!(n(&r, &["answered"]) > 0);
}

#[test]
fn nothing_listening_is_a_connect_error() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let o = bench(
        &["load", &url, "-c", "5", "-d", "1s", "--json"],
        Duration::from_secs(20),
    );
    let r = json(&o);
    assert!(n(&r, &["errors", "connect"]) >= 5, "{r}");
    assert_eq!(n(&r, &["answered"]), 0);
}

#[test]
fn garbage_answers_are_parse_errors() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let mut b = [0u8; 1024];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"SPAM SPAM SPAM\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let url = format!("http://{addr}/");
    let o = bench(
        &["load", &url, "-c", "3", "-d", "1s", "--json"],
        Duration::from_secs(20),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    let r = json(&o);
    assert!(n(&r, &["errors", "parse"]) > 0, "{r}");
    assert_eq!(n(&r, &["answered"]), 0);
    assert_counts_add_up(&r);
}

#[test]
fn plot_writes_a_png() {
    let (_s, port) = start_coreplex();
    let url = format!("http://127.0.0.1:{port}/");
    let out = std::env::temp_dir().join(format!("cpbench-plot-{}-{port}.png", std::process::id()));
    let o = bench(
        &[
            "load",
            &url,
            "-c",
            "10",
            "-d",
            "1s",
            "--plot",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "suspiciously small plot: {} bytes",
        bytes.len()
    );
    let _ = std::fs::remove_file(out);
    let bad = bench(
        &["load", &url, "-c", "1", "-d", "1s", "--plot", "/tmp/x.svg"],
        Duration::from_secs(20),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("PNG"));
}

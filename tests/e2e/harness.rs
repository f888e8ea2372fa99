//! Test harness: starts the real `coreplex` binary on a temporary configuration, waits for the
//! addresses it logs, and offers raw-socket, metrics and curl helpers. Every process started here
//! is killed by PID when its [`Server`] is dropped, and every socket read has a timeout.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The coreplex binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_coreplex");

/// How long a server may take to log its addresses.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique path in the temporary directory, e.g. `coreplex-e2e-1234-7-cfg.toml`.
pub fn temp_path(suffix: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("coreplex-e2e-{}-{n}-{suffix}", std::process::id()))
}

/// Writes `text` to a fresh temporary file and returns its path.
pub fn write_temp(suffix: &str, text: &str) -> PathBuf {
    let path = temp_path(suffix);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// Removes ANSI colour escapes (`ESC [ ... m`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running (or exited) coreplex process.
pub struct Server {
    child: Child,
    pid: u32,
    status: Option<ExitStatus>,
    /// When `status` was first seen (within 10 ms of the exit while a wait polls).
    exited_at: Option<Instant>,
    addr: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    /// Set when the stderr reader reached EOF (the process and its children closed stderr).
    logs_done: Arc<std::sync::atomic::AtomicBool>,
    config_path: PathBuf,
}

impl Server {
    /// Starts `coreplex run -c FILE --log-level info` and waits until it logs its listener and
    /// admin addresses (panics with the logs if it does not within 10 s).
    pub fn start(config_toml: &str) -> Server {
        Server::start_with_args(config_toml, &[])
    }

    /// Like [`Server::start`], with extra arguments after `run` (e.g. `--cpus 1`).
    pub fn start_with_args(config_toml: &str, args: &[&str]) -> Server {
        let mut s = Server::spawn(config_toml, args);
        s.wait_ready();
        s
    }

    /// Like [`Server::start`], with the open-files limit (soft and hard) set to `nofile` by
    /// `prlimit`, which execs coreplex in place (the PID is coreplex's).
    pub fn start_with_nofile(config_toml: &str, nofile: u64) -> Server {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(BIN);
        let mut s = Server::spawn_cmd(cmd, config_toml, &[]);
        s.wait_ready();
        s
    }

    /// Like [`Server::start`], running the binary at `bin` (a copy a test may replace, as an
    /// operator installs a new binary before an upgrade).
    /// `env`: extra environment variables.
    pub fn start_binary(
        bin: &std::path::Path,
        config_toml: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied());
        let mut s = Server::spawn_cmd(cmd, config_toml, &[]);
        s.wait_ready();
        s
    }

    /// The configuration file the process was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Spawns the process without waiting for it to be ready (for servers expected to fail).
    pub fn spawn(config_toml: &str, args: &[&str]) -> Server {
        Server::spawn_cmd(Command::new(BIN), config_toml, args)
    }

    fn spawn_cmd(mut cmd: Command, config_toml: &str, args: &[&str]) -> Server {
        let config_path = write_temp("cfg.toml", config_toml);
        let mut child = cmd
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .args(["--log-level", "info"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coreplex");
        let pid = child.id();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        let logs_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = logs_done.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(strip_ansi(&l)),
                    Err(_) => break,
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        Server {
            child,
            pid,
            status: None,
            exited_at: None,
            addr: None,
            admin: None,
            logs,
            logs_done,
            config_path,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for line in self.logs() {
                if self.addr.is_none() && line.contains("listener ") {
                    if let Some(a) = addr_after(&line, " on http://")
                        .or_else(|| addr_after(&line, " on https://"))
                    {
                        self.addr = Some(a);
                    }
                }
                if self.admin.is_none() {
                    if let Some(a) = addr_after(&line, "admin on http://") {
                        self.admin = Some(a);
                    }
                }
            }
            if self.addr.is_some() && self.admin.is_some() {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!(
                    "coreplex exited ({st}) before it was ready; stderr:\n{}",
                    self.logs().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "coreplex did not log its addresses within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server not ready: no listener address")
    }

    /// The admin endpoint's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("server not ready: no admin address")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The stderr lines so far (ANSI colours removed).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The stderr so far, as one string.
    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                self.exited_at = Some(Instant::now());
            }
        }
        self.status
    }

    /// When a wait saw the process exit.
    pub fn exited_at(&self) -> Option<Instant> {
        self.exited_at
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                // Let the stderr reader catch up with the last lines (bounded: a grandchild
                // could hold stderr open).
                let caught_up = Instant::now() + Duration::from_secs(2);
                while !self.logs_done.load(Ordering::SeqCst) && Instant::now() < caught_up {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill -SIG PID`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed: {st}", self.pid);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill(); // SIGKILL to this child's PID
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Parses the `ip:port` that follows `marker` in `line` (ending at whitespace or `/`).
fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The admin bind address for test configs: any free port, resolved by the server and read from
/// its log.
pub fn admin_bind() -> String {
    "127.0.0.1:0".to_string()
}

/// The base test configuration with the listener on `127.0.0.1:0`; see [`config_bind`].
pub fn config(extra_global: &str, listener_extra: &str) -> String {
    config_bind("127.0.0.1:0", extra_global, listener_extra)
}

/// The base test configuration: `version = 1`, `[global] shards = 1, max_connections = 1024`
/// (unless `extra_global` sets them), the admin endpoint, and one listener named `t` on `bind`
/// with the routes `/` -> 200 "Hello, World!" and prefix `/api` -> 201 "api".
///
/// `extra_global` is inserted in `[global]`; it may end with further tables such as
/// `[defaults.timeouts]`. `listener_extra` is inserted in the `[[listener]]` table (e.g.
/// `limits = { max_body = "1KiB" }`).
pub fn config_bind(bind: &str, extra_global: &str, listener_extra: &str) -> String {
    let mut global = String::new();
    if !extra_global.contains("shards") {
        global.push_str("shards = 1\n");
    }
    if !extra_global.contains("max_connections") {
        global.push_str("max_connections = 1024\n");
    }
    format!(
        r#"version = 1

[global]
{global}{extra_global}

[admin]
bind = "{admin}"

[[listener]]
name = "t"
bind = "{bind}"
{listener_extra}

[[listener.route]]
path = "/"
respond = {{ status = 200, headers = {{ "Content-Type" = "text/plain" }}, body = "Hello, World!" }}

[[listener.route]]
path_prefix = "/api"
respond = {{ status = 201, body = "api" }}
"#,
        admin = admin_bind(),
    )
}

/// Timeout values used by the tests that need short timers (300 ms / 400 ms / 500 ms).
pub const SHORT_TIMEOUTS: &str = "[defaults.timeouts]\nhttp_request = \"300ms\"\nhttp_keep_alive = \"400ms\"\nclient = \"500ms\"\n";

/// Sends `bytes` on a new connection and reads until EOF or until a read waits `read_timeout`.
/// Returns what was read and whether the server closed the connection (EOF or reset).
pub fn raw(addr: SocketAddr, bytes: &[u8], read_timeout: Duration) -> (Vec<u8>, bool) {
    let mut c = Conn::connect(addr);
    c.send_lossy(bytes);
    c.read_to_close(read_timeout)
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The status line and headers, as text (without the final CRLFCRLF).
    pub head: String,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body (by Content-Length; empty for 1xx and HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one response head at the start of `buf`: the response (body still empty) and the
/// head's length including the final CRLFCRLF.
fn parse_head(buf: &[u8]) -> Option<(Response, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let r = Response {
        status,
        head,
        headers,
        body: Vec::new(),
    };
    Some((r, end + 4))
}

impl Response {
    /// Length of the body that follows this head (`head_only`: it answers a HEAD request).
    fn body_len(&self, head_only: bool) -> usize {
        if self.status < 200 || head_only {
            return 0;
        }
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses every complete response in `buf` (`head_only[i]`: the i-th answered a HEAD).
pub fn parse_responses(buf: &[u8], head_only: &[bool]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((mut r, len)) = parse_head(&buf[pos..]) {
        let cl = r.body_len(head_only.get(out.len()).copied().unwrap_or(false));
        if pos + len + cl > buf.len() {
            break;
        }
        r.body = buf[pos + len..pos + len + cl].to_vec();
        pos += len + cl;
        out.push(r);
    }
    out
}

/// A client connection with a receive buffer, for interactive exchanges.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (2 s timeout) with Nagle off.
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Conn::from_stream(stream)
    }

    /// Wraps a connected stream (Nagle off, 5 s write timeout).
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` (panics on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Writes `bytes`, ignoring errors (the server may already have closed).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads once into the buffer; `Ok(0)` at EOF, `Err(())` on timeout.
    fn fill(&mut self, timeout: Duration) -> Result<usize, ()> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(usize::MAX),
            Err(_) => Ok(0), // reset: the connection is gone
        }
    }

    /// Reads one response within `timeout` (`head_only`: it answers a HEAD request).
    pub fn try_response(&mut self, timeout: Duration, head_only: bool) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((mut r, len)) = parse_head(&self.buf) {
                let cl = r.body_len(head_only);
                if self.buf.len() >= len + cl {
                    r.body = self.buf[len..len + cl].to_vec();
                    self.buf.drain(..len + cl);
                    return Some(r);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.fill(left) {
                Ok(0) | Err(()) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads one response (panics with what was received if none arrives within 3 s).
    pub fn response(&mut self) -> Response {
        self.response_within(Duration::from_secs(3), false)
    }

    /// Reads one response within `timeout` (panics if none).
    pub fn response_within(&mut self, timeout: Duration, head_only: bool) -> Response {
        match self.try_response(timeout, head_only) {
            Some(r) => r,
            None => panic!(
                "no complete response within {timeout:?}; received {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads until EOF or until a read waits `timeout` (bounded to 10 s in all). Returns the bytes
    /// not yet consumed and whether the connection was closed by the server.
    pub fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let closed = loop {
            match self.fill(timeout) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(()) => break false,
            }
            if Instant::now() > deadline {
                break false;
            }
        };
        (std::mem::take(&mut self.buf), closed)
    }

    /// Whether the server closes the connection within `timeout` without sending anything more.
    /// Returns `(closed, extra bytes received)`.
    pub fn expect_eof(&mut self, timeout: Duration) -> (bool, Vec<u8>) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (false, std::mem::take(&mut self.buf));
            }
            match self.fill(left) {
                Ok(0) => return (true, std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(()) => return (false, std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Bytes received and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes received and not yet consumed.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// A simple `GET path` request for host `a`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()
}

/// The whole `/metrics` text of an admin endpoint.
pub fn metrics_text(admin: SocketAddr) -> String {
    let (bytes, closed) = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed, "admin did not close the /metrics connection");
    let r = parse_responses(&bytes, &[])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("bad /metrics answer: {:?}", String::from_utf8_lossy(&bytes)));
    assert_eq!(r.status, 200, "/metrics: {}", r.head);
    r.text()
}

/// Finds `name_with_labels` (e.g. `coreplex_requests_total{class="2xx"}`) in a metrics text.
pub fn metric_in(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name_with_labels).then(|| v.parse().ok())?
    })
}

/// Scrapes one metric value (panics if it is absent).
pub fn metric(admin: SocketAddr, name_with_labels: &str) -> f64 {
    let text = metrics_text(admin);
    metric_in(&text, name_with_labels)
        .unwrap_or_else(|| panic!("metric {name_with_labels} not found in:\n{text}"))
}

/// Polls `/metrics` (up to 5 s) until `key` satisfies `ok`; panics with the last scrape if not.
pub fn wait_metric(admin: SocketAddr, key: &str, ok: impl Fn(f64) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(admin);
        let v = metric_in(&text, key);
        if v.is_some_and(&ok) {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{key} = {v:?}, expected {what}; metrics:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `key == want` (allowing the counter up to 5 s to get there).
pub fn assert_metric(admin: SocketAddr, key: &str, want: f64) {
    wait_metric(admin, key, |v| v == want, &format!("{want}"));
}

/// Asserts `key >= min`.
pub fn assert_metric_at_least(admin: SocketAddr, key: &str, min: f64) {
    wait_metric(admin, key, |v| v >= min, &format!(">= {min}"));
}

/// Runs `tests/e2e/tools/sockopt.py ARGS` (reads or sets another process's socket options
/// through pidfd_getfd) and returns what it printed; panics if it fails.
pub fn sockopt(args: &[&str]) -> String {
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/tools/sockopt.py");
    let out = Command::new("python3")
        .arg(tool)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sockopt.py {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs `curl` with `args` (plus `--max-time 10`); panics if curl is not installed.
pub fn curl(args: &[&str]) -> Output {
    match Command::new("curl")
        .args(["--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("curl is not installed: run tests/setup.sh first")
        }
        Err(e) => panic!("cannot run curl: {e}"),
    }
}

/// Says on the terminal (not in libtest's captured output, which passing tests hide) what a test
/// could not check on this machine, so a green run does not claim it.
pub fn note_untested(what: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "NOT TESTED on this machine: {what}");
}

/// The shard count for a test that wants `want` shards: `want` when this process may run on that
/// many CPUs (coreplex runs at most one shard per CPU), else as many as there are, with a
/// [`note_untested`] line saying so.
pub fn test_shards(test: &str, want: usize) -> usize {
    let have = std::thread::available_parallelism().map_or(1, |n| n.get());
    if have < want {
        note_untested(&format!(
            "{test}: needs {want} CPUs for {want} shards, this machine offers {have}"
        ));
    }
    want.min(have)
}

/// Runs the coreplex binary with `args` and waits for it (bounded: killed after 10 s).
pub fn run_cli(args: &[&str]) -> Output {
    run_cli_with(&[], &[], args)
}

/// Like [`run_cli`], under `prlimit PRLIMIT_ARGS --` when `prlimit_args` is not empty (e.g.
/// `["--nofile=5000:5000"]`), with extra environment variables.
pub fn run_cli_with(
    prlimit_args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
) -> Output {
    let mut cmd = if prlimit_args.is_empty() {
        Command::new(BIN)
    } else {
        let mut c = Command::new("prlimit");
        c.args(prlimit_args).arg("--").arg(BIN);
        c
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coreplex");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "coreplex {args:?} did not exit within 10 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

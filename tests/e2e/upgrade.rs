//! Binary upgrade (`coreplex upgrade`, SIGUSR2): the running process starts whatever binary is
//! now at its path, hands it the listening, admin and control sockets, and drains once the new
//! process serves. Under keep-alive and new-connection load no connection is refused and no
//! request fails; the old process is gone within `shutdown_timeout`. A successor that fails (it
//! exits, reads an invalid configuration, cannot bind a new listener's port, misses a
//! certificate) leaves the old process serving, and a second upgrade
//! while one runs is refused.

use crate::backend::wait_until;
use crate::harness::{config, curl, run_cli, temp_path, Server, BIN};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Connection attempts refused (ECONNREFUSED).
    refused: AtomicU64,
    /// Requests without a valid 200.
    failed: AtomicU64,
    /// Requests on a reused keep-alive connection that the server closed before any byte of the
    /// response, sent again on a new connection (RFC 9112 section 9.3.1).
    retried: AtomicU64,
}

/// Keep-alive and new-connection clients, each a thread sending `GET /` in a loop.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

impl Load {
    fn start(addr: SocketAddr, keep_alive: usize, new_connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut threads = Vec::new();
        for _ in 0..keep_alive {
            let (stop, tally) = (stop.clone(), tally.clone());
            threads.push(std::thread::spawn(move || {
                keep_alive_client(addr, &stop, &tally)
            }));
        }
        for _ in 0..new_connections {
            let (stop, tally) = (stop.clone(), tally.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut s) = connect(addr, &tally) else {
                        continue;
                    };
                    let answered = s.write_all(REQUEST_CLOSE).is_ok()
                        && matches!(read_response(&mut s), Ok((200, _)));
                    let n = if answered { &tally.ok } else { &tally.failed };
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load {
            stop,
            tally,
            threads,
        }
    }

    fn finish(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.tally
    }
}

fn connect(addr: SocketAddr, tally: &Tally) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_nodelay(true).unwrap();
            Some(s)
        }
        Err(e) => {
            let n = if e.kind() == ErrorKind::ConnectionRefused {
                &tally.refused
            } else {
                &tally.failed
            };
            n.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
            None
        }
    }
}

fn keep_alive_client(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    // The connection and whether it carried a response already.
    let mut conn: Option<(TcpStream, bool)> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = connect(addr, tally).map(|s| (s, false));
            continue;
        }
        let (s, reused) = conn.as_mut().unwrap();
        let outcome = s
            .write_all(REQUEST)
            .map_err(|_| 0)
            .and_then(|()| read_response(s));
        match outcome {
            Ok((200, close)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                *reused = true;
                if close {
                    conn = None;
                }
            }
            Err(0) if *reused => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            _ => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// Reads one response: its status and whether it says `Connection: close`. `Err(n)`: the
/// connection ended or failed after `n` bytes of it.
fn read_response(s: &mut TcpStream) -> Result<(u16, bool), usize> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or(buf.len())?;
            if buf.len() >= end + 4 + len {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or(buf.len())?;
                return Ok((status, head.contains("\nconnection: close")));
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(buf.len()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whatever process the pid file names, other than the one the test started, is a successor:
/// not the harness's child, so killed here by pid when the test ends (passed or not).
struct Successors {
    pid_file: PathBuf,
    first: u32,
}

impl Successors {
    fn current(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != self.first)
    }
}

impl Drop for Successors {
    fn drop(&mut self) {
        if let Some(pid) = self.current() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// A copy of the coreplex binary in a directory of its own, for a test to replace.
fn binary_copy() -> PathBuf {
    let dir = temp_path("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("coreplex");
    std::fs::copy(BIN, &path).unwrap();
    path
}

/// Puts `script` (a shell script) at `path`, replacing what is there, as `install` does: a new
/// file renamed over the old one, so the running binary's file is untouched.
fn install_script(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The test configuration with a control socket and a pid file.
fn upgrade_config(control: &Path, pid_file: &Path) -> String {
    config(
        &format!(
            "shards = {}\nshutdown_timeout = \"4s\"\nclose_spread_time = \"1s\"\ncontrol_socket = \"{}\"\npid_file = \"{}\"\n",
            crate::harness::test_shards("upgrade", 2),
            control.display(),
            pid_file.display()
        ),
        "",
    )
}

/// Starts `bin` (with `env`) on the upgrade configuration, and the guard for its successors.
fn start_old(bin: &Path, env: &[(&str, &std::ffi::OsStr)]) -> (Server, Successors, PathBuf) {
    let control = temp_path("ctl.sock");
    let pid_file = temp_path("pid");
    let old = Server::start_binary(bin, &upgrade_config(&control, &pid_file), env);
    let guard = Successors {
        pid_file,
        first: old.pid(),
    };
    (old, guard, control)
}

/// `coreplex upgrade --socket PATH`: its exit status and output.
fn upgrade(control: &Path) -> (bool, String) {
    let out = run_cli(&["upgrade", "--socket", control.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The pid `coreplex status` reports.
fn status_pid(control: &Path) -> u32 {
    let out = run_cli(&["status", "--socket", control.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "status failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

/// The pid named by `upgrade`'s reply ("ok upgraded: pid N serves; ...").
fn new_pid(reply: &str) -> u32 {
    reply
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {reply:?}"))
}

fn get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(REQUEST_CLOSE).is_ok() && matches!(read_response(&mut s), Ok((200, _)))
}

#[test]
fn upgrade_under_load_refuses_no_connection_and_fails_no_request() {
    let bin = binary_copy();
    let (mut old, successors, control) = start_old(&bin, &[]);
    let addr = old.addr();
    assert_eq!(status_pid(&control), old.pid());
    let load = Load::start(addr, 6, 3);
    std::thread::sleep(Duration::from_millis(400));
    let t0 = Instant::now();
    let (ok, reply) = upgrade(&control);
    assert!(ok, "upgrade failed: {reply}\n{}", old.log_text());
    let successor = new_pid(&reply);
    assert_ne!(successor, old.pid());
    std::thread::sleep(Duration::from_millis(1500));
    let st = old.wait_exit(Duration::from_secs(6));
    let gone = old.exited_at().map(|t| t.duration_since(t0));
    let tally = load.finish();
    let (ok, refused, failed, retried) = (
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
    );
    eprintln!("upgrade under load: {ok} ok, {refused} refused, {failed} failed, {retried} retried on a reused connection; old process gone after {gone:?}");
    assert!(
        st.is_some_and(|s| s.success()),
        "the old process did not exit 0 within shutdown_timeout: {st:?}\n{}",
        old.log_text()
    );
    assert!(
        gone.is_some_and(|g| g < Duration::from_secs(5)),
        "old process gone after {gone:?}, shutdown_timeout is 4 s"
    );
    assert_eq!(refused, 0, "connections refused during the upgrade");
    assert_eq!(
        failed,
        0,
        "requests failed during the upgrade\n{}",
        old.log_text()
    );
    assert!(ok > 100, "too little load: {ok} requests");
    // The successor serves the same port, the same admin endpoint and the control socket.
    assert!(get_ok(addr));
    assert_eq!(status_pid(&control), successor);
    assert_eq!(successors.current(), Some(successor), "the pid file");
    let served = crate::harness::metric(old.admin(), "coreplex_requests_total{class=\"2xx\"}");
    assert!(
        served > 0.0,
        "the successor's admin shows no request served"
    );
}

#[test]
fn a_failed_upgrade_keeps_the_old_process_serving_and_a_second_one_is_refused() {
    let bin = binary_copy();
    let (old, successors, control) = start_old(&bin, &[]);
    let addr = old.addr();

    // A new binary that exits at once.
    install_script(&bin, "#!/bin/sh\nexit 3\n");
    let (ok, reply) = upgrade(&control);
    assert!(!ok, "an upgrade to a binary that exits succeeded: {reply}");
    assert!(
        reply.contains("failed before it was ready") && reply.contains("3"),
        "{reply}"
    );
    assert!(
        get_ok(addr),
        "the old process stopped serving after a failed upgrade"
    );
    assert_eq!(status_pid(&control), old.pid());

    // The real binary again, but the configuration it re-reads is now invalid.
    std::fs::copy(BIN, bin.with_extension("new")).unwrap();
    std::fs::rename(bin.with_extension("new"), &bin).unwrap();
    let good = std::fs::read_to_string(old.config_path()).unwrap();
    std::fs::write(
        old.config_path(),
        good.replace("version = 1", "version = 1\nbogus = 1"),
    )
    .unwrap();
    let (ok, reply) = upgrade(&control);
    assert!(
        !ok,
        "an upgrade with an invalid configuration succeeded: {reply}"
    );
    assert!(
        old.log_text().contains("bogus"),
        "the successor's configuration error is not in the log:\n{}",
        old.log_text()
    );
    assert!(get_ok(addr));
    assert_eq!(status_pid(&control), old.pid());
    // A new listener on a port another process holds, and a certificate that is not there: the
    // successor cannot start, the old process serves on.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    for (extra, why) in [
        (
            format!("\n[[listener]]\nname = \"more\"\nbind = \"{taken}\"\n[[listener.route]]\nrespond = {{ status = 200 }}\n"),
            "address already in use",
        ),
        (
            "\n[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncertificates = [{ cert = \"/nonexistent/c.pem\", key = \"/nonexistent/c.key\" }]\n[[listener.route]]\nrespond = { status = 200 }\n".to_string(),
            "/nonexistent/c.pem",
        ),
    ] {
        std::fs::write(old.config_path(), format!("{good}{extra}")).unwrap();
        let (ok, reply) = upgrade(&control);
        assert!(!ok, "an upgrade that cannot start succeeded: {reply}");
        assert!(
            wait_until(Duration::from_secs(2), || old.log_text().contains(why)),
            "the successor's error ({why}) is not in the log:\n{}",
            old.log_text()
        );
        assert!(get_ok(addr));
        assert_eq!(status_pid(&control), old.pid());
    }
    drop(squatter);
    std::fs::write(old.config_path(), good).unwrap();

    // A slow new binary: a second upgrade while the first runs is refused.
    install_script(&bin, &format!("#!/bin/sh\nsleep 1\nexec {BIN} \"$@\"\n"));
    let first = {
        let control = control.clone();
        std::thread::spawn(move || upgrade(&control))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (ok, reply) = upgrade(&control);
    assert!(
        !ok && reply.contains("already running"),
        "second upgrade: {reply}"
    );
    let (ok, reply) = first.join().unwrap();
    assert!(ok, "the first upgrade failed: {reply}\n{}", old.log_text());
    assert_eq!(successors.current(), Some(new_pid(&reply)));
    assert!(wait_until(Duration::from_secs(3), || get_ok(addr)));
}

#[test]
fn sigusr2_upgrades_too() {
    let (mut old, successors, control) = start_old(Path::new(BIN), &[]);
    old.signal("USR2");
    assert!(
        wait_until(Duration::from_secs(5), || status_pid(&control) != old.pid()),
        "no successor answers after SIGUSR2:\n{}",
        old.log_text()
    );
    assert_eq!(successors.current(), Some(status_pid(&control)));
    assert!(old
        .wait_exit(Duration::from_secs(6))
        .is_some_and(|s| s.success()));
    assert!(get_ok(old.addr()));
}

#[test]
fn systemd_hears_ready_and_the_new_main_pid() {
    let notify_path = temp_path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (old, successors, control) = start_old(
        Path::new(BIN),
        &[("NOTIFY_SOCKET", notify_path.as_os_str())],
    );
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 from the started process");
    assert_eq!(&buf[..n], b"READY=1");
    let (ok, reply) = upgrade(&control);
    assert!(ok, "{reply}");
    let successor = new_pid(&reply);
    assert_eq!(successors.current(), Some(successor));
    let n = notify
        .recv(&mut buf)
        .expect("a notification from the new process");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("MAINPID={successor}\nREADY=1")
    );
    drop(old);
    let _ = std::fs::remove_file(&notify_path);
}

#[test]
fn tls_sessions_resume_across_an_upgrade_and_h2_goes_on() {
    let control = temp_path("ctl.sock");
    let pid_file = temp_path("pid");
    let cfg = format!(
        r#"version = 1
[global]
shards = 1
shutdown_timeout = "3s"
control_socket = "{}"
pid_file = "{}"
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "tls"
bind = "127.0.0.1:0"
[listener.tls]
{}
[[listener.route]]
respond = {{ status = 200, body = "over tls" }}
"#,
        control.display(),
        pid_file.display(),
        crate::tls::tls_table("")
    );
    let old = Server::start_binary(Path::new(BIN), &cfg, &[]);
    let _successors = Successors {
        pid_file,
        first: old.pid(),
    };
    let addr = old.addr();
    let sess = temp_path("tls-session.pem");
    let first = crate::tls::s_client(addr, &["-tls1_3", "-servername", "localhost"], Some(&sess));
    assert!(first.contains("\nNew, TLSv1.3"), "{first}");
    let (ok, reply) = upgrade(&control);
    assert!(ok, "{reply}");
    assert_ne!(status_pid(&control), old.pid());
    // The successor opens the tickets its predecessor sealed (its generated keys came along).
    let again = crate::tls::s_client(addr, &["-tls1_3", "-servername", "localhost"], Some(&sess));
    assert!(
        again.contains("\nReused, TLSv1.3"),
        "no resumption across the upgrade: {again}"
    );
    let out = curl(&[
        "-sk",
        "--http2",
        "-w",
        " %{http_version}",
        &format!("https://localhost:{}/", addr.port()),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls 2");
}

//! The control socket: a Unix socket (mode 0600, `global.control_socket`) on which `coreplex
//! upgrade` and `coreplex status` ask the running process for a binary upgrade or its state.
//!
//! One command line per connection (`upgrade`, `status`), one reply: lines that begin with `ok`
//! or `error: `, then the socket closes. Commands go to the main thread (the one place that
//! starts an upgrade, so a second one is refused while the first runs). Like the admin thread,
//! the accept thread polls and lets go of its socket when a successor has taken it over.

use crossbeam_channel::Sender;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A command the main thread answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start the binary at the path this process was started from, hand it the sockets, drain.
    Upgrade,
    /// Report pid, start time and state.
    Status,
}

/// A command with the channel its reply goes back on.
pub struct Request {
    /// What is asked.
    pub command: Command,
    /// Where the reply goes.
    pub reply: Sender<String>,
}

/// How long a client waits for a reply (an upgrade waits for the successor to be ready).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits up to 200 ms for `fd` to be readable (a connection to accept).
pub fn readable(fd: &impl AsFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(200u8)), Ok(n) if n > 0)
}

/// Binds the control socket at `path` (mode 0600). A file left by a process that is gone is
/// replaced; a socket a running process answers on is an error.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "cannot listen on global.control_socket {}: a running process answers on it (stop it, or upgrade it with `coreplex upgrade`)",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| {
        format!(
            "cannot listen on global.control_socket {}: {e}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        format!(
            "cannot restrict global.control_socket {}: {e}",
            path.display()
        )
    })?;
    Ok(l)
}

/// Starts the accept thread; requests go to `requests` until `released` is set.
pub fn spawn(
    listener: UnixListener,
    requests: Sender<Request>,
    released: Arc<AtomicBool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("coreplex-control".into())
        .spawn(move || {
            while !released.load(Ordering::Relaxed) {
                if !readable(&listener) {
                    continue;
                }
                match listener.accept() {
                    Ok((s, _)) => {
                        let requests = requests.clone();
                        let _ = std::thread::Builder::new()
                            .name("coreplex-control-conn".into())
                            .stack_size(256 * 1024)
                            .spawn(move || serve(s, &requests));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::warn!("control socket accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map(|_| ())
}

fn serve(s: UnixStream, requests: &Sender<Request>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(s.take(256));
    let answer = match reader.read_line(&mut line) {
        Err(e) => format!("error: reading the command: {e}"),
        Ok(_) => match line.trim() {
            "upgrade" => ask(requests, Command::Upgrade),
            "status" => ask(requests, Command::Status),
            other => format!("error: unknown command {other:?} (upgrade, status)"),
        },
    };
    let mut s = reader.into_inner().into_inner();
    let _ = s.write_all(answer.as_bytes());
    let _ = s.write_all(b"\n");
}

fn ask(requests: &Sender<Request>, command: Command) -> String {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if requests.send(Request { command, reply: tx }).is_err() {
        return "error: the process is exiting".into();
    }
    rx.recv_timeout(REPLY_TIMEOUT)
        .unwrap_or_else(|_| "error: no reply from the process".into())
}

/// Sends `command` to the control socket at `path` and returns the reply.
pub fn request(path: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(REPLY_TIMEOUT + Duration::from_secs(5)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

//! Binary upgrade: the running process starts its successor (the binary now at the path it was
//! started from, with the same arguments) and hands it every listening socket over a Unix socket
//! pair (SCM_RIGHTS), so no socket closes and no connection attempt is refused. The successor
//! reports ready once its shards run; only then does the predecessor stop accepting and drain.
//! If the successor fails first (a bad configuration, a port it cannot bind, a crash), the
//! predecessor keeps serving and reports why.
//!
//! ```text
//!   predecessor                                  successor (env COREPLEX_UPGRADE_FD=n)
//!   socketpair, spawn  ---------------------->   takes descriptor n
//!   "L\t<bind>\t<name>" + its sockets  ------>   (one message per listener, 200 sockets at most)
//!   "A\t<bind>" + admin socket  ------------->
//!   "C\t<path>" + control socket  ----------->
//!   "K\t<hex>" generated TLS ticket keys  ---->   (sealed with a fresh key; these still open)
//!   "E"  ------------------------------------>   starts: listeners matched by name and bind
//!                                                 address take the sockets, others bind anew
//!   drains (stop, shutdown_timeout)  <--------   "R\t<pid>"  (or EOF: failed; keep serving)
//! ```

use crate::config::Config;
use coreplex_engine::sys::fdpass;
use coreplex_tls::tickets::{self, TicketKey};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// The environment variable that names the inherited upgrade socket.
pub const UPGRADE_FD_ENV: &str = "COREPLEX_UPGRADE_FD";

/// How long a predecessor waits for its successor to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the running process was started, to start its successor the same way.
#[derive(Clone, Debug)]
pub struct Relaunch {
    /// The binary's path at start (an upgrade runs whatever is at this path now).
    pub exe: PathBuf,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// This process's binary path and arguments.
    pub fn current() -> std::io::Result<Relaunch> {
        Ok(Relaunch {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// The sockets a predecessor hands over.
pub struct Handoff {
    /// Each listener's name, configured address and sockets (one per shard).
    pub listeners: Vec<(String, SocketAddr, Vec<OwnedFd>)>,
    /// The admin socket and its configured address.
    pub admin: Option<(SocketAddr, OwnedFd)>,
    /// The control socket and its path.
    pub control: Option<(PathBuf, OwnedFd)>,
    /// The generated TLS ticket keys in use, newest first (so the successor opens the tickets
    /// this process sealed).
    pub ticket_keys: Vec<TicketKey>,
}

/// The most ticket keys handed over (the newest; each is 160 hex digits of a message).
const MAX_KEYS: usize = 24;

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A second upgrade while one is running.
    #[error("an upgrade is already running")]
    Running,
    /// This process is already stopping (a predecessor whose successor took over, or a stop).
    #[error("this process is stopping; upgrade the running successor instead")]
    Stopping,
    /// The successor could not be started.
    #[error("cannot start {exe}: {source}")]
    Spawn {
        /// The binary.
        exe: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The sockets could not be handed over.
    #[error("cannot hand the listening sockets over: {0}")]
    Handoff(std::io::Error),
    /// The successor exited or closed the socket before it was ready.
    #[error("the new process (pid {pid}) failed before it was ready ({status}); this process keeps serving: see the log for its errors")]
    Failed {
        /// The successor's pid.
        pid: u32,
        /// How it ended.
        status: String,
    },
    /// The successor was not ready in time (it is stopped).
    #[error("the new process (pid {pid}) was not ready within {READY_TIMEOUT:?}; it was stopped and this process keeps serving")]
    Timeout {
        /// The successor's pid.
        pid: u32,
    },
}

/// Starts the successor, hands it `handoff` and waits until it is ready. Returns its pid.
pub fn start_successor(how: &Relaunch, handoff: Handoff) -> Result<u32, UpgradeError> {
    let (ours, theirs) = fdpass::inheritable_pair().map_err(UpgradeError::Handoff)?;
    let mut child = Command::new(&how.exe)
        .args(&how.args)
        .env(UPGRADE_FD_ENV, theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(|source| UpgradeError::Spawn {
            exe: how.exe.display().to_string(),
            source,
        })?;
    drop(theirs);
    let pid = child.id();
    let sent = send_handoff(&ours, handoff);
    let outcome = match sent {
        Ok(()) => wait_ready(&ours),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            // It outlives this process; reap it should it exit first.
            std::thread::spawn(move || child.wait());
            Ok(pid)
        }
        Err(Wait::Closed) => Err(UpgradeError::Failed {
            pid,
            status: reap(&mut child),
        }),
        Err(Wait::TimedOut) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(UpgradeError::Timeout { pid })
        }
    }
}

enum Wait {
    Closed,
    TimedOut,
}

fn send_handoff(sock: &OwnedFd, h: Handoff) -> Result<(), Wait> {
    let send = |text: String, fds: &[OwnedFd]| {
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        fdpass::send(sock.as_fd(), text.as_bytes(), &fds).map_err(|e| {
            tracing::warn!("upgrade: handing sockets over failed: {e}");
            Wait::Closed
        })
    };
    for (name, bind, fds) in &h.listeners {
        for part in fds.chunks(fdpass::MAX_FDS_PER_MESSAGE) {
            send(format!("L\t{bind}\t{name}"), part)?;
        }
    }
    if let Some((bind, fd)) = &h.admin {
        send(format!("A\t{bind}"), std::slice::from_ref(fd))?;
    }
    if let Some((path, fd)) = &h.control {
        send(format!("C\t{}", path.display()), std::slice::from_ref(fd))?;
    }
    if !h.ticket_keys.is_empty() {
        let mut text = String::from("K\t");
        for k in h.ticket_keys.iter().take(MAX_KEYS) {
            for b in k.to_file_bytes() {
                text.push_str(&format!("{b:02x}"));
            }
        }
        send(text, &[])?;
    }
    send("E".into(), &[])
}

fn wait_ready(sock: &OwnedFd) -> Result<(), Wait> {
    let timeout = nix::sys::time::TimeVal::new(READY_TIMEOUT.as_secs() as i64, 0);
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &timeout);
    match fdpass::recv(sock.as_fd()) {
        Ok((text, _)) if text.starts_with(b"R\t") => Ok(()),
        Ok(_) => Err(Wait::Closed),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Wait::TimedOut),
        Err(_) => Err(Wait::Closed),
    }
}

fn reap(child: &mut Child) -> String {
    // It closed the socket: it is exiting, or has.
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    "it closed the upgrade socket and was stopped".into()
}

/// What a successor received from its predecessor.
pub struct Inherited {
    listeners: Vec<(String, SocketAddr, Vec<OwnedFd>)>,
    admin: Option<(SocketAddr, OwnedFd)>,
    control: Option<(PathBuf, OwnedFd)>,
    ticket_keys: Option<Vec<TicketKey>>,
    channel: OwnedFd,
}

impl Inherited {
    /// The sockets handed over, if this process was started by an upgrade (its environment names
    /// the upgrade socket).
    pub fn from_env() -> Result<Option<Inherited>, String> {
        let Some(raw) = std::env::var_os(UPGRADE_FD_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(UPGRADE_FD_ENV);
        let raw: i32 = raw
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{UPGRADE_FD_ENV}={raw:?} is not a descriptor number"))?;
        let channel = fdpass::take_inherited(raw)
            .map_err(|e| format!("{UPGRADE_FD_ENV}={raw}: not an upgrade socket: {e}"))?;
        let mut got = Inherited {
            listeners: Vec::new(),
            admin: None,
            control: None,
            ticket_keys: None,
            channel,
        };
        loop {
            let (text, fds) = fdpass::recv(got.channel.as_fd())
                .map_err(|e| format!("receiving the listening sockets: {e}"))?;
            let text = String::from_utf8_lossy(&text).into_owned();
            let mut parts = text.splitn(3, '\t');
            let kind = parts.next().unwrap_or("");
            let addr = |s: Option<&str>| -> Result<SocketAddr, String> {
                s.and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("malformed upgrade message {text:?}"))
            };
            match kind {
                "L" => {
                    let bind = addr(parts.next())?;
                    let name = parts.next().unwrap_or("").to_string();
                    match got
                        .listeners
                        .iter_mut()
                        .find(|(n, b, _)| *n == name && *b == bind)
                    {
                        Some((_, _, held)) => held.extend(fds),
                        None => got.listeners.push((name, bind, fds)),
                    }
                }
                "A" => {
                    let bind = addr(parts.next())?;
                    got.admin = fds.into_iter().next().map(|fd| (bind, fd));
                }
                "C" => {
                    let path = PathBuf::from(parts.next().unwrap_or(""));
                    got.control = fds.into_iter().next().map(|fd| (path, fd));
                }
                "K" => {
                    let hex = parts.next().unwrap_or("").as_bytes();
                    let bytes: Option<Vec<u8>> = hex
                        .chunks(2)
                        .map(|p| {
                            std::str::from_utf8(p)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        })
                        .collect();
                    got.ticket_keys =
                        Some(bytes.and_then(|b| tickets::parse_keys(&b)).ok_or_else(|| {
                            "malformed ticket keys in the upgrade message".to_string()
                        })?);
                }
                "E" => return Ok(Some(got)),
                "" => return Err(
                    "the old process closed the upgrade socket before handing every socket over"
                        .into(),
                ),
                _ => return Err(format!("unknown upgrade message {text:?}")),
            }
        }
    }

    /// The inherited sockets for each listener of `cfg` (matched by name and configured address;
    /// empty: bind anew). Sockets of listeners `cfg` no longer has are closed.
    pub fn take_listeners(&mut self, cfg: &Config) -> Vec<Vec<OwnedFd>> {
        let mut out: Vec<Vec<OwnedFd>> = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            let pos = self
                .listeners
                .iter()
                .position(|(n, b, _)| *n == l.name && *b == l.bind);
            out.push(pos.map_or_else(Vec::new, |i| self.listeners.swap_remove(i).2));
        }
        for (name, bind, _) in self.listeners.drain(..) {
            tracing::info!(
                "upgrade: listener {name} ({bind}) is no longer configured: its sockets close"
            );
        }
        out
    }

    /// The inherited admin socket, if it was for `bind`.
    pub fn take_admin(&mut self, bind: SocketAddr) -> Option<std::net::TcpListener> {
        match self.admin.take() {
            Some((b, fd)) if b == bind => Some(fd.into()),
            _ => None,
        }
    }

    /// The inherited control socket, if it was for `path`.
    pub fn take_control(
        &mut self,
        path: &std::path::Path,
    ) -> Option<std::os::unix::net::UnixListener> {
        match self.control.take() {
            Some((p, fd)) if p == path => Some(fd.into()),
            _ => None,
        }
    }

    /// The predecessor's generated TLS ticket keys, newest first.
    pub fn take_ticket_keys(&mut self) -> Option<Vec<TicketKey>> {
        self.ticket_keys.take()
    }

    /// Tells the predecessor this process is ready: it stops accepting and drains.
    pub fn ready(self) -> std::io::Result<()> {
        let text = format!("R\t{}", std::process::id());
        fdpass::send(self.channel.as_fd(), text.as_bytes(), &[])
    }
}

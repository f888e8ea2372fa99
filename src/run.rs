//! `coreplex run`: load the config, check limits, start the shards, the admin endpoint and the
//! control socket, and stop gracefully on SIGINT/SIGTERM (a second signal exits at once). A
//! binary upgrade (`coreplex upgrade` on the control socket, or SIGUSR2) starts the successor
//! ([`crate::upgrade`]); once it serves, this process stops accepting and drains within
//! `global.shutdown_timeout`. A process started by an upgrade takes the sockets over first.

use crate::admin;
use crate::config::{self, Config};
use crate::control_socket;
use crate::http::{BackendRuntime, HttpService, ListenerRuntime};
use crate::notify;
use crate::secure::Secure;
use crate::upgrade::{self, Handoff, Inherited, Relaunch, UpgradeError};
use coreplex_engine::{cpus, limits, ListenerSpec, Runtime, RuntimeConfig, ShardConfig};
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs the server until it is stopped.
pub fn run(path: Option<&Path>, cpus_arg: Option<&str>, shards: Option<usize>) -> ExitCode {
    let mut cfg = match path {
        Some(p) => match crate::cli::load_file(p) {
            Ok(c) => c,
            Err(code) => return code,
        },
        None => {
            config::load(config::EMBEDDED_DEFAULT).expect("the embedded default config is valid")
        }
    };
    if let Some(list) = cpus_arg {
        match cpus::parse_cpu_list(list) {
            Ok(c) => cfg.global.cpus = c,
            Err(e) => {
                eprintln!("error: --cpus: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(n) = shards {
        if n == 0 || n > cfg.global.cpus.len() {
            eprintln!(
                "error: --shards {n}: must be between 1 and the number of cpus ({})",
                cfg.global.cpus.len()
            );
            return ExitCode::from(2);
        }
        cfg.global.cpus.truncate(n);
    }
    // Signals go to the signal thread only: block them before any other thread exists.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.add(Signal::SIGUSR2);
    signals.add(Signal::SIGUSR1);
    if let Err(e) = signals.thread_block() {
        eprintln!("error: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    match start(cfg, signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn max_connections(cfg: &Config, fd: &limits::FdLimit) -> usize {
    let shards = cfg.global.cpus.len();
    let fixed = limits::fixed_fds(shards, cfg.listeners.len());
    // A proxied client needs a second descriptor for its backend connection.
    let per_client = if cfg.backends.is_empty() { 1 } else { 2 };
    match cfg.global.max_connections {
        Some(m) => {
            let needed = (m * shards * per_client) as u64 + fixed;
            if fd.soft < needed {
                tracing::warn!(
                    "the open-files limit ({} soft, {} hard) is below the {needed} descriptors that {shards} shard(s) x global.max_connections {m} (x2 with backend connections) need: accepts beyond it fail with EMFILE and are retried; raise it (ulimit -n, LimitNOFILE=, tuning/limits.d; `coreplex tune` diagnoses it) or lower max_connections",
                    fd.soft,
                    fd.hard
                );
            }
            m
        }
        None => (fd.soft.saturating_sub(fixed) as usize / shards / per_client).clamp(64, 1_000_000),
    }
}

/// The engine's configuration for `cfg`, with `max_conn` client connections per shard.
pub(crate) fn runtime_config(cfg: &Config, max_conn: usize) -> RuntimeConfig {
    RuntimeConfig {
        cpus: cfg.global.cpus.clone(),
        listeners: cfg
            .listeners
            .iter()
            .map(|l| ListenerSpec {
                addr: l.bind,
                backlog: l.backlog,
                // New TLS sessions are new connections here: both limits bound accepts.
                rate_limit: match (l.rate_limit, l.tls.as_ref().and_then(|t| t.session_rate)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                preface: l.proxy_protocol.as_ref().map(|p| p.timeout),
            })
            .collect(),
        shard: ShardConfig {
            max_connections: max_conn,
            ring_entries: cfg.global.ring_entries,
            buffers: cfg.global.buffers,
            buffer_size: cfg.global.buffer_size,
            linger: cfg.global.linger,
            // A whole request head, or a whole HTTP/2 frame (the largest max_frame_size a
            // listener that speaks h2 allows), plus a read.
            max_input: cfg
                .listeners
                .iter()
                .map(|l| {
                    let frame = if l.speaks_h2() {
                        l.http2.settings.max_frame_size as usize + 9
                    } else {
                        0
                    };
                    l.limits.max_header_bytes.max(frame)
                })
                .max()
                .unwrap_or(32768)
                + 64 * 1024,
            // One backend connection per client in flight, plus pooled idle ones.
            max_outbound: if cfg.backends.is_empty() { 0 } else { max_conn },
        },
    }
}

/// Builds each shard's HTTP service (on the shard's own thread) over the shared, read-only
/// listener and backend tables of `cfg` and its loaded TLS.
pub(crate) fn service_factory(
    cfg: &Config,
    secure: &Secure,
    logs: Vec<Arc<OwnedFd>>,
) -> impl Fn(usize) -> HttpService + Send + Sync {
    let listeners: Arc<Vec<ListenerRuntime>> =
        Arc::new(cfg.listeners.iter().map(ListenerRuntime::new).collect());
    let backends: Arc<Vec<BackendRuntime>> = Arc::new(
        cfg.backends
            .iter()
            .zip(
                secure
                    .backend_profiles
                    .iter()
                    .zip(&secure.backend_h2_profiles),
            )
            .map(|(b, (p, h2))| BackendRuntime::new(b, p.clone(), h2.clone()))
            .collect(),
    );
    let shards = cfg.global.cpus.len();
    let secure = secure.clone();
    let spread = cfg.global.close_spread_time;
    move |shard| {
        HttpService::new(
            listeners.clone(),
            backends.clone(),
            shard,
            shards,
            secure.transport(),
        )
        .with_close_spread(spread)
        .with_access_logs(logs.clone())
    }
}

fn start(cfg: Config, signals: SigSet) -> Result<(), String> {
    let relaunch =
        Relaunch::current().map_err(|e| format!("cannot find this binary's path: {e}"))?;
    let mut inherited = Inherited::from_env()?;
    if inherited.is_some() {
        tracing::info!("upgrade: taking the listening sockets over from the running process");
    }
    let fd = limits::raise_nofile();
    if fd.soft != fd.before {
        tracing::info!(
            "raised the open-files limit from {} to {}",
            fd.before,
            fd.soft
        );
    }
    let max_conn = max_connections(&cfg, &fd);
    let admin_listener = match cfg.admin {
        Some(addr) => Some(match inherited.as_mut().and_then(|i| i.take_admin(addr)) {
            Some(l) => l,
            None => admin::bind(addr)?,
        }),
        None => None,
    };
    let control_listener = match &cfg.global.control_socket {
        Some(path) => Some(
            match inherited.as_mut().and_then(|i| i.take_control(path)) {
                Some(l) => l,
                None => control_socket::bind(path)?,
            },
        ),
        None => None,
    };
    let secure = Secure::load(&cfg, inherited.as_mut().and_then(|i| i.take_ticket_keys()))?;
    let logs = open_logs(&cfg)?;
    let sockets = match inherited.as_mut() {
        Some(i) => i.take_listeners(&cfg),
        None => cfg.listeners.iter().map(|_| Vec::new()).collect(),
    };
    let runtime = Runtime::start_inherited(
        runtime_config(&cfg, max_conn),
        service_factory(&cfg, &secure, logs),
        sockets,
    )
    .map_err(|e| e.to_string())?;
    let handle = runtime.handle();
    secure.rotate(&cfg, handle.clone());
    let stopping = Arc::new(AtomicBool::new(false));
    // Set once a successor has taken the sockets over: the admin and control threads let go.
    let released = Arc::new(AtomicBool::new(false));
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let admin_copy = admin_listener
        .as_ref()
        .map(|l| l.try_clone().map(OwnedFd::from))
        .transpose()
        .map_err(|e| format!("cannot keep the admin socket: {e}"))?;
    if let Some(l) = admin_listener {
        admin::spawn(l, handle.clone(), stopping.clone(), released.clone())
            .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    }
    let (req_tx, req_rx) = crossbeam_channel::unbounded::<control_socket::Request>();
    let control_copy = control_listener
        .as_ref()
        .map(|l| l.try_clone().map(OwnedFd::from))
        .transpose()
        .map_err(|e| format!("cannot keep the control socket: {e}"))?;
    if let Some(l) = control_listener {
        control_socket::spawn(l, req_tx.clone(), released.clone())
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
    }
    for (l, addr) in cfg.listeners.iter().zip(runtime.listener_addrs()) {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        tracing::info!("listener {} on {scheme}://{addr}", l.name);
    }
    if let Some(a) = admin_addr {
        tracing::info!("admin on http://{a}/metrics");
    }
    let f = runtime.features();
    tracing::info!(
        "{} shard(s) on cpus {:?}, max_connections {} per shard, io_uring defer_taskrun={}",
        cfg.global.cpus.len(),
        cfg.global.cpus,
        max_conn,
        f.defer_taskrun
    );
    let pid = std::process::id();
    if let Some(path) = &cfg.global.pid_file {
        std::fs::write(path, format!("{pid}\n"))
            .map_err(|e| format!("cannot write global.pid_file {}: {e}", path.display()))?;
    }
    match inherited {
        Some(i) => {
            i.ready()
                .map_err(|e| format!("cannot tell the old process this one is ready: {e}"))?;
            tracing::info!("upgrade: serving; the old process stops accepting and drains");
            notify::notify(&format!("MAINPID={pid}\nREADY=1"));
        }
        None => notify::notify("READY=1"),
    }
    let started = std::time::SystemTime::now();

    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded::<Signal>();
    std::thread::Builder::new()
        .name("coreplex-signals".into())
        .spawn(move || loop {
            match signals.wait() {
                Ok(s) => {
                    if sig_tx.send(s).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    std::thread::Builder::new()
        .name("coreplex-join".into())
        .spawn(move || {
            runtime.join();
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("cannot start the join thread: {e}"))?;

    let grace = cfg.global.shutdown_timeout;
    let (up_tx, up_rx) = crossbeam_channel::unbounded::<(
        Result<u32, UpgradeError>,
        Option<crossbeam_channel::Sender<String>>,
    )>();
    let mut upgrading = false;
    let mut stop_cause: Option<StopCause> = None;
    let start_upgrade = |reply: Option<crossbeam_channel::Sender<String>>,
                         upgrading: &mut bool,
                         stop_cause: Option<StopCause>| {
        let refused = if *upgrading {
            Some(UpgradeError::Running)
        } else if stop_cause.is_some() {
            Some(UpgradeError::Stopping)
        } else {
            None
        };
        if let Some(e) = refused {
            tracing::warn!("upgrade refused: {e}");
            if let Some(r) = reply {
                let _ = r.send(format!("error: {e}"));
            }
            return;
        }
        let handoff = match handoff(&cfg, &handle, &admin_copy, &control_copy, &secure) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("upgrade refused: {e}");
                if let Some(r) = reply {
                    let _ = r.send(format!("error: {e}"));
                }
                return;
            }
        };
        *upgrading = true;
        tracing::info!("upgrade: starting {}", relaunch.exe.display());
        let (relaunch, up_tx) = (relaunch.clone(), up_tx.clone());
        std::thread::spawn(move || {
            let _ = up_tx.send((upgrade::start_successor(&relaunch, handoff), reply));
        });
    };
    let result = loop {
        crossbeam_channel::select! {
            recv(done_rx) -> _ => {
                tracing::info!("stopped");
                break Ok(());
            }
            recv(req_rx) -> req => {
                let Ok(req) = req else { continue };
                match req.command {
                    control_socket::Command::Status => {
                        let since = started.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                        let state = match (stop_cause, upgrading) {
                            (Some(StopCause::Upgrade), _) => "draining (upgraded)",
                            (Some(StopCause::Signal), _) => "stopping",
                            (None, true) => "upgrading",
                            (None, false) => "running",
                        };
                        let _ = req.reply.send(format!("ok pid {pid} started {since} state {state} version {}", env!("CARGO_PKG_VERSION")));
                    }
                    control_socket::Command::Upgrade => start_upgrade(Some(req.reply), &mut upgrading, stop_cause),
                }
            }
            recv(up_rx) -> done => {
                let Ok((outcome, reply)) = done else { continue };
                upgrading = false;
                let text = match outcome {
                    Ok(new_pid) => {
                        tracing::info!("upgrade: pid {new_pid} serves; this process stops accepting and drains (at most {grace:?})");
                        released.store(true, Ordering::SeqCst);
                        stop_cause = Some(StopCause::Upgrade);
                        handle.stop(grace);
                        format!("ok upgraded: pid {new_pid} serves; pid {pid} drains (at most {grace:?})")
                    }
                    Err(e) => {
                        tracing::error!("upgrade failed: {e}");
                        format!("error: {e}")
                    }
                };
                if let Some(r) = reply {
                    let _ = r.send(text);
                }
            }
            recv(sig_rx) -> sig => match sig {
                Ok(Signal::SIGHUP) => tracing::warn!("SIGHUP: configuration reload is not supported yet; apply a new configuration with a binary upgrade (`coreplex upgrade`, or SIGUSR2), which re-reads it"),
                Ok(Signal::SIGUSR2) => start_upgrade(None, &mut upgrading, stop_cause),
                Ok(Signal::SIGUSR1) => match open_logs(&cfg) {
                    Ok(logs) if !logs.is_empty() => {
                        handle.broadcast(|| crate::http::ReopenLogs(logs.clone()));
                        tracing::info!("SIGUSR1: access logs reopened");
                    }
                    Ok(_) => tracing::info!("SIGUSR1: no access log to reopen"),
                    Err(e) => tracing::error!("SIGUSR1: {e}; the logs stay as they were"),
                },
                Ok(s) => {
                    match stop_cause {
                        Some(StopCause::Signal) => {
                            tracing::warn!("{s}: second stop signal, exiting now");
                            std::process::exit(1);
                        }
                        Some(StopCause::Upgrade) => {
                            tracing::info!("{s}: already draining after an upgrade (a second signal exits at once)");
                            stop_cause = Some(StopCause::Signal);
                        }
                        None => {
                            stop_cause = Some(StopCause::Signal);
                            stopping.store(true, Ordering::SeqCst);
                            tracing::info!("{s}: stopping: no new connections, finishing requests in flight (at most {grace:?})");
                            handle.stop(grace);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    };
    // The successor owns the control socket's path and the pid file now.
    if !released.load(Ordering::SeqCst) {
        if let Some(path) = &cfg.global.control_socket {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &cfg.global.pid_file {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Opens every access log of `cfg` (files for appending, mode 0640 when created), numbered as
/// the listeners name them.
fn open_logs(cfg: &Config) -> Result<Vec<Arc<OwnedFd>>, String> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    cfg.access_logs
        .iter()
        .map(|d| {
            let fd = match d {
                config::LogDestination::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
                config::LogDestination::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
                config::LogDestination::File(p) => std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            };
            fd.map(Arc::new)
                .map_err(|e| format!("cannot open the access log {e}"))
        })
        .collect()
}

/// Why this process is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopCause {
    /// SIGTERM or SIGINT.
    Signal,
    /// A successor took the sockets over.
    Upgrade,
}

/// Copies of every socket a successor takes over.
fn handoff(
    cfg: &Config,
    handle: &coreplex_engine::RuntimeHandle<crate::http::HttpStats>,
    admin: &Option<OwnedFd>,
    control: &Option<OwnedFd>,
    secure: &Secure,
) -> Result<Handoff, String> {
    let dup = |e: std::io::Error| format!("cannot copy a listening socket: {e}");
    let sockets = handle
        .listening_sockets()
        .map_err(dup)?
        .ok_or("this process is stopping")?;
    Ok(Handoff {
        listeners: cfg
            .listeners
            .iter()
            .zip(sockets)
            .map(|(l, fds)| (l.name.clone(), l.bind, fds))
            .collect(),
        admin: match (cfg.admin, admin) {
            (Some(a), Some(fd)) => Some((a, fd.try_clone().map_err(dup)?)),
            _ => None,
        },
        control: match (&cfg.global.control_socket, control) {
            (Some(p), Some(fd)) => Some((p.clone(), fd.try_clone().map_err(dup)?)),
            _ => None,
        },
        ticket_keys: secure.generated_keys(),
    })
}

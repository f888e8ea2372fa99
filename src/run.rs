//! `coreplex run`: load the config, check limits, start the shards and the admin endpoint, and
//! stop gracefully on SIGINT/SIGTERM (a second signal exits at once).

use crate::admin;
use crate::config::{self, Config};
use crate::http::{BackendRuntime, HttpService, ListenerRuntime};
use crate::secure::Secure;
use coreplex_engine::{cpus, limits, ListenerSpec, Runtime, RuntimeConfig, ShardConfig};
use nix::sys::signal::{SigSet, Signal};
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
    move |shard| {
        HttpService::new(
            listeners.clone(),
            backends.clone(),
            shard,
            shards,
            secure.transport(),
        )
    }
}

fn start(cfg: Config, signals: SigSet) -> Result<(), String> {
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
        Some(addr) => Some(admin::bind(addr)?),
        None => None,
    };
    let secure = Secure::load(&cfg)?;
    let runtime = Runtime::start(
        runtime_config(&cfg, max_conn),
        service_factory(&cfg, &secure),
    )
    .map_err(|e| e.to_string())?;
    let handle = runtime.handle();
    secure.rotate(&cfg, handle.clone());
    let stopping = Arc::new(AtomicBool::new(false));
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = admin_listener {
        admin::spawn(l, handle.clone(), stopping.clone())
            .map_err(|e| format!("cannot start the admin thread: {e}"))?;
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
    loop {
        crossbeam_channel::select! {
            recv(done_rx) -> _ => {
                tracing::info!("stopped");
                return Ok(());
            }
            recv(sig_rx) -> sig => match sig {
                Ok(Signal::SIGHUP) => tracing::warn!("SIGHUP: configuration reload is not supported yet; restart to apply a new configuration"),
                Ok(s) => {
                    if stopping.swap(true, Ordering::SeqCst) {
                        tracing::warn!("{s}: second stop signal, exiting now");
                        std::process::exit(1);
                    }
                    tracing::info!("{s}: stopping: no new connections, finishing requests in flight (at most {grace:?})");
                    handle.stop(grace);
                }
                Err(_) => {}
            }
        }
    }
}

//! Starting and stopping the shards.
//!
//! `Runtime::start` binds every listener once per shard on the calling thread (so address errors are
//! reported before any thread starts), then spawns one thread per CPU. Each thread pins itself,
//! creates its ring (SINGLE_ISSUER: the ring belongs to the thread that uses it) and its service,
//! reports success or its error back, and runs its loop. Startup fails as a whole if any shard fails.
//!
//! A successor in a binary upgrade starts with the listening sockets its predecessor handed over
//! ([`Runtime::start_inherited`]): shard `i` takes over socket `i` of a listener, so a connection
//! waiting in any accept queue is accepted by one process or the other, never refused. The
//! runtime keeps a copy of every listening socket ([`RuntimeHandle::listening_sockets`]) to hand
//! over in turn, until a stop releases them.

use crate::control::{self, Control, ShardHandle, ShardReport};
use crate::cpus;
use crate::error::EngineError;
use crate::limits;
use crate::listener::{self, ListenerSpec};
use crate::service::Service;
use crate::shard::{ListenerSettings, Shard, ShardConfig};
use crate::sys::{Ring, RingFeatures};
use crate::token::SEND_TAG;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to start.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// One shard per CPU, pinned to it.
    pub cpus: Vec<usize>,
    /// Listening addresses; each shard gets its own SO_REUSEPORT socket per listener.
    pub listeners: Vec<ListenerSpec>,
    /// Per-shard sizing.
    pub shard: ShardConfig,
}

/// A cloneable handle to send commands to all shards.
pub struct RuntimeHandle<St> {
    shards: Arc<Vec<ShardHandle<St>>>,
    /// A copy of every listening socket, `[listener][shard]`, until a stop releases them.
    sockets: Arc<Mutex<Option<Vec<Vec<OwnedFd>>>>>,
}

impl<St> Clone for RuntimeHandle<St> {
    fn clone(&self) -> Self {
        RuntimeHandle {
            shards: self.shards.clone(),
            sockets: self.sockets.clone(),
        }
    }
}

impl<St: Send + 'static> RuntimeHandle<St> {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Collects a statistics snapshot from every shard (a shard that does not answer within
    /// `timeout` is left out).
    pub fn stats(&self, timeout: Duration) -> Vec<ShardReport<St>> {
        let (tx, rx) = crossbeam_channel::bounded(self.shards.len());
        let mut asked = 0;
        for s in self.shards.iter() {
            if s.send(Control::Stats(tx.clone())).is_ok() {
                asked += 1;
            }
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(asked);
        while out.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        out.sort_by_key(|r| r.shard);
        out
    }

    /// Delivers a message made by `make` to every shard's service ([`crate::Service::on_control`]).
    /// Returns how many shards it reached.
    pub fn broadcast<M: Send + 'static>(&self, make: impl Fn() -> M) -> usize {
        self.shards
            .iter()
            .filter(|s| s.send(Control::Service(Box::new(make()))).is_ok())
            .count()
    }

    /// New descriptors for every listening socket, `[listener][shard]`, to hand to a successor;
    /// `None` once a stop released them.
    pub fn listening_sockets(&self) -> std::io::Result<Option<Vec<Vec<OwnedFd>>>> {
        let held = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(all) = held.as_ref() else {
            return Ok(None);
        };
        all.iter()
            .map(|l| l.iter().map(|fd| fd.try_clone()).collect())
            .collect::<std::io::Result<_>>()
            .map(Some)
    }

    /// Asks every shard to stop gracefully within `grace`. The runtime's copies of the listening
    /// sockets close, so once the shards have closed theirs a new connection is refused (unless a
    /// successor holds them).
    pub fn stop(&self, grace: Duration) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for s in self.shards.iter() {
            let _ = s.send(Control::Stop { grace });
        }
    }
}

/// The running shards.
pub struct Runtime<St> {
    handle: RuntimeHandle<St>,
    threads: Vec<JoinHandle<()>>,
    features: RingFeatures,
    addrs: Vec<SocketAddr>,
}

impl<St: Send + 'static> Runtime<St> {
    /// Binds the listeners and starts one shard per CPU, each running a service made by `factory`
    /// (called on the shard's thread with the shard number).
    pub fn start<S, F>(cfg: RuntimeConfig, factory: F) -> Result<Runtime<St>, EngineError>
    where
        S: Service<Stats = St>,
        F: Fn(usize) -> S + Send + Sync + 'static,
    {
        let none = cfg.listeners.iter().map(|_| Vec::new()).collect();
        Self::start_inherited(cfg, factory, none)
    }

    /// Like [`Runtime::start`], with listening sockets taken over from a predecessor:
    /// `inherited[i]` holds listener `i`'s sockets (one per shard of the predecessor; empty: bind
    /// anew). Shard `j` takes socket `j`; shards beyond them bind more sockets on the same address
    /// (SO_REUSEPORT), and sockets beyond the shards close (their waiting connections with them:
    /// an upgrade that keeps the shard count loses none).
    pub fn start_inherited<S, F>(
        cfg: RuntimeConfig,
        factory: F,
        inherited: Vec<Vec<OwnedFd>>,
    ) -> Result<Runtime<St>, EngineError>
    where
        S: Service<Stats = St>,
        F: Fn(usize) -> S + Send + Sync + 'static,
    {
        assert_eq!(inherited.len(), cfg.listeners.len());
        if cfg.cpus.is_empty() {
            return Err(cpus::CpuListError::Empty.into());
        }
        cpus::check_allowed(&cfg.cpus)?;
        // Every descriptor the shards may hold, so the table never grows under load.
        let shards = cfg.cpus.len();
        limits::reserve_fd_table(
            (shards * (cfg.shard.max_connections + cfg.shard.max_outbound)) as u64
                + limits::fixed_fds(shards, cfg.listeners.len()),
        );
        let addrs = probe_addresses(&cfg.listeners, &inherited)?;
        let mut inherited: Vec<std::vec::IntoIter<OwnedFd>> =
            inherited.into_iter().map(|v| v.into_iter()).collect();
        let mut per_shard = Vec::with_capacity(cfg.cpus.len());
        let mut copies: Vec<Vec<OwnedFd>> = cfg.listeners.iter().map(|_| Vec::new()).collect();
        for _ in &cfg.cpus {
            let mut fds = Vec::with_capacity(addrs.len());
            for (i, (spec, addr)) in cfg.listeners.iter().zip(&addrs).enumerate() {
                let spec = ListenerSpec {
                    addr: *addr,
                    ..spec.clone()
                };
                let fd = match inherited[i].next() {
                    Some(fd) => fd,
                    None => listener::bind(&spec)?,
                };
                copies[i].push(fd.try_clone().map_err(|source| EngineError::Listen {
                    addr: *addr,
                    source,
                })?);
                fds.push(fd);
            }
            per_shard.push(fds);
        }
        drop(inherited);
        let factory = Arc::new(factory);
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for (shard, (cpu, fds)) in cfg.cpus.iter().copied().zip(per_shard).enumerate() {
            let (handle, inbox) =
                control::channel::<St>().map_err(|source| EngineError::Spawn { shard, source })?;
            handles.push(handle);
            let factory = factory.clone();
            let ready = ready_tx.clone();
            let scfg = cfg.shard.clone();
            let shards = cfg.cpus.len();
            let settings: Vec<ListenerSettings> = cfg
                .listeners
                .iter()
                .map(|l| ListenerSettings {
                    rate: l.rate_limit.map(|r| {
                        let part = limits::shard_share(u64::from(r), shards, shard);
                        u32::try_from(part).unwrap_or(u32::MAX)
                    }),
                    preface: l.preface,
                })
                .collect();
            let t = std::thread::Builder::new()
                .name(format!("cpx-shard-{shard}"))
                .spawn(move || {
                    if let Err(source) = cpus::pin_current_thread(cpu) {
                        let _ = ready.send(Err(EngineError::Pin { shard, cpu, source }));
                        return;
                    }
                    let ring = match Ring::new(
                        scfg.ring_entries,
                        scfg.buffers,
                        scfg.buffer_size,
                        0,
                        SEND_TAG,
                    ) {
                        Ok(r) => r,
                        Err(source) => {
                            let _ = ready.send(Err(EngineError::Ring { shard, source }));
                            return;
                        }
                    };
                    let features = ring.features();
                    let service = factory(shard);
                    let shard_loop = Shard::new(shard, &scfg, ring, fds, &settings, service, inbox);
                    let _ = ready.send(Ok(features));
                    drop(ready);
                    shard_loop.run();
                })
                .map_err(|source| EngineError::Spawn { shard, source })?;
            threads.push(t);
        }
        drop(ready_tx);
        let handle = RuntimeHandle {
            shards: Arc::new(handles),
            sockets: Arc::new(Mutex::new(Some(copies))),
        };
        let mut features = RingFeatures::default();
        let mut first_err = None;
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(f)) => features = f,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_err {
            handle.stop(Duration::ZERO);
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        Ok(Runtime {
            handle,
            threads,
            features,
            addrs,
        })
    }

    /// A handle for commands and statistics.
    pub fn handle(&self) -> RuntimeHandle<St> {
        self.handle.clone()
    }

    /// Ring setup flags in effect.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// The bound address of each listener (resolves port 0).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Waits for all shards to exit.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Checks that each address is free with a plain (non-SO_REUSEPORT) bind, so a port held by another
/// process, even one using SO_REUSEPORT itself, is reported instead of silently shared. Port 0 is
/// resolved to a concrete port here, so all shards share it. A listener with inherited sockets is
/// not probed (its predecessor holds the port): its address is theirs.
fn probe_addresses(
    listeners: &[ListenerSpec],
    inherited: &[Vec<OwnedFd>],
) -> Result<Vec<SocketAddr>, EngineError> {
    let mut out = Vec::with_capacity(listeners.len());
    for (spec, held) in listeners.iter().zip(inherited) {
        if let Some(fd) = held.first() {
            let err = |source| EngineError::Listen {
                addr: spec.addr,
                source,
            };
            let sock = socket2::SockRef::from(fd);
            let addr = sock
                .local_addr()
                .map_err(err)?
                .as_socket()
                .ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?;
            out.push(addr);
            continue;
        }
        let probe = std::net::TcpListener::bind(spec.addr).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                EngineError::AddrInUse { addr: spec.addr }
            } else {
                EngineError::Listen {
                    addr: spec.addr,
                    source,
                }
            }
        })?;
        let addr = probe.local_addr().map_err(|source| EngineError::Listen {
            addr: spec.addr,
            source,
        })?;
        out.push(addr);
    }
    Ok(out)
}

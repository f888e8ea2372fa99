//! `coreplex-bench compare`: coreplex and its peers (nginx, haproxy from Debian) side by side.
//!
//! Each server runs alone, pinned to the server CPU; the load (this process's `load` threads) runs
//! pinned to the client CPU. For every case (connections x pipelining) the servers are measured
//! in turn for several rounds, alternating the order (ABAB, BABA, ...). Server CPU time comes from
//! `/proc/PID/stat` of the server and its children over each run; bytes per idle connection from a
//! fresh server holding `--idle` connections (`memprobe`).
//!
//! Two scenarios ([`Scenario`]):
//! - `direct`: the servers answer themselves (coreplex `respond`, nginx `return 200`, haproxy
//!   `http-request return`); ratios against the first peer that is not coreplex.
//! - `proxy`: the servers are reverse proxies (coreplex `backend`, nginx `proxy_pass` with upstream
//!   keep-alive, haproxy with `http-reuse safe`) in front of one nginx backend
//!   (`peers/nginx-backend.conf`) that runs for the whole comparison, pinned to the server CPU
//!   too. The CPU measured is the proxy's alone; the backend's is reported beside it, and so is
//!   the number of connections the proxy holds to the backend, mid-run and after the run. Ratios
//!   against haproxy (the headline) and nginx.

use crate::hold::Holder;
use crate::load;
use crate::proc_stats::Snapshot;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the servers under test do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// The servers answer every request themselves.
    Direct,
    /// The servers forward every request to a shared nginx backend.
    Proxy,
}

/// A server under test.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Name in the tables.
    pub name: String,
    port: u16,
    argv: Vec<String>,
    /// Its directory under the comparison's temporary directory (config copy, stderr.log).
    dir: PathBuf,
}

/// Options of `compare`.
pub struct Options {
    /// Servers, in order.
    pub servers: Vec<String>,
    /// Path of the coreplex binary.
    pub coreplex: PathBuf,
    /// Directory of the peer configs (bench/peers) and coreplex configs (bench/configs).
    pub bench_dir: PathBuf,
    /// Connection counts.
    pub conns: Vec<usize>,
    /// Pipelining depths.
    pub pipeline: Vec<usize>,
    /// Rounds per scenario.
    pub rounds: usize,
    /// Measured run time.
    pub duration: Duration,
    /// Warm-up run time.
    pub warmup: Duration,
    /// CPU of the server.
    pub server_cpu: usize,
    /// CPU of the load.
    pub client_cpu: usize,
    /// Idle connections for the memory figure (0: skip).
    pub idle: usize,
    /// Direct answers or proxying.
    pub scenario: Scenario,
    /// Port of the shared backend (proxy scenario), on 127.0.0.1.
    pub backend_port: u16,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Server name.
    pub server: String,
    /// Connections.
    pub conns: usize,
    /// Pipelining depth.
    pub pipeline: usize,
    /// Round.
    pub round: usize,
    /// Responses per second.
    pub rps: f64,
    /// Server CPU microseconds per response.
    pub cpu_us_per_req: f64,
    /// Server CPU utilisation over the run.
    pub cpu_util: f64,
    /// p99 latency, microseconds.
    pub p99_us: f64,
    /// Requests lost to errors, and non-2xx answers.
    pub errors: u64,
    /// (quantile, microseconds) latency curve.
    pub percentiles: Vec<(f64, f64)>,
    /// Proxy scenario: backend CPU microseconds per response (the backend is not the server
    /// measured above; this shows its share of the core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_cpu_us_per_req: Option<f64>,
    /// Proxy scenario: established connections from the proxy to the backend, mid-run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_conns: Option<usize>,
    /// Proxy scenario: established connections from the proxy to the backend right after the
    /// load stopped (what the proxy keeps idle), before the proxy is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_conns_after: Option<usize>,
}

/// Bytes per idle connection of one server.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Server name.
    pub server: String,
    /// Connections held.
    pub conns: usize,
    /// Server RSS growth per connection.
    pub user_bytes: f64,
    /// Kernel memory growth per connection (halved: loopback holds both ends).
    pub kernel_bytes: f64,
}

/// Copies the config `file` (relative to the bench directory) into `dir`, with @PORT@, @BACKEND@
/// (the backend's port) and @DIR@ replaced, and the address 127.0.0.1:18090 in coreplex's proxy
/// config pointed at the backend port; returns the copy's path.
fn template(o: &Options, file: &str, port: u16, dir: &Path) -> Result<String> {
    let src = o.bench_dir.join(file);
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let backend = o.backend_port.to_string();
    let text = text
        .replace("@PORT@", &port.to_string())
        .replace("@BACKEND@", &backend)
        .replace("@DIR@", &dir.display().to_string())
        .replace("127.0.0.1:18090", &format!("127.0.0.1:{backend}"));
    let name = Path::new(file).file_name().context("config file name")?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// `taskset -c CPU` followed by `argv`.
fn pinned(cpu: usize, argv: &[&str]) -> Vec<String> {
    let mut v = vec!["taskset".to_string(), "-c".into(), cpu.to_string()];
    v.extend(argv.iter().map(|a| a.to_string()));
    v
}

/// An nginx peer running `file` in its own directory under `tmp`.
fn nginx(o: &Options, name: &str, file: &str, port: u16, tmp: &Path) -> Result<Peer> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    let conf = template(o, file, port, &dir)?;
    let bin = which("nginx", &o.bench_dir)?;
    let prefix = dir.display().to_string();
    Ok(Peer {
        name: name.into(),
        port,
        argv: pinned(o.server_cpu, &[&bin, "-c", &conf, "-p", &prefix]),
        dir,
    })
}

/// A haproxy peer running `file` (one thread, foreground).
fn haproxy(o: &Options, file: &str, port: u16, tmp: &Path) -> Result<Peer> {
    let dir = tmp.join("haproxy");
    std::fs::create_dir_all(&dir)?;
    let conf = template(o, file, port, &dir)?;
    let bin = which("haproxy", &o.bench_dir)?;
    Ok(Peer {
        name: "haproxy".into(),
        port,
        argv: pinned(o.server_cpu, &[&bin, "-db", "-f", &conf]),
        dir,
    })
}

/// coreplex running `file` on one shard pinned to the server CPU; `port` is the config's listener.
fn coreplex(o: &Options, file: &str, port: u16, tmp: &Path) -> Result<Peer> {
    let dir = tmp.join("coreplex");
    std::fs::create_dir_all(&dir)?;
    let conf = template(o, file, port, &dir)?;
    let bin = o.coreplex.display().to_string();
    let cpu = o.server_cpu.to_string();
    Ok(Peer {
        name: "coreplex".into(),
        port,
        argv: pinned(
            o.server_cpu,
            &[
                &bin,
                "run",
                "-c",
                &conf,
                "--cpus",
                &cpu,
                "--log-level",
                "warn",
            ],
        ),
        dir,
    })
}

fn peers(o: &Options, tmp: &Path) -> Result<Vec<Peer>> {
    let mut out = Vec::new();
    for name in &o.servers {
        let peer = match (o.scenario, name.as_str()) {
            // The listener ports are those of the configs (coreplex) or substituted (peers).
            (Scenario::Direct, "coreplex") => coreplex(o, "configs/direct.toml", 8090, tmp)?,
            (Scenario::Direct, "nginx") => nginx(o, "nginx", "peers/nginx-direct.conf", 8091, tmp)?,
            (Scenario::Direct, "haproxy") => haproxy(o, "peers/haproxy-direct.cfg", 8092, tmp)?,
            (Scenario::Proxy, "coreplex") => coreplex(o, "configs/proxy.toml", 8091, tmp)?,
            (Scenario::Proxy, "haproxy") => haproxy(o, "peers/haproxy-proxy.cfg", 8092, tmp)?,
            (Scenario::Proxy, "nginx") => nginx(o, "nginx", "peers/nginx-proxy.conf", 8093, tmp)?,
            (_, other) => bail!("unknown server {other:?}: use coreplex, nginx, haproxy"),
        };
        out.push(peer);
    }
    Ok(out)
}

/// The shared backend of the proxy scenario.
fn backend(o: &Options, tmp: &Path) -> Result<Peer> {
    nginx(
        o,
        "backend",
        "peers/nginx-backend.conf",
        o.backend_port,
        tmp,
    )
}

/// Established TCP connections (IPv4 and IPv6) whose remote port is `port`: from this machine to
/// a server on that port, counted once (the server's end has `port` as its local port).
pub fn established_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|f| count_established_to(&std::fs::read_to_string(f).unwrap_or_default(), port))
        .sum()
}

/// [`established_to`] on the text of `/proc/net/tcp`: lines `sl local rem st ...`, addresses as
/// `HEXADDR:HEXPORT`, state 01 = ESTABLISHED.
fn count_established_to(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().take(4).collect();
            f.len() == 4
                && f[3] == "01"
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

fn find(tool: &str) -> Option<String> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// The peer's binary; installs the peers (tests/setup.sh, Debian packages) when it is missing.
fn which(tool: &str, bench_dir: &Path) -> Result<String> {
    if let Some(p) = find(tool) {
        return Ok(p);
    }
    let setup = bench_dir.join("../tests/setup.sh");
    eprintln!("{tool} is missing: running {}", setup.display());
    let ok = Command::new("bash")
        .arg(&setup)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match find(tool) {
        Some(p) if ok => Ok(p),
        _ => bail!(
            "{tool} is not installed and {} could not install it",
            setup.display()
        ),
    }
}

/// A running server process.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn start(p: &Peer) -> Result<Running> {
        let addr = SocketAddr::from(([127, 0, 0, 1], p.port));
        if TcpStream::connect(addr).is_ok() {
            bail!(
                "{addr} is already taken (a server left from an earlier run?): {} needs it",
                p.name
            );
        }
        let log = p.dir.join("stderr.log");
        let child = Command::new(&p.argv[0])
            .args(&p.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", p.name))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut r = Running { child, addr };
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || r.child.try_wait()?.is_some() {
                r.stop();
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} did not start listening on {addr} ({}); it said:\n{}",
                    p.name,
                    p.argv.join(" "),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(r)
    }

    /// The server process and its children (taskset execs in place; nginx forks a worker).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut v = vec![pid];
        v.extend(children(pid));
        v
    }

    /// The process that holds the connections (nginx: its worker).
    fn worker(&self) -> u32 {
        children(self.child.id())
            .first()
            .copied()
            .unwrap_or(self.child.id())
    }

    fn cpu_seconds(&self) -> f64 {
        self.pids().iter().map(|p| process_cpu(*p)).sum()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn load_options(
    o: &Options,
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    d: Duration,
) -> load::Options {
    load::Options {
        url: format!("http://{addr}/"),
        connections: conns,
        threads: 1,
        duration: d,
        rate: None,
        depth,
        method: "GET".into(),
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
        sources: 4,
        cpus: vec![o.client_cpu],
        progress: false,
        tls: load::tls::TlsOptions::default(),
        reconnect: false,
    }
}

/// Runs every case; prints each run as it finishes, returns all runs and idle figures.
pub fn run(o: &Options) -> Result<(Vec<Run>, Vec<Idle>)> {
    let tmp = std::env::temp_dir().join(format!("coreplex-compare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(o, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(o: &Options, tmp: &Path) -> Result<(Vec<Run>, Vec<Idle>)> {
    let peers = peers(o, tmp)?;
    // Proxy scenario: one backend for the whole comparison (stopped when dropped, errors too).
    let backend = match o.scenario {
        Scenario::Direct => None,
        Scenario::Proxy => {
            let b = Running::start(&backend(o, tmp)?)?;
            eprintln!(
                "  backend: nginx on {} (pid {}), CPU {}",
                b.addr,
                b.child.id(),
                o.server_cpu
            );
            Some(b)
        }
    };
    let mut runs = Vec::new();
    for &depth in &o.pipeline {
        for &conns in &o.conns {
            for round in 0..o.rounds {
                let mut order: Vec<&Peer> = peers.iter().collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for p in order {
                    let server = Running::start(p)?;
                    if !o.warmup.is_zero() {
                        load::run(&load_options(o, server.addr, conns, depth, o.warmup))?;
                    }
                    let b0 = backend.as_ref().map(|b| b.cpu_seconds());
                    let c0 = server.cpu_seconds();
                    let (r, backend_conns) = std::thread::scope(|s| {
                        // Mid-run count of the proxy's backend connections, from the client CPU.
                        let sampler = backend.as_ref().map(|_| {
                            s.spawn(|| {
                                let _ = coreplex_engine::cpus::pin_current_thread(o.client_cpu);
                                std::thread::sleep(o.duration / 2);
                                established_to(o.backend_port)
                            })
                        });
                        let r = load::run(&load_options(o, server.addr, conns, depth, o.duration));
                        (r, sampler.and_then(|h| h.join().ok()))
                    });
                    let r = r?;
                    let c1 = server.cpu_seconds();
                    let b1 = backend.as_ref().map(|b| b.cpu_seconds());
                    let backend_conns_after =
                        backend.as_ref().map(|_| established_to(o.backend_port));
                    drop(server);
                    let e = &r.counts.errors;
                    let answered = r.counts.answered.max(1) as f64;
                    let run = Run {
                        server: p.name.clone(),
                        conns,
                        pipeline: depth,
                        round,
                        rps: r.requests_per_sec,
                        cpu_us_per_req: (c1 - c0) * 1e6 / answered,
                        cpu_util: (c1 - c0) / r.duration_s,
                        p99_us: r.latency_us.p99,
                        errors: e.timeout + e.reset + e.closed + e.parse + e.non_2xx + e.connect,
                        percentiles: r.percentiles.clone(),
                        backend_cpu_us_per_req: b0
                            .zip(b1)
                            .map(|(b0, b1)| (b1 - b0) * 1e6 / answered),
                        backend_conns,
                        backend_conns_after,
                    };
                    let extra = match (
                        run.backend_cpu_us_per_req,
                        run.backend_conns,
                        run.backend_conns_after,
                    ) {
                        (Some(bc), Some(during), Some(after)) => format!(
                            " backend cpu/req={bc:.3}us conns={during}/{after} (mid-run/after)"
                        ),
                        _ => String::new(),
                    };
                    eprintln!(
                        "  c={conns:<5} pipeline={depth:<3} round={round} {:<9} rps={:>10.0} cpu/req={:.3}us util={:.2} p99={:.0}us errors={}{extra}",
                        run.server, run.rps, run.cpu_us_per_req, run.cpu_util, run.p99_us, run.errors
                    );
                    runs.push(run);
                }
            }
        }
    }
    let mut idle = Vec::new();
    if o.idle > 0 {
        for p in &peers {
            let server = Running::start(p)?;
            let pid = server.worker();
            let before = Snapshot::take(pid)?;
            let mut h = Holder::open(server.addr, o.idle, 4, "/", false)?;
            std::thread::sleep(Duration::from_millis(500));
            let alive = h.check_alive().max(1);
            let after = Snapshot::take(pid)?;
            h.close();
            drop(server);
            let i = Idle {
                server: p.name.clone(),
                conns: alive,
                user_bytes: (after.rss_bytes as f64 - before.rss_bytes as f64) / alive as f64,
                kernel_bytes: (after.kernel_bytes as f64 - before.kernel_bytes as f64)
                    / alive as f64
                    / 2.0,
            };
            eprintln!(
                "  idle {:<9} {} connections: {:.0} B user, {:.0} B kernel per connection",
                i.server, i.conns, i.user_bytes, i.kernel_bytes
            );
            idle.push(i);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(backend);
    Ok((runs, idle))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The servers the CPU ratios are taken against: direct, the first peer that is not coreplex
/// (nginx by default); proxy, haproxy (the headline) and nginx, those of them that ran.
fn bases(o: &Options) -> Vec<String> {
    let named: Vec<String> = match o.scenario {
        Scenario::Direct => o
            .servers
            .iter()
            .find(|s| *s != "coreplex")
            .cloned()
            .into_iter()
            .collect(),
        Scenario::Proxy => ["haproxy", "nginx"]
            .iter()
            .filter(|b| o.servers.iter().any(|s| s == *b))
            .map(|b| b.to_string())
            .collect(),
    };
    if named.is_empty() {
        o.servers.first().cloned().into_iter().collect()
    } else {
        named
    }
}

/// The Markdown tables: medians with spread, and CPU ratios against the peers of [`bases`]. The
/// proxy scenario adds the backend's CPU per request and the proxy's backend connections (mid-run
/// / after the run, medians over the rounds).
pub fn table(o: &Options, runs: &[Run], idle: &[Idle]) -> String {
    let bases = bases(o);
    let proxy = o.scenario == Scenario::Proxy;
    let mut s = String::new();
    if proxy {
        s.push_str(&format!(
            "scenario proxy: proxy and its backend (nginx, 1 worker, 127.0.0.1:{}) on CPU {}, load CPU {}, {} round(s) of {:?} (ABAB); CPU is the proxy's alone; ratios vs {}\n\n",
            o.backend_port, o.server_cpu, o.client_cpu, o.rounds, o.duration, bases.join(", ")
        ));
        s.push_str("| connections | pipeline | proxy | requests/s | proxy CPU us/request (median, min-max) |");
        for b in &bases {
            s.push_str(&format!(" CPU vs {b} |"));
        }
        s.push_str(
            " p99 | backend CPU us/request | backend connections (mid-run / after) | errors |\n|",
        );
        s.push_str(&"---|".repeat(9 + bases.len()));
        s.push('\n');
    } else {
        s.push_str(&format!(
            "server CPU {}, load CPU {}, {} round(s) of {:?} (ABAB), ratios vs {}\n\n",
            o.server_cpu,
            o.client_cpu,
            o.rounds,
            o.duration,
            bases.join(", ")
        ));
        s.push_str("| connections | pipeline | server | requests/s | server CPU us/request (median, min-max) | p99 |");
        for b in &bases {
            s.push_str(&format!(" CPU vs {b} |"));
        }
        s.push_str(" errors |\n|");
        s.push_str(&"---|".repeat(7 + bases.len()));
        s.push('\n');
    }
    for &depth in &o.pipeline {
        for &conns in &o.conns {
            let pick = |name: &str| -> Vec<&Run> {
                runs.iter()
                    .filter(|r| r.server == name && r.conns == conns && r.pipeline == depth)
                    .collect()
            };
            let base: Vec<f64> = bases
                .iter()
                .map(|b| median(pick(b).iter().map(|r| r.cpu_us_per_req).collect()))
                .collect();
            for name in &o.servers {
                let rs = pick(name);
                if rs.is_empty() {
                    continue;
                }
                let cpu: Vec<f64> = rs.iter().map(|r| r.cpu_us_per_req).collect();
                let med = median(cpu.clone());
                let min = cpu.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = cpu.iter().cloned().fold(0.0, f64::max);
                let ratios: String = base.iter().map(|b| format!(" {:.2}x |", med / b)).collect();
                let p99 = median(rs.iter().map(|r| r.p99_us).collect());
                let errors = rs.iter().map(|r| r.errors).sum::<u64>();
                s.push_str(&format!(
                    "| {conns} | {depth} | {name} | {:.0} | {med:.3} ({min:.3}-{max:.3}) |",
                    median(rs.iter().map(|r| r.rps).collect()),
                ));
                if proxy {
                    let of = |f: fn(&Run) -> Option<f64>| {
                        median(rs.iter().filter_map(|r| f(r)).collect())
                    };
                    s.push_str(&format!(
                        "{ratios} {p99:.0} us | {:.3} | {:.0} / {:.0} | {errors} |\n",
                        of(|r| r.backend_cpu_us_per_req),
                        of(|r| r.backend_conns.map(|n| n as f64)),
                        of(|r| r.backend_conns_after.map(|n| n as f64)),
                    ));
                } else {
                    s.push_str(&format!(" {p99:.0} us |{ratios} {errors} |\n"));
                }
            }
        }
    }
    if !idle.is_empty() {
        s.push_str("\n| server | idle connections | user bytes/conn | kernel bytes/conn |\n|---|---|---|---|\n");
        for i in idle {
            s.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} |\n",
                i.server, i.conns, i.user_bytes, i.kernel_bytes
            ));
        }
    }
    s
}

/// Writes the charts: latency curves of every server in the first scenario (median round by
/// p99), and requests/s against connections without pipelining.
pub fn plot(o: &Options, runs: &[Run], path: &Path) -> Result<()> {
    use crate::plot::{tail_x, Series};
    let (c0, d0) = (o.conns[0], o.pipeline[0]);
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for name in &o.servers {
        let mut rs: Vec<&Run> = runs
            .iter()
            .filter(|r| &r.server == name && r.conns == c0 && r.pipeline == d0)
            .collect();
        rs.sort_by(|a, b| a.p99_us.total_cmp(&b.p99_us));
        if let Some(r) = rs.get(rs.len() / 2) {
            latency.push(Series {
                name: name.clone(),
                points: r
                    .percentiles
                    .iter()
                    .map(|&(q, us)| (tail_x(q), us / 1000.0))
                    .collect(),
            });
        }
        let points: Vec<(f64, f64)> = o
            .conns
            .iter()
            .filter_map(|&c| {
                let v: Vec<f64> = runs
                    .iter()
                    .filter(|r| &r.server == name && r.conns == c && r.pipeline == 1)
                    .map(|r| r.rps)
                    .collect();
                (!v.is_empty()).then(|| (c as f64, median(v)))
            })
            .collect();
        throughput.push(Series {
            name: name.clone(),
            points,
        });
    }
    crate::plot::latency_and_throughput(
        path,
        &format!("latency, {c0} connections, depth {d0}"),
        &latency,
        &throughput,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_connections_to_a_port() {
        // 18090 = 0x46AA; state 01 established, 06 time-wait, 0A listen.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue
   0: 0100007F:46AA 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1
   1: 0100007F:9C40 0100007F:46AA 01 00000000:00000000 00:00000000 00000000 0 0 2 1
   2: 0100007F:46AA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 3 1
   3: 0100007F:9C41 0100007F:46AA 06 00000000:00000000 00:00000000 00000000 0 0 0 3
   4: 0200007F:9C42 0100007F:46AA 01 00000000:00000000 00:00000000 00000000 0 0 4 1
   5: 0200007F:9C43 0100007F:1F9B 01 00000000:00000000 00:00000000 00000000 0 0 5 1
";
        assert_eq!(count_established_to(table, 18090), 2);
        assert_eq!(count_established_to(table, 8091), 1);
        assert_eq!(count_established_to(table, 80), 0);
        assert_eq!(count_established_to("", 18090), 0);
    }

    fn options(scenario: Scenario, servers: &[&str]) -> Options {
        Options {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            coreplex: PathBuf::from("coreplex"),
            bench_dir: PathBuf::from("."),
            conns: vec![100],
            pipeline: vec![1],
            rounds: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            server_cpu: 0,
            client_cpu: 1,
            idle: 0,
            scenario,
            backend_port: 18090,
        }
    }

    fn run_of(server: &str, cpu: f64, proxy: bool) -> Run {
        Run {
            server: server.into(),
            conns: 100,
            pipeline: 1,
            round: 0,
            rps: 1000.0,
            cpu_us_per_req: cpu,
            cpu_util: 0.5,
            p99_us: 100.0,
            errors: 0,
            percentiles: Vec::new(),
            backend_cpu_us_per_req: proxy.then_some(7.0),
            backend_conns: proxy.then_some(100),
            backend_conns_after: proxy.then_some(90),
        }
    }

    /// Every line of the first table has as many cells as its header.
    fn assert_rectangular(table: &str) {
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        let cells = |l: &str| l.matches('|').count();
        assert!(rows.len() >= 3, "{table}");
        for r in &rows {
            assert_eq!(cells(r), cells(rows[0]), "{table}");
        }
    }

    #[test]
    fn proxy_table_has_ratios_against_haproxy_and_nginx() {
        let o = options(Scenario::Proxy, &["coreplex", "nginx", "haproxy"]);
        let runs = [
            run_of("coreplex", 8.0, true),
            run_of("nginx", 16.0, true),
            run_of("haproxy", 10.0, true),
        ];
        let t = table(&o, &runs, &[]);
        assert_rectangular(&t);
        assert!(t.contains("| CPU vs haproxy | CPU vs nginx |"), "{t}");
        assert!(t.contains("| 100 | 1 | coreplex | 1000 | 8.000 (8.000-8.000) | 0.80x | 0.50x | 100 us | 7.000 | 100 / 90 | 0 |"), "{t}");
    }

    #[test]
    fn direct_table_keeps_its_columns() {
        let o = options(Scenario::Direct, &["coreplex", "nginx"]);
        let runs = [run_of("coreplex", 5.0, false), run_of("nginx", 6.25, false)];
        let t = table(&o, &runs, &[]);
        assert_rectangular(&t);
        assert!(
            t.contains("| 100 | 1 | coreplex | 1000 | 5.000 (5.000-5.000) | 100 us | 0.80x | 0 |"),
            "{t}"
        );
        let json = serde_json::to_string(&runs[0]).unwrap();
        assert!(!json.contains("backend"), "{json}");
    }
}

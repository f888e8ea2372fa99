//! `coreplex-bench compare`: coreplex and its peers (nginx, haproxy from Debian) side by side.
//!
//! Each server runs alone, pinned to the server CPU; the load (this process's `load` threads) runs
//! pinned to the client CPU. For every scenario (connections x pipelining) the servers are measured
//! in turn for several rounds, alternating the order (ABAB, BABA, ...). Server CPU time comes from
//! `/proc/PID/stat` of the server and its children over each run; bytes per idle connection from a
//! fresh server holding `--idle` connections (`memprobe`).

use crate::hold::Holder;
use crate::load;
use crate::proc_stats::Snapshot;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server under test.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Name in the tables.
    pub name: String,
    port: u16,
    argv: Vec<String>,
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

fn peers(o: &Options, tmp: &Path) -> Result<Vec<Peer>> {
    let cpu = o.server_cpu.to_string();
    let mut out = Vec::new();
    for name in &o.servers {
        let peer = match name.as_str() {
            "coreplex" => Peer {
                name: name.clone(),
                port: 8090,
                argv: vec![
                    "taskset".into(),
                    "-c".into(),
                    cpu.clone(),
                    o.coreplex.display().to_string(),
                    "run".into(),
                    "-c".into(),
                    o.bench_dir
                        .join("configs/direct.toml")
                        .display()
                        .to_string(),
                    "--cpus".into(),
                    cpu.clone(),
                    "--log-level".into(),
                    "warn".into(),
                ],
            },
            "nginx" => {
                let conf = std::fs::read_to_string(o.bench_dir.join("peers/nginx-direct.conf"))?
                    .replace("@PORT@", "8091")
                    .replace("@DIR@", &tmp.display().to_string());
                let path = tmp.join("nginx.conf");
                std::fs::write(&path, conf)?;
                Peer {
                    name: name.clone(),
                    port: 8091,
                    argv: vec![
                        "taskset".into(),
                        "-c".into(),
                        cpu.clone(),
                        which("nginx", &o.bench_dir)?,
                        "-c".into(),
                        path.display().to_string(),
                        "-p".into(),
                        tmp.display().to_string(),
                    ],
                }
            }
            "haproxy" => {
                let conf = std::fs::read_to_string(o.bench_dir.join("peers/haproxy-direct.cfg"))?
                    .replace("@PORT@", "8092");
                let path = tmp.join("haproxy.cfg");
                std::fs::write(&path, conf)?;
                Peer {
                    name: name.clone(),
                    port: 8092,
                    argv: vec![
                        "taskset".into(),
                        "-c".into(),
                        cpu.clone(),
                        which("haproxy", &o.bench_dir)?,
                        "-db".into(),
                        "-f".into(),
                        path.display().to_string(),
                    ],
                }
            }
            other => bail!("unknown server {other:?}: use coreplex, nginx, haproxy"),
        };
        out.push(peer);
    }
    Ok(out)
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
        let child = Command::new(&p.argv[0])
            .args(&p.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", p.name))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], p.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut r = Running { child, addr };
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || r.child.try_wait()?.is_some() {
                r.stop();
                bail!("{} did not start listening on {addr}", p.name);
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
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
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
    }
}

/// Runs every scenario; prints each run as it finishes, returns all runs and idle figures.
pub fn run(o: &Options) -> Result<(Vec<Run>, Vec<Idle>)> {
    let tmp = std::env::temp_dir().join(format!("coreplex-compare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let peers = peers(o, &tmp)?;
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
                    let c0 = server.cpu_seconds();
                    let r = load::run(&load_options(o, server.addr, conns, depth, o.duration))?;
                    let c1 = server.cpu_seconds();
                    drop(server);
                    let e = &r.counts.errors;
                    let run = Run {
                        server: p.name.clone(),
                        conns,
                        pipeline: depth,
                        round,
                        rps: r.requests_per_sec,
                        cpu_us_per_req: (c1 - c0) * 1e6 / r.counts.answered.max(1) as f64,
                        cpu_util: (c1 - c0) / r.duration_s,
                        p99_us: r.latency_us.p99,
                        errors: e.timeout + e.reset + e.closed + e.parse + e.non_2xx + e.connect,
                        percentiles: r.percentiles.clone(),
                    };
                    eprintln!(
                        "  c={conns:<5} pipeline={depth:<3} round={round} {:<9} rps={:>10.0} cpu/req={:.3}us util={:.2} p99={:.0}us errors={}",
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
            let mut h = Holder::open(server.addr, o.idle, 4, "/")?;
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
    let _ = std::fs::remove_dir_all(&tmp);
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

/// The Markdown tables: medians with spread, and ratios against the first peer that is not
/// coreplex (nginx by default).
pub fn table(o: &Options, runs: &[Run], idle: &[Idle]) -> String {
    let base_name = o
        .servers
        .iter()
        .find(|s| *s != "coreplex")
        .cloned()
        .unwrap_or_else(|| o.servers[0].clone());
    let mut s = String::new();
    s.push_str(&format!(
        "server CPU {}, load CPU {}, {} round(s) of {:?} (ABAB), ratios vs {base_name}\n\n",
        o.server_cpu, o.client_cpu, o.rounds, o.duration
    ));
    s.push_str("| connections | pipeline | server | requests/s | server CPU us/request (median, min-max) | p99 | CPU vs ");
    s.push_str(&base_name);
    s.push_str(" | errors |\n|---|---|---|---|---|---|---|---|\n");
    for &depth in &o.pipeline {
        for &conns in &o.conns {
            let pick = |name: &str| -> Vec<&Run> {
                runs.iter()
                    .filter(|r| r.server == name && r.conns == conns && r.pipeline == depth)
                    .collect()
            };
            let base = median(pick(&base_name).iter().map(|r| r.cpu_us_per_req).collect());
            for name in &o.servers {
                let rs = pick(name);
                if rs.is_empty() {
                    continue;
                }
                let cpu: Vec<f64> = rs.iter().map(|r| r.cpu_us_per_req).collect();
                let med = median(cpu.clone());
                let min = cpu.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = cpu.iter().cloned().fold(0.0, f64::max);
                s.push_str(&format!(
                    "| {conns} | {depth} | {name} | {:.0} | {med:.3} ({min:.3}-{max:.3}) | {:.0} us | {:.2}x | {} |\n",
                    median(rs.iter().map(|r| r.rps).collect()),
                    median(rs.iter().map(|r| r.p99_us).collect()),
                    med / base,
                    rs.iter().map(|r| r.errors).sum::<u64>()
                ));
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

//! Process-level runtime behaviour seen from outside: shard threads pinned one per CPU
//! (`/proc/PID/task`), one io_uring per shard (`/proc/PID/fd`), `--cpus`/`--shards` overrides, a
//! clear error when the port is taken, and `global.max_connections` pausing and resuming accepts.

use crate::harness::{
    config, config_bind, get, metric, metric_in, metrics_text, test_shards, Conn, Server,
};
use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Parses a kernel CPU list such as `0-2,5`.
fn parse_cpu_list(s: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

/// `Cpus_allowed_list` of a status file.
fn cpus_allowed(status: &str) -> BTreeSet<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in status");
    parse_cpu_list(line)
}

/// The CPUs this test process may run on.
fn my_cpus() -> BTreeSet<usize> {
    cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap())
}

/// `(tid, comm, allowed cpus)` of the process's shard threads (named `cpx-shard-N`).
fn shard_threads(pid: u32) -> Vec<(String, String, BTreeSet<usize>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("cpx-shard-") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        out.push((tid, comm, cpus_allowed(&status)));
    }
    out
}

/// Number of io_uring file descriptors the process holds.
fn io_uring_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().contains("anon_inode:[io_uring]"))
        .count()
}

#[test]
fn shards_are_pinned_one_cpu_each() {
    let cpus = my_cpus();
    let shards = test_shards("shards_are_pinned_one_cpu_each", 2);
    let s = Server::start(&config(&format!("shards = {shards}"), ""));
    let threads = shard_threads(s.pid());
    assert_eq!(threads.len(), shards, "shard threads: {threads:?}");
    let mut used = BTreeSet::new();
    for (tid, comm, allowed) in &threads {
        assert_eq!(
            allowed.len(),
            1,
            "thread {tid} ({comm}) is not pinned to one cpu: {allowed:?}"
        );
        let cpu = *allowed.iter().next().unwrap();
        assert!(
            cpus.contains(&cpu),
            "thread {tid} pinned to cpu {cpu} outside {cpus:?}"
        );
        assert!(used.insert(cpu), "two shards share cpu {cpu}: {threads:?}");
    }
    let rings = io_uring_fds(s.pid());
    assert!(rings >= shards, "{rings} io_uring fds for {shards} shards");
    // Every shard serves the shared port: the kernel spreads 32 connections over the shards'
    // SO_REUSEPORT sockets by their ports (all on one of two shards: odds 2^-31).
    const N: usize = 32;
    let conns: Vec<Conn> = (0..N)
        .map(|_| {
            let mut c = Conn::connect(s.addr());
            c.send(&get("/"));
            assert_eq!(c.response().status, 200);
            c
        })
        .collect();
    let text = metrics_text(s.admin());
    let per_shard: Vec<f64> = (0..shards)
        .map(|i| {
            metric_in(
                &text,
                &format!("coreplex_shard_connections{{shard=\"{i}\"}}"),
            )
            .unwrap_or_else(|| panic!("no shard_connections for shard {i}:\n{text}"))
        })
        .collect();
    assert_eq!(
        per_shard.iter().sum::<f64>(),
        N as f64,
        "per shard: {per_shard:?}"
    );
    assert!(
        per_shard.iter().all(|&n| n >= 1.0),
        "a shard served none of {N} connections: {per_shard:?}"
    );
    drop(conns);
}

#[test]
fn cpus_and_shards_flags_pin_the_shard() {
    let cpu = *my_cpus().iter().next_back().unwrap(); // CPU 1 on a 2-CPU machine
    let cpu_arg = cpu.to_string();
    let s = Server::start_with_args(
        &config("shards = 0", ""),
        &["--cpus", &cpu_arg, "--shards", "1"],
    );
    let threads = shard_threads(s.pid());
    assert_eq!(threads.len(), 1, "shard threads: {threads:?}");
    assert_eq!(
        threads[0].2,
        BTreeSet::from([cpu]),
        "shard affinity: {threads:?}"
    );
    assert!(io_uring_fds(s.pid()) >= 1);
}

#[test]
fn port_in_use_is_reported() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let mut s = Server::spawn(&config_bind(&addr.to_string(), "", ""), &[]);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running with {addr} taken; stderr:\n{}", s.log_text()));
    assert!(!st.success(), "exited with {st}");
    let logs = s.log_text();
    assert!(logs.contains("address already in use"), "stderr:\n{logs}");
    assert!(
        logs.contains(&addr.to_string()),
        "stderr does not name {addr}:\n{logs}"
    );
    drop(holder);
}

#[test]
fn max_connections_pauses_and_resumes_accepting() {
    let s = Server::start(&config("max_connections = 5", ""));
    let mut first: Vec<Conn> = (0..5)
        .map(|i| {
            let mut c = Conn::connect(s.addr());
            c.send(&get("/"));
            let r = c.response();
            assert_eq!(r.status, 200, "connection {i}");
            c
        })
        .collect();
    let mut rest: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = Conn::connect(s.addr());
            c.send(&get("/api"));
            c
        })
        .collect();
    for (i, c) in rest.iter_mut().enumerate() {
        let r = c.try_response(Duration::from_millis(300), false);
        assert!(
            r.is_none(),
            "connection {} served beyond max_connections: {r:?}",
            5 + i
        );
        let (closed, _) = c.expect_eof(Duration::from_millis(1));
        assert!(!closed, "connection {} closed instead of waiting", 5 + i);
    }
    // The first 5 still work while the others wait.
    first[0].send(&get("/"));
    assert_eq!(first[0].response().status, 200);
    first.truncate(2); // closes 3
    for (i, c) in rest.iter_mut().enumerate() {
        let r = c.try_response(Duration::from_secs(3), false);
        let r = r.unwrap_or_else(|| panic!("connection {} not served after 3 closed", 5 + i));
        assert_eq!((r.status, r.text().as_str()), (201, "api"));
    }
    let paused = metric(s.admin(), "coreplex_accept_paused_total");
    assert!(paused >= 1.0, "coreplex_accept_paused_total = {paused}");
}

#[test]
fn fd_limit_below_configured_connections_warns_with_the_fix() {
    // 5,000 connections cannot fit an open-files limit of 1,024 (set by prlimit, whatever this
    // machine's own limit is): coreplex must still start and say how to fix the limit.
    let s = Server::start_with_nofile(&config("max_connections = 5000", ""), 1024);
    let logs = s.log_text();
    assert!(
        logs.contains("open-files limit (1024 soft, 1024 hard)") && logs.contains("ulimit -n"),
        "no fd-limit warning naming the fix:\n{logs}"
    );
    let mut c = Conn::connect(s.addr());
    c.send(&get("/"));
    assert_eq!(c.response().status, 200);
}

#[test]
fn a_connect_burst_never_exceeds_max_connections() {
    // 300 connects in a burst against max_connections = 50: accepts that complete together with
    // the pause are held unserved, so the table never holds more than 50 (sampled all through the
    // burst), it does fill to 50, and all are served as earlier connections close.
    let s = Server::start(&config("max_connections = 50", ""));
    let admin = s.admin();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = metrics_text(admin);
            let cur = metric_in(&text, "coreplex_connections_current").unwrap();
            let used = metric_in(&text, "coreplex_slab_used").unwrap();
            samples.push((cur, used));
            if cur >= 50.0 || std::time::Instant::now() > deadline {
                return samples;
            }
        }
    });
    let addr = s.addr();
    let conns: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let samples = sampler.join().unwrap();
    assert!(
        samples
            .iter()
            .all(|&(cur, used)| cur <= 50.0 && used <= 50.0),
        "over max_connections 50: {samples:?}"
    );
    assert_eq!(
        samples.last().map(|s| s.0),
        Some(50.0),
        "the table never filled: {samples:?}"
    );
    // Still exactly 50 while the other 250 wait in the backlog: sampled for half a second.
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(25));
        let text = metrics_text(admin);
        let cur = metric_in(&text, "coreplex_connections_current").unwrap();
        let used = metric_in(&text, "coreplex_slab_used").unwrap();
        assert_eq!((cur, used), (50.0, 50.0), "sample {i} after the burst");
    }
    drop(conns);
    // Every slot frees; the server is still serving.
    let mut c = Conn::connect(s.addr());
    c.send(&get("/"));
    assert_eq!(c.response().status, 200);
}

//! The checks `coreplex tune` makes: each reads a live value and compares it with what the target
//! connection count needs.

use super::sysctl;
use coreplex_engine::probe::UringProbe;

/// User-space bytes per idle connection (BENCHMARKS.md, `bench/memprobe.sh`: 52-61 B measured).
pub const USER_BYTES_PER_CONN: u64 = 64;
/// Kernel bytes per idle connection (BENCHMARKS.md: 4.0-5.0 KB measured on loopback).
pub const KERNEL_BYTES_PER_CONN: u64 = 5 * 1024;
/// Descriptors besides connections (listeners, rings, eventfds, stdio, admin).
pub const FIXED_FDS: u64 = 1024;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enough.
    Ok,
    /// Works, but below what the profile recommends.
    Warn,
    /// The target cannot be held.
    Fail,
}

impl Verdict {
    /// Upper-case label for the table.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Item {
    /// What is checked.
    pub name: String,
    /// The live value.
    pub have: String,
    /// What the target needs.
    pub need: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The command or setting that fixes it (empty when ok).
    pub fix: String,
    /// For sysctl items that `--apply` may raise: the key and the value to write.
    pub apply: Option<(String, String)>,
}

fn item(name: &str, have: String, need: String, verdict: Verdict, fix: String) -> Item {
    Item {
        name: name.to_string(),
        have,
        need,
        verdict,
        fix: if verdict == Verdict::Ok {
            String::new()
        } else {
            fix
        },
        apply: None,
    }
}

/// A numeric sysctl that must be at least `need`; `short` is the verdict when it is not. `None`
/// when the kernel lacks the knob.
fn at_least(key: &str, need: u64, why: &str, short: Verdict, hint: &str) -> Option<Item> {
    let have = sysctl::read_num(key)?;
    let ok = have >= need;
    let mut i = item(
        key,
        have.to_string(),
        format!(">= {need}{why}"),
        if ok { Verdict::Ok } else { short },
        format!("sysctl -w {key}={need}{hint}"),
    );
    if !ok {
        i.apply = Some((key.to_string(), need.to_string()));
    }
    Some(i)
}

/// Everything `tune` looks at, gathered once.
pub struct Facts {
    /// Target connections.
    pub target: u64,
    /// Shards the config runs.
    pub shards: u64,
    /// Largest listen backlog in the config.
    pub backlog: u64,
    /// Kernel release.
    pub kernel: String,
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: (u64, u64),
    /// RLIMIT_MEMLOCK (soft, hard) in bytes.
    pub memlock: (u64, u64),
    /// MemTotal in bytes.
    pub mem_total: u64,
    /// CPUs the process may use.
    pub cpus: usize,
    /// io_uring probe.
    pub uring: UringProbe,
}

/// The profile whose values apply to `target`.
pub fn profile_for(target: u64) -> (&'static str, &'static str) {
    if target <= 1_500_000 {
        ("c1m", sysctl::C1M)
    } else {
        ("c10m", sysctl::C10M)
    }
}

fn kernel_at_least(release: &str, major: u64, minor: u64) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let ma: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

fn human(bytes: u64) -> String {
    const G: f64 = (1u64 << 30) as f64;
    const M: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= G {
        format!("{:.1} GiB", b / G)
    } else {
        format!("{:.0} MiB", b / M)
    }
}

/// Runs every check.
pub fn run(f: &Facts) -> Vec<Item> {
    let mut out = Vec::new();
    let (pname, profile) = profile_for(f.target);
    let fds = f.target + FIXED_FDS;

    // Kernel and io_uring.
    let kernel_ok = kernel_at_least(&f.kernel, 6, 1);
    out.push(item(
        "kernel",
        f.kernel.clone(),
        ">= 6.1 (multishot accept/recv, buffer rings, DEFER_TASKRUN)".into(),
        if kernel_ok {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        "upgrade the kernel to 6.1 or newer".into(),
    ));
    let disabled = sysctl::read_num("kernel.io_uring_disabled").unwrap_or(0);
    out.push(item(
        "kernel.io_uring_disabled",
        disabled.to_string(),
        "0".into(),
        match disabled {
            0 => Verdict::Ok,
            1 => Verdict::Warn,
            _ => Verdict::Fail,
        },
        "sysctl -w kernel.io_uring_disabled=0 (1 allows only the io_uring_group)".into(),
    ));
    let (setup_have, setup_verdict) = match &f.uring.setup {
        Ok(()) => (
            if f.uring.defer_taskrun {
                "ok, DEFER_TASKRUN"
            } else {
                "ok, no DEFER_TASKRUN"
            }
            .to_string(),
            Verdict::Ok,
        ),
        Err(e) => (format!("fails: {e}"), Verdict::Fail),
    };
    out.push(item(
        "io_uring setup",
        setup_have,
        "a ring can be created".into(),
        setup_verdict,
        "allow io_uring_setup/enter/register in the seccomp profile (containers), check kernel.io_uring_disabled".into(),
    ));
    if f.uring.setup.is_ok() {
        let missing = f.uring.missing();
        out.push(item(
            "io_uring opcodes and features",
            if missing.is_empty() {
                "all present".into()
            } else {
                format!("missing: {}", missing.join(", "))
            },
            "ACCEPT, RECV, SEND, POLL_ADD, ASYNC_CANCEL, buffer rings, EXT_ARG, NODROP".into(),
            if missing.is_empty() {
                Verdict::Ok
            } else {
                Verdict::Fail
            },
            "upgrade the kernel".into(),
        ));
    }

    // Descriptors.
    let (soft, hard) = f.nofile;
    out.push(item(
        "RLIMIT_NOFILE (soft/hard)",
        format!("{soft}/{hard}"),
        format!("hard >= {fds} (coreplex raises soft to hard)"),
        if hard >= fds { Verdict::Ok } else { Verdict::Fail },
        format!("LimitNOFILE={fds} in tuning/coreplex.service, or `ulimit -Hn {fds}` as root, or tuning/limits.d/coreplex.conf (needs fs.nr_open >= {fds})"),
    ));
    let apply_hint = format!(" (tuning/apply.sh {pname})");
    out.extend(at_least("fs.nr_open", fds, "", Verdict::Fail, &apply_hint));
    out.extend(at_least(
        "fs.file-max",
        fds * 2,
        "",
        Verdict::Fail,
        &apply_hint,
    ));

    // Memory.
    let est = f.target * (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN);
    out.push(item(
        "memory for idle connections",
        format!("MemTotal {}", human(f.mem_total)),
        format!(
            "{} ({} x ({} B user + {} B kernel)), at most 90% of RAM",
            human(est),
            f.target,
            USER_BYTES_PER_CONN,
            KERNEL_BYTES_PER_CONN
        ),
        if est <= f.mem_total / 10 * 9 {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        "add RAM or spread the connections over more machines".into(),
    ));
    let (ml_soft, _) = f.memlock;
    let memcg = kernel_at_least(&f.kernel, 5, 12);
    out.push(item(
        "RLIMIT_MEMLOCK",
        if ml_soft == u64::MAX {
            "unlimited".into()
        } else {
            human(ml_soft)
        },
        if memcg {
            "not used by io_uring on >= 5.12 (memory cgroup accounting)".into()
        } else {
            ">= 64 MiB".into()
        },
        if memcg || ml_soft >= 64 << 20 {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        "LimitMEMLOCK=infinity (tuning/coreplex.service) or `ulimit -l unlimited`".into(),
    ));

    // Queues and TCP: below the profile works, but degrades under bursts.
    let backlog_need = f.backlog.max(4096);
    for key in ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"] {
        out.extend(at_least(
            key,
            backlog_need,
            " (listener backlog)",
            Verdict::Warn,
            "",
        ));
    }
    for key in [
        "net.core.netdev_max_backlog",
        "net.ipv4.tcp_max_orphans",
        "net.ipv4.tcp_max_tw_buckets",
    ] {
        if let Some(want) = sysctl::profile_value(profile, key).and_then(|v| v.parse::<u64>().ok())
        {
            let why = format!(" ({pname})");
            out.extend(at_least(key, want, &why, Verdict::Warn, &apply_hint));
        }
    }
    if let (Some(have), Some(want)) = (
        sysctl::read("net.ipv4.tcp_mem"),
        sysctl::profile_value(profile, "net.ipv4.tcp_mem"),
    ) {
        let max = |s: &str| {
            s.split_whitespace()
                .last()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let ok = max(&have) >= max(&want);
        let mut i = item(
            "net.ipv4.tcp_mem (pages)",
            have.clone(),
            format!("max >= {} ({pname})", max(&want)),
            if ok { Verdict::Ok } else { Verdict::Warn },
            format!("sysctl -w net.ipv4.tcp_mem=\"{want}\" (tuning/apply.sh {pname})"),
        );
        if !ok {
            i.apply = Some(("net.ipv4.tcp_mem".into(), want));
        }
        out.push(i);
    }
    if let Some(range) = sysctl::read("net.ipv4.ip_local_port_range") {
        let v: Vec<u64> = range
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let width = if v.len() == 2 {
            v[1].saturating_sub(v[0]) + 1
        } else {
            0
        };
        let mut i = item(
            "net.ipv4.ip_local_port_range",
            range.clone(),
            "1024 65535 (source ports for backend connections)".into(),
            if width >= 60_000 {
                Verdict::Ok
            } else {
                Verdict::Warn
            },
            "sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"".into(),
        );
        if width < 60_000 {
            i.apply = Some(("net.ipv4.ip_local_port_range".into(), "1024 65535".into()));
        }
        out.push(i);
    }
    out.extend(at_least(
        "net.netfilter.nf_conntrack_max",
        f.target * 2,
        " (conntrack is loaded: one entry per connection)",
        Verdict::Fail,
        ", or exempt the ports with a NOTRACK rule",
    ));
    out.push(item(
        "cpus",
        format!("{} usable", f.cpus),
        format!("{} shard(s), one per cpu", f.shards),
        if (f.shards as usize) <= f.cpus {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        "lower global.shards or widen the CPU affinity".into(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(target: u64, hard: u64) -> Facts {
        Facts {
            target,
            shards: 1,
            backlog: 4096,
            kernel: "6.18.1".into(),
            nofile: (1024, hard),
            memlock: (u64::MAX, u64::MAX),
            mem_total: 64 << 30,
            cpus: 2,
            uring: coreplex_engine::probe::probe_io_uring(),
        }
    }

    fn verdict(items: &[Item], name: &str) -> Verdict {
        items
            .iter()
            .find(|i| i.name.starts_with(name))
            .unwrap()
            .verdict
    }

    #[test]
    fn fd_limit_decides_the_target() {
        assert_eq!(
            verdict(&run(&facts(1_000_000, 20_000)), "RLIMIT_NOFILE"),
            Verdict::Fail
        );
        assert_eq!(
            verdict(&run(&facts(10_000, 20_000)), "RLIMIT_NOFILE"),
            Verdict::Ok
        );
    }

    #[test]
    fn memory_estimate_scales_with_target() {
        assert_eq!(
            verdict(&run(&facts(1_000_000, u64::MAX)), "memory"),
            Verdict::Ok
        );
        assert_eq!(
            verdict(&run(&facts(20_000_000, u64::MAX)), "memory"),
            Verdict::Fail
        );
    }

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least("6.18.44-fc-v657", 6, 1));
        assert!(kernel_at_least("6.1.0", 6, 1));
        assert!(!kernel_at_least("5.15.0-91-generic", 6, 1));
    }
}

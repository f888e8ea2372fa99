//! `coreplex tune`: reads the live limits (rlimits, sysctls, memory, CPUs, io_uring), prints for
//! each item what the machine has, what the target connection count needs, a verdict and the fix,
//! and estimates the memory the target needs from the measured per-connection costs. Exits 1 when
//! the machine cannot hold the target. Changes nothing unless `--apply` is given, which raises the
//! failing sysctls (root) and records their old values so `tuning/apply.sh --revert` undoes it.

mod checks;
mod sysctl;

use crate::config::Config;
use checks::{Facts, Item, Verdict};
use coreplex_engine::{cpus, limits};
use std::process::ExitCode;

/// Where `--apply` records old values (shared with tuning/apply.sh).
fn state_file() -> std::path::PathBuf {
    std::env::var_os("COREPLEX_TUNING_STATE")
        .map(Into::into)
        .unwrap_or_else(|| "/var/lib/coreplex/tuning.state".into())
}

/// Runs the diagnosis.
pub fn run(target: Option<u64>, config: Option<&Config>, apply: bool) -> ExitCode {
    let shards = config.map_or(cpus::allowed_cpus().len(), |c| c.global.cpus.len()) as u64;
    let from_config = config.and_then(|c| c.global.max_connections.map(|m| m as u64 * shards));
    let (target, source) = match (target, from_config) {
        (Some(t), _) => (t, "--target-connections"),
        (None, Some(t)) => (t, "global.max_connections x shards"),
        (None, None) => (1_000_000, "default: C1M"),
    };
    let (mem_total, kernel) = (mem_total(), kernel_release());
    let fd = limits::raise_nofile();
    let facts = Facts {
        target,
        shards,
        backlog: config
            .map(|c| {
                c.listeners
                    .iter()
                    .map(|l| l.backlog.max(0) as u64)
                    .max()
                    .unwrap_or(4096)
            })
            .unwrap_or(4096),
        kernel,
        nofile: (fd.before, fd.hard),
        memlock: limits::memlock(),
        mem_total,
        cpus: cpus::allowed_cpus().len(),
        uring: coreplex_engine::probe::probe_io_uring(),
    };
    let items = checks::run(&facts);
    print_report(&facts, source, &items);
    let failed = items.iter().any(|i| i.verdict == Verdict::Fail);
    if apply {
        apply_sysctls(&items);
    } else if items.iter().any(|i| i.apply.is_some()) {
        println!("\n`coreplex tune --apply` raises the sysctls above (root); `tuning/apply.sh --revert` undoes it.");
    }
    if failed {
        println!("\nverdict: this machine cannot hold {target} connections as configured (see FAIL lines).");
        ExitCode::FAILURE
    } else {
        println!("\nverdict: this machine can hold {target} connections.");
        ExitCode::SUCCESS
    }
}

fn print_report(f: &Facts, source: &str, items: &[Item]) {
    let (pname, _) = checks::profile_for(f.target);
    println!(
        "coreplex tune: target {} connections ({source}), {} shard(s); profile {pname}",
        f.target, f.shards
    );
    let w_name = items.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    let w_have = items
        .iter()
        .map(|i| i.have.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    println!(
        "{:<w_name$}  {:<w_have$}  {:<7} need / fix",
        "item", "have", "verdict"
    );
    for i in items {
        println!(
            "{:<w_name$}  {:<w_have$}  {:<7} {}",
            i.name,
            i.have,
            i.verdict.label(),
            i.need
        );
        if !i.fix.is_empty() {
            println!("{:<w_name$}  {:<w_have$}  {:<7} fix: {}", "", "", "", i.fix);
        }
    }
}

fn apply_sysctls(items: &[Item]) {
    let state = state_file();
    println!();
    for (key, value) in items.iter().filter_map(|i| i.apply.as_ref()) {
        let Some(old) = sysctl::read(key) else {
            continue;
        };
        if let Err(e) = sysctl::record_for_revert(&state, key, &old) {
            println!(
                "not applied {key}: cannot record the old value in {}: {e}",
                state.display()
            );
            continue;
        }
        match sysctl::write(key, value) {
            Ok(()) => println!("applied {key}: {old} -> {value}"),
            Err(e) => println!("not applied {key}: {e} (run as root)"),
        }
    }
    println!(
        "old values saved in {} (undo: tuning/apply.sh --revert)",
        state.display()
    );
    println!("RLIMIT_NOFILE and memlock are per process: set them in the service unit (tuning/coreplex.service) or limits.d.");
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn kernel_release() -> String {
    sysctl::read("kernel.osrelease").unwrap_or_else(|| "unknown".into())
}

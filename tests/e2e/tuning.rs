//! `coreplex tune` and `tuning/apply.sh`: the diagnosis reports the real open-files limit against
//! the target, `--dry-run` changes nothing, apply then revert restores every knob (on a copy of the
//! sysctl tree; on the live machine only when COREPLEX_TEST_TUNING_APPLY=1).

use crate::harness::{run_cli, temp_path, write_temp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hard_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

fn row<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} row in:\n{stdout}"))
}

#[test]
fn tune_reports_the_fd_limit_against_the_target() {
    let hard = hard_nofile();
    assert!(
        hard < 1_000_000,
        "this test expects a hard limit below 1M (have {hard})"
    );
    let big = run_cli(&["tune", "--target-connections", "1000000"]);
    let out = String::from_utf8_lossy(&big.stdout).to_string();
    let r = row(&out, "RLIMIT_NOFILE");
    assert!(
        r.contains(&format!("/{hard}")),
        "hard limit {hard} not reported: {r}"
    );
    assert!(r.contains("FAIL"), "{r}");
    assert!(out.contains("fix: LimitNOFILE="), "{out}");
    assert_eq!(big.status.code(), Some(1), "{out}");
    assert!(out.contains("cannot hold 1000000"), "{out}");

    let target = (hard - 2_000).to_string();
    let small = run_cli(&["tune", "--target-connections", &target]);
    let out = String::from_utf8_lossy(&small.stdout).to_string();
    let r = row(&out, "RLIMIT_NOFILE");
    assert!(r.contains(" ok "), "{r}");
    assert!(
        !out.lines().any(|l| l.contains(" FAIL ")),
        "unexpected FAIL for {target}:\n{out}"
    );
    assert_eq!(small.status.code(), Some(0), "{out}");
}

#[test]
fn tune_estimates_memory_and_probes_io_uring() {
    let o = run_cli(&["tune", "--target-connections", "10000"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(row(&out, "io_uring setup").contains(" ok "), "{out}");
    assert!(
        row(&out, "io_uring opcodes").contains("all present"),
        "{out}"
    );
    let mem = row(&out, "memory for idle connections");
    assert!(mem.contains("10000 x ("), "{mem}");
    // Twenty million connections need ~100 GiB: more than this machine has.
    let o = run_cli(&["tune", "--target-connections", "20000000"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        row(&out, "memory for idle connections").contains("FAIL"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn tune_plans_for_a_config() {
    let cfg = write_temp(
        "tune.toml",
        "version = 1\n[global]\nshards = 1\nmax_connections = 5000\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    );
    let o = run_cli(&["tune", "-c", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("target 5000 connections (global.max_connections x shards)"),
        "{out}"
    );
    let _ = std::fs::remove_file(cfg);
}

fn apply_sh(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/apply.sh"))
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run apply.sh")
}

fn profile_keys() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/sysctl.d/coreplex-c1m.conf"
    ))
    .unwrap();
    text.lines()
        .filter_map(|l| l.split('#').next()?.split_once('='))
        .map(|(k, _)| k.trim().to_string())
        .collect()
}

fn normalized(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn live_values() -> Vec<(String, Option<String>)> {
    profile_keys()
        .into_iter()
        .map(|k| {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            (k, normalized(&p))
        })
        .collect()
}

#[test]
fn dry_run_prints_changes_and_writes_nothing() {
    let state = temp_path("state");
    let before = live_values();
    let o = apply_sh(&["--dry-run", "c10m"], &[("COREPLEX_TUNING_STATE", &state)]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("would set fs.nr_open:"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(live_values(), before, "--dry-run changed a sysctl");
    assert!(!state.exists(), "--dry-run wrote the state file");
}

#[test]
fn unknown_profile_is_refused() {
    let o = apply_sh(&["c100m"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown profile"));
    let o = apply_sh(&[], &[]);
    assert_eq!(o.status.code(), Some(2));
}

/// Copies the live values of the profile's knobs into a scratch tree shaped like /proc/sys.
fn scratch_sysctl_tree() -> PathBuf {
    let root = temp_path("sys");
    for k in profile_keys() {
        let src = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        if let Ok(v) = std::fs::read_to_string(&src) {
            let dst = root.join(k.replace('.', "/"));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::write(dst, v).unwrap();
        }
    }
    root
}

fn tree_values(root: &Path) -> Vec<(String, Option<String>)> {
    profile_keys()
        .into_iter()
        .map(|k| {
            let v = normalized(&root.join(k.replace('.', "/")));
            (k, v)
        })
        .collect()
}

#[test]
fn apply_raises_only_and_revert_restores_exactly() {
    let root = scratch_sysctl_tree();
    let state = temp_path("state");
    let etc = temp_path("etc");
    let env = [
        ("COREPLEX_SYSCTL_ROOT", root.as_path()),
        ("COREPLEX_TUNING_STATE", state.as_path()),
        ("COREPLEX_ETC", etc.as_path()),
    ];
    let before = tree_values(&root);
    // A value already above the profile must not be lowered.
    let somaxconn = root.join("net/core/somaxconn");
    std::fs::write(&somaxconn, "262144\n").unwrap();
    let before_raised = tree_values(&root);

    let o = apply_sh(&["--install", "c1m"], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        normalized(&somaxconn).as_deref(),
        Some("262144"),
        "lowered somaxconn"
    );
    let nr_open: u64 = normalized(&root.join("fs/nr_open"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(nr_open >= 2_097_152);
    let range = normalized(&root.join("net/ipv4/ip_local_port_range")).unwrap();
    assert_eq!(range, "1024 65535");
    assert!(etc.join("sysctl.d/60-coreplex.conf").exists());
    assert!(etc.join("security/limits.d/60-coreplex.conf").exists());
    // Applying twice (even another profile) and reverting once still restores the originals.
    let o = apply_sh(&["c10m"], &env);
    assert!(o.status.success());

    let o = apply_sh(&["--revert"], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        tree_values(&root),
        before_raised,
        "revert did not restore every knob"
    );
    assert!(!etc.join("sysctl.d/60-coreplex.conf").exists());
    assert!(!etc.join("security/limits.d/60-coreplex.conf").exists());
    assert!(!state.exists());
    assert_ne!(before, before_raised);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&etc);
}

/// Changes the live machine: runs only with COREPLEX_TEST_TUNING_APPLY=1 (as root), and restores
/// everything it touched.
#[test]
fn live_apply_then_revert_leaves_sysctls_as_they_were() {
    if std::env::var_os("COREPLEX_TEST_TUNING_APPLY").is_none() {
        eprintln!("live_apply_then_revert: set COREPLEX_TEST_TUNING_APPLY=1 to run it (changes sysctls, restores them)");
        return;
    }
    let state = temp_path("state");
    let before = live_values();
    let o = apply_sh(&["c1m"], &[("COREPLEX_TUNING_STATE", &state)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = apply_sh(&["--revert"], &[("COREPLEX_TUNING_STATE", &state)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(live_values(), before);
}

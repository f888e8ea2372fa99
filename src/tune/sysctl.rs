//! Kernel settings: reading and raising `/proc/sys` knobs, and the bundled profiles
//! (`tuning/sysctl.d/coreplex-{c1m,c10m}.conf`, compiled in so `tune` works from any directory).
//!
//! Knobs are read under `COREPLEX_SYSCTL_ROOT` when it is set (default `/proc/sys`), the same
//! variable `tuning/apply.sh` reads: the tests point both at a scratch tree, and a container can
//! point them at the host's sysctls mounted elsewhere.

use std::path::PathBuf;

/// The c1m profile text.
pub const C1M: &str = include_str!("../../tuning/sysctl.d/coreplex-c1m.conf");
/// The c10m profile text.
pub const C10M: &str = include_str!("../../tuning/sysctl.d/coreplex-c10m.conf");

/// `(key, value)` pairs of a profile, in file order.
pub fn profile_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.trim().to_string(), v)
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The profile value for `key`.
pub fn profile_value(text: &str, key: &str) -> Option<String> {
    profile_values(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn path(key: &str) -> PathBuf {
    let root = std::env::var_os("COREPLEX_SYSCTL_ROOT").unwrap_or_else(|| "/proc/sys".into());
    PathBuf::from(root).join(key.replace('.', "/"))
}

/// The current value (whitespace normalised), or `None` when the kernel lacks the knob.
pub fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(path(key))
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The first number of the current value.
pub fn read_num(key: &str) -> Option<u64> {
    read(key)?.split_whitespace().next()?.parse().ok()
}

/// Writes a value.
pub fn write(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(path(key), format!("{value}\n"))
}

/// Appends `sysctl<TAB>key<TAB>old` to the state file `tuning/apply.sh --revert` reads, unless the
/// key is already recorded (the first saved value is the original).
pub fn record_for_revert(state: &std::path::Path, key: &str, old: &str) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(state).unwrap_or_default();
    let prefix = format!("sysctl\t{key}\t");
    if existing.lines().any(|l| l.starts_with(&prefix)) {
        return Ok(());
    }
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state)?;
    writeln!(f, "{prefix}{old}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse() {
        let v = profile_values(C1M);
        assert!(v.iter().any(|(k, v)| k == "fs.nr_open" && v == "2097152"));
        assert_eq!(
            profile_value(C10M, "net.ipv4.tcp_mem").as_deref(),
            Some("8388608 12582912 16777216")
        );
        assert_eq!(
            profile_value(C1M, "net.ipv4.ip_local_port_range").as_deref(),
            Some("1024 65535")
        );
    }

    #[test]
    fn reads_this_kernel() {
        assert!(read_num("fs.nr_open").is_some_and(|n| n >= 1024));
        assert!(read("no.such.knob").is_none());
    }
}

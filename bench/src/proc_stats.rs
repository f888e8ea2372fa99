//! Reading a process's memory and the kernel's socket memory from /proc.

use anyhow::{Context, Result};

/// Memory figures at one instant.
pub struct Snapshot {
    /// Resident set of the server process.
    pub rss_bytes: u64,
    /// Kernel slab memory plus TCP socket buffer memory (system-wide).
    pub kernel_bytes: u64,
}

impl Snapshot {
    /// Reads the figures for `pid`.
    pub fn take(pid: u32) -> Result<Snapshot> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let rss_kb = field_kb(&status, "VmRSS:").unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let slab_kb = field_kb(&meminfo, "Slab:").unwrap_or(0);
        let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
        let tcp_pages = sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .and_then(|l| {
                let mut it = l.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "mem" {
                        return it.next().and_then(|v| v.parse::<u64>().ok());
                    }
                }
                None
            })
            .unwrap_or(0);
        Ok(Snapshot {
            rss_bytes: rss_kb * 1024,
            kernel_bytes: slab_kb * 1024 + tcp_pages * 4096,
        })
    }
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

//! Process limits the engine depends on: open files and locked memory.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The open-files limit after trying to raise the soft limit to the hard limit.
#[derive(Clone, Copy, Debug)]
pub struct FdLimit {
    /// Soft limit before.
    pub before: u64,
    /// Soft limit now.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit, as HAProxy does at startup.
pub fn raise_nofile() -> FdLimit {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let mut now = soft;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        now = hard;
    }
    FdLimit {
        before: soft,
        soft: now,
        hard,
    }
}

/// The locked-memory limit (soft, hard) in bytes.
pub fn memlock() -> (u64, u64) {
    getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((0, 0))
}

/// Descriptors the engine needs besides connections: listeners, rings, eventfds, stdio, admin.
pub fn fixed_fds(shards: usize, listeners: usize) -> u64 {
    (shards * (listeners + 3) + 32) as u64
}

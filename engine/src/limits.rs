//! Process limits the engine depends on (open files and locked memory), and the one rule that
//! divides a process-wide limit among shards.

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

/// Grows the process's descriptor table at once to hold `fds` descriptors (capped by the
/// open-files soft limit), and returns the size asked for.
///
/// Why: the kernel grows the table by doubling as descriptor numbers rise, and in a process with
/// several threads each growth waits for an RCU grace period (`expand_fdtable` calls
/// `synchronize_rcu`): a shard creating a socket or accepting then stalls for milliseconds (7 ms
/// seen here, a 20 ms p99.99 for the proxy). The table never shrinks, so one growth at start
/// (8 bytes per descriptor) removes those stalls for the configured load. The duplicate made to
/// get there is closed at once.
pub fn reserve_fd_table(fds: u64) -> u64 {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let want = fds.min(soft);
    if want <= 64 {
        return want;
    }
    let lowest = i32::try_from(want - 1).unwrap_or(i32::MAX);
    match nix::fcntl::fcntl(0, nix::fcntl::FcntlArg::F_DUPFD(lowest)) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
        }
        Err(e) => tracing::debug!("descriptor table not reserved ({want}): {e}"),
    }
    want
}

/// Descriptors the engine needs besides connections: listeners, rings, eventfds, stdio, admin.
pub fn fixed_fds(shards: usize, listeners: usize) -> u64 {
    // Per shard: its listening sockets and the runtime's copy of each (kept to hand them to a
    // successor), its ring, eventfd and timer.
    (shards * (2 * listeners + 3) + 32) as u64
}

/// Shard `i`'s part of a process-wide limit `total` over `shards` shards: `total / shards`, plus
/// one for the first `total % shards` shards, so the parts sum to `total`; but a limit that admits
/// something (`total >= 1`) admits something on every shard: each part is at least 1, so a limit
/// below the shard count gives each shard 1 (the sum then exceeds `total` by at most
/// `shards - 1`). A limit of 0 stays 0 on every shard. Used for listener `rate_limit` and every
/// backend limit (server `maxconn`, `maxqueue`, `conn_rate`, backend `maxconn`, `queue_length`,
/// `max_idle_per_server`).
pub fn shard_share(total: u64, shards: usize, i: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    let n = shards.max(1) as u64;
    let base = total / n + u64::from((i as u64) < total % n);
    base.max(1)
}

#[cfg(test)]
mod tests {
    use super::shard_share;

    #[test]
    fn shares_sum_to_the_total_and_admit_something_everywhere() {
        let parts: Vec<u64> = (0..8).map(|i| shard_share(100, 8, i)).collect();
        assert_eq!(parts.iter().sum::<u64>(), 100);
        assert_eq!((parts[0], parts[3], parts[4], parts[7]), (13, 13, 12, 12));
        assert_eq!(
            (0..8).map(|i| shard_share(3, 8, i)).collect::<Vec<_>>(),
            [1; 8],
            "a limit below the shard count gives each shard one"
        );
        assert_eq!(shard_share(0, 8, 3), 0, "zero stays zero");
        assert_eq!(shard_share(7, 1, 0), 7);
        assert_eq!(shard_share(5, 0, 0), 5, "no shards counts as one");
    }
}

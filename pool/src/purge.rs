//! Idle-connection purge estimator of one server (HAProxy's `pool-purge-delay`,
//! `srv_cleanup_idle_conns`).
//!
//! Every `purge_delay`, a server's connections (in use + idle shared) above its estimated need are
//! "excess", and half of the excess (rounded up) is closed, oldest idle first, then oldest safe.
//! The need is `max(max_used, est_need)` where `max_used` is the peak of connections in use during
//! the last interval; then `est_need = max((est_need + max_used) / 2, max_used)` and `max_used`
//! restarts from the current use. So a burst's connections are kept for a couple of intervals and
//! then drained by halves. Private connections belong to sessions and are not purged. The same
//! need decides at release whether a connection is worth keeping idle at all (HAProxy's
//! `srv_add_to_idle_list`): see `BackendPool::release`.

/// Estimator state of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct PurgeEstimator {
    est_need: usize,
    max_used: usize,
}

impl PurgeEstimator {
    /// Notes the current number of connections in use (call when it grows). The need rises at
    /// once with it (HAProxy raises `est_need_conns` in `connect_server`); it falls only at ticks.
    pub(crate) fn note_used(&mut self, used: usize) {
        self.max_used = self.max_used.max(used);
        self.est_need = self.est_need.max(used);
    }

    /// The connections the server is estimated to need now (in use plus idle worth keeping).
    pub(crate) fn need(&self) -> usize {
        self.max_used.max(self.est_need)
    }

    /// One purge interval ended: returns how many idle shared connections to close.
    pub(crate) fn tick(&mut self, used: usize, idle: usize) -> usize {
        let need = self.max_used.max(self.est_need);
        let excess = (used + idle).saturating_sub(need);
        self.est_need = ((self.est_need + self.max_used) / 2).max(self.max_used);
        self.max_used = used;
        excess.div_ceil(2).min(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_kept_then_halved() {
        let mut p = PurgeEstimator::default();
        p.note_used(10);
        // The burst ended: 10 idle, nothing in use.
        assert_eq!(p.tick(0, 10), 0); // need = 10
        assert_eq!(p.tick(0, 10), 0); // need = est 10
        assert_eq!(p.tick(0, 10), 3); // need = est 5: excess 5 -> 3
        assert_eq!(p.tick(0, 7), 3); // need = est 2: excess 5 -> 3
        assert_eq!(p.tick(0, 4), 2); // need = est 1: excess 3 -> 2
        assert_eq!(p.tick(0, 2), 1); // need = 0
        assert_eq!(p.tick(0, 1), 1);
        assert_eq!(p.tick(0, 0), 0);
    }

    #[test]
    fn steady_use_keeps_its_connections() {
        let mut p = PurgeEstimator::default();
        for _ in 0..10 {
            p.note_used(4);
            assert_eq!(p.tick(4, 0), 0);
        }
        p.note_used(6);
        assert_eq!(p.tick(4, 2), 0);
    }
}

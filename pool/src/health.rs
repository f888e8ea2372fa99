//! Passive health of one server, fed by connect outcomes only.
//!
//! `fail_threshold` consecutive connect failures mark the server down until `now + down_for`; a
//! successful connect resets the count. When the period ends the server is up again with a fresh
//! count (it needs `fail_threshold` new failures to go down again). Failures reported while the
//! server is already down (attempts started before it went down) are counted in the total only.
//! A threshold of 0 disables marking down. No active checks here: they belong to the engine.

use std::time::{Duration, Instant};

/// Health state and counters of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    consecutive: u32,
    down_until: Option<Instant>,
    failures: u64,
    downs: u64,
}

impl Health {
    /// Whether the server may take requests at `now`.
    pub(crate) fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| now >= until)
    }

    /// Forgets an elapsed down period.
    pub(crate) fn refresh(&mut self, now: Instant) {
        if self.down_until.is_some_and(|until| now >= until) {
            self.down_until = None;
        }
    }

    /// Records a connect failure; returns whether it marked the server down.
    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, down_for: Duration) -> bool {
        self.failures += 1;
        if threshold == 0 || !self.is_up(now) {
            return false;
        }
        self.consecutive += 1;
        if self.consecutive < threshold {
            return false;
        }
        self.consecutive = 0;
        self.down_until = Some(now.checked_add(down_for).unwrap_or(now));
        self.downs += 1;
        true
    }

    /// Records a successful connect.
    pub(crate) fn success(&mut self) {
        self.consecutive = 0;
    }

    /// End of the current down period, if any (may lie in the past until `refresh`).
    pub(crate) fn down_until(&self) -> Option<Instant> {
        self.down_until
    }

    /// Consecutive failures so far.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Connect failures ever.
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }

    /// Times marked down.
    pub(crate) fn downs(&self) -> u64 {
        self.downs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_down_and_back() {
        let t0 = Instant::now();
        let down_for = Duration::from_secs(10);
        let mut h = Health::default();
        assert!(!h.failure(t0, 3, down_for));
        assert!(!h.failure(t0, 3, down_for));
        h.success();
        assert!(!h.failure(t0, 3, down_for));
        assert!(!h.failure(t0, 3, down_for));
        assert!(h.failure(t0, 3, down_for));
        assert!(!h.is_up(t0 + Duration::from_secs(9)));
        // Late failures of attempts made before it went down do not extend the period.
        assert!(!h.failure(t0 + Duration::from_secs(1), 3, down_for));
        assert_eq!(h.down_until(), Some(t0 + down_for));
        assert!(h.is_up(t0 + down_for));
        h.refresh(t0 + down_for);
        assert_eq!(h.down_until(), None);
        assert_eq!(h.consecutive(), 0);
        assert_eq!(h.failures(), 6);
        assert_eq!(h.downs(), 1);
    }

    #[test]
    fn zero_threshold_never_marks_down() {
        let t0 = Instant::now();
        let mut h = Health::default();
        for _ in 0..100 {
            assert!(!h.failure(t0, 0, Duration::from_secs(1)));
        }
        assert!(h.is_up(t0));
    }
}

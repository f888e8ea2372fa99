//! Connection-rate limiter of one server: a token bucket holding `rate` tokens (a one-second burst),
//! refilled continuously at `rate` tokens per second.
//!
//! It is implemented as GCRA (the "virtual scheduling" form of a token bucket): one instant, the
//! theoretical arrival time `tat`, replaces the token count, so there is no float and no refill
//! step. A connection may open at `now` when `tat <= now + tolerance`, where
//! `tolerance = (rate - 1) * interval` and `interval = 1 s / rate`; opening moves
//! `tat = max(tat, now) + interval`. Invariant: `tat` only grows. Time is passed in.

use std::time::{Duration, Instant};

/// Token bucket of new connections per second.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter of `rate` (> 0) new connections per second.
    pub(crate) fn per_second(rate: u32) -> Self {
        let rate = rate.max(1);
        let interval = Duration::from_nanos((1_000_000_000 / u64::from(rate)).max(1));
        Self {
            interval,
            tolerance: interval * (rate - 1),
            tat: None,
        }
    }

    /// `Ok` when a connection may open at `now`, else `Err` with the first instant it may.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Instant> {
        match self.tat {
            Some(tat) if tat > now + self.tolerance => Err(tat - self.tolerance),
            _ => Ok(()),
        }
    }

    /// Spends one token at `now` (call after a successful [`check`](Self::check)).
    pub(crate) fn take(&mut self, now: Instant) {
        let tat = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(tat + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_per_second() {
        let t0 = Instant::now();
        let mut r = RateLimiter::per_second(2);
        for _ in 0..2 {
            assert_eq!(r.check(t0), Ok(()));
            r.take(t0);
        }
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(r.check(t0), Err(ms(500)));
        assert_eq!(r.check(ms(499)), Err(ms(500)));
        assert_eq!(r.check(ms(500)), Ok(()));
        r.take(ms(500));
        assert_eq!(r.check(ms(600)), Err(ms(1000)));
        // After a quiet period the full burst is back, not more.
        let later = ms(10_000);
        for _ in 0..2 {
            assert_eq!(r.check(later), Ok(()));
            r.take(later);
        }
        assert!(r.check(later).is_err());
    }

    #[test]
    fn one_per_second_and_huge_rates() {
        let t0 = Instant::now();
        let mut r = RateLimiter::per_second(1);
        r.take(t0);
        assert_eq!(r.check(t0), Err(t0 + Duration::from_secs(1)));
        let mut big = RateLimiter::per_second(u32::MAX);
        for _ in 0..1000 {
            assert_eq!(big.check(t0), Ok(()));
            big.take(t0);
        }
    }
}

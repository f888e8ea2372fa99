//! Server selection: smooth weighted round-robin and least-connections.
//!
//! The caller says which servers are candidates (up, weight > 0, below maxconn, no queue of their own);
//! selection is split into a pure [`Balancer::pick`] and a [`Balancer::commit`] of the server actually
//! used, so a decision that ends up waiting leaves no trace.
//!
//! - Round-robin is nginx's smooth weighted round-robin: each pick adds every candidate's weight to
//!   its `current`, takes the largest `current` (ties: lowest index) and subtracts the candidates'
//!   total weight from it. Over any window of `sum(weights)` picks with a stable candidate set, each
//!   server is picked exactly `weight` times, interleaved (5,1,1 gives a a b a c a a).
//!   Invariant: with a stable candidate set the `current` values of the candidates sum to zero.
//! - Least-connections picks the fewest in-flight requests; ties go to the higher weight, then the
//!   lower index (HAProxy orders equal loads by weight too).
//!
//! O(servers) per pick, no allocation.

use crate::config::Balance;

/// Selection state of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Balancer {
    kind: Balance,
    weights: Vec<u32>,
    current: Vec<i64>,
}

impl Balancer {
    /// A balancer over servers of the given weights.
    pub(crate) fn new(kind: Balance, weights: Vec<u32>) -> Self {
        let current = vec![0; weights.len()];
        Self {
            kind,
            weights,
            current,
        }
    }

    /// The server to use among the candidates, or `None` when there is none. `load` gives a
    /// server's in-flight requests (least-connections).
    pub(crate) fn pick(
        &self,
        candidate: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let candidates = (0..self.weights.len()).filter(|&s| candidate(s));
        match self.kind {
            Balance::RoundRobin => {
                let mut best: Option<(usize, i64)> = None;
                for s in candidates {
                    let score = self.current[s] + i64::from(self.weights[s]);
                    if best.is_none_or(|(_, b)| score > b) {
                        best = Some((s, score));
                    }
                }
                best.map(|(s, _)| s)
            }
            Balance::LeastConn => {
                candidates.min_by_key(|&s| (load(s), std::cmp::Reverse(self.weights[s]), s))
            }
        }
    }

    /// Records that `chosen` was used, with `candidate` the set [`pick`](Self::pick) saw.
    pub(crate) fn commit(&mut self, chosen: usize, candidate: impl Fn(usize) -> bool) {
        if self.kind != Balance::RoundRobin {
            return;
        }
        let mut total = 0i64;
        for s in 0..self.weights.len() {
            if s == chosen || candidate(s) {
                let w = i64::from(self.weights[s]);
                self.current[s] += w;
                total += w;
            }
        }
        self.current[chosen] -= total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: &mut Balancer, n: usize, candidate: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let s = b.pick(candidate, |_| 0).expect("a candidate");
                b.commit(s, candidate);
                s
            })
            .collect()
    }

    #[test]
    fn smooth_sequence_matches_nginx() {
        let mut b = Balancer::new(Balance::RoundRobin, vec![5, 1, 1]);
        assert_eq!(run(&mut b, 7, |_| true), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_distribution_over_1000_picks() {
        let mut b = Balancer::new(Balance::RoundRobin, vec![5, 3, 2]);
        let picks = run(&mut b, 1000, |_| true);
        let mut count = [0; 3];
        for s in picks {
            count[s] += 1;
        }
        assert_eq!(count, [500, 300, 200]);
        assert_eq!(b.current.iter().sum::<i64>(), 0);
    }

    #[test]
    fn skips_non_candidates() {
        let mut b = Balancer::new(Balance::RoundRobin, vec![1, 1, 1]);
        let picks = run(&mut b, 6, |s| s != 1);
        assert!(!picks.contains(&1));
        assert_eq!(picks.iter().filter(|&&s| s == 0).count(), 3);
        assert_eq!(b.pick(|_| false, |_| 0), None);
    }

    #[test]
    fn leastconn_ties_by_weight_then_index() {
        let b = Balancer::new(Balance::LeastConn, vec![1, 3, 3, 1]);
        let load = [2u32, 1, 1, 0];
        assert_eq!(b.pick(|_| true, |s| load[s]), Some(3));
        assert_eq!(b.pick(|s| s != 3, |s| load[s]), Some(1));
        let load = [0u32, 0, 0, 0];
        assert_eq!(b.pick(|_| true, |s| load[s]), Some(1));
    }
}

//! FIFO wait queues of requests (the backend queue and each server's queue).
//!
//! Entries are kept sorted by ticket, which is arrival order, hence also deadline order (every
//! deadline is arrival + the same `timeout queue`). Cancelled entries are marked dead in place (found
//! by binary search) and dropped when they reach the front. Invariants: the front entry, if any, is
//! live; `live` counts the live entries; tickets strictly increase front to back.

use std::collections::VecDeque;
use std::time::Instant;

use crate::ids::Ticket;
use crate::pool::RequestInfo;
use crate::stats::QueueStats;

/// A queued request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    /// The ticket handed to the engine.
    pub(crate) ticket: Ticket,
    /// The request.
    pub(crate) req: RequestInfo,
    /// When `timeout queue` expires (`None`: never).
    pub(crate) deadline: Option<Instant>,
    live: bool,
}

/// One FIFO queue with counters.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    entries: VecDeque<Waiter>,
    live: usize,
    stats: QueueStats,
}

impl WaitQueue {
    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Whether no live entry waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters, with `current` filled in.
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            current: self.live,
            ..self.stats
        }
    }

    /// Adds a request that enters the queue.
    pub(crate) fn push(&mut self, ticket: Ticket, req: RequestInfo, deadline: Option<Instant>) {
        self.stats.total += 1;
        self.insert(Waiter {
            ticket,
            req,
            deadline,
            live: true,
        });
    }

    /// Moves in a request from another queue, keeping ticket order.
    pub(crate) fn insert(&mut self, waiter: Waiter) {
        let at = self.entries.partition_point(|w| w.ticket < waiter.ticket);
        self.entries.insert(
            at,
            Waiter {
                live: true,
                ..waiter
            },
        );
        self.live += 1;
        self.stats.max = self.stats.max.max(self.live);
    }

    /// The oldest live entry.
    pub(crate) fn front(&self) -> Option<&Waiter> {
        self.entries.front()
    }

    /// Removes the oldest live entry.
    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.entries.pop_front()?;
        self.live -= 1;
        self.trim();
        Some(waiter)
    }

    /// Removes a ticket; returns whether it was queued here.
    pub(crate) fn cancel(&mut self, ticket: Ticket) -> bool {
        let Ok(at) = self.entries.binary_search_by_key(&ticket, |w| w.ticket) else {
            return false;
        };
        let waiter = &mut self.entries[at];
        if !waiter.live {
            return false;
        }
        waiter.live = false;
        self.live -= 1;
        self.trim();
        true
    }

    /// Removes the entries whose deadline is at or before `now`, appending their tickets.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<Ticket>) {
        while let Some(w) = self.entries.front() {
            if w.deadline.is_none_or(|d| d > now) {
                break;
            }
            out.push(w.ticket);
            self.stats.timeouts += 1;
            self.pop_front();
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.front().and_then(|w| w.deadline)
    }

    fn trim(&mut self) {
        while self.entries.front().is_some_and(|w| !w.live) {
            self.entries.pop_front();
        }
    }

    /// Whether `ticket` waits here (tests).
    #[cfg(test)]
    pub(crate) fn holds(&self, ticket: Ticket) -> bool {
        self.entries
            .binary_search_by_key(&ticket, |w| w.ticket)
            .is_ok_and(|at| self.entries[at].live)
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert_eq!(self.entries.iter().filter(|w| w.live).count(), self.live);
        assert!(self.entries.front().is_none_or(|w| w.live));
        assert!(self
            .entries
            .iter()
            .zip(self.entries.iter().skip(1))
            .all(|(a, b)| a.ticket < b.ticket));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;
    use std::time::Duration;

    fn req() -> RequestInfo {
        RequestInfo {
            session: SessionId(1),
            first: true,
            idempotent: true,
            multiplexed: false,
        }
    }

    #[test]
    fn fifo_cancel_expire() {
        let t0 = Instant::now();
        let mut q = WaitQueue::default();
        for i in 0..5 {
            q.push(Ticket(i), req(), Some(t0 + Duration::from_secs(i)));
        }
        assert!(q.cancel(Ticket(2)));
        assert!(!q.cancel(Ticket(2)));
        assert!(!q.cancel(Ticket(9)));
        assert_eq!(q.len(), 4);
        assert!(q.cancel(Ticket(0)));
        assert_eq!(q.front().map(|w| w.ticket), Some(Ticket(1)));
        let mut out = Vec::new();
        q.expire(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(out, vec![Ticket(1), Ticket(3)]);
        assert_eq!(q.len(), 1);
        q.check();
        let w = q.pop_front().expect("one left");
        assert_eq!(w.ticket, Ticket(4));
        assert!(q.is_empty());
        let s = q.stats();
        assert_eq!((s.current, s.max, s.total, s.timeouts), (0, 5, 5, 2));
    }

    #[test]
    fn insert_keeps_order() {
        let mut q = WaitQueue::default();
        q.push(Ticket(1), req(), None);
        q.push(Ticket(5), req(), None);
        let moved = Waiter {
            ticket: Ticket(3),
            req: req(),
            deadline: None,
            live: true,
        };
        q.insert(moved);
        q.check();
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front().map(|w| w.ticket.0)).collect();
        assert_eq!(order, vec![1, 3, 5]);
        assert_eq!(q.next_deadline(), None);
    }
}

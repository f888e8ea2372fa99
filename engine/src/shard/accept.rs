//! Listeners and admission: multishot accepts, `max_connections` (pause, hold sockets that
//! completed with the pause, resume), per-listener rate limits (a token bucket; excess waits in
//! the kernel backlog), and inserting an accepted socket as a connection.

use super::*;

pub(super) struct Listener {
    pub(super) fd: Option<OwnedFd>,
    pub(super) armed: bool,
    /// Accepting is paused until the rate limit allows another connection.
    pub(super) rate_paused: bool,
    pub(super) rate: Option<RateBucket>,
    /// The deadline of a connection's preface, on a listener with one.
    pub(super) preface: Option<Duration>,
}

/// A token bucket of new connections per second (burst: one second's worth).
pub(super) struct RateBucket {
    per_sec: u32,
    tokens: u32,
    /// When `tokens` was last refilled, in shard milliseconds.
    refilled_ms: u64,
}

impl RateBucket {
    pub(super) fn new(per_sec: u32, now_ms: u64) -> RateBucket {
        RateBucket {
            per_sec: per_sec.max(1),
            tokens: per_sec.max(1),
            refilled_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        let add = elapsed * u64::from(self.per_sec) / 1000;
        if add > 0 {
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(self.per_sec)) as u32;
            // Keep the remainder: advance by the time the added tokens took.
            self.refilled_ms += add * 1000 / u64::from(self.per_sec);
            if self.tokens == self.per_sec {
                self.refilled_ms = now_ms;
            }
        }
    }

    /// Takes a token if one is available.
    pub(super) fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    /// When the next token is due.
    pub(super) fn next_ms(&self) -> u64 {
        self.refilled_ms + 1000_u64.div_ceil(u64::from(self.per_sec))
    }
}

impl<S: Service> Shard<S> {
    // ---- accept -------------------------------------------------------------------------------

    pub(super) fn arm_accepts(&mut self) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if let Some(fd) = &l.fd {
                if !l.armed && !l.rate_paused {
                    l.armed = true;
                    self.ring
                        .accept_multi(fd.as_raw_fd(), token::pack_index(OP_ACCEPT, i as u32));
                }
            }
        }
    }

    pub(super) fn cancel_accepts(&mut self) {
        for (i, l) in self.listeners.iter().enumerate() {
            if l.armed {
                self.ring.cancel(
                    token::pack_index(OP_ACCEPT, i as u32),
                    token::pack_index(OP_CANCEL, 0),
                );
            }
        }
    }

    pub(super) fn on_accept(&mut self, c: Completion) {
        let li = c.user_data as u32 as usize;
        if !c.more() {
            if let Some(l) = self.listeners.get_mut(li) {
                l.armed = false;
                if self.core.stopping {
                    l.fd = None; // close the listening socket: new clients are refused
                }
            }
        }
        match from_accept_result(c.result) {
            Some(fd) => self.accepted(fd, li),
            None => {
                let errno = -c.result;
                let e = &mut self.core.stats.accept_errors;
                match errno {
                    libc::ECANCELED => {}
                    libc::EMFILE => e.emfile += 1,
                    libc::ENFILE => e.enfile += 1,
                    libc::ENOMEM | libc::ENOBUFS => e.enomem += 1,
                    _ => e.other += 1,
                }
                if errno != libc::ECANCELED && !c.more() && !self.core.stopping {
                    // Out of descriptors or memory: retry shortly instead of spinning; the kernel
                    // backlog holds new clients meanwhile.
                    if !self.accept_retry.is_some() {
                        let at = self.core.now_ms + ACCEPT_RETRY.as_millis() as u64;
                        self.accept_retry = self.core.wheel.insert(at, TIMER_ACCEPT_RETRY);
                    }
                    return;
                }
            }
        }
        if !c.more() && !self.core.stopping && !self.accept_paused && !self.accept_retry.is_some() {
            self.arm_accepts();
        }
    }

    pub(super) fn accepted(&mut self, fd: OwnedFd, listener: usize) {
        if self.core.stopping {
            // Accepted before the stop's cancel took effect: served (its response says
            // `Connection: close`), not dropped, so a client in the accept queue during a binary
            // upgrade loses nothing; no rate limit applies any more.
            if self.inbound() < self.max_connections {
                self.insert_conn(fd, listener);
            } else {
                self.held.push_back((fd, listener));
            }
            return;
        }
        let now_ms = self.core.now_ms;
        let over_rate = self.listeners[listener].rate_paused
            || self.listeners[listener]
                .rate
                .as_mut()
                .is_some_and(|r| !r.take(now_ms));
        if over_rate {
            // Beyond the listener's rate: stop accepting on it (new clients wait in the kernel
            // backlog); sockets accepted in the same batch wait here for tokens.
            self.rate_held.push_back((fd, listener));
            self.pause_for_rate(listener);
            return;
        }
        if self.inbound() >= self.max_connections {
            // Accepts that completed in the same batch as the pause: hold the sockets, unserved,
            // until slots free (as the kernel backlog would), so the table never exceeds the limit.
            self.held.push_back((fd, listener));
            return;
        }
        self.insert_conn(fd, listener);
        if self.inbound() >= self.max_connections && !self.accept_paused {
            self.accept_paused = true;
            self.core.stats.accept_paused += 1;
            self.cancel_accepts();
        }
    }

    pub(super) fn pause_for_rate(&mut self, listener: usize) {
        let l = &mut self.listeners[listener];
        if !l.rate_paused {
            l.rate_paused = true;
            self.core.stats.accept_rate_limited += 1;
            if l.armed {
                self.ring.cancel(
                    token::pack_index(OP_ACCEPT, listener as u32),
                    token::pack_index(OP_CANCEL, 0),
                );
            }
        }
        if !self.rate_timer.is_some() {
            let at = l
                .rate
                .as_ref()
                .map_or(self.core.now_ms + 1, |r| r.next_ms())
                .max(self.core.now_ms + 1);
            self.rate_timer = self.core.wheel.insert(at, TIMER_RATE);
        }
    }

    /// Serves rate-held sockets as tokens allow and resumes accepting on listeners with none
    /// waiting.
    pub(super) fn on_rate_timer(&mut self) {
        self.rate_timer = TimerKey::NONE;
        if self.core.stopping {
            self.rate_held.clear();
            return;
        }
        let now_ms = self.core.now_ms;
        let mut waiting = std::collections::VecDeque::new();
        while let Some((fd, li)) = self.rate_held.pop_front() {
            let ok = self.listeners[li]
                .rate
                .as_mut()
                .is_none_or(|r| r.take(now_ms));
            if ok && self.inbound() < self.max_connections {
                self.insert_conn(fd, li);
            } else if ok {
                self.held.push_back((fd, li));
            } else {
                waiting.push_back((fd, li));
            }
        }
        self.rate_held = waiting;
        let mut again = None;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.rate_paused {
                continue;
            }
            let has_held = self.rate_held.iter().any(|(_, li)| *li == i);
            if has_held {
                again = Some(i);
            } else {
                l.rate_paused = false;
            }
        }
        match again {
            Some(i) => self.pause_for_rate(i),
            None if !self.accept_paused && !self.accept_retry.is_some() => self.arm_accepts(),
            None => {}
        }
    }

    pub(super) fn insert_conn(&mut self, fd: OwnedFd, listener: usize) {
        let _ = SockRef::from(&fd).set_nodelay(true);
        let raw = fd.as_raw_fd();
        let conn = Conn {
            fd,
            state: state::RECV_ARMED,
            life: Life::OPEN,
            reason: CloseReason::Done,
            timer: TimerKey::NONE,
            io: None,
            app: S::Conn::default(),
        };
        let Ok(id) = self.core.conns.insert(conn) else {
            unreachable!("callers check the table has room");
        };
        self.core.stats.accepted += 1;
        self.ring.recv_multi(raw, token::pack(OP_RECV, id));
        if let Some(deadline) = self.listeners[listener].preface {
            self.await_preface(id, listener, deadline);
            return; // the transport and the service hear of it once its preface is read
        }
        self.start_accepted(id, listener);
    }

    /// An accepted connection (its preface, if any, read) goes to the transport's handshake or
    /// straight to the service.
    pub(super) fn start_accepted(&mut self, id: Id, listener: usize) {
        if self.accept_secure(id, listener) {
            return; // the service hears of it once the handshake is done
        }
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_accept(cx, app, listener))
        {
            self.apply(id, req);
        }
    }

    /// Accepted (client) connections in the table.
    pub(super) fn inbound(&self) -> usize {
        self.core.conns.len() - self.core.outbound
    }

    pub(super) fn maybe_resume_accepting(&mut self) {
        while self.inbound() < self.max_connections {
            let Some((fd, listener)) = self.held.pop_front() else {
                break;
            };
            self.insert_conn(fd, listener);
        }
        if self.accept_paused
            && !self.core.stopping
            && self.held.is_empty()
            && self.inbound() < self.max_connections
        {
            self.accept_paused = false;
            if !self.accept_retry.is_some() {
                self.arm_accepts();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_bucket_allows_a_burst_then_the_rate() {
        let mut r = RateBucket::new(4, 0);
        assert!((0..4).all(|_| r.take(0)), "a burst of one second's worth");
        assert!(!r.take(0));
        assert_eq!(r.next_ms(), 250);
        assert!(!r.take(249));
        assert!(r.take(250));
        assert!(!r.take(499));
        assert!(r.take(500));
        // Idle for long: the bucket refills to the burst, not beyond.
        assert!((0..4).all(|_| r.take(10_000)));
        assert!(!r.take(10_000));
    }
}

//! One shard: a thread pinned to a core that owns a ring, its listening sockets, a connection slab,
//! a provided-buffer ring, a timer wheel, a pool of connection buffers and its counters.
//!
//! The loop: advance the wheel and run due timers, submit everything queued and wait (one
//! `io_uring_enter`, bounded by the next timer), then dispatch the completions.
//!
//! Connection life: accepted -> a multishot receive is armed (no user buffer while idle) -> input is
//! handed to the service straight from the provided buffer -> output is sent from the connection's
//! buffer -> the connection goes back to idle and returns its buffers to the pool. Closing cancels
//! the connection's operations and waits for their completions before the descriptor is closed and
//! the slot freed, so no late completion can reach a reused slot or a freed buffer.
//!
//! The shard is split into the `ring` and everything else (`Core`), so input can be read straight
//! out of a ring buffer while the service (inside `Core`) runs.

use crate::control::{Control, ShardInbox, ShardReport};
use crate::service::{
    flags, CloseReason, ConnCx, ConnIo, Effects, Service, ShardActions, KEEP_CAPACITY,
};
use crate::stats::EngineStats;
use crate::sys::{fd::from_accept_result, Completion, Ring, SendOutcome};
use crate::table::{Id, Table};
use crate::token::{self, OP_ACCEPT, OP_CANCEL, OP_CONNECT, OP_RECV, OP_SEND, OP_WAKE};
use crate::wheel::{Fired, TimerKey, Wheel};
use socket2::SockRef;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Sizing and behaviour of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Connections this shard may hold; at the limit it stops accepting.
    pub max_connections: usize,
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Provided buffers (power of two).
    pub buffers: u16,
    /// Bytes per provided buffer.
    pub buffer_size: u32,
    /// How long a closing connection keeps draining input after its last response.
    pub linger: Duration,
    /// Input a connection may buffer before it is closed as overflowing.
    pub max_input: usize,
    /// Outbound connections (`ConnCx::connect`) this shard may hold besides `max_connections`.
    pub max_outbound: usize,
}

/// Connection state bits kept by the engine.
mod state {
    pub const RECV_ARMED: u16 = 1 << 0;
    pub const SENDING: u16 = 1 << 1;
    pub const CLOSING: u16 = 1 << 2;
    pub const FLUSH_THEN_CLOSE: u16 = 1 << 3;
    pub const LINGER: u16 = 1 << 4;
    pub const PAUSED: u16 = 1 << 5;
    pub const PEER_EOF: u16 = 1 << 6;
    /// Made by `ConnCx::connect`.
    pub const OUTBOUND: u16 = 1 << 7;
    /// Connect in progress (a POLLOUT poll is armed).
    pub const CONNECTING: u16 = 1 << 8;
    /// Shut down the sending side once output is sent.
    pub const SHUT_WR_PENDING: u16 = 1 << 9;
    /// The sending side is shut down (FIN sent).
    pub const WRITE_SHUT: u16 = 1 << 10;
}

struct Conn<C, B> {
    fd: OwnedFd,
    timer: TimerKey,
    state: u16,
    reason: CloseReason,
    app: C,
    io: Option<Box<ConnIo<B>>>,
}

struct Listener {
    fd: Option<OwnedFd>,
    armed: bool,
    /// Accepting is paused until the rate limit allows another connection.
    rate_paused: bool,
    rate: Option<RateBucket>,
}

/// A token bucket of new connections per second (burst: one second's worth).
struct RateBucket {
    per_sec: u32,
    tokens: u32,
    /// When `tokens` was last refilled, in shard milliseconds.
    refilled_ms: u64,
}

impl RateBucket {
    fn new(per_sec: u32, now_ms: u64) -> RateBucket {
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
    fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    /// When the next token is due.
    fn next_ms(&self) -> u64 {
        self.refilled_ms + 1000_u64.div_ceil(u64::from(self.per_sec))
    }
}

/// Internal timer tokens (connection timers use the slot index, always below these).
const TIMER_ACCEPT_RETRY: u32 = u32::MAX - 1;
const TIMER_STOP_DEADLINE: u32 = u32::MAX - 2;
const TIMER_RATE: u32 = u32::MAX - 3;
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const IO_POOL_MAX: usize = 256;

/// What a callback asked for, carried out by the shard afterwards.
struct Requests {
    bits: u16,
    reason: CloseReason,
    effects: Effects,
}

/// Everything a shard owns except its ring.
struct Core<S: Service> {
    conns: Table<Conn<S::Conn, S::Busy>>,
    wheel: Wheel,
    // Boxes, not values: a pooled box moves into a connection's `Option<Box<_>>` without copying.
    #[allow(clippy::vec_box)]
    io_pool: Vec<Box<ConnIo<S::Busy>>>,
    service: S,
    stats: EngineStats,
    now: Instant,
    now_ms: u64,
    stopping: bool,
    max_input: usize,
    /// Outbound connections in the table (the rest are accepted ones).
    outbound: usize,
}

impl<S: Service> Core<S> {
    /// Runs a service callback on connection `id` with a fresh [`ConnCx`].
    fn call<R>(
        &mut self,
        id: Id,
        f: impl FnOnce(&mut S, &mut ConnCx<'_, S::Busy>, &mut S::Conn) -> R,
    ) -> Option<(R, Requests)> {
        let peer_id = self.conns.get(id)?.io.as_ref().and_then(|io| io.peer);
        let (conn, peer) = match peer_id {
            Some(p) => {
                let (c, p_conn) = self.conns.get2_mut(id, p);
                (c, p_conn.map(|pc| (p, &mut pc.io)))
            }
            None => (self.conns.get_mut(id), None),
        };
        let conn = conn?;
        let mut effects = Effects::default();
        let mut cx = ConnCx {
            now: self.now,
            now_ms: self.now_ms,
            index: id.index,
            io: &mut conn.io,
            io_pool: &mut self.io_pool,
            timer: &mut conn.timer,
            wheel: &mut self.wheel,
            requests: 0,
            reason: CloseReason::Done,
            stopping: self.stopping,
            id,
            outbound: conn.state & state::OUTBOUND != 0,
            peer,
            effects: &mut effects,
            fd: conn.fd.as_fd(),
        };
        let r = f(&mut self.service, &mut cx, &mut conn.app);
        let req = Requests {
            bits: cx.requests,
            reason: cx.reason,
            effects,
        };
        Some((r, req))
    }

    /// Keeps bytes that arrive while input is paused (completions already in flight when the
    /// receive was cancelled); the service sees them when output has drained.
    fn buffer(&mut self, id: Id, data: &[u8]) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.io
                .get_or_insert_with(|| self.io_pool.pop().unwrap_or_default())
                .input
                .extend_from_slice(data);
        }
    }

    /// Hands `data` (new bytes, possibly empty) plus anything buffered to the service.
    fn deliver(&mut self, id: Id, data: &[u8]) -> Option<Requests> {
        let conn = self.conns.get_mut(id)?;
        let buffered = conn.io.as_ref().is_some_and(|io| !io.input.is_empty());
        if !buffered {
            if data.is_empty() {
                return None;
            }
            let (consumed, req) = self.call(id, |svc, cx, app| svc.on_input(cx, app, data))?;
            let consumed = consumed.min(data.len());
            if consumed < data.len() && req.bits & flags::CLOSE == 0 {
                let conn = self.conns.get_mut(id)?;
                let io = conn
                    .io
                    .get_or_insert_with(|| self.io_pool.pop().unwrap_or_default());
                io.input.extend_from_slice(&data[consumed..]);
            }
            return Some(self.check_overflow(id, req));
        }
        let io = conn.io.as_mut().expect("buffered input implies io");
        io.input.extend_from_slice(data);
        let input = std::mem::take(&mut io.input);
        let (consumed, req) = self.call(id, |svc, cx, app| svc.on_input(cx, app, &input))?;
        let mut input = input;
        input.drain(..consumed.min(input.len()));
        let conn = self.conns.get_mut(id)?;
        let io = conn
            .io
            .get_or_insert_with(|| self.io_pool.pop().unwrap_or_default());
        io.input = input;
        Some(self.check_overflow(id, req))
    }

    fn check_overflow(&mut self, id: Id, mut req: Requests) -> Requests {
        let over = self
            .conns
            .get(id)
            .and_then(|c| c.io.as_ref())
            .is_some_and(|io| io.input.len() > self.max_input);
        // Input left behind a pause (pipelined requests waiting for output to drain) is expected.
        if over && req.bits & (flags::CLOSE | flags::PAUSE) == 0 {
            req.bits |= flags::CLOSE;
            req.reason = CloseReason::Overflow;
        }
        req
    }

    fn release_io(&mut self, mut io: Box<ConnIo<S::Busy>>) {
        if self.io_pool.len() < IO_POOL_MAX {
            io.trim();
            self.io_pool.push(io);
        }
    }
}

/// A running shard.
pub(crate) struct Shard<S: Service> {
    id: usize,
    ring: Ring,
    core: Core<S>,
    max_connections: usize,
    linger: Duration,
    listeners: Vec<Listener>,
    inbox: ShardInbox<S::Stats>,
    epoch: Instant,
    accept_paused: bool,
    accept_retry: TimerKey,
    /// Sockets accepted while the table was full, served as slots free.
    held: std::collections::VecDeque<(OwnedFd, usize)>,
    /// Sockets accepted beyond a listener's rate limit, served as its tokens come.
    rate_held: std::collections::VecDeque<(OwnedFd, usize)>,
    rate_timer: TimerKey,
    fired: Vec<Fired>,
    actions: ShardActions,
    /// When the service asked to be polled again ([`Service::poll`]).
    service_deadline: Option<Instant>,
}

impl<S: Service> Shard<S> {
    pub(crate) fn new(
        id: usize,
        cfg: &ShardConfig,
        ring: Ring,
        listeners: Vec<OwnedFd>,
        rates: &[Option<u32>],
        service: S,
        inbox: ShardInbox<S::Stats>,
    ) -> Shard<S> {
        let slots = cfg.max_connections + cfg.max_outbound;
        let now = Instant::now();
        Shard {
            id,
            core: Core {
                conns: Table::with_capacity(slots),
                wheel: Wheel::with_capacity(slots + 16),
                io_pool: Vec::new(),
                service,
                stats: EngineStats {
                    slab_capacity: cfg.max_connections as u64,
                    slab_slot_bytes: Table::<Conn<S::Conn, S::Busy>>::slot_size() as u64,
                    buffers_total: cfg.buffers as u64,
                    ..Default::default()
                },
                now,
                now_ms: 0,
                stopping: false,
                max_input: cfg.max_input,
                outbound: 0,
            },
            ring,
            max_connections: cfg.max_connections,
            linger: cfg.linger,
            listeners: listeners
                .into_iter()
                .enumerate()
                .map(|(i, fd)| Listener {
                    fd: Some(fd),
                    armed: false,
                    rate_paused: false,
                    rate: rates
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|r| RateBucket::new(r, 0)),
                })
                .collect(),
            inbox,
            epoch: now,
            accept_paused: false,
            accept_retry: TimerKey::NONE,
            held: std::collections::VecDeque::new(),
            rate_held: std::collections::VecDeque::new(),
            rate_timer: TimerKey::NONE,
            fired: Vec::new(),
            actions: ShardActions::default(),
            service_deadline: None,
        }
    }

    /// Runs until stopped and every connection is closed.
    pub(crate) fn run(mut self) {
        let wake_fd = self.inbox.wake.as_raw_fd();
        self.ring.poll_multi(wake_fd, token::pack_index(OP_WAKE, 0));
        self.arm_accepts();
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        loop {
            self.tick();
            self.poll_service();
            if self.core.stopping
                && self.core.conns.is_empty()
                && self.listeners.iter().all(|l| !l.armed)
            {
                break;
            }
            let wheel = self
                .core
                .wheel
                .next_deadline()
                .map(|d| Duration::from_millis(d.saturating_sub(self.core.now_ms).max(1)));
            let service = self.service_deadline.map(|d| {
                d.saturating_duration_since(self.core.now)
                    .max(Duration::from_millis(1))
            });
            let timeout = match (wheel, service) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = self.ring.submit_and_wait(timeout) {
                tracing::error!(shard = self.id, "io_uring_enter failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            self.core.stats.loop_turns += 1;
            cqes.clear();
            self.ring.drain(&mut cqes);
            self.core.stats.completions += cqes.len() as u64;
            self.set_clock();
            for c in &cqes {
                self.dispatch(*c);
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn set_clock(&mut self) {
        self.core.now = Instant::now();
        self.core.now_ms = self.core.now.duration_since(self.epoch).as_millis() as u64;
    }

    fn tick(&mut self) {
        self.set_clock();
        let mut fired = std::mem::take(&mut self.fired);
        self.core.wheel.poll(self.core.now_ms, &mut fired);
        for &f in &fired {
            self.on_timer(f);
        }
        fired.clear();
        self.fired = fired;
    }

    /// Runs [`Service::poll`] and carries out what it asks; repeats (boundedly) while the actions
    /// it asked for lead to more.
    fn poll_service(&mut self) {
        for _ in 0..8 {
            let mut actions = std::mem::take(&mut self.actions);
            self.service_deadline = self.core.service.poll(self.core.now, &mut actions);
            if actions.is_empty() {
                self.actions = actions;
                return;
            }
            for (id, reason) in actions.close.drain(..) {
                self.begin_close(id, reason);
                self.maybe_finalize(id);
            }
            for id in actions.wake.drain(..) {
                let open = self
                    .core
                    .conns
                    .get(id)
                    .is_some_and(|c| c.state & state::CLOSING == 0);
                if open {
                    if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_wake(cx, app))
                    {
                        self.apply(id, req);
                    }
                }
            }
            self.actions = actions;
        }
    }

    fn dispatch(&mut self, c: Completion) {
        match token::op(c.user_data) {
            OP_RECV => self.on_recv(c),
            OP_SEND => self.on_send(c),
            OP_ACCEPT => self.on_accept(c),
            OP_WAKE => self.on_wake(c),
            OP_CONNECT => self.on_connect(c),
            OP_CANCEL => {}
            _ => tracing::warn!(
                shard = self.id,
                "completion with unknown tag {:#x}",
                c.user_data
            ),
        }
    }

    // ---- accept -------------------------------------------------------------------------------

    fn arm_accepts(&mut self) {
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

    fn cancel_accepts(&mut self) {
        for (i, l) in self.listeners.iter().enumerate() {
            if l.armed {
                self.ring.cancel(
                    token::pack_index(OP_ACCEPT, i as u32),
                    token::pack_index(OP_CANCEL, 0),
                );
            }
        }
    }

    fn on_accept(&mut self, c: Completion) {
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

    fn accepted(&mut self, fd: OwnedFd, listener: usize) {
        if self.core.stopping {
            return; // dropped, so closed
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

    fn pause_for_rate(&mut self, listener: usize) {
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
    fn on_rate_timer(&mut self) {
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

    fn insert_conn(&mut self, fd: OwnedFd, listener: usize) {
        let _ = SockRef::from(&fd).set_nodelay(true);
        let raw = fd.as_raw_fd();
        let conn = Conn {
            fd,
            state: state::RECV_ARMED,
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
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_accept(cx, app, listener))
        {
            self.apply(id, req);
        }
    }

    /// Accepted (client) connections in the table.
    fn inbound(&self) -> usize {
        self.core.conns.len() - self.core.outbound
    }

    fn maybe_resume_accepting(&mut self) {
        while self.inbound() < self.max_connections {
            let Some((fd, listener)) = self.held.pop_front() else {
                break;
            };
            if self.core.stopping {
                continue; // dropped, so closed
            }
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

    // ---- receive ------------------------------------------------------------------------------

    fn on_recv(&mut self, c: Completion) {
        let id = token::id(c.user_data);
        let buf = self.ring.bufs().take(c.flags, c.result);
        let Some(conn) = self.core.conns.get_mut(id) else {
            if let Some(b) = buf {
                self.ring.bufs().recycle(b);
            }
            return;
        };
        if !c.more() {
            conn.state &= !state::RECV_ARMED;
        }
        let st = conn.state;
        if c.result > 0 {
            self.core.stats.bytes_in += c.result as u64;
            if let Some(b) = buf {
                let mut req = None;
                if st & (state::CLOSING | state::LINGER) == 0 {
                    let data = self.ring.bufs_ref().data(&b);
                    if st & state::PAUSED != 0 {
                        self.core.buffer(id, data);
                    } else {
                        req = self.core.deliver(id, data);
                    }
                }
                self.ring.bufs().recycle(b);
                if let Some(req) = req {
                    self.apply(id, req);
                }
            }
        } else if c.result == 0 {
            self.peer_eof(id);
        } else {
            match -c.result {
                libc::ENOBUFS => self.core.stats.recv_no_buffers += 1,
                libc::ECANCELED => {}
                _ => self.begin_close(id, CloseReason::PeerReset),
            }
        }
        self.after_recv(id);
    }

    /// Re-arms a receive that ended, or finishes a close that waited for it.
    fn after_recv(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let st = conn.state;
        if st & state::RECV_ARMED != 0 {
            return;
        }
        if st & state::CLOSING != 0 {
            self.maybe_finalize(id);
        } else if st & state::PEER_EOF == 0 && (st & state::LINGER != 0 || st & state::PAUSED == 0)
        {
            conn.state |= state::RECV_ARMED;
            let fd = conn.fd.as_raw_fd();
            self.ring.recv_multi(fd, token::pack(OP_RECV, id));
        }
    }

    fn peer_eof(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.state |= state::PEER_EOF;
        if conn.state & state::LINGER != 0 {
            let reason = conn.reason;
            self.begin_close(id, reason);
            return;
        }
        if conn.state & state::CLOSING != 0 {
            return;
        }
        if conn.state & state::PAUSED != 0 {
            // Complete requests may wait behind the pause: `drained` serves them first and
            // reports the EOF after.
            return;
        }
        self.report_peer_closed(id);
        self.close_if_both_done(id);
    }

    fn report_peer_closed(&mut self, id: Id) {
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_peer_closed(cx, app))
        {
            self.apply(id, req);
        }
    }

    // ---- send ---------------------------------------------------------------------------------

    /// Starts a send of pending output when none is in flight; starts the linger phase when a
    /// close-after-flush connection has nothing left to send.
    fn flush(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & (state::SENDING | state::CLOSING | state::LINGER | state::CONNECTING) != 0 {
            return;
        }
        let has_out = conn.io.as_ref().is_some_and(|io| !io.out.is_empty());
        if has_out {
            let io = conn.io.as_mut().expect("checked");
            let spare = std::mem::take(&mut io.spare);
            let buf = std::mem::replace(&mut io.out, spare);
            io.in_flight = buf.len();
            conn.state |= state::SENDING;
            let fd = conn.fd.as_raw_fd();
            self.ring.send(fd, buf, token::pack(OP_SEND, id));
        } else if conn.state & state::FLUSH_THEN_CLOSE != 0 {
            self.start_linger(id);
        } else if conn.state & state::SHUT_WR_PENDING != 0 {
            self.shutdown_write_now(id);
        }
    }

    /// Sends FIN; a connection that has also seen the peer's FIN is done and closes.
    fn shutdown_write_now(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.state &= !state::SHUT_WR_PENDING;
        conn.state |= state::WRITE_SHUT;
        let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
        if conn.state & state::PEER_EOF != 0 {
            self.begin_close(id, CloseReason::Done);
            self.maybe_finalize(id);
        }
    }

    fn on_send(&mut self, c: Completion) {
        let Some(outcome) = self.ring.complete_send(c.user_data, c.result) else {
            return;
        };
        match outcome {
            SendOutcome::Partial { owner, sent } => {
                self.core.stats.bytes_out += sent as u64;
                if let Some(io) = self
                    .core
                    .conns
                    .get_mut(token::id(owner))
                    .and_then(|c| c.io.as_mut())
                {
                    io.in_flight = io.in_flight.saturating_sub(sent);
                }
            }
            SendOutcome::Failed { owner, buf, errno } => {
                let id = token::id(owner);
                self.sent_back(id, buf);
                let reason = if errno == libc::ECANCELED {
                    CloseReason::Shutdown
                } else {
                    CloseReason::PeerReset
                };
                self.begin_close(id, reason);
                self.maybe_finalize(id);
            }
            SendOutcome::Done { owner, buf, sent } => {
                self.core.stats.bytes_out += sent as u64;
                let id = token::id(owner);
                self.sent_back(id, buf);
                self.drained(id);
            }
        }
    }

    fn sent_back(&mut self, id: Id, buf: Vec<u8>) {
        if let Some(conn) = self.core.conns.get_mut(id) {
            conn.state &= !state::SENDING;
            if let Some(io) = conn.io.as_mut() {
                io.in_flight = 0;
                if buf.capacity() <= KEEP_CAPACITY && io.spare.capacity() < buf.capacity() {
                    io.spare = buf;
                }
            }
        }
    }

    fn drained(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::CLOSING != 0 {
            self.maybe_finalize(id);
            return;
        }
        if conn.io.as_ref().is_some_and(|io| !io.out.is_empty()) {
            self.flush(id);
            return;
        }
        if conn.state & state::FLUSH_THEN_CLOSE != 0 {
            self.start_linger(id);
            return;
        }
        if conn.state & state::SHUT_WR_PENDING != 0 {
            self.shutdown_write_now(id);
            if self
                .core
                .conns
                .get(id)
                .is_none_or(|c| c.state & state::CLOSING != 0)
            {
                return;
            }
        }
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::PAUSED != 0 {
            conn.state &= !state::PAUSED;
            if let Some(req) = self.core.deliver(id, &[]) {
                self.apply(id, req);
            }
            self.after_recv(id);
            if self.deferred_eof(id) {
                return;
            }
        }
        if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_drained(cx, app)) {
            self.apply(id, req);
        }
        // A peer that paused because this connection's output was full may read again.
        if let Some(peer) = self.peer_of(id) {
            self.resume(peer);
        }
    }

    // ---- requests from callbacks --------------------------------------------------------------

    fn apply(&mut self, id: Id, req: Requests) {
        const PEER_BITS: u16 = flags::PEER_OUTPUT
            | flags::RESUME_PEER
            | flags::UNPAIR
            | flags::CLOSE_PEER
            | flags::CLOSE_PEER_AFTER_FLUSH
            | flags::SHUTDOWN_PEER_WRITE;
        let Requests {
            bits,
            reason,
            mut effects,
        } = req;
        // This connection's own state first, so what the peer effects trigger (e.g. `on_paired`
        // resuming input) sees it.
        if bits & flags::CLOSE == 0 {
            self.apply_own(id, bits, reason);
        }
        let wake = std::mem::take(&mut effects.wake);
        if bits & PEER_BITS != 0 || effects.connect.is_some() || effects.pair.is_some() {
            self.apply_peer(id, bits, effects);
        }
        for other in wake {
            if self
                .core
                .conns
                .get(other)
                .is_some_and(|c| c.state & state::CLOSING == 0)
            {
                if let Some(((), req)) = self.core.call(other, |svc, cx, app| svc.on_wake(cx, app))
                {
                    self.apply(other, req);
                }
            }
        }
        if bits & flags::CLOSE != 0 {
            self.begin_close(id, reason);
            self.maybe_finalize(id);
            return;
        }
        if bits & flags::RESUME != 0 {
            self.resume(id);
        }
        self.flush(id);
        self.settle(id);
    }

    fn apply_own(&mut self, id: Id, bits: u16, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if bits & flags::SHUTDOWN_WRITE != 0 {
            conn.state |= state::SHUT_WR_PENDING;
        }
        if bits & flags::CLOSE_AFTER_FLUSH != 0 && conn.state & state::FLUSH_THEN_CLOSE == 0 {
            conn.state |= state::FLUSH_THEN_CLOSE;
            conn.reason = reason;
        }
        if bits & flags::PAUSE != 0
            && conn.state & state::PAUSED == 0
            && conn.state & state::FLUSH_THEN_CLOSE == 0
        {
            conn.state |= state::PAUSED;
            if conn.state & state::RECV_ARMED != 0 {
                self.ring
                    .cancel(token::pack(OP_RECV, id), token::pack_index(OP_CANCEL, 0));
            }
        }
    }

    // ---- pairs and outbound connections --------------------------------------------------------

    fn peer_of(&self, id: Id) -> Option<Id> {
        self.core.conns.get(id)?.io.as_ref()?.peer
    }

    /// Carries out what a callback on `id` asked of its peer or of new connections.
    fn apply_peer(&mut self, id: Id, bits: u16, effects: Effects) {
        if bits & flags::UNPAIR != 0 {
            self.unlink(id);
        }
        let asked = effects.pair.is_some() || effects.connect.is_some();
        if let Some(other) = effects.pair {
            self.link(id, other);
        }
        if let Some(fd) = effects.connect {
            self.open_outbound(id, fd);
        }
        if asked && self.peer_of(id).is_some() {
            if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_paired(cx, app)) {
                self.apply(id, req);
            }
        }
        let Some(peer) = self.peer_of(id) else {
            return;
        };
        if bits & flags::CLOSE_PEER != 0 {
            let reason = effects.peer_reason.unwrap_or(CloseReason::Done);
            self.begin_close(peer, reason);
            self.maybe_finalize(peer);
            return;
        }
        if bits & flags::CLOSE_PEER_AFTER_FLUSH != 0 {
            if let Some(p) = self.core.conns.get_mut(peer) {
                if p.state & state::FLUSH_THEN_CLOSE == 0 {
                    p.state |= state::FLUSH_THEN_CLOSE;
                    p.reason = effects.peer_reason.unwrap_or(CloseReason::Done);
                }
            }
        }
        if bits & flags::SHUTDOWN_PEER_WRITE != 0 {
            if let Some(p) = self.core.conns.get_mut(peer) {
                p.state |= state::SHUT_WR_PENDING;
            }
        }
        if bits & (flags::PEER_OUTPUT | flags::CLOSE_PEER_AFTER_FLUSH | flags::SHUTDOWN_PEER_WRITE)
            != 0
        {
            self.flush(peer);
        }
        if bits & flags::RESUME_PEER != 0 {
            self.resume(peer);
        }
    }

    /// Pairs two live, unpaired connections.
    fn link(&mut self, a: Id, b: Id) {
        if a == b || self.peer_of(a).is_some() || self.peer_of(b).is_some() {
            return;
        }
        let (Some(x), Some(y)) = self.core.conns.get2_mut(a, b) else {
            return;
        };
        let pool = &mut self.core.io_pool;
        x.io.get_or_insert_with(|| pool.pop().unwrap_or_default())
            .peer = Some(b);
        y.io.get_or_insert_with(|| pool.pop().unwrap_or_default())
            .peer = Some(a);
    }

    /// Ends `id`'s pairing on both sides.
    fn unlink(&mut self, id: Id) {
        let Some(peer) = self.peer_of(id) else {
            return;
        };
        for x in [id, peer] {
            if let Some(io) = self.core.conns.get_mut(x).and_then(|c| c.io.as_mut()) {
                io.peer = None;
            }
        }
        self.settle(peer);
    }

    fn open_outbound(&mut self, from: Id, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let conn = Conn {
            fd,
            state: state::OUTBOUND | state::CONNECTING,
            reason: CloseReason::Done,
            timer: TimerKey::NONE,
            io: None,
            app: S::Conn::default(),
        };
        match self.core.conns.insert(conn) {
            Ok(nid) => {
                self.core.outbound += 1;
                self.core.stats.outbound_opened += 1;
                self.link(from, nid);
                self.ring.poll_out(raw, token::pack(OP_CONNECT, nid));
            }
            Err(_) => {
                // No slot for another outbound connection (global.max_outbound): the socket is
                // closed on drop and the asking connection learns it has no peer.
                self.core.stats.outbound_refused += 1;
                if let Some(((), req)) = self
                    .core
                    .call(from, |svc, cx, app| svc.on_unpaired(cx, app))
                {
                    self.apply(from, req);
                }
            }
        }
    }

    fn on_connect(&mut self, c: Completion) {
        let id = token::id(c.user_data);
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::CONNECTING == 0 {
            return;
        }
        conn.state &= !state::CONNECTING;
        if conn.state & state::CLOSING != 0 {
            self.maybe_finalize(id);
            return;
        }
        let sock = SockRef::from(&conn.fd);
        let result = if c.result < 0 {
            Err(std::io::Error::from_raw_os_error(-c.result))
        } else {
            match sock.take_error() {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            }
        };
        let ok = result.is_ok();
        if ok {
            let _ = sock.set_nodelay(true);
            conn.state |= state::RECV_ARMED;
            let fd = conn.fd.as_raw_fd();
            self.ring.recv_multi(fd, token::pack(OP_RECV, id));
        } else {
            self.core.stats.outbound_failed += 1;
        }
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_connected(cx, app, result))
        {
            self.apply(id, req);
        }
        if !ok {
            self.begin_close(id, CloseReason::ConnectFailed);
            self.maybe_finalize(id);
        }
    }

    /// Lets a paused connection read again, presenting its buffered input first.
    fn resume(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::PAUSED == 0 || conn.state & state::CLOSING != 0 {
            return;
        }
        conn.state &= !state::PAUSED;
        if let Some(req) = self.core.deliver(id, &[]) {
            self.apply(id, req);
        }
        self.after_recv(id);
        self.deferred_eof(id);
    }

    /// Reports an EOF that arrived while input was paused, once the buffered input is consumed.
    /// Returns true when it did.
    fn deferred_eof(&mut self, id: Id) -> bool {
        let due = self.core.conns.get(id).is_some_and(|c| {
            c.state & state::PEER_EOF != 0
                && c.state
                    & (state::PAUSED | state::CLOSING | state::FLUSH_THEN_CLOSE | state::LINGER)
                    == 0
        });
        if due {
            self.report_peer_closed(id);
            self.close_if_both_done(id);
        }
        due
    }

    /// A connection that has seen the peer's FIN and sent its own is finished.
    fn close_if_both_done(&mut self, id: Id) {
        let done = self
            .core
            .conns
            .get(id)
            .is_some_and(|c| c.state & state::WRITE_SHUT != 0 && c.state & state::CLOSING == 0);
        if done {
            self.begin_close(id, CloseReason::PeerClosed);
            self.maybe_finalize(id);
        }
    }

    /// Returns an idle connection's buffers to the pool.
    fn settle(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & (state::SENDING | state::CLOSING) != 0 {
            return;
        }
        if conn.io.as_ref().is_some_and(|io| io.is_idle()) {
            let io = conn.io.take().expect("checked");
            self.core.release_io(io);
        }
    }

    // ---- close --------------------------------------------------------------------------------

    fn start_linger(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.state |= state::LINGER;
        conn.state &= !state::PAUSED;
        let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
        if conn.state & state::PEER_EOF != 0 || self.linger.is_zero() {
            let reason = conn.reason;
            self.begin_close(id, reason);
            self.maybe_finalize(id);
            return;
        }
        if conn.timer.is_some() {
            self.core.wheel.cancel(conn.timer);
        }
        let at = self.core.now_ms + self.linger.as_millis() as u64;
        conn.timer = self.core.wheel.insert(at, id.index);
        if let Some(io) = conn.io.take() {
            self.core.release_io(io);
        }
        self.after_recv(id);
    }

    /// Marks a connection closing and cancels its operations; `maybe_finalize` frees it once they
    /// have completed.
    fn begin_close(&mut self, id: Id, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::CLOSING != 0 {
            return;
        }
        conn.state |= state::CLOSING;
        conn.reason = reason;
        if conn.timer.is_some() {
            self.core.wheel.cancel(conn.timer);
            conn.timer = TimerKey::NONE;
        }
        if conn.state & (state::RECV_ARMED | state::SENDING | state::CONNECTING) != 0 {
            let fd = conn.fd.as_raw_fd();
            self.ring.cancel_fd(fd, token::pack_index(OP_CANCEL, 0));
        }
    }

    fn maybe_finalize(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get(id) else {
            return;
        };
        if conn.state & state::CLOSING == 0
            || conn.state & (state::RECV_ARMED | state::SENDING | state::CONNECTING) != 0
        {
            return;
        }
        let mut conn = self.core.conns.remove(id).expect("checked");
        self.core.stats.closed[conn.reason as usize] += 1;
        if conn.state & state::OUTBOUND != 0 {
            self.core.outbound -= 1;
        }
        let peer = conn.io.as_mut().and_then(|io| io.peer.take());
        if let Some(io) = conn.io {
            self.core.release_io(io);
        }
        drop(conn.fd);
        self.core.service.on_close(id, conn.app, conn.reason);
        if let Some(p) = peer {
            if let Some(io) = self.core.conns.get_mut(p).and_then(|c| c.io.as_mut()) {
                io.peer = None;
            }
            let live = self
                .core
                .conns
                .get(p)
                .is_some_and(|c| c.state & state::CLOSING == 0);
            if live {
                if let Some(((), req)) = self.core.call(p, |svc, cx, app| svc.on_unpaired(cx, app))
                {
                    self.apply(p, req);
                }
                self.settle(p);
            }
        }
        self.maybe_resume_accepting();
    }

    // ---- timers -------------------------------------------------------------------------------

    /// Runs the handler of a fired timer whose holder still holds its key (keys fired in this
    /// batch are not reused within it: see the wheel's docs), so a connection closed or a slot
    /// refilled earlier in the batch is never acted on.
    fn on_timer(&mut self, fired: Fired) {
        match fired.token {
            TIMER_ACCEPT_RETRY => {
                if self.accept_retry != fired.key {
                    return;
                }
                self.accept_retry = TimerKey::NONE;
                if !self.accept_paused && !self.core.stopping {
                    self.arm_accepts();
                }
            }
            TIMER_RATE if self.rate_timer == fired.key => self.on_rate_timer(),
            TIMER_RATE => {}
            TIMER_STOP_DEADLINE => {
                let open = self.core.conns.len();
                if open > 0 {
                    tracing::info!(
                        shard = self.id,
                        "shutdown_timeout reached: closing {open} connection(s)"
                    );
                }
                for id in self.core.conns.ids() {
                    self.begin_close(id, CloseReason::Shutdown);
                    self.maybe_finalize(id);
                }
            }
            index => {
                let Some(id) = self.core.conns.id_at(index) else {
                    return;
                };
                let conn = self.core.conns.get_mut(id).expect("id_at");
                if conn.timer != fired.key {
                    return;
                }
                conn.timer = TimerKey::NONE;
                if conn.state & state::LINGER != 0 {
                    let reason = conn.reason;
                    self.begin_close(id, reason);
                    self.maybe_finalize(id);
                    return;
                }
                if conn.state & state::CLOSING != 0 {
                    return;
                }
                if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_timer(cx, app)) {
                    self.apply(id, req);
                }
            }
        }
    }

    // ---- control ------------------------------------------------------------------------------

    fn on_wake(&mut self, c: Completion) {
        let _ = self.inbox.wake.read();
        if !c.more() {
            let fd = self.inbox.wake.as_raw_fd();
            self.ring.poll_multi(fd, token::pack_index(OP_WAKE, 0));
        }
        while let Ok(msg) = self.inbox.rx.try_recv() {
            match msg {
                Control::Stats(reply) => {
                    let report = self.report();
                    let _ = reply.send(report);
                }
                Control::Stop { grace } => self.begin_stop(grace),
            }
        }
    }

    fn report(&mut self) -> ShardReport<S::Stats> {
        let s = &mut self.core.stats;
        s.connections = (self.core.conns.len() - self.core.outbound) as u64;
        s.outbound = self.core.outbound as u64;
        s.slab_used = self.core.conns.len() as u64;
        s.timers = self.core.wheel.len() as u64;
        s.buffers_outstanding = self.ring.bufs_ref().outstanding() as u64;
        ShardReport {
            shard: self.id,
            engine: s.clone(),
            service: self.core.service.stats(),
        }
    }

    fn begin_stop(&mut self, grace: Duration) {
        if self.core.stopping {
            return;
        }
        self.core.stopping = true;
        self.held.clear();
        self.rate_held.clear();
        self.cancel_accepts();
        for l in self.listeners.iter_mut().filter(|l| !l.armed) {
            l.fd = None;
        }
        let at = self.core.now_ms + grace.as_millis() as u64;
        self.core.wheel.insert(at, TIMER_STOP_DEADLINE);
        for id in self.core.conns.ids() {
            let closing = self
                .core
                .conns
                .get(id)
                .is_none_or(|c| c.state & (state::CLOSING | state::LINGER) != 0);
            if closing {
                continue;
            }
            if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_shutdown(cx, app)) {
                self.apply(id, req);
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

    #[test]
    fn connection_slot_is_small() {
        // An idle connection costs its slot (record + generation) and one timer entry.
        assert_eq!(std::mem::size_of::<Option<Conn<[u8; 4], ()>>>(), 24);
        assert_eq!(Table::<Conn<[u8; 4], ()>>::slot_size(), 28);
    }
}

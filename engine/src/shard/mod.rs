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
//!
//! Modules by job: this one holds the loop and dispatch, the connection record and `Core` (running
//! callbacks, delivering input); `accept` listeners and admission; `recv`, `send` and `close` the
//! connection life cycle; `apply` what callbacks ask; `pairs` pairs and outbound connections;
//! `timers` fired timers; `control` control messages and statistics.

use crate::control::{Control, ShardInbox, ShardReport};
use crate::service::{
    flags, CloseReason, ConnCx, ConnIo, Effects, Service, ShardActions, DEADLINES, DEADLINE_TOKEN,
    KEEP_CAPACITY,
};
use crate::stats::EngineStats;
use crate::sys::{fd::from_accept_result, Completion, Ring, SendOutcome};
use crate::table::{Id, Table};
use crate::token::{self, OP_ACCEPT, OP_CANCEL, OP_CONNECT, OP_RECV, OP_SEND, OP_WAKE};
use crate::transport::{Status, Transport};
use crate::wheel::{Fired, TimerKey, Wheel};
use socket2::SockRef;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

mod accept;

use accept::{Listener, RateBucket};
use life::{AfterOutput, Life};
mod apply;
mod close;
mod control;
mod life;
mod pairs;
mod preface;
mod recv;
mod secure;
mod send;
mod sinks;
mod timers;

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

/// Connection state bits kept by the engine: the operations the kernel owns, input paused, and
/// where the connection came from. The protocol life cycle is [`Life`].
mod state {
    /// A multishot receive is armed.
    pub const RECV_ARMED: u8 = 1 << 0;
    /// A send is in flight.
    pub const SENDING: u8 = 1 << 1;
    /// Input is paused until output drains.
    pub const PAUSED: u8 = 1 << 2;
    /// Made by `ConnCx::connect`.
    pub const OUTBOUND: u8 = 1 << 3;
    /// Connect in progress (a POLLOUT poll is armed).
    pub const CONNECTING: u8 = 1 << 4;
    /// The transport holds a session for this connection (`Core::sessions`).
    pub const SECURE: u8 = 1 << 5;
    /// Paired with another connection (`Core::pairs`).
    pub const PAIRED: u8 = 1 << 6;
    /// Accepted on a listener with a preface that has not been read yet (`Core::prefaces`):
    /// neither the transport nor the service has seen the connection.
    pub const PREFACE: u8 = 1 << 7;
    /// Operations the kernel owns: a closing connection waits for their completions.
    pub const IN_KERNEL: u8 = RECV_ARMED | SENDING | CONNECTING;
}

struct Conn<C, B> {
    fd: OwnedFd,
    timer: TimerKey,
    state: u8,
    life: Life,
    reason: CloseReason,
    app: C,
    io: Option<Box<ConnIo<B>>>,
}

/// Internal timer tokens (connection timers use the slot index, deadline tables the slot index
/// with `DEADLINE_TOKEN`, both always below these).
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
    /// The transport's sessions of secure connections, by slot index (plaintext connections
    /// have none, so their slot does not grow).
    sessions: HashMap<u32, Secure<Session<S>>>,
    /// The peer of each paired connection, by slot index (both ends have an entry). Kept
    /// outside the buffers box so that an idle end of a tunnel gives its box back.
    pairs: HashMap<u32, Id>,
    /// Scratch for the application bytes a transport produces from one receive.
    plain: Vec<u8>,
    /// Connections whose preface is being read, by slot index.
    prefaces: HashMap<u32, PendingPreface>,
    /// Origins their prefaces declared, by slot index, for the connection's life.
    origins: HashMap<u32, crate::service::Origin>,
    /// The first bytes of outbound connections still connecting, by slot index
    /// ([`ConnCx::open_with_preamble`]).
    preambles: HashMap<u32, Box<[u8]>>,
}

/// A listener's per-shard settings.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ListenerSettings {
    /// This shard's share of the listener's rate limit (new connections per second).
    pub rate: Option<u32>,
    /// The deadline of a connection's preface, on a listener with one.
    pub preface: Option<Duration>,
}

/// A connection's preface bytes so far.
struct PendingPreface {
    listener: usize,
    input: Vec<u8>,
}

/// The transport's per-connection state for service `S`.
type Session<S> = <<S as Service>::Transport as Transport>::Session;

/// A secure connection's session and where it stands with its service.
struct Secure<T> {
    session: T,
    /// The listener it was accepted on (`None`: outbound), for the deferred `on_accept`.
    listener: Option<usize>,
    /// The service has been told (`on_accept` / `on_connected`): the handshake is done.
    started: bool,
}

impl<S: Service> Core<S> {
    /// The connection paired with `id`, if any.
    fn peer_of(&self, id: Id) -> Option<Id> {
        let conn = self.conns.get(id)?;
        if conn.state & state::PAIRED == 0 {
            return None;
        }
        self.pairs.get(&id.index).copied()
    }

    /// Ends `id`'s side of a pairing; returns the peer it had.
    fn unpair_one(&mut self, id: Id) -> Option<Id> {
        let conn = self.conns.get_mut(id)?;
        if conn.state & state::PAIRED == 0 {
            return None;
        }
        conn.state &= !state::PAIRED;
        self.pairs.remove(&id.index)
    }

    /// Runs a service callback on connection `id` with a fresh [`ConnCx`].
    fn call<R>(
        &mut self,
        id: Id,
        f: impl FnOnce(&mut S, &mut ConnCx<'_, S::Busy>, &mut S::Conn) -> R,
    ) -> Option<(R, Requests)> {
        let peer_id = self.peer_of(id);
        let (conn, peer) = match peer_id {
            Some(p) => {
                let (c, p_conn) = self.conns.get2_mut(id, p);
                (c, p_conn.map(|pc| (p, &mut pc.io)))
            }
            None => (self.conns.get_mut(id), None),
        };
        let conn = conn?;
        let session = if conn.state & state::SECURE != 0 {
            self.sessions
                .get(&id.index)
                .map(|s| &s.session as &dyn std::any::Any)
        } else {
            None
        };
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
            session,
            origins: &self.origins,
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
        io.deadlines.reset(&mut self.wheel);
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
    /// Connections woken by callbacks (`ConnCx::wake`), called once each after the current
    /// batch of completions: a backend connection woken by many clients in one batch sends
    /// their requests together.
    woken: Vec<Id>,
    /// The other of `woken`'s two lists (empty, with its capacity).
    woken_spare: Vec<Id>,
    /// Log sinks (`sinks.rs`), by number.
    sinks: Vec<sinks::Sink>,
}

impl<S: Service> Shard<S> {
    pub(crate) fn new(
        id: usize,
        cfg: &ShardConfig,
        ring: Ring,
        listeners: Vec<OwnedFd>,
        settings: &[ListenerSettings],
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
                sessions: HashMap::new(),
                pairs: HashMap::new(),
                plain: Vec::new(),
                prefaces: HashMap::new(),
                origins: HashMap::new(),
                preambles: HashMap::new(),
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
                    rate: settings
                        .get(i)
                        .and_then(|s| s.rate)
                        .map(|r| RateBucket::new(r, 0)),
                    preface: settings.get(i).and_then(|s| s.preface),
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
            woken: Vec::new(),
            woken_spare: Vec::new(),
            sinks: Vec::new(),
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
            self.run_woken();
            self.poll_service();
            if self.core.stopping
                && self.core.conns.is_empty()
                && self.listeners.iter().all(|l| !l.armed)
                && self.sinks_idle()
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
                _ if !self.woken.is_empty() => Some(Duration::ZERO),
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
            self.run_woken();
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// Calls `on_wake` once for each connection woken since the last call (in index order,
    /// duplicates merged), then for those these calls woke, and so on (boundedly: what is
    /// left waits for the next turn of the loop, which then does not block).
    pub(super) fn run_woken(&mut self) {
        for _ in 0..64 {
            if self.woken.is_empty() {
                return;
            }
            // The spare list takes the new wakes while these run (no allocation per turn).
            let spare = std::mem::take(&mut self.woken_spare);
            let mut woken = std::mem::replace(&mut self.woken, spare);
            if woken.len() > 1 {
                woken.sort_unstable_by_key(|id| (id.index, id.gen));
                woken.dedup();
            }
            for &id in &woken {
                let open = self
                    .core
                    .conns
                    .get(id)
                    .is_some_and(|c| !c.life.is_closing());
                if open {
                    if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_wake(cx, app))
                    {
                        self.apply(id, req);
                    }
                }
            }
            woken.clear();
            self.woken_spare = woken;
        }
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
            self.sink_actions(&mut actions);
            for (id, reason) in actions.close.drain(..) {
                self.begin_close(id, reason);
                self.maybe_finalize(id);
            }
            self.woken.append(&mut actions.wake);
            self.run_woken();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slot_is_small() {
        // An idle connection costs its slot (record + generation) and one timer entry.
        assert_eq!(std::mem::size_of::<Option<Conn<[u8; 4], ()>>>(), 24);
        assert_eq!(Table::<Conn<[u8; 4], ()>>::slot_size(), 28);
    }
}

//! Model-based test of the reuse rules and the engine protocol.
//!
//! A deterministic pseudo-random sequence (xorshift64) of engine events — sessions opening and
//! closing, requests, connects that succeed or fail (with retries), releases with random
//! `reusable`/`private` flags, backends closing idle connections, time passing — drives a
//! [`BackendPool`] and a simple, independently written model of the rules. After every event:
//! - each decision is legal for the model: a reused connection is idle, its list is allowed for the
//!   request's mode and first flag, a private connection only goes to its owner, and a new
//!   connection is opened only when the chosen server had no connection the request could use (and,
//!   without limits, when the session had no usable private connection);
//! - `release`, `session_closed` and `expire` return exactly what the model predicts, `expire`
//!   including the purge (the model's own estimator of each server's need, halving the excess,
//!   oldest `idle` then oldest `safe` first);
//! - passive health follows the model's own record of consecutive failures and down periods: a
//!   down server gets no new connection, `connect_failed` says whether it marked the server down,
//!   and the pool's failure and down counts equal the model's;
//! - a server's `conn_rate` is never exceeded (the model keeps its own token bucket), and the
//!   bucket does run dry in the run, so the limit is exercised;
//! - queues are FIFO: one `poll_queue` lets requests go in arrival order, every request still
//!   waiting in a queue arrived after every request that queue just let go, and no new request
//!   takes a shared or new connection while the backend queue holds one;
//! - the pool's per-server idle/safe/private counts equal the model's, requests in flight equal
//!   decisions minus releases, new connections equal the model's connects, and the pool's internal
//!   invariants hold (a connection is in at most one list, slot counts, limits).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{BackendPolicy, Balance, ReuseMode, ServerPolicy};

/// xorshift64 (shared with the multiplexed model, `mux_model_tests`).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outstanding {
    Queued(Ticket),
    Using(ConnId),
}

#[derive(Debug)]
struct MSession {
    open: bool,
    /// A multiplexed (h2) client: up to 3 requests at once, none of them "first".
    h2: bool,
    requests: u32,
    out: Vec<Outstanding>,
}

#[derive(Debug, Clone)]
struct MConn {
    server: ServerId,
    user: Option<u64>,
    owner: Option<u64>,
    served: u32,
    since: Instant,
    /// Release order (the pool's lists are in release order; equal instants are common here).
    released: u64,
}

/// The model's record of one server: passive health, the purge estimator, the rate bucket.
#[derive(Debug, Clone, Default)]
struct MServer {
    consecutive: u32,
    down_until: Option<Instant>,
    failures: u64,
    downs: u64,
    /// Purge: the estimated need and the peak use in the current interval.
    est_need: usize,
    max_used: usize,
    /// conn_rate bucket: credit in nanoseconds (full: `rate` tokens of `interval` each) and when
    /// it was last topped up.
    credit_ns: u64,
    credit_at: Option<Instant>,
    /// Times a connect took the bucket below one token (the limit was reached).
    ran_dry: u64,
}

/// The model's reading of the mode table.
fn allowed(mode: ReuseMode, first: bool, served: u32) -> bool {
    let proven = served >= 2;
    match mode {
        ReuseMode::Never => false,
        ReuseMode::Safe => !first,
        ReuseMode::Aggressive => !first || proven,
        ReuseMode::Always => true,
    }
}

struct Sim {
    pool: BackendPool,
    p: BackendPolicy,
    limits: bool,
    rng: Rng,
    now: Instant,
    sessions: BTreeMap<u64, MSession>,
    conns: BTreeMap<ConnId, MConn>,
    tickets: BTreeMap<Ticket, (u64, bool, Instant)>,
    next_session: u64,
    next_conn: u64,
    decisions: u64,
    releases: u64,
    connects: u64,
    servers: Vec<MServer>,
    next_release: u64,
    next_purge: Instant,
    /// The queue each outstanding ticket waits in, as last read from the pool.
    queue_of: BTreeMap<Ticket, Option<QueueRef>>,
}

impl Sim {
    fn new(mode: ReuseMode, balance: Balance, limits: bool, seed: u64) -> Self {
        let mut servers = vec![
            ServerPolicy::weighted(2),
            ServerPolicy::weighted(1),
            ServerPolicy::weighted(1),
        ];
        let mut p = BackendPolicy::new(Vec::new());
        if limits {
            servers[0].maxconn = Some(2);
            servers[1].maxconn = Some(1);
            servers[1].maxqueue = Some(1);
            servers[2].maxconn = Some(3);
            servers[2].conn_rate = Some(2);
            p.maxconn = Some(5);
            p.queue_cap = Some(4);
        }
        p.servers = servers;
        p.reuse = mode;
        p.balance = balance;
        p.max_private_per_session = 2;
        p.max_idle_per_server = Some(6);
        p.max_reuse = Some(5);
        p.idle_timeout = Duration::from_secs(6);
        p.purge_delay = Duration::from_secs(1);
        p.queue_timeout = Duration::from_secs(2);
        p.fail_threshold = 2;
        p.down_for = Duration::from_secs(1);
        let now = Instant::now();
        let servers = vec![MServer::default(); p.servers.len()];
        let next_purge = now + p.purge_delay;
        Self {
            servers,
            next_release: 0,
            next_purge,
            queue_of: BTreeMap::new(),
            pool: BackendPool::new(p.clone(), now).expect("valid"),
            p,
            limits,
            rng: Rng(seed),
            now,
            sessions: BTreeMap::new(),
            conns: BTreeMap::new(),
            tickets: BTreeMap::new(),
            next_session: 0,
            next_conn: 0,
            decisions: 0,
            releases: 0,
            connects: 0,
        }
    }

    fn pick<K: Copy>(&mut self, keys: &[K]) -> Option<K> {
        (!keys.is_empty()).then(|| keys[self.rng.below(keys.len())])
    }

    /// Up by the model's own health record (and not drained by weight 0).
    fn up(&self, server: ServerId) -> bool {
        let m = &self.servers[server.index()];
        m.down_until.is_none_or(|until| self.now >= until)
            && self.p.servers[server.index()].weight > 0
    }

    /// The model's health after a failed connect to `server`; whether it marked it down.
    fn health_failure(&mut self, server: ServerId) -> bool {
        let now = self.now;
        let (threshold, down_for) = (self.p.fail_threshold, self.p.down_for);
        let m = &mut self.servers[server.index()];
        m.failures += 1;
        if m.down_until.is_some_and(|until| now < until) || threshold == 0 {
            return false;
        }
        m.consecutive += 1;
        if m.consecutive < threshold {
            return false;
        }
        m.consecutive = 0;
        m.down_until = Some(now + down_for);
        m.downs += 1;
        true
    }

    /// Connections of `server` in use now.
    fn used_on(&self, server: ServerId) -> usize {
        self.conns
            .values()
            .filter(|c| c.server == server && c.user.is_some())
            .count()
    }

    /// The purge estimator notes the use of `server` after it grew.
    fn note_used(&mut self, server: ServerId) {
        let used = self.used_on(server);
        let m = &mut self.servers[server.index()];
        m.max_used = m.max_used.max(used);
        m.est_need = m.est_need.max(used);
    }

    /// Spends a connect token of `server` in the model's bucket; panics if it holds none.
    fn spend_rate_token(&mut self, server: ServerId) {
        let Some(rate) = self.p.servers[server.index()].conn_rate else {
            return;
        };
        let interval = 1_000_000_000 / u64::from(rate);
        let full = interval * u64::from(rate);
        let now = self.now;
        let m = &mut self.servers[server.index()];
        let refill = m.credit_at.map_or(full, |at| {
            u64::try_from(now.duration_since(at).as_nanos()).unwrap_or(u64::MAX)
        });
        m.credit_ns = m.credit_ns.saturating_add(refill).min(full);
        m.credit_at = Some(now);
        assert!(
            m.credit_ns >= interval,
            "{server}: a new connection beyond conn_rate {rate}/s"
        );
        m.credit_ns -= interval;
        if m.credit_ns < interval {
            m.ran_dry += 1;
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=11 => self.open(),
            12..=19 => self.close_session(),
            20..=54 => self.request(),
            55..=84 => self.finish(),
            85..=89 => self.backend_closes_idle(),
            _ => self.advance(),
        }
        self.check();
    }

    fn open(&mut self) {
        if self.sessions.values().filter(|s| s.open).count() >= 30 {
            return;
        }
        self.next_session += 1;
        let h2 = self.rng.pct(30);
        self.sessions.insert(
            self.next_session,
            MSession {
                open: true,
                h2,
                requests: 0,
                out: Vec::new(),
            },
        );
    }

    fn request(&mut self) {
        let idle: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.open && s.out.len() < if s.h2 { 3 } else { 1 })
            .map(|(&k, _)| k)
            .collect();
        let Some(session) = self.pick(&idle) else {
            return;
        };
        let rec = self.sessions.get_mut(&session).expect("picked");
        let first = !rec.h2 && rec.requests == 0;
        rec.requests += 1;
        let a = self.pool.acquire(&req(session, first), self.now);
        let ups = self.ups();
        self.apply(session, first, a, true, &ups);
        self.after_queue_change();
    }

    /// Which servers are up now, by the model: the view a decision made now is checked against.
    fn ups(&self) -> Vec<bool> {
        (0..self.servers.len())
            .map(|i| self.up(ServerId(i as u32)))
            .collect()
    }

    /// Checks a decision against the model and applies it. `fresh`: a new request or a retry
    /// (not a queued request let go).
    /// `ups`: which servers were up when the pool decided (a batch of queue grants is decided at
    /// once, before the model reports the connect failures of the first ones).
    fn apply(&mut self, session: u64, first: bool, a: Acquire, fresh: bool, ups: &[bool]) {
        let up = |s: ServerId| ups[s.index()];
        let mode = self.p.reuse;
        let own_private =
            |c: ConnId, sim: &Sim| sim.conns.get(&c).is_some_and(|x| x.owner == Some(session));
        if fresh && matches!(a, Acquire::Connect { .. } | Acquire::Reuse { .. }) {
            let private = matches!(a, Acquire::Reuse { conn, .. } if own_private(conn, self));
            let backend_waiters = self
                .queue_of
                .values()
                .any(|q| *q == Some(QueueRef::Backend));
            assert!(
                private || !backend_waiters,
                "a new request went ahead of the backend queue: {a:?}; waiting: {:?}",
                self.queue_of
            );
        }
        match a {
            Acquire::Reuse { server, conn } => {
                let c = self.conns.get(&conn).expect("reused conn is known");
                assert_eq!(c.user, None, "{conn} reused while in use");
                assert_eq!(c.server, server);
                assert!(up(server) || c.owner.is_some(), "reuse on a down server");
                match c.owner {
                    Some(o) => assert_eq!(o, session, "private {conn} served to another session"),
                    None => assert!(
                        allowed(mode, first, c.served),
                        "{mode:?} first={first}: shared conn that served {} is not allowed",
                        c.served
                    ),
                }
                let c = self.conns.get_mut(&conn).expect("known");
                c.user = Some(session);
                c.served += 1;
                self.decisions += 1;
                self.add(session, Outstanding::Using(conn));
                self.note_used(server);
            }
            Acquire::Connect { server } => {
                assert!(up(server), "connect to a down or drained server");
                for (id, c) in &self.conns {
                    if c.user.is_some() {
                        continue;
                    }
                    assert!(
                        !(c.server == server
                            && c.owner.is_none()
                            && allowed(mode, first, c.served)),
                        "{mode:?} first={first}: new connection while {id} on {server} was usable"
                    );
                    if !self.limits {
                        assert!(
                            !(c.owner == Some(session) && up(c.server)),
                            "new connection while own private {id} was usable"
                        );
                    }
                }
                self.decisions += 1;
                self.spend_rate_token(server);
                if self.rng.pct(10) {
                    let marked = self
                        .pool
                        .connect_failed(server, self.now)
                        .expect("attempt outstanding");
                    assert_eq!(
                        marked,
                        self.health_failure(server),
                        "{server}: marked down or not"
                    );
                    if self.rng.pct(70) {
                        let a = self.pool.retry(&req(session, first), server, self.now);
                        let ups = self.ups();
                        self.apply(session, first, a, true, &ups);
                    }
                    self.poll();
                } else {
                    self.next_conn += 1;
                    let conn = ConnId(self.next_conn);
                    self.pool
                        .connected(server, conn, SessionId(session), self.now)
                        .expect("attempt outstanding");
                    self.connects += 1;
                    self.servers[server.index()].consecutive = 0;
                    self.conns.insert(
                        conn,
                        MConn {
                            server,
                            user: Some(session),
                            owner: None,
                            served: 1,
                            since: self.now,
                            released: 0,
                        },
                    );
                    self.add(session, Outstanding::Using(conn));
                    self.note_used(server);
                }
            }
            Acquire::Queued(t) => {
                assert!(self.limits, "queued without limits");
                self.tickets.insert(t, (session, first, self.now));
                self.add(session, Outstanding::Queued(t));
            }
            Acquire::Unavailable(Unavailable::AllServersDown) => {
                let n = self.p.servers.len();
                assert!((0..n).all(|i| !up(ServerId(i as u32))), "a server was up");
            }
            Acquire::Unavailable(Unavailable::QueueFull) => {
                assert!(self.limits);
                assert!(self.pool.stats().queue.current >= self.p.queue_cap.unwrap_or(usize::MAX));
            }
        }
    }

    fn add(&mut self, session: u64, out: Outstanding) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.out.push(out);
        }
    }

    fn remove(&mut self, session: u64, out: Outstanding) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.out.retain(|&o| o != out);
        }
    }

    fn poll(&mut self) {
        let before = self.queue_of.clone();
        let let_go = self.pool.poll_queue(self.now);
        // Arrival order across all queues: one poll lets requests go oldest first.
        assert!(
            let_go.windows(2).all(|w| w[0].0 < w[1].0),
            "let go out of arrival order: {let_go:?}"
        );
        // Forget every ticket let go before applying any: applying may poll again.
        let ups = self.ups();
        let mut granted = Vec::new();
        for &(t, a) in &let_go {
            assert!(!matches!(a, Acquire::Queued(_)));
            let (session, first, _) = self.tickets.remove(&t).expect("ticket known");
            self.remove(session, Outstanding::Queued(t));
            self.queue_of.remove(&t);
            granted.push((session, first, a));
        }
        // The poll may have moved waiters between queues: a retry decided below must see that.
        self.after_queue_change();
        for (session, first, a) in granted {
            self.apply(session, first, a, false, &ups);
        }
        self.after_queue_change();
        // FIFO: whoever still waits in a queue arrived after everyone that queue let go.
        for &(gone, _) in &let_go {
            let Some(&Some(q)) = before.get(&gone) else {
                continue;
            };
            for (&w, &now_in) in &self.queue_of {
                if now_in == Some(q) && before.get(&w) == Some(&Some(q)) {
                    assert!(w > gone, "{q:?} let {gone:?} go before the older {w:?}");
                }
            }
        }
    }

    /// Re-reads which queue each outstanding ticket waits in (requests may move between queues).
    fn after_queue_change(&mut self) {
        let tickets: Vec<Ticket> = self.tickets.keys().copied().collect();
        self.queue_of = tickets
            .into_iter()
            .map(|t| (t, self.pool.queue_of(t)))
            .collect();
        assert!(
            self.queue_of.values().all(Option::is_some),
            "an outstanding ticket is in no queue"
        );
    }

    /// What the model expects from `release`.
    fn expect_release(
        &self,
        conn: ConnId,
        reusable: bool,
        private: bool,
    ) -> (Release, Option<u64>) {
        let c = &self.conns[&conn];
        let user = c.user.expect("in use");
        let mut owner = c.owner;
        if owner.is_none() && (private || self.p.reuse == ReuseMode::Never) {
            owner = Some(user);
        }
        if !reusable || self.p.max_reuse.is_some_and(|m| c.served >= m) {
            return (Release::Close, owner);
        }
        if let Some(o) = owner {
            let open = self.sessions.get(&o).is_some_and(|s| s.open);
            let held = self
                .conns
                .values()
                .filter(|x| x.user.is_none() && x.owner == Some(o))
                .count();
            let keep = open && held < self.p.max_private_per_session;
            return (if keep { Release::Keep } else { Release::Close }, owner);
        }
        let idle_shared = |safe: bool| {
            self.conns
                .values()
                .filter(|x| x.user.is_none() && x.owner.is_none() && x.server == c.server)
                .filter(|x| (x.served >= 2) == safe)
                .count()
        };
        let (safe_n, idle_n) = (idle_shared(true), idle_shared(false));
        let shared = safe_n + idle_n;
        if self.p.max_idle_per_server.is_some_and(|m| shared >= m) {
            return (Release::Close, owner);
        }
        // Kept only within the estimated need, unless it is the first of its kind.
        let used = self.used_on(c.server);
        let m = &self.servers[c.server.index()];
        let need = m.max_used.max(m.est_need).max(used);
        let first_of_kind = safe_n == 0 && (c.served >= 2 || idle_n == 0);
        let keep = first_of_kind || used + shared <= need;
        (if keep { Release::Keep } else { Release::Close }, owner)
    }

    fn finish(&mut self) {
        let busy: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.is_some())
            .map(|(&k, _)| k)
            .collect();
        let Some(conn) = self.pick(&busy) else {
            return;
        };
        self.finish_conn(conn);
        self.poll();
    }

    fn finish_conn(&mut self, conn: ConnId) {
        let user = self.conns[&conn].user.expect("in use");
        self.remove(user, Outstanding::Using(conn));
        self.releases += 1;
        if self.rng.pct(5) {
            assert!(self.pool.conn_closed(conn));
            self.conns.remove(&conn);
            return;
        }
        let reusable = self.rng.pct(85);
        let private = self.rng.pct(10);
        let (want, owner) = self.expect_release(conn, reusable, private);
        let got = self
            .pool
            .release(conn, reusable, private, self.now)
            .expect("in use");
        assert_eq!(
            got, want,
            "release of {conn} (reusable={reusable} private={private})"
        );
        match got {
            Release::Close => {
                self.conns.remove(&conn);
            }
            Release::Keep => {
                self.next_release += 1;
                let c = self.conns.get_mut(&conn).expect("known");
                c.user = None;
                c.owner = owner;
                c.since = self.now;
                c.released = self.next_release;
            }
        }
    }

    fn close_session(&mut self) {
        let open: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.open)
            .map(|(&k, _)| k)
            .collect();
        let Some(session) = self.pick(&open) else {
            return;
        };
        for out in self.sessions[&session].out.clone() {
            match out {
                Outstanding::Queued(t) => {
                    assert!(self.pool.cancel(t));
                    self.tickets.remove(&t);
                    self.queue_of.remove(&t);
                }
                // Half the time the exchange ends first; else the session goes while it is in flight.
                Outstanding::Using(conn) if self.rng.pct(50) => self.finish_conn(conn),
                Outstanding::Using(_) => {}
            }
        }
        let s = self.sessions.get_mut(&session).expect("open");
        s.open = false;
        s.out.clear();
        let want: BTreeSet<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.is_none() && c.owner == Some(session))
            .map(|(&k, _)| k)
            .collect();
        let got: BTreeSet<ConnId> = self
            .pool
            .session_closed(SessionId(session))
            .into_iter()
            .collect();
        assert_eq!(got, want, "private connections of closed {session}");
        for c in &got {
            self.conns.remove(c);
        }
        self.poll();
    }

    fn backend_closes_idle(&mut self) {
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.is_none())
            .map(|(&k, _)| k)
            .collect();
        if let Some(conn) = self.pick(&idle) {
            assert!(self.pool.conn_closed(conn));
            self.conns.remove(&conn);
        }
    }

    fn advance(&mut self) {
        self.now += Duration::from_millis(self.rng.below(1500) as u64);
        let e = self.pool.expire(self.now);
        let timeout = self.p.idle_timeout;
        let want: BTreeSet<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.is_none() && c.since + timeout <= self.now)
            .map(|(&k, _)| k)
            .collect();
        for c in &want {
            self.conns.remove(c);
        }
        let mut want_closed = want;
        if self.now >= self.next_purge {
            want_closed.extend(self.purge());
            let delay = self.p.purge_delay;
            self.next_purge = Some(self.next_purge + delay)
                .filter(|&next| next > self.now)
                .unwrap_or(self.now + delay);
        }
        let got: BTreeSet<ConnId> = e.close.iter().copied().collect();
        assert_eq!(got, want_closed, "idle timeouts and purge");
        let qt = self.p.queue_timeout;
        let want: BTreeSet<Ticket> = self
            .tickets
            .iter()
            .filter(|(_, &(_, _, at))| at + qt <= self.now)
            .map(|(&t, _)| t)
            .collect();
        let got: BTreeSet<Ticket> = e.queue_timeouts.iter().copied().collect();
        assert_eq!(got, want, "queue timeouts");
        for t in &got {
            let (session, _, _) = self.tickets.remove(t).expect("known");
            self.remove(session, Outstanding::Queued(*t));
            self.queue_of.remove(t);
        }
        self.after_queue_change();
        self.poll();
    }

    /// One purge interval by the model: per server, the excess over the estimated need is halved
    /// (rounded up), closing the oldest `idle` connections, then the oldest `safe` ones. Returns
    /// the connections closed (already removed from the model).
    fn purge(&mut self) -> Vec<ConnId> {
        let mut closed = Vec::new();
        for i in 0..self.servers.len() {
            let server = ServerId(i as u32);
            let used = self.used_on(server);
            let mut shared: Vec<(bool, u64, ConnId)> = self
                .conns
                .iter()
                .filter(|(_, c)| c.server == server && c.user.is_none() && c.owner.is_none())
                .map(|(&id, c)| (c.served >= 2, c.released, id))
                .collect();
            // Unproven (`idle`) before proven (`safe`), each oldest released first.
            shared.sort();
            let m = &mut self.servers[i];
            let need = m.max_used.max(m.est_need);
            let excess = (used + shared.len()).saturating_sub(need);
            m.est_need = ((m.est_need + m.max_used) / 2).max(m.max_used);
            m.max_used = used;
            let kill = excess.div_ceil(2).min(shared.len());
            for &(_, _, id) in &shared[..kill] {
                self.conns.remove(&id);
                closed.push(id);
            }
        }
        closed
    }

    fn check(&self) {
        self.pool.check_invariants();
        let st = self.pool.stats();
        let in_use = self.conns.values().filter(|c| c.user.is_some()).count();
        assert_eq!(st.in_flight as usize, in_use, "requests in flight");
        assert_eq!(self.pool.queued(), self.tickets.len(), "queued requests");
        assert_eq!(st.new_conns, self.connects);
        assert_eq!(st.conns, self.conns.len());
        for (i, s) in st.servers.iter().enumerate() {
            let idle_here = |pred: &dyn Fn(&MConn) -> bool| {
                self.conns
                    .values()
                    .filter(|c| c.server.index() == i && c.user.is_none() && pred(c))
                    .count()
            };
            assert_eq!(
                s.private,
                idle_here(&|c| c.owner.is_some()),
                "server {i} private"
            );
            assert_eq!(
                s.idle,
                idle_here(&|c| c.owner.is_none() && c.served < 2),
                "server {i} idle"
            );
            assert_eq!(
                s.safe,
                idle_here(&|c| c.owner.is_none() && c.served >= 2),
                "server {i} safe"
            );
        }
        for (i, (s, m)) in st.servers.iter().zip(&self.servers).enumerate() {
            assert_eq!(
                s.connect_failures, m.failures,
                "server {i} connect failures"
            );
            assert_eq!(s.times_down, m.downs, "server {i} times down");
            assert_eq!(
                s.consecutive_failures, m.consecutive,
                "server {i} consecutive"
            );
            assert_eq!(
                self.pool.is_up(ServerId(i as u32), self.now),
                m.down_until.is_none_or(|until| self.now >= until),
                "server {i} up"
            );
        }
        if self.p.reuse == ReuseMode::Never {
            assert!(st.servers.iter().all(|s| s.idle == 0 && s.safe == 0));
        }
        assert!(self.decisions >= self.releases);
    }
}

fn req(session: u64, first: bool) -> RequestInfo {
    RequestInfo {
        session: SessionId(session),
        first,
        idempotent: true,
        multiplexed: false,
    }
}

fn run(limits: bool) {
    let modes = [
        ReuseMode::Never,
        ReuseMode::Safe,
        ReuseMode::Aggressive,
        ReuseMode::Always,
    ];
    for mode in modes {
        let mut private_cap_hits = 0;
        let (mut purged, mut downs, mut dry) = (0, 0, 0);
        for balance in [Balance::RoundRobin, Balance::LeastConn] {
            for seed in [0x9E37_79B9_7F4A_7C15, 0xD1B5_4A32_D192_ED03, 42] {
                let mut sim = Sim::new(mode, balance, limits, seed);
                for _ in 0..2500 {
                    sim.step();
                }
                let st = sim.pool.stats();
                assert!(st.requests > 300, "{mode:?}: the run exercised little");
                private_cap_hits += st.closed.private_cap;
                purged += st.closed.purged;
                downs += sim.servers.iter().map(|m| m.downs).sum::<u64>();
                dry += sim.servers.iter().map(|m| m.ran_dry).sum::<u64>();
                if mode != ReuseMode::Never {
                    assert!(st.reused > 0, "{mode:?}: nothing was reused");
                }
                if limits {
                    assert!(st.queue.total > 0, "{mode:?}: nothing was queued");
                }
            }
        }
        assert!(
            private_cap_hits > 0,
            "{mode:?}: the private cap was never hit"
        );
        assert!(downs > 0, "{mode:?}: no server was ever marked down");
        if mode != ReuseMode::Never {
            assert!(purged > 0, "{mode:?}: the purge never closed a connection");
        }
        if limits {
            assert!(dry > 0, "{mode:?}: conn_rate was never reached");
        }
    }
}

#[test]
fn model_without_limits() {
    run(false);
}

#[test]
fn model_with_maxconn_and_queues() {
    run(true);
}

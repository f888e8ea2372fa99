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
//! - `release`, `session_closed` and `expire` return exactly what the model predicts;
//! - the pool's per-server idle/safe/private counts equal the model's, requests in flight equal
//!   decisions minus releases, new connections equal the model's connects, and the pool's internal
//!   invariants hold (a connection is in at most one list, slot counts, limits).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{BackendPolicy, Balance, ReuseMode, ServerPolicy};

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pct(&mut self, p: u64) -> bool {
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
            p.maxconn = Some(5);
            p.queue_cap = Some(4);
        }
        p.servers = servers;
        p.reuse = mode;
        p.balance = balance;
        p.max_private_per_session = 2;
        p.max_idle_per_server = Some(6);
        p.max_reuse = Some(5);
        p.idle_timeout = Duration::from_secs(3);
        p.purge_delay = Duration::from_secs(100_000);
        p.queue_timeout = Duration::from_secs(2);
        p.fail_threshold = 3;
        p.down_for = Duration::from_secs(1);
        let now = Instant::now();
        Self {
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

    fn up(&self, server: ServerId) -> bool {
        self.pool.is_up(server, self.now) && self.p.servers[server.index()].weight > 0
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
        self.apply(session, first, a);
    }

    /// Checks a decision against the model and applies it.
    fn apply(&mut self, session: u64, first: bool, a: Acquire) {
        let mode = self.p.reuse;
        match a {
            Acquire::Reuse { server, conn } => {
                let c = self.conns.get(&conn).expect("reused conn is known");
                assert_eq!(c.user, None, "{conn} reused while in use");
                assert_eq!(c.server, server);
                assert!(
                    self.up(server) || c.owner.is_some(),
                    "reuse on a down server"
                );
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
            }
            Acquire::Connect { server } => {
                assert!(self.up(server), "connect to a down or drained server");
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
                            !(c.owner == Some(session) && self.up(c.server)),
                            "new connection while own private {id} was usable"
                        );
                    }
                }
                self.decisions += 1;
                if self.rng.pct(10) {
                    self.pool
                        .connect_failed(server, self.now)
                        .expect("attempt outstanding");
                    if self.rng.pct(70) {
                        let a = self.pool.retry(&req(session, first), server, self.now);
                        self.apply(session, first, a);
                    }
                    self.poll();
                } else {
                    self.next_conn += 1;
                    let conn = ConnId(self.next_conn);
                    self.pool
                        .connected(server, conn, SessionId(session), self.now)
                        .expect("attempt outstanding");
                    self.connects += 1;
                    self.conns.insert(
                        conn,
                        MConn {
                            server,
                            user: Some(session),
                            owner: None,
                            served: 1,
                            since: self.now,
                        },
                    );
                    self.add(session, Outstanding::Using(conn));
                }
            }
            Acquire::Queued(t) => {
                assert!(self.limits, "queued without limits");
                self.tickets.insert(t, (session, first, self.now));
                self.add(session, Outstanding::Queued(t));
            }
            Acquire::Unavailable(Unavailable::AllServersDown) => {
                let n = self.p.servers.len();
                assert!(
                    (0..n).all(|i| !self.up(ServerId(i as u32))),
                    "a server was up"
                );
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
        for (t, a) in self.pool.poll_queue(self.now) {
            assert!(!matches!(a, Acquire::Queued(_)));
            let (session, first, _) = self.tickets.remove(&t).expect("ticket known");
            self.remove(session, Outstanding::Queued(t));
            self.apply(session, first, a);
        }
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
        let shared = self
            .conns
            .values()
            .filter(|x| x.user.is_none() && x.owner.is_none() && x.server == c.server)
            .count();
        let full = self.p.max_idle_per_server.is_some_and(|m| shared >= m);
        (if full { Release::Close } else { Release::Keep }, owner)
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
                let c = self.conns.get_mut(&conn).expect("known");
                c.user = None;
                c.owner = owner;
                c.since = self.now;
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
        let got: BTreeSet<ConnId> = e.close.iter().copied().collect();
        assert_eq!(got, want, "idle timeouts");
        for c in &got {
            self.conns.remove(c);
        }
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
        }
        self.poll();
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
        for balance in [Balance::RoundRobin, Balance::LeastConn] {
            for seed in [0x9E37_79B9_7F4A_7C15, 0xD1B5_4A32_D192_ED03, 42] {
                let mut sim = Sim::new(mode, balance, limits, seed);
                for _ in 0..2500 {
                    sim.step();
                }
                let st = sim.pool.stats();
                assert!(st.requests > 300, "{mode:?}: the run exercised little");
                private_cap_hits += st.closed.private_cap;
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

//! Scenario tests of [`BackendPool`]: the reference counts, the mode rules, limits, queues, rate
//! limits, balancing, health, eviction and the engine protocol. Time is injected.

use std::time::{Duration, Instant};

use super::*;
use crate::config::{BackendPolicy, Balance, ReuseMode, ServerPolicy};

const MODES: [ReuseMode; 4] = [
    ReuseMode::Never,
    ReuseMode::Safe,
    ReuseMode::Aggressive,
    ReuseMode::Always,
];

fn policy(mode: ReuseMode, servers: usize) -> BackendPolicy {
    let mut p = BackendPolicy::new(vec![ServerPolicy::default(); servers]);
    p.reuse = mode;
    p
}

/// A pool with a clock and a connection-id counter.
struct H {
    pool: BackendPool,
    t0: Instant,
    now: Instant,
    next_conn: u64,
    connects: usize,
}

impl H {
    fn new(policy: BackendPolicy) -> Self {
        let t0 = Instant::now();
        Self {
            pool: BackendPool::new(policy, t0).expect("valid policy"),
            t0,
            now: t0,
            next_conn: 0,
            connects: 0,
        }
    }

    fn at_ms(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
    }

    fn acquire(&mut self, session: u64, first: bool) -> Acquire {
        let a = self.pool.acquire(&req(session, first), self.now);
        self.pool.check_invariants();
        a
    }

    /// Acquires and connects when told to: (server, conn, whether it is new).
    fn get(&mut self, session: u64, first: bool) -> (ServerId, ConnId, bool) {
        match self.acquire(session, first) {
            Acquire::Reuse { server, conn } => (server, conn, false),
            Acquire::Connect { server } => (server, self.connect(server, session), true),
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    fn connect(&mut self, server: ServerId, session: u64) -> ConnId {
        self.next_conn += 1;
        self.connects += 1;
        let conn = ConnId(self.next_conn);
        self.pool
            .connected(server, conn, SessionId(session), self.now)
            .expect("connect was decided");
        self.pool.check_invariants();
        conn
    }

    fn finish(&mut self, conn: ConnId, reusable: bool, private: bool) -> Release {
        let r = self
            .pool
            .release(conn, reusable, private, self.now)
            .expect("conn in use");
        self.pool.check_invariants();
        r
    }

    fn release(&mut self, conn: ConnId) -> Release {
        self.finish(conn, true, false)
    }

    fn close_session(&mut self, session: u64) -> Vec<ConnId> {
        let v = self.pool.session_closed(SessionId(session));
        self.pool.check_invariants();
        v
    }

    fn poll(&mut self) -> Vec<(Ticket, Acquire)> {
        let v = self.pool.poll_queue(self.now);
        self.pool.check_invariants();
        v
    }

    fn expire(&mut self) -> Expired {
        let e = self.pool.expire(self.now);
        self.pool.check_invariants();
        e
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

fn queued(a: Acquire) -> Ticket {
    match a {
        Acquire::Queued(t) => t,
        other => panic!("expected Queued, got {other:?}"),
    }
}

/// 20 requests on one client connection: backend connections opened.
fn one_session_20(mode: ReuseMode, servers: usize) -> usize {
    let mut h = H::new(policy(mode, servers));
    for i in 0..20 {
        let (_, conn, _) = h.get(1, i == 0);
        assert_eq!(h.release(conn), Release::Keep);
    }
    h.close_session(1);
    h.connects
}

/// 20 sequential client connections of one request each: backend connections opened, and
/// how many of them the pool kept at release (the rest it closed).
fn separate_sessions_20(h: &mut H, first_session: u64) -> (usize, usize) {
    let before = h.connects;
    let mut kept = 0;
    for s in first_session..first_session + 20 {
        let (_, conn, _) = h.get(s, true);
        if h.release(conn) == Release::Keep {
            kept += 1;
        }
        h.close_session(s);
    }
    (h.connects - before, kept)
}

// ---- the reference counts ----

#[test]
fn reference_counts_safe() {
    assert_eq!(one_session_20(ReuseMode::Safe, 1), 1);
    let mut h = H::new(policy(ReuseMode::Safe, 1));
    assert_eq!(separate_sessions_20(&mut h, 1), (20, 1));
    // First requests never reuse. One connection at a time was needed, so only the first is
    // kept idle; the others close at release as surplus (HAProxy's `srv_add_to_idle_list`).
    assert_eq!(h.pool.stats().servers[0].idle, 1);
    assert_eq!(h.pool.stats().servers[0].closed.surplus, 19);
}

#[test]
fn a_new_set_of_sessions_does_not_grow_the_pool() {
    // 10 sessions at once, several requests each; then 10 new sessions: their first requests
    // open connections (safe), which close as surplus, and their later requests reuse the
    // first set's. 10 connections in the pool at the end, as HAProxy keeps.
    let mut h = H::new(policy(ReuseMode::Safe, 1));
    for set in 0..2u64 {
        let sessions: Vec<u64> = (set * 10..set * 10 + 10).collect();
        for round in 0..3 {
            let conns: Vec<ConnId> = sessions.iter().map(|&s| h.get(s, round == 0).1).collect();
            // Ten were needed at once, so each is kept, except the second set's first
            // connections: the first set's ten are idle, so these are surplus.
            let want = if set == 1 && round == 0 {
                Release::Close
            } else {
                Release::Keep
            };
            for c in conns {
                assert_eq!(h.release(c), want, "set {set} round {round}");
            }
        }
        for &s in &sessions {
            h.close_session(s);
        }
    }
    let st = h.pool.stats();
    assert_eq!(st.servers[0].idle + st.servers[0].safe, 10, "{st:?}");
    assert_eq!(h.connects, 20);
    assert_eq!(st.servers[0].closed.surplus, 10);
}

#[test]
fn reference_counts_aggressive() {
    assert_eq!(one_session_20(ReuseMode::Aggressive, 1), 1);
    // From cold no connection ever serves two requests, so none is proven.
    let mut cold = H::new(policy(ReuseMode::Aggressive, 1));
    assert_eq!(separate_sessions_20(&mut cold, 1), (20, 1));
    // Once a proven connection exists: 0 new ones.
    let mut h = H::new(policy(ReuseMode::Aggressive, 1));
    for i in 0..2 {
        let (_, c, _) = h.get(1, i == 0);
        assert_eq!(h.release(c), Release::Keep);
    }
    h.close_session(1);
    assert_eq!(h.pool.stats().servers[0].safe, 1);
    assert_eq!(separate_sessions_20(&mut h, 100), (0, 20));
}

#[test]
fn reference_counts_always() {
    assert_eq!(one_session_20(ReuseMode::Always, 1), 1);
    let mut h = H::new(policy(ReuseMode::Always, 1));
    assert_eq!(separate_sessions_20(&mut h, 1), (1, 20));
}

#[test]
fn reference_counts_never() {
    assert_eq!(one_session_20(ReuseMode::Never, 1), 1);
    let mut h = H::new(policy(ReuseMode::Never, 1));
    let before = h.connects;
    for s in 1..=20 {
        let (_, conn, _) = h.get(s, true);
        assert_eq!(h.release(conn), Release::Keep);
        // The session's keep-alive connection dies with it.
        assert_eq!(h.close_session(s), vec![conn]);
    }
    assert_eq!(h.connects - before, 20);
    assert_eq!(h.pool.stats().conns, 0);
}

#[test]
fn affinity_keeps_one_backend_connection_over_several_servers() {
    for mode in MODES {
        assert_eq!(one_session_20(mode, 3), 1, "{mode:?}");
    }
}

// ---- the first-request rule ----

/// Sets up one idle (served 1) connection `c2` and one safe (served 2) connection `c1`.
fn idle_and_safe(mode: ReuseMode) -> (H, ConnId, ConnId) {
    let mut h = H::new(policy(mode, 1));
    let (_, c1, _) = h.get(1, true);
    let (_, c2, new) = h.get(2, true);
    assert!(new);
    assert_eq!(h.release(c1), Release::Keep);
    assert_eq!(h.release(c2), Release::Keep);
    let (_, again, _) = h.get(1, false);
    assert_eq!(again, c1, "affinity");
    assert_eq!(h.release(c1), Release::Keep);
    h.close_session(1);
    h.close_session(2);
    let st = h.pool.stats();
    assert_eq!((st.servers[0].idle, st.servers[0].safe), (1, 1));
    (h, c1, c2)
}

#[test]
fn safe_first_request_never_takes_another_sessions_connection() {
    let (mut h, c1, c2) = idle_and_safe(ReuseMode::Safe);
    let (_, c, new) = h.get(10, true);
    assert!(new && c != c1 && c != c2);
    // A later request of the same kind of session may: idle first, then safe.
    assert_eq!(h.get(11, false).1, c2);
    assert_eq!(h.get(12, false).1, c1);
}

#[test]
fn aggressive_first_request_takes_proven_not_unproven() {
    let (mut h, c1, c2) = idle_and_safe(ReuseMode::Aggressive);
    assert_eq!(h.get(10, true).1, c1);
    let (_, c, new) = h.get(11, true);
    assert!(
        new && c != c2,
        "the unproven connection is not for first requests"
    );
    assert_eq!(h.get(12, false).1, c2);
}

#[test]
fn always_first_request_takes_safe_then_idle() {
    let (mut h, c1, c2) = idle_and_safe(ReuseMode::Always);
    assert_eq!(h.get(10, true).1, c1);
    assert_eq!(h.get(11, true).1, c2);
    assert!(h.get(12, true).2);
}

#[test]
fn later_requests_prefer_idle_to_safe() {
    for mode in [ReuseMode::Safe, ReuseMode::Aggressive, ReuseMode::Always] {
        let (mut h, c1, c2) = idle_and_safe(mode);
        assert_eq!(h.get(10, false).1, c2, "{mode:?}");
        assert_eq!(h.get(11, false).1, c1, "{mode:?}");
    }
}

// ---- private connections ----

#[test]
fn ntlm_private_connection_only_serves_its_session() {
    for mode in MODES {
        let mut h = H::new(policy(mode, 1));
        let (_, c1, _) = h.get(1, true);
        assert_eq!(h.finish(c1, true, true), Release::Keep);
        assert_eq!(h.pool.stats().servers[0].private, 1);
        for other in 2..5 {
            let (_, c, new) = h.get(other, other % 2 == 0);
            assert!(
                new && c != c1,
                "{mode:?}: private conn served to another session"
            );
        }
        // Its owner gets it back, even as a first request, and it stays private.
        assert_eq!(h.get(1, true).1, c1, "{mode:?}");
        assert_eq!(h.finish(c1, true, false), Release::Keep);
        assert_eq!(h.pool.stats().servers[0].private, 1);
        assert_eq!(h.close_session(1), vec![c1], "{mode:?}");
    }
}

#[test]
fn private_cap_per_session() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.max_private_per_session = 2;
    let mut h = H::new(p);
    let conns: Vec<_> = (0..3).map(|_| h.get(1, false).1).collect();
    assert_eq!(h.finish(conns[0], true, true), Release::Keep);
    assert_eq!(h.finish(conns[1], true, true), Release::Keep);
    assert_eq!(h.finish(conns[2], true, true), Release::Close);
    assert_eq!(h.pool.stats().closed.private_cap, 1);
    let mut closed = h.close_session(1);
    closed.sort();
    assert_eq!(closed, vec![conns[0], conns[1]]);
}

#[test]
fn never_mode_connections_are_private_and_closed_with_the_session() {
    let mut h = H::new(policy(ReuseMode::Never, 1));
    let (_, c1, _) = h.get(1, true);
    assert_eq!(h.release(c1), Release::Keep);
    let (_, c2, new) = h.get(2, false);
    assert!(new && c2 != c1);
    assert_eq!(h.release(c2), Release::Keep);
    assert_eq!(h.get(1, false).1, c1);
    // The session ends while its request is in flight: the connection is closed on release.
    assert!(h.close_session(1).is_empty());
    assert_eq!(h.release(c1), Release::Close);
    assert_eq!(h.pool.stats().sessions, 1);
    assert_eq!(h.close_session(2), vec![c2]);
    assert_eq!(h.pool.stats().sessions, 0);
}

// ---- maxconn, queues ----

#[test]
fn server_maxconn_queues_and_caps() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].maxconn = Some(2);
    p.queue_cap = Some(1);
    p.queue_timeout = Duration::from_secs(2);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    let (_, _b, _) = h.get(2, true);
    let t = queued(h.acquire(3, false));
    assert_eq!(
        h.acquire(4, false),
        Acquire::Unavailable(Unavailable::QueueFull)
    );
    assert!(h.poll().is_empty());
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(
        h.poll(),
        vec![(
            t,
            Acquire::Reuse {
                server: ServerId(0),
                conn: a
            }
        )]
    );
    let st = h.pool.stats();
    assert_eq!((st.queue.current, st.queue.max, st.queue.total), (0, 1, 1));
    assert_eq!((st.queue_full, st.in_flight), (1, 2));

    // timeout queue
    let t5 = queued(h.acquire(5, true));
    assert_eq!(h.pool.next_deadline(), Some(h.now + Duration::from_secs(2)));
    h.at_ms(1999);
    assert!(h.expire().queue_timeouts.is_empty());
    h.at_ms(2000);
    assert_eq!(h.expire().queue_timeouts, vec![t5]);
    assert_eq!(h.pool.stats().queue.timeouts, 1);

    // cancel
    let t6 = queued(h.acquire(6, true));
    assert!(h.pool.cancel(t6));
    assert!(!h.pool.cancel(t6));
    assert_eq!(h.release(a), Release::Keep);
    assert!(h.poll().is_empty());
    assert_eq!(h.pool.queued(), 0);
}

#[test]
fn queue_is_fifo_and_new_requests_wait_behind_it() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].maxconn = Some(1);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, false);
    let t2 = queued(h.acquire(2, false));
    let t3 = queued(h.acquire(3, false));
    assert_eq!(h.release(a), Release::Keep);
    // A new request that could reuse the idle connection still waits behind the queue.
    let t4 = queued(h.acquire(4, false));
    let got = h.poll();
    assert_eq!(
        got,
        vec![(
            t2,
            Acquire::Reuse {
                server: ServerId(0),
                conn: a
            }
        )]
    );
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.poll()[0].0, t3);
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.poll()[0].0, t4);
}

#[test]
fn backend_maxconn_caps_all_servers() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.maxconn = Some(2);
    let mut h = H::new(p);
    let (s1, a, _) = h.get(1, true);
    let (s2, _, _) = h.get(2, true);
    assert_ne!(s1, s2);
    let t = queued(h.acquire(3, true));
    let _ = h.finish(a, false, false);
    assert_eq!(h.poll(), vec![(t, Acquire::Connect { server: s1 })]);
    assert_eq!(h.pool.in_flight(), 2);
}

#[test]
fn private_connection_waits_in_its_server_queue() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.servers[0].maxconn = Some(1);
    p.servers[1].maxconn = Some(1);
    let mut h = H::new(p);
    // Session 1 owns a private (NTLM) connection on server 0.
    let (s0, c1, _) = h.get(1, true);
    let _ = h.finish(c1, true, true);
    // Session 2 fills server 0 (round-robin gave session 1 server 0, now server 1, then 0).
    let (s_b, b, _) = h.get(2, true);
    assert_ne!(s_b, s0);
    let (s_c, c, _) = h.get(3, true);
    assert_eq!(s_c, s0);
    // Session 1's request waits for server 0, not for any server.
    let t = queued(h.acquire(1, false));
    assert_eq!(h.pool.stats().servers[0].queue.current, 1);
    assert_eq!(h.pool.stats().queue.current, 0);
    // Server 1 frees up: session 1 still waits for its own server.
    assert_eq!(h.release(b), Release::Keep);
    assert!(h.poll().is_empty());
    assert_eq!(h.release(c), Release::Keep);
    assert_eq!(
        h.poll(),
        vec![(
            t,
            Acquire::Reuse {
                server: s0,
                conn: c1
            }
        )]
    );
}

#[test]
fn full_server_queue_redispatches() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.servers[0].maxconn = Some(1);
    p.servers[0].maxqueue = Some(0);
    let mut h = H::new(p);
    let (s0, c1, _) = h.get(1, true);
    let _ = h.finish(c1, true, true);
    let _ = h.get(2, true); // server 1
    let (s, _, _) = h.get(3, true);
    assert_eq!(s, s0);
    // Server 0 is full and its queue takes no one: a new connection on server 1.
    assert_eq!(
        h.acquire(1, false),
        Acquire::Connect {
            server: ServerId(1)
        }
    );
}

// ---- connection-rate limit ----

#[test]
fn conn_rate_makes_requests_wait_not_fail() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].conn_rate = Some(2);
    p.queue_timeout = Duration::from_secs(10);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    let (_, _, _) = h.get(2, true);
    let t = queued(h.acquire(3, true));
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.t0 + Duration::from_millis(500))
    );
    h.at_ms(400);
    assert!(h.poll().is_empty());
    // Reuse needs no token: a later request reuses once the queue is empty again.
    h.at_ms(1000);
    assert_eq!(
        h.poll(),
        vec![(
            t,
            Acquire::Connect {
                server: ServerId(0)
            }
        )]
    );
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(
        h.acquire(4, false),
        Acquire::Reuse {
            server: ServerId(0),
            conn: a
        }
    );
}

#[test]
fn rate_limited_server_prefers_reuse_then_other_servers() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.servers[0].conn_rate = Some(1);
    let mut h = H::new(p);
    let (s0, a, _) = h.get(1, true);
    assert_eq!(s0, ServerId(0));
    let (s1, b, _) = h.get(2, true);
    assert_eq!(s1, ServerId(1));
    // Round-robin picks server 0 again, which is out of tokens: connect to server 1.
    assert_eq!(
        h.acquire(3, true),
        Acquire::Connect {
            server: ServerId(1)
        }
    );
    let _ = h.pool.connect_aborted(ServerId(1));
    // With an idle connection on server 1, a later request reuses it instead.
    assert_eq!(h.release(b), Release::Keep);
    assert_eq!(h.release(a), Release::Keep); // server 0 has one too; RR is at server 1 now
    assert!(matches!(h.acquire(4, false), Acquire::Reuse { .. }));
}

// ---- balancing ----

#[test]
fn weighted_round_robin_distribution() {
    let mut p = policy(ReuseMode::Safe, 3);
    p.servers[0].weight = 5;
    p.servers[1].weight = 3;
    p.servers[2].weight = 2;
    let mut h = H::new(p);
    let mut count = [0; 3];
    for s in 0..1000 {
        let (server, conn, new) = h.get(s, true);
        assert!(new);
        count[server.index()] += 1;
        let _ = h.finish(conn, false, false);
        h.close_session(s);
    }
    assert_eq!(count, [500, 300, 200]);
}

#[test]
fn leastconn_picks_least_loaded() {
    let mut p = policy(ReuseMode::Safe, 3);
    p.balance = Balance::LeastConn;
    let mut h = H::new(p);
    let a = h.get(1, true);
    let b = h.get(2, true);
    let c = h.get(3, true);
    let mut servers = [a.0, b.0, c.0];
    servers.sort();
    assert_eq!(servers, [ServerId(0), ServerId(1), ServerId(2)]);
    let _ = h.finish(b.1, false, false);
    assert_eq!(h.get(4, true).0, b.0);
    assert_eq!(h.pool.stats().servers[b.0.index()].in_flight, 1);
}

#[test]
fn down_servers_are_skipped() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.fail_threshold = 1;
    p.down_for = Duration::from_secs(10);
    let mut h = H::new(p);
    assert_eq!(
        h.acquire(1, true),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    assert_eq!(h.pool.connect_failed(ServerId(0), h.now), Ok(true));
    for s in 2..6 {
        let (server, conn, _) = h.get(s, true);
        assert_eq!(server, ServerId(1));
        let _ = h.finish(conn, false, false);
    }
    assert_eq!(
        h.acquire(9, true),
        Acquire::Connect {
            server: ServerId(1)
        }
    );
    assert_eq!(h.pool.connect_failed(ServerId(1), h.now), Ok(true));
    assert_eq!(
        h.acquire(10, true),
        Acquire::Unavailable(Unavailable::AllServersDown)
    );
    assert_eq!(h.pool.stats().all_down, 1);
    h.at_ms(10_000);
    assert!(h.pool.is_up(ServerId(0), h.now));
    assert!(matches!(h.acquire(11, true), Acquire::Connect { .. }));
}

// ---- passive health and retries ----

#[test]
fn health_threshold_and_retry_on_another_server() {
    let mut p = policy(ReuseMode::Safe, 2);
    p.fail_threshold = 2;
    p.down_for = Duration::from_secs(5);
    let mut h = H::new(p);
    let r = req(1, true);
    assert_eq!(
        h.pool.acquire(&r, h.now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    assert_eq!(h.pool.connect_failed(ServerId(0), h.now), Ok(false));
    // The retry prefers the other server.
    assert_eq!(
        h.pool.retry(&r, ServerId(0), h.now),
        Acquire::Connect {
            server: ServerId(1)
        }
    );
    assert_eq!(h.pool.connect_failed(ServerId(1), h.now), Ok(false));
    assert_eq!(
        h.pool.retry(&r, ServerId(1), h.now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    assert_eq!(h.pool.connect_failed(ServerId(0), h.now), Ok(true));
    assert!(!h.pool.is_up(ServerId(0), h.now));
    let st = h.pool.stats();
    assert_eq!(
        (st.servers[0].connect_failures, st.servers[0].times_down),
        (2, 1)
    );
    assert_eq!(st.in_flight, 0);
    // Only server 1 is left, even when avoided.
    assert_eq!(
        h.pool.retry(&r, ServerId(1), h.now),
        Acquire::Connect {
            server: ServerId(1)
        }
    );
    // A success resets server 1's count.
    let _ = h.connect(ServerId(1), 1);
    assert_eq!(h.pool.stats().servers[1].consecutive_failures, 0);
    h.at_ms(5000);
    assert!(h.pool.is_up(ServerId(0), h.now));
    h.pool.check_invariants();
}

#[test]
fn queued_requests_fail_when_every_server_goes_down() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].maxconn = Some(1);
    p.fail_threshold = 1;
    let mut h = H::new(p);
    assert!(matches!(h.acquire(1, true), Acquire::Connect { .. }));
    let t = queued(h.acquire(2, true));
    assert_eq!(h.pool.connect_failed(ServerId(0), h.now), Ok(true));
    assert_eq!(
        h.poll(),
        vec![(t, Acquire::Unavailable(Unavailable::AllServersDown))]
    );
}

// ---- eviction ----

#[test]
fn idle_timeout_closes_old_connections() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.idle_timeout = Duration::from_secs(30);
    p.purge_delay = Duration::from_secs(3600);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    let (_, b, _) = h.get(2, true);
    assert_eq!(h.release(a), Release::Keep);
    h.at_ms(1000);
    assert_eq!(h.release(b), Release::Keep);
    assert_eq!(h.pool.next_deadline(), Some(h.t0 + Duration::from_secs(30)));
    h.at_ms(29_999);
    assert!(h.expire().close.is_empty());
    h.at_ms(30_000);
    assert_eq!(h.expire().close, vec![a]);
    h.at_ms(31_000);
    assert_eq!(h.expire().close, vec![b]);
    assert_eq!(h.pool.stats().closed.idle_timeout, 2);
    // Private connections time out too, and leave their session's list.
    let (_, c, _) = h.get(3, true);
    let _ = h.finish(c, true, true);
    h.at_ms(61_000);
    assert_eq!(h.expire().close, vec![c]);
    assert!(h.close_session(3).is_empty());
}

#[test]
fn purge_closes_half_of_the_excess_each_interval() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.idle_timeout = Duration::from_secs(3600);
    p.purge_delay = Duration::from_secs(5);
    let mut h = H::new(p);
    let conns: Vec<_> = (0..10).map(|s| h.get(s, true).1).collect();
    for (i, &c) in conns.iter().enumerate() {
        h.at_ms(i as u64);
        assert_eq!(h.release(c), Release::Keep);
    }
    let mut closed_per_tick = Vec::new();
    for tick in 1..=8 {
        h.at_ms(5000 * tick);
        assert_eq!(
            h.pool.next_deadline().is_some(),
            h.pool.stats().servers[0].idle > 0
        );
        closed_per_tick.push(h.expire().close);
    }
    let counts: Vec<_> = closed_per_tick.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![0, 0, 3, 3, 2, 1, 1, 0]);
    // Oldest first.
    assert_eq!(closed_per_tick[2], conns[0..3].to_vec());
    assert_eq!(h.pool.stats().closed.purged, 10);
}

#[test]
fn max_reuse_closes_after_n_requests() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.max_reuse = Some(3);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.get(1, false).1, a);
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.get(1, false).1, a);
    assert_eq!(h.release(a), Release::Close);
    assert!(h.get(1, false).2);
    assert_eq!(h.pool.stats().closed.max_reuse, 1);
}

#[test]
fn max_idle_per_server_limits_the_pool() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.max_idle_per_server = Some(1);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    let (_, b, _) = h.get(2, true);
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.release(b), Release::Close);
    let mut p = policy(ReuseMode::Safe, 1);
    p.max_idle_per_server = Some(0);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    assert_eq!(h.release(a), Release::Close);
    assert_eq!(h.pool.stats().closed.pool_full, 1);
    // Private connections are bounded per session instead.
    let (_, b, _) = h.get(1, false);
    assert_eq!(h.finish(b, true, true), Release::Keep);
}

#[test]
fn not_reusable_is_closed() {
    let mut h = H::new(policy(ReuseMode::Always, 1));
    let (_, a, _) = h.get(1, true);
    assert_eq!(h.finish(a, false, false), Release::Close);
    assert_eq!(h.pool.stats().conns, 0);
}

// ---- engine protocol ----

#[test]
fn conn_closed_frees_slots_and_lists() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].maxconn = Some(1);
    let mut h = H::new(p);
    let (_, a, _) = h.get(1, true);
    let t = queued(h.acquire(2, true));
    assert!(h.pool.conn_closed(a));
    assert!(!h.pool.conn_closed(a));
    assert_eq!(
        h.poll(),
        vec![(
            t,
            Acquire::Connect {
                server: ServerId(0)
            }
        )]
    );
    let b = h.connect(ServerId(0), 2);
    assert_eq!(h.release(b), Release::Keep);
    assert!(h.pool.conn_closed(b));
    assert_eq!(h.pool.stats().servers[0].idle, 0);
    assert!(h.get(3, false).2);
    h.pool.check_invariants();
}

#[test]
fn protocol_errors_leave_state_unchanged() {
    let mut h = H::new(policy(ReuseMode::Safe, 1));
    let now = h.now;
    assert_eq!(
        h.pool.connected(ServerId(0), ConnId(1), SessionId(1), now),
        Err(PoolError::NoPendingConnect(ServerId(0)))
    );
    assert_eq!(
        h.pool.connected(ServerId(7), ConnId(1), SessionId(1), now),
        Err(PoolError::UnknownServer(ServerId(7)))
    );
    assert_eq!(
        h.pool.connect_failed(ServerId(0), now),
        Err(PoolError::NoPendingConnect(ServerId(0)))
    );
    assert_eq!(
        h.pool.release(ConnId(1), true, false, now),
        Err(PoolError::UnknownConn(ConnId(1)))
    );
    let (_, a, _) = h.get(1, true);
    assert!(matches!(h.acquire(2, true), Acquire::Connect { .. }));
    assert_eq!(
        h.pool.connected(ServerId(0), a, SessionId(2), now),
        Err(PoolError::DuplicateConn(a))
    );
    assert_eq!(h.pool.connect_aborted(ServerId(0)), Ok(()));
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(
        h.pool.release(a, true, false, now),
        Err(PoolError::ConnNotInUse(a))
    );
    h.pool.check_invariants();
    assert_eq!(h.pool.in_flight(), 0);
}

#[test]
fn session_records_are_dropped() {
    let mut h = H::new(policy(ReuseMode::Safe, 1));
    let (_, a, _) = h.get(1, true);
    assert_eq!(h.pool.stats().sessions, 1);
    assert!(h.close_session(1).is_empty());
    assert_eq!(
        h.pool.stats().sessions,
        1,
        "kept while its request is in flight"
    );
    // A shared connection of a closed session still goes back to the lists.
    assert_eq!(h.release(a), Release::Keep);
    assert_eq!(h.pool.stats().sessions, 0);
    assert_eq!(h.pool.stats().servers[0].idle, 1);
}

#[test]
fn stats_count_reuse() {
    let mut h = H::new(policy(ReuseMode::Safe, 1));
    for i in 0..4 {
        let (_, c, _) = h.get(1, i == 0);
        assert_eq!(h.release(c), Release::Keep);
    }
    let st = h.pool.stats();
    assert_eq!((st.requests, st.new_conns, st.reused), (4, 1, 3));
    assert_eq!(st.reuse_ratio(), Some(0.75));
    assert_eq!((st.servers[0].safe, st.servers[0].idle), (1, 0));
}

#[test]
fn new_rejects_bad_policies() {
    let t0 = Instant::now();
    let err = BackendPool::new(BackendPolicy::new(vec![]), t0).map(|_| ());
    assert_eq!(err, Err(PolicyError::NoServers));
}

// ---- tunnels ----

#[test]
fn a_tunnel_keeps_its_slot_without_a_record_until_it_closes() {
    let mut p = policy(ReuseMode::Safe, 1);
    p.servers[0].maxconn = Some(1);
    p.queue_cap = Some(4);
    let mut h = H::new(p);
    let (server, conn, _) = h.get(1, true);
    assert_eq!(h.pool.tunnel_started(conn), Some(server));
    h.pool.check_invariants();
    // The record is gone (a close of that id means nothing now), the slot is not.
    assert!(!h.pool.conn_closed(conn));
    let st = h.pool.stats();
    assert_eq!((st.in_flight, st.servers[0].tunnels), (1, 1));
    // The session's close finds no private connection and leaves the slot alone.
    assert!(h.close_session(1).is_empty());
    let t = queued(h.acquire(2, true));
    assert!(h.poll().is_empty(), "maxconn counts the tunnel");
    assert!(h.pool.tunnel_closed(server));
    h.pool.check_invariants();
    assert_eq!(
        h.poll(),
        vec![(
            t,
            Acquire::Connect {
                server: ServerId(0)
            }
        )]
    );
    assert!(!h.pool.tunnel_closed(server), "one close per tunnel");
    // Only an HTTP/1 connection in use becomes a tunnel.
    assert_eq!(h.pool.tunnel_started(ConnId(999)), None);
}

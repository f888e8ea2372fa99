//! Model-based test of multiplexed (HTTP/2) backend connections.
//!
//! A deterministic pseudo-random sequence (xorshift64) of the events the proxy reports drives a
//! [`BackendPool`] in each shared reuse mode over two servers: h2 clients' streams and HTTP/1
//! requests asking for connections; connects that end in an h2 connection of a random capacity
//! (other streams waiting for it join, as the proxy's starting-connection waiters do), in an
//! HTTP/1 connection (an `auto` server that spoke HTTP/1.1), or are abandoned; streams ending
//! (sometimes leaving the connection unusable); the backend's SETTINGS changing a connection's
//! capacity (to 0 too); GOAWAY draining it; the backend closing it; sessions closing; time
//! passing with the purge. After every event:
//! - a stream joins an h2 connection only below its current capacity and never a draining one;
//!   an HTTP/1 request never takes an h2 connection, and an HTTP/1 connection is handed out only
//!   idle;
//! - in `safe` an h2 connection carries the streams of one session at a time; in `aggressive`
//!   and `always` a new connection is asked for only when the server has no connection with a
//!   free stream and no idle one;
//! - a release keeps a connection that still carries streams, closes a draining one (or one
//!   whose peer now allows no stream) at its last stream; `drain` and a capacity of 0 close
//!   only an idle connection, and `expire` closes only idle ones;
//! - requests in flight equal streams plus pending connects, and each server's stream count
//!   equals the model's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{BackendPolicy, ReuseMode, ServerPolicy};

use super::model_tests::Rng;

/// The model's record of one backend connection.
#[derive(Debug, Clone)]
struct MConn {
    server: ServerId,
    /// An h2 connection (else HTTP/1.1: one request at a time).
    mux: bool,
    capacity: u32,
    draining: bool,
    /// The session of each request or stream it carries now.
    streams: Vec<u64>,
}

impl MConn {
    fn has_room(&self) -> bool {
        if self.mux {
            !self.draining && (self.streams.len() as u32) < self.capacity
        } else {
            self.streams.is_empty()
        }
    }
}

/// A request told to connect, waiting for the outcome.
#[derive(Debug, Clone, Copy)]
struct Pending {
    session: u64,
    server: ServerId,
    multiplexed: bool,
}

/// Counts of what the run exercised.
#[derive(Debug, Default)]
struct Seen {
    joins: u64,
    reused_streams: u64,
    capacity_zero_idle: u64,
    drains: u64,
    fallbacks: u64,
}

struct Sim {
    pool: BackendPool,
    mode: ReuseMode,
    rng: Rng,
    now: Instant,
    conns: BTreeMap<ConnId, MConn>,
    pending: Vec<Pending>,
    /// Open sessions: whether each is an h2 client.
    sessions: BTreeMap<u64, bool>,
    next_session: u64,
    next_conn: u64,
    seen: Seen,
}

impl Sim {
    fn new(mode: ReuseMode, seed: u64) -> Sim {
        let mut p = BackendPolicy::new(vec![ServerPolicy::default(), ServerPolicy::default()]);
        p.reuse = mode;
        let now = Instant::now();
        let mut sim = Sim {
            pool: BackendPool::new(p, now).expect("valid policy"),
            mode,
            rng: Rng(seed),
            now,
            conns: BTreeMap::new(),
            pending: Vec::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            next_conn: 1,
            seen: Seen::default(),
        };
        for _ in 0..6 {
            sim.open_session();
        }
        sim
    }

    fn shares(&self) -> bool {
        matches!(self.mode, ReuseMode::Aggressive | ReuseMode::Always)
    }

    fn open_session(&mut self) {
        let h2 = self.rng.pct(75);
        self.sessions.insert(self.next_session, h2);
        self.next_session += 1;
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())])
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=34 => self.request(),
            35..=54 => self.resolve_connect(),
            55..=79 => self.end_stream(),
            80..=84 => self.change_capacity(),
            85..=88 => self.goaway(),
            89..=91 => self.backend_closes(),
            92..=95 => self.close_session(),
            _ => self.time_passes(),
        }
        self.check();
    }

    fn request(&mut self) {
        let sessions: Vec<(u64, bool)> = self.sessions.iter().map(|(&s, &h)| (s, h)).collect();
        let Some((session, h2)) = self.pick(&sessions) else {
            return;
        };
        // An h2 client's streams never count as "first"; an HTTP/1 client's first request does.
        let req = RequestInfo {
            session: SessionId(session),
            first: !h2 && self.rng.pct(30),
            idempotent: true,
            multiplexed: h2,
        };
        match self.pool.acquire(&req, self.now) {
            Acquire::Reuse { server, conn } => {
                let shares = self.shares();
                let c = self
                    .conns
                    .get_mut(&conn)
                    .unwrap_or_else(|| panic!("reused {conn:?}, which the model does not know"));
                assert_eq!(c.server, server);
                assert!(
                    h2 || !c.mux,
                    "an HTTP/1 request took h2 connection {conn:?}"
                );
                assert!(c.has_room(), "{conn:?} handed out without room: {c:?}");
                if c.mux && !shares {
                    assert!(
                        c.streams.iter().all(|&s| s == session),
                        "safe: session {session} joined {conn:?} carrying {:?}",
                        c.streams
                    );
                }
                if c.mux && !c.streams.is_empty() {
                    self.seen.reused_streams += 1;
                }
                c.streams.push(session);
            }
            Acquire::Connect { server } => {
                if h2 && self.shares() {
                    let usable = self.conns.iter().find(|(_, c)| {
                        c.server == server && c.has_room() && (c.mux || !c.draining)
                    });
                    assert!(
                        usable.is_none(),
                        "a connection was asked for while {usable:?} could take the stream"
                    );
                }
                self.pending.push(Pending {
                    session,
                    server,
                    multiplexed: h2,
                });
            }
            other => panic!("without limits every request goes: {other:?}"),
        }
    }

    /// The oldest pending connect of a random server ends.
    fn resolve_connect(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let i = self.rng.below(self.pending.len());
        let p = self.pending.remove(i);
        if self.rng.pct(10) {
            self.pool.connect_aborted(p.server).expect("pending");
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let session = SessionId(p.session);
        if p.multiplexed && self.rng.pct(85) {
            let capacity = 1 + self.rng.below(4) as u32;
            self.pool
                .connected_mux(p.server, conn, session, capacity, self.now)
                .expect("pending");
            self.conns.insert(
                conn,
                MConn {
                    server: p.server,
                    mux: true,
                    capacity,
                    draining: false,
                    streams: vec![p.session],
                },
            );
            // Streams that waited for this connection join it while it has room: in `safe`
            // only the opener's session's.
            let shares = self.shares();
            let mut k = 0;
            while k < self.pending.len() {
                let w = self.pending[k];
                let c = &self.conns[&conn];
                let fits = w.multiplexed
                    && w.server == p.server
                    && c.has_room()
                    && (shares || w.session == p.session);
                if fits && self.rng.pct(80) {
                    self.pool.join(conn).expect("room to join");
                    self.pending.remove(k);
                    self.conns.get_mut(&conn).unwrap().streams.push(w.session);
                    self.seen.joins += 1;
                } else {
                    k += 1;
                }
            }
        } else {
            if p.multiplexed {
                self.seen.fallbacks += 1;
            }
            self.pool
                .connected(p.server, conn, session, self.now)
                .expect("pending");
            self.conns.insert(
                conn,
                MConn {
                    server: p.server,
                    mux: false,
                    capacity: 1,
                    draining: false,
                    streams: vec![p.session],
                },
            );
        }
    }

    fn end_stream(&mut self) {
        let busy: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.streams.is_empty())
            .map(|(&id, _)| id)
            .collect();
        let Some(conn) = self.pick(&busy) else {
            return;
        };
        let reusable = self.rng.pct(95);
        let got = self
            .pool
            .release(conn, reusable, false, self.now)
            .expect("in use");
        let c = self.conns.get_mut(&conn).unwrap();
        let i = self.rng.below(c.streams.len());
        c.streams.swap_remove(i);
        if c.mux {
            c.draining |= !reusable;
            if !c.streams.is_empty() {
                assert_eq!(got, Release::Keep, "{conn:?} closed while carrying {c:?}");
                return;
            }
            if c.draining || c.capacity == 0 {
                assert_eq!(got, Release::Close, "{c:?} kept at its last stream");
            }
        } else if !reusable {
            assert_eq!(got, Release::Close);
        }
        if got == Release::Close {
            self.conns.remove(&conn);
        }
    }

    fn mux_conns(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.mux)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The backend's SETTINGS change a connection's stream limit (0 included).
    fn change_capacity(&mut self) {
        let mux = self.mux_conns();
        let Some(conn) = self.pick(&mux) else {
            return;
        };
        let capacity = self.rng.below(5) as u32;
        let close = self.pool.set_capacity(conn, capacity);
        let c = self.conns.get_mut(&conn).unwrap();
        let idle_and_closed = capacity == 0 && c.streams.is_empty();
        assert_eq!(close, idle_and_closed, "capacity {capacity} on {c:?}");
        if close {
            self.seen.capacity_zero_idle += 1;
            self.conns.remove(&conn);
        } else {
            c.capacity = capacity;
        }
    }

    fn goaway(&mut self) {
        let mux = self.mux_conns();
        let Some(conn) = self.pick(&mux) else {
            return;
        };
        let close = self.pool.drain(conn);
        self.seen.drains += 1;
        let c = self.conns.get_mut(&conn).unwrap();
        assert_eq!(close, c.streams.is_empty(), "drain of {c:?}");
        if close {
            self.conns.remove(&conn);
        } else {
            c.draining = true;
        }
    }

    fn backend_closes(&mut self) {
        let all: Vec<ConnId> = self.conns.keys().copied().collect();
        let Some(conn) = self.pick(&all) else {
            return;
        };
        assert!(self.pool.conn_closed(conn));
        self.conns.remove(&conn);
    }

    /// A session without pending connects closes (its running streams go on); a new one opens.
    fn close_session(&mut self) {
        let idle: Vec<u64> = self
            .sessions
            .keys()
            .copied()
            .filter(|s| self.pending.iter().all(|p| p.session != *s))
            .collect();
        let Some(session) = self.pick(&idle) else {
            return;
        };
        self.sessions.remove(&session);
        assert_eq!(self.pool.session_closed(SessionId(session)), vec![]);
        self.open_session();
    }

    fn time_passes(&mut self) {
        self.now += Duration::from_millis(500 + self.rng.below(6000) as u64);
        let expired = self.pool.expire(self.now);
        assert!(expired.queue_timeouts.is_empty());
        for conn in expired.close {
            let c = self
                .conns
                .remove(&conn)
                .unwrap_or_else(|| panic!("expired unknown {conn:?}"));
            assert!(
                c.streams.is_empty(),
                "expire closed {conn:?} carrying {c:?}"
            );
        }
    }

    fn check(&self) {
        self.pool.check_invariants();
        let streams: usize = self.conns.values().map(|c| c.streams.len()).sum();
        assert_eq!(
            self.pool.in_flight() as usize,
            streams + self.pending.len(),
            "in flight"
        );
        let st = self.pool.stats();
        for (i, srv) in st.servers.iter().enumerate() {
            let server = ServerId(i as u32);
            let model: usize = self
                .conns
                .values()
                .filter(|c| c.server == server && c.mux)
                .map(|c| c.streams.len())
                .sum();
            assert_eq!(srv.streams as usize, model, "server {i} streams");
            let connecting = self.pending.iter().filter(|p| p.server == server).count();
            assert_eq!(srv.connecting as usize, connecting, "server {i} connecting");
        }
        if !self.shares() {
            for (id, c) in &self.conns {
                if c.mux {
                    assert!(
                        c.streams.windows(2).all(|w| w[0] == w[1]),
                        "safe: {id:?} carries streams of several sessions: {c:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn multiplexed_connections_follow_the_model() {
    for mode in [ReuseMode::Safe, ReuseMode::Aggressive, ReuseMode::Always] {
        let mut total = Seen::default();
        for seed in [0x9E37_79B9_7F4A_7C15, 0xD1B5_4A32_D192_ED03, 7] {
            let mut sim = Sim::new(mode, seed);
            for _ in 0..4000 {
                sim.step();
            }
            let st = sim.pool.stats();
            assert!(st.reused > 100, "{mode:?}: little was reused");
            total.joins += sim.seen.joins;
            total.reused_streams += sim.seen.reused_streams;
            total.capacity_zero_idle += sim.seen.capacity_zero_idle;
            total.drains += sim.seen.drains;
            total.fallbacks += sim.seen.fallbacks;
        }
        // The run exercised every path it claims to.
        assert!(total.joins > 0, "{mode:?}: no waiter joined: {total:?}");
        assert!(
            total.reused_streams > 0,
            "{mode:?}: no stream shared: {total:?}"
        );
        assert!(total.capacity_zero_idle > 0, "{mode:?}: {total:?}");
        assert!(total.drains > 0, "{mode:?}: {total:?}");
        assert!(total.fallbacks > 0, "{mode:?}: {total:?}");
    }
}

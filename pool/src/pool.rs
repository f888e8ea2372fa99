//! [`BackendPool`]: the policy of one backend on one shard, tying together reuse lists, limits,
//! queues, rate limits, balancing and passive health.
//!
//! The protocol with the engine and the decision order are documented on [`BackendPool`].
//! Invariants (checked after every step by the model test): a connection is in at most one list;
//! every server's slots equal its connections in use plus its outstanding attempts, and never exceed
//! its `maxconn`; the backend's slots are their sum and never exceed the backend `maxconn`; a
//! private connection is only handed to its owner.

use std::time::Instant;

use crate::balance::Balancer;
use crate::config::ReuseMode;
use crate::config::{BackendPolicy, ServerPolicy};
use crate::conns::{ConnState, ConnTable, Mux};
use crate::error::{PolicyError, PoolError, Unavailable};
use crate::health::Health;
use crate::ids::{ConnId, ServerId, SessionId, Ticket};
use crate::purge::PurgeEstimator;
use crate::queue::WaitQueue;
use crate::rate::RateLimiter;
use crate::reuse::{self, ListKind};
use crate::session::Sessions;
use crate::stats::{CloseStats, PoolStats, ServerStats};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod mux_model_tests;
#[cfg(test)]
mod mux_tests;
#[cfg(test)]
mod tests;

/// A request that needs a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// The client session (frontend connection) it belongs to.
    pub session: SessionId,
    /// The first request of an HTTP/1 client connection; always `false` for h2/h3 streams.
    pub first: bool,
    /// The method is idempotent. Carried for the engine's retry decisions; it does not change
    /// which connection the pool hands out.
    pub idempotent: bool,
    /// The request can travel as a stream of a multiplexed (HTTP/2) connection: an h2 client's
    /// stream to a backend that speaks h2. It may then also take an HTTP/1 connection; an HTTP/1
    /// request never takes a multiplexed one.
    pub multiplexed: bool,
}

/// The pool's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Acquire {
    /// Send the request on this connection: an idle one (now in use), or a multiplexed one with
    /// a free stream (one more stream on it).
    Reuse {
        /// Its server.
        server: ServerId,
        /// The connection.
        conn: ConnId,
    },
    /// Open a new connection to this server, then report [`BackendPool::connected`] or
    /// [`BackendPool::connect_failed`] (a request slot is held meanwhile).
    Connect {
        /// The server.
        server: ServerId,
    },
    /// Wait: the ticket comes back from [`BackendPool::poll_queue`] (go),
    /// [`BackendPool::expire`] (503) or not at all after [`BackendPool::cancel`].
    Queued(Ticket),
    /// Answer 503.
    Unavailable(Unavailable),
}

/// What to do with a connection whose exchange finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Release {
    /// Keep it open: it is idle in one of the pool's lists.
    Keep,
    /// Close it: the pool has forgotten it.
    Close,
}

/// What [`BackendPool::expire`] found due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Queued requests whose `timeout queue` expired: answer 503.
    pub queue_timeouts: Vec<Ticket>,
    /// Idle connections to close (idle timeout, purge); already forgotten by the pool.
    pub close: Vec<ConnId>,
}

/// Which queue a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueRef {
    Backend,
    Server(ServerId),
}

/// Where a decision is made from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// The request is the head of this queue (`None`: a new request or a retry).
    head_of: Option<QueueRef>,
    /// A server to avoid when another can take the request (connection-failure retry).
    avoid: Option<ServerId>,
}

impl Origin {
    const FRESH: Self = Self {
        head_of: None,
        avoid: None,
    };
}

/// A decision to proceed.
#[derive(Debug, Clone, Copy)]
enum Go {
    Reuse {
        server: ServerId,
        conn: ConnId,
        balanced: bool,
    },
    Connect {
        server: ServerId,
        balanced: bool,
    },
}

/// Why a request waits in the backend queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitReason {
    BackendFull,
    Behind,
    ServersFull,
    Rate(Instant),
}

/// A decision, before any state changes.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Go(Go),
    WaitServer(ServerId),
    WaitBackend(WaitReason),
    Fail(Unavailable),
}

/// One server's live state.
#[derive(Debug)]
struct Server {
    policy: ServerPolicy,
    /// Requests holding a slot: in-use connections + outstanding attempts.
    in_flight: u32,
    /// Outstanding connection attempts.
    connecting: u32,
    /// Connections in use.
    used_conns: u32,
    /// Streams in flight on multiplexed connections (each holds a slot).
    streams: u32,
    /// Tunnels (connections that switched protocols): each holds a slot and has no record.
    tunnels: u32,
    /// Multiplexed connections in use with a free stream that any session may join (modes
    /// aggressive and always: HAProxy's `avail` list).
    avail: Vec<ConnId>,
    health: Health,
    rate: Option<RateLimiter>,
    queue: WaitQueue,
    purge: PurgeEstimator,
    new_conns: u64,
    reused: u64,
    closed: CloseStats,
}

impl Server {
    fn full(&self) -> bool {
        self.policy.maxconn.is_some_and(|m| self.in_flight >= m)
    }
}

/// Backend pool policy of one backend on one shard.
///
/// # Protocol with the engine
/// ```text
/// acquire(req) -> Reuse{server, conn}                      the request is in flight on conn
///              -> Connect{server} -> connected(server, conn, session)   in flight on conn
///                                 -> connect_failed(server), then retry(req, server) or 503
///                                 -> connect_aborted(server)
///              -> Queued(ticket)  -> poll_queue: go | expire: 503 | cancel
///              -> Unavailable(..) -> 503
/// Connect, multiplexed -> connected_mux(server, conn, session, capacity)  (at its SETTINGS)
///                     -> join(conn): another Connect of that server that waited for conn
/// multiplexed conn   -> set_capacity(conn, n) on new SETTINGS; drain(conn) on GOAWAY
/// in flight on conn  -> release(conn, reusable, private) -> Keep | Close;  or conn_closed(conn)
///                       (per stream on a multiplexed conn; conn_closed ends all its streams)
/// session ends       -> session_closed(session) -> idle private connections to close
/// at next_deadline() -> expire(now), then poll_queue(now)
/// ```
/// - Every `Reuse`/`Connect` holds a request slot (server and backend `maxconn` count concurrent
///   requests, not connections) until `release`, `conn_closed` of the in-use connection,
///   `connect_failed` or `connect_aborted`. Call `poll_queue` after any of them (and after
///   `expire`): queued tickets that can go now come back oldest first, each with its decision.
/// - Queue order is FIFO: while the backend queue holds requests, a new request joins its tail, even
///   one that could reuse an idle connection (except a session's own private connection, which never
///   competes with queued requests for anything but its server's slot). A head blocked only by a
///   connection-rate limit waits too (head-of-line): `next_deadline` includes the instant a token
///   frees up.
/// - Retries: `retry` exists for connection failures only (the request never left the proxy). The
///   pool never decides to resend a request that may have reached a server: that is the engine's
///   call (never for a non-idempotent request unless the operator allows it; `RequestInfo::idempotent`
///   is carried for that purpose and does not change pool decisions, as in HAProxy, whose reuse code
///   never checks the method). The engine also owns the retry budget (`retries`).
/// - After the pool says `Close` (from `release`, `expire` or `session_closed`) it has forgotten the
///   connection; `conn_closed` for it is a harmless no-op.
/// - `session_closed` must be called for every session that was given a connection, and must be
///   the last call naming it, except for `release`/`conn_closed` of its connections still in use: a
///   connection attempt still outstanding for it is ended with `connect_aborted` (or
///   `connect_failed`), not `connected` (that would recreate a record nobody closes).
///
/// # Decision order for a request
/// 1. the session's own idle private connections (newest first) on an up server with room — in every
///    mode; if that server is full, wait in its queue (bounded by `maxqueue`; when that is full,
///    redispatch: continue below);
/// 2. backend `maxconn` reached, or requests already queued: wait in the backend queue (`queue_cap`,
///    beyond it [`Unavailable::QueueFull`]);
/// 3. the session's affinity connection if the mode allows its list (see [`crate::reuse`]);
/// 4. the balancer picks among servers that are up, weighted, below `maxconn` and without a queue of
///    their own; none up: [`Unavailable::AllServersDown`]; none with room: wait in the backend queue;
/// 5. on the picked server: an allowed idle connection, else a new one if its rate limit allows;
/// 6. rate-limited: an allowed idle connection on another candidate, else a new connection on another
///    candidate with a token, else wait in the backend queue until the first token.
///
/// Costs: O(servers) per call except `poll_queue`/`expire` (O(servers) per ticket or connection they
/// return); no allocation on the `Reuse`/`Connect` path beyond first-time map growth.
#[derive(Debug)]
pub struct BackendPool {
    policy: BackendPolicy,
    servers: Vec<Server>,
    conns: ConnTable,
    sessions: Sessions,
    balancer: Balancer,
    queue: WaitQueue,
    in_flight: u32,
    next_ticket: u64,
    next_purge: Option<Instant>,
    rate_wake: Option<Instant>,
    requests: u64,
    queue_full: u64,
    all_down: u64,
    /// Scratch for `poll_queue`: server queues found blocked.
    blocked: Vec<bool>,
    /// Scratch for `commit`: the balancer's candidate set.
    mask: Vec<bool>,
}

impl BackendPool {
    /// A pool for `policy`, validated, starting at `now`.
    pub fn new(policy: BackendPolicy, now: Instant) -> Result<Self, PolicyError> {
        policy.validate()?;
        let servers = policy
            .servers
            .iter()
            .map(|p| Server {
                policy: p.clone(),
                in_flight: 0,
                connecting: 0,
                used_conns: 0,
                tunnels: 0,
                streams: 0,
                avail: Vec::new(),
                health: Health::default(),
                rate: p.conn_rate.map(RateLimiter::per_second),
                queue: WaitQueue::default(),
                purge: PurgeEstimator::default(),
                new_conns: 0,
                reused: 0,
                closed: CloseStats::default(),
            })
            .collect::<Vec<_>>();
        let n = servers.len();
        Ok(Self {
            balancer: Balancer::new(
                policy.balance,
                policy.servers.iter().map(|s| s.weight).collect(),
            ),
            next_purge: now.checked_add(policy.purge_delay),
            policy,
            servers,
            conns: ConnTable::new(n),
            sessions: Sessions::default(),
            queue: WaitQueue::default(),
            in_flight: 0,
            next_ticket: 0,
            rate_wake: None,
            requests: 0,
            queue_full: 0,
            all_down: 0,
            blocked: vec![false; n],
            mask: vec![false; n],
        })
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &BackendPolicy {
        &self.policy
    }

    /// Requests holding a slot over all servers.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Requests waiting in any queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len() + self.servers.iter().map(|s| s.queue.len()).sum::<usize>()
    }

    /// Whether `server` may take requests at `now` (passive health).
    #[must_use]
    pub fn is_up(&self, server: ServerId, now: Instant) -> bool {
        self.servers
            .get(server.index())
            .is_some_and(|s| s.health.is_up(now))
    }

    /// A request needs a backend connection.
    pub fn acquire(&mut self, req: &RequestInfo, now: Instant) -> Acquire {
        self.refresh(now);
        self.decide(req, now, Origin::FRESH)
    }

    /// The engine connected a new backend connection after [`Acquire::Connect`] (or a retry's): it is
    /// in use by `session`'s request. Resets the server's failure count. (`now` is unused by HTTP/1
    /// backends; h2 backends will need it to park a new connection on the `avail` list.)
    pub fn connected(
        &mut self,
        server: ServerId,
        conn: ConnId,
        session: SessionId,
        now: Instant,
    ) -> Result<(), PoolError> {
        let _ = now;
        let s = self.pending_server(server)?;
        if self.conns.contains(conn) {
            return Err(PoolError::DuplicateConn(conn));
        }
        let srv = &mut self.servers[s];
        srv.connecting -= 1;
        srv.used_conns += 1;
        srv.purge.note_used(srv.used_conns as usize);
        srv.health.success();
        srv.new_conns += 1;
        self.conns.insert_in_use(conn, server, session);
        self.sessions.assign(session);
        Ok(())
    }

    /// The engine's new connection after [`Acquire::Connect`] turned out multiplexed and its
    /// peer's SETTINGS arrived: the request is its first stream, and the connection may carry
    /// `capacity` streams at once (min(ours, the peer's SETTINGS_MAX_CONCURRENT_STREAMS)). It is
    /// reserved for `session`; in modes aggressive and always other sessions may join it too.
    pub fn connected_mux(
        &mut self,
        server: ServerId,
        conn: ConnId,
        session: SessionId,
        capacity: u32,
        now: Instant,
    ) -> Result<(), PoolError> {
        self.connected(server, conn, session, now)?;
        let s = server.index();
        self.servers[s].streams += 1;
        self.conns.set_mux(
            conn,
            Mux {
                streams: 1,
                capacity,
                draining: false,
            },
        );
        if let Some(rec) = self.sessions.get_mut(session) {
            rec.mux = Some(conn);
        }
        self.update_avail(conn);
        Ok(())
    }

    /// Another request that was told [`Acquire::Connect`] to `conn`'s server waited for that
    /// new multiplexed connection instead of opening its own: it becomes one more stream on it
    /// (its attempt slot turns into the stream's). Refused without a free stream.
    pub fn join(&mut self, conn: ConnId) -> Result<(), PoolError> {
        let rec = self.conns.get(conn).ok_or(PoolError::UnknownConn(conn))?;
        let server = rec.server;
        if !rec.mux.is_some_and(|m| m.has_room()) || !matches!(rec.state, ConnState::InUse { .. }) {
            return Err(PoolError::NoFreeStream(conn));
        }
        let s = self.pending_server(server)?;
        let srv = &mut self.servers[s];
        srv.connecting -= 1;
        srv.streams += 1;
        srv.reused += 1;
        self.add_stream(conn);
        Ok(())
    }

    /// The peer of multiplexed connection `conn` changed its stream limit: it now carries up to
    /// `capacity` streams at once (streams beyond it run to their end; none starts meanwhile).
    /// Returns whether to close it now: an idle connection that may carry no stream at all
    /// would otherwise be handed out from its list (the pool has forgotten it).
    #[must_use]
    pub fn set_capacity(&mut self, conn: ConnId, capacity: u32) -> bool {
        let Some(rec) = self.conns.get(conn) else {
            return false;
        };
        if rec.mux.is_none() {
            return false;
        }
        if capacity == 0 {
            if let ConnState::Idle { .. } = rec.state {
                let s = rec.server.index();
                self.forget_idle(conn);
                self.servers[s].closed.not_reusable += 1;
                return true;
            }
        }
        if let Some(m) = self.conns.mux_mut(conn) {
            m.capacity = capacity;
            self.update_avail(conn);
        }
        false
    }

    /// Multiplexed connection `conn` takes no new stream (the peer's GOAWAY, or the engine
    /// retires it); it closes when its last stream is released. Returns whether to close it now
    /// (it was idle: the pool has forgotten it).
    pub fn drain(&mut self, conn: ConnId) -> bool {
        let Some(rec) = self.conns.get(conn) else {
            return false;
        };
        if let ConnState::Idle { .. } = rec.state {
            let s = rec.server.index();
            self.forget_idle(conn);
            self.servers[s].closed.not_reusable += 1;
            return true;
        }
        if let Some(m) = self.conns.mux_mut(conn) {
            m.draining = true;
            self.update_avail(conn);
        }
        false
    }

    /// Connecting to `server` failed: frees the request's slot and counts toward passive health.
    /// Returns whether this failure marked the server down. Follow with [`retry`](Self::retry) if the
    /// engine's retry budget allows, else answer 503.
    pub fn connect_failed(&mut self, server: ServerId, now: Instant) -> Result<bool, PoolError> {
        let s = self.pending_server(server)?;
        self.free_attempt(s);
        let (threshold, down_for) = (self.policy.fail_threshold, self.policy.down_for);
        Ok(self.servers[s].health.failure(now, threshold, down_for))
    }

    /// The engine gave up a connection attempt for another reason than the server (the client left):
    /// frees the slot without touching health.
    pub fn connect_aborted(&mut self, server: ServerId) -> Result<(), PoolError> {
        let s = self.pending_server(server)?;
        self.free_attempt(s);
        Ok(())
    }

    /// A new decision for a request whose connection to `failed` could not be established: another
    /// server is preferred when one can take it (HAProxy's redispatch on conn-failure retry).
    pub fn retry(&mut self, req: &RequestInfo, failed: ServerId, now: Instant) -> Acquire {
        self.refresh(now);
        self.decide(
            req,
            now,
            Origin {
                head_of: None,
                avoid: Some(failed),
            },
        )
    }

    /// The exchange on `conn` finished; frees its request slot. `reusable`: the response was complete
    /// and the connection may carry another request. `private`: a 401/407 with NTLM/Negotiate bound
    /// it to its session (sticky). Returns whether to keep the connection (now idle in a list) or
    /// close it. Call [`poll_queue`](Self::poll_queue) afterwards.
    pub fn release(
        &mut self,
        conn: ConnId,
        reusable: bool,
        private: bool,
        now: Instant,
    ) -> Result<Release, PoolError> {
        let rec = self.conns.get(conn).ok_or(PoolError::UnknownConn(conn))?;
        let ConnState::InUse { session } = rec.state else {
            return Err(PoolError::ConnNotInUse(conn));
        };
        let (server, had_owner, mux) = (rec.server, rec.owner.is_some(), rec.mux);
        // A multiplexed connection has served two requests in the lists' sense: h2 connections
        // always count as proven (`safe`).
        let served = if mux.is_some() {
            rec.served.max(2)
        } else {
            rec.served
        };
        let s = server.index();
        if let Some(m) = mux {
            // One stream ends; the connection stays in use while others run.
            self.servers[s].streams -= 1;
            self.servers[s].in_flight -= 1;
            self.in_flight -= 1;
            let left = m.streams - 1;
            if let Some(m) = self.conns.mux_mut(conn) {
                m.streams = left;
                m.draining |= !reusable;
            }
            if left > 0 {
                self.update_avail(conn);
                return Ok(Release::Keep);
            }
            self.remove_avail(s, conn);
            self.unreserve(session, conn);
            let srv = &mut self.servers[s];
            srv.used_conns -= 1;
            self.sessions.unassign(session);
            // Idle with no stream allowed (the peer's SETTINGS said 0): it would only be
            // handed out.
            if m.draining || !reusable || m.capacity == 0 {
                self.servers[s].closed.not_reusable += 1;
                self.conns.remove(conn);
                return Ok(Release::Close);
            }
        } else {
            self.free_in_use(s, session);
        }
        if private && !had_owner && mux.is_none() {
            self.conns.set_owner(conn, session);
        }
        let owned = self.conns.get(conn).is_some_and(|r| r.owner.is_some());
        let closed = &mut self.servers[s].closed;
        if !reusable {
            closed.not_reusable += 1;
            self.conns.remove(conn);
            return Ok(Release::Close);
        }
        if reuse::reuse_exhausted(self.policy.max_reuse, served) {
            closed.max_reuse += 1;
            self.conns.remove(conn);
            return Ok(Release::Close);
        }
        match reuse::destination(self.policy.reuse, owned, served) {
            ListKind::Private => {
                let cap = self.policy.max_private_per_session;
                let room = self
                    .sessions
                    .get_mut(session)
                    .filter(|r| r.private.len() < cap);
                let Some(rec) = room else {
                    closed.private_cap += 1;
                    self.conns.remove(conn);
                    return Ok(Release::Close);
                };
                rec.private.push(conn);
                self.conns.set_owner(conn, session);
                self.conns.park(conn, ListKind::Private, now);
            }
            list => {
                if self
                    .policy
                    .max_idle_per_server
                    .is_some_and(|m| self.conns.shared_len(server) >= m)
                {
                    closed.pool_full += 1;
                    self.conns.remove(conn);
                    return Ok(Release::Close);
                }
                // HAProxy's `srv_add_to_idle_list`: keep a connection idle only while in-use plus
                // idle connections stay within the estimated need (or it would be the first of
                // its kind). So a new session whose first request had to open a connection
                // (`safe`) while others sat idle does not grow the pool: that connection closes
                // and the session's later requests take the idle ones.
                let used = self.servers[s].used_conns as usize + 1; // this one, until parked
                let idle = self.conns.shared_len(server);
                let first_of_kind = self.conns.list_len(server, ListKind::Safe) == 0
                    && (list == ListKind::Safe || self.conns.list_len(server, ListKind::Idle) == 0);
                let need = self.servers[s].purge.need().max(used);
                if !first_of_kind && used + idle > need {
                    self.servers[s].closed.surplus += 1;
                    self.conns.remove(conn);
                    return Ok(Release::Close);
                }
                self.conns.park(conn, list, now);
                if let Some(rec) = self.sessions.get_mut(session) {
                    rec.last = Some(conn);
                }
            }
        }
        Ok(Release::Keep)
    }

    /// Queued requests that can go now, oldest first, each with its decision (`Reuse`/`Connect`, or
    /// `Unavailable` when every server went down meanwhile). Call after anything that frees a slot,
    /// after [`expire`](Self::expire), and at [`next_deadline`](Self::next_deadline).
    pub fn poll_queue(&mut self, now: Instant) -> Vec<(Ticket, Acquire)> {
        self.refresh(now);
        self.rate_wake = None;
        let mut out = Vec::new();
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.clear();
        blocked.resize(self.servers.len(), false);
        let mut backend_blocked = false;
        // Moves between queues are rare; bound them so a bug could never spin.
        let mut moves_left = 2 * self.queued() + 2;
        loop {
            let mut best: Option<(Ticket, QueueRef)> = None;
            if !backend_blocked {
                if let Some(w) = self.queue.front() {
                    best = Some((w.ticket, QueueRef::Backend));
                }
            }
            for (i, srv) in self.servers.iter().enumerate() {
                if blocked[i] {
                    continue;
                }
                if let Some(w) = srv.queue.front() {
                    if best.is_none_or(|(t, _)| w.ticket < t) {
                        // Cannot truncate: the server count fits in u32 (validated).
                        best = Some((w.ticket, QueueRef::Server(ServerId(i as u32))));
                    }
                }
            }
            let Some((ticket, from)) = best else {
                break;
            };
            let Some(waiter) = self.queue_mut(from).front().copied() else {
                break;
            };
            let origin = Origin {
                head_of: Some(from),
                avoid: None,
            };
            let block = |blocked: &mut Vec<bool>, backend_blocked: &mut bool| match from {
                QueueRef::Backend => *backend_blocked = true,
                QueueRef::Server(s) => blocked[s.index()] = true,
            };
            match self.plan(&waiter.req, now, origin) {
                Plan::Go(go) => {
                    self.queue_mut(from).pop_front();
                    out.push((ticket, self.commit(go, &waiter.req, now, origin)));
                }
                Plan::Fail(why) => {
                    self.queue_mut(from).pop_front();
                    self.count_fail(why);
                    out.push((ticket, Acquire::Unavailable(why)));
                }
                Plan::WaitServer(s) if from == QueueRef::Server(s) => {
                    block(&mut blocked, &mut backend_blocked);
                }
                Plan::WaitBackend(why)
                    if from == QueueRef::Backend || why == WaitReason::BackendFull =>
                {
                    if let WaitReason::Rate(at) = why {
                        if from == QueueRef::Backend {
                            self.rate_wake = Some(at);
                        }
                    }
                    block(&mut blocked, &mut backend_blocked);
                }
                plan @ (Plan::WaitServer(_) | Plan::WaitBackend(_)) => {
                    if moves_left == 0 {
                        block(&mut blocked, &mut backend_blocked);
                        continue;
                    }
                    moves_left -= 1;
                    let to = match plan {
                        Plan::WaitServer(s) => QueueRef::Server(s),
                        _ => QueueRef::Backend,
                    };
                    if let Some(w) = self.queue_mut(from).pop_front() {
                        self.queue_mut(to).insert(w);
                    }
                }
            }
        }
        self.blocked = blocked;
        out
    }

    /// Queue timeouts (answer 503) and idle connections to close (idle timeout, purge), due at `now`.
    pub fn expire(&mut self, now: Instant) -> Expired {
        self.refresh(now);
        let mut out = Expired::default();
        self.queue.expire(now, &mut out.queue_timeouts);
        for srv in &mut self.servers {
            srv.queue.expire(now, &mut out.queue_timeouts);
        }
        out.queue_timeouts.sort_unstable();
        let timeout = self.policy.idle_timeout;
        for i in 0..self.servers.len() {
            // Cannot truncate: the server count fits in u32 (validated).
            let server = ServerId(i as u32);
            for list in [ListKind::Private, ListKind::Idle, ListKind::Safe] {
                while let Some((conn, since)) = self.conns.oldest(server, list) {
                    if since.checked_add(timeout).is_none_or(|t| t > now) {
                        break;
                    }
                    self.forget_idle(conn);
                    self.servers[i].closed.idle_timeout += 1;
                    out.close.push(conn);
                }
            }
        }
        if let Some(due) = self.next_purge.filter(|&d| now >= d) {
            self.purge(&mut out.close);
            let delay = self.policy.purge_delay;
            self.next_purge = due
                .checked_add(delay)
                .filter(|&next| next > now)
                .or_else(|| now.checked_add(delay));
        }
        out
    }

    /// The earliest instant at which [`expire`](Self::expire) or [`poll_queue`](Self::poll_queue)
    /// has work: a queue timeout, an idle timeout, the next purge, a rate-limit token or a server
    /// coming back up for waiting requests.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.queue.next_deadline());
        let waiting = self.queued() > 0;
        if !self.queue.is_empty() {
            consider(self.rate_wake);
        }
        let mut any_shared = false;
        for (i, srv) in self.servers.iter().enumerate() {
            consider(srv.queue.next_deadline());
            if waiting {
                consider(srv.health.down_until());
            }
            // Cannot truncate: the server count fits in u32 (validated).
            let server = ServerId(i as u32);
            for list in [ListKind::Private, ListKind::Idle, ListKind::Safe] {
                if let Some((_, since)) = self.conns.oldest(server, list) {
                    consider(since.checked_add(self.policy.idle_timeout));
                }
            }
            any_shared |= self.conns.shared_len(server) > 0;
        }
        if any_shared {
            consider(self.next_purge);
        }
        next
    }

    /// The backend closed `conn` (idle or in use) or it failed: forget it. An in-use connection's
    /// request slot is freed (call [`poll_queue`](Self::poll_queue)). Returns whether the pool
    /// tracked it.
    pub fn conn_closed(&mut self, conn: ConnId) -> bool {
        let Some(rec) = self.conns.get(conn) else {
            return false;
        };
        let s = rec.server.index();
        match rec.state {
            ConnState::InUse { session } => {
                if let Some(m) = rec.mux {
                    // Every stream on it ends with it; one connection-level release below.
                    let extra = m.streams.saturating_sub(1);
                    let srv = &mut self.servers[s];
                    srv.streams -= m.streams;
                    srv.in_flight -= extra;
                    self.in_flight -= extra;
                    self.remove_avail(s, conn);
                    self.unreserve(session, conn);
                }
                self.free_in_use(s, session);
                self.conns.remove(conn);
            }
            ConnState::Idle { .. } => self.forget_idle(conn),
        }
        self.servers[s].closed.by_engine += 1;
        true
    }

    /// In-use HTTP/1 connection `conn` became a tunnel (the server switched protocols): it is
    /// never released, so the pool forgets its record and its session's claim on it; its slot
    /// stays counted against the limits until [`BackendPool::tunnel_closed`]. Returns its
    /// server (`None`: not an HTTP/1 connection in use).
    pub fn tunnel_started(&mut self, conn: ConnId) -> Option<ServerId> {
        let rec = self.conns.get(conn)?;
        let (ConnState::InUse { session }, None) = (rec.state, rec.mux) else {
            return None;
        };
        let server = rec.server;
        self.conns.remove(conn);
        self.sessions.unassign(session);
        let srv = &mut self.servers[server.index()];
        srv.used_conns -= 1;
        srv.tunnels += 1;
        Some(server)
    }

    /// A tunnel of `server` ([`BackendPool::tunnel_started`]) closed: its slot is free. Returns
    /// whether there was one.
    pub fn tunnel_closed(&mut self, server: ServerId) -> bool {
        let Some(srv) = self.servers.get_mut(server.index()) else {
            return false;
        };
        if srv.tunnels == 0 {
            return false;
        }
        srv.tunnels -= 1;
        srv.in_flight -= 1;
        srv.closed.by_engine += 1;
        self.in_flight -= 1;
        true
    }

    /// The client session ended: returns its idle private connections, which the engine closes
    /// (private connections are never shared, in any mode). Private connections it still has in use
    /// are closed on release. Must be called for every session that was given a connection.
    pub fn session_closed(&mut self, session: SessionId) -> Vec<ConnId> {
        let private = self.sessions.close(session);
        for &conn in &private {
            if let Some(rec) = self.conns.remove(conn) {
                self.servers[rec.server.index()].closed.session_closed += 1;
            }
        }
        private
    }

    /// A queued request was abandoned (the client went away). Returns whether it was queued.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        self.queue.cancel(ticket) || self.servers.iter_mut().any(|s| s.queue.cancel(ticket))
    }

    /// A statistics snapshot.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let mut closed = CloseStats::default();
        let servers = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, srv)| {
                // Cannot truncate: the server count fits in u32 (validated).
                let id = ServerId(i as u32);
                closed.add(&srv.closed);
                ServerStats {
                    idle: self.conns.list_len(id, ListKind::Idle),
                    safe: self.conns.list_len(id, ListKind::Safe),
                    private: self.conns.list_len(id, ListKind::Private),
                    in_flight: srv.in_flight,
                    streams: srv.streams,
                    tunnels: srv.tunnels,
                    connecting: srv.connecting,
                    new_conns: srv.new_conns,
                    reused: srv.reused,
                    queue: srv.queue.stats(),
                    connect_failures: srv.health.failures(),
                    consecutive_failures: srv.health.consecutive(),
                    times_down: srv.health.downs(),
                    down_until: srv.health.down_until(),
                    closed: srv.closed,
                }
            })
            .collect::<Vec<_>>();
        PoolStats {
            queue: self.queue.stats(),
            in_flight: self.in_flight,
            requests: self.requests,
            reused: servers.iter().map(|s| s.reused).sum(),
            new_conns: servers.iter().map(|s| s.new_conns).sum(),
            queue_full: self.queue_full,
            all_down: self.all_down,
            closed,
            sessions: self.sessions.len(),
            conns: self.conns.len(),
            servers,
        }
    }

    // ---- decisions ----

    /// Plans, then commits or queues.
    fn decide(&mut self, req: &RequestInfo, now: Instant, origin: Origin) -> Acquire {
        match self.plan(req, now, origin) {
            Plan::Go(go) => self.commit(go, req, now, origin),
            Plan::Fail(why) => {
                self.count_fail(why);
                Acquire::Unavailable(why)
            }
            Plan::WaitServer(s) => {
                let ticket = self.mint_ticket();
                let deadline = now.checked_add(self.policy.queue_timeout);
                self.servers[s.index()].queue.push(ticket, *req, deadline);
                Acquire::Queued(ticket)
            }
            Plan::WaitBackend(why) => {
                if self
                    .policy
                    .queue_cap
                    .is_some_and(|cap| self.queue.len() >= cap)
                {
                    self.count_fail(Unavailable::QueueFull);
                    return Acquire::Unavailable(Unavailable::QueueFull);
                }
                if let WaitReason::Rate(at) = why {
                    if self.queue.is_empty() {
                        self.rate_wake = Some(at);
                    }
                }
                let ticket = self.mint_ticket();
                let deadline = now.checked_add(self.policy.queue_timeout);
                self.queue.push(ticket, *req, deadline);
                Acquire::Queued(ticket)
            }
        }
    }

    /// The decision for `req`, without changing anything (see the module docs for the order).
    fn plan(&self, req: &RequestInfo, now: Instant, origin: Origin) -> Plan {
        let backend_full = self.policy.maxconn.is_some_and(|m| self.in_flight >= m);
        let session = self.sessions.get(req.session);
        // 1. The session's own private connections, newest first.
        if let Some(rec) = session {
            let mut wait_on = None;
            for &conn in rec.private.iter().rev() {
                let Some(server) = self
                    .conns
                    .get(conn)
                    .filter(|r| req.multiplexed || r.mux.is_none())
                    .map(|r| r.server)
                else {
                    continue;
                };
                if !self.servers[server.index()].health.is_up(now) {
                    continue;
                }
                if self.has_room(server, origin) {
                    if !backend_full {
                        return Plan::Go(Go::Reuse {
                            server,
                            conn,
                            balanced: false,
                        });
                    }
                } else if wait_on.is_none() {
                    wait_on = Some(server);
                }
            }
            if let Some(server) = wait_on.filter(|_| !backend_full) {
                let srv = &self.servers[server.index()];
                let head = origin.head_of == Some(QueueRef::Server(server));
                let fits = srv
                    .policy
                    .maxqueue
                    .is_none_or(|m| srv.queue.len() < m as usize);
                if head || fits {
                    return Plan::WaitServer(server);
                }
                // The server's queue is full: redispatch like any request.
            }
        }
        // 2. Limits and FIFO order.
        if backend_full {
            return Plan::WaitBackend(WaitReason::BackendFull);
        }
        if origin.head_of.is_none() && !self.queue.is_empty() {
            return Plan::WaitBackend(WaitReason::Behind);
        }
        let lists = reuse::shared_lists(self.policy.reuse, req.first);
        // 3. A stream joins the multiplexed connection reserved for its session (every mode:
        //    the session already holds it).
        if req.multiplexed {
            if let Some(go) = self.reserved_stream(req, now, origin) {
                return Plan::Go(go);
            }
        }
        // Affinity: the shared connection the session used last, if the rules allow it.
        if let Some((server, conn)) = session
            .and_then(|r| r.last)
            .and_then(|c| self.conns.idle_shared(c).map(|(s, l)| (s, l, c)))
            .filter(|&(s, l, c)| {
                lists.contains(&l)
                    && (req.multiplexed || self.conns.get(c).is_some_and(|r| r.mux.is_none()))
                    && origin.avoid != Some(s)
                    && self.servers[s.index()].policy.weight > 0
                    && self.servers[s.index()].health.is_up(now)
                    && self.has_room(s, origin)
            })
            .map(|(s, _, c)| (s, c))
        {
            return Plan::Go(Go::Reuse {
                server,
                conn,
                balanced: false,
            });
        }
        // 4. Balancing.
        if !self
            .servers
            .iter()
            .any(|s| s.policy.weight > 0 && s.health.is_up(now))
        {
            return Plan::Fail(Unavailable::AllServersDown);
        }
        let avoid = self.effective_avoid(now, origin);
        let candidate = |i: usize| self.is_candidate(i, now, origin, avoid);
        let Some(chosen) = self.balancer.pick(candidate, |i| self.servers[i].in_flight) else {
            return Plan::WaitBackend(WaitReason::ServersFull);
        };
        // 5. On the chosen server: a multiplexed connection with a free stream, an allowed idle
        //    connection, else a new one.
        // Cannot truncate: the server count fits in u32 (validated).
        let id = |i: usize| ServerId(i as u32);
        let reuse_on = |i: usize| {
            self.avail_stream(i, req)
                .or_else(|| self.conns.first_in(id(i), lists, req.multiplexed))
        };
        if let Some(conn) = reuse_on(chosen) {
            return Plan::Go(Go::Reuse {
                server: id(chosen),
                conn,
                balanced: true,
            });
        }
        let mut wake = match self.rate_check(chosen, now) {
            Ok(()) => {
                return Plan::Go(Go::Connect {
                    server: id(chosen),
                    balanced: true,
                })
            }
            Err(at) => at,
        };
        // 6. The chosen server is rate-limited: reuse elsewhere, else connect elsewhere, else wait.
        let n = self.servers.len();
        let others = || (1..n).map(|k| (chosen + k) % n).filter(|&i| candidate(i));
        for i in others() {
            if let Some(conn) = reuse_on(i) {
                return Plan::Go(Go::Reuse {
                    server: id(i),
                    conn,
                    balanced: false,
                });
            }
        }
        for i in others() {
            match self.rate_check(i, now) {
                Ok(()) => {
                    return Plan::Go(Go::Connect {
                        server: id(i),
                        balanced: false,
                    })
                }
                Err(at) => wake = wake.min(at),
            }
        }
        Plan::WaitBackend(WaitReason::Rate(wake))
    }

    /// Applies a decision: takes the slot, the connection or the token.
    fn commit(&mut self, go: Go, req: &RequestInfo, now: Instant, origin: Origin) -> Acquire {
        let (server, balanced) = match go {
            Go::Reuse {
                server, balanced, ..
            }
            | Go::Connect { server, balanced } => (server, balanced),
        };
        if balanced {
            let avoid = self.effective_avoid(now, origin);
            let mut mask = std::mem::take(&mut self.mask);
            mask.clear();
            mask.extend((0..self.servers.len()).map(|i| self.is_candidate(i, now, origin, avoid)));
            self.balancer.commit(server.index(), |i| mask[i]);
            self.mask = mask;
        }
        let s = server.index();
        self.servers[s].in_flight += 1;
        self.in_flight += 1;
        self.requests += 1;
        match go {
            Go::Reuse { conn, .. } => {
                let rec = self.conns.get(conn);
                if rec.is_some_and(|r| matches!(r.state, ConnState::InUse { .. })) {
                    // One more stream on a multiplexed connection in use.
                    let srv = &mut self.servers[s];
                    srv.streams += 1;
                    srv.reused += 1;
                    self.add_stream(conn);
                    return Acquire::Reuse { server, conn };
                }
                let owner = rec.and_then(|r| r.owner);
                let mux = rec.is_some_and(|r| r.mux.is_some());
                self.conns.take(conn, req.session);
                if let Some(owner) = owner {
                    self.sessions.remove_private(owner, conn);
                }
                self.sessions.assign(req.session);
                if mux {
                    // An idle multiplexed connection: its first stream, reserved for the session.
                    self.servers[s].streams += 1;
                    let served = self.conns.get(conn).map_or(0, |r| r.served);
                    let exhausted = reuse::reuse_exhausted(self.policy.max_reuse, served);
                    if let Some(m) = self.conns.mux_mut(conn) {
                        m.streams = 1;
                        m.draining |= exhausted;
                    }
                    if let Some(r) = self.sessions.get_mut(req.session) {
                        r.mux = Some(conn);
                    }
                    self.update_avail(conn);
                }
                let srv = &mut self.servers[s];
                srv.used_conns += 1;
                srv.purge.note_used(srv.used_conns as usize);
                srv.reused += 1;
                Acquire::Reuse { server, conn }
            }
            Go::Connect { .. } => {
                let srv = &mut self.servers[s];
                srv.connecting += 1;
                if let Some(rate) = &mut srv.rate {
                    rate.take(now);
                }
                Acquire::Connect { server }
            }
        }
    }

    /// Whether a server has a free slot for a request coming from `origin`: below maxconn, and no
    /// queue of its own unless the request heads that queue.
    fn has_room(&self, server: ServerId, origin: Origin) -> bool {
        let srv = &self.servers[server.index()];
        !srv.full() && (srv.queue.is_empty() || origin.head_of == Some(QueueRef::Server(server)))
    }

    /// Whether the balancer may pick server `i`.
    fn is_candidate(
        &self,
        i: usize,
        now: Instant,
        origin: Origin,
        avoid: Option<ServerId>,
    ) -> bool {
        let srv = &self.servers[i];
        // Cannot truncate: the server count fits in u32 (validated).
        let id = ServerId(i as u32);
        srv.policy.weight > 0
            && srv.health.is_up(now)
            && self.has_room(id, origin)
            && avoid != Some(id)
    }

    /// The server to avoid, if another candidate exists.
    fn effective_avoid(&self, now: Instant, origin: Origin) -> Option<ServerId> {
        let avoid = origin.avoid?;
        (0..self.servers.len())
            .any(|i| i != avoid.index() && self.is_candidate(i, now, origin, None))
            .then_some(avoid)
    }

    fn rate_check(&self, i: usize, now: Instant) -> Result<(), Instant> {
        self.servers[i]
            .rate
            .as_ref()
            .map_or(Ok(()), |r| r.check(now))
    }

    // ---- bookkeeping ----

    fn refresh(&mut self, now: Instant) {
        for srv in &mut self.servers {
            srv.health.refresh(now);
        }
    }

    fn mint_ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    fn count_fail(&mut self, why: Unavailable) {
        match why {
            Unavailable::AllServersDown => self.all_down += 1,
            Unavailable::QueueFull => self.queue_full += 1,
        }
    }

    fn queue_mut(&mut self, q: QueueRef) -> &mut WaitQueue {
        match q {
            QueueRef::Backend => &mut self.queue,
            QueueRef::Server(s) => &mut self.servers[s.index()].queue,
        }
    }

    /// The index of `server` if it has a connection attempt outstanding.
    fn pending_server(&self, server: ServerId) -> Result<usize, PoolError> {
        let srv = self
            .servers
            .get(server.index())
            .ok_or(PoolError::UnknownServer(server))?;
        if srv.connecting == 0 {
            return Err(PoolError::NoPendingConnect(server));
        }
        Ok(server.index())
    }

    /// Frees the slot of an outstanding connection attempt.
    fn free_attempt(&mut self, s: usize) {
        let srv = &mut self.servers[s];
        srv.connecting -= 1;
        srv.in_flight -= 1;
        self.in_flight -= 1;
    }

    /// Frees the slot of an in-use connection.
    fn free_in_use(&mut self, s: usize, session: SessionId) {
        let srv = &mut self.servers[s];
        srv.used_conns -= 1;
        srv.in_flight -= 1;
        self.in_flight -= 1;
        self.sessions.unassign(session);
    }

    /// Whether other sessions may join a multiplexed connection in use (HAProxy's `avail`
    /// list): in aggressive and always, not in safe (reserved for its session) nor never.
    fn shares_streams(&self) -> bool {
        matches!(self.policy.reuse, ReuseMode::Aggressive | ReuseMode::Always)
    }

    /// One more stream on multiplexed connection `conn` (its slot is already counted): served
    /// counts streams, so `max_reuse` retires the connection once reached.
    fn add_stream(&mut self, conn: ConnId) {
        let max_reuse = self.policy.max_reuse;
        let Some(rec) = self.conns.get(conn) else {
            return;
        };
        let served = rec.served.saturating_add(1);
        if let Some(m) = self.conns.mux_mut(conn) {
            m.streams += 1;
            if reuse::reuse_exhausted(max_reuse, served) {
                m.draining = true;
            }
        }
        self.conns.bump_served(conn);
        self.update_avail(conn);
    }

    /// Puts a multiplexed connection in use on its server's `avail` list, or takes it off, as
    /// its free streams and the mode say.
    fn update_avail(&mut self, conn: ConnId) {
        let shares = self.shares_streams();
        let Some(rec) = self.conns.get(conn) else {
            return;
        };
        let s = rec.server.index();
        let in_use = matches!(rec.state, ConnState::InUse { .. });
        let open = rec.mux.is_some_and(|m| m.has_room()) && rec.owner.is_none();
        let listed = self.servers[s].avail.contains(&conn);
        if shares && in_use && open {
            if !listed {
                self.servers[s].avail.push(conn);
            }
        } else if listed {
            self.remove_avail(s, conn);
        }
    }

    fn remove_avail(&mut self, s: usize, conn: ConnId) {
        let avail = &mut self.servers[s].avail;
        if let Some(i) = avail.iter().position(|&c| c == conn) {
            avail.swap_remove(i);
        }
    }

    /// `conn` is no longer the multiplexed connection reserved for `session`.
    fn unreserve(&mut self, session: SessionId, conn: ConnId) {
        if let Some(rec) = self.sessions.get_mut(session) {
            if rec.mux == Some(conn) {
                rec.mux = None;
            }
        }
    }

    /// The session's reserved multiplexed connection, if a stream may join it now.
    fn reserved_stream(&self, req: &RequestInfo, now: Instant, origin: Origin) -> Option<Go> {
        let conn = self.sessions.get(req.session)?.mux?;
        let rec = self.conns.get(conn)?;
        let ConnState::InUse { session } = rec.state else {
            return None;
        };
        let server = rec.server;
        (session == req.session
            && rec.mux.is_some_and(|m| m.has_room())
            && self.servers[server.index()].health.is_up(now)
            && self.has_room(server, origin))
        .then_some(Go::Reuse {
            server,
            conn,
            balanced: false,
        })
    }

    /// A multiplexed connection of `server` on its `avail` list (newest first), for a stream.
    fn avail_stream(&self, server: usize, req: &RequestInfo) -> Option<ConnId> {
        if !req.multiplexed {
            return None;
        }
        self.servers[server].avail.last().copied()
    }

    /// Forgets an idle connection (and its place in its owner's private list).
    fn forget_idle(&mut self, conn: ConnId) {
        if let Some(rec) = self.conns.remove(conn) {
            if let Some(owner) = rec.owner {
                self.sessions.remove_private(owner, conn);
            }
        }
    }

    /// One purge interval: closes half of each server's idle shared connections above its
    /// estimated need, oldest `idle` first, then oldest `safe`.
    fn purge(&mut self, close: &mut Vec<ConnId>) {
        for i in 0..self.servers.len() {
            // Cannot truncate: the server count fits in u32 (validated).
            let server = ServerId(i as u32);
            let used = self.servers[i].used_conns as usize;
            let idle = self.conns.shared_len(server);
            let mut kill = self.servers[i].purge.tick(used, idle);
            for list in [ListKind::Idle, ListKind::Safe] {
                while kill > 0 {
                    let Some((conn, _)) = self.conns.oldest(server, list) else {
                        break;
                    };
                    self.conns.remove(conn);
                    self.servers[i].closed.purged += 1;
                    close.push(conn);
                    kill -= 1;
                }
            }
        }
    }

    /// The queue `ticket` waits in, if any (tests: the model checks FIFO order per queue).
    #[cfg(test)]
    fn queue_of(&self, ticket: Ticket) -> Option<QueueRef> {
        if self.queue.holds(ticket) {
            return Some(QueueRef::Backend);
        }
        self.servers
            .iter()
            .position(|s| s.queue.holds(ticket))
            // Cannot truncate: the server count fits in u32 (validated).
            .map(|i| QueueRef::Server(ServerId(i as u32)))
    }

    /// Checks every internal invariant (tests). Linear in connections + sessions + servers.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashMap;
        self.conns.check();
        self.queue.check();
        let mut used = vec![0u32; self.servers.len()];
        let mut streams = vec![0u32; self.servers.len()];
        let mut by_session: HashMap<SessionId, u32> = HashMap::new();
        for (&c, r) in self.conns.iter() {
            let listed = self.servers[r.server.index()].avail.contains(&c);
            match r.state {
                ConnState::InUse { session } => {
                    used[r.server.index()] += 1;
                    *by_session.entry(session).or_default() += 1;
                    if let Some(m) = r.mux {
                        assert!(m.streams >= 1, "{c} in use without a stream");
                        streams[r.server.index()] += m.streams;
                        let open = m.has_room() && r.owner.is_none() && self.shares_streams();
                        assert_eq!(listed, open, "{c} avail membership");
                    }
                }
                ConnState::Idle { .. } if r.mux.is_some() => {
                    assert_eq!(r.mux.map(|m| m.streams), Some(0), "{c} idle with streams");
                    assert!(!listed, "{c} idle on avail");
                }
                ConnState::Idle {
                    list: ListKind::Private,
                    ..
                } => {
                    let owner = r.owner.expect("private conn has an owner");
                    let rec = self.sessions.get(owner).expect("owner session open");
                    assert!(rec.private.contains(&c), "{c} missing from {owner}'s list");
                }
                ConnState::Idle { .. } => {}
            }
        }
        let mut total = 0;
        for (i, srv) in self.servers.iter().enumerate() {
            srv.queue.check();
            assert_eq!(srv.used_conns, used[i], "server {i} used conns");
            assert_eq!(srv.streams, streams[i], "server {i} streams");
            let mux_conns = self
                .conns
                .iter()
                .filter(|(_, r)| {
                    r.server.index() == i
                        && r.mux.is_some()
                        && matches!(r.state, ConnState::InUse { .. })
                })
                .count() as u32;
            // A multiplexed connection holds a slot per stream, others one each.
            assert_eq!(
                srv.in_flight,
                srv.used_conns - mux_conns + srv.streams + srv.connecting + srv.tunnels,
                "server {i} slots"
            );
            assert!(srv.avail.len() <= mux_conns as usize, "server {i} avail");
            if let Some(m) = srv.policy.maxconn {
                assert!(srv.in_flight <= m, "server {i} over maxconn");
            }
            total += srv.in_flight;
        }
        assert_eq!(self.in_flight, total, "backend slots");
        if let Some(m) = self.policy.maxconn {
            assert!(self.in_flight <= m, "backend over maxconn");
        }
        let mut records_in_use = 0;
        for (&sid, rec) in self.sessions.iter() {
            let in_use = by_session.get(&sid).copied().unwrap_or(0);
            assert_eq!(rec.in_use, in_use, "{sid} in-use count");
            records_in_use += usize::from(in_use > 0);
            assert!(rec.private.len() <= self.policy.max_private_per_session);
            if rec.closed {
                assert!(rec.private.is_empty() && rec.last.is_none() && rec.in_use > 0);
            }
            for &c in &rec.private {
                let r = self.conns.get(c).expect("private conn tracked");
                assert_eq!(r.owner, Some(sid));
                assert!(matches!(
                    r.state,
                    ConnState::Idle {
                        list: ListKind::Private,
                        ..
                    }
                ));
            }
        }
        assert_eq!(
            records_in_use,
            by_session.len(),
            "every user session has a record"
        );
    }
}

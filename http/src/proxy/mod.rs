//! The reverse proxy inside the HTTP service: one [`ProxyShard`] per shard holds a
//! [`BackendPool`] per backend (the reuse, limit, queue and health policy, no I/O), the exchanges
//! in progress and the per-backend counters.
//!
//! An exchange ([`streams::StreamExchange`]) is one proxied request, keyed by a shard-local
//! number: an HTTP/1.1 client connection holds one at a time (`relays`), an HTTP/2 client
//! connection one per proxied stream. Its backend side is an HTTP/1.1 connection of its own
//! (`stream_of_conn` leads from it to the exchange) or a stream on a multiplexed h2 connection
//! (`h2_conns`). The two sides never touch each other's buffers: each moves bytes into or out
//! of the exchange and wakes the other. Its life:
//! `acquire` -> `Queued` (woken by [`ProxyShard::poll`] with a decision) -> `Connecting` (a new
//! backend connection; request bytes wait) or a reused one -> `Forwarding` (head, then the body
//! streamed; the response head and body streamed back with backpressure both ways) -> done: the
//! backend connection goes back to its pool (or closes) and the client goes on. Client sides
//! live in [`relay`] (HTTP/1.1) and [`streams`] (HTTP/2, and what both share), backend sides in
//! [`stream_upstream`] (HTTP/1.1) and [`h2_upstream`] (h2); failures are decided by
//! [`verdict`]. An exchange that asked for an upgrade and got a 101 ends in an engine pair: a
//! byte tunnel ([`tunnel`]).
//!
//! Pool connection ids are engine ids packed into a `u64`; a session is the client connection.
//! Invariants: every backend connection the pool tracks is open (the engine's close reaches
//! [`ProxyShard::backend_conn_closed`]); every client that used a pool reports its close
//! (`session_closed`); a queued exchange's ticket is in `tickets` until it is woken or cancelled.

mod h1_reader;
mod h2_upstream;
mod relay;
pub mod rewrite;
pub mod stats;
mod stream_upstream;
pub(super) mod streams;
pub mod translate;
pub(crate) mod tunnel;
mod verdict;

use crate::runtime::{Backend, TcpKeepalive};
use coreplex_engine::{CloseReason, Id, ShardActions};
use coreplex_pool::{Acquire, BackendPool, ConnId, ServerId, SessionId, Ticket};
use coreplex_protocol::h1::BodyDecoder;
use stats::BackendStats;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::service::Cx;

/// A backend's settings, shared read-only by all shards.
pub struct BackendRuntime {
    config: Backend,
    addrs: Vec<SocketAddr>,
    /// The TLS transport's client profile of each server (`None`: plaintext).
    tls_profiles: Vec<Option<u32>>,
    /// The client profile of each server's HTTP/2 connections (ALPN with `h2`).
    h2_profiles: Vec<Option<u32>>,
    /// `Host` for requests without one.
    pub(super) default_host: String,
}

impl BackendRuntime {
    /// The backend's configuration.
    pub(crate) fn config(&self) -> &Backend {
        &self.config
    }

    /// Wraps a validated backend whose servers use TLS client profiles `tls_profiles` (one per
    /// server, `None` for plaintext) for HTTP/1.1 and `h2_profiles` for HTTP/2 connections.
    pub fn new(
        config: &Backend,
        tls_profiles: Vec<Option<u32>>,
        h2_profiles: Vec<Option<u32>>,
    ) -> BackendRuntime {
        BackendRuntime {
            addrs: config.servers.iter().map(|s| s.address).collect(),
            tls_profiles,
            h2_profiles,
            default_host: config
                .servers
                .first()
                .map(|s| s.address.to_string())
                .unwrap_or_default(),
            config: config.clone(),
        }
    }
}

impl BackendRuntime {
    /// The backend's timeout profile.
    pub(crate) fn timeouts(&self) -> &crate::runtime::Timeouts {
        &self.config.timeouts
    }
}

/// Where an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Holds nothing in the pool (before a decision, or after a failed attempt was returned).
    Deciding,
    /// Waiting in a pool queue.
    Queued(Ticket),
    /// The queue let it go: the decision waits for the client's `on_wake`.
    Ready(Acquire),
    /// `timeout queue` expired (found by the pool): answer 503 on wake.
    TimedOut,
    /// A new backend connection is being made (request bytes wait for it).
    Connecting,
    /// On a backend connection (its own, or a stream on a multiplexed one); forwarding.
    Forwarding,
}

/// What went wrong on the backend side, recorded before the backend connection closes so the
/// client side can answer (or retry) when it learns the connection is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    ConnectFailed,
    ConnectTimeout,
    ServerTimeout,
    BadResponse,
    /// Not the server's fault (the connection it waited for will not carry it): decide
    /// again, the pool slot already returned.
    Requeue,
    /// The server did not process it (REFUSED_STREAM, or above a GOAWAY's last stream): decide
    /// again if the request can be sent again, the pool slot already returned.
    Refused,
}

/// Where the response is.
#[derive(Clone, Debug)]
pub(super) enum Resp {
    /// Waiting for the (final) response head.
    Head,
    /// Streaming a framed body; `true`: strip chunked framing (HTTP/1.0 client).
    Body(BodyDecoder, bool),
    /// Streaming a body delimited by the backend's close.
    UntilClose,
    /// Complete.
    Done,
}

/// Byte buffers of finished exchanges (request heads, response fields and bodies) kept for the
/// next ones, so that a request does not allocate them anew: at most [`Spare::MAX`] buffers of
/// at most [`Spare::CAP`] bytes each (larger ones are freed).
#[derive(Default)]
pub(super) struct Spare(Vec<Vec<u8>>);

impl Spare {
    const MAX: usize = 64;
    const CAP: usize = 8 * 1024;

    /// An empty buffer (one kept, or a new one).
    pub(super) fn take(&mut self) -> Vec<u8> {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `buf` for later (emptied), if it is worth keeping and there is room.
    pub(super) fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > Self::CAP || self.0.len() >= Self::MAX {
            return;
        }
        buf.clear();
        self.0.push(buf);
    }
}

/// Hashes engine ids (already unique small integers) with one multiply.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An engine id as a pool connection id.
pub(super) fn conn_id(id: Id) -> ConnId {
    ConnId((u64::from(id.index) << 32) | u64::from(id.gen))
}

/// A pool connection id back to the engine id.
pub(super) fn engine_id(c: ConnId) -> Id {
    Id {
        index: (c.0 >> 32) as u32,
        gen: c.0 as u32,
    }
}

/// A client connection as a pool session.
pub(super) fn session_id(id: Id) -> SessionId {
    SessionId((u64::from(id.index) << 32) | u64::from(id.gen))
}

/// Applies TCP keepalive settings to a connection's socket (errors are logged, not fatal).
pub(super) fn set_keepalive(cx: &Cx<'_>, k: &TcpKeepalive) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(k.idle)
        .with_interval(k.interval)
        .with_retries(k.count);
    if let Err(e) = cx.socket().set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

/// The proxy state of one shard.
pub struct ProxyShard {
    pub(super) backends: Arc<Vec<BackendRuntime>>,
    pub(super) pools: Vec<BackendPool>,
    pub(super) stats: Vec<BackendStats>,
    /// Client addresses of connections that used a backend (for X-Forwarded-For without a
    /// `getpeername` per request); removed when the client closes.
    pub(super) client_ips: FastMap<Id, Option<std::net::IpAddr>>,
    /// The exchange waiting on each pool queue ticket.
    pub(super) tickets: HashMap<(usize, Ticket), u64>,
    /// Exchanges of HTTP/2 streams, by key.
    pub(super) streams: FastMap<u64, streams::StreamExchange>,
    /// The stream exchange each HTTP/1.1 backend connection serves.
    pub(super) stream_of_conn: FastMap<Id, u64>,
    /// The stream exchange of each HTTP/1.1 client connection relayed to a backend that may
    /// speak h2 (`relay`).
    pub(super) relays: FastMap<Id, u64>,
    /// The server of each tunnel's backend connection (the pool keeps only a count of them).
    pub(super) tunnel_servers: FastMap<Id, ServerId>,
    /// Multiplexed (h2) backend connections.
    pub(super) h2_conns: FastMap<Id, Box<h2_upstream::BackendH2>>,
    /// Those of them whose SETTINGS have not arrived (exchanges may wait for them).
    pub(super) h2_pending: Vec<Id>,
    /// h2 connections asked of the engine and not made yet, by the asking exchange.
    pub(super) h2_opening: FastMap<u64, Box<h2_upstream::BackendH2>>,
    /// Per backend, per server: what it was found to speak.
    pub(super) learned: Vec<Vec<h2_upstream::Learned>>,
    /// Per backend, per server: its h2 connections do not announce extended CONNECT (RFC
    /// 8441), so WebSocket upgrades go to it over HTTP/1.1.
    pub(super) no_ext_connect: Vec<Vec<bool>>,
    pub(super) next_stream: u64,
    pub(super) spare: Spare,
    /// Client connections to wake at the next poll (their backend connection closed).
    pending_wake: Vec<Id>,
    /// Backend connections to close at the next poll (private connections of closed sessions).
    pending_close: Vec<Id>,
    /// Something freed a slot or changed a deadline: run the pools at the next poll.
    pub(super) dirty: bool,
    next_deadline: Option<Instant>,
}

impl ProxyShard {
    /// The proxy state of shard `shard` of `shards` (each pool gets the shard's share of limits).
    pub fn new(
        backends: Arc<Vec<BackendRuntime>>,
        shard: usize,
        shards: usize,
        now: Instant,
    ) -> ProxyShard {
        let pools = backends
            .iter()
            .map(|b| {
                BackendPool::new(b.config.policy_for_shard(shard, shards), now)
                    .expect("backend policies are validated with the config")
            })
            .collect();
        let stats = backends
            .iter()
            .map(|b| BackendStats {
                name: b.config.name.clone(),
                servers: b.config.servers.iter().map(|s| s.name.clone()).collect(),
                alpn_fallbacks: vec![0; b.config.servers.len()],
                ..BackendStats::default()
            })
            .collect();
        let learned = backends
            .iter()
            .map(|b| vec![h2_upstream::Learned::Unknown; b.addrs.len()])
            .collect();
        let no_ext_connect = backends
            .iter()
            .map(|b| vec![false; b.addrs.len()])
            .collect();
        ProxyShard {
            no_ext_connect,
            backends,
            pools,
            stats,
            client_ips: FastMap::default(),
            tickets: HashMap::new(),
            streams: FastMap::default(),
            stream_of_conn: FastMap::default(),
            relays: FastMap::default(),
            tunnel_servers: FastMap::default(),
            h2_conns: FastMap::default(),
            h2_pending: Vec::new(),
            h2_opening: FastMap::default(),
            learned,
            next_stream: 0,
            spare: Spare::default(),
            pending_wake: Vec::new(),
            pending_close: Vec::new(),
            dirty: false,
            next_deadline: None,
        }
    }

    /// A new backend connection of `backend` to `server` is up: the pool learns it (in use by
    /// `session`; multiplexed with `capacity` streams when given), the connect is counted (with
    /// its time since `since`, and a TLS handshake as full or resumed) and TCP keepalive set.
    pub(super) fn note_connected(
        &mut self,
        cx: &Cx<'_>,
        b: usize,
        server: ServerId,
        session: SessionId,
        since: Instant,
        capacity: Option<u32>,
    ) {
        let now = cx.now();
        let id = conn_id(cx.id());
        let noted = match capacity {
            Some(c) => self.pools[b].connected_mux(server, id, session, c, now),
            None => self.pools[b].connected(server, id, session, now),
        };
        if let Err(e) = noted {
            tracing::warn!("pool bookkeeping: {e}");
        }
        let s = &mut self.stats[b];
        s.connects += 1;
        s.connect_time_us += now.saturating_duration_since(since).as_micros() as u64;
        if let Some(tls) = cx.session::<Box<coreplex_tls::State>>() {
            s.tls_handshakes[usize::from(tls.agreed().resumed)] += 1;
        }
        if let Some(k) = &self.backends[b].config.tcp_keepalive {
            set_keepalive(cx, k);
        }
    }

    /// What the request rewrite adds for backend `b` (`tls`: the client spoke TLS).
    pub(super) fn forwarding(
        &self,
        b: usize,
        client: Option<std::net::IpAddr>,
        tls: bool,
    ) -> rewrite::Forwarding<'_> {
        let rt = &self.backends[b];
        rewrite::Forwarding {
            client,
            forwarded_for: rt.config.forwarded_for,
            forwarded: rt.config.forwarded,
            default_host: &rt.default_host,
            via: rt.config.via,
            tls,
        }
    }

    /// The engine closed backend connection `id` of `backend`: the pool forgets it (freeing its
    /// request slot if it was in use).
    pub(super) fn backend_conn_closed(&mut self, backend: usize, id: Id) {
        if let Some(pool) = self.pools.get_mut(backend) {
            if pool.conn_closed(conn_id(id)) {
                self.dirty = true;
            }
        }
    }

    /// Backend connection `id` of backend `b`, in use by client `client`, is now a tunnel: the
    /// pool keeps only its slot, and the client session (which makes no more requests) ends.
    pub(super) fn tunnel_started(&mut self, b: usize, id: Id, client: Id) {
        if let Some(server) = self.pools[b].tunnel_started(conn_id(id)) {
            self.tunnel_servers.insert(id, server);
        }
        self.session_closed(client);
    }

    /// A tunnel's backend connection `id` of backend `b` closed (its pool record, if it still
    /// had one, is forgotten as for any connection).
    pub(super) fn tunnel_conn_closed(&mut self, b: usize, id: Id) {
        match self.tunnel_servers.remove(&id) {
            Some(server) => {
                self.pools[b].tunnel_closed(server);
                self.dirty = true;
            }
            None => self.backend_conn_closed(b, id),
        }
    }

    /// A client session ended: its idle private backend connections close at the next poll.
    pub(super) fn session_closed(&mut self, client: Id) {
        self.client_ips.remove(&client);
        let session = session_id(client);
        for pool in &mut self.pools {
            for c in pool.session_closed(session) {
                self.pending_close.push(engine_id(c));
            }
        }
        self.dirty = true;
    }

    /// Queue timeouts, idle expiry, purges and queue wake-ups, due at `now`.
    pub(super) fn poll(&mut self, now: Instant, actions: &mut ShardActions) -> Option<Instant> {
        if self.pools.is_empty() {
            return None;
        }
        for id in self.pending_close.drain(..) {
            actions.close(id, CloseReason::Done);
        }
        for id in self.pending_wake.drain(..) {
            actions.wake(id);
        }
        if !self.dirty && self.next_deadline.is_none_or(|d| d > now) {
            return self.next_deadline;
        }
        self.dirty = false;
        let mut next: Option<Instant> = None;
        for b in 0..self.pools.len() {
            let expired = self.pools[b].expire(now);
            for t in expired.queue_timeouts {
                if let Some(w) = self.tickets.remove(&(b, t)) {
                    if let Some(client) = self.set_stage(w, Stage::TimedOut) {
                        actions.wake(client);
                    }
                }
            }
            for c in expired.close {
                actions.close(engine_id(c), CloseReason::KeepAliveTimeout);
            }
            for (t, decision) in self.pools[b].poll_queue(now) {
                match self
                    .tickets
                    .remove(&(b, t))
                    .and_then(|w| self.set_stage(w, Stage::Ready(decision)))
                {
                    Some(client) => actions.wake(client),
                    None => self.abandon(b, decision),
                }
            }
            if let Some(d) = self.pools[b].next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        self.next_deadline = next;
        next
    }

    /// Moves queued exchange `key` to `stage`; returns the client connection to wake (`None`:
    /// the exchange is gone).
    fn set_stage(&mut self, key: u64, stage: Stage) -> Option<Id> {
        let ex = self.streams.get_mut(&key)?;
        ex.stage = stage;
        Some(ex.client)
    }

    /// Returns what an abandoned exchange of `backend` holds in its pool: a queue ticket, an
    /// unused decision or a connection attempt. (A backend connection in use frees its slot
    /// when it closes.)
    pub(super) fn discard(&mut self, b: usize, stage: Stage, connected: bool, server: ServerId) {
        match stage {
            Stage::Queued(t) => {
                self.tickets.remove(&(b, t));
                self.abandon(b, Acquire::Queued(t));
            }
            Stage::Ready(decision) => self.abandon(b, decision),
            Stage::Connecting if !connected => self.abandon(b, Acquire::Connect { server }),
            _ => {}
        }
    }

    /// Exchange `key` left work for its h2 backend connection `id` (a no-op for an HTTP/1.1
    /// one): its next pump looks at that stream.
    pub(super) fn touch_h2(&mut self, id: Id, key: u64) {
        if let Some(h) = self.h2_conns.get_mut(&id) {
            h.touched.push(key);
        }
    }

    /// Tells backend `b`'s pool what became of an attempt to connect to `server` (a failure's
    /// [`PoolNote`](verdict::PoolNote)).
    pub(super) fn note_attempt(
        &mut self,
        b: usize,
        server: ServerId,
        note: verdict::PoolNote,
        now: Instant,
    ) {
        match note {
            verdict::PoolNote::Nothing => {}
            verdict::PoolNote::Aborted => {
                let _ = self.pools[b].connect_aborted(server);
            }
            verdict::PoolNote::Failed => {
                let _ = self.pools[b].connect_failed(server, now);
            }
        }
    }

    /// Closes backend connection `id` at the next poll.
    pub(super) fn close_later(&mut self, id: Id) {
        self.pending_close.push(id);
        self.dirty = true;
    }

    /// Wakes client connection `id` at the next poll.
    pub(super) fn wake_later(&mut self, id: Id) {
        self.pending_wake.push(id);
        self.dirty = true;
    }

    /// Gives back a decision nobody will use (its client left between the queue and the wake).
    pub(super) fn abandon(&mut self, backend: usize, decision: Acquire) {
        let pool = &mut self.pools[backend];
        match decision {
            Acquire::Reuse { conn, .. } => {
                if let Ok(coreplex_pool::Release::Close) =
                    pool.release(conn, true, false, Instant::now())
                {
                    self.pending_close.push(engine_id(conn));
                }
            }
            Acquire::Connect { server } => {
                let _ = pool.connect_aborted(server);
            }
            Acquire::Queued(t) => {
                pool.cancel(t);
            }
            Acquire::Unavailable(_) => {}
        }
        self.dirty = true;
    }

    /// Statistics with fresh pool snapshots.
    pub(super) fn stats(&mut self) -> Vec<BackendStats> {
        for (s, pool) in self.stats.iter_mut().zip(&self.pools) {
            s.pool = pool.stats();
        }
        self.stats.clone()
    }
}

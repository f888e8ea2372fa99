//! Statistics snapshots of one backend pool on one shard (summed across shards by the admin side).
//!
//! All counters are monotonic except the `current`/gauge fields. Reuse ratio inputs:
//! `reused / (reused + new_conns)`.

use std::time::Instant;

/// Counters of one wait queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests waiting now.
    pub current: usize,
    /// Most requests ever waiting at once.
    pub max: usize,
    /// Requests that ever entered the queue.
    pub total: u64,
    /// Requests that left on `timeout queue` (answered 503).
    pub timeouts: u64,
}

/// Why the pool told the engine to close connections (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseStats {
    /// Released with `reusable == false`.
    pub not_reusable: u64,
    /// `max_reuse` reached.
    pub max_reuse: u64,
    /// `max_idle_per_server` reached.
    pub pool_full: u64,
    /// The session already kept `max_private_per_session` idle private connections, or was gone.
    pub private_cap: u64,
    /// Idle private connections closed with their session.
    pub session_closed: u64,
    /// Idle longer than `idle_timeout`.
    pub idle_timeout: u64,
    /// Closed by the periodic purge.
    pub purged: u64,
    /// Released while the idle connections already covered the estimated need (HAProxy's
    /// `srv_add_to_idle_list`): not kept.
    pub surplus: u64,
    /// Reported closed by the engine (`conn_closed`).
    pub by_engine: u64,
}

impl CloseStats {
    pub(crate) fn add(&mut self, other: &Self) {
        self.not_reusable += other.not_reusable;
        self.max_reuse += other.max_reuse;
        self.pool_full += other.pool_full;
        self.private_cap += other.private_cap;
        self.session_closed += other.session_closed;
        self.idle_timeout += other.idle_timeout;
        self.purged += other.purged;
        self.surplus += other.surplus;
        self.by_engine += other.by_engine;
    }
}

/// Snapshot of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Idle shared connections that served one request.
    pub idle: usize,
    /// Idle shared connections that served two or more.
    pub safe: usize,
    /// Idle private connections.
    pub private: usize,
    /// Requests holding a slot (connections in use plus connection attempts), the maxconn gauge.
    pub in_flight: u32,
    /// Of those, streams on multiplexed (HTTP/2) connections.
    pub streams: u32,
    /// Of those, tunnels (connections that switched protocols, never back in the pool).
    pub tunnels: u32,
    /// Connection attempts outstanding.
    pub connecting: u32,
    /// Connections established.
    pub new_conns: u64,
    /// Requests given an idle connection.
    pub reused: u64,
    /// The server's own queue.
    pub queue: QueueStats,
    /// Connect failures ever.
    pub connect_failures: u64,
    /// Consecutive connect failures now.
    pub consecutive_failures: u32,
    /// Times marked down.
    pub times_down: u64,
    /// End of the current down period.
    pub down_until: Option<Instant>,
    /// Why connections were closed.
    pub closed: CloseStats,
}

/// Snapshot of one backend pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Per server, indexed by [`ServerId`](crate::ServerId).
    pub servers: Vec<ServerStats>,
    /// The backend queue.
    pub queue: QueueStats,
    /// Requests holding a slot over all servers (the backend maxconn gauge).
    pub in_flight: u32,
    /// Requests given a connection (reused or new).
    pub requests: u64,
    /// Requests given an idle connection.
    pub reused: u64,
    /// Connections established.
    pub new_conns: u64,
    /// Requests refused with `QueueFull`.
    pub queue_full: u64,
    /// Requests refused with `AllServersDown`.
    pub all_down: u64,
    /// Why connections were closed (sum over servers).
    pub closed: CloseStats,
    /// Session records held (open sessions that used this backend).
    pub sessions: usize,
    /// Backend connections tracked (idle and in use).
    pub conns: usize,
}

impl PoolStats {
    /// Share of connection assignments that reused an idle connection, if any happened.
    #[must_use]
    pub fn reuse_ratio(&self) -> Option<f64> {
        let total = self.reused + self.new_conns;
        // Counters stay far below 2^52: the conversion is exact in practice.
        #[allow(clippy::cast_precision_loss)]
        (total > 0).then(|| self.reused as f64 / total as f64)
    }
}

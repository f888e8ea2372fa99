//! Policy types of one backend: servers, balancing, reuse mode, pool sizing, limits, health.
//!
//! Everything here is plain data; [`BackendPolicy::validate`] is the only logic.
//!
//! # Limits are per shard
//! A pool belongs to one shard and no request or connection state crosses cores, so every count
//! here is **one shard's share**. The config layer divides each global limit `L` among `N` shards
//! as `L / N`, the first `L % N` shards getting one more (the shares sum to `L`), and at least 1 on
//! every shard for a limit of at least 1 (a configured limit never turns a shard into one that
//! refuses everything; below `N` the shares sum to more than `L`); this applies to server
//! `maxconn`, `maxqueue` and `conn_rate`, backend `maxconn` and `queue_cap`, and
//! `max_idle_per_server` (`coreplex_engine::limits::shard_share`, also used for listener rate limits).
//! Example: server `maxconn 100` over 8 shards gives shards 0-3 a limit of 13 and shards 4-7 a
//! limit of 12. A shard's requests never borrow another shard's slots: with skewed load the
//! effective limit can be lower than `L`, and higher only by the floor of 1 (`L < N`). Timeouts and per-session or
//! per-connection limits (`idle_timeout`, `queue_timeout`, `max_reuse`, `max_private_per_session`)
//! are not divided.
//!
//! Defaults follow HAProxy where it has one (`http-reuse safe`, `pool-purge-delay 5s`,
//! `max-session-srv-conns 5`, weight 1, unlimited `pool-max-conn` and `max-reuse`).

use std::time::Duration;

use crate::error::PolicyError;

/// HAProxy's `http-reuse` modes. See [`crate::reuse`] for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReuseMode {
    /// Every backend connection is private to the session that opened it (plain keep-alive).
    Never,
    /// A session's first request uses its own connection only; later requests may use idle, then
    /// safe connections. The default.
    #[default]
    Safe,
    /// First requests may use safe (proven) connections, else a new one.
    Aggressive,
    /// First requests may use safe, then idle connections, else a new one.
    Always,
}

/// Server selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest in-flight requests; ties go to the higher weight, then the lower index.
    LeastConn,
}

/// Per-server policy (one shard's share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Relative weight; 0 takes no new requests (drain) but still serves its sessions' private
    /// connections.
    pub weight: u32,
    /// Concurrent requests (not connections) this server may serve; `None` is unlimited.
    pub maxconn: Option<u32>,
    /// Length cap of this server's own queue (requests waiting for this server because their
    /// session's private connection lives there); `None` is unlimited. When full, such a request is
    /// redispatched like any other (HAProxy's `maxqueue`).
    pub maxqueue: Option<u32>,
    /// New connections per second (token bucket, burst = the rate); `None` is unlimited.
    pub conn_rate: Option<u32>,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            weight: 1,
            maxconn: None,
            maxqueue: None,
            conn_rate: None,
        }
    }
}

impl ServerPolicy {
    /// A server with the given weight and no limits.
    #[must_use]
    pub fn weighted(weight: u32) -> Self {
        Self {
            weight,
            ..Self::default()
        }
    }
}

/// HAProxy's `pool-purge-delay` default.
pub const DEFAULT_PURGE_DELAY: Duration = Duration::from_secs(5);
/// HAProxy's `max-session-srv-conns` default.
pub const DEFAULT_MAX_PRIVATE_PER_SESSION: usize = 5;
/// Default idle timeout of a pooled backend connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `timeout queue`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default consecutive connect failures that mark a server down.
pub const DEFAULT_FAIL_THRESHOLD: u32 = 3;
/// Default time a server stays down after `fail_threshold` failures.
pub const DEFAULT_DOWN_FOR: Duration = Duration::from_secs(10);

/// Policy of one backend on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPolicy {
    /// The servers; [`ServerId`](crate::ServerId) indexes this list.
    pub servers: Vec<ServerPolicy>,
    /// Server selection.
    pub balance: Balance,
    /// Connection sharing between sessions (`http-reuse`).
    pub reuse: ReuseMode,
    /// `pool-max-conn`: idle shared connections kept per server (`None` unlimited, `Some(0)` none).
    /// Private connections are bounded by `max_private_per_session` instead.
    pub max_idle_per_server: Option<usize>,
    /// An idle connection (shared or private) older than this is closed by
    /// [`BackendPool::expire`](crate::BackendPool::expire).
    pub idle_timeout: Duration,
    /// `pool-purge-delay`: every interval, half of the idle shared connections above the estimated
    /// need are closed (HAProxy's `srv_cleanup_idle_conns`).
    pub purge_delay: Duration,
    /// `max-reuse`: requests one backend connection may carry (`Some(0)` and `Some(1)`: no reuse).
    pub max_reuse: Option<u32>,
    /// `max-session-srv-conns`: idle private connections kept per session.
    pub max_private_per_session: usize,
    /// Backend-level cap on concurrent requests over all servers; `None` is unlimited.
    pub maxconn: Option<u32>,
    /// Length cap of the backend queue; beyond it requests get
    /// [`Unavailable::QueueFull`](crate::Unavailable::QueueFull). `None` is unlimited (HAProxy).
    pub queue_cap: Option<usize>,
    /// `timeout queue`: the longest a request waits in a queue before the engine answers 503.
    pub queue_timeout: Duration,
    /// Consecutive connect failures that mark a server down; 0 disables passive health.
    pub fail_threshold: u32,
    /// How long a server marked down stays down.
    pub down_for: Duration,
}

impl BackendPolicy {
    /// A policy over `servers` with the defaults: round-robin, `safe` reuse, unlimited pool,
    /// 60 s idle timeout, 5 s purge delay, unlimited reuse, 5 private connections per session, no
    /// backend maxconn, unbounded queue, 5 s queue timeout, down after 3 failures for 10 s.
    #[must_use]
    pub fn new(servers: Vec<ServerPolicy>) -> Self {
        Self {
            servers,
            balance: Balance::default(),
            reuse: ReuseMode::default(),
            max_idle_per_server: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            purge_delay: DEFAULT_PURGE_DELAY,
            max_reuse: None,
            max_private_per_session: DEFAULT_MAX_PRIVATE_PER_SESSION,
            maxconn: None,
            queue_cap: None,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            fail_threshold: DEFAULT_FAIL_THRESHOLD,
            down_for: DEFAULT_DOWN_FOR,
        }
    }

    /// Checks that the policy can work.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.servers.is_empty() {
            return Err(PolicyError::NoServers);
        }
        if u32::try_from(self.servers.len()).is_err() {
            return Err(PolicyError::TooManyServers(self.servers.len()));
        }
        if self.servers.iter().all(|s| s.weight == 0) {
            return Err(PolicyError::AllWeightsZero);
        }
        for (i, s) in self.servers.iter().enumerate() {
            // Cannot truncate: the length fits in u32 (checked above).
            let server = i as u32;
            if s.maxconn == Some(0) {
                return Err(PolicyError::ZeroServerMaxconn { server });
            }
            if s.conn_rate == Some(0) {
                return Err(PolicyError::ZeroConnRate { server });
            }
        }
        if self.maxconn == Some(0) {
            return Err(PolicyError::ZeroBackendMaxconn);
        }
        if self.purge_delay.is_zero() {
            return Err(PolicyError::ZeroPurgeDelay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_haproxy() {
        let p = BackendPolicy::new(vec![ServerPolicy::default()]);
        assert_eq!(p.reuse, ReuseMode::Safe);
        assert_eq!(p.balance, Balance::RoundRobin);
        assert_eq!(p.purge_delay, Duration::from_secs(5));
        assert_eq!(p.max_private_per_session, 5);
        assert_eq!(p.servers[0].weight, 1);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validation_errors() {
        let mut p = BackendPolicy::new(vec![]);
        assert_eq!(p.validate(), Err(PolicyError::NoServers));
        p.servers = vec![ServerPolicy::weighted(0), ServerPolicy::weighted(0)];
        assert_eq!(p.validate(), Err(PolicyError::AllWeightsZero));
        p.servers = vec![ServerPolicy::weighted(0), ServerPolicy::weighted(1)];
        assert_eq!(p.validate(), Ok(()));
        p.servers[1].maxconn = Some(0);
        assert_eq!(
            p.validate(),
            Err(PolicyError::ZeroServerMaxconn { server: 1 })
        );
        p.servers[1].maxconn = None;
        p.servers[0].conn_rate = Some(0);
        assert_eq!(p.validate(), Err(PolicyError::ZeroConnRate { server: 0 }));
        p.servers[0].conn_rate = None;
        p.maxconn = Some(0);
        assert_eq!(p.validate(), Err(PolicyError::ZeroBackendMaxconn));
        p.maxconn = None;
        p.purge_delay = Duration::ZERO;
        assert_eq!(p.validate(), Err(PolicyError::ZeroPurgeDelay));
    }
}

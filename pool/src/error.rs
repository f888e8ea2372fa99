//! Error enums of the pool layer.
//!
//! - [`PolicyError`]: a [`BackendPolicy`](crate::BackendPolicy) that cannot work, reported by
//!   [`BackendPool::new`](crate::BackendPool::new) (the config layer maps it to a key path).
//! - [`PoolError`]: the engine called the pool out of protocol (an unknown connection, a `connected`
//!   without a `Connect` decision...). The pool's state is left unchanged when one is returned, so the
//!   engine may log it and close the connection.
//! - [`Unavailable`]: no backend connection can be had for a request; the engine answers 503.

use crate::ids::{ConnId, ServerId};

/// A backend policy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The backend lists no server.
    #[error("the backend has no server")]
    NoServers,
    /// More servers than a [`ServerId`] can name.
    #[error("the backend has {0} servers; at most 4294967295 are supported")]
    TooManyServers(usize),
    /// Every server has weight 0, so none can take a new request.
    #[error("every server has weight 0: no server can take new requests")]
    AllWeightsZero,
    /// A server's `maxconn` is 0 (use weight 0 to drain a server instead).
    #[error("server {server}: maxconn 0 admits no request (use weight 0 to drain a server)")]
    ZeroServerMaxconn {
        /// The server's index.
        server: u32,
    },
    /// A server's `conn_rate` is 0, so it could never open a connection.
    #[error(
        "server {server}: conn_rate 0 never allows a new connection (leave it unset for no limit)"
    )]
    ZeroConnRate {
        /// The server's index.
        server: u32,
    },
    /// The backend-level `maxconn` is 0.
    #[error("backend maxconn 0 admits no request")]
    ZeroBackendMaxconn,
    /// `purge_delay` is zero.
    #[error("purge_delay must be greater than zero")]
    ZeroPurgeDelay,
}

/// The engine called the pool out of protocol. The pool's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The server index is outside the server list.
    #[error("{0} is not in the server list")]
    UnknownServer(ServerId),
    /// `connected`, `connect_failed` or `connect_aborted` for a server without an outstanding
    /// [`Acquire::Connect`](crate::Acquire::Connect) decision.
    #[error("{0} has no connection attempt outstanding")]
    NoPendingConnect(ServerId),
    /// `join` on a connection that is not multiplexed, in use, with a free stream.
    #[error("{0} has no free stream")]
    NoFreeStream(ConnId),
    /// `connected` with a connection id the pool already tracks.
    #[error("{0} is already tracked by the pool")]
    DuplicateConn(ConnId),
    /// The pool does not track this connection (never connected, or already closed or forgotten).
    #[error("{0} is not tracked by the pool")]
    UnknownConn(ConnId),
    /// `release` of a connection that is idle, not in use.
    #[error("{0} is not in use")]
    ConnNotInUse(ConnId),
}

/// Why a request cannot get a backend connection. The engine answers `503 Service Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// Every server that may take new requests is down (passive health).
    #[error("all servers are down")]
    AllServersDown,
    /// Every eligible server is at its limit and the backend queue is at `queue_cap`.
    #[error("the backend queue is full")]
    QueueFull,
}

impl Unavailable {
    /// The HTTP status the engine answers with.
    #[must_use]
    pub const fn http_status(self) -> u16 {
        503
    }

    /// A short label for metrics.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::AllServersDown => "all_servers_down",
            Self::QueueFull => "queue_full",
        }
    }
}

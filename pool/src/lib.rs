//! coreplex-pool: the backend connection pool **policy** of one backend on one shard.
//!
//! It implements HAProxy's semantics (`../shared/reference/reuse-timeouts-limits.md`): the reuse
//! modes never/safe/aggressive/always over private/idle/safe lists with the first-request rule,
//! NTLM/Negotiate private marking, `pool-max-conn`, `pool-purge-delay`, `max-reuse`, server
//! `maxconn` counting concurrent requests with server and backend queues and `timeout queue`, and
//! goes beyond it with a backend-level `maxconn`, a bounded backend queue and per-server
//! connection-rate limits. It also balances (smooth weighted round-robin, least-connections) and
//! keeps passive health from connect outcomes.
//!
//! The crate is fully deterministic: no I/O, no clock (every time is an `Instant` argument), no
//! threads, no `unsafe`. The engine owns the sockets and hands the pool opaque handles
//! ([`ConnId`], [`SessionId`]); the pool decides ([`Acquire`], [`Release`], [`Expired`]). A pool is
//! plain data owned by one shard; its limits are the shard's share (see [`BackendPolicy`]).
//!
//! Modules: [`config`] (policy types), [`reuse`] (the mode rules, documented there), `conns`
//! (connection records and lists), `session` (per-session records), `queue` (FIFO wait queues),
//! `rate` (token bucket), `balance` (server selection), `health` (passive health), `purge` (idle
//! purge estimator), [`stats`] and `pool` ([`BackendPool`], the facade; its docs give the protocol
//! with the engine).
#![forbid(unsafe_code)]

mod balance;
pub mod config;
mod conns;
mod error;
mod health;
mod ids;
mod pool;
mod purge;
mod queue;
mod rate;
pub mod reuse;
mod session;
pub mod stats;

pub use config::{BackendPolicy, Balance, ReuseMode, ServerPolicy};
pub use error::{PolicyError, PoolError, Unavailable};
pub use ids::{ConnId, ServerId, SessionId, Ticket};
pub use pool::{Acquire, BackendPool, Expired, Release, RequestInfo};
pub use stats::{CloseStats, PoolStats, QueueStats, ServerStats};

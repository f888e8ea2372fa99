//! coreplex-tls: the TLS transport of coreplex, on rustls 0.23's unbuffered API (with the
//! aws-lc-rs provider), behind the engine's transport seam ([`coreplex_engine::Transport`]).
//!
//! - [`settings`]: what the configuration asks (plain data).
//! - [`certs`]: certificates and keys from PEM, their names and validity.
//! - [`resolver`]: certificates by server name (ECDSA or RSA by what the client accepts).
//! - [`hello`]: a first look at a client's bytes: plaintext HTTP, the server name.
//! - [`tickets`]: stateless tickets under one key set shared by every shard and instance.
//! - [`server`], [`client`]: rustls configurations for listeners and backends.
//! - `session` (private): the only module that speaks rustls' unbuffered API.
//! - `records` (private): a listener connection's records after its handshake, sealed and
//!   opened with the secrets rustls hands over; an idle connection keeps only those.
//! - [`transport`]: [`Tls`], one shard's transport; [`stats`]: its counters.
//!
//! No lock is taken on a handshake path: every shard holds its own copies of the
//! configurations, its own session caches, and the ticket keys (pushed to it on rotation).

#![forbid(unsafe_code)]

pub mod certs;
pub mod client;
pub mod error;
pub mod hello;
mod records;
pub mod resolver;
pub mod server;
mod session;
pub mod settings;
pub mod stats;
pub mod tickets;
pub mod transport;

pub use error::TlsError;
pub use session::Agreed;
pub use stats::TlsStats;
pub use transport::{ListenerTls, State, Tls};

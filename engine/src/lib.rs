//! coreplex-engine: the shard-per-core io_uring runtime under coreplex.
//!
//! A [`Runtime`] starts one [`shard`](crate::shard) per CPU, each a thread pinned to its core that
//! owns an io_uring, one SO_REUSEPORT listening socket per listener, a pre-sized slab of connections
//! with generation-tagged ids, a provided-buffer ring, a hierarchical timer wheel and its counters.
//! A protocol [`Service`] runs inside each shard and sees connections as byte streams.
//! Only control messages and statistics cross cores ([`control`]).
//!
//! The engine knows no HTTP. All `unsafe` code lives in [`sys`].
#![deny(unsafe_op_in_unsafe_fn)]

pub mod control;
pub mod cpus;
pub mod error;
pub mod limits;
pub mod listener;
pub mod probe;
mod runtime;
pub mod service;
mod shard;
pub mod stats;
pub mod sys;
pub mod table;
pub mod token;
pub mod transport;
pub mod wheel;

pub use control::{Control, SendError, ShardHandle, ShardReport};
pub use error::EngineError;
pub use listener::ListenerSpec;
pub use runtime::{Runtime, RuntimeConfig, RuntimeHandle};
pub use service::{CloseReason, ConnCx, Origin, Preface, Service, ShardActions, DEADLINES};
pub use shard::ShardConfig;
pub use stats::EngineStats;
pub use table::Id;
pub use transport::{Plain, Received, Status, Transport};

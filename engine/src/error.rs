//! Engine startup errors. Each names its cause and its fix.

use crate::cpus::CpuListError;
use crate::sys::RingError;
use std::net::SocketAddr;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// io_uring setup failed.
    #[error("shard {shard}: {source}")]
    Ring {
        /// Shard number.
        shard: usize,
        /// The cause.
        #[source]
        source: RingError,
    },
    /// A listener address is taken.
    #[error("cannot listen on {addr}: address already in use (another process holds the port: stop it or change the listener's bind address)")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding or listening failed for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// CPU list problem.
    #[error(transparent)]
    Cpus(#[from] CpuListError),
    /// Pinning a shard failed.
    #[error("cannot pin shard {shard} to cpu {cpu}: {source}")]
    Pin {
        /// Shard number.
        shard: usize,
        /// CPU.
        cpu: usize,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Creating a thread or eventfd failed.
    #[error("cannot start shard {shard}: {source}")]
    Spawn {
        /// Shard number.
        shard: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

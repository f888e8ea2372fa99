//! Identifiers exchanged between the engine and the pool.
//!
//! The engine owns every socket; the pool only sees opaque handles. Invariants:
//! - a [`ServerId`] is an index into [`BackendPolicy::servers`](crate::BackendPolicy::servers);
//! - a [`ConnId`] names one live backend connection and a [`SessionId`] one client session for as long
//!   as the pool knows them: the engine must not reuse a value while the pool still tracks it (the
//!   engine's generation-tagged slab tokens satisfy this);
//! - a [`Ticket`] is minted by the pool, strictly increasing, and names one queued request.

use std::fmt;

/// Index of a server in the backend's server list ([`BackendPolicy::servers`](crate::BackendPolicy::servers)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u32);

impl ServerId {
    /// The index into the server list.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server#{}", self.0)
    }
}

/// Opaque engine handle of one backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Opaque engine handle of one client session (a frontend connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// A queued request, minted by [`BackendPool::acquire`](crate::BackendPool::acquire) or
/// [`BackendPool::retry`](crate::BackendPool::retry). Tickets grow strictly in arrival order, so
/// comparing two tickets compares their age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub(crate) u64);

impl Ticket {
    /// The ticket's number (for logs and engine-side maps).
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ticket#{}", self.0)
    }
}

//! Per-session records: the session's idle private connections, its affinity connection and how
//! many of its requests hold a backend connection.
//!
//! A record is created when a session is first given a connection and removed by
//! [`BackendPool::session_closed`](crate::BackendPool::session_closed) — or, when the session still
//! has requests in flight, when the last of them ends. So the engine must report every session that
//! acquired a connection as closed. Invariants: `private` lists only idle private connections owned
//! by the session (oldest first, at most `max_private_per_session`); a closed record has no private
//! connection and no affinity, and keeps no private connection released later.

use std::collections::HashMap;

use crate::ids::{ConnId, SessionId};

/// One session's record.
#[derive(Debug, Default)]
pub(crate) struct SessionRec {
    /// Idle private connections, oldest first.
    pub(crate) private: Vec<ConnId>,
    /// The shared connection the session used last (affinity), possibly stale.
    pub(crate) last: Option<ConnId>,
    /// The multiplexed connection in use reserved for the session (its streams join it first),
    /// possibly stale.
    pub(crate) mux: Option<ConnId>,
    /// Requests of the session holding a backend connection (a multiplexed connection counts
    /// once, for the session it is reserved for).
    pub(crate) in_use: u32,
    /// The session ended while requests were still in flight.
    pub(crate) closed: bool,
}

/// All session records of a backend.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: HashMap<SessionId, SessionRec>,
}

impl Sessions {
    /// The record of an open session.
    pub(crate) fn get(&self, session: SessionId) -> Option<&SessionRec> {
        self.map.get(&session).filter(|r| !r.closed)
    }

    /// The record of an open session, mutably.
    pub(crate) fn get_mut(&mut self, session: SessionId) -> Option<&mut SessionRec> {
        self.map.get_mut(&session).filter(|r| !r.closed)
    }

    /// A request of `session` now holds a connection.
    pub(crate) fn assign(&mut self, session: SessionId) {
        self.map.entry(session).or_default().in_use += 1;
    }

    /// A request of `session` released its connection.
    pub(crate) fn unassign(&mut self, session: SessionId) {
        if let Some(rec) = self.map.get_mut(&session) {
            rec.in_use = rec.in_use.saturating_sub(1);
            if rec.closed && rec.in_use == 0 {
                self.map.remove(&session);
            }
        }
    }

    /// Forgets `conn` from the session's private list.
    pub(crate) fn remove_private(&mut self, session: SessionId, conn: ConnId) {
        if let Some(rec) = self.map.get_mut(&session) {
            rec.private.retain(|&c| c != conn);
        }
    }

    /// Ends a session: returns its idle private connections.
    pub(crate) fn close(&mut self, session: SessionId) -> Vec<ConnId> {
        let Some(rec) = self.map.get_mut(&session) else {
            return Vec::new();
        };
        let private = std::mem::take(&mut rec.private);
        rec.last = None;
        rec.mux = None;
        rec.closed = true;
        if rec.in_use == 0 {
            self.map.remove(&session);
        }
        private
    }

    /// Number of records (open, or closed with requests in flight).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// All records (tests).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SessionId, &SessionRec)> {
        self.map.iter()
    }
}

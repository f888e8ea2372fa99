//! The connection table: one record per backend connection the pool tracks, and per server the three
//! idle lists (private, idle, safe) threaded through the records.
//!
//! Lists are doubly linked through the records (keys are [`ConnId`]s, as pingora-pool's LRU threads
//! its entries), ordered by release time: the back is the most recently released (taken first), the
//! front the oldest (closed first by idle timeout and purge). Every operation is O(1) expected.
//! Invariants: a record is in exactly one list iff it is idle, and that list is its server's list of
//! the kind its state names; an in-use record is in no list and has no links; list lengths are exact.

use std::collections::HashMap;
use std::time::Instant;

use crate::ids::{ConnId, ServerId, SessionId};
use crate::reuse::ListKind;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Carrying a request of `session`.
    InUse {
        /// The session whose request it carries.
        session: SessionId,
    },
    /// In a list since `since`.
    Idle {
        /// Which list.
        list: ListKind,
        /// When it was released.
        since: Instant,
    },
}

/// The stream state of a multiplexed (HTTP/2) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mux {
    /// Streams in flight (each holds a request slot); at least 1 while in use, 0 while idle.
    pub(crate) streams: u32,
    /// Streams it may carry at once: min(ours, the peer's SETTINGS_MAX_CONCURRENT_STREAMS).
    pub(crate) capacity: u32,
    /// No new streams (GOAWAY, `max_reuse` reached, or the engine said so): it closes when its
    /// last stream ends.
    pub(crate) draining: bool,
}

impl Mux {
    /// Whether another stream may start on it.
    pub(crate) fn has_room(&self) -> bool {
        !self.draining && self.streams < self.capacity
    }
}

/// One backend connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnRec {
    /// Its server.
    pub(crate) server: ServerId,
    /// What it is doing.
    pub(crate) state: ConnState,
    /// Requests it has been given (the current one included).
    pub(crate) served: u32,
    /// Bound to `owner` for its whole life (NTLM/Negotiate, or mode `never`).
    pub(crate) owner: Option<SessionId>,
    /// `Some` for a multiplexed connection. In use, its state names the session it is
    /// reserved for (the one that took it), whose streams may join it in every mode.
    pub(crate) mux: Option<Mux>,
    prev: Option<ConnId>,
    next: Option<ConnId>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ListHead {
    head: Option<ConnId>,
    tail: Option<ConnId>,
    len: usize,
}

/// Records and lists.
#[derive(Debug)]
pub(crate) struct ConnTable {
    map: HashMap<ConnId, ConnRec>,
    lists: Vec<[ListHead; ListKind::COUNT]>,
}

impl ConnTable {
    /// An empty table for `servers` servers.
    pub(crate) fn new(servers: usize) -> Self {
        Self {
            map: HashMap::new(),
            lists: vec![[ListHead::default(); ListKind::COUNT]; servers],
        }
    }

    /// A connection's record.
    pub(crate) fn get(&self, conn: ConnId) -> Option<&ConnRec> {
        self.map.get(&conn)
    }

    /// Whether the table tracks `conn`.
    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.map.contains_key(&conn)
    }

    /// Tracked connections.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds a new connection, in use by `session` for its first request.
    pub(crate) fn insert_in_use(&mut self, conn: ConnId, server: ServerId, session: SessionId) {
        self.map.insert(
            conn,
            ConnRec {
                server,
                state: ConnState::InUse { session },
                served: 1,
                owner: None,
                mux: None,
                prev: None,
                next: None,
            },
        );
    }

    /// A multiplexed connection's stream state, mutably.
    pub(crate) fn mux_mut(&mut self, conn: ConnId) -> Option<&mut Mux> {
        self.map.get_mut(&conn).and_then(|r| r.mux.as_mut())
    }

    /// Counts one more request (stream) given to an in-use connection.
    pub(crate) fn bump_served(&mut self, conn: ConnId) {
        if let Some(rec) = self.map.get_mut(&conn) {
            rec.served = rec.served.saturating_add(1);
        }
    }

    /// Makes a connection multiplexed (right after [`ConnTable::insert_in_use`]).
    pub(crate) fn set_mux(&mut self, conn: ConnId, mux: Mux) {
        if let Some(rec) = self.map.get_mut(&conn) {
            rec.mux = Some(mux);
        }
    }

    /// Marks an in-use connection private to `owner` (sticky).
    pub(crate) fn set_owner(&mut self, conn: ConnId, owner: SessionId) {
        if let Some(rec) = self.map.get_mut(&conn) {
            rec.owner = Some(owner);
        }
    }

    /// Puts an in-use connection at the back of its server's `list`.
    pub(crate) fn park(&mut self, conn: ConnId, list: ListKind, since: Instant) {
        let Some(rec) = self.map.get_mut(&conn) else {
            return;
        };
        debug_assert!(matches!(rec.state, ConnState::InUse { .. }));
        rec.state = ConnState::Idle { list, since };
        let head = &mut self.lists[rec.server.index()][list.index()];
        let old_tail = head.tail;
        rec.prev = old_tail;
        rec.next = None;
        head.tail = Some(conn);
        if head.head.is_none() {
            head.head = Some(conn);
        }
        head.len += 1;
        if let Some(t) = old_tail {
            if let Some(r) = self.map.get_mut(&t) {
                r.next = Some(conn);
            }
        }
    }

    /// Takes an idle connection out of its list for a request of `session`.
    pub(crate) fn take(&mut self, conn: ConnId, session: SessionId) {
        self.unlink(conn);
        if let Some(rec) = self.map.get_mut(&conn) {
            rec.state = ConnState::InUse { session };
            rec.served = rec.served.saturating_add(1);
        }
    }

    /// Forgets a connection (unlinking it when idle).
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<ConnRec> {
        self.unlink(conn);
        self.map.remove(&conn)
    }

    /// The most recently released connection of a list.
    pub(crate) fn newest(&self, server: ServerId, list: ListKind) -> Option<ConnId> {
        self.lists[server.index()][list.index()].tail
    }

    /// The oldest connection of a list and its release time.
    pub(crate) fn oldest(&self, server: ServerId, list: ListKind) -> Option<(ConnId, Instant)> {
        let conn = self.lists[server.index()][list.index()].head?;
        match self.map.get(&conn)?.state {
            ConnState::Idle { since, .. } => Some((conn, since)),
            ConnState::InUse { .. } => None,
        }
    }

    /// Length of a list.
    pub(crate) fn list_len(&self, server: ServerId, list: ListKind) -> usize {
        self.lists[server.index()][list.index()].len
    }

    /// Idle shared connections (idle + safe) of a server.
    pub(crate) fn shared_len(&self, server: ServerId) -> usize {
        self.list_len(server, ListKind::Idle) + self.list_len(server, ListKind::Safe)
    }

    /// The newest connection of the first list among `lists` on `server` holding one of the
    /// kind the request can use (`multiplexed`: an h2 stream, which any connection can carry;
    /// else an HTTP/1 request, which a multiplexed connection cannot).
    pub(crate) fn first_in(
        &self,
        server: ServerId,
        lists: &[ListKind],
        multiplexed: bool,
    ) -> Option<ConnId> {
        lists.iter().find_map(|&l| {
            let mut cur = self.newest(server, l);
            while let Some(c) = cur {
                let rec = &self.map[&c];
                if multiplexed || rec.mux.is_none() {
                    return Some(c);
                }
                cur = rec.prev;
            }
            None
        })
    }

    /// Server and list of `conn` if it is idle in a shared list.
    pub(crate) fn idle_shared(&self, conn: ConnId) -> Option<(ServerId, ListKind)> {
        let rec = self.map.get(&conn)?;
        match rec.state {
            ConnState::Idle { list, .. } if list != ListKind::Private => Some((rec.server, list)),
            _ => None,
        }
    }

    fn unlink(&mut self, conn: ConnId) {
        let Some(rec) = self.map.get_mut(&conn) else {
            return;
        };
        let ConnState::Idle { list, .. } = rec.state else {
            return;
        };
        let (prev, next) = (rec.prev.take(), rec.next.take());
        let server = rec.server;
        let head = &mut self.lists[server.index()][list.index()];
        head.len -= 1;
        match prev {
            Some(p) => {
                if let Some(r) = self.map.get_mut(&p) {
                    r.next = next;
                }
            }
            None => head.head = next,
        }
        match next {
            Some(n) => {
                if let Some(r) = self.map.get_mut(&n) {
                    r.prev = prev;
                }
            }
            None => head.tail = prev,
        }
    }

    /// All records (tests).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ConnId, &ConnRec)> {
        self.map.iter()
    }

    /// Walks every list and checks the invariants (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut listed = 0;
        for (s, lists) in self.lists.iter().enumerate() {
            for kind in [ListKind::Private, ListKind::Idle, ListKind::Safe] {
                let head = lists[kind.index()];
                let mut n = 0;
                let mut prev = None;
                let mut cur = head.head;
                let mut last_since = None;
                while let Some(c) = cur {
                    let rec = &self.map[&c];
                    assert_eq!(rec.server.index(), s, "{c} listed under the wrong server");
                    assert_eq!(rec.prev, prev, "{c} back link");
                    let ConnState::Idle { list, since } = rec.state else {
                        panic!("{c} in a list while in use");
                    };
                    assert_eq!(list, kind, "{c} in the wrong list");
                    assert!(
                        last_since.is_none_or(|l| l <= since),
                        "list not in release order"
                    );
                    last_since = Some(since);
                    n += 1;
                    prev = cur;
                    cur = rec.next;
                }
                assert_eq!(head.tail, prev);
                assert_eq!(head.len, n);
                listed += n;
            }
        }
        let idle = self
            .map
            .values()
            .filter(|r| matches!(r.state, ConnState::Idle { .. }))
            .count();
        assert_eq!(listed, idle, "every idle record is listed exactly once");
        for rec in self.map.values() {
            if let ConnState::InUse { .. } = rec.state {
                assert!(rec.prev.is_none() && rec.next.is_none());
            }
            if let ConnState::Idle { list, .. } = rec.state {
                assert_eq!(list == ListKind::Private, rec.owner.is_some());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lists_link_and_unlink() {
        let t0 = Instant::now();
        let s = ServerId(0);
        let mut t = ConnTable::new(1);
        for i in 0..4 {
            t.insert_in_use(ConnId(i), s, SessionId(i));
            t.park(ConnId(i), ListKind::Idle, t0 + Duration::from_secs(i));
        }
        t.check();
        assert_eq!(t.newest(s, ListKind::Idle), Some(ConnId(3)));
        assert_eq!(t.oldest(s, ListKind::Idle), Some((ConnId(0), t0)));
        t.take(ConnId(1), SessionId(9)); // middle
        t.check();
        assert_eq!(t.get(ConnId(1)).map(|r| r.served), Some(2));
        assert!(t.remove(ConnId(3)).is_some()); // tail
        assert!(t.remove(ConnId(0)).is_some()); // head
        t.check();
        assert_eq!(t.list_len(s, ListKind::Idle), 1);
        assert_eq!(t.newest(s, ListKind::Idle), Some(ConnId(2)));
        assert_eq!(
            t.first_in(s, &[ListKind::Safe, ListKind::Idle], false),
            Some(ConnId(2))
        );
        assert_eq!(t.first_in(s, &[ListKind::Safe], false), None);
        // An HTTP/1 request skips a multiplexed connection; a stream may use either kind.
        t.insert_in_use(ConnId(7), s, SessionId(7));
        t.set_mux(
            ConnId(7),
            Mux {
                streams: 0,
                capacity: 100,
                draining: false,
            },
        );
        t.park(ConnId(7), ListKind::Idle, t0 + Duration::from_secs(10));
        assert_eq!(t.first_in(s, &[ListKind::Idle], false), Some(ConnId(2)));
        assert_eq!(t.first_in(s, &[ListKind::Idle], true), Some(ConnId(7)));
        t.remove(ConnId(7));
        t.park(ConnId(1), ListKind::Safe, t0 + Duration::from_secs(9));
        t.check();
        assert_eq!(t.idle_shared(ConnId(1)), Some((s, ListKind::Safe)));
        assert_eq!(t.shared_len(s), 2);
        assert_eq!(t.len(), 2);
    }
}

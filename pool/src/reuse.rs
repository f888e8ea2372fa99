//! The reuse rules: which idle connections a request may take, and where a released connection goes.
//!
//! # Lists (per server, per shard)
//! - **private**: idle, bound to one session; only that session may take it. Looked up first for the
//!   session in every mode, `never` included. At most `max_private_per_session` per session.
//! - **idle**: idle, shared, unproven: it has served exactly one request.
//! - **safe**: idle, shared, proven: it has served two or more requests.
//! - **avail**: multiplexed (h2) backend connections *in use* with free streams, which streams of
//!   other sessions may join: in `aggressive` and `always` (h2 connections count as proven). In
//!   `safe` and `never` a multiplexed connection in use is reserved for the session that took it
//!   (its streams join it first, in every mode); when its last stream ends it goes to `safe` (never
//!   `idle`), or to private in `never`, as in HAProxy. A multiplexed connection carries up to its
//!   capacity (min(ours, the peer's SETTINGS_MAX_CONCURRENT_STREAMS), 0 until the SETTINGS
//!   arrive: it enters the pool only then), and each stream holds a request slot (`maxconn`) and
//!   counts toward `max_reuse`. An HTTP/1 request never takes a multiplexed connection; a stream
//!   may take an HTTP/1 one (a server that fell back to HTTP/1.1).
//!
//! A connection is in at most one of the idle lists, and in none while in use (`avail` is not an
//! idle list).
//!
//! # Which lists a request may take from (besides its own private connections)
//! | mode | first request of a session | later requests |
//! |---|---|---|
//! | never | none (a new connection) | none |
//! | safe | none (a new connection) | idle, then safe |
//! | aggressive | safe | idle, then safe |
//! | always | safe, then idle | idle, then safe |
//!
//! "First" is the first request of an HTTP/1 client connection; every h2 stream is "later" (the
//! client can retry a stream refused with `REFUSED_STREAM`). Later requests prefer `idle` to test
//! unproven connections on requests that can be retried safely (HAProxy's `conn_backend_get` order).
//! Within a list the most recently released connection is taken (warmest; the oldest age out).
//!
//! # Where a released, reusable connection goes
//! - private, when the mode is `never` or the connection was marked private (a 401/407 carrying
//!   `NTLM`/`Negotiate`; the mark is sticky for the connection's life); closed if its session is
//!   gone or already holds `max_private_per_session` idle private connections;
//! - else `safe` when it has served two or more requests, else `idle`; closed if the server already
//!   holds `max_idle_per_server` idle shared connections (`pool-max-conn`).
//!
//! # Session affinity (a decision where HAProxy's text is silent)
//! In `safe`/`aggressive`/`always` the connection a session used last is *not* private: it goes to
//! the shared lists (as HAProxy's `h1_detach` does), but the session remembers it and its next request
//! takes it first, before the balancer runs — if the rules above allow its list for that request and
//! its server is up and has room. Affinity only orders what the rules already allow; it never widens
//! them. Another session's later request may take the connection while it is idle. This is HAProxy's
//! `prefer-last-server` behaviour, and it is what makes 20 requests on one client connection use one
//! backend connection even with several servers.
//!
//! # Reference counts (HAProxy 2.6, loopback, 20 requests), reproduced by the tests
//! - safe: one client connection -> 1 backend connection; 20 sequential client connections -> 20.
//! - aggressive: 20 client connections -> 0 new once a proven connection exists (20 from cold: no
//!   connection ever serves two requests).
//! - always: 20 client connections -> 1.
//! - never: 1 and 20.

use crate::config::ReuseMode;

/// A list of idle connections of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListKind {
    /// Bound to one session.
    Private,
    /// Shared, served exactly one request.
    Idle,
    /// Shared, served two or more requests.
    Safe,
}

impl ListKind {
    /// Number of list kinds.
    pub(crate) const COUNT: usize = 3;

    /// Index into a per-server array of lists.
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Private => 0,
            Self::Idle => 1,
            Self::Safe => 2,
        }
    }
}

/// The shared lists a request may take from, in order of preference.
pub(crate) const fn shared_lists(mode: ReuseMode, first: bool) -> &'static [ListKind] {
    match (mode, first) {
        (ReuseMode::Never, _) | (ReuseMode::Safe, true) => &[],
        (ReuseMode::Aggressive, true) => &[ListKind::Safe],
        (ReuseMode::Always, true) => &[ListKind::Safe, ListKind::Idle],
        (ReuseMode::Safe | ReuseMode::Aggressive | ReuseMode::Always, false) => {
            &[ListKind::Idle, ListKind::Safe]
        }
    }
}

/// The list a released, reusable connection belongs in (before the caps are applied).
pub(crate) const fn destination(mode: ReuseMode, private: bool, served: u32) -> ListKind {
    if private || matches!(mode, ReuseMode::Never) {
        ListKind::Private
    } else if served >= 2 {
        ListKind::Safe
    } else {
        ListKind::Idle
    }
}

/// Whether `max_reuse` forbids another request on a connection that has served `served`.
pub(crate) fn reuse_exhausted(max_reuse: Option<u32>, served: u32) -> bool {
    max_reuse.is_some_and(|m| served >= m.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_table() {
        use ListKind::{Idle, Safe};
        assert!(shared_lists(ReuseMode::Never, true).is_empty());
        assert!(shared_lists(ReuseMode::Never, false).is_empty());
        assert!(shared_lists(ReuseMode::Safe, true).is_empty());
        assert_eq!(shared_lists(ReuseMode::Safe, false), &[Idle, Safe]);
        assert_eq!(shared_lists(ReuseMode::Aggressive, true), &[Safe]);
        assert_eq!(shared_lists(ReuseMode::Aggressive, false), &[Idle, Safe]);
        assert_eq!(shared_lists(ReuseMode::Always, true), &[Safe, Idle]);
        assert_eq!(shared_lists(ReuseMode::Always, false), &[Idle, Safe]);
    }

    #[test]
    fn destinations() {
        assert_eq!(destination(ReuseMode::Never, false, 5), ListKind::Private);
        assert_eq!(destination(ReuseMode::Safe, true, 1), ListKind::Private);
        assert_eq!(destination(ReuseMode::Always, true, 9), ListKind::Private);
        assert_eq!(destination(ReuseMode::Safe, false, 1), ListKind::Idle);
        assert_eq!(destination(ReuseMode::Aggressive, false, 2), ListKind::Safe);
    }

    #[test]
    fn max_reuse() {
        assert!(!reuse_exhausted(None, 1_000_000));
        assert!(reuse_exhausted(Some(0), 1));
        assert!(reuse_exhausted(Some(1), 1));
        assert!(!reuse_exhausted(Some(3), 2));
        assert!(reuse_exhausted(Some(3), 3));
    }
}

//! Scenario tests of multiplexed (HTTP/2) backend connections: capacity from SETTINGS, streams
//! joining a connection, reservation per session in `safe` against the `avail` list in
//! `always`, the kind filter (an HTTP/1 request never takes an h2 connection), draining,
//! `max_reuse` and `maxconn` counting streams, and the slots freed when a connection dies.

use std::time::Instant;

use super::*;
use crate::config::{BackendPolicy, ReuseMode, ServerPolicy};

fn pool(mode: ReuseMode) -> (BackendPool, Instant) {
    let mut p = BackendPolicy::new(vec![ServerPolicy::default()]);
    p.reuse = mode;
    let now = Instant::now();
    (BackendPool::new(p, now).expect("valid"), now)
}

fn stream(session: u64) -> RequestInfo {
    RequestInfo {
        session: SessionId(session),
        first: false,
        idempotent: true,
        multiplexed: true,
    }
}

fn h1(session: u64) -> RequestInfo {
    RequestInfo {
        multiplexed: false,
        ..stream(session)
    }
}

/// Opens a multiplexed connection of capacity `cap` for a stream of `session`.
fn open(p: &mut BackendPool, now: Instant, session: u64, conn: u64, cap: u32) -> ConnId {
    let a = p.acquire(&stream(session), now);
    assert_eq!(
        a,
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connected_mux(ServerId(0), ConnId(conn), SessionId(session), cap, now)
        .expect("decided");
    p.check_invariants();
    ConnId(conn)
}

#[test]
fn safe_reserves_a_connection_for_its_session_until_its_streams_end() {
    let (mut p, now) = pool(ReuseMode::Safe);
    let c = open(&mut p, now, 1, 10, 3);
    // The session's next streams join it, up to its capacity.
    for _ in 0..2 {
        let a = p.acquire(&stream(1), now);
        assert_eq!(
            a,
            Acquire::Reuse {
                server: ServerId(0),
                conn: c
            }
        );
        p.check_invariants();
    }
    assert_eq!(p.in_flight(), 3);
    assert_eq!(p.stats().servers[0].streams, 3);
    // Full: a fourth stream needs a new connection.
    assert_eq!(
        p.acquire(&stream(1), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    // Another session may not join it while it carries streams of session 1.
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    p.check_invariants();
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    // Once its streams end it is idle (safe list) and anyone's stream takes it.
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    p.check_invariants();
    assert_eq!(p.stats().servers[0].safe, 1);
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    p.check_invariants();
    // ... and it is now reserved for session 2.
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    assert_eq!(
        p.acquire(&stream(1), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.check_invariants();
}

#[test]
fn always_shares_a_new_connection_through_avail() {
    let (mut p, now) = pool(ReuseMode::Always);
    let c = open(&mut p, now, 1, 10, 2);
    // Another session's stream joins the connection in use.
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    p.check_invariants();
    // Full: the third opens a connection.
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    // A stream ends: it is back on avail.
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    p.check_invariants();
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    p.check_invariants();
    assert_eq!(p.stats().servers[0].new_conns, 1);
}

#[test]
fn capacity_follows_settings_and_joins_respect_it() {
    let (mut p, now) = pool(ReuseMode::Always);
    let c = open(&mut p, now, 1, 10, 1);
    // A waiter for the same connection cannot join a full one.
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    assert_eq!(p.join(c), Err(PoolError::NoFreeStream(c)));
    // The peer raises its limit: now it can.
    assert!(!p.set_capacity(c, 3));
    p.check_invariants();
    p.join(c).expect("room now");
    p.check_invariants();
    assert_eq!(p.stats().servers[0].streams, 2);
    assert_eq!(p.stats().servers[0].connecting, 0);
    // Lowered below the streams in flight: they run on, none starts.
    assert!(!p.set_capacity(c, 1));
    p.check_invariants();
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    p.check_invariants();
    // Down to 0 while a stream runs: kept; at its last stream closed, not parked idle.
    assert!(!p.set_capacity(c, 0));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Close));
    p.check_invariants();
    // An idle connection whose peer lowers its limit to 0 is closed at once, not handed out.
    let d = open(&mut p, now, 4, 11, 2);
    assert_eq!(p.release(d, true, false, now), Ok(Release::Keep));
    assert!(p.set_capacity(d, 0));
    p.check_invariants();
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
}

#[test]
fn an_http1_request_never_takes_a_multiplexed_connection() {
    let (mut p, now) = pool(ReuseMode::Always);
    let c = open(&mut p, now, 1, 10, 100);
    assert_eq!(
        p.acquire(&h1(2), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connected(ServerId(0), ConnId(11), SessionId(2), now)
        .expect("decided");
    assert_eq!(p.release(ConnId(11), true, false, now), Ok(Release::Keep));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    p.check_invariants();
    // Both idle: the HTTP/1 request takes the HTTP/1 one, whichever is newer.
    assert_eq!(
        p.acquire(&h1(3), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: ConnId(11)
        }
    );
    p.check_invariants();
    // A stream may take the h2 one.
    assert_eq!(
        p.acquire(&stream(4), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    p.check_invariants();
}

#[test]
fn draining_takes_no_stream_and_closes_after_the_last() {
    let (mut p, now) = pool(ReuseMode::Always);
    let c = open(&mut p, now, 1, 10, 100);
    assert_eq!(
        p.acquire(&stream(2), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    assert!(!p.drain(c), "in use: closes later");
    p.check_invariants();
    assert_eq!(
        p.acquire(&stream(3), now),
        Acquire::Connect {
            server: ServerId(0)
        }
    );
    p.connect_aborted(ServerId(0)).expect("pending");
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Close));
    p.check_invariants();
    assert_eq!(p.stats().conns, 0);
    // An idle one drains at once.
    let d = open(&mut p, now, 4, 12, 100);
    assert_eq!(p.release(d, true, false, now), Ok(Release::Keep));
    assert!(p.drain(d));
    p.check_invariants();
    assert_eq!(p.stats().conns, 0);
}

#[test]
fn max_reuse_and_maxconn_count_streams() {
    let mut pol = BackendPolicy::new(vec![ServerPolicy {
        maxconn: Some(3),
        ..ServerPolicy::default()
    }]);
    pol.reuse = ReuseMode::Always;
    pol.max_reuse = Some(4);
    let now = Instant::now();
    let mut p = BackendPool::new(pol, now).expect("valid");
    let c = open(&mut p, now, 1, 10, 100);
    for s in 2..=3 {
        assert_eq!(
            p.acquire(&stream(s), now),
            Acquire::Reuse {
                server: ServerId(0),
                conn: c
            }
        );
    }
    // maxconn 3 counts the three streams: the fourth waits.
    assert!(matches!(p.acquire(&stream(4), now), Acquire::Queued(_)));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    let woken = p.poll_queue(now);
    assert_eq!(woken.len(), 1);
    assert_eq!(
        woken[0].1,
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    p.check_invariants();
    // That was its fourth stream: max_reuse 4 takes it off avail, and it closes when done.
    assert_eq!(p.acquire(&stream(5), now), Acquire::Queued(Ticket(2)));
    p.cancel(Ticket(2));
    for _ in 0..2 {
        assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    }
    assert_eq!(p.release(c, true, false, now), Ok(Release::Close));
    p.check_invariants();
}

#[test]
fn a_dead_connection_frees_every_stream_slot() {
    let (mut p, now) = pool(ReuseMode::Always);
    let c = open(&mut p, now, 1, 10, 100);
    for s in 2..=5 {
        assert_eq!(
            p.acquire(&stream(s), now),
            Acquire::Reuse {
                server: ServerId(0),
                conn: c
            }
        );
    }
    assert_eq!(p.in_flight(), 5);
    assert!(p.conn_closed(c));
    p.check_invariants();
    assert_eq!(p.in_flight(), 0);
    assert_eq!(p.stats().servers[0].streams, 0);
    // Its streams' releases afterwards are out of protocol and change nothing.
    assert!(p.release(c, true, false, now).is_err());
    p.check_invariants();
}

#[test]
fn a_closed_session_keeps_its_streams_running() {
    let (mut p, now) = pool(ReuseMode::Safe);
    let c = open(&mut p, now, 1, 10, 100);
    assert_eq!(
        p.acquire(&stream(1), now),
        Acquire::Reuse {
            server: ServerId(0),
            conn: c
        }
    );
    assert!(p.session_closed(SessionId(1)).is_empty());
    p.check_invariants();
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    assert_eq!(p.release(c, true, false, now), Ok(Release::Keep));
    p.check_invariants();
    assert_eq!(p.stats().sessions, 0);
}

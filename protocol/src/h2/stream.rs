//! Stream states (RFC 9113 section 5.1) and the per-stream record a connection keeps while a
//! stream is active.
//!
//! ```text
//!                              +--------+
//!                      send PP |        | recv PP
//!                     ,--------+  idle  +--------.
//!                    /         |        |         \
//!                   v          +--------+          v
//!            +----------+          |           +----------+
//!            |          |          | send H /  |          |
//!     ,------+ reserved |          | recv H    | reserved +------.
//!     |      | (local)  |          |           | (remote) |      |
//!     |      +---+------+          v           +------+---+      |
//!     |          |             +--------+             |          |
//!     |          |     recv ES |        | send ES     |          |
//!     |   send H |     ,-------+  open  +-------.     | recv H   |
//!     |          |    /        |        |        \    |          |
//!     |          v   v         +---+----+         v   v          |
//!     |      +----------+          |           +----------+      |
//!     |      |   half-  |          |           |   half-  |      |
//!     |      |  closed  |          | send R /  |  closed  |      |
//!     |      | (remote) |          | recv R    | (local)  |      |
//!     |      +----+-----+          |           +-----+----+      |
//!     |           |                |                 |           |
//!     |           | send ES /      |       recv ES / |           |
//!     |           |  send R /      v        send R / |           |
//!     |           |  recv R    +--------+   recv R   |           |
//!     | send R /  `----------->|        |<-----------'  send R / |
//!     | recv R                 | closed |               recv R   |
//!     `----------------------->|        |<-----------------------'
//!                              +--------+
//! ```
//! (H: HEADERS, PP: PUSH_PROMISE, ES: END_STREAM, R: RST_STREAM.) coreplex neither sends nor
//! accepts PUSH_PROMISE, so the reserved states never occur; idle and closed streams have no
//! record (a connection remembers only the last few closed ids, to answer late frames right).

/// A stream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Neither side has sent anything on it.
    Idle,
    /// Promised by us (server push: unused).
    ReservedLocal,
    /// Promised by the peer (refused: we disable push).
    ReservedRemote,
    /// Both sides may send.
    Open,
    /// We sent END_STREAM; the peer may still send.
    HalfClosedLocal,
    /// The peer sent END_STREAM; we may still send.
    HalfClosedRemote,
    /// Done both ways, or reset.
    Closed,
}

impl StreamState {
    /// The state after we send END_STREAM.
    pub fn send_end(self) -> StreamState {
        match self {
            StreamState::Open => StreamState::HalfClosedLocal,
            StreamState::HalfClosedRemote => StreamState::Closed,
            s => s,
        }
    }

    /// The state after the peer's END_STREAM.
    pub fn recv_end(self) -> StreamState {
        match self {
            StreamState::Open => StreamState::HalfClosedRemote,
            StreamState::HalfClosedLocal => StreamState::Closed,
            s => s,
        }
    }

    /// Whether the peer may still send on the stream.
    pub fn peer_may_send(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedLocal)
    }

    /// Whether we may still send on the stream.
    pub fn may_send(self) -> bool {
        matches!(self, StreamState::Open | StreamState::HalfClosedRemote)
    }
}

/// An active stream.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stream {
    pub id: u32,
    pub state: StreamState,
    /// What we may still send (may go negative when the peer lowers its initial window).
    pub send_window: i64,
    /// What the peer may still send.
    pub recv_window: i64,
    /// Bytes the application consumed and we have not yet returned with WINDOW_UPDATE.
    pub unacked: u32,
    /// The declared content-length, checked against the DATA received.
    pub content_length: Option<u64>,
    pub received: u64,
    /// A final (non-1xx) head has been received (so further HEADERS are trailers).
    pub head_done: bool,
    /// Our request was HEAD: the response's content-length describes a body that is not sent.
    pub no_body: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_stream_transitions() {
        use StreamState::*;
        assert_eq!(Open.send_end(), HalfClosedLocal);
        assert_eq!(Open.recv_end(), HalfClosedRemote);
        assert_eq!(HalfClosedLocal.recv_end(), Closed);
        assert_eq!(HalfClosedRemote.send_end(), Closed);
        assert!(HalfClosedLocal.peer_may_send() && !HalfClosedLocal.may_send());
        assert!(HalfClosedRemote.may_send() && !HalfClosedRemote.peer_may_send());
        assert!(!Closed.may_send() && !Closed.peer_may_send());
    }
}

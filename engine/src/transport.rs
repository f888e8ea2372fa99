//! The transport seam: an optional layer between a connection's socket and its service, such as
//! TLS. The engine knows no TLS: a [`Transport`] (one per shard, owned by the service) turns the
//! bytes of the wire into application bytes and back; the engine calls it at the two points where
//! bytes cross: when a receive completes and just before a send is submitted.
//!
//! - **Receive**: the received bytes reach [`Transport::receive`] as `&mut [u8]`, straight from the
//!   ring's buffer (so a record can be decrypted in place); a record split across reads is kept in
//!   the connection's busy box and presented again with the next bytes, as the HTTP/1 head scanner's
//!   partial heads are. Application bytes go to the service exactly as plaintext input does.
//! - **Send**: what the service (or its peer, through `peer_output`) wrote is application bytes;
//!   it is sealed by [`Transport::seal`] just before the send is submitted. So a pair of a secure
//!   and a plain connection (or two secure ones) works: `peer_output` always means application bytes.
//! - **Handshake**: a secure connection accepted on a listener the transport claims starts
//!   handshaking; the service sees it only once the handshake is done ([`crate::Service::on_accept`]
//!   then), and the handshake is bounded by its own deadline. An outbound secure connection
//!   ([`crate::ConnCx::connect_secure`]) reports [`crate::Service::on_connected`] once its handshake
//!   is done, or fails, so a handshake failure counts as a connect failure.
//! - **Close**: before the FIN of a secure connection the transport may queue its closing record
//!   (TLS close_notify) with [`Transport::close`]; the peer's closing record is an EOF.
//!
//! The transport's per-connection state ([`Transport::Session`]) lives for the connection's life
//! in a shard-side map keyed by the connection's slot, so a plaintext connection's 28-byte slot does
//! not grow, and a secure connection holds its session state (keys), never buffers, while idle.
//! The service reads a session through [`crate::ConnCx::session`].

use std::time::Duration;

/// What [`Transport::receive`] made of the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the input consumed; the rest (an incomplete record) is presented again, with the
    /// next bytes in front of it.
    pub consumed: usize,
    /// Where the session is now.
    pub status: Status,
}

/// The state of a secure session after some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The handshake goes on (bytes to send, if any, were appended to the reply).
    Handshaking,
    /// Application data flows (the handshake is done).
    Ready,
    /// The peer sent its closing record: no more input will come.
    PeerClosed,
    /// A fatal error; its alert (if any) is in the reply. The connection closes once it is sent.
    Failed,
}

/// A byte layer between sockets and the service (see the module docs).
pub trait Transport: 'static {
    /// Per-connection state, kept for the connection's life.
    type Session: 'static;

    /// A connection was accepted on `listener`: its session and handshake deadline, or `None`
    /// for a plaintext listener.
    fn accept(&mut self, listener: usize) -> Option<(Self::Session, Duration)>;

    /// A session for an outbound connection with client profile `profile` (the service and the
    /// transport agree on what a profile is: a backend server's TLS settings, for example).
    fn connect(&mut self, profile: u32) -> std::io::Result<Self::Session>;

    /// Processes received bytes (`wire`, which may be modified in place): appends application
    /// bytes to `plain` and bytes to send back (handshake records, alerts) to `reply`. Called with
    /// an empty `wire` to start an outbound handshake.
    fn receive(
        &mut self,
        session: &mut Self::Session,
        wire: &mut [u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Received;

    /// Seals application bytes into records appended to `wire`. Only called once the handshake
    /// is done. `unread` is the received input [`Transport::receive`] left unconsumed (an
    /// incomplete record), exactly as it will be presented again: a transport may look at it
    /// (rustls keeps offsets into it) but consumes none of it. Returns false on a fatal error
    /// (the connection is then closed).
    fn seal(
        &mut self,
        session: &mut Self::Session,
        plain: &[u8],
        unread: &mut [u8],
        wire: &mut Vec<u8>,
    ) -> bool;

    /// Appends the closing record (TLS close_notify) to `wire` if it has not been sent; returns
    /// whether it appended anything. `unread` as for [`Transport::seal`].
    fn close(&mut self, session: &mut Self::Session, unread: &mut [u8], wire: &mut Vec<u8>)
        -> bool;

    /// Whether the session is still handshaking.
    fn handshaking(&self, session: &Self::Session) -> bool;

    /// The connection went idle (its buffers went back to the pool): the session may drop what
    /// it can rebuild (expanded keys) until the next call.
    fn idle(&mut self, _session: &mut Self::Session) {}
}

/// No transport: every connection is plaintext.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plain;

impl Transport for Plain {
    type Session = ();

    fn accept(&mut self, _listener: usize) -> Option<((), Duration)> {
        None
    }

    fn connect(&mut self, _profile: u32) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no secure transport is configured",
        ))
    }

    fn receive(
        &mut self,
        _: &mut (),
        wire: &mut [u8],
        plain: &mut Vec<u8>,
        _: &mut Vec<u8>,
    ) -> Received {
        plain.extend_from_slice(wire);
        Received {
            consumed: wire.len(),
            status: Status::Ready,
        }
    }

    fn seal(&mut self, _: &mut (), plain: &[u8], _: &mut [u8], wire: &mut Vec<u8>) -> bool {
        wire.extend_from_slice(plain);
        true
    }

    fn close(&mut self, _: &mut (), _: &mut [u8], _: &mut Vec<u8>) -> bool {
        false
    }

    fn handshaking(&self, _: &()) -> bool {
        false
    }
}

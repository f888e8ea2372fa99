//! The contract between the engine and the protocol service running on each shard.
//!
//! The engine owns sockets, buffers and timers; a [`Service`] sees a connection as a byte stream
//! through [`ConnCx`]: input arrives as `&[u8]` (straight from a provided buffer when nothing is
//! buffered), output is appended to a per-connection buffer the engine sends, and one timer per
//! connection can be set. The service's per-connection state (`Service::Conn`) is stored inline in
//! the connection slab, so it must stay a few bytes: what only busy connections need
//! (`Service::Busy`) lives in the connection's busy box, beside its buffers, which goes back to the
//! shard's pool when the connection is idle again.
//!
//! Invariants: callbacks run on the shard's thread, never re-entrantly; a connection's callbacks
//! stop once the engine calls [`Service::on_close`].

use crate::wheel::{TimerKey, Wheel};
use std::time::{Duration, Instant};

/// Why a connection was closed (a label in the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed = 0,
    /// The peer reset the connection or a socket error occurred.
    PeerReset,
    /// The service finished (e.g. `Connection: close`).
    Done,
    /// No request arrived within the keep-alive timeout.
    KeepAliveTimeout,
    /// A request did not arrive completely in time.
    RequestTimeout,
    /// The peer stopped reading or sending mid-exchange.
    ClientTimeout,
    /// The peer sent something the protocol rejects.
    ProtocolError,
    /// The server is shutting down.
    Shutdown,
    /// The connection exceeded a limit (e.g. too much buffered input).
    Overflow,
    /// An outbound connection could not be established.
    ConnectFailed,
    /// A secure session's handshake failed (the transport's alert was sent).
    HandshakeFailed,
    /// A secure session's handshake did not finish within its deadline.
    HandshakeTimeout,
    /// The service rejected the connection's preface (a PROXY protocol header that is missing,
    /// malformed or from an untrusted source).
    PrefaceRejected,
    /// The connection's preface did not arrive within its listener's deadline.
    PrefaceTimeout,
}

impl CloseReason {
    /// Every reason, in discriminant order.
    pub const ALL: [CloseReason; 14] = [
        CloseReason::PeerClosed,
        CloseReason::PeerReset,
        CloseReason::Done,
        CloseReason::KeepAliveTimeout,
        CloseReason::RequestTimeout,
        CloseReason::ClientTimeout,
        CloseReason::ProtocolError,
        CloseReason::Shutdown,
        CloseReason::Overflow,
        CloseReason::ConnectFailed,
        CloseReason::HandshakeFailed,
        CloseReason::HandshakeTimeout,
        CloseReason::PrefaceRejected,
        CloseReason::PrefaceTimeout,
    ];

    /// A stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::Done => "done",
            CloseReason::KeepAliveTimeout => "keepalive_timeout",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::ClientTimeout => "client_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Overflow => "overflow",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::HandshakeFailed => "handshake_failed",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::PrefaceRejected => "preface_rejected",
            CloseReason::PrefaceTimeout => "preface_timeout",
        }
    }
}

/// What the bytes that open a connection on a listener with a preface ([`crate::ListenerSpec`]
/// `preface`) are, as [`Service::preface`] sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preface {
    /// Not decided yet: more bytes are needed.
    NeedMore,
    /// The first `consumed` bytes were the preface (0: there was none); `origin`, if any, is the
    /// connection's true origin. The connection goes on (TLS, then the service) with the rest.
    Done {
        /// Bytes of the preface.
        consumed: usize,
        /// The addresses it declared.
        origin: Option<Origin>,
    },
    /// Close the connection ([`CloseReason::PrefaceRejected`]).
    Reject,
}

/// A connection's true endpoints as a preface (the PROXY protocol) declared them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client.
    pub source: std::net::SocketAddr,
    /// The address the client connected to.
    pub destination: std::net::SocketAddr,
}

/// A protocol service: one instance per shard, created on the shard's thread.
pub trait Service: 'static {
    /// Per-connection state, stored inline in the slab. Keep it to a few bytes, without pointers.
    type Conn: Default;
    /// State of a busy connection (a request in progress), kept in the busy box while set.
    type Busy: 'static;
    /// The statistics snapshot the admin endpoint aggregates.
    type Stats: Send + 'static;
    /// The layer between this service's sockets and itself
    /// ([`Plain`](crate::transport::Plain) when every connection is plaintext).
    type Transport: crate::transport::Transport;

    /// The shard's transport (the engine calls it where bytes cross; see [`crate::transport`]).
    fn transport(&mut self) -> &mut Self::Transport;

    /// A connection was accepted on listener `listener` (index into the runtime's listeners); on
    /// a secure listener, once its handshake is done.
    fn on_accept(
        &mut self,
        cx: &mut ConnCx<'_, Self::Busy>,
        conn: &mut Self::Conn,
        listener: usize,
    );

    /// Bytes arrived. `input` is everything received and not yet consumed. Returns how many bytes
    /// were consumed; the engine keeps the rest and presents it again with the next bytes (or after
    /// output drains, when the service paused input).
    fn on_input(
        &mut self,
        cx: &mut ConnCx<'_, Self::Busy>,
        conn: &mut Self::Conn,
        input: &[u8],
    ) -> usize;

    /// The peer shut down its sending side (EOF). The default closes the connection.
    fn on_peer_closed(&mut self, cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn) {
        cx.close(CloseReason::PeerClosed);
    }

    /// All output handed to the engine has been sent.
    fn on_drained(&mut self, _cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn) {}

    /// An outbound connection made with [`ConnCx::connect`] finished connecting (or failed; the
    /// default then closes it). Its peer is the connection that asked for it. For
    /// [`ConnCx::connect_secure`], once the handshake is done (a failed handshake is an error).
    fn on_connected(
        &mut self,
        cx: &mut ConnCx<'_, Self::Busy>,
        _conn: &mut Self::Conn,
        result: std::io::Result<()>,
    ) {
        if result.is_err() {
            cx.close(CloseReason::ConnectFailed);
        }
    }

    /// A pair this connection asked for ([`ConnCx::connect`], [`ConnCx::pair`]) is now in place:
    /// [`ConnCx::peer_output`] works (bytes for a peer still connecting are sent once it is).
    fn on_paired(&mut self, _cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn) {}

    /// An outbound connection asked for with [`ConnCx::open`] exists (it is still connecting):
    /// `tag` is the one the asker gave, so the service can tell what the connection is for.
    /// [`Service::on_connected`] follows once it connects (or fails). The default does nothing.
    fn on_opened(&mut self, _cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn, _tag: u64) {}

    /// An outbound connection asked for with [`ConnCx::open`] could not be made (no slot under
    /// `global.max_outbound`, or the transport refused its client profile); heard by the
    /// connection that asked. The default does nothing.
    fn on_open_failed(
        &mut self,
        _cx: &mut ConnCx<'_, Self::Busy>,
        _conn: &mut Self::Conn,
        _tag: u64,
    ) {
    }

    /// Another connection called [`ConnCx::wake`] with this one's id (e.g. a freed backend slot
    /// waking a queued request). The default does nothing.
    fn on_wake(&mut self, _cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn) {}

    /// The connection's peer was closed: the pair is gone. The default does nothing.
    fn on_unpaired(&mut self, _cx: &mut ConnCx<'_, Self::Busy>, _conn: &mut Self::Conn) {}

    /// The connection's timer fired.
    fn on_timer(&mut self, cx: &mut ConnCx<'_, Self::Busy>, conn: &mut Self::Conn);

    /// The named deadline `slot` ([`ConnCx::set_deadline`]) is due; it is cleared already. Several
    /// due at once are heard in slot order (a handler that closes the connection ends the rest).
    fn on_deadline(
        &mut self,
        _cx: &mut ConnCx<'_, Self::Busy>,
        _conn: &mut Self::Conn,
        _slot: usize,
    ) {
    }

    /// Graceful stop began: finish what is in flight and close.
    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, Self::Busy>, conn: &mut Self::Conn);

    /// The connection `id` is gone; last look at its state.
    fn on_close(&mut self, id: crate::table::Id, conn: Self::Conn, reason: CloseReason);

    /// A statistics snapshot.
    fn stats(&mut self) -> Self::Stats;

    /// The bytes so far (`input`, all of them) of a connection accepted on `listener`, a
    /// listener with a preface, from `peer`: before TLS and before the service hears of the
    /// connection (`on_accept` follows [`Preface::Done`]). The preface's deadline bounds the
    /// wait. The default takes no preface.
    fn preface(
        &mut self,
        _listener: usize,
        _peer: Option<std::net::SocketAddr>,
        _input: &[u8],
    ) -> Preface {
        Preface::Done {
            consumed: 0,
            origin: None,
        }
    }

    /// A message from another thread ([`crate::RuntimeHandle::broadcast`]), such as new
    /// configuration. The default ignores it.
    fn on_control(&mut self, _msg: Box<dyn std::any::Any + Send>) {}

    /// Work due outside any connection's callbacks (shard-level deadlines such as a backend
    /// pool's queue timeouts and idle expiry, or closes decided in [`Service::on_close`]). The
    /// engine calls it once per loop turn, before it waits; the service pushes what it wants done
    /// to `actions` and returns the next instant it must be called at even without I/O. The
    /// default has no such work.
    fn poll(&mut self, _now: Instant, _actions: &mut ShardActions) -> Option<Instant> {
        None
    }
}

/// What [`Service::poll`] asks of the shard: connections to close and connections to wake.
#[derive(Default, Debug)]
pub struct ShardActions {
    pub(crate) close: Vec<(crate::table::Id, CloseReason)>,
    pub(crate) wake: Vec<crate::table::Id>,
    /// Bytes for each log sink, by sink number (taken, capacity kept).
    pub(crate) logs: Vec<Vec<u8>>,
    /// New descriptors for sinks.
    pub(crate) sinks: Vec<(usize, std::sync::Arc<std::os::fd::OwnedFd>)>,
}

impl ShardActions {
    /// Closes connection `id` now (if it is still open), dropping unsent output.
    pub fn close(&mut self, id: crate::table::Id, reason: CloseReason) {
        self.close.push((id, reason));
    }

    /// Calls [`Service::on_wake`] on connection `id`, if it is still open.
    pub fn wake(&mut self, id: crate::table::Id) {
        self.wake.push(id);
    }

    /// Appends `bytes` (whole lines) to log sink `sink`, taking them (`bytes` is left empty,
    /// its capacity kept). The shard writes them through its ring, in order, without blocking
    /// (see `shard/sinks.rs`); a sink without a descriptor drops them (counted).
    pub fn log(&mut self, sink: usize, bytes: &mut Vec<u8>) {
        if self.logs.len() <= sink {
            self.logs.resize_with(sink + 1, Vec::new);
        }
        let out = &mut self.logs[sink];
        if out.is_empty() {
            std::mem::swap(out, bytes);
        } else {
            out.append(bytes);
        }
    }

    /// Makes `fd` (a file opened for appending, or a pipe) log sink `sink`'s descriptor; the one
    /// it replaces is let go once its write in flight completes.
    pub fn set_sink(&mut self, sink: usize, fd: std::sync::Arc<std::os::fd::OwnedFd>) {
        self.sinks.push((sink, fd));
    }

    /// True when nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.close.is_empty()
            && self.wake.is_empty()
            && self.sinks.is_empty()
            && self.logs.iter().all(Vec::is_empty)
    }
}

/// Requests a callback made; the engine carries them out after the callback returns.
pub(crate) mod flags {
    pub const CLOSE: u16 = 1 << 0;
    pub const CLOSE_AFTER_FLUSH: u16 = 1 << 1;
    pub const PAUSE: u16 = 1 << 2;
    pub const PEER_OUTPUT: u16 = 1 << 3;
    pub const RESUME_PEER: u16 = 1 << 4;
    pub const UNPAIR: u16 = 1 << 5;
    pub const CLOSE_PEER: u16 = 1 << 6;
    pub const CLOSE_PEER_AFTER_FLUSH: u16 = 1 << 7;
    pub const SHUTDOWN_WRITE: u16 = 1 << 8;
    pub const SHUTDOWN_PEER_WRITE: u16 = 1 << 9;
    pub const RESUME: u16 = 1 << 10;
}

/// An unpaired outbound connection asked for ([`ConnCx::open`]).
pub(crate) struct OpenRequest {
    pub fd: std::os::fd::OwnedFd,
    /// The transport's client profile, for a secure connection.
    pub profile: Option<u32>,
    /// What `on_opened` is told.
    pub tag: u64,
    /// The first bytes on the wire ([`ConnCx::open_with_preamble`]).
    pub preamble: Option<Box<[u8]>>,
}

/// What a callback asked of the shard beyond its own connection (rare; boxed-free but not Copy).
#[derive(Default)]
pub(crate) struct Effects {
    /// A socket connecting (non-blocking) to pair with the calling connection.
    pub connect: Option<std::os::fd::OwnedFd>,
    /// The transport's client profile for that connection (a secure one).
    pub connect_profile: Option<u32>,
    /// An existing connection to pair with the calling connection.
    pub pair: Option<crate::table::Id>,
    /// Close reason for the peer.
    pub peer_reason: Option<CloseReason>,
    /// Connections to wake ([`Service::on_wake`]).
    pub wake: Vec<crate::table::Id>,
    /// Unpaired outbound connections to add: socket, client profile, the asker's tag
    /// ([`ConnCx::open`]).
    pub opens: Vec<OpenRequest>,
}

/// Named deadlines a busy connection may hold at once ([`ConnCx::set_deadline`]).
pub const DEADLINES: usize = 4;

/// Wheel tokens of deadline tables: the connection's slot index with this bit (slot indices and
/// the shard's own tokens never have it alone: see `shard/timers.rs`).
pub(crate) const DEADLINE_TOKEN: u32 = 1 << 31;

/// A busy connection's deadline table: up to [`DEADLINES`] named deadlines (handshake, request,
/// idle, ping, server...), each set and cleared on its own, behind one wheel entry armed for the
/// earliest. The service hears [`Service::on_deadline`] with the slot of each one due. The table
/// lives in the busy box: a connection keeps its box while a deadline is set, and an idle
/// connection has only its plain timer ([`ConnCx::set_timer`]), so the 28-byte slot is unchanged.
pub(crate) struct Deadlines {
    /// Shard milliseconds of each slot's deadline (0: unset).
    at: [u64; DEADLINES],
    /// The wheel entry for the earliest, and the deadline it was armed for.
    pub(crate) key: TimerKey,
    armed: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            at: [0; DEADLINES],
            key: TimerKey::NONE,
            armed: 0,
        }
    }
}

impl Deadlines {
    /// Whether any slot is set.
    pub(crate) fn any(&self) -> bool {
        self.at.iter().any(|&a| a != 0)
    }

    /// Takes the slots due at `now_ms` (clearing them), in slot order.
    pub(crate) fn take_due(&mut self, now_ms: u64) -> [bool; DEADLINES] {
        let mut due = [false; DEADLINES];
        for (d, at) in due.iter_mut().zip(self.at.iter_mut()) {
            if *at != 0 && *at <= now_ms {
                *d = true;
                *at = 0;
            }
        }
        due
    }

    /// The wheel entry fired: it is no longer armed.
    pub(crate) fn fired(&mut self) {
        self.key = TimerKey::NONE;
        self.armed = 0;
    }

    /// Arms the one wheel entry for the earliest set deadline (or cancels it when none is).
    pub(crate) fn arm(&mut self, wheel: &mut Wheel, index: u32) {
        let next = self.at.iter().copied().filter(|&a| a != 0).min();
        match next {
            Some(at) if self.key.is_some() && self.armed == at => {}
            Some(at) => {
                if self.key.is_some() {
                    wheel.cancel(self.key);
                }
                self.key = wheel.insert(at, DEADLINE_TOKEN | index);
                self.armed = at;
            }
            None => {
                if self.key.is_some() {
                    wheel.cancel(self.key);
                }
                self.fired();
            }
        }
    }

    /// Cancels everything (the box goes back to the pool, or the connection closes).
    pub(crate) fn reset(&mut self, wheel: &mut Wheel) {
        self.at = [0; DEADLINES];
        self.arm(wheel, 0);
    }
}

/// What a connection holds only while busy: buffers and the service's busy state. Returned to the
/// shard's pool when the connection goes idle.
pub(crate) struct ConnIo<B> {
    /// Application bytes received and not yet consumed by the service.
    pub input: Vec<u8>,
    /// Application bytes to send.
    pub out: Vec<u8>,
    /// The buffer the next send fills (the last sent one comes back here).
    pub spare: Vec<u8>,
    /// Secure connections: bytes of the wire received and not yet processed (a record split
    /// across reads).
    pub wire_in: Vec<u8>,
    /// Secure connections: sealed bytes to send (records, handshake messages, alerts).
    pub wire_out: Vec<u8>,
    /// Secure connections: how much of the front of `out` is already sealed into `wire_out`
    /// (a large output is sealed a bounded chunk at a time, so it never holds a second whole
    /// copy and `wire_out` stays small enough to be reused).
    pub sealed: usize,
    pub in_flight: usize,
    pub busy: Option<B>,
    /// Named deadlines ([`ConnCx::set_deadline`]).
    pub deadlines: Deadlines,
}

impl<B> Default for ConnIo<B> {
    /// A new box: the two output buffers (one filling while the other is being sent) start at
    /// [`OUT_START`] bytes, so the responses to a short pipeline are written without growing
    /// them; input is only buffered for requests split across reads and starts empty.
    fn default() -> Self {
        ConnIo {
            input: Vec::new(),
            out: Vec::with_capacity(OUT_START),
            spare: Vec::with_capacity(OUT_START),
            wire_in: Vec::new(),
            wire_out: Vec::new(),
            sealed: 0,
            in_flight: 0,
            busy: None,
            deadlines: Deadlines::default(),
        }
    }
}

/// Largest buffer capacity kept when a connection goes idle.
pub(crate) const KEEP_CAPACITY: usize = 64 * 1024;
/// Starting capacity of a box's output buffers.
pub(crate) const OUT_START: usize = 4096;

impl<B> ConnIo<B> {
    /// Bytes handed to the engine and not yet acknowledged by the kernel (application bytes not
    /// yet sealed count once, as their records do).
    pub fn unsent(&self) -> usize {
        self.out.len() - self.sealed + self.wire_out.len() + self.in_flight
    }

    pub fn is_idle(&self) -> bool {
        self.input.is_empty()
            && self.out.is_empty()
            && self.wire_in.is_empty()
            && self.wire_out.is_empty()
            && self.in_flight == 0
            && self.busy.is_none()
            && !self.deadlines.any()
    }

    pub fn trim(&mut self) {
        self.busy = None;
        self.sealed = 0;
        for v in [&mut self.input, &mut self.wire_in, &mut self.wire_out] {
            v.clear();
            if v.capacity() > KEEP_CAPACITY {
                *v = Vec::new();
            }
        }
        for v in [&mut self.out, &mut self.spare] {
            v.clear();
            if v.capacity() > KEEP_CAPACITY {
                *v = Vec::with_capacity(OUT_START);
            }
        }
    }
}

/// A connection as a callback sees it. `B` is the service's busy state.
pub struct ConnCx<'a, B> {
    pub(crate) now: Instant,
    pub(crate) now_ms: u64,
    pub(crate) index: u32,
    pub(crate) io: &'a mut Option<Box<ConnIo<B>>>,
    pub(crate) io_pool: &'a mut Vec<Box<ConnIo<B>>>,
    pub(crate) timer: &'a mut TimerKey,
    pub(crate) wheel: &'a mut Wheel,
    pub(crate) requests: u16,
    pub(crate) reason: CloseReason,
    pub(crate) stopping: bool,
    pub(crate) id: crate::table::Id,
    pub(crate) outbound: bool,
    pub(crate) peer: Option<(crate::table::Id, &'a mut Option<Box<ConnIo<B>>>)>,
    pub(crate) effects: &'a mut Effects,
    pub(crate) fd: std::os::fd::BorrowedFd<'a>,
    /// The transport's session of a secure connection.
    pub(crate) session: Option<&'a dyn std::any::Any>,
    /// Origins declared by prefaces, by slot index.
    pub(crate) origins: &'a std::collections::HashMap<u32, Origin>,
}

impl<B> ConnCx<'_, B> {
    /// The shard's clock for this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn io(&mut self) -> &mut ConnIo<B> {
        if self.io.is_none() {
            *self.io = Some(self.io_pool.pop().unwrap_or_default());
        }
        self.io.as_mut().expect("just set")
    }

    /// The output buffer; append bytes to send. (Only append: on a secure connection its front
    /// may already be sealed into records.)
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.io().out
    }

    /// The busy state, if set.
    pub fn busy(&mut self) -> Option<&mut B> {
        self.io.as_mut().and_then(|io| io.busy.as_mut())
    }

    /// The busy state, shared.
    pub fn busy_ref(&self) -> Option<&B> {
        self.io.as_ref().and_then(|io| io.busy.as_ref())
    }

    /// Sets the busy state (the connection is busy until it is taken back).
    pub fn set_busy(&mut self, busy: B) -> &mut B {
        self.io().busy.insert(busy)
    }

    /// Takes the busy state out.
    pub fn take_busy(&mut self) -> Option<B> {
        self.io.as_mut().and_then(|io| io.busy.take())
    }

    /// Bytes handed to the engine and not yet acknowledged by the kernel.
    pub fn pending_output(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.unsent())
    }

    /// Whether the connection is secure (its transport has a session for it).
    pub fn is_secure(&self) -> bool {
        self.session.is_some()
    }

    /// The transport's session of a secure connection, as the transport's own type `X` (`None`
    /// for a plaintext connection or another type).
    pub fn session<X: 'static>(&self) -> Option<&X> {
        self.session?.downcast_ref()
    }

    /// The origin the connection's preface declared (a PROXY protocol header), if any.
    pub fn origin(&self) -> Option<Origin> {
        if self.origins.is_empty() {
            return None;
        }
        self.origins.get(&self.index).copied()
    }

    /// Sets (or replaces) the connection's single timer.
    pub fn set_timer(&mut self, after: Duration) {
        if self.timer.is_some() {
            self.wheel.cancel(*self.timer);
        }
        let ms = after.as_millis().min(u64::MAX as u128) as u64;
        *self.timer = self
            .wheel
            .insert(self.now_ms.saturating_add(ms), self.index);
    }

    /// Cancels the connection's timer, if set.
    pub fn clear_timer(&mut self) {
        if self.timer.is_some() {
            self.wheel.cancel(*self.timer);
            *self.timer = TimerKey::NONE;
        }
    }

    /// True when a timer is set.
    pub fn has_timer(&self) -> bool {
        self.timer.is_some()
    }

    /// Sets (or moves) the named deadline `slot` (below [`DEADLINES`]) to `after` from now,
    /// beside the plain timer and the other slots; [`Service::on_deadline`] hears it when due.
    /// The connection keeps its busy box while any deadline is set.
    pub fn set_deadline(&mut self, slot: usize, after: Duration) {
        assert!(slot < DEADLINES, "deadline slot {slot} out of range");
        let ms = after.as_millis().min(u64::MAX as u128) as u64;
        let at = self.now_ms.saturating_add(ms).max(1);
        let io = self
            .io
            .get_or_insert_with(|| self.io_pool.pop().unwrap_or_default());
        io.deadlines.at[slot] = at;
        io.deadlines.arm(self.wheel, self.index);
    }

    /// Clears the named deadline `slot`, if set.
    pub fn clear_deadline(&mut self, slot: usize) {
        if let Some(io) = self.io.as_mut() {
            if let Some(at) = io.deadlines.at.get_mut(slot) {
                *at = 0;
                io.deadlines.arm(self.wheel, self.index);
            }
        }
    }

    /// Time left before the named deadline `slot` (`None` when it is not set).
    pub fn deadline(&self, slot: usize) -> Option<Duration> {
        let at = *self.io.as_ref()?.deadlines.at.get(slot)?;
        (at != 0).then(|| Duration::from_millis(at.saturating_sub(self.now_ms)))
    }

    /// Closes now, dropping unsent output.
    pub fn close(&mut self, reason: CloseReason) {
        self.requests |= flags::CLOSE;
        self.reason = reason;
    }

    /// Sends what is pending, then shuts down the sending side, discards input for a short linger
    /// period (so the peer reads the response instead of a reset) and closes.
    pub fn close_after_flush(&mut self, reason: CloseReason) {
        self.requests |= flags::CLOSE_AFTER_FLUSH;
        self.reason = reason;
    }

    /// Stops reading until all output is sent; unconsumed input is presented again then.
    pub fn pause_input(&mut self) {
        self.requests |= flags::PAUSE;
    }

    /// True once a close was requested in this callback.
    pub fn is_closing(&self) -> bool {
        self.requests & (flags::CLOSE | flags::CLOSE_AFTER_FLUSH) != 0
    }

    /// True once the shard is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The connection's socket, for options such as TCP keepalive.
    pub fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.fd)
    }

    /// This connection's id (stable for its life; stale ids never reach a reused slot).
    pub fn id(&self) -> crate::table::Id {
        self.id
    }

    /// True for a connection made with [`ConnCx::connect`].
    pub fn is_outbound(&self) -> bool {
        self.outbound
    }

    /// The paired connection, if any.
    pub fn peer(&self) -> Option<crate::table::Id> {
        self.peer.as_ref().map(|(id, _)| *id)
    }

    /// The paired connection's output buffer: bytes appended are sent to the peer.
    pub fn peer_output(&mut self) -> Option<&mut Vec<u8>> {
        let (_, io) = self.peer.as_mut()?;
        self.requests |= flags::PEER_OUTPUT;
        let io = io.get_or_insert_with(|| self.io_pool.pop().unwrap_or_default());
        Some(&mut io.out)
    }

    /// Bytes handed to the peer and not yet sent (0 without a peer).
    pub fn peer_pending_output(&self) -> usize {
        self.peer
            .as_ref()
            .and_then(|(_, io)| io.as_ref())
            .map_or(0, |io| io.unsent())
    }

    /// Opens an outbound TCP connection to `addr`, paired with this one. The socket is created and
    /// the connect started now (errors such as EMFILE return here); completion arrives as
    /// [`Service::on_connected`] on the new connection. Bytes written to [`ConnCx::peer_output`]
    /// meanwhile are sent once it is connected.
    pub fn connect(&mut self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        if self.peer.is_some() || self.effects.connect.is_some() || self.effects.pair.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the connection is already paired",
            ));
        }
        self.effects.connect = Some(start_connect(addr)?);
        Ok(())
    }

    /// Opens an outbound TCP connection to `addr` that is not paired with this one (several
    /// may be asked for in one callback: one per stream of a multiplexed client). Secure with
    /// the transport's client profile `profile`, if given. Right after the callback the new
    /// connection hears [`Service::on_opened`] with `tag`, then [`Service::on_connected`] when
    /// it connects; if it cannot be added, this connection hears [`Service::on_open_failed`].
    /// Socket errors (EMFILE...) return here.
    pub fn open(
        &mut self,
        addr: std::net::SocketAddr,
        profile: Option<u32>,
        tag: u64,
    ) -> std::io::Result<()> {
        self.open_request(addr, profile, tag, None)
    }

    /// Like [`ConnCx::open`], with `preamble` as the connection's first bytes on the wire, sent
    /// as they are once it connects: before the TLS handshake of a secure one, before anything
    /// the service writes on a plaintext one (a PROXY protocol header).
    pub fn open_with_preamble(
        &mut self,
        addr: std::net::SocketAddr,
        profile: Option<u32>,
        tag: u64,
        preamble: Box<[u8]>,
    ) -> std::io::Result<()> {
        self.open_request(addr, profile, tag, Some(preamble))
    }

    fn open_request(
        &mut self,
        addr: std::net::SocketAddr,
        profile: Option<u32>,
        tag: u64,
        preamble: Option<Box<[u8]>>,
    ) -> std::io::Result<()> {
        let fd = start_connect(addr)?;
        self.effects.opens.push(OpenRequest {
            fd,
            profile,
            tag,
            preamble,
        });
        Ok(())
    }

    /// Like [`ConnCx::connect`], then a secure session with the transport's client profile
    /// `profile` on top: [`Service::on_connected`] comes once its handshake is done (a failed
    /// handshake, or a profile the transport refuses, is a failed connect). Bytes written to
    /// [`ConnCx::peer_output`] meanwhile are sealed and sent once it is.
    pub fn connect_secure(
        &mut self,
        addr: std::net::SocketAddr,
        profile: u32,
    ) -> std::io::Result<()> {
        self.connect(addr)?;
        self.effects.connect_profile = Some(profile);
        Ok(())
    }

    /// Pairs this connection with `other` (e.g. a pooled idle backend connection) after the
    /// callback returns. Both must be unpaired; otherwise nothing happens.
    pub fn pair(&mut self, other: crate::table::Id) {
        self.effects.pair = Some(other);
    }

    /// Ends the pairing (e.g. to return a backend connection to a pool).
    pub fn unpair(&mut self) {
        self.requests |= flags::UNPAIR;
    }

    /// Closes the peer now, or after its pending output is sent.
    pub fn close_peer(&mut self, reason: CloseReason, after_flush: bool) {
        self.requests |= if after_flush {
            flags::CLOSE_PEER_AFTER_FLUSH
        } else {
            flags::CLOSE_PEER
        };
        self.effects.peer_reason = Some(reason);
    }

    /// Half-close: once pending output is sent, shut down the sending side (FIN) and keep reading.
    /// A connection whose both directions are finished is closed by the engine.
    pub fn shutdown_write(&mut self) {
        self.requests |= flags::SHUTDOWN_WRITE;
    }

    /// [`ConnCx::shutdown_write`] on the peer (e.g. forwarding a client's half-close upstream).
    pub fn shutdown_peer_write(&mut self) {
        self.requests |= flags::SHUTDOWN_PEER_WRITE;
    }

    /// Resumes this connection's paused input after the callback (buffered input first).
    pub fn resume_input(&mut self) {
        self.requests |= flags::RESUME;
    }

    /// Calls [`Service::on_wake`] on connection `other` once the shard has handled its current
    /// batch of completions, if it is still open then (several wakes of one connection in a
    /// batch make one call).
    pub fn wake(&mut self, other: crate::table::Id) {
        self.effects.wake.push(other);
    }

    /// Resumes a peer that paused its input (its buffered input is presented again).
    pub fn resume_peer(&mut self) {
        self.requests |= flags::RESUME_PEER;
    }
}

/// A non-blocking socket with its connect to `addr` started.
fn start_connect(addr: std::net::SocketAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

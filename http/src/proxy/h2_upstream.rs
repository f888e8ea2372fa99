//! HTTP/2 streams proxied to HTTP/2 backends: the multiplexed backend connection.
//!
//! One [`BackendH2`] per h2 backend connection (keyed by its engine id in
//! `ProxyShard::h2_conns`) carries the streams of many exchanges, each still a
//! `StreamExchange` whose client side (`streams`) is the same as for HTTP/1.1 backends. The
//! connection's life, as the pool sees it:
//!
//! ```text
//!  opened ──connect──> connected ──SETTINGS──> pooled (capacity = min(ours, theirs))
//!    │ waiting: exchanges that chose to wait for it (each holds an attempt slot)
//!    │                                  │ to_open: exchanges given a stream slot on it
//!    │                                  │ streams: (stream id, exchange) in flight
//!    └── fails: the opener retries, the others decide again          │
//!                               GOAWAY ──> draining: streams above last_stream_id, and those
//!                                          refused with REFUSED_STREAM, decide again
//! ```
//!
//! - Capacity is 0 until the server's SETTINGS arrive: exchanges that would open a connection
//!   to a server with one still starting wait for it instead (as many as it is expected to
//!   carry: the capacity its server had last time, else ours), so a burst opens one connection
//!   per capacity, not one per stream. At SETTINGS the first becomes `connected_mux`, the rest
//!   `join`; those beyond the real capacity decide again. New SETTINGS recompute the capacity.
//! - The pool decides which connection a stream takes (reservation per session in `safe`, the
//!   `avail` list in `always`); a stream slot is held from the decision until the stream ends, is
//!   reset, or the connection closes (`conn_closed` frees them all).
//! - Flow control ties to the client: request DATA goes out within the backend's windows and the
//!   output bound, and the client's window reopens as it leaves; response DATA waits in the
//!   exchange and the backend stream's window reopens only as the client takes it (our stream
//!   window, `http2.initial_window_size`, bounds what one stream holds).
//! - A server that does not speak h2 (`auto`): by ALPN over TLS, or an HTTP/1 answer (or a
//!   close) before SETTINGS on plaintext, the server is remembered as HTTP/1.1 (for a minute,
//!   then h2 is offered again) and the waiting exchanges decide again (over TLS the opener keeps
//!   the connection as HTTP/1.1).

use super::translate::{self, ResponseFields};
use super::{conn_id, Failure, Stage};
use crate::runtime::BackendProtocol;
use crate::service::{Cx, HttpService, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_pool::{Release, ServerId, SessionId};
use coreplex_protocol::h2::conn::{Connection, Event, Role};
use coreplex_protocol::h2::error::ErrorCode;
use std::time::Instant;

/// What a server was found to speak (per shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    Unknown,
    /// It sent SETTINGS; the capacity of its last connection.
    H2 {
        capacity: u32,
    },
    /// It answered as HTTP/1.1 (ALPN, or its reply to the preface): HTTP/1.1 until `until`,
    /// then h2 is tried again (the server may have been upgraded).
    H1 {
        until: Instant,
    },
}

/// How long a server found to speak only HTTP/1.1 is not offered h2 again.
const H1_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

impl Learned {
    fn h1_since(now: Instant) -> Learned {
        Learned::H1 {
            until: now + H1_RECHECK,
        }
    }

    fn is_h1(self, now: Instant) -> bool {
        matches!(self, Learned::H1 { until } if until > now)
    }
}

/// One multiplexed backend connection.
pub(crate) struct BackendH2 {
    pub conn: Connection,
    pub backend: usize,
    pub server: ServerId,
    /// The session it was opened for (before SETTINGS, others join it only where the mode
    /// shares connections).
    pub session: SessionId,
    /// Exchanges waiting for its SETTINGS, the opener first (each holds an attempt slot).
    pub waiting: Vec<u64>,
    /// Exchanges given a stream slot on it whose stream is not open yet.
    pub to_open: Vec<u64>,
    /// Streams in flight: (stream id, exchange).
    pub streams: Vec<(u32, u64)>,
    /// Streams whose exchange left: RST_STREAM(CANCEL) goes out at the next pump.
    pub cancel: Vec<u32>,
    /// Exchanges that left work for the next pump (body bytes, window to return): only they are
    /// looked at, unless `all` (the backend's windows grew).
    pub touched: Vec<u64>,
    pub all: bool,
    /// The TCP (and TLS) connect finished.
    pub connected: bool,
    /// Its SETTINGS arrived: the pool tracks it.
    pub pooled: bool,
    /// Streams the server answered (a response head arrived): a connection that answered some
    /// made progress, so the streams it refuses or leaves above its GOAWAY go again without
    /// counting against their bound of decisions (a server that rotates its connections every
    /// few streams still serves every request).
    pub answered: u32,
}

impl BackendH2 {
    fn key_of(&self, stream: u32) -> Option<u64> {
        self.streams
            .iter()
            .find(|&&(s, _)| s == stream)
            .map(|&(_, k)| k)
    }

    fn forget(&mut self, stream: u32) {
        if let Some(i) = self.streams.iter().position(|&(s, _)| s == stream) {
            self.streams.swap_remove(i);
        }
    }

    /// Streams it may carry at once: min(`ours`, the server's limit).
    fn capacity(&self, ours: u32) -> u32 {
        self.conn.peer_settings().max_concurrent_streams.min(ours)
    }
}

impl HttpService {
    /// Whether streams to `server` of backend `b` go over HTTP/2 (as far as this shard knows).
    pub(super) fn speaks_h2(&self, b: usize, server: ServerId) -> bool {
        match self.proxy.backends[b].config.protocol {
            BackendProtocol::H1 => false,
            BackendProtocol::H2 => true,
            BackendProtocol::Auto => {
                !self.proxy.learned[b][server.0 as usize].is_h1(Instant::now())
            }
        }
    }

    /// A connection to `server` still starting (asked for, connecting, or waiting for SETTINGS)
    /// that exchange `key` may wait for instead of opening its own: its expected capacity not
    /// yet spoken for, and its session's unless the mode shares connections. Returns the
    /// connection if it exists already (`None` inside: it is still being opened).
    pub(super) fn h2_wait_for(
        &mut self,
        b: usize,
        server: ServerId,
        key: u64,
    ) -> Option<Option<Id>> {
        let session = self.proxy.streams.get(&key)?.info.session;
        let shares = matches!(
            self.proxy.pools[b].policy().reuse,
            coreplex_pool::ReuseMode::Aggressive | coreplex_pool::ReuseMode::Always
        );
        let expected = match self.proxy.learned[b][server.0 as usize] {
            Learned::H2 { capacity } => capacity,
            _ => self.proxy.backends[b].config.http2.max_concurrent_streams,
        } as usize;
        let fits = |h: &BackendH2| {
            h.backend == b
                && h.server == server
                && !h.pooled
                && h.waiting.len() < expected
                && (shares || h.session == session)
        };
        let pending = self
            .proxy
            .h2_pending
            .iter()
            .copied()
            .find(|id| self.proxy.h2_conns.get(id).is_some_and(|h| fits(h)));
        if let Some(id) = pending {
            self.proxy.h2_conns.get_mut(&id)?.waiting.push(key);
            return Some(Some(id));
        }
        let h = self.proxy.h2_opening.values_mut().find(|h| fits(h))?;
        h.waiting.push(key);
        Some(None)
    }

    /// Exchange `key` asked the engine for a connection to `server` that will speak h2: others
    /// may wait for it from now on.
    pub(super) fn h2_opening_start(&mut self, key: u64, b: usize, server: ServerId) {
        let settings = self.proxy.backends[b].config.http2;
        let session = self.proxy.streams[&key].info.session;
        self.proxy.h2_opening.insert(
            key,
            Box::new(BackendH2 {
                conn: Connection::new(Role::Client, settings),
                backend: b,
                server,
                session,
                waiting: vec![key],
                to_open: Vec::new(),
                streams: Vec::new(),
                cancel: Vec::new(),
                touched: Vec::new(),
                all: false,
                connected: false,
                pooled: false,
                answered: 0,
            }),
        );
    }

    /// The connection exchange `key` asked for exists: the exchanges waiting for it (the asker
    /// first, if still there) follow it. Returns `false` when nobody waits any more.
    pub(super) fn h2_opened(&mut self, cx: &mut Cx<'_>, key: u64) -> bool {
        let Some(mut h) = self.proxy.h2_opening.remove(&key) else {
            return false;
        };
        h.waiting.retain(|k| self.proxy.streams.contains_key(k));
        if h.waiting.is_empty() {
            return false;
        }
        for k in &h.waiting {
            if let Some(ex) = self.proxy.streams.get_mut(k) {
                ex.conn = Some(cx.id());
                ex.opening = false;
            }
        }
        self.proxy.h2_conns.insert(cx.id(), h);
        self.proxy.h2_pending.push(cx.id());
        true
    }

    /// The engine had no slot for the connection exchange `key` asked for: the others that
    /// waited for it decide again (the asker answers 503).
    pub(super) fn h2_open_failed(&mut self, key: u64) {
        if let Some(h) = self.proxy.h2_opening.remove(&key) {
            for k in h.waiting.into_iter().filter(|&k| k != key) {
                if let Some(ex) = self.proxy.streams.get_mut(&k) {
                    ex.opening = false;
                }
                self.requeue_waiter(h.backend, h.server, k);
            }
        }
    }

    /// An exchange waiting for a connection still being opened leaves.
    pub(super) fn h2_leave_opening(&mut self, key: u64) {
        for h in self.proxy.h2_opening.values_mut() {
            // The asker's own entry stays (keyed by it): the others may still use it.
            h.waiting.retain(|&k| k != key);
        }
    }

    /// Whether `id` is a multiplexed backend connection.
    pub(crate) fn is_h2_backend(&self, id: Id) -> bool {
        self.proxy.h2_conns.contains_key(&id)
    }

    /// The TCP (and TLS) connect of an h2 backend connection finished.
    pub(crate) fn h2_backend_connected(&mut self, cx: &mut Cx<'_>, result: std::io::Result<()>) {
        let id = cx.id();
        let Some(h) = self.proxy.h2_conns.get_mut(&id) else {
            return;
        };
        if let Err(e) = result {
            tracing::debug!("backend connect failed: {e}");
            if let Some(ex) = h
                .waiting
                .first()
                .and_then(|k| self.proxy.streams.get_mut(k))
            {
                ex.failure = Some(Failure::ConnectFailed);
            }
            cx.close(CloseReason::ConnectFailed);
            return;
        }
        h.connected = true;
        let (b, server) = (h.backend, h.server);
        let alpn = cx
            .session::<Box<coreplex_tls::State>>()
            .map(|t| t.alpn() == Some(b"h2"));
        if alpn == Some(false) {
            // The server chose HTTP/1.1 (or nothing): remember it; the opener keeps this
            // connection as HTTP/1.1, the others decide again.
            self.proxy.stats[b].alpn_fallbacks[server.0 as usize] += 1;
            self.proxy.learned[b][server.0 as usize] = Learned::h1_since(cx.now());
            if self.proxy.backends[b].config.protocol == BackendProtocol::Auto {
                return self.h2_fall_back(cx);
            }
            // `protocol = "h2"`: a server that does not speak it fails like a refused connect.
            if let Some(ex) = h
                .waiting
                .first()
                .and_then(|k| self.proxy.streams.get_mut(k))
            {
                ex.failure = Some(Failure::ConnectFailed);
            }
            cx.close(CloseReason::ProtocolError);
            return;
        }
        h.conn.start(cx.output());
        // SETTINGS must follow within the connect timeout.
        cx.set_timer(self.proxy.backends[b].config.timeouts.connect);
    }

    /// An `auto` server turned out to speak HTTP/1.1 on a connection just made: the opener's
    /// exchange takes it as an HTTP/1.1 connection, the exchanges waiting with it decide again.
    fn h2_fall_back(&mut self, cx: &mut Cx<'_>) {
        let id = cx.id();
        let Some(h) = self.proxy.h2_conns.remove(&id) else {
            return;
        };
        self.proxy.h2_pending.retain(|&c| c != id);
        let mut waiting = h.waiting.into_iter();
        let opener = waiting.next();
        for key in waiting {
            self.requeue_waiter(h.backend, h.server, key);
        }
        match opener {
            Some(key) if self.proxy.streams.contains_key(&key) => {
                if let Some(ex) = self.proxy.streams.get_mut(&key) {
                    ex.mux = false;
                }
                self.proxy.stream_of_conn.insert(id, key);
                self.stream_connected(cx, key, Ok(()));
            }
            _ => cx.close(CloseReason::Done),
        }
    }

    /// An exchange that waited for a connection that will not carry it gives its attempt slot
    /// back and decides again (not the server's fault, not a retry).
    fn requeue_waiter(&mut self, b: usize, server: ServerId, key: u64) {
        let _ = self.proxy.pools[b].connect_aborted(server);
        self.proxy.dirty = true;
        self.requeue(key);
    }

    /// Marks exchange `key` to decide again at its client's next wake (its pool slot is
    /// already returned).
    fn requeue(&mut self, key: u64) {
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            ex.stage = Stage::Deciding;
            ex.conn = None;
            ex.connected = false;
            ex.h2_stream = None;
            ex.failure = Some(Failure::Requeue);
            let client = ex.client;
            self.proxy.wake_later(client);
        }
    }

    /// A stream the server did not process (REFUSED_STREAM, or above its GOAWAY's last stream):
    /// its slot goes back and the exchange decides again if its request can be sent again.
    fn refused(&mut self, b: usize, id: Id, key: u64, now: Instant, progress: bool) {
        self.release_stream(b, id, now);
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            self.proxy.stats[b].h2_refused += 1;
            ex.free_requeue = progress;
            ex.stage = Stage::Deciding;
            ex.conn = None;
            ex.connected = false;
            ex.h2_stream = None;
            ex.failure = Some(Failure::Refused);
            let client = ex.client;
            self.proxy.wake_later(client);
        }
    }

    /// Gives a stream's slot on connection `id` back to the pool (closing the connection when the
    /// pool says so: it drained).
    fn release_stream(&mut self, b: usize, id: Id, now: Instant) {
        match self.proxy.pools[b].release(conn_id(id), true, false, now) {
            Ok(Release::Keep) => {}
            Ok(Release::Close) => self.proxy.close_later(id),
            Err(e) => tracing::debug!("pool bookkeeping: {e}"),
        }
        self.proxy.dirty = true;
    }

    /// Frames from an h2 backend.
    pub(crate) fn h2_backend_input(&mut self, cx: &mut Cx<'_>, input: &[u8]) -> usize {
        let id = cx.id();
        let Some(mut h) = self.proxy.h2_conns.remove(&id) else {
            cx.close(CloseReason::ProtocolError);
            return input.len();
        };
        if !h.pooled && input.starts_with(b"HTTP/") {
            // A plaintext `auto` server answered the preface as HTTP/1.
            self.proxy.h2_conns.insert(id, h);
            return self.h2_not_h2(cx, input.len());
        }
        let now_ms = cx.now().saturating_duration_since(self.epoch).as_millis() as u64;
        let mut pos = 0;
        let mut failed = false;
        loop {
            let base = pos;
            match h.conn.recv(&input[base..], now_ms, cx.output()) {
                Err(code) => {
                    tracing::debug!("backend h2 connection error: {code:?}");
                    self.proxy.stats[h.backend].h2_goaway_sent += 1;
                    failed = true;
                    pos = input.len();
                    break;
                }
                Ok((used, ev)) => {
                    pos += used;
                    let Some(ev) = ev else { break };
                    self.h2_backend_event(cx, &mut h, ev, &input[base..]);
                }
            }
        }
        if failed {
            self.proxy.h2_conns.insert(id, h);
            cx.close_after_flush(CloseReason::ProtocolError);
            return pos;
        }
        self.h2_backend_settle(cx, h);
        pos
    }

    /// A plaintext `auto` server does not speak h2: remember it, every waiting exchange decides
    /// again (as HTTP/1.1), and this connection closes.
    fn h2_not_h2(&mut self, cx: &mut Cx<'_>, used: usize) -> usize {
        let id = cx.id();
        if let Some(h) = self.proxy.h2_conns.get(&id) {
            let (b, s) = (h.backend, h.server);
            if self.proxy.backends[b].config.protocol == BackendProtocol::Auto {
                self.proxy.learned[b][s.0 as usize] = Learned::h1_since(cx.now());
                self.proxy.stats[b].alpn_fallbacks[s.0 as usize] += 1;
                let waiting = self
                    .proxy
                    .h2_conns
                    .get_mut(&id)
                    .map(|h| std::mem::take(&mut h.waiting))
                    .unwrap_or_default();
                for key in waiting {
                    self.requeue_waiter(b, s, key);
                }
            } else if let Some(ex) = h
                .waiting
                .first()
                .and_then(|k| self.proxy.streams.get_mut(k))
            {
                ex.failure = Some(Failure::BadResponse);
            }
        }
        cx.close(CloseReason::ProtocolError);
        used
    }

    fn h2_backend_event(&mut self, cx: &mut Cx<'_>, h: &mut BackendH2, ev: Event, input: &[u8]) {
        let now = cx.now();
        let id = cx.id();
        let b = h.backend;
        match ev {
            Event::Settings => self.h2_settings(cx, h),
            Event::Headers { stream, end_stream } => {
                let Some(key) = h.key_of(stream) else {
                    return;
                };
                let c = *h.conn.checked();
                let Some(ex) = self.proxy.streams.get_mut(&key) else {
                    return;
                };
                ex.resp_seen = true;
                h.answered = h.answered.saturating_add(1);
                // Answered: the stream was processed, its body will not go again.
                ex.up_copy = Vec::new();
                ex.up_copy_lost = true;
                if c.status < 200 {
                    return; // 1xx heads are not passed on
                }
                ex.status = c.status;
                let mut fields = ResponseFields::from_h2(h.conn.head(), c.regular_start);
                if ex.mux_tunnel && c.status == 200 {
                    // The extended CONNECT succeeded: the client's 101 (RFC 8441 section 5,
                    // the other way), with the accept value of the client's key.
                    ex.status = 101;
                    fields.push(b"upgrade", b"websocket");
                    if let Some(a) = &ex.accept {
                        fields.push(b"sec-websocket-accept", a);
                    }
                }
                ex.fields = Some(fields);
                cx.wake(ex.client);
                if end_stream {
                    self.h2_stream_done(cx, h, stream, key);
                }
            }
            Event::Trailers { stream } => {
                // Trailers are not passed on; they end the response.
                if let Some(key) = h.key_of(stream) {
                    self.h2_stream_done(cx, h, stream, key);
                }
            }
            Event::Data {
                stream,
                start,
                len,
                end_stream,
            } => {
                let ex = h
                    .key_of(stream)
                    .and_then(|key| self.proxy.streams.get_mut(&key).map(|ex| (key, ex)));
                let Some((key, ex)) = ex else {
                    // Nobody waits for it: give the window back at once.
                    h.conn.consumed(stream, len, cx.output());
                    return;
                };
                ex.down.extend_from_slice(&input[start..start + len]);
                cx.wake(ex.client);
                if end_stream {
                    self.h2_stream_done(cx, h, stream, key);
                }
            }
            Event::Reset {
                stream,
                code,
                remote,
            } => {
                let Some(key) = h.key_of(stream) else {
                    return;
                };
                h.forget(stream);
                if remote && code == ErrorCode::RefusedStream {
                    self.refused(b, id, key, now, h.answered > 0);
                    return;
                }
                self.release_stream(b, id, now);
                if let Some(ex) = self.proxy.streams.get_mut(&key) {
                    ex.conn = None;
                    ex.h2_stream = None;
                    if !ex.down_end {
                        ex.failure = Some(Failure::BadResponse);
                    }
                    let client = ex.client;
                    self.proxy.wake_later(client);
                }
            }
            Event::GoAway { last_stream, code } => {
                tracing::debug!("backend GOAWAY last_stream={last_stream} {code:?}");
                self.proxy.stats[b].h2_goaway_received += 1;
                if self.proxy.pools[b].drain(conn_id(id)) {
                    self.proxy.close_later(id);
                }
                while let Some(stream) = h.conn.take_refused() {
                    if let Some(key) = h.key_of(stream) {
                        h.forget(stream);
                        self.refused(b, id, key, now, h.answered > 0);
                    }
                }
                for key in std::mem::take(&mut h.to_open) {
                    self.release_stream(b, id, now);
                    self.requeue(key);
                }
                for key in std::mem::take(&mut h.waiting) {
                    self.requeue_waiter(b, h.server, key);
                }
            }
            Event::Writable => h.all = true,
            Event::TooLarge { stream } => {
                // Only a server gets this; reset defensively.
                h.conn.reset(stream, ErrorCode::ProtocolError, cx.output());
            }
        }
    }

    /// The server's SETTINGS: the connection enters the pool (first time) or its capacity changes.
    fn h2_settings(&mut self, cx: &mut Cx<'_>, h: &mut BackendH2) {
        let id = cx.id();
        let b = h.backend;
        let capacity = h.capacity(self.proxy.backends[b].config.http2.max_concurrent_streams);
        self.proxy.learned[b][h.server.0 as usize] = Learned::H2 { capacity };
        if h.pooled {
            if self.proxy.pools[b].set_capacity(conn_id(id), capacity) {
                // Idle, and the server now allows no stream: it would only be handed out.
                self.proxy.close_later(id);
            }
            self.proxy.dirty = true;
            return;
        }
        h.pooled = true;
        self.proxy.h2_pending.retain(|&c| c != id);
        self.proxy.stats[b].h2_sessions += 1;
        let mut first = true;
        for key in std::mem::take(&mut h.waiting) {
            let Some(ex) = self.proxy.streams.get(&key) else {
                // Its client left: the slot was returned with it.
                continue;
            };
            let (session, since) = (ex.info.session, ex.since);
            let joined = if first {
                first = false;
                self.proxy
                    .note_connected(cx, b, h.server, session, since, Some(capacity));
                true
            } else {
                self.proxy.pools[b].join(conn_id(id)).is_ok()
            };
            if !joined {
                self.requeue_waiter(b, h.server, key);
                continue;
            }
            let ex = self.proxy.streams.get_mut(&key).expect("checked");
            ex.connected = true;
            ex.stage = Stage::Forwarding;
            h.to_open.push(key);
        }
        if first {
            // Every waiter left before SETTINGS (their attempts went back with them): the
            // connection is not needed.
            cx.close(CloseReason::Done);
        }
    }

    /// The response of `stream` is complete: its slot goes back (a request still being sent is
    /// cancelled: the server has answered).
    fn h2_stream_done(&mut self, cx: &mut Cx<'_>, h: &mut BackendH2, stream: u32, key: u64) {
        h.forget(stream);
        let b = h.backend;
        let now = cx.now();
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            ex.down_end = true;
            ex.conn = None;
            ex.h2_stream = None;
            if !ex.up_end_sent {
                h.conn.reset(stream, ErrorCode::Cancel, cx.output());
            }
            cx.wake(ex.client);
        }
        self.release_stream(b, cx.id(), now);
    }

    /// After input or a wake: open streams given to the connection, send request bodies within
    /// the windows, return response windows the clients freed, cancel abandoned streams; then
    /// keep the state or close a connection that is done.
    fn h2_backend_settle(&mut self, cx: &mut Cx<'_>, mut h: Box<BackendH2>) {
        let id = cx.id();
        if h.pooled {
            self.h2_pump(cx, &mut h);
        }
        let t = &self.proxy.backends[h.backend].config.timeouts;
        if h.pooled {
            if h.streams.is_empty() && h.to_open.is_empty() {
                cx.clear_timer();
            } else {
                cx.set_timer(t.server);
            }
        }
        let done = h.conn.is_done() && h.streams.is_empty() && h.to_open.is_empty();
        self.proxy.h2_conns.insert(id, h);
        if done {
            cx.close_after_flush(CloseReason::Done);
        }
    }

    fn h2_pump(&mut self, cx: &mut Cx<'_>, h: &mut BackendH2) {
        let now = cx.now();
        let id = cx.id();
        let b = h.backend;
        for stream in std::mem::take(&mut h.cancel) {
            h.conn.reset(stream, ErrorCode::Cancel, cx.output());
        }
        let scheme: &[u8] = if cx.is_secure() { b"https" } else { b"http" };
        while !h.to_open.is_empty() {
            if cx.pending_output() > MAX_PENDING_OUTPUT {
                break;
            }
            let key = h.to_open.remove(0);
            let Some(ex) = self.proxy.streams.get_mut(&key) else {
                continue;
            };
            let extended = ex.may_ride_h2();
            if extended && !h.conn.peer_settings().enable_connect_protocol {
                // RFC 8441 not announced: the WebSocket goes over HTTP/1.1, and so do this
                // server's next ones.
                ex.info.multiplexed = false;
                self.proxy.no_ext_connect[b][h.server.0 as usize] = true;
                self.release_stream(b, id, now);
                self.requeue(key);
                continue;
            }
            if extended && !ex.h2_tunnel {
                // The stream carries an HTTP/1.1 client's tunnel: its request side ends with
                // the client's FIN. (An h2 client's extended CONNECT goes on as it is: its own
                // END_STREAM ends it.)
                ex.mux_tunnel = true;
                ex.up_end = false;
            }
            let Some(stream) = h.conn.open_stream() else {
                // The capacity shrank (new SETTINGS or GOAWAY) under the pool's count.
                self.release_stream(b, id, now);
                self.requeue(key);
                continue;
            };
            let end = ex.up_end && ex.up.is_empty();
            let head = std::mem::take(&mut ex.head);
            let mut ok = true;
            let protocol = extended.then_some(&b"websocket"[..]);
            h.conn.send_headers(stream, end, cx.output(), |w| {
                ok = translate::h2_request(&head, scheme, protocol, w);
            });
            ex.head = head;
            if ex.method == coreplex_protocol::h1::Method::Head {
                h.conn.expect_no_body(stream);
            }
            ex.head_sent = true;
            ex.h2_stream = Some(stream);
            ex.up_end_sent = end;
            if !end {
                h.touched.push(key);
            }
            h.streams.push((stream, key));
            if !ok {
                tracing::warn!("an h2 backend request head did not translate");
                h.conn.reset(stream, ErrorCode::InternalError, cx.output());
                h.forget(stream);
                self.release_stream(b, id, now);
                if let Some(ex) = self.proxy.streams.get_mut(&key) {
                    ex.conn = None;
                    ex.failure = Some(Failure::BadResponse);
                    cx.wake(ex.client);
                }
            }
        }
        let mut keys = std::mem::take(&mut h.touched);
        if std::mem::take(&mut h.all) {
            keys.clear();
            keys.extend(h.streams.iter().map(|&(_, k)| k));
        }
        for &key in &keys {
            let Some(ex) = self.proxy.streams.get_mut(&key) else {
                continue;
            };
            let Some(stream) = ex.h2_stream.filter(|_| ex.conn == Some(id)) else {
                continue;
            };
            if ex.down_unacked > 0 {
                h.conn.consumed(stream, ex.down_unacked, cx.output());
                ex.down_unacked = 0;
            }
            if ex.up_end_sent || (ex.up.is_empty() && !ex.up_end) {
                continue;
            }
            let room = MAX_PENDING_OUTPUT.saturating_sub(cx.pending_output());
            let n = ex.up.len().min(room);
            let all = n == ex.up.len();
            let sent = h
                .conn
                .send_data(stream, &ex.up[..n], ex.up_end && all, cx.output());
            if sent > 0 {
                if !ex.up_copy_lost && ex.up_copy.len() + sent <= super::streams::REPLAY_MAX {
                    ex.up_copy.extend_from_slice(&ex.up[..sent]);
                } else {
                    ex.up_copy = Vec::new();
                    ex.up_copy_lost = true;
                }
                ex.up.drain(..sent);
                ex.up_credit += sent;
                ex.up_sent = true;
                cx.wake(ex.client);
            }
            if ex.up_end && ex.up.is_empty() && sent == n && all {
                ex.up_end_sent = true;
            } else if !ex.up.is_empty() || ex.up_end {
                // Held back by the windows or the output bound: `all` at the next Writable,
                // or the drain wakes us.
                h.all |= cx.pending_output() >= MAX_PENDING_OUTPUT;
            }
        }
        keys.clear();
        if h.touched.is_empty() {
            h.touched = keys; // keep the capacity
        }
    }

    /// The client side left something for the connection (a stream to open, body bytes, window
    /// to return, a stream to cancel).
    pub(crate) fn h2_backend_wake(&mut self, cx: &mut Cx<'_>) {
        if let Some(h) = self.proxy.h2_conns.remove(&cx.id()) {
            self.h2_backend_settle(cx, h);
        }
    }

    /// The connection's timer: SETTINGS not there within the connect timeout, or streams in
    /// flight and the server silent for `timeouts.server` (streams whose client holds the
    /// response back are not the server's fault and keep going).
    pub(crate) fn h2_backend_timer(&mut self, cx: &mut Cx<'_>) {
        let id = cx.id();
        let Some(mut h) = self.proxy.h2_conns.remove(&id) else {
            return;
        };
        let b = h.backend;
        if !h.pooled {
            if let Some(ex) = h
                .waiting
                .first()
                .and_then(|k| self.proxy.streams.get_mut(k))
            {
                ex.failure = Some(Failure::ConnectTimeout);
            }
            self.proxy.h2_conns.insert(id, h);
            cx.close(CloseReason::ClientTimeout);
            return;
        }
        let now = cx.now();
        let mut i = 0;
        while i < h.streams.len() {
            let (stream, key) = h.streams[i];
            let held_by_client = self
                .proxy
                .streams
                .get(&key)
                .is_some_and(|ex| !ex.down.is_empty());
            if held_by_client {
                i += 1;
                continue;
            }
            h.streams.swap_remove(i);
            h.conn.reset(stream, ErrorCode::Cancel, cx.output());
            self.release_stream(b, id, now);
            if let Some(ex) = self.proxy.streams.get_mut(&key) {
                ex.conn = None;
                ex.h2_stream = None;
                ex.failure = Some(Failure::ServerTimeout);
                let client = ex.client;
                self.proxy.wake_later(client);
            }
        }
        self.h2_backend_settle(cx, h);
    }

    /// The process stops: an idle connection closes now (GOAWAY first), one with streams
    /// takes no new ones and closes after them, without a GOAWAY meanwhile (some servers stop
    /// answering the streams they have once they get one, and ours would say nothing they need:
    /// we accept no streams from them).
    pub(crate) fn h2_backend_shutdown(&mut self, cx: &mut Cx<'_>) {
        let id = cx.id();
        let Some(mut h) = self.proxy.h2_conns.remove(&id) else {
            return;
        };
        if !h.pooled {
            // Still starting: the exchanges waiting for it go on (the stop lets them finish).
            self.proxy.h2_conns.insert(id, h);
            return;
        }
        if self.proxy.pools[h.backend].drain(conn_id(id)) {
            h.conn.begin_shutdown(cx.output());
            self.proxy.h2_conns.insert(id, h);
            cx.close_after_flush(CloseReason::Shutdown);
            return;
        }
        self.h2_backend_settle(cx, h);
    }

    /// The server closed its side: every stream still on the connection fails (heard when it
    /// closes).
    pub(crate) fn h2_backend_eof(&mut self, cx: &mut Cx<'_>) {
        cx.close(CloseReason::PeerClosed);
    }

    /// An exchange on connection `id` is dropped by its client side: its place on the
    /// connection goes (and its slot, if it held one; `has_slot`).
    pub(super) fn h2_detach(&mut self, id: Id, key: u64, stream: Option<u32>, has_slot: bool) {
        let Some(h) = self.proxy.h2_conns.get_mut(&id) else {
            return;
        };
        let b = h.backend;
        h.waiting.retain(|&k| k != key);
        h.to_open.retain(|&k| k != key);
        if let Some(s) = stream {
            h.forget(s);
            h.cancel.push(s);
        }
        if has_slot {
            self.release_stream(b, id, Instant::now());
        }
        self.proxy.wake_later(id);
    }

    /// An h2 backend connection closed (the pool already forgot it and freed its streams'
    /// slots): every exchange it carried or that waited for it learns it at its client's next
    /// wake.
    pub(crate) fn h2_backend_closed(&mut self, id: Id) {
        let Some(h) = self.proxy.h2_conns.remove(&id) else {
            return;
        };
        self.proxy.h2_pending.retain(|&c| c != id);
        let (b, server) = (h.backend, h.server);
        if !h.pooled {
            let auto = self.proxy.backends[b].config.protocol == BackendProtocol::Auto;
            let timed_out = h
                .waiting
                .first()
                .and_then(|k| self.proxy.streams.get(k))
                .is_some_and(|ex| ex.failure == Some(Failure::ConnectTimeout));
            let now = Instant::now();
            let unknown = !self.proxy.learned[b][server.0 as usize].is_h1(now);
            if h.connected && auto && !timed_out && unknown {
                // An `auto` server that took the connection and closed it on the preface.
                self.proxy.learned[b][server.0 as usize] = Learned::h1_since(now);
                self.proxy.stats[b].alpn_fallbacks[server.0 as usize] += 1;
                for key in h.waiting {
                    self.requeue_waiter(b, server, key);
                }
                return;
            }
            let mut waiting = h.waiting.into_iter();
            if let Some(key) = waiting.next() {
                // The opener keeps its attempt: its client side counts the failure.
                if let Some(ex) = self.proxy.streams.get_mut(&key) {
                    ex.conn = None;
                    if ex.failure.is_none() {
                        ex.failure = Some(Failure::ConnectFailed);
                    }
                    let client = ex.client;
                    self.proxy.wake_later(client);
                }
            }
            for key in waiting {
                self.requeue_waiter(b, server, key);
            }
            return;
        }
        for key in h.to_open {
            self.requeue(key);
        }
        for (_, key) in h.streams {
            if let Some(ex) = self.proxy.streams.get_mut(&key) {
                ex.conn = None;
                ex.h2_stream = None;
                let client = ex.client;
                self.proxy.wake_later(client);
            }
        }
    }
}

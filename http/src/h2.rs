//! The HTTP/2 front end: a client connection that negotiated `h2` by ALPN, or sent the h2c
//! preface on a listener with `http2.h2c`, is driven by a sans-I/O
//! [`Connection`](coreplex_protocol::h2::conn::Connection) kept in the service's `h2_conns`
//! table for its life (HPACK tables, stream records), not in the engine's busy box: an idle h2
//! connection then holds no engine buffers, only that table entry.
//!
//! Each stream's request is routed like an HTTP/1.1 request (`:authority` as the host, `:path`
//! without its query) and answered with the route's pre-rendered response once the request is
//! complete (its body read and dropped, windows reopened at once, `max_body` enforced with 413):
//! HEADERS then DATA as the windows allow; a body the client's window holds back waits in
//! `pending` and goes on at the next WINDOW_UPDATE. A response sent before its request ended
//! (413, 431) is followed by RST_STREAM(NO_ERROR) (RFC 9113 section 8.1). A stream whose route
//! proxies becomes an exchange of its own (`proxy::streams`), answered as its backend
//! connection delivers; `proxied` lists them.
//!
//! Timers: `http_request` until the first request, `http2.idle_timeout` (default
//! `http_keep_alive`) from the last request while no stream is open (frames without a request,
//! PINGs or a trickle of bytes, do not extend either)
//! (then GOAWAY(NO_ERROR) and close), `client` while a response waits for the client's window.
//! A graceful stop sends GOAWAY(2^31-1) and a PING, then the final GOAWAY once the PING is
//! answered (or after a second without an answer); the connection closes when its last stream
//! is done.

use super::response::Rendered;
use super::service::{HttpConn, HttpService, InFlight, Phase, Target, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, ConnCx};
use coreplex_protocol::h2::conn::{Connection, Event, Role, Settings};
use coreplex_protocol::h2::error::ErrorCode;
use coreplex_protocol::h2::hpack::Indexing;
use coreplex_protocol::h2::stream::StreamState;

type Cx<'a> = ConnCx<'a, InFlight>;

/// Where a response body comes from (bodies are never copied per stream).
#[derive(Clone, Copy, Debug)]
pub(super) enum Source {
    Route(u16),
    NotFound,
    Error(u16),
    /// The route proxies to this backend (the stream becomes an exchange).
    Backend(u16),
    /// An extended CONNECT (RFC 8441) for a protocol the route tunnels to this backend.
    Tunnel(u16),
}

/// A response whose body waits for window.
#[derive(Clone, Copy, Debug)]
struct PendingBody {
    stream: u32,
    source: Source,
    sent: u32,
}

/// A request whose body is still arriving: answered once it ends.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    stream: u32,
    source: Source,
    head_only: bool,
    received: u64,
}

/// One HTTP/2 client connection's state.
pub struct H2Front {
    pub(super) conn: Connection,
    /// Streams proxied to a backend: (stream, exchange key).
    pub(super) proxied: Vec<(u32, u64)>,
    pending: Vec<PendingBody>,
    waiting: Vec<Waiting>,
    /// Streams this connection carried.
    streams: u32,
    /// Its open streams as last counted in `streams_current`.
    open_counted: u32,
}

impl H2Front {
    fn new(settings: Settings) -> H2Front {
        H2Front {
            conn: Connection::new(Role::Server, settings),
            proxied: Vec::new(),
            pending: Vec::new(),
            waiting: Vec::new(),
            streams: 0,
            open_counted: 0,
        }
    }
}

/// Whether `input` starts like the HTTP/2 connection preface (`None`: too short to tell).
pub(super) fn looks_like_preface(input: &[u8]) -> Option<bool> {
    let p = coreplex_protocol::h2::frame::PREFACE;
    let n = input.len().min(p.len());
    if input[..n] != p[..n] {
        return Some(false);
    }
    // "PRI " tells it from every HTTP/1.1 method (PROPFIND, PUT, POST, PATCH).
    if n < 4 {
        None
    } else {
        Some(true)
    }
}

impl HttpService {
    fn now_ms(&self, cx: &Cx<'_>) -> u64 {
        cx.now().saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Switches a client connection to HTTP/2 (after ALPN h2, or on the h2c preface).
    pub(super) fn start_h2(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let settings = self.listeners[conn.listener as usize]
            .h2
            .expect("h2 is enabled on this listener");
        let mut front = Box::new(H2Front::new(settings));
        front.conn.start(cx.output());
        // A partial HTTP/1.1 head cannot precede the preface; drop any busy state all the same:
        // the connection's HTTP/2 state lives in the service's table, so that the engine's
        // buffer box can go back to its pool whenever the connection is idle.
        cx.take_busy();
        self.h2_conns.insert(cx.id(), front);
        conn.phase = Phase::H2;
        self.stats.h2.connections += 1;
        self.stats.h2.connections_current += 1;
        cx.set_timer(self.timeouts(conn).http_request);
    }

    fn take_front(&mut self, cx: &Cx<'_>) -> Box<H2Front> {
        self.h2_conns
            .remove(&cx.id())
            .expect("an h2 connection keeps its state")
    }

    fn put_front(&mut self, cx: &Cx<'_>, mut front: Box<H2Front>) {
        // Every change to the connection's streams ends here: bring the gauge up to date.
        let open = front.conn.active_streams() as u32;
        self.stats.h2.streams_current += i64::from(open) - i64::from(front.open_counted);
        front.open_counted = open;
        self.h2_conns.insert(cx.id(), front);
    }

    /// Input on an HTTP/2 connection.
    pub(super) fn h2_input(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, input: &[u8]) -> usize {
        let mut front = self.take_front(cx);
        let now_ms = self.now_ms(cx);
        let mut pos = 0;
        let mut failed = false;
        loop {
            if cx.pending_output() > MAX_PENDING_OUTPUT {
                cx.pause_input();
                break;
            }
            let base = pos;
            match front.conn.recv(&input[base..], now_ms, cx.output()) {
                Err(code) => {
                    self.stats.h2.goaway_sent[code.slot()] += 1;
                    if let Some(limit) = front.conn.flood_limit_hit() {
                        self.stats.h2.flood_hits[limit.slot()] += 1;
                    }
                    failed = true;
                    pos = input.len();
                    break;
                }
                Ok((used, ev)) => {
                    // Data events index the slice passed (input[base..]).
                    pos += used;
                    let Some(ev) = ev else { break };
                    self.h2_event(cx, conn, &mut front, ev, &input[base..]);
                }
            }
        }
        self.h2_settle(cx, conn, front, failed);
        pos
    }

    fn h2_event(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        ev: Event,
        input: &[u8],
    ) {
        match ev {
            Event::Headers { stream, end_stream } => {
                self.stats.h2.streams += 1;
                front.streams = front.streams.saturating_add(1);
                cx.clear_timer(); // a request: the idle time restarts after it
                let first = !conn.served();
                conn.set_served();
                self.h2_note_request(cx, conn, &front.conn, stream);
                let source = self.h2_route(conn, &front.conn);
                if let Source::Backend(b) = source {
                    let b = usize::from(b);
                    self.h2_proxy_start(cx, conn, front, stream, b, end_stream, first);
                    return;
                }
                if let Source::Tunnel(b) = source {
                    let b = usize::from(b);
                    self.h2_tunnel_start(cx, conn, front, stream, b, end_stream, first);
                    return;
                }
                let head_only = method_is_head(&front.conn);
                if method_is(&front.conn, b"CONNECT") {
                    // A CONNECT that is not a tunnel this route makes: its "body" would never
                    // end, so it is answered now (501: no plain CONNECT tunnels; a protocol the
                    // route does not tunnel).
                    let source = match source {
                        Source::Error(_) => source,
                        _ => Source::Error(501),
                    };
                    self.h2_answer(cx, conn, front, stream, source);
                } else if end_stream {
                    self.h2_respond(cx, conn, front, stream, source, head_only);
                } else {
                    // Answered once the body is read (and dropped), as over HTTP/1.1.
                    front.waiting.push(Waiting {
                        stream,
                        source,
                        head_only,
                        received: 0,
                    });
                }
            }
            Event::TooLarge { stream } => {
                self.stats.h2.streams += 1;
                front.streams = front.streams.saturating_add(1);
                cx.clear_timer();
                self.h2_respond(cx, conn, front, stream, Source::Error(431), false);
                self.h2_finish_early(cx, front, stream);
            }
            Event::Data {
                stream,
                start,
                len,
                end_stream,
            } => {
                let data = &input[start..start + len];
                if self.h2_proxy_data(cx, conn, front, stream, data, end_stream) {
                    return;
                }
                // Request bodies of direct responses are dropped: reopen the window at once.
                front.conn.consumed(stream, len, cx.output());
                let max_body = self.listeners[conn.listener as usize].limits.max_body;
                let Some(i) = front.waiting.iter().position(|w| w.stream == stream) else {
                    return;
                };
                front.waiting[i].received += len as u64;
                let w = front.waiting[i];
                if w.received > max_body {
                    front.waiting.swap_remove(i);
                    self.h2_respond(cx, conn, front, stream, Source::Error(413), false);
                    self.h2_finish_early(cx, front, stream);
                } else if end_stream {
                    front.waiting.swap_remove(i);
                    self.h2_respond(cx, conn, front, stream, w.source, w.head_only);
                }
            }
            Event::Trailers { stream } => {
                self.h2_proxy_end(cx, front, stream);
                if let Some(i) = front.waiting.iter().position(|w| w.stream == stream) {
                    let w = front.waiting.swap_remove(i);
                    self.h2_respond(cx, conn, front, stream, w.source, w.head_only);
                }
            }
            Event::Reset {
                stream,
                code,
                remote,
            } => {
                if remote {
                    self.stats.h2.rst_received[code.slot()] += 1;
                } else {
                    self.stats.h2.rst_sent[code.slot()] += 1;
                }
                front.pending.retain(|p| p.stream != stream);
                front.waiting.retain(|w| w.stream != stream);
                if !self.access_h2_lines.is_empty() {
                    self.access_h2_lines.remove(&(cx.id(), stream));
                }
                self.h2_proxy_reset(front, stream);
            }
            Event::Writable => self.h2_flush(cx, conn, front),
            Event::GoAway { code, .. } => {
                self.stats.h2.goaway_received[code.slot()] += 1;
            }
            Event::Settings => {}
        }
    }

    /// The route for the head just received.
    fn h2_route(&self, conn: &HttpConn, h2: &Connection) -> Source {
        let list = h2.head();
        let c = h2.checked();
        let get = |i: Option<u16>| i.map(|i| list.get(usize::from(i)).1);
        let authority = get(c.pseudo.authority).and_then(|a| std::str::from_utf8(a).ok());
        let host = authority.or_else(|| {
            (c.regular_start..list.len())
                .map(|i| list.get(i))
                .find(|(n, _, _)| *n == b"host")
                .and_then(|(_, v, _)| std::str::from_utf8(v).ok())
        });
        let path = get(c.pseudo.path).unwrap_or(b"*");
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        let Ok(path) = std::str::from_utf8(path) else {
            return Source::Error(400);
        };
        let listener = &self.listeners[conn.listener as usize];
        // RFC 8441 extended CONNECT: `:protocol` is only accepted where we announced it.
        let protocol = get(c.pseudo.protocol);
        match listener.route_for(host, path) {
            Some(i) => match (listener.target(i), protocol) {
                (Target::Backend(b), Some(p)) => {
                    let allowed = listener
                        .upgrades(i)
                        .iter()
                        .any(|a| a.as_bytes().eq_ignore_ascii_case(p));
                    if allowed {
                        Source::Tunnel(*b as u16)
                    } else {
                        Source::Error(501)
                    }
                }
                (Target::Respond(_), _) => Source::Route(i as u16),
                (Target::Backend(b), None) => Source::Backend(*b as u16),
                // Extended CONNECT to an echo or WebSocket-aware route: not over h2 yet.
                (Target::WebSocketEcho | Target::WebSocketProxy(_), Some(_)) => Source::Error(501),
                // A WebSocket over h2 needs extended CONNECT.
                (Target::WebSocketEcho | Target::WebSocketProxy(_), None) => Source::Error(426),
            },
            None => Source::NotFound,
        }
    }

    fn page(&self, listener: usize, source: Source) -> &Rendered {
        match source {
            Source::Route(i) => match self.listeners[listener].target(usize::from(i)) {
                Target::Respond(p) => p,
                Target::Backend(_) => self.errors.get(502),
                Target::WebSocketEcho | Target::WebSocketProxy(_) => self.errors.get(426),
            },
            Source::NotFound => &self.not_found,
            Source::Error(s) => self.errors.get(s),
            Source::Backend(_) | Source::Tunnel(_) => self.errors.get(502),
        }
    }

    /// Writes the response head and as much of the body as the windows allow.
    fn h2_respond(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &HttpConn,
        front: &mut H2Front,
        stream: u32,
        source: Source,
        head_only: bool,
    ) {
        let mut date = [0u8; 29];
        date.copy_from_slice(self.date.get(cx.now()));
        let page = self.page(conn.listener as usize, source);
        let status = page.status;
        let body = page.body();
        let no_body = head_only || body.is_empty();
        let bytes = if head_only { 0 } else { body.len() as u64 };
        let out = cx.output();
        front.conn.send_headers(stream, no_body, out, |w| {
            w.field(b":status", page.status_digits(), Indexing::Index);
            w.field(b"date", &date, Indexing::Literal);
            for (n, v) in page.h2_fields() {
                let how = if n == b"content-length" {
                    Indexing::Literal
                } else {
                    Indexing::Index
                };
                w.field(n, v, how);
            }
        });
        if !no_body {
            let sent = send_bounded(&mut front.conn, stream, body, out);
            if sent < body.len() {
                front.pending.push(PendingBody {
                    stream,
                    source,
                    sent: sent as u32,
                });
            }
        }
        self.stats.response(status);
        self.stats.latency_us(1);
        self.h2_log(cx, conn, stream, status, bytes, None);
    }

    /// Keeps the request line of `stream` for the access log (listeners with one only).
    fn h2_note_request(&mut self, cx: &Cx<'_>, conn: &HttpConn, h2: &Connection, stream: u32) {
        if self.listeners[conn.listener as usize].access_log.is_none() {
            return;
        }
        let list = h2.head();
        let c = h2.checked();
        let get = |i: Option<u16>| {
            i.map(|i| String::from_utf8_lossy(list.get(usize::from(i)).1).into_owned())
        };
        let line = crate::access_log::RequestLine {
            method: get(c.pseudo.method).unwrap_or_default().into(),
            target: get(c.pseudo.path).unwrap_or_else(|| "*".into()).into(),
            protocol: "HTTP/2.0",
            client: Self::client_addr(cx),
            started: cx.now(),
        };
        self.access_h2_lines.insert((cx.id(), stream), line);
    }

    /// Logs the response of `stream` (its request line noted at its HEADERS), with the backend
    /// side when proxied.
    pub(crate) fn h2_log(
        &mut self,
        cx: &Cx<'_>,
        conn: &HttpConn,
        stream: u32,
        status: u16,
        bytes: u64,
        upstream: Option<crate::access_log::Upstream>,
    ) {
        let Some(line) = self.access_h2_lines.remove(&(cx.id(), stream)) else {
            return;
        };
        self.access_upstream = upstream;
        let started = line.started;
        self.log_line(cx, conn, Some(&line), status, started, bytes, *b"--");
    }

    /// A response complete while the request is still being sent: RST_STREAM(NO_ERROR)
    /// (RFC 9113 section 8.1), so the client stops sending a body nobody reads.
    fn h2_finish_early(&mut self, cx: &mut Cx<'_>, front: &mut H2Front, stream: u32) {
        if front.pending.iter().any(|p| p.stream == stream) {
            return;
        }
        if front.conn.stream_state(stream) == StreamState::HalfClosedLocal {
            front.conn.reset(stream, ErrorCode::NoError, cx.output());
            self.stats.h2.rst_sent[ErrorCode::NoError.slot()] += 1;
        }
    }

    /// Answers a stream with a generated response (an error page), then resets a request
    /// still being sent.
    pub(super) fn h2_answer(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &HttpConn,
        front: &mut H2Front,
        stream: u32,
        source: Source,
    ) {
        self.h2_respond(cx, conn, front, stream, source, false);
        self.h2_finish_early(cx, front, stream);
    }

    /// Answers a stream with a generated response once its request body has been read and
    /// dropped (or has passed `max_body`: 413), as direct responses are.
    pub(super) fn h2_answer_after_body(
        &mut self,
        front: &mut H2Front,
        stream: u32,
        source: Source,
    ) {
        front.waiting.push(Waiting {
            stream,
            source,
            head_only: false,
            received: 0,
        });
    }

    /// Sends what the windows now allow of bodies that were waiting, direct and proxied.
    fn h2_flush(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, front: &mut H2Front) {
        if !front.proxied.is_empty() {
            self.h2_proxy_pump(cx, conn, front);
        }
        let mut i = 0;
        while i < front.pending.len() {
            let p = front.pending[i];
            let body = &self.page(conn.listener as usize, p.source).body()[p.sent as usize..];
            let sent = send_bounded(&mut front.conn, p.stream, body, cx.output());
            if sent == body.len() {
                front.pending.swap_remove(i);
                self.h2_finish_early(cx, front, p.stream);
            } else {
                front.pending[i].sent += sent as u32;
                i += 1;
            }
        }
    }

    /// After input or a wake: close a finished connection, else set its timer and keep it.
    fn h2_settle(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        mut front: Box<H2Front>,
        failed: bool,
    ) {
        if failed || front.conn.is_done() && front.pending.is_empty() {
            let reason = if failed {
                CloseReason::ProtocolError
            } else if conn.draining() || cx.is_stopping() {
                CloseReason::Shutdown
            } else {
                CloseReason::Done
            };
            self.put_front(cx, front);
            cx.set_timer(self.timeouts(conn).client);
            cx.close_after_flush(reason);
            return;
        }
        let t = self.timeouts(conn);
        if !front.conn.shutdown_announced() {
            cx.clear_deadline(STOP_DEADLINE);
        } else if cx.deadline(STOP_DEADLINE).is_none() {
            // A stop waits for the PING's answer, at most STOP_PING_WAIT.
            cx.set_deadline(STOP_DEADLINE, STOP_PING_WAIT);
        }
        if front.conn.active_streams() == 0 {
            cx.clear_deadline(CLIENT_DEADLINE);
            front.conn.shrink_idle();
            front.pending = Vec::new();
            front.waiting = Vec::new();
            // Armed once per idle period: input does not extend it (a trickle of bytes or
            // PINGs cannot hold an idle connection open).
            if !cx.has_timer() {
                cx.set_timer(if conn.served() {
                    self.listeners[conn.listener as usize].h2_idle
                } else {
                    t.http_request
                });
            }
        } else {
            // Streams in progress: the client must keep taking what is sent.
            cx.clear_timer();
            cx.set_deadline(CLIENT_DEADLINE, t.client);
        }
        self.put_front(cx, front);
    }

    /// The connection's plain timer fired: no stream for too long (`http_request` before the
    /// first, then the idle timeout): GOAWAY(NO_ERROR), then close.
    pub(super) fn h2_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let mut front = self.take_front(cx);
        if front.conn.active_streams() > 0 {
            // A stream began since: its own deadline bounds it.
            return self.h2_settle(cx, conn, front, false);
        }
        let reason = if conn.served() {
            CloseReason::KeepAliveTimeout
        } else {
            CloseReason::RequestTimeout
        };
        front.conn.abort(ErrorCode::NoError, cx.output());
        self.stats.h2.goaway_sent[ErrorCode::NoError.slot()] += 1;
        self.put_front(cx, front);
        if cx.pending_output() > 0 {
            cx.set_timer(self.timeouts(conn).client);
            cx.close_after_flush(reason);
        } else {
            cx.close(reason);
        }
    }

    /// A named deadline of the connection is due: the stop's PING was not answered in time
    /// (the final GOAWAY now), or streams are in progress and the client took nothing for a
    /// whole `client` timeout (close).
    pub(super) fn h2_deadline(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, slot: usize) {
        if cx.is_closing() {
            return;
        }
        let mut front = self.take_front(cx);
        if slot == STOP_DEADLINE {
            front.conn.finish_shutdown(cx.output());
            return self.h2_settle(cx, conn, front, false);
        }
        if front.conn.active_streams() == 0 || cx.pending_output() == 0 && !front.proxied.is_empty()
        {
            // Idle now, or streams waiting for their backends, whose own timers bound that.
            return self.h2_settle(cx, conn, front, false);
        }
        self.put_front(cx, front);
        cx.close(CloseReason::ClientTimeout);
    }

    /// A graceful stop: the two-step GOAWAY.
    pub(super) fn h2_shutdown(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let mut front = self.take_front(cx);
        front.conn.begin_shutdown(cx.output());
        self.stats.h2.goaway_sent[ErrorCode::NoError.slot()] += 1;
        self.h2_settle(cx, conn, front, false);
    }

    /// Output drained: bodies held back by output size may go on.
    pub(super) fn h2_drained(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let mut front = self.take_front(cx);
        self.h2_flush(cx, conn, &mut front);
        self.h2_settle(cx, conn, front, false);
    }

    /// A backend side or the pool left work for this connection's proxied streams.
    pub(super) fn h2_wake(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() {
            return;
        }
        let mut front = self.take_front(cx);
        self.h2_flush(cx, conn, &mut front);
        self.h2_settle(cx, conn, front, false);
    }

    /// The connection closed.
    pub(super) fn h2_closed(&mut self, id: coreplex_engine::Id) {
        if let Some(front) = self.h2_conns.remove(&id) {
            self.stats.h2.streams_current -= i64::from(front.open_counted);
            self.stats.h2.connection_closed(u64::from(front.streams));
            self.h2_proxy_closed(&front);
        }
        self.stats.h2.connections_current -= 1;
    }
}

/// How long a graceful stop waits for the answer to its PING before the final GOAWAY.
const STOP_PING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The deadline-table slots of an h2 connection (`ConnCx::set_deadline`), beside its plain
/// timer (the no-stream timeout): the client's progress while streams are in progress, and the
/// stop's wait for its PING's answer.
const CLIENT_DEADLINE: usize = 0;
const STOP_DEADLINE: usize = 1;

/// `send_data` within the output bound: a client with huge windows that does not read still
/// makes the connection buffer at most `MAX_PENDING_OUTPUT` (the rest goes on when the output
/// drains).
fn send_bounded(conn: &mut Connection, stream: u32, body: &[u8], out: &mut Vec<u8>) -> usize {
    let room = MAX_PENDING_OUTPUT.saturating_sub(out.len());
    let n = body.len().min(room);
    conn.send_data(stream, &body[..n], n == body.len(), out)
}

fn method_is_head(h2: &Connection) -> bool {
    method_is(h2, b"HEAD")
}

/// The head just received has this method.
fn method_is(h2: &Connection, method: &[u8]) -> bool {
    h2.checked()
        .pseudo
        .method
        .is_some_and(|i| h2.head().get(usize::from(i)).1 == method)
}

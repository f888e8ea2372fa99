//! The per-shard HTTP/1.1 service.
//!
//! Connection phases: `Idle` (between requests: keep-alive timer, or the http-request timer before
//! the first request) -> `Head` (a partial head is buffered: http-request timer) -> `Body` (a request
//! body is being read and discarded: client timer) -> back to `Idle` once the response is queued, or
//! `Closing` after an error or `Connection: close`.
//!
//! The common case, a whole request in one read, allocates nothing: the head is scanned and parsed
//! in place from the receive buffer and the pre-rendered response is appended to the output. Only a
//! request split across reads keeps `InFlight` state (scanner, start time, body decoder) in the
//! engine's busy box, which returns to the pool when the request completes, so an idle
//! connection's state is three bytes.

use super::proxy::{BackendRuntime, ProxyShard};
use super::response::{DateCache, ErrorPages, Persist, Rendered, CONTINUE};
use super::stats::HttpStats;
use crate::runtime::{Listener, PathMatch, RouteAction, TcpKeepalive, Timeouts};
use coreplex_engine::{CloseReason, ConnCx, Id, Service, ShardActions};
use coreplex_protocol::h1::{
    parse_request, BodyDecoder, BodyKind, HeadScanner, Limits, Method, RequestError, RequestHead,
    Scan, Version,
};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most header lines a request may have (the configurable limit is capped at this).
pub const MAX_HEADERS_CAP: usize = 256;

/// Output queued for a connection above which it stops reading (pipelining backpressure; also
/// the bound on bytes buffered between a client and its backend in each direction).
pub(super) const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// What a matched route does.
pub(super) enum Target {
    /// A pre-rendered direct response.
    Respond(Rendered),
    /// Forward to the backend with this index.
    Backend(usize),
    /// A WebSocket echo endpoint (`http::websocket`).
    WebSocketEcho,
    /// A WebSocket-aware route to the backend with this index (`http::ws_proxy`).
    WebSocketProxy(usize),
}

/// A listener's routes and settings, shared read-only by all shards.
pub struct ListenerRuntime {
    routes: Vec<(Option<String>, PathMatch, Target)>,
    /// The `Upgrade` protocols each route tunnels (by route index).
    upgrades: Vec<Box<[String]>>,
    /// HTTP/2 settings when the listener speaks h2 (ALPN or h2c).
    pub(super) h2: Option<coreplex_protocol::h2::conn::Settings>,
    /// Plaintext connections may start with the h2c preface.
    pub(super) h2c: bool,
    /// An h2 connection's longest stay without an open stream.
    pub(super) h2_idle: std::time::Duration,
    pub(super) timeouts: Timeouts,
    pub(super) limits: Limits,
    tcp_keepalive: Option<TcpKeepalive>,
    /// WebSocket endpoints' frame and message limits and permessage-deflate.
    pub(super) websocket: super::websocket::WsListener,
    /// PROXY protocol headers accepted (`http::proxy_header`).
    pub(super) proxy_protocol: Option<crate::runtime::ProxyProtocol>,
    /// The listener's name (logs).
    name: Box<str>,
    /// Its access log and format.
    pub(super) access_log: Option<(usize, crate::access_log::LogFormat)>,
}

impl ListenerRuntime {
    /// Pre-renders a configured listener.
    pub fn new(l: &Listener) -> ListenerRuntime {
        ListenerRuntime {
            routes: l
                .routes
                .iter()
                .map(|r| {
                    let target = match &r.action {
                        RouteAction::Respond(resp) => Target::Respond(Rendered::new(resp)),
                        RouteAction::Backend(b) => Target::Backend(*b),
                        RouteAction::WebSocketEcho => Target::WebSocketEcho,
                        RouteAction::WebSocketProxy(b) => Target::WebSocketProxy(*b),
                    };
                    (r.host.clone(), r.path.clone(), target)
                })
                .collect(),
            upgrades: l
                .routes
                .iter()
                .map(|r| r.upgrade.clone().into_boxed_slice())
                .collect(),
            timeouts: l.timeouts,
            limits: Limits {
                max_headers: l.limits.max_headers.min(MAX_HEADERS_CAP),
                ..l.limits
            },
            tcp_keepalive: l.tcp_keepalive,
            h2: l
                .speaks_h2()
                .then_some(coreplex_protocol::h2::conn::Settings {
                    // RFC 8441: extended CONNECT where a route tunnels an upgrade.
                    enable_connect_protocol: l.routes.iter().any(|r| {
                        matches!(r.action, RouteAction::Backend(_)) && !r.upgrade.is_empty()
                    }),
                    ..l.http2.settings
                }),
            h2c: l.tls.is_none() && l.http2.h2c,
            h2_idle: l.http2.idle_timeout.unwrap_or(l.timeouts.http_keep_alive),
            websocket: super::websocket::WsListener::new(&l.websocket),
            proxy_protocol: l.proxy_protocol.clone(),
            name: l.name.clone().into_boxed_str(),
            access_log: l.access_log,
        }
    }

    fn route(&self, head: &RequestHead<'_, '_>) -> Option<usize> {
        self.route_for(head.host, head.path)
    }

    /// The `Upgrade` protocols route `i` tunnels.
    pub(super) fn upgrades(&self, i: usize) -> &[String] {
        &self.upgrades[i]
    }

    /// What route `i` does.
    pub(super) fn target(&self, i: usize) -> &Target {
        &self.routes[i].2
    }

    /// The first route matching a host (with or without port) and a path (without query).
    pub(super) fn route_for(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes.iter().position(|(h, p, _)| {
            let host_ok = match (h, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            let path_ok = match p {
                PathMatch::Exact(x) => path == x,
                PathMatch::Prefix(x) => path.starts_with(x.as_str()),
            };
            host_ok && path_ok
        })
    }
}

/// How the response to `head` ends the exchange: close when the client or a stop asks for it.
/// How the connection goes on after the response to `head`.
pub(crate) fn persist_for(head: &RequestHead<'_, '_>, conn: &HttpConn, cx: &Cx<'_>) -> Persist {
    if !head.keep_alive || conn.draining() || cx.is_stopping() {
        Persist::Close
    } else if head.version == Version::Http10 {
        Persist::KeepAlive10
    } else {
        Persist::KeepAlive11
    }
}

/// Where the minor digit of an `HTTP/1.2` .. `HTTP/1.9` request line's version is, if the
/// request line (after any leading empty lines) ends with one.
fn later_http1_minor(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let end = start + buf[start..].iter().position(|&b| b == b'\n')?;
    let line_end = if end > start && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    let line = &buf[start..line_end];
    let v = line.len().checked_sub(9)? + 1; // room for the space before the version
    let version = &line[v..];
    (version.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&version[7]) && line[v - 1] == b' ')
        .then_some(start + v + 7)
}

/// The host without port and without a trailing dot (`a.example.` is `a.example`).
fn strip_port(host: &str) -> &str {
    strip_port_only(host).trim_end_matches('.')
}

fn strip_port_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[');
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between requests.
    #[default]
    Idle,
    /// A partial request head is buffered.
    Head,
    /// A request body is read (direct response).
    Body,
    /// A request is being proxied: its stream exchange is in `ProxyShard::relays`
    /// (`proxy::relay`).
    Proxy,
    /// A final response is being sent; input is discarded.
    Closing,
    /// A backend connection (outbound; `listener` is the backend index).
    Backend,
    /// An HTTP/2 client connection (its state is in the busy box for its life).
    H2,
    /// A WebSocket endpoint after its 101 (`websocket`).
    WebSocket,
    /// The client end of an upgrade tunnel, paired with its backend connection
    /// (`proxy::tunnel`).
    TunnelClient,
    /// The backend end of an upgrade tunnel (`listener` is the backend index).
    TunnelBackend,
}

/// What to answer once a request's body has been read.
pub(super) struct Pending {
    route: Option<usize>,
    persist: Persist,
    with_body: bool,
}

/// State of a request that spans several reads (the service's busy state).
pub struct InFlight {
    scanner: HeadScanner,
    pub(super) started: Instant,
    /// The request body's decoder while it is read (or forwarded).
    pub(super) body: Option<BodyDecoder>,
    /// The direct response due once the body is read.
    pending: Option<Pending>,
}

impl InFlight {
    pub(super) fn new(started: Instant, body: Option<BodyDecoder>) -> InFlight {
        InFlight {
            scanner: HeadScanner::new(),
            started,
            body,
            pending: None,
        }
    }
}

/// Connection flag bits in [`HttpConn::flags`].
const DRAINING: u8 = 1 << 0;
const SERVED: u8 = 1 << 1;
const USED_BACKEND: u8 = 1 << 2;
/// A WebSocket endpoint sent a ping and has heard nothing since.
const PING_OUT: u8 = 1 << 3;
/// A tunnel end heard its socket's FIN (the tunnel is half-closed).
const HALF_CLOSED: u8 = 1 << 4;
/// A tunnel carries a WebSocket.
const WS_TUNNEL: u8 = 1 << 5;
/// A tunnel end of a WebSocket-aware route: frames, not bytes (`ws_proxy`).
const WS_AWARE: u8 = 1 << 6;
/// That end's side sent its close frame: what it sends after is discarded.
const CLOSE_IN: u8 = 1 << 7;

/// Per-connection state, stored inline in the engine's slab.
#[derive(Default)]
pub struct HttpConn {
    /// Listener index; the backend index for backend connections.
    pub(super) listener: u8,
    pub(super) phase: Phase,
    flags: u8,
}

impl HttpConn {
    /// A graceful stop began: the next response closes.
    pub(super) fn draining(&self) -> bool {
        self.flags & DRAINING != 0
    }

    /// At least one response was sent (the next request is not the session's first).
    pub(super) fn served(&self) -> bool {
        self.flags & SERVED != 0
    }

    /// A WebSocket endpoint's ping is unanswered (no frame since it was sent).
    pub(super) fn ping_out(&self) -> bool {
        self.flags & PING_OUT != 0
    }

    pub(super) fn set_ping_out(&mut self, out: bool) {
        if out {
            self.flags |= PING_OUT;
        } else {
            self.flags &= !PING_OUT;
        }
    }

    /// A tunnel end whose socket sent its FIN.
    pub(super) fn half_closed(&self) -> bool {
        self.flags & HALF_CLOSED != 0
    }

    pub(super) fn set_half_closed(&mut self) {
        self.flags |= HALF_CLOSED;
    }

    /// The client end of a tunnel that carries a WebSocket.
    pub(super) fn ws_tunnel(&self) -> bool {
        self.flags & WS_TUNNEL != 0
    }

    pub(super) fn set_ws_tunnel(&mut self) {
        self.flags |= WS_TUNNEL;
    }

    /// A tunnel end of a WebSocket-aware route.
    pub(super) fn ws_aware(&self) -> bool {
        self.flags & WS_AWARE != 0
    }

    pub(super) fn set_ws_aware(&mut self) {
        self.flags |= WS_AWARE;
    }

    /// A proxied WebSocket's side sent its close frame.
    pub(super) fn close_in(&self) -> bool {
        self.flags & CLOSE_IN != 0
    }

    pub(super) fn set_close_in(&mut self) {
        self.flags |= CLOSE_IN;
    }

    pub(super) fn set_served(&mut self) {
        self.flags |= SERVED;
    }

    /// A backend pool knows this client session (it must hear about its close).
    pub(super) fn used_backend(&self) -> bool {
        self.flags & USED_BACKEND != 0
    }

    pub(super) fn set_used_backend(&mut self) {
        self.flags |= USED_BACKEND;
    }

    /// The pools no longer know this client session (it became a tunnel).
    pub(super) fn clear_used_backend(&mut self) {
        self.flags &= !USED_BACKEND;
    }
}

pub(super) type Cx<'a> = ConnCx<'a, InFlight>;

/// The service instance of one shard.
pub struct HttpService {
    transport: coreplex_tls::Tls,
    pub(super) listeners: Arc<Vec<ListenerRuntime>>,
    pub(super) errors: ErrorPages,
    pub(super) not_found: Rendered,
    /// The answer to `OPTIONS *`.
    options: Rendered,
    /// The origin of the millisecond clock HTTP/2 connections are given.
    pub(super) epoch: Instant,
    /// HTTP/2 connections' state, by connection.
    pub(super) h2_conns: std::collections::HashMap<Id, Box<super::h2::H2Front>>,
    pub(super) date: DateCache,
    pub(super) stats: HttpStats,
    pub(super) proxy: ProxyShard,
    pub(super) ws: super::websocket::WsShard,
    /// A stop closes idle keep-alive connections spread over this window.
    close_spread: Duration,
    /// Access logs (`http::access_log`).
    access: crate::access_log::AccessLogs,
    /// The request line of each HTTP/1.1 request in progress on a listener with a log.
    access_lines: std::collections::HashMap<Id, crate::access_log::RequestLine>,
    /// The backend side of the response being completed (`access_log::Upstream`).
    pub(super) access_upstream: Option<crate::access_log::Upstream>,
    /// The request line and start of each h2 stream in progress on a listener with a log.
    pub(super) access_h2_lines:
        std::collections::HashMap<(Id, u32), crate::access_log::RequestLine>,
}

impl HttpService {
    /// A service for shard `shard` of `shards` over the shared listener and backend tables.
    pub fn new(
        listeners: Arc<Vec<ListenerRuntime>>,
        backends: Arc<Vec<BackendRuntime>>,
        shard: usize,
        shards: usize,
        tls: coreplex_tls::Tls,
    ) -> HttpService {
        HttpService {
            transport: tls,
            listeners,
            errors: ErrorPages::new(),
            not_found: Rendered::text(404, "Not Found\n"),
            options: Rendered::options(),
            epoch: Instant::now(),
            h2_conns: std::collections::HashMap::new(),
            date: DateCache::new(Instant::now()),
            stats: HttpStats::default(),
            proxy: ProxyShard::new(backends, shard, shards, Instant::now()),
            ws: super::websocket::WsShard::new(),
            close_spread: Duration::ZERO,
            access: Default::default(),
            access_lines: std::collections::HashMap::new(),
            access_upstream: None,
            access_h2_lines: std::collections::HashMap::new(),
        }
    }

    /// Access logs written to `fds` (by log number, as the listeners' `access_log` name them).
    pub fn with_access_logs(
        mut self,
        fds: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
    ) -> HttpService {
        self.access = crate::access_log::AccessLogs::new(fds);
        self
    }

    /// The client's address for the log: its PROXY header's, else its socket's peer.
    pub(super) fn client_addr(cx: &Cx<'_>) -> Option<std::net::SocketAddr> {
        match cx.origin() {
            Some(o) => Some(o.source),
            None => cx.socket().peer_addr().ok().and_then(|a| a.as_socket()),
        }
    }

    /// Logs the response of the request in progress on `cx` (HTTP/1.1), if its listener has a
    /// log: its request line, the backend side when proxied, the timers and `termination`.
    pub(super) fn log_response(
        &mut self,
        cx: &Cx<'_>,
        conn: &HttpConn,
        status: u16,
        started: Instant,
        bytes: u64,
        termination: [u8; 2],
    ) {
        let line = self.access_lines.remove(&cx.id());
        self.log_line(cx, conn, line.as_ref(), status, started, bytes, termination);
    }

    /// Logs a request whose connection closed before its response was complete (status 0):
    /// `CR` while the request was still coming in, `CD` once it had gone to a backend.
    fn log_abandoned(&mut self, conn: &HttpConn, line: &crate::access_log::RequestLine) {
        let listener = &self.listeners[conn.listener as usize];
        let Some((log, format)) = listener.access_log else {
            return;
        };
        let termination = if conn.phase == Phase::Proxy {
            *b"CD"
        } else {
            *b"CR"
        };
        let total = line.started.elapsed().as_millis() as i64;
        let entry = crate::access_log::Entry {
            listener: &listener.name,
            client: line.client,
            line: Some(line),
            status: 0,
            bytes: 0,
            backend: None,
            timers: [-1, -1, -1, total],
            termination,
        };
        self.access.write(log, format, &entry);
    }

    /// Writes one access log line (the backend side from `access_upstream`, taken).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn log_line(
        &mut self,
        cx: &Cx<'_>,
        conn: &HttpConn,
        line: Option<&crate::access_log::RequestLine>,
        status: u16,
        started: Instant,
        bytes: u64,
        termination: [u8; 2],
    ) {
        let upstream = self.access_upstream.take();
        let listener = &self.listeners[conn.listener as usize];
        let Some((log, format)) = listener.access_log else {
            return;
        };
        let client = line
            .and_then(|l| l.client)
            .or_else(|| Self::client_addr(cx));
        let total = cx.now().saturating_duration_since(started).as_millis() as i64;
        let (backend, timers, bytes, termination) = match upstream {
            Some(u) => {
                let b = &self.proxy.backends[u.backend];
                let server = u
                    .server
                    .and_then(|i| b.config().servers.get(i))
                    .map(|s| s.name.as_str());
                let [q, c, r] = u.timers;
                (
                    Some((b.config().name.as_str(), server)),
                    [q, c, r, total],
                    u.bytes,
                    u.error
                        .map_or(termination, crate::access_log::termination_of),
                )
            }
            None => (None, [-1, -1, -1, total], bytes, termination),
        };
        let entry = crate::access_log::Entry {
            listener: &listener.name,
            client,
            line,
            status,
            bytes,
            backend,
            timers,
            termination,
        };
        self.access.write(log, format, &entry);
    }

    /// A stop closes idle keep-alive connections at points spread over `window` (each connection
    /// its own point), not all at once; a request that comes first is answered with
    /// `Connection: close`.
    pub fn with_close_spread(mut self, window: Duration) -> HttpService {
        self.close_spread = window;
        self
    }

    pub(super) fn timeouts(&self, conn: &HttpConn) -> Timeouts {
        self.listeners[conn.listener as usize].timeouts
    }

    /// Answers with an error page and closes after it is sent.
    pub(super) fn fail(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        status: u16,
        reason: CloseReason,
    ) {
        let started = cx.busy_ref().map_or(cx.now(), |r| r.started);
        let date = self.date.get(cx.now());
        let page = self.errors.get(status);
        let body = page.body_len() as u64;
        page.write(cx.output(), date, Persist::Close, true);
        let termination = match (status, reason) {
            (408, _) => *b"cR",
            (_, CloseReason::Done) => *b"--",
            _ => *b"PR",
        };
        self.log_response(cx, conn, status, started, body, termination);
        self.stats.response(status);
        self.stats
            .latency_us(cx.now().duration_since(started).as_micros() as u64);
        conn.phase = Phase::Closing;
        cx.take_busy();
        // The client must still read the response: `client` bounds that, then linger takes over.
        cx.set_timer(self.timeouts(conn).client);
        cx.close_after_flush(reason);
    }

    /// Queues the response of a complete request and returns to `Idle` (or `Closing`).
    fn respond(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        route: Option<usize>,
        persist: Persist,
        with_body: bool,
        started: Instant,
    ) {
        // A stop that began while the request was read turns keep-alive into close.
        let persist = if conn.draining() || cx.is_stopping() {
            Persist::Close
        } else {
            persist
        };
        let listener = &self.listeners[conn.listener as usize];
        let page = match route.map(|i| &listener.routes[i].2) {
            Some(Target::Respond(page)) => page,
            _ => &self.not_found,
        };
        let date = self.date.get(cx.now());
        page.write(cx.output(), date, persist, with_body);
        let status = page.status;
        let bytes = if with_body { page.body_len() as u64 } else { 0 };
        self.log_response(cx, conn, status, started, bytes, *b"--");
        self.response_done(cx, conn, status, started, persist == Persist::Close);
    }

    /// A response is queued in full (direct or proxied): counts it, then closes after it is
    /// sent (`close`, or a stop under way) or goes back to `Idle` for the next request.
    pub(super) fn response_done(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        status: u16,
        started: Instant,
        close: bool,
    ) {
        self.stats.response(status);
        self.stats
            .latency_us(cx.now().duration_since(started).as_micros() as u64);
        if self.access_upstream.is_some() {
            self.log_response(cx, conn, status, started, 0, *b"--");
        }
        conn.set_served();
        cx.take_busy();
        let stopping = conn.draining() || cx.is_stopping();
        if close || stopping {
            conn.phase = Phase::Closing;
            cx.set_timer(self.timeouts(conn).client_fin);
            cx.close_after_flush(if stopping {
                CloseReason::Shutdown
            } else {
                CloseReason::Done
            });
        } else {
            conn.phase = Phase::Idle;
        }
    }

    /// Reads the body of the current request; returns bytes consumed and whether it is complete.
    fn read_body(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, buf: &[u8]) -> Option<usize> {
        let mut pos = 0;
        loop {
            let req = cx.busy().expect("body phase has a request");
            let decoder = req.body.as_mut().expect("body phase has a decoder");
            match decoder.decode(&buf[pos..]) {
                Ok(step) => {
                    pos += step.consumed;
                    if step.done {
                        let req = cx.take_busy().expect("checked");
                        let p = req.pending.expect("a direct response is pending");
                        self.respond(cx, conn, p.route, p.persist, p.with_body, req.started);
                        return Some(pos);
                    }
                    if step.consumed == 0 || pos == buf.len() {
                        return Some(pos);
                    }
                }
                Err(e) => {
                    self.stats.body_error(e);
                    self.fail(cx, conn, e.status(), CloseReason::ProtocolError);
                    return None;
                }
            }
        }
    }

    /// Handles a complete head at the start of `buf`; returns bytes consumed, or `None` after an error.
    fn on_head(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        buf: &[u8],
        head_len: usize,
        remaining_after: usize,
    ) -> Option<usize> {
        let li = conn.listener as usize;
        let listeners = self.listeners.clone();
        let listener = &listeners[li];
        let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
            [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
        let head = match parse_request(&buf[..head_len], &listener.limits, &mut headers) {
            Ok(Some(h)) => h,
            Err(RequestError::UnsupportedVersion) if later_http1_minor(buf).is_some() => {
                return self.on_later_minor_head(cx, conn, buf, head_len, remaining_after);
            }
            Ok(None) => return self.reject(cx, conn, None),
            Err(e) => return self.reject(cx, conn, Some(e)),
        };
        self.serve_head(cx, conn, &head, head_len, remaining_after)
    }

    /// A head the scanner called complete did not parse: its error status (400 without one),
    /// then close.
    fn reject(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        e: Option<RequestError>,
    ) -> Option<usize> {
        if let Some(e) = e {
            self.stats.request_error(e);
        }
        let status = e.map_or(400, |e| e.status());
        self.fail(cx, conn, status, CloseReason::ProtocolError);
        None
    }

    /// A request in `HTTP/1.2` .. `HTTP/1.9`: served as HTTP/1.1 (RFC 9112 section 2.3: a
    /// recipient of a later minor version of the major version it speaks answers as its own).
    /// The head is parsed from a copy whose version reads `HTTP/1.1` (same length and layout).
    #[cold]
    fn on_later_minor_head(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        buf: &[u8],
        head_len: usize,
        remaining_after: usize,
    ) -> Option<usize> {
        let at = later_http1_minor(buf).expect("checked");
        let mut copy = buf[..head_len].to_vec();
        copy[at] = b'1';
        let listeners = self.listeners.clone();
        let limits = listeners[conn.listener as usize].limits;
        let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
            [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
        match parse_request(&copy, &limits, &mut headers) {
            Ok(Some(h)) => self.serve_head(cx, conn, &h, head_len, remaining_after),
            Ok(None) => self.reject(cx, conn, None),
            Err(e) => self.reject(cx, conn, Some(e)),
        }
    }

    /// Routes and answers (or forwards) a parsed head.
    fn serve_head(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
        head_len: usize,
        remaining_after: usize,
    ) -> Option<usize> {
        let li = conn.listener as usize;
        let listeners = self.listeners.clone();
        let listener = &listeners[li];
        let head = *head;
        let started = cx.busy_ref().map_or(cx.now(), |r| r.started);
        if listener.access_log.is_some() {
            self.access_lines.insert(
                cx.id(),
                crate::access_log::RequestLine {
                    method: head.method_str.into(),
                    target: head.target.into(),
                    protocol: if head.version == coreplex_protocol::h1::Version::Http10 {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    },
                    client: Self::client_addr(cx),
                    started,
                },
            );
        }
        if head.method == Method::Connect {
            // No tunnels yet: 501, then close (the bytes after a CONNECT head are not HTTP).
            self.fail(cx, conn, 501, CloseReason::ProtocolError);
            return None;
        }
        if head.method == Method::Options && head.path == "*" {
            // OPTIONS * asks about the server, not a resource: answered here (RFC 9110 9.3.7).
            if !matches!(head.body, BodyKind::None | BodyKind::Length(0)) {
                self.fail(cx, conn, 400, CloseReason::ProtocolError);
                return None;
            }
            let persist = persist_for(&head, conn, cx);
            let date = self.date.get(cx.now());
            self.options.write(cx.output(), date, persist, true);
            self.response_done(cx, conn, 200, started, persist == Persist::Close);
            return Some(head_len);
        }
        let route = listener.route(&head);
        match route.map(|i| &listener.routes[i].2) {
            Some(&Target::Backend(b)) => {
                let tunnel = route.and_then(|i| {
                    super::proxy::tunnel::asked(&head, listener.upgrades(i), &self.proxy, b)
                });
                return self.relay_request(cx, conn, &head, b, started, tunnel, None);
            }
            Some(Target::WebSocketEcho) => {
                return self.websocket_upgrade(cx, conn, &head).then_some(head_len);
            }
            Some(&Target::WebSocketProxy(b)) => {
                return self.ws_proxy_request(cx, conn, &head, b, started);
            }
            _ => {}
        }
        let persist = persist_for(&head, conn, cx);
        let with_body = head.method != Method::Head;
        match head.body {
            BodyKind::None | BodyKind::Length(0) => {
                self.respond(cx, conn, route, persist, with_body, started);
            }
            kind => {
                if head.expect_continue && remaining_after == 0 {
                    cx.output().extend_from_slice(CONTINUE);
                    self.stats.continues += 1;
                }
                let decoder = BodyDecoder::new(kind, listener.limits.max_body);
                let pending = Pending {
                    route,
                    persist,
                    with_body,
                };
                let req = match cx.busy() {
                    Some(req) => req,
                    None => cx.set_busy(InFlight::new(started, None)),
                };
                req.body = Some(decoder);
                req.pending = Some(pending);
                conn.phase = Phase::Body;
                cx.set_timer(listener.timeouts.client);
            }
        }
        Some(head_len)
    }
}

impl Service for HttpService {
    type Conn = HttpConn;
    type Busy = InFlight;
    type Stats = HttpStats;
    type Transport = coreplex_tls::Tls;

    fn transport(&mut self) -> &mut coreplex_tls::Tls {
        &mut self.transport
    }

    fn preface(
        &mut self,
        listener: usize,
        peer: Option<std::net::SocketAddr>,
        input: &[u8],
    ) -> coreplex_engine::Preface {
        self.proxy_preface(listener, peer, input)
    }

    fn on_control(&mut self, msg: Box<dyn std::any::Any + Send>) {
        let msg = match msg.downcast::<std::sync::Arc<coreplex_tls::tickets::Ticketer>>() {
            Ok(t) => return self.transport.set_ticketer(*t),
            Err(other) => other,
        };
        if let Ok(r) = msg.downcast::<crate::access_log::ReopenLogs>() {
            self.access.reopen(r.0);
        }
    }

    fn on_accept(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, listener: usize) {
        conn.listener = listener as u8;
        if let Some(k) = &self.listeners[listener].tcp_keepalive {
            super::proxy::set_keepalive(cx, k);
        }
        cx.set_timer(self.timeouts(conn).http_request);
        let h2_alpn = cx
            .session::<Box<coreplex_tls::State>>()
            .is_some_and(|t| t.alpn() == Some(b"h2"));
        if h2_alpn && self.listeners[listener].h2.is_some() {
            self.start_h2(cx, conn);
        }
    }

    fn on_input(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, input: &[u8]) -> usize {
        match conn.phase {
            Phase::Backend if self.is_h2_backend(cx.id()) => {
                return self.h2_backend_input(cx, input);
            }
            Phase::Backend => {
                return match self.stream_key(cx.id()) {
                    Some(key) => self.stream_backend_input(cx, conn, key, input),
                    None => {
                        // An idle pooled connection must stay silent.
                        cx.close(CloseReason::ProtocolError);
                        input.len()
                    }
                };
            }
            Phase::H2 => return self.h2_input(cx, conn, input),
            Phase::WebSocket => return self.websocket_input(cx, conn, input),
            Phase::TunnelClient | Phase::TunnelBackend if conn.ws_aware() => {
                return self.ws_proxy_input(cx, conn, input)
            }
            Phase::TunnelClient | Phase::TunnelBackend => {
                return self.tunnel_input(cx, conn, input)
            }
            Phase::Idle if !conn.served() && self.listeners[conn.listener as usize].h2c => {
                match super::h2::looks_like_preface(input) {
                    Some(true) => {
                        self.start_h2(cx, conn);
                        return self.h2_input(cx, conn, input);
                    }
                    None => return 0, // too short to tell: wait for more
                    Some(false) => {}
                }
            }
            _ => {}
        }
        let mut pos = 0;
        let limits = self.listeners[conn.listener as usize].limits;
        while pos < input.len() {
            if conn.phase == Phase::Closing {
                return input.len(); // after an error or `close`, input is discarded
            }
            if conn.phase == Phase::Proxy {
                pos += self.relay_input(cx, conn, &input[pos..]);
                break;
            }
            if conn.phase == Phase::WebSocket {
                // Frames right behind the upgrade request.
                pos += self.websocket_input(cx, conn, &input[pos..]);
                break;
            }
            if cx.pending_output() > MAX_PENDING_OUTPUT {
                cx.pause_input();
                break;
            }
            let buf = &input[pos..];
            if conn.phase == Phase::Body {
                match self.read_body(cx, conn, buf) {
                    Some(n) if n > 0 => {
                        pos += n;
                        continue;
                    }
                    Some(_) => break,
                    None => return input.len(),
                }
            }
            if conn.phase == Phase::Idle {
                conn.phase = Phase::Head;
                if conn.served() {
                    cx.set_timer(self.timeouts(conn).http_request);
                }
            }
            let now = cx.now();
            let scan = match cx.busy() {
                Some(r) => r.scanner.scan(buf, &limits),
                None => {
                    let mut scanner = HeadScanner::new();
                    let r = scanner.scan(buf, &limits);
                    if matches!(r, Ok(Scan::Incomplete)) {
                        cx.set_busy(InFlight {
                            scanner,
                            ..InFlight::new(now, None)
                        });
                    }
                    r
                }
            };
            match scan {
                Err(e) => {
                    self.stats.request_error(e);
                    self.fail(cx, conn, e.status(), CloseReason::ProtocolError);
                    return input.len();
                }
                Ok(Scan::Incomplete) => break,
                Ok(Scan::Complete { head_len }) => {
                    let after = buf.len() - head_len;
                    match self.on_head(cx, conn, buf, head_len, after) {
                        Some(n) => pos += n,
                        None => return input.len(),
                    }
                }
            }
        }
        match conn.phase {
            Phase::Idle if !cx.is_closing() => cx.set_timer(self.timeouts(conn).client),
            Phase::Body => cx.set_timer(self.timeouts(conn).client),
            _ => {}
        }
        pos
    }

    fn on_peer_closed(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        match conn.phase {
            Phase::Backend if self.is_h2_backend(cx.id()) => return self.h2_backend_eof(cx),
            Phase::Backend => {
                return match self.stream_key(cx.id()) {
                    Some(key) => self.stream_backend_eof(cx, key),
                    None => cx.close(CloseReason::PeerClosed),
                }
            }
            Phase::Proxy => return self.relay_client_eof(cx, conn),
            Phase::TunnelClient | Phase::TunnelBackend if conn.ws_aware() => {
                return self.ws_proxy_peer_closed(cx, conn)
            }
            Phase::TunnelClient | Phase::TunnelBackend => return self.tunnel_peer_closed(cx, conn),
            // The client went without a close frame (1006 to it, if it could hear).
            Phase::WebSocket => return cx.close(CloseReason::PeerClosed),
            Phase::H2 if cx.pending_output() > 0 => {
                // Responses already written still go out (a client may half-close after its
                // requests, as over HTTP/1.1).
                cx.set_timer(self.timeouts(conn).client);
                return cx.close_after_flush(CloseReason::PeerClosed);
            }
            Phase::H2 => return cx.close(CloseReason::PeerClosed),
            _ => {}
        }
        if cx.pending_output() > 0 {
            conn.phase = Phase::Closing;
            cx.set_timer(self.timeouts(conn).client);
            cx.close_after_flush(CloseReason::PeerClosed);
        } else {
            cx.close(CloseReason::PeerClosed);
        }
    }

    fn on_drained(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if matches!(conn.phase, Phase::TunnelClient | Phase::TunnelBackend) {
            if !conn.ws_aware() {
                self.tunnel_drained(cx, conn);
            }
            return;
        }
        if conn.phase == Phase::H2 {
            if !cx.is_closing() {
                self.h2_drained(cx, conn);
            }
            return;
        }
        if conn.phase == Phase::Proxy {
            self.relay_drained(cx, conn);
        }
        if conn.phase == Phase::Backend {
            if self.is_h2_backend(cx.id()) {
                self.h2_backend_wake(cx);
            } else if let Some(key) = self.stream_key(cx.id()) {
                self.stream_send(cx, key);
            }
        }
        if conn.phase == Phase::Idle {
            if conn.draining() {
                // With a close_spread_time the stop's timer closes it at its point.
                if self.close_spread.is_zero() {
                    cx.close(CloseReason::Shutdown);
                }
            } else {
                cx.set_timer(self.timeouts(conn).http_keep_alive);
            }
        }
    }

    fn on_connected(&mut self, cx: &mut Cx<'_>, _: &mut HttpConn, result: std::io::Result<()>) {
        if self.is_h2_backend(cx.id()) {
            return self.h2_backend_connected(cx, result);
        }
        match self.stream_key(cx.id()) {
            Some(key) => self.stream_connected(cx, key, result),
            None => cx.close(CloseReason::Done),
        }
    }

    fn on_paired(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if conn.phase == Phase::TunnelClient {
            self.tunnel_paired(cx);
        }
    }

    fn on_unpaired(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if matches!(conn.phase, Phase::TunnelClient | Phase::TunnelBackend) {
            if conn.ws_aware() {
                self.ws_proxy_unpaired(cx, conn);
            } else {
                self.tunnel_unpaired(cx);
            }
        }
    }

    fn on_opened(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, tag: u64) {
        self.stream_opened(cx, conn, tag);
    }

    fn on_open_failed(&mut self, cx: &mut Cx<'_>, _conn: &mut HttpConn, tag: u64) {
        self.stream_open_failed(cx, tag);
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        match conn.phase {
            Phase::Proxy => self.relay_wake(cx, conn),
            Phase::H2 => self.h2_wake(cx, conn),
            Phase::Backend if self.is_h2_backend(cx.id()) => self.h2_backend_wake(cx),
            Phase::Backend => {
                if let Some(key) = self.stream_key(cx.id()) {
                    self.stream_send(cx, key);
                }
            }
            _ => {}
        }
    }

    fn on_deadline(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, slot: usize) {
        if conn.phase == Phase::H2 {
            self.h2_deadline(cx, conn, slot);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        match conn.phase {
            Phase::Idle if conn.draining() => {
                // Its point in a stop's close_spread_time.
                if cx.pending_output() == 0 {
                    cx.close(CloseReason::Shutdown)
                } else {
                    cx.close_after_flush(CloseReason::Shutdown)
                }
            }
            Phase::Idle if cx.pending_output() > 0 => cx.close(CloseReason::ClientTimeout),
            Phase::Idle if !conn.served() => cx.close(CloseReason::RequestTimeout),
            Phase::Idle => cx.close(CloseReason::KeepAliveTimeout),
            Phase::Head => self.fail(cx, conn, 408, CloseReason::RequestTimeout),
            Phase::Body => self.fail(cx, conn, 408, CloseReason::ClientTimeout),
            Phase::Closing => cx.close(CloseReason::ClientTimeout),
            Phase::Proxy => self.relay_timer(cx, conn),
            Phase::WebSocket => self.websocket_timer(cx, conn),
            Phase::TunnelClient | Phase::TunnelBackend if conn.ws_aware() => {
                self.ws_proxy_timer(cx, conn)
            }
            Phase::TunnelClient | Phase::TunnelBackend => self.tunnel_timer(cx),
            Phase::Backend if self.is_h2_backend(cx.id()) => self.h2_backend_timer(cx),
            Phase::Backend => match self.stream_key(cx.id()) {
                Some(key) => self.stream_backend_timer(cx, key),
                None => cx.close(CloseReason::ClientTimeout),
            },
            Phase::H2 if cx.is_closing() => cx.close(CloseReason::ClientTimeout),
            Phase::H2 => self.h2_timer(cx, conn),
        }
    }

    fn on_shutdown(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        conn.flags |= DRAINING;
        if cx.is_outbound() {
            // Idle pooled connections close now; busy ones finish their exchange.
            if self.is_h2_backend(cx.id()) {
                return self.h2_backend_shutdown(cx);
            }
            if cx.peer().is_none() && self.stream_key(cx.id()).is_none() {
                cx.close(CloseReason::Shutdown);
            }
            return;
        }
        if conn.phase == Phase::H2 {
            if !cx.is_closing() {
                self.h2_shutdown(cx, conn);
            }
            return;
        }
        if conn.phase == Phase::WebSocket {
            return self.websocket_shutdown(cx, conn);
        }
        if conn.phase == Phase::TunnelClient && conn.ws_aware() {
            return self.ws_proxy_shutdown(cx, conn);
        }
        if conn.phase == Phase::Idle {
            let window = self.close_spread.as_millis() as u64;
            if window > 0 {
                // Even with a response still going out (it did not say `Connection: close`):
                // its client may send again before the close point, and is told then.
                // Its own point in the window (Fibonacci hashing of the slot spreads neighbours).
                let spread = (u64::from(cx.id().index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    >> 32)
                    % window;
                cx.set_timer(Duration::from_millis(spread));
            } else if cx.pending_output() == 0 {
                cx.close(CloseReason::Shutdown);
            } else {
                cx.close_after_flush(CloseReason::Shutdown);
            }
        }
    }

    fn on_close(&mut self, id: Id, conn: HttpConn, _reason: CloseReason) {
        if !self.access_lines.is_empty() {
            if let Some(line) = self.access_lines.remove(&id) {
                self.log_abandoned(&conn, &line);
            }
        }
        if !self.access_h2_lines.is_empty() && conn.phase == Phase::H2 {
            self.access_h2_lines.retain(|(c, _), _| *c != id);
        }
        if conn.phase == Phase::H2 {
            self.h2_closed(id);
        }
        if conn.phase == Phase::WebSocket {
            self.websocket_closed(id);
        }
        if conn.phase == Phase::TunnelClient && conn.ws_aware() {
            self.ws_proxy_closed(id, true);
        } else if conn.phase == Phase::TunnelClient {
            self.tunnel_client_closed(&conn);
        }
        if conn.phase == Phase::TunnelBackend && conn.ws_aware() {
            self.ws_proxy_closed(id, false);
        }
        if conn.phase == Phase::TunnelBackend {
            self.proxy.tunnel_conn_closed(conn.listener as usize, id);
            self.stream_backend_closed(id);
        } else if conn.phase == Phase::Backend {
            self.proxy.backend_conn_closed(conn.listener as usize, id);
            self.stream_backend_closed(id);
            self.h2_backend_closed(id);
        } else if conn.used_backend() {
            // Its exchange, if any, is dropped; the pools forget its session.
            self.relay_closed(id);
            self.proxy.session_closed(id);
        }
    }

    fn stats(&mut self) -> HttpStats {
        self.stats.backends = self.proxy.stats();
        self.stats.tls = self.transport.stats();
        self.stats.clone()
    }

    fn poll(&mut self, now: Instant, actions: &mut ShardActions) -> Option<Instant> {
        self.access.flush(actions);
        self.proxy.poll(now, actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_state_is_small() {
        assert_eq!(std::mem::size_of::<HttpConn>(), 3);
    }

    #[test]
    fn later_minor_versions_are_found() {
        assert_eq!(
            later_http1_minor(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            Some(13)
        );
        assert_eq!(later_http1_minor(b"\r\nGET / HTTP/1.9\r\n\r\n"), Some(15));
        assert_eq!(later_http1_minor(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(later_http1_minor(b"GET / HTTP/2.0\r\n\r\n"), None);
        assert_eq!(later_http1_minor(b"GET /HTTP/1.2\r\n\r\n"), None);
        assert_eq!(later_http1_minor(b"HTTP/1.2\r\n"), None);
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.example.:8080"), "a.example");
    }
}

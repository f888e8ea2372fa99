//! Stream exchanges, the client side: HTTP/2 streams (and, through `relay`, HTTP/1.1
//! requests) proxied over HTTP/1.1 or h2 backend connections, and what both client sides
//! share (the request head's rewrite, pool decisions, retries, failures).
//!
//! A stream's exchange ([`StreamExchange`]) is keyed by a shard-local number: one h2 client
//! connection carries many streams, each with its own backend connection (made
//! with [`ConnCx::open`](coreplex_engine::ConnCx::open) and found again by
//! `ProxyShard::stream_of_conn`). The two sides never touch each other's buffers: the client
//! side turns the exchange's response head and body into HEADERS and DATA frames and returns
//! request-body window to the client; the backend side (`stream_upstream`) moves the request
//! into its socket and the response into the exchange. Each wakes the other ([`ConnCx::wake`])
//! when it left something to do.
//!
//! Backpressure both ways, never a whole body buffered: request body bytes count against the
//! stream's window until the backend connection took them (a backend that does not read holds
//! back the stream's WINDOW_UPDATEs); the response body waits in the exchange up to
//! [`DOWN_MAX`] bytes, and the backend connection stops reading while it is full (a client whose
//! window is closed pauses reading from its backend).
//!
//! Life: `Deciding` -> `Queued` / `Connecting` / reuse -> `Forwarding` -> the response complete
//! (`end_sent`: the exchange is removed) or a failure: before the response started, an error
//! response on the stream (or a retry), after it, RST_STREAM(INTERNAL_ERROR).

use super::rewrite;
use super::stats::ProxyError;
use super::translate::{self, ResponseFields};
use super::verdict::{self, ClientKind, CutHow, Facts, Verdict};
use super::{engine_id, session_id, Failure, Resp, Stage};
use crate::h2::{H2Front, Source};
use crate::service::{Cx, HttpConn, HttpService, MAX_PENDING_OUTPUT};
use coreplex_engine::Id;
use coreplex_pool::{Acquire, RequestInfo, ServerId, Unavailable};
use coreplex_protocol::h1::{BodyError, Method, RequestHead};
use coreplex_protocol::h2::error::ErrorCode;
use coreplex_protocol::h2::hpack::Indexing;
use coreplex_protocol::h2::stream::StreamState;
use std::time::Instant;

/// Response body bytes an exchange holds for its client before the backend stops being read.
pub(super) const DOWN_MAX: usize = 64 * 1024;

/// One h2 stream proxied to an HTTP/1.1 backend.
pub(crate) struct StreamExchange {
    /// Its key in `ProxyShard::streams`.
    pub key: u64,
    pub client: Id,
    pub stream: u32,
    pub backend: usize,
    pub server: ServerId,
    pub info: RequestInfo,
    pub stage: Stage,
    /// The backend connection serving the exchange (connecting or connected).
    pub conn: Option<Id>,
    /// A connection was asked for and does not exist yet (`on_opened` comes next).
    pub opening: bool,
    /// The HTTP/1.1 request head, kept until the response starts (a retry sends it again).
    pub head: Vec<u8>,
    /// The head went to the current backend connection.
    pub head_sent: bool,
    pub method: Method,
    /// No body and an idempotent method: it may be sent again.
    pub replayable: bool,
    /// The request body goes to the backend chunked (no content-length).
    pub chunked: bool,
    /// Request body bytes waiting for the backend connection (an HTTP/1.1 one frames them
    /// as it sends, when `chunked`).
    pub up: Vec<u8>,
    /// Payload bytes the backend connection took that the client's window has not got back.
    pub up_credit: usize,
    /// Some body byte went to a backend (the request can no longer be sent again, unless
    /// `up_copy` still holds every byte sent).
    pub up_sent: bool,
    /// The body bytes sent to an h2 backend, while they fit in [`REPLAY_MAX`]: a stream the
    /// server refused (or left above its GOAWAY) goes again with them.
    pub up_copy: Vec<u8>,
    /// `up_copy` no longer holds every byte sent (too large, or no longer needed).
    pub up_copy_lost: bool,
    /// The end of the request went to the backend (END_STREAM, or the last chunk).
    pub up_end_sent: bool,
    /// Payload bytes received in all (against `limits.max_body`).
    pub up_total: u64,
    /// The listener's `limits.max_body`.
    pub max_body: u64,
    /// The request is complete (its end is in `up` or sent).
    pub up_end: bool,
    pub resp: Resp,
    pub status: u16,
    /// The response head, until HEADERS is written.
    pub fields: Option<ResponseFields>,
    pub resp_seen: bool,
    pub resp_started: bool,
    /// Response body bytes for the client.
    pub down: Vec<u8>,
    /// The response is complete (the rest of it is in `down`).
    pub down_end: bool,
    /// END_STREAM went to the client.
    pub end_sent: bool,
    /// The backend connection stopped reading because `down` was full.
    pub backend_paused: bool,
    pub backend_keep: bool,
    pub private: bool,
    pub reused: bool,
    pub connected: bool,
    pub failure: Option<Failure>,
    pub retries_left: u32,
    /// Decisions taken again without a retry (a connection that would not carry it).
    pub requeues: u8,
    /// The connection that refused it answered others: this decision again is free.
    pub free_requeue: bool,
    /// It rides (or waits for) a multiplexed h2 backend connection, `conn`.
    pub mux: bool,
    /// Its stream on that connection, once open.
    pub h2_stream: Option<u32>,
    /// Response bytes the client took whose window the backend stream has not got back.
    pub down_unacked: usize,
    /// An HTTP/1.1 client's side of the exchange (`None`: an h2 stream's).
    pub relay: Option<super::relay::Relay>,
    /// Interim (1xx) response heads for an HTTP/1.1 client, rendered, before the final one.
    pub interim: Vec<u8>,
    /// The HTTP/1.1 client shut its sending side after its request and the backend's
    /// `client_close = "forward"`: its HTTP/1.1 backend connection passes the FIN on after
    /// the request (and is not reused after).
    pub client_fin: bool,
    /// That FIN went to the backend connection.
    pub fin_sent: bool,
    /// The request asks for an upgrade tunnel (`proxy::tunnel`; `true`: a WebSocket): it
    /// rides an HTTP/1.1 connection of its own.
    pub upgrade: Option<bool>,
    /// The backend switched protocols (101): the exchange ends in a tunnel.
    pub switched: bool,
    /// A WebSocket-aware route's upgrade (`ws_proxy`): the pair carries messages, not bytes.
    pub ws: Option<crate::ws_proxy::WsAsk>,
    /// An RFC 8441 extended CONNECT of an h2 stream, asked of the backend as an HTTP/1.1
    /// upgrade: its 101 becomes 200 and the stream then carries the tunnel's bytes as DATA.
    pub h2_tunnel: bool,
    /// The `Sec-WebSocket-Accept` of the WebSocket upgrade: for an h2 stream's, what the
    /// backend must answer (the key was made here); for an HTTP/1.1 client's carried over an h2
    /// backend stream, what its 101 carries.
    pub accept: Option<[u8; 28]>,
    /// The PROXY protocol header a new backend connection starts with (`send_proxy`).
    pub proxy_header: Option<Box<[u8]>>,
    /// An HTTP/1.1 client's WebSocket carried as an RFC 8441 extended CONNECT stream on a
    /// multiplexed h2 backend connection: its 200 goes to the client as the 101, then the
    /// client's bytes go up as DATA and the stream's DATA come down as they are.
    pub mux_tunnel: bool,
    pub started: Instant,
    pub since: Instant,
    /// When it got a connection (new and connected, or reused), and how long the connect took
    /// (0 when reused): the access log's queue and connect timers.
    pub conn_at: Option<Instant>,
    pub connect_ms: i64,
    /// When the response head arrived (the log's response timer).
    pub head_at: Option<Instant>,
    /// Response body bytes sent to an h2 client (the log's bytes).
    pub down_sent: u64,
}

/// What a new exchange starts from.
pub(super) struct NewExchange {
    pub key: u64,
    pub client: Id,
    pub stream: u32,
    pub backend: usize,
    pub info: RequestInfo,
    pub head: Vec<u8>,
    pub method: Method,
    pub chunked: bool,
    pub max_body: u64,
    /// The request is complete already (no body).
    pub up_end: bool,
    pub retries: u32,
    pub now: Instant,
}

impl StreamExchange {
    /// An h2 stream's extended CONNECT whose backend switched: `timeouts.tunnel` bounds it now.
    pub(super) fn tunnel_open(&self) -> bool {
        self.h2_tunnel && self.status == 200
    }

    /// An HTTP/1.1 client's WebSocket on an h2 backend stream whose 200 arrived.
    pub(super) fn mux_tunnel_open(&self) -> bool {
        self.mux_tunnel && self.status == 101
    }

    /// An HTTP/1.1 client's WebSocket upgrade that may ride an h2 backend stream (extended
    /// CONNECT): a plain tunnel, not a WebSocket-aware route's.
    pub(super) fn may_ride_h2(&self) -> bool {
        self.upgrade == Some(true) && (self.relay.is_some() || self.h2_tunnel) && self.ws.is_none()
    }

    pub(super) fn new(n: NewExchange) -> StreamExchange {
        StreamExchange {
            key: n.key,
            client: n.client,
            stream: n.stream,
            backend: n.backend,
            server: ServerId(0),
            info: n.info,
            stage: Stage::Deciding,
            conn: None,
            opening: false,
            head: n.head,
            head_sent: false,
            method: n.method,
            replayable: n.up_end && n.method.is_idempotent(),
            chunked: n.chunked,
            up: Vec::new(),
            up_credit: 0,
            up_sent: false,
            up_copy: Vec::new(),
            up_copy_lost: false,
            up_end_sent: false,
            up_total: 0,
            max_body: n.max_body,
            up_end: n.up_end,
            resp: Resp::Head,
            status: 0,
            fields: None,
            resp_seen: false,
            resp_started: false,
            down: Vec::new(),
            down_end: false,
            end_sent: false,
            backend_paused: false,
            backend_keep: false,
            private: false,
            reused: false,
            connected: false,
            failure: None,
            retries_left: n.retries,
            requeues: 0,
            free_requeue: false,
            mux: false,
            h2_stream: None,
            down_unacked: 0,
            relay: None,
            interim: Vec::new(),
            client_fin: false,
            fin_sent: false,
            upgrade: None,
            switched: false,
            ws: None,
            h2_tunnel: false,
            accept: None,
            proxy_header: None,
            mux_tunnel: false,
            started: n.now,
            since: n.now,
            conn_at: None,
            connect_ms: -1,
            head_at: None,
            down_sent: 0,
        }
    }

    /// The access log's side of the exchange: queue, connect and response timers (ms, -1 where
    /// not reached), `bytes` relayed, and the error if it failed.
    pub(crate) fn upstream(
        &self,
        bytes: u64,
        error: Option<super::stats::ProxyError>,
    ) -> crate::access_log::Upstream {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_millis() as i64;
        let (queue, connect) = match self.conn_at {
            Some(at) => (
                (ms(self.started, at) - self.connect_ms.max(0)).max(0),
                self.connect_ms,
            ),
            None => (-1, -1),
        };
        let response = match (self.conn_at, self.head_at) {
            (Some(c), Some(h)) => ms(c, h),
            _ => -1,
        };
        crate::access_log::Upstream {
            backend: self.backend,
            server: self.conn_at.map(|_| self.server.0 as usize),
            timers: [queue, connect, response],
            bytes,
            error,
        }
    }
}

/// Socket creation failed for lack of local resources (descriptors, memory, ports).
pub(super) fn is_local_exhaustion(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::ENOMEM,
            Errno::EADDRNOTAVAIL,
        ]
        .contains(&Errno::from_raw(n))
    })
}

/// Request body bytes kept after they went to an h2 backend, so that a refused stream can go
/// again with its body.
pub(super) const REPLAY_MAX: usize = 64 * 1024;

/// Decisions an exchange may take again after connections would not carry it (refusals by a
/// connection that answered other streams do not count: it made progress).
const MAX_REQUEUES: u8 = 16;

/// The client side a stream exchange answers.
pub(crate) enum End<'a> {
    /// A stream of this HTTP/2 connection.
    H2(&'a mut H2Front),
    /// This HTTP/1.1 connection (its one exchange at a time, `proxy::relay`).
    H1,
}

/// Whether a stream's exchange goes on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Keep,
    Gone,
}

impl HttpService {
    /// Starts proxying stream `stream` (its head is the connection's current one) to backend
    /// `b`; `first`: the connection's first request (the pool's `safe` rules see it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn h2_proxy_start(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        stream: u32,
        b: usize,
        end_stream: bool,
        first: bool,
    ) {
        let list = front.conn.head();
        let c = *front.conn.checked();
        let method_bytes = c
            .pseudo
            .method
            .map_or(&b"GET"[..], |i| list.get(usize::from(i)).1);
        let method = Method::from_bytes(method_bytes);
        if method == Method::Connect {
            // No tunnels: CONNECT (and RFC 8441 extended CONNECT) is not implemented.
            self.h2_answer(cx, conn, front, stream, Source::Error(501));
            return;
        }
        let max_body = self.listeners[conn.listener as usize].limits.max_body;
        if c.content_length.is_some_and(|n| n > max_body) {
            // Nothing goes to the backend; the body is read and dropped up to the limit, then
            // 413 (answering at once makes some clients fail the stream while they still send).
            self.h2_answer_after_body(front, stream, Source::Error(413));
            return;
        }
        let client = self.client_ip(cx);
        let rt = &self.proxy.backends[b];
        let cfg = &rt.config;
        let chunked = !end_stream && c.content_length.is_none();
        let mut head = Vec::with_capacity(list.heap_bytes().min(4096) + 128);
        let fwd = self.proxy.forwarding(b, client, cx.is_secure());
        let Ok(expect_continue) = translate::request_head(&mut head, list, &c, &fwd, chunked)
        else {
            self.h2_answer(cx, conn, front, stream, Source::Error(400));
            return;
        };
        if expect_continue && !end_stream {
            front.conn.send_headers(stream, false, cx.output(), |w| {
                w.field(b":status", b"100", Indexing::Index);
            });
            self.stats.continues += 1;
        }
        let info = RequestInfo {
            session: session_id(cx.id()),
            first,
            idempotent: method.is_idempotent(),
            multiplexed: cfg.protocol != crate::runtime::BackendProtocol::H1,
        };
        let now = cx.now();
        let key = self.proxy.next_stream;
        self.proxy.next_stream += 1;
        let mut ex = StreamExchange::new(NewExchange {
            key,
            client: cx.id(),
            stream,
            backend: b,
            info,
            head,
            method,
            chunked,
            max_body,
            up_end: end_stream,
            retries: cfg.retries,
            now,
        });
        ex.proxy_header = self.proxy_header_for(cx, b);
        conn.set_used_backend();
        self.h2_exchange_begin(cx, conn, front, ex);
    }

    /// Starts an RFC 8441 extended CONNECT on stream `stream` to backend `b` (the route tunnels
    /// its `:protocol`): an HTTP/1.1 upgrade on a connection of its own, `proxy::tunnel`'s
    /// request with the stream's DATA as the tunnel's bytes both ways. The stream's end
    /// (END_STREAM) goes to the backend as a FIN; the backend's close ends the stream.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn h2_tunnel_start(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        stream: u32,
        b: usize,
        end_stream: bool,
        first: bool,
    ) {
        let list = front.conn.head();
        let c = *front.conn.checked();
        let protocol = c
            .pseudo
            .protocol
            .map_or(&b""[..], |i| list.get(usize::from(i)).1);
        let websocket = protocol.eq_ignore_ascii_case(b"websocket");
        let client = self.client_ip(cx);
        let mut head = Vec::with_capacity(list.heap_bytes().min(4096) + 192);
        let fwd = self.proxy.forwarding(b, client, cx.is_secure());
        let key = websocket.then(|| {
            let m = &mut self.ws.masks;
            let mut nonce = [0u8; 16];
            for part in nonce.chunks_mut(4) {
                part.copy_from_slice(&m.next());
            }
            coreplex_protocol::ws::handshake::key_for_nonce(&nonce)
        });
        let translated =
            translate::extended_connect_head(&mut head, list, &c, &fwd, protocol, key.as_ref());
        let h1_only = self.proxy.backends[b].config.protocol == crate::runtime::BackendProtocol::H1;
        if translated.is_err() || (!websocket && !h1_only) {
            // Not translatable; or not a WebSocket (only those ride h2 backend streams) to a
            // backend that may speak h2.
            let status = if translated.is_err() { 400 } else { 501 };
            self.h2_answer(cx, conn, front, stream, Source::Error(status));
            return;
        }
        // A WebSocket may ride an h2 backend stream as an extended CONNECT itself.
        let info = RequestInfo {
            session: session_id(cx.id()),
            first,
            idempotent: false,
            multiplexed: websocket && !h1_only,
        };
        let now = cx.now();
        let key_id = self.proxy.next_stream;
        self.proxy.next_stream += 1;
        let mut ex = StreamExchange::new(NewExchange {
            key: key_id,
            client: cx.id(),
            stream,
            backend: b,
            info,
            head,
            method: Method::Get,
            chunked: false,
            max_body: u64::MAX,
            up_end: end_stream,
            retries: 0,
            now,
        });
        ex.upgrade = Some(websocket);
        ex.h2_tunnel = true;
        ex.proxy_header = self.proxy_header_for(cx, b);
        ex.accept = key.map(|k| coreplex_protocol::ws::handshake::accept_for_key(&k));
        // The stream's END_STREAM goes on as a FIN, after the bytes before it.
        ex.client_fin = true;
        conn.set_used_backend();
        self.h2_exchange_begin(cx, conn, front, ex);
    }

    /// Registers a new exchange of an h2 stream and acts on its first pool decision.
    fn h2_exchange_begin(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        ex: StreamExchange,
    ) {
        let (key, stream, b, info) = (ex.key, ex.stream, ex.backend, ex.info);
        self.proxy.streams.insert(key, ex);
        front.proxied.push((stream, key));
        let decision = self.proxy.pools[b].acquire(&info, cx.now());
        if self.stream_proceed(cx, conn, &mut End::H2(front), key, decision) == Step::Gone {
            front.proxied.retain(|&(_, k)| k != key);
        }
    }

    /// The PROXY protocol header for a connection to backend `b` on behalf of client `cx`, if
    /// the backend sends one: the client's origin (its own header's, else its socket's
    /// addresses).
    pub(super) fn proxy_header_for(&self, cx: &Cx<'_>, b: usize) -> Option<Box<[u8]>> {
        let version = self.proxy.backends[b].config.send_proxy?;
        let (source, destination) = match cx.origin() {
            Some(o) => (o.source, o.destination),
            None => {
                let s = cx.socket();
                (
                    s.peer_addr().ok()?.as_socket()?,
                    s.local_addr().ok()?.as_socket()?,
                )
            }
        };
        let mut out = Vec::with_capacity(64);
        match version {
            crate::runtime::ProxyVersion::V1 => {
                coreplex_protocol::proxy::encode_v1(source, destination, &mut out)
            }
            crate::runtime::ProxyVersion::V2 => {
                coreplex_protocol::proxy::encode_v2(source, destination, &mut out)
            }
        }
        Some(out.into_boxed_slice())
    }

    /// The client's address: the one its PROXY protocol header named, else its peer address
    /// (looked up once per connection that uses a backend).
    pub(super) fn client_ip(&mut self, cx: &Cx<'_>) -> Option<std::net::IpAddr> {
        if let Some(o) = cx.origin() {
            // The client a PROXY protocol header named.
            return Some(o.source.ip());
        }
        *self.proxy.client_ips.entry(cx.id()).or_insert_with(|| {
            cx.socket()
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.ip())
        })
    }

    /// The request head as it goes to backend `b`: hop-by-hop fields removed, forwarding
    /// fields added; an absolute-form target in origin-form, its authority as `Host` (the
    /// route was chosen by that authority too).
    pub(super) fn rewritten_head(
        &mut self,
        cx: &Cx<'_>,
        head: &RequestHead<'_, '_>,
        b: usize,
    ) -> Vec<u8> {
        let client = self.client_ip(cx);
        let mut out = self.proxy.spare.take();
        out.reserve(head.head_len + 96);
        let absolute = rewrite::split_absolute(head.target);
        let (target, host) = match &absolute {
            Some((origin, authority)) => (origin.as_str(), Some(*authority)),
            None => (head.target, None),
        };
        rewrite::request_head(
            &mut out,
            head.method_str,
            target,
            head.headers,
            host,
            &self.proxy.forwarding(b, client, cx.is_secure()),
        );
        out
    }

    /// Acts on a pool decision for a stream's exchange.
    pub(super) fn stream_proceed(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
        decision: Acquire,
    ) -> Step {
        let now = cx.now();
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return Step::Gone;
        };
        let b = ex.backend;
        match decision {
            Acquire::Reuse { server, conn: c } => {
                let c = engine_id(c);
                ex.server = server;
                ex.reused = true;
                ex.connected = true;
                ex.conn_at = Some(now);
                ex.connect_ms = 0;
                ex.head_sent = false;
                ex.stage = Stage::Forwarding;
                ex.conn = Some(c);
                match self.proxy.h2_conns.get_mut(&c) {
                    Some(h) => {
                        // A stream on a multiplexed connection: it opens at its next pump.
                        ex.mux = true;
                        h.to_open.push(key);
                    }
                    None => {
                        ex.mux = false;
                        self.proxy.stream_of_conn.insert(c, key);
                    }
                }
                cx.wake(c); // the backend connection sends the head
                Step::Keep
            }
            Acquire::Connect { server } => {
                ex.server = server;
                ex.reused = false;
                ex.connected = false;
                ex.head_sent = false;
                ex.stage = Stage::Connecting;
                ex.since = now;
                let rides = ex.may_ride_h2()
                    && ex.info.multiplexed
                    && !self.proxy.no_ext_connect[b][server.0 as usize];
                let upgrade = ex.upgrade.is_some();
                let mux = (!upgrade || rides) && self.speaks_h2(b, server);
                let h2_only =
                    self.proxy.backends[b].config.protocol == crate::runtime::BackendProtocol::H2;
                if upgrade && !mux && h2_only {
                    let ex = self.proxy.streams.get_mut(&key).expect("checked");
                    // An h2-only server that does not announce extended CONNECT cannot carry
                    // the upgrade at all.
                    ex.stage = Stage::Deciding;
                    let _ = self.proxy.pools[b].connect_aborted(server);
                    self.proxy.dirty = true;
                    let e = ProxyError::BadResponse;
                    return self.stream_fail(cx, conn, end, key, 502, e);
                }
                if mux {
                    if let Some(c) = self.h2_wait_for(b, server, key) {
                        // A connection to that server is starting: wait for its SETTINGS.
                        let ex = self.proxy.streams.get_mut(&key).expect("checked");
                        ex.mux = true;
                        ex.conn = c;
                        ex.opening = c.is_none();
                        return Step::Keep;
                    }
                }
                let ex = self.proxy.streams.get_mut(&key).expect("checked");
                ex.mux = mux;
                let rt = &self.proxy.backends[b];
                let addr = rt.addrs[server.0 as usize];
                let profiles = if mux {
                    &rt.h2_profiles
                } else {
                    &rt.tls_profiles
                };
                let profile = profiles.get(server.0 as usize).copied().flatten();
                // `send_proxy`: the header goes first on the wire (before TLS, if any).
                let opened = match &ex.proxy_header {
                    Some(h) => cx.open_with_preamble(addr, profile, key, h.clone()),
                    None => cx.open(addr, profile, key),
                };
                match opened {
                    Ok(()) => {
                        ex.opening = true;
                        if mux {
                            self.h2_opening_start(key, b, server);
                        }
                        Step::Keep
                    }
                    Err(e) => {
                        tracing::debug!("connect to {addr}: {e}");
                        ex.stage = Stage::Deciding;
                        self.proxy.dirty = true;
                        if is_local_exhaustion(&e) {
                            let _ = self.proxy.pools[b].connect_aborted(server);
                            self.stream_fail(
                                cx,
                                conn,
                                end,
                                key,
                                ProxyError::NoSlot.status(),
                                ProxyError::NoSlot,
                            )
                        } else {
                            let _ = self.proxy.pools[b].connect_failed(server, now);
                            self.stream_retry_or_fail(cx, conn, end, key, ProxyError::ConnectFailed)
                        }
                    }
                }
            }
            Acquire::Queued(t) => {
                ex.stage = Stage::Queued(t);
                ex.since = now;
                self.proxy.tickets.insert((b, t), key);
                self.proxy.stats[b].queued += 1;
                self.proxy.dirty = true;
                Step::Keep
            }
            Acquire::Unavailable(u) => {
                let e = match u {
                    Unavailable::QueueFull => ProxyError::QueueFull,
                    _ => ProxyError::NoServer,
                };
                self.stream_fail(cx, conn, end, key, e.status(), e)
            }
        }
    }

    /// Tries again after a failure before any response byte, or answers `e`'s status.
    fn stream_retry_or_fail(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
        e: ProxyError,
    ) -> Step {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return Step::Gone;
        };
        if ex.retries_left == 0 {
            return self.stream_fail(cx, conn, end, key, e.status(), e);
        }
        ex.retries_left -= 1;
        ex.failure = None;
        ex.resp = Resp::Head;
        ex.resp_seen = false;
        ex.conn = None;
        ex.h2_stream = None;
        let (b, info, server) = (ex.backend, ex.info, ex.server);
        self.proxy.stats[b].retries += 1;
        let decision = self.proxy.pools[b].retry(&info, server, cx.now());
        self.stream_proceed(cx, conn, end, key, decision)
    }

    /// Ends a stream's exchange with an error response (before its response started).
    pub(super) fn stream_fail(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
        status: u16,
        e: ProxyError,
    ) -> Step {
        if let Some(mut ex) = self.proxy.streams.remove(&key) {
            self.stream_discard(&mut ex);
            let s = &mut self.proxy.stats[ex.backend];
            s.error(e);
            s.response(status);
            let upstream = ex.upstream(0, Some(e));
            match end {
                End::H1 => self.access_upstream = Some(upstream),
                End::H2(_) => self.h2_log(cx, conn, ex.stream, status, 0, Some(upstream)),
            }
            match end {
                End::H2(front) => {
                    self.h2_answer(cx, conn, front, ex.stream, Source::Error(status));
                }
                End::H1 => self.relay_answer(cx, conn, status),
            }
        }
        Step::Gone
    }

    /// Ends an exchange whose response already started so that the cut never looks like a
    /// complete body: RST_STREAM(INTERNAL_ERROR) on an h2 stream; on an HTTP/1.1 connection
    /// a close after what is queued (a framed body shows the cut) or a reset (`CutHow::Reset`,
    /// a body delimited by the close).
    pub(super) fn stream_cut(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
        e: ProxyError,
        how: CutHow,
    ) -> Step {
        if let Some(mut ex) = self.proxy.streams.remove(&key) {
            self.stream_discard(&mut ex);
            self.proxy.stats[ex.backend].error(e);
            match end {
                End::H2(front) => {
                    front
                        .conn
                        .reset(ex.stream, ErrorCode::InternalError, cx.output());
                    self.stats.h2.rst_sent[ErrorCode::InternalError.slot()] += 1;
                }
                End::H1 => self.relay_cut(cx, conn, how),
            }
        }
        Step::Gone
    }

    /// Returns what an exchange being dropped holds: its pool ticket or attempt, and its
    /// backend connection (closed: a half-done exchange leaves it out of step).
    pub(super) fn stream_discard(&mut self, ex: &mut StreamExchange) {
        self.proxy
            .discard(ex.backend, ex.stage, ex.connected, ex.server);
        self.stream_let_go(ex);
    }

    /// Lets go of the exchange's backend connection: an HTTP/1.1 one closes (a half-done
    /// exchange leaves it out of step), a multiplexed one only loses the stream (cancelled) and
    /// its slot. The exchange's buffers are kept for the next ones.
    pub(super) fn stream_let_go(&mut self, ex: &mut StreamExchange) {
        if ex.mux_tunnel_open() && ex.resp_started {
            let t = &mut self.stats.tunnels;
            t.current -= 1;
            t.websocket_current -= 1;
            ex.mux_tunnel = false; // counted once
        }
        if ex.tunnel_open() && ex.resp_started {
            let t = &mut self.stats.tunnels;
            t.h2_current -= 1;
            t.h2_websocket_current -= i64::from(ex.upgrade == Some(true));
            ex.h2_tunnel = false; // counted once
        }
        for buf in [
            std::mem::take(&mut ex.head),
            std::mem::take(&mut ex.up),
            std::mem::take(&mut ex.down),
            std::mem::take(&mut ex.interim),
        ] {
            self.proxy.spare.give(buf);
        }
        if let Some(f) = ex.fields.take() {
            self.proxy.spare.give(f.into_bytes());
        }
        let Some(c) = ex.conn else {
            if ex.mux && ex.opening {
                self.h2_leave_opening(ex.key);
            }
            return;
        };
        if ex.mux {
            self.h2_detach(c, ex.key, ex.h2_stream, ex.connected);
        } else {
            self.proxy.stream_of_conn.remove(&c);
            self.proxy.close_later(c);
        }
    }

    /// Request body bytes of a proxied stream; `false` when the stream is not proxied.
    pub(crate) fn h2_proxy_data(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> bool {
        let Some(&(_, key)) = front.proxied.iter().find(|(s, _)| *s == stream) else {
            return false;
        };
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return true;
        };
        if ex.up_end {
            return true;
        }
        ex.up_total += data.len() as u64;
        if ex.up_total > ex.max_body {
            if ex.resp_started {
                let how = CutHow::ResetStream;
                self.stream_cut(
                    cx,
                    conn,
                    &mut End::H2(front),
                    key,
                    ProxyError::ClientAbort,
                    how,
                );
            } else {
                self.stats.body_error(BodyError::BodyTooLarge);
                let e = ProxyError::ClientAbort;
                self.stream_fail(cx, conn, &mut End::H2(front), key, 413, e);
            }
            front.proxied.retain(|&(_, k)| k != key);
            return true;
        }
        ex.up.extend_from_slice(data);
        if end_stream {
            self.stream_request_end(key);
        }
        if let Some(ex) = self.proxy.streams.get(&key) {
            if let (Some(c), true) = (ex.conn, ex.connected) {
                self.proxy.touch_h2(c, key);
                cx.wake(c);
            }
        }
        true
    }

    /// The request of a proxied stream ended (END_STREAM, or trailers, which an HTTP/1.1
    /// backend does not get).
    pub(crate) fn h2_proxy_end(&mut self, cx: &mut Cx<'_>, front: &H2Front, stream: u32) {
        if let Some(&(_, key)) = front.proxied.iter().find(|(s, _)| *s == stream) {
            self.stream_request_end(key);
            if let Some(c) = self.proxy.streams.get(&key).and_then(|ex| ex.conn) {
                self.proxy.touch_h2(c, key);
                cx.wake(c);
            }
        }
    }

    fn stream_request_end(&mut self, key: u64) {
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            ex.up_end = true;
        }
    }

    /// The stream was reset (by the client, or by us on a protocol error): its exchange is
    /// dropped and its backend connection closed.
    pub(crate) fn h2_proxy_reset(&mut self, front: &mut H2Front, stream: u32) {
        let Some(i) = front.proxied.iter().position(|(s, _)| *s == stream) else {
            return;
        };
        let (_, key) = front.proxied.swap_remove(i);
        if let Some(mut ex) = self.proxy.streams.remove(&key) {
            self.proxy.stats[ex.backend].error(ProxyError::ClientAbort);
            self.stream_discard(&mut ex);
        }
    }

    /// The client connection closed: every exchange it had is dropped.
    pub(crate) fn h2_proxy_closed(&mut self, front: &H2Front) {
        for &(_, key) in &front.proxied {
            if let Some(mut ex) = self.proxy.streams.remove(&key) {
                if !ex.end_sent {
                    self.proxy.stats[ex.backend].error(ProxyError::ClientAbort);
                }
                self.stream_discard(&mut ex);
            }
        }
    }

    /// Moves every proxied stream of the connection on: queue decisions, failures, window
    /// credit for request bytes the backends took, response heads and bodies within the
    /// windows and the output bound.
    pub(crate) fn h2_proxy_pump(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
    ) {
        let mut i = 0;
        while i < front.proxied.len() {
            let (stream, key) = front.proxied[i];
            match self.stream_step(cx, conn, front, stream, key) {
                Step::Keep => i += 1,
                Step::Gone => {
                    if let Some(j) = front.proxied.iter().position(|&(_, k)| k == key) {
                        front.proxied.swap_remove(j);
                    }
                }
            }
        }
    }

    /// What every stream exchange does before its client side renders anything: act on a
    /// queue decision, a queue timeout, a decision to take again or a lost backend
    /// connection. `None`: none of these; the client side goes on.
    pub(super) fn stream_advance(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
    ) -> Option<Step> {
        let now = cx.now();
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return Some(Step::Gone);
        };
        match ex.stage {
            Stage::Ready(decision) => {
                let s = &mut self.proxy.stats[ex.backend];
                s.queue_time_us += now.saturating_duration_since(ex.since).as_micros() as u64;
                ex.stage = Stage::Deciding;
                return Some(self.stream_proceed(cx, conn, end, key, decision));
            }
            Stage::TimedOut => {
                let e = ProxyError::QueueTimeout;
                return Some(self.stream_fail(cx, conn, end, key, e.status(), e));
            }
            Stage::Deciding if matches!(ex.failure, Some(Failure::Requeue | Failure::Refused)) => {
                return Some(self.stream_decide_again(cx, conn, end, key));
            }
            _ => {}
        }
        if ex.conn.is_none()
            && !ex.opening
            && !ex.down_end
            && matches!(ex.stage, Stage::Connecting | Stage::Forwarding)
        {
            return Some(self.stream_backend_lost(cx, conn, end, key));
        }
        None
    }

    fn stream_step(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        front: &mut H2Front,
        stream: u32,
        key: u64,
    ) -> Step {
        if let Some(step) = self.stream_advance(cx, conn, &mut End::H2(front), key) {
            return step;
        }
        let now = cx.now();
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        let out = cx.output();
        if ex.up_credit > 0 {
            front.conn.consumed(stream, ex.up_credit, out);
            ex.up_credit = 0;
        }
        if !ex.resp_started {
            let Some(fields) = ex.fields.take() else {
                return Step::Keep;
            };
            let end = ex.down_end && ex.down.is_empty();
            let mut date = [0u8; 29];
            date.copy_from_slice(self.date.get(now));
            let s = ex.status.min(999);
            let digits = [
                b'0' + (s / 100) as u8,
                b'0' + (s / 10 % 10) as u8,
                b'0' + (s % 10) as u8,
            ];
            front.conn.send_headers(stream, end, out, |w| {
                w.field(b":status", &digits, Indexing::Index);
                for (n, v) in fields.iter() {
                    w.field(n, v, indexing_for(n));
                }
                if !fields.iter().any(|(n, _)| n == b"date") {
                    w.field(b"date", &date, Indexing::Literal);
                }
            });
            ex.resp_started = true;
            if ex.tunnel_open() {
                let t = &mut self.stats.tunnels;
                t.h2_streams += 1;
                t.h2_current += 1;
                t.h2_websocket_current += i64::from(ex.upgrade == Some(true));
            }
            self.proxy.spare.give(std::mem::take(&mut ex.head));
            self.proxy.spare.give(fields.into_bytes());
            ex.end_sent = end;
        }
        if !ex.end_sent && (!ex.down.is_empty() || ex.down_end) {
            let room = MAX_PENDING_OUTPUT.saturating_sub(out.len());
            let n = ex.down.len().min(room);
            let all = n == ex.down.len();
            let sent = front
                .conn
                .send_data(stream, &ex.down[..n], ex.down_end && all, out);
            ex.down.drain(..sent);
            ex.down_sent += sent as u64;
            if ex.mux && sent > 0 {
                // The backend stream's window reopens as the client takes the bytes.
                ex.down_unacked += sent;
                if let Some(c) = ex.conn {
                    if let Some(h) = self.proxy.h2_conns.get_mut(&c) {
                        h.touched.push(key);
                    }
                    cx.wake(c);
                }
            }
            ex.end_sent = ex.down_end && ex.down.is_empty() && (sent == n) && all;
            if ex.backend_paused && ex.down.len() < DOWN_MAX / 2 {
                // The backend connection resumes reading (and clears the flag).
                if let Some(c) = ex.conn {
                    cx.wake(c);
                }
            }
        }
        if !ex.end_sent {
            return Step::Keep;
        }
        // The response is complete: a request still being sent is not read any more.
        let mut ex = self.proxy.streams.remove(&key).expect("checked");
        let s = &mut self.proxy.stats[ex.backend];
        s.response(ex.status);
        self.stats.response(ex.status);
        let upstream = ex.upstream(ex.down_sent, None);
        if upstream.timers[2] >= 0 {
            if let (Some(c), Some(h)) = (ex.conn_at, ex.head_at) {
                record_response_time(&mut self.proxy.stats[ex.backend], c, h);
            }
        }
        self.h2_log(cx, conn, stream, ex.status, upstream.bytes, Some(upstream));
        self.stats
            .latency_us(now.saturating_duration_since(ex.started).as_micros() as u64);
        // The backend still had the request to read: an HTTP/1.1 connection cannot be reused.
        self.stream_let_go(&mut ex);
        if front.conn.stream_state(stream) == StreamState::HalfClosedLocal {
            front.conn.reset(stream, ErrorCode::NoError, cx.output());
            self.stats.h2.rst_sent[ErrorCode::NoError.slot()] += 1;
        }
        Step::Gone
    }

    /// A connection would not carry the exchange (it holds nothing in the pool now): decide
    /// again. A stream the server refused goes again only if its request can be sent again.
    fn stream_decide_again(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
    ) -> Step {
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        let failure = ex.failure.take();
        if failure == Some(Failure::Refused) && ex.up_sent && !ex.replayable {
            if ex.up_copy_lost {
                // Part of its body is gone: it cannot be sent again.
                return self.stream_fail(
                    cx,
                    conn,
                    end,
                    key,
                    ProxyError::BackendClosed.status(),
                    ProxyError::BackendClosed,
                );
            }
            // The server did not process it (RFC 9113 section 8.7): its body goes again.
            let mut body = std::mem::take(&mut ex.up_copy);
            body.extend_from_slice(&ex.up);
            ex.up = body;
            ex.up_sent = false;
        }
        if !std::mem::take(&mut ex.free_requeue) {
            ex.requeues += 1;
        }
        if ex.requeues > MAX_REQUEUES {
            return self.stream_fail(
                cx,
                conn,
                end,
                key,
                ProxyError::NoServer.status(),
                ProxyError::NoServer,
            );
        }
        ex.resp = Resp::Head;
        ex.resp_seen = false;
        ex.head_sent = false;
        ex.up_end_sent = false;
        ex.mux = false;
        ex.h2_stream = None;
        let info = ex.info;
        let b = ex.backend;
        if failure == Some(Failure::Refused) {
            self.proxy.stats[b].retries += 1;
        }
        let decision = self.proxy.pools[b].acquire(&info, cx.now());
        self.stream_proceed(cx, conn, end, key, decision)
    }

    /// The exchange's backend connection went away before the response was complete: retry,
    /// answer or reset.
    fn stream_backend_lost(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        end: &mut End<'_>,
        key: u64,
    ) -> Step {
        let now = cx.now();
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        let b = ex.backend;
        let facts = Facts {
            failure: ex.failure.take(),
            connecting: ex.stage == Stage::Connecting && !ex.connected,
            resp_started: ex.resp_started,
            until_close: ex.relay.is_some_and(|r| r.until_close()),
            reused: ex.reused,
            resp_seen: ex.resp_seen,
            replayable: ex.replayable,
            retries_left: ex.retries_left,
            client: match end {
                End::H2(_) => ClientKind::Http2,
                End::H1 => ClientKind::Http1 {
                    first: ex.info.first,
                    sent_fin: ex.fin_sent,
                    own_conn: !ex.mux,
                },
            },
        };
        let (note, verdict) = verdict::decide(&facts);
        if facts.connecting {
            ex.stage = Stage::Deciding;
            self.proxy.dirty = true;
        }
        let server = ex.server;
        self.proxy.note_attempt(b, server, note, now);
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        match verdict {
            Verdict::Retry(e) => {
                ex.stage = Stage::Deciding;
                self.stream_retry_or_fail(cx, conn, end, key, e)
            }
            Verdict::Answer(e) => self.stream_fail(cx, conn, end, key, e.status(), e),
            Verdict::Cut(e, how) => self.stream_cut(cx, conn, end, key, e, how),
            Verdict::Close(e) => self.stream_cut(cx, conn, end, key, e, CutHow::Close),
        }
    }
}

/// How a response field is put in the HPACK table: values that change with every response
/// are not indexed (they would only push useful entries out).
fn indexing_for(name: &[u8]) -> Indexing {
    match name {
        b"content-length" | b"date" | b"last-modified" | b"etag" | b"expires" | b"age" => {
            Indexing::Literal
        }
        b"set-cookie" | b"authorization" => Indexing::Never,
        _ => Indexing::Index,
    }
}

/// Records the server's response time of an exchange that got its head (`c`: the connection
/// was there, `h`: the head arrived).
pub(crate) fn record_response_time(stats: &mut super::stats::BackendStats, c: Instant, h: Instant) {
    stats.response_time_us(h.saturating_duration_since(c).as_micros() as u64);
}

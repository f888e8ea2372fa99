//! The client side of an exchange: starting it from a parsed request head, acting on the pool's
//! decisions (reuse, connect, queue, 503), streaming the request body to the backend, the
//! client-side timers (queue fallback, connect, server wait, client), retries after a failed
//! connect or a dead reused connection, and finishing once the backend side is done.

use super::rewrite;
use super::stats::ProxyError;
use super::verdict::{self, ClientKind, CutHow, Facts, Verdict};
use super::{session_id, Exchange, Failure, Resp, Stage, Waiter, QUEUE_GRACE};
use crate::response::Persist;
use crate::runtime::ClientClose;
use crate::service::persist_for;
use crate::service::{Cx, HttpConn, HttpService, InFlight, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_pool::{Acquire, RequestInfo, Unavailable};
use coreplex_protocol::h1::{BodyDecoder, BodyKind, Method, RequestHead, Version};
use std::time::Instant;

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

/// How an exchange that cannot answer ends the client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Send what is queued, then close (framed bodies show the cut).
    Flush,
    /// Close now.
    Close,
    /// Reset (a close-delimited body must not look complete).
    Reset,
}

impl HttpService {
    /// Starts proxying a request to backend `b`; returns the head's length (consumed), or `None`
    /// after an error answer.
    pub(crate) fn proxy_request(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
        b: usize,
        started: Instant,
    ) -> Option<usize> {
        if head.method == Method::Connect {
            self.fail(cx, conn, 501, CloseReason::ProtocolError);
            return None;
        }
        let id = cx.id();
        let out = self.rewritten_head(cx, head, b);
        let cfg = &self.proxy.backends[b].config;
        let has_body = !matches!(head.body, BodyKind::None | BodyKind::Length(0));
        let http10 = head.version == Version::Http10;
        let persist = persist_for(head, conn, cx);
        let info = RequestInfo {
            session: session_id(cx.id()),
            first: !conn.served(),
            idempotent: head.method.is_idempotent(),
            multiplexed: false,
        };
        let now = cx.now();
        let ex = Exchange {
            backend: b,
            server: coreplex_pool::ServerId(0),
            info,
            stage: Stage::Deciding,
            head: out,
            method: head.method,
            http10,
            replayable: !has_body && head.method.is_idempotent(),
            req_done: !has_body,
            reused: false,
            connected: false,
            resp: Resp::Head,
            resp_seen: false,
            resp_started: false,
            persist,
            backend_keep: false,
            private: false,
            status: 0,
            failure: None,
            retries_left: cfg.retries,
            started,
            since: now,
            done: false,
            upload_pending: None,
            client_eof: false,
        };
        let max_body = self.listeners[conn.listener as usize].limits.max_body;
        let decoder = has_body.then(|| BodyDecoder::new(head.body, max_body));
        match cx.busy() {
            Some(r) => r.body = decoder,
            None if decoder.is_some() => {
                cx.set_busy(InFlight::new(started, decoder));
            }
            None => {}
        }
        conn.phase = Phase::Proxy;
        conn.set_used_backend();
        self.proxy.exchanges.insert(id, ex);
        let decision = self.proxy.pools[b].acquire(&info, now);
        self.proceed(cx, conn, decision);
        Some(head.head_len)
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
        let mut out = Vec::with_capacity(head.head_len + 96);
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

    /// Acts on a pool decision for the connection's exchange.
    fn proceed(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, decision: Acquire) {
        let id = cx.id();
        let now = cx.now();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return;
        };
        let b = ex.backend;
        match decision {
            Acquire::Reuse { server, conn: c } => {
                ex.server = server;
                ex.reused = true;
                ex.connected = true;
                ex.stage = Stage::Forwarding;
                cx.pair(super::engine_id(c));
            }
            Acquire::Connect { server } => {
                ex.server = server;
                ex.reused = false;
                ex.connected = false;
                ex.stage = Stage::Connecting;
                ex.since = now;
                let addr = self.proxy.addr(b, server);
                let connected = match self.proxy.tls_profile(b, server) {
                    Some(profile) => cx.connect_secure(addr, profile),
                    None => cx.connect(addr),
                };
                match connected {
                    Ok(()) => cx.set_timer(self.proxy.config(b).timeouts.connect),
                    Err(e) => {
                        tracing::debug!("connect to {addr}: {e}");
                        if let Some(ex) = self.proxy.exchanges.get_mut(&id) {
                            ex.stage = Stage::Deciding;
                        }
                        self.proxy.dirty = true;
                        if is_local_exhaustion(&e) {
                            // Out of descriptors or memory here: not the server's fault (its
                            // health is untouched) and another server would fail the same way.
                            let _ = self.proxy.pools[b].connect_aborted(server);
                            self.proxy_fail(
                                cx,
                                conn,
                                ProxyError::NoSlot.status(),
                                ProxyError::NoSlot,
                            );
                        } else {
                            // Attempts are counted per server by the pool; the request's
                            // error is counted once, if no retry saves it.
                            let _ = self.proxy.pools[b].connect_failed(server, now);
                            self.retry_or_fail(cx, conn, ProxyError::ConnectFailed);
                        }
                    }
                }
            }
            Acquire::Queued(t) => {
                ex.stage = Stage::Queued(t);
                ex.since = now;
                self.proxy.tickets.insert((b, t), Waiter::Client(id));
                self.proxy.stats[b].queued += 1;
                self.proxy.dirty = true;
                cx.set_timer(self.proxy.config(b).timeouts.queue + QUEUE_GRACE);
            }
            Acquire::Unavailable(u) => {
                let e = match u {
                    Unavailable::QueueFull => ProxyError::QueueFull,
                    _ => ProxyError::NoServer,
                };
                self.proxy_fail(cx, conn, e.status(), e);
            }
        }
    }

    /// Tries again after a failure before any response byte (another server preferred), or
    /// answers `e`'s status.
    fn retry_or_fail(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, e: ProxyError) {
        let id = cx.id();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return;
        };
        if ex.retries_left == 0 {
            self.proxy_fail(cx, conn, e.status(), e);
            return;
        }
        ex.retries_left -= 1;
        ex.failure = None;
        ex.resp = Resp::Head;
        let (b, info, server) = (ex.backend, ex.info, ex.server);
        self.proxy.stats[b].retries += 1;
        let decision = self.proxy.pools[b].retry(&info, server, cx.now());
        self.proceed(cx, conn, decision);
    }

    /// Ends the exchange with an error answer (the client connection closes after it).
    pub(super) fn proxy_fail(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        status: u16,
        e: ProxyError,
    ) {
        let id = cx.id();
        if let Some(ex) = self.proxy.exchanges.remove(&id) {
            self.proxy
                .discard(ex.backend, ex.stage, ex.connected, ex.server);
            let s = &mut self.proxy.stats[ex.backend];
            s.error(e);
            s.response(status);
        }
        if cx.peer().is_some() {
            cx.close_peer(CloseReason::Done, false);
        }
        self.fail(cx, conn, status, CloseReason::Done);
    }

    /// Ends the exchange by closing the client connection (no answer possible: the response
    /// already started, or a dead reused connection is mirrored to the client).
    fn proxy_abort(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, e: ProxyError, cut: Cut) {
        let id = cx.id();
        if let Some(ex) = self.proxy.exchanges.remove(&id) {
            self.proxy
                .discard(ex.backend, ex.stage, ex.connected, ex.server);
            self.proxy.stats[ex.backend].error(e);
        }
        if cx.peer().is_some() {
            cx.close_peer(CloseReason::Done, false);
        }
        conn.phase = Phase::Closing;
        cx.take_busy();
        match cut {
            Cut::Flush => {
                cx.set_timer(self.timeouts(conn).client_fin);
                cx.close_after_flush(CloseReason::PeerReset);
            }
            Cut::Close => cx.close(CloseReason::PeerReset),
            Cut::Reset => {
                // SO_LINGER 0: the close sends RST, so a body delimited by close cannot look
                // complete.
                let _ = cx.socket().set_linger(Some(std::time::Duration::ZERO));
                cx.close(CloseReason::PeerReset);
            }
        }
    }

    /// Client bytes while proxying: the request body goes to the backend once it is paired and
    /// connected; anything after the request (pipelining) waits until the exchange ends.
    pub(crate) fn proxy_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        buf: &[u8],
    ) -> usize {
        let id = cx.id();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return buf.len();
        };
        if ex.req_done || ex.stage != Stage::Forwarding || cx.peer().is_none() {
            cx.pause_input();
            return 0;
        }
        let mut pos = 0;
        let mut error = None;
        {
            let Some(decoder) = cx.busy().and_then(|r| r.body.as_mut()) else {
                ex.req_done = true;
                cx.pause_input();
                return 0;
            };
            let mut decoder = decoder.clone();
            loop {
                match decoder.decode(&buf[pos..]) {
                    Ok(step) => {
                        if step.consumed > 0 {
                            if let Some(out) = cx.peer_output() {
                                out.extend_from_slice(&buf[pos..pos + step.consumed]);
                            }
                        }
                        pos += step.consumed;
                        if step.done {
                            ex.req_done = true;
                            break;
                        }
                        if step.consumed == 0 || pos == buf.len() {
                            break;
                        }
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            if let Some(r) = cx.busy() {
                r.body = Some(decoder);
            }
        }
        if let Some(e) = error {
            self.stats.body_error(e);
            let started = self
                .proxy
                .exchanges
                .get(&id)
                .is_some_and(|x| x.resp_started);
            if started {
                self.proxy_abort(cx, conn, ProxyError::ClientAbort, Cut::Close);
            } else {
                self.proxy_fail(cx, conn, e.status(), ProxyError::ClientAbort);
            }
            return buf.len();
        }
        let ex = self.proxy.exchanges.get(&id).expect("checked");
        let (req_done, resp_started, b) = (ex.req_done, ex.resp_started, ex.backend);
        if req_done {
            if let Some(r) = cx.busy() {
                r.body = None;
            }
            if !resp_started {
                cx.set_timer(self.proxy.config(b).timeouts.server);
            }
            if pos < buf.len() {
                cx.pause_input();
            }
        } else {
            cx.set_timer(self.timeouts(conn).client);
            if cx.peer_pending_output() > MAX_PENDING_OUTPUT {
                cx.pause_input();
            }
        }
        pos
    }

    /// The pair asked for (a reused connection, or a new one still connecting) is in place: the
    /// request head goes out (a connecting socket sends it once connected).
    pub(crate) fn proxy_paired(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let id = cx.id();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return;
        };
        if let Some(out) = cx.peer_output() {
            out.extend_from_slice(&ex.head);
        }
        if ex.client_eof {
            cx.shutdown_peer_write();
        }
        if ex.stage == Stage::Forwarding {
            self.start_forwarding(cx, conn);
        }
    }

    /// Paired and connected: request bytes may flow. The client timer waits for the server once
    /// the request is all sent, for the client while its body is still coming.
    fn start_forwarding(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let Some(ex) = self.proxy.exchanges.get(&cx.id()) else {
            return;
        };
        let t = if ex.req_done {
            self.proxy.config(ex.backend).timeouts.server
        } else {
            self.timeouts(conn).client
        };
        cx.resume_input();
        cx.set_timer(t);
    }

    /// A wake from the pool (a queue decision or timeout) or from the backend side (connected,
    /// or the exchange is done).
    pub(crate) fn proxy_wake(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let id = cx.id();
        let now = cx.now();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return;
        };
        if ex.done {
            self.finish_client(cx, conn);
            return;
        }
        match ex.stage {
            Stage::Ready(decision) => {
                let s = &mut self.proxy.stats[ex.backend];
                s.queue_time_us += now.saturating_duration_since(ex.since).as_micros() as u64;
                ex.stage = Stage::Deciding;
                self.proceed(cx, conn, decision);
            }
            Stage::TimedOut => self.proxy_fail(
                cx,
                conn,
                ProxyError::QueueTimeout.status(),
                ProxyError::QueueTimeout,
            ),
            Stage::Connecting if ex.connected => {
                ex.stage = Stage::Forwarding;
                self.start_forwarding(cx, conn);
            }
            _ => {}
        }
    }

    /// The response is complete and the backend connection released: back to `Idle` for the
    /// next request, or close.
    fn finish_client(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let Some(ex) = self.proxy.exchanges.remove(&cx.id()) else {
            return;
        };
        self.proxy.stats[ex.backend].response(ex.status);
        let close = ex.persist == Persist::Close || !ex.req_done;
        self.response_done(cx, conn, ex.status, ex.started, close);
        if conn.phase == Phase::Idle {
            cx.set_timer(self.timeouts(conn).client);
            cx.resume_input();
        }
    }

    /// The backend connection went away before the exchange was done: retry, answer or close.
    pub(crate) fn proxy_unpaired(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let id = cx.id();
        let now = cx.now();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            return;
        };
        if ex.done {
            return;
        }
        if !matches!(ex.stage, Stage::Connecting | Stage::Forwarding) {
            return;
        }
        let b = ex.backend;
        let facts = Facts {
            failure: ex.failure.take(),
            connecting: ex.stage == Stage::Connecting && !ex.connected,
            resp_started: ex.resp_started,
            until_close: matches!(ex.resp, Resp::UntilClose | Resp::Body(_, true)),
            reused: ex.reused,
            resp_seen: ex.resp_seen,
            replayable: ex.replayable,
            retries_left: ex.retries_left,
            client: ClientKind::Http1 {
                first: ex.info.first,
                sent_fin: ex.client_eof,
                paired: true,
            },
        };
        let (note, verdict) = verdict::decide(&facts);
        if facts.connecting {
            // The attempt is returned to the pool here: the exchange holds nothing now.
            ex.stage = Stage::Deciding;
            self.proxy.dirty = true;
        }
        let server = ex.server;
        self.proxy.note_attempt(b, server, note, now);
        let ex = self.proxy.exchanges.get_mut(&id).expect("checked");
        match verdict {
            Verdict::Retry(e) => {
                // A resend goes with its request complete (a forwarded FIN goes again too).
                ex.req_done |= !facts.connecting;
                self.retry_or_fail(cx, conn, e);
            }
            Verdict::Answer(e) => self.proxy_fail(cx, conn, e.status(), e),
            Verdict::Cut(e, how) => {
                let cut = if how == CutHow::Reset {
                    Cut::Reset
                } else {
                    Cut::Flush
                };
                self.proxy_abort(cx, conn, e, cut);
            }
            Verdict::Close(e) => self.proxy_abort(cx, conn, e, Cut::Close),
        }
    }

    /// The client connection's timer while proxying.
    pub(crate) fn proxy_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let id = cx.id();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            cx.close(CloseReason::ClientTimeout);
            return;
        };
        match ex.stage {
            Stage::Queued(_) => self.proxy_fail(
                cx,
                conn,
                ProxyError::QueueTimeout.status(),
                ProxyError::QueueTimeout,
            ),
            Stage::Connecting if !ex.connected => {
                ex.failure = Some(Failure::ConnectTimeout);
                cx.close_peer(CloseReason::ConnectFailed, false);
            }
            _ if ex.done => {}
            _ if !ex.resp_started => {
                let pending = cx.peer_pending_output();
                if ex.req_done {
                    ex.failure = Some(Failure::ServerTimeout);
                    cx.close_peer(CloseReason::ClientTimeout, false);
                } else if pending > 0 && ex.upload_pending != Some(pending) {
                    // The backend is not reading the body (the client is held back): wait for
                    // it up to `timeouts.server`, then give up if nothing moved.
                    ex.upload_pending = Some(pending);
                    let t = self.proxy.backends[ex.backend].config.timeouts.server;
                    cx.set_timer(t);
                } else if pending > 0 {
                    ex.failure = Some(Failure::ServerTimeout);
                    cx.close_peer(CloseReason::ClientTimeout, false);
                } else {
                    self.proxy_fail(
                        cx,
                        conn,
                        ProxyError::ClientAbort.status(),
                        ProxyError::ClientAbort,
                    );
                }
            }
            _ => {
                if cx.pending_output() > 0 {
                    // The client stopped reading the response: a body delimited by the close
                    // must not look complete (reset), a framed one shows the cut.
                    let until_close = matches!(ex.resp, Resp::UntilClose | Resp::Body(_, true));
                    let cut = if until_close { Cut::Reset } else { Cut::Close };
                    self.proxy_abort(cx, conn, ProxyError::ClientAbort, cut);
                } else {
                    // Waiting for the backend: its own timer bounds that.
                    cx.set_timer(self.timeouts(conn).client);
                }
            }
        }
    }

    /// The client shut its sending side while proxying. A partial request is abandoned. After a
    /// complete request, before the response starts, the backend's `client_close` decides:
    /// `forward` passes the FIN on to the backend connection (not reused afterwards), `abort`
    /// closes it, `wait` keeps going. Once the response streams, the half-closed client gets
    /// the rest. The client connection closes after the response in every case.
    pub(crate) fn proxy_client_eof(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let id = cx.id();
        let Some(ex) = self.proxy.exchanges.get_mut(&id) else {
            cx.close(CloseReason::PeerClosed);
            return;
        };
        if !ex.req_done {
            self.proxy_abort(cx, conn, ProxyError::ClientAbort, Cut::Close);
            return;
        }
        ex.persist = Persist::Close;
        if ex.resp_started {
            return;
        }
        match self.proxy.backends[ex.backend].config.client_close {
            ClientClose::Wait => {}
            ClientClose::Abort => self.proxy_abort(cx, conn, ProxyError::ClientAbort, Cut::Close),
            ClientClose::Forward => {
                ex.client_eof = true;
                // A pair made later (queued, a retry) gets it in `proxy_paired`; a connection
                // still connecting sends it after the request head, once connected.
                if cx.peer().is_some() && matches!(ex.stage, Stage::Forwarding | Stage::Connecting)
                {
                    cx.shutdown_peer_write();
                }
            }
        }
    }

    /// Client output drained while proxying: the client is keeping up.
    pub(crate) fn proxy_drained(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let started = self
            .proxy
            .exchanges
            .get(&cx.id())
            .is_some_and(|ex| ex.resp_started);
        if started {
            cx.set_timer(self.timeouts(conn).client);
        }
    }

    /// A client connection that used a backend closed: abandon its exchange and release what
    /// the pools hold for its session.
    pub(crate) fn proxy_client_closed(&mut self, id: Id) {
        if let Some(ex) = self.proxy.exchanges.remove(&id) {
            if !ex.done {
                self.proxy.stats[ex.backend].error(ProxyError::ClientAbort);
            }
            // A paired backend connection learns it through `on_unpaired` and closes.
            self.proxy
                .discard(ex.backend, ex.stage, ex.connected, ex.server);
        }
        self.relay_closed(id);
        self.proxy.session_closed(id);
    }
}

//! HTTP/1.1 requests proxied as stream exchanges: the client side of every HTTP/1.1 request
//! to a backend. Its backend side is an HTTP/1.1 connection of its own or, for backends with
//! `protocol = "h2"` or `"auto"`, a stream on a multiplexed h2 connection (many clients over few
//! connections).
//!
//! The HTTP/1.1 connection holds one exchange at a time (`ProxyShard::relays`), in the
//! connection phase `Proxy`. The request head is rewritten as for any proxied request; its
//! body is decoded (length or chunks) into the exchange's `up` buffer, at most [`UP_MAX`]
//! bytes at a time (input pauses beyond, and resumes as the backend takes them);
//! `Expect: 100-continue` is answered by the proxy; other interim (1xx) responses reach
//! HTTP/1.1 clients. The response head is written from the backend's fields (h2 or HTTP/1.1
//! alike) with the framing the client needs: the backend's `content-length`, else chunked for
//! HTTP/1.1 clients, else (HTTP/1.0) until the close; the body goes out within the output
//! bound, the backend paused while the client does not read. A client's half-close after its
//! request follows the backend's `client_close` (`relay_client_eof`).
//! Failures are decided by `verdict` (answered before the response started, cut after it: a
//! close after a framed body, a reset after one delimited by the close). Once the response is
//! out the connection goes back to `Idle` (pipelined requests are read then) or closes.
//!
//! Timers: `client` while the exchange runs (a client that stops sending its body gets 408, one
//! that stops reading its response is cut); the backend side's own timers bound the server.

use super::rewrite;
use super::session_id;
use super::stats::ProxyError;
use super::streams::{End, NewExchange, Step, StreamExchange, DOWN_MAX};
use super::tunnel::TunnelAsk;
use super::verdict::CutHow;
use crate::response::Persist;
use crate::runtime::ClientClose;
use crate::service::persist_for;
use crate::service::{Cx, HttpConn, HttpService, InFlight, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_pool::RequestInfo;
use coreplex_protocol::h1::encode::LAST_CHUNK;
use coreplex_protocol::h1::encode::{chunk_overhead, write_chunk, write_field, write_status_line};
use coreplex_protocol::h1::{BodyDecoder, BodyKind, RequestHead, Version};
use std::time::Instant;

/// Request body bytes an exchange holds before the client's input pauses.
pub(super) const UP_MAX: usize = 64 * 1024;

/// How the response body is framed for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Not decided yet (the head has not been written).
    Undecided,
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// The backend's `content-length`.
    Length,
    /// Chunked by the proxy.
    Chunked,
    /// Ends with the connection's close (an HTTP/1.0 client without a length).
    UntilClose,
    /// A tunnel's bytes after its 101 (a WebSocket on an h2 backend stream), as they come.
    Raw,
}

/// An HTTP/1.1 client's side of a stream exchange.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    pub persist: Persist,
    pub http10: bool,
    pub head_only: bool,
    pub framing: Framing,
    /// Input paused because `up` is full.
    pub input_paused: bool,
    /// Response body bytes handed to the client's output, and their count at the last timer
    /// (a whole `client` period without progress while the response waits for the client is
    /// a client that stopped reading).
    pub delivered: u64,
    pub delivered_at_timer: u64,
}

/// How a response body reaches an HTTP/1.1 client (RFC 9112 section 6.3): none after HEAD,
/// 1xx, 204 and 304; the backend's length when it gave one; else chunked, which an HTTP/1.0
/// client does not know, so it gets the body until the close.
pub(crate) fn framing(status: u16, head_only: bool, has_length: bool, http10: bool) -> Framing {
    if head_only || matches!(status, 100..=199 | 204 | 304) {
        Framing::Empty
    } else if has_length {
        Framing::Length
    } else if http10 {
        Framing::UntilClose
    } else {
        Framing::Chunked
    }
}

impl Relay {
    /// The response body ends with the close (a cut must reset the connection).
    pub(crate) fn until_close(self) -> bool {
        self.framing == Framing::UntilClose
    }
}

impl HttpService {
    /// Starts proxying a request to backend `b` as a stream exchange (`tunnel`: with the
    /// upgrade it asks for, `proxy::tunnel`; `ws`: for a WebSocket-aware route, `ws_proxy`);
    /// returns the head's length (consumed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn relay_request(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
        b: usize,
        started: Instant,
        tunnel: Option<TunnelAsk<'_>>,
        ws: Option<crate::ws_proxy::WsAsk>,
    ) -> Option<usize> {
        let mut out = self.rewritten_head(cx, head, b);
        if let Some(t) = tunnel {
            rewrite::add_upgrade(&mut out, t.protocols);
        }
        let has_body = !matches!(head.body, BodyKind::None | BodyKind::Length(0));
        let http10 = head.version == Version::Http10;
        let persist = persist_for(head, conn, cx);
        if head.expect_continue && has_body {
            cx.output()
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.stats.continues += 1;
        }
        // A tunnel needs an HTTP/1.1 connection of its own, or (a WebSocket, to a backend
        // that may speak h2) a stream of an h2 connection that announced extended CONNECT.
        let rides_h2 = tunnel.is_some_and(|t| t.websocket)
            && ws.is_none()
            && self.proxy.backends[b].config.protocol != crate::runtime::BackendProtocol::H1;
        let info = RequestInfo {
            session: session_id(cx.id()),
            first: !conn.served(),
            idempotent: head.method.is_idempotent(),
            multiplexed: tunnel.is_none() || rides_h2,
        };
        let accept = rides_h2
            .then(|| {
                head.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|h| coreplex_protocol::ws::handshake::accept_for_key(h.value.trim_ascii()))
            })
            .flatten();
        let now = cx.now();
        let max_body = self.listeners[conn.listener as usize].limits.max_body;
        let key = self.proxy.next_stream;
        self.proxy.next_stream += 1;
        let mut ex = StreamExchange::new(NewExchange {
            key,
            client: cx.id(),
            stream: 0,
            backend: b,
            info,
            head: out,
            method: head.method,
            chunked: head.body == BodyKind::Chunked,
            max_body,
            up_end: !has_body,
            retries: self.proxy.backends[b].config.retries,
            now,
        });
        ex.started = started;
        ex.proxy_header = self.proxy_header_for(cx, b);
        ex.upgrade = tunnel.map(|t| t.websocket);
        ex.ws = ws;
        ex.accept = accept;
        if rides_h2 && accept.is_none() {
            // Without a key there is no 101 to give: HTTP/1.1 only.
            ex.info.multiplexed = false;
        }
        ex.relay = Some(Relay {
            persist,
            http10,
            head_only: head.method == coreplex_protocol::h1::Method::Head,
            framing: Framing::Undecided,
            input_paused: false,
            delivered: 0,
            delivered_at_timer: 0,
        });
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
        self.proxy.streams.insert(key, ex);
        self.proxy.relays.insert(cx.id(), key);
        cx.set_timer(self.timeouts(conn).client);
        let decision = self.proxy.pools[b].acquire(&info, now);
        self.stream_proceed(cx, conn, &mut End::H1, key, decision);
        Some(head.head_len)
    }

    fn relay_key(&self, id: Id) -> Option<u64> {
        self.proxy.relays.get(&id).copied()
    }

    /// Client bytes during the exchange: the request body into `up`; what follows the request
    /// (pipelining) waits until the response is out.
    pub(crate) fn relay_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        buf: &[u8],
    ) -> usize {
        let Some(key) = self.relay_key(cx.id()) else {
            return buf.len();
        };
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return buf.len();
        };
        if ex.mux_tunnel && !ex.up_end {
            // A WebSocket on an h2 backend stream: the client's bytes go up as they are.
            let n = buf.len().min(UP_MAX.saturating_sub(ex.up.len()));
            ex.up.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                if let Some(r) = ex.relay.as_mut() {
                    r.input_paused = true;
                }
                cx.pause_input();
            }
            let backend = ex.conn.filter(|_| ex.connected);
            let t = self.timeouts(conn).tunnel;
            cx.set_timer(t);
            if let Some(c) = backend {
                self.proxy.touch_h2(c, key);
                cx.wake(c);
            }
            return n;
        }
        if ex.up_end || ex.up.len() >= UP_MAX {
            if let Some(r) = ex.relay.as_mut() {
                r.input_paused = !ex.up_end;
            }
            cx.pause_input();
            return 0;
        }
        let Some(decoder) = cx.busy().and_then(|r| r.body.as_mut()) else {
            ex.up_end = true;
            cx.pause_input();
            return 0;
        };
        let mut pos = 0;
        let mut error = None;
        while pos < buf.len() && ex.up.len() < UP_MAX {
            match decoder.decode(&buf[pos..]) {
                Ok(step) => {
                    ex.up.extend_from_slice(&buf[pos..][step.payload.clone()]);
                    pos += step.consumed;
                    if step.done {
                        ex.up_end = true;
                        break;
                    }
                    if step.consumed == 0 {
                        break;
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.stats.body_error(e);
            let started = ex.resp_started;
            let err = ProxyError::ClientAbort;
            if started {
                self.stream_cut(cx, conn, &mut End::H1, key, err, CutHow::Close);
            } else {
                self.stream_fail(cx, conn, &mut End::H1, key, e.status(), err);
            }
            return buf.len();
        }
        if !ex.up_end && ex.up.len() >= UP_MAX {
            // The backend has not taken enough yet: the body waits in the socket.
            if let Some(r) = ex.relay.as_mut() {
                r.input_paused = true;
            }
            cx.pause_input();
        } else if ex.up_end && pos < buf.len() {
            // Pipelined bytes after the request wait for the response. (Without them, input
            // stays on, so that a FIN or a reset during the exchange is heard: client_close.)
            cx.pause_input();
        }
        let backend = ex.conn.filter(|_| ex.connected);
        if pos > 0 {
            cx.set_timer(self.timeouts(conn).client);
        }
        if let Some(c) = backend {
            self.proxy.touch_h2(c, key);
            cx.wake(c);
        }
        pos
    }

    /// The backend side or the pool left work for the exchange, or the output drained.
    pub(crate) fn relay_wake(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() {
            return;
        }
        let Some(key) = self.relay_key(cx.id()) else {
            return;
        };
        self.relay_step(cx, conn, key);
    }

    fn relay_step(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, key: u64) -> Step {
        if let Some(step) = self.stream_advance(cx, conn, &mut End::H1, key) {
            return step;
        }
        let now = cx.now();
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        let mut relay = ex.relay.expect("a relayed exchange");
        // Request bytes the backend took: more may be read.
        ex.up_credit = 0;
        if relay.input_paused && ex.up.len() < UP_MAX / 2 {
            relay.input_paused = false;
            cx.resume_input();
        }
        if ex.mux_tunnel && !ex.up_end && ex.up.len() < UP_MAX / 2 {
            // Its stream is open: the client's bytes (paused behind the request) may go up.
            cx.resume_input();
        }
        if !ex.interim.is_empty() {
            // 1xx heads (103 Early Hints...) go out before the final one.
            cx.output().extend_from_slice(&ex.interim);
            self.proxy.spare.give(std::mem::take(&mut ex.interim));
        }
        if !ex.resp_started {
            let Some(fields) = ex.fields.take() else {
                ex.relay = Some(relay);
                return Step::Keep;
            };
            let has_length = fields.iter().any(|(n, _)| n == b"content-length");
            relay.framing = if ex.mux_tunnel_open() {
                let t = &mut self.stats.tunnels;
                t.websocket += 1;
                t.current += 1;
                t.websocket_current += 1;
                t.over_h2 += 1;
                relay.persist = Persist::Close;
                Framing::Raw
            } else {
                framing(ex.status, relay.head_only, has_length, relay.http10)
            };
            // The connection closes after this response when its body ends with the close, when
            // a stop began, or when the request is not read to its end yet (what is left of it
            // cannot be told from the next request): the head says so.
            if relay.framing == Framing::UntilClose
                || conn.draining()
                || cx.is_stopping()
                || !ex.up_end
            {
                relay.persist = Persist::Close;
            }
            let switched = ex.switched || ex.mux_tunnel_open();
            let out = cx.output();
            write_status_line(out, ex.status);
            let no_length = matches!(ex.status, 100..=199 | 204);
            for (n, v) in fields.iter() {
                if no_length && n == b"content-length" {
                    continue; // RFC 9110 section 8.6: never on 1xx and 204
                }
                write_field(out, n, v);
            }
            if !fields.iter().any(|(n, _)| n == b"date") {
                write_field(out, b"date", self.date.get(now));
            }
            if relay.framing == Framing::Chunked {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            match relay.persist {
                // The backend switched protocols: so does the client's connection.
                _ if switched => {
                    out.extend_from_slice(b"connection: upgrade\r\n");
                    if let Some(ws) = &ex.ws {
                        crate::ws_proxy::write_client_extension(out, ws);
                    }
                }
                Persist::KeepAlive11 => {}
                Persist::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
                Persist::Close => out.extend_from_slice(b"connection: close\r\n"),
            }
            out.extend_from_slice(b"\r\n");
            ex.resp_started = true;
            self.proxy.spare.give(std::mem::take(&mut ex.head));
            self.proxy.spare.give(fields.into_bytes());
        }
        if !ex.end_sent {
            let out = cx.output();
            let room = MAX_PENDING_OUTPUT.saturating_sub(out.len());
            let n = match relay.framing {
                Framing::Chunked => ex.down.len().min(room.saturating_sub(chunk_overhead(room))),
                _ => ex.down.len().min(room),
            };
            match relay.framing {
                Framing::Chunked => write_chunk(out, &ex.down[..n]),
                Framing::Empty | Framing::Undecided => {}
                Framing::Length | Framing::UntilClose | Framing::Raw => {
                    out.extend_from_slice(&ex.down[..n])
                }
            }
            ex.down.drain(..n);
            relay.delivered += n as u64;
            if ex.mux && n > 0 {
                // The backend stream's window reopens as the client takes the bytes.
                ex.down_unacked += n;
                if let Some(c) = ex.conn {
                    if let Some(h) = self.proxy.h2_conns.get_mut(&c) {
                        h.touched.push(key);
                    }
                    cx.wake(c);
                }
            }
            if ex.down_end && ex.down.is_empty() {
                if relay.framing == Framing::Chunked {
                    cx.output().extend_from_slice(LAST_CHUNK);
                }
                ex.end_sent = true;
            }
            if ex.backend_paused && ex.down.len() < DOWN_MAX / 2 {
                // The backend connection resumes reading (and clears the flag).
                if let Some(c) = ex.conn {
                    cx.wake(c);
                }
            }
        }
        ex.relay = Some(relay);
        if !ex.end_sent {
            return Step::Keep;
        }
        // The response is out: the connection goes on (or closes, if the request was not read
        // to its end), or becomes a tunnel.
        let mut ex = self.proxy.streams.remove(&key).expect("checked");
        self.proxy.relays.remove(&cx.id());
        self.proxy.stats[ex.backend].response(ex.status);
        if ex.upgrade.is_some() && !ex.switched {
            self.stats.tunnels.refused += 1;
        }
        if ex.switched {
            if let Some(c) = ex.conn.take() {
                self.proxy.stream_of_conn.remove(&c);
                self.proxy.tunnel_started(ex.backend, c, cx.id());
                conn.clear_used_backend();
                self.stats.response(ex.status);
                self.stats
                    .latency_us(now.duration_since(ex.started).as_micros() as u64);
                self.access_upstream = Some(ex.upstream(0, None));
                self.log_response(cx, conn, ex.status, ex.started, 0, *b"--");
                let websocket = ex.upgrade == Some(true);
                let ws = ex.ws;
                self.stream_let_go(&mut ex);
                match ws {
                    Some(ws) => self.ws_proxy_client_start(cx, conn, c, ws),
                    None => self.tunnel_client_start(cx, conn, c, websocket),
                }
                return Step::Gone;
            }
            // The backend end closed right after its 101: nothing to tunnel to.
            self.stream_let_go(&mut ex);
            self.response_done(cx, conn, ex.status, ex.started, true);
            return Step::Gone;
        }
        self.stream_let_go(&mut ex);
        let close = relay.persist == Persist::Close || !ex.up_end;
        if let (Some(c), Some(h)) = (ex.conn_at, ex.head_at) {
            super::streams::record_response_time(&mut self.proxy.stats[ex.backend], c, h);
        }
        self.access_upstream = Some(ex.upstream(relay.delivered, None));
        self.response_done(cx, conn, ex.status, ex.started, close);
        if conn.phase == Phase::Idle {
            cx.set_timer(self.timeouts(conn).client);
            cx.resume_input();
        }
        Step::Gone
    }

    /// Output drained: more of the response may go.
    pub(crate) fn relay_drained(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if let Some(key) = self.relay_key(cx.id()) {
            let tunnel = self
                .proxy
                .streams
                .get(&key)
                .is_some_and(|ex| ex.mux_tunnel_open());
            let t = self.timeouts(conn);
            cx.set_timer(if tunnel { t.tunnel } else { t.client });
            self.relay_wake(cx, conn);
        }
    }

    /// Answers `status` and closes (the exchange is already gone).
    pub(super) fn relay_answer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, status: u16) {
        self.proxy.relays.remove(&cx.id());
        self.fail(cx, conn, status, CloseReason::Done);
    }

    /// Ends the connection after a response that cannot be completed (the exchange is gone).
    pub(super) fn relay_cut(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, how: CutHow) {
        self.proxy.relays.remove(&cx.id());
        conn.phase = Phase::Closing;
        cx.take_busy();
        match how {
            CutHow::Flush => {
                cx.set_timer(self.timeouts(conn).client_fin);
                cx.close_after_flush(CloseReason::PeerReset);
            }
            CutHow::Reset => {
                // SO_LINGER 0: the close sends RST, so a body delimited by close cannot look
                // complete.
                let _ = cx.socket().set_linger(Some(std::time::Duration::ZERO));
                cx.close(CloseReason::PeerReset);
            }
            CutHow::Close | CutHow::ResetStream => cx.close(CloseReason::PeerReset),
        }
    }

    /// The client's timer during the exchange.
    pub(crate) fn relay_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let Some(key) = self.relay_key(cx.id()) else {
            return cx.close(CloseReason::ClientTimeout);
        };
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return cx.close(CloseReason::ClientTimeout);
        };
        if ex.mux_tunnel_open() {
            // A WebSocket on an h2 backend stream, silent for `timeouts.tunnel` (its traffic
            // sets the timer): cut.
            let e = ProxyError::ClientAbort;
            self.stream_cut(cx, conn, &mut End::H1, key, e, CutHow::Close);
            return;
        }
        let waiting_for_backend = ex.relay.is_some_and(|r| r.input_paused);
        // The response waits for the client (bytes queued, or the backend held back) and the
        // client took nothing for a whole period.
        let stalled = ex
            .relay
            .is_some_and(|r| r.delivered == r.delivered_at_timer)
            && (cx.pending_output() > 0 || !ex.down.is_empty() || ex.backend_paused);
        if let Some(r) = ex.relay.as_mut() {
            r.delivered_at_timer = r.delivered;
        }
        // A body delimited by the close must not look complete when it is cut: reset.
        let cut = if ex.relay.is_some_and(|r| r.until_close()) {
            CutHow::Reset
        } else {
            CutHow::Close
        };
        let e = ProxyError::ClientAbort;
        if !ex.up_end && !waiting_for_backend {
            // The client stopped sending its body.
            if ex.resp_started {
                self.stream_cut(cx, conn, &mut End::H1, key, e, CutHow::Close);
            } else {
                self.stream_fail(cx, conn, &mut End::H1, key, 408, e);
            }
        } else if ex.resp_started && stalled {
            // The client stopped reading its response.
            self.stream_cut(cx, conn, &mut End::H1, key, e, cut);
        } else {
            // Waiting for the backend: its own timers bound that.
            cx.set_timer(self.timeouts(conn).client);
        }
    }

    /// The client shut its sending side. A partial request is abandoned. After a complete
    /// request, before the response starts, the backend's `client_close` decides: `forward`
    /// passes the FIN on to an HTTP/1.1 backend connection after the request (that connection
    /// is not reused; a multiplexed stream already ended its request), `abort` drops the
    /// exchange and its backend connection, `wait` keeps going. Once the response streams,
    /// the half-closed client gets the rest. The connection closes after the response in
    /// every case.
    pub(crate) fn relay_client_eof(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let Some(key) = self.relay_key(cx.id()) else {
            return cx.close(CloseReason::PeerClosed);
        };
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return cx.close(CloseReason::PeerClosed);
        };
        let abort = || (ProxyError::ClientAbort, CutHow::Close);
        if ex.mux_tunnel && !ex.up_end {
            // The client's FIN ends the stream's request side (END_STREAM); the stream's end
            // then ends the connection.
            ex.up_end = true;
            if let Some(c) = ex.conn {
                self.proxy.touch_h2(c, key);
                cx.wake(c);
            }
            return;
        }
        if !ex.up_end {
            let (e, how) = abort();
            self.stream_cut(cx, conn, &mut End::H1, key, e, how);
            return;
        }
        if let Some(r) = ex.relay.as_mut() {
            r.persist = Persist::Close;
        }
        if ex.resp_started {
            return;
        }
        match self.proxy.backends[ex.backend].config.client_close {
            ClientClose::Wait => {}
            ClientClose::Abort => {
                let (e, how) = abort();
                self.stream_cut(cx, conn, &mut End::H1, key, e, how);
            }
            ClientClose::Forward => {
                // A connection made later (queued, connecting, a retry) sends it after the
                // request too.
                ex.client_fin = true;
                if let (Some(c), false) = (ex.conn, ex.mux) {
                    cx.wake(c);
                }
            }
        }
    }

    /// The client connection closed: its exchange, if any, is dropped.
    pub(crate) fn relay_closed(&mut self, id: Id) {
        let Some(key) = self.proxy.relays.remove(&id) else {
            return;
        };
        if let Some(mut ex) = self.proxy.streams.remove(&key) {
            if !ex.end_sent {
                self.proxy.stats[ex.backend].error(ProxyError::ClientAbort);
            }
            self.stream_discard(&mut ex);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framing_follows_rfc_9112_section_6_3() {
        // No body, whatever the backend said about its length.
        for (status, head) in [(200, true), (204, false), (304, false), (103, false)] {
            for len in [true, false] {
                assert_eq!(framing(status, head, len, false), Framing::Empty);
            }
        }
        assert_eq!(framing(200, false, true, false), Framing::Length);
        assert_eq!(framing(200, false, true, true), Framing::Length);
        assert_eq!(framing(200, false, false, false), Framing::Chunked);
        assert_eq!(framing(500, false, false, true), Framing::UntilClose);
        assert!(Relay {
            persist: Persist::Close,
            http10: true,
            head_only: false,
            framing: Framing::UntilClose,
            input_paused: false,
            delivered: 0,
            delivered_at_timer: 0,
        }
        .until_close());
    }
}

//! The backend side of an exchange: a new connection's outcome, the response head (strict
//! framing by `parse_response`, hop-by-hop removal, the client's connection header), the body
//! streamed to the client with backpressure, and the release of the connection to its pool.
//!
//! A backend connection is busy while paired with a client and idle (in a pool list) while not;
//! an idle one that sends anything or closes is closed and forgotten by the pool.

use super::rewrite;
use super::{conn_id, set_keepalive, Failure, Resp, Stage};
use crate::http::response::Persist;
use crate::http::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::CloseReason;
use coreplex_pool::Release;
use coreplex_protocol::h1::{
    parse_response, BodyDecoder, BodyKind, Limits, ResponseBody, ResponseHead,
};

/// Limits on a backend's response head.
const RESPONSE_LIMITS: Limits = Limits {
    max_request_line: 8192,
    max_header_bytes: 64 * 1024,
    max_headers: 128,
    max_body: u64::MAX,
};

impl HttpService {
    /// A new backend connection finished connecting (or failed).
    pub(in crate::http) fn backend_connected(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        result: std::io::Result<()>,
    ) {
        let now = cx.now();
        let Some(client) = cx.peer() else {
            cx.close(CloseReason::Done);
            return;
        };
        let Some(ex) = self.proxy.exchanges.get_mut(&client) else {
            cx.close(CloseReason::Done);
            return;
        };
        if let Err(e) = result {
            tracing::debug!("backend connect failed: {e}");
            ex.failure = Some(Failure::ConnectFailed);
            cx.close(CloseReason::ConnectFailed);
            return;
        }
        let b = ex.backend;
        conn.phase = Phase::Backend;
        conn.listener = b as u8;
        if let Err(e) =
            self.proxy.pools[b].connected(ex.server, conn_id(cx.id()), ex.info.session, now)
        {
            tracing::warn!("pool bookkeeping: {e}");
        }
        ex.connected = true;
        let s = &mut self.proxy.stats[b];
        s.connects += 1;
        s.connect_time_us += now.saturating_duration_since(ex.since).as_micros() as u64;
        if let Some(tls) = cx.session::<Box<coreplex_tls::State>>() {
            s.tls_handshakes[usize::from(tls.agreed().resumed)] += 1;
        }
        if let Some(k) = &self.proxy.config(b).tcp_keepalive {
            set_keepalive(cx, k);
        }
        cx.wake(client);
    }

    /// Response bytes from a backend (or unexpected bytes from an idle one).
    pub(in crate::http) fn backend_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        input: &[u8],
    ) -> usize {
        let exchange = cx
            .peer()
            .and_then(|client| self.proxy.exchanges.get_mut(&client).map(|ex| (client, ex)));
        let Some((client, ex)) = exchange else {
            // An idle pooled connection must stay silent.
            cx.close(CloseReason::ProtocolError);
            return input.len();
        };
        if ex.done || ex.stage != Stage::Forwarding && ex.stage != Stage::Connecting {
            cx.close(CloseReason::ProtocolError);
            return input.len();
        }
        ex.resp_seen = true;
        let mut pos = 0;
        loop {
            match &mut ex.resp {
                Resp::Head => {
                    let mut scratch = [httparse::EMPTY_HEADER; 128];
                    let head = match parse_response(
                        &input[pos..],
                        ex.method,
                        &RESPONSE_LIMITS,
                        &mut scratch,
                    ) {
                        Ok(Some(h)) => h,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!("bad response from backend: {e}");
                            ex.failure = Some(Failure::BadResponse);
                            cx.close(CloseReason::ProtocolError);
                            return input.len();
                        }
                    };
                    pos += head.head_len;
                    if head.interim {
                        // 1xx (100 Continue, 103 Early Hints): HTTP/1.1 clients see it.
                        if !ex.http10 {
                            if let Some(out) = cx.peer_output() {
                                write_head(out, &head, Persist::KeepAlive11, false);
                            }
                        }
                        continue;
                    }
                    if head.body == ResponseBody::Tunnel {
                        // Upgrades are not forwarded (the Upgrade field is removed), so a 101
                        // or a 2xx to CONNECT is a backend error.
                        ex.failure = Some(Failure::BadResponse);
                        cx.close(CloseReason::ProtocolError);
                        return input.len();
                    }
                    ex.status = head.status;
                    ex.private = rewrite::is_connection_auth(head.status, head.headers);
                    ex.backend_keep = head.keep_alive;
                    let dechunk = ex.http10 && head.body == ResponseBody::Chunked;
                    // A response before the whole request was read ends the client connection
                    // (the rest of the body cannot be told from a next request): say so.
                    if head.body == ResponseBody::UntilClose
                        || dechunk
                        || !ex.req_done
                        || conn.draining()
                        || cx.is_stopping()
                    {
                        ex.persist = Persist::Close;
                    }
                    if let Some(out) = cx.peer_output() {
                        write_head(out, &head, ex.persist, dechunk);
                    }
                    ex.resp_started = true;
                    ex.head = Vec::new();
                    ex.resp = match head.body {
                        ResponseBody::Length(n) => {
                            Resp::Body(BodyDecoder::new(BodyKind::Length(n), u64::MAX), false)
                        }
                        ResponseBody::Chunked => {
                            Resp::Body(BodyDecoder::new(BodyKind::Chunked, u64::MAX), dechunk)
                        }
                        ResponseBody::UntilClose => Resp::UntilClose,
                        ResponseBody::None | ResponseBody::Tunnel => Resp::Done,
                    };
                }
                Resp::Body(decoder, dechunk) => {
                    let rest = &input[pos..];
                    match decoder.decode(rest) {
                        Ok(step) => {
                            let bytes = if *dechunk {
                                &rest[step.payload.clone()]
                            } else {
                                &rest[..step.consumed]
                            };
                            if !bytes.is_empty() {
                                if let Some(out) = cx.peer_output() {
                                    out.extend_from_slice(bytes);
                                }
                            }
                            pos += step.consumed;
                            if step.done {
                                ex.resp = Resp::Done;
                            } else if step.consumed == 0 || pos == input.len() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!("bad response body from backend: {e}");
                            ex.failure = Some(Failure::BadResponse);
                            cx.close(CloseReason::ProtocolError);
                            return input.len();
                        }
                    }
                }
                Resp::UntilClose => {
                    if let Some(out) = cx.peer_output() {
                        out.extend_from_slice(&input[pos..]);
                    }
                    pos = input.len();
                    break;
                }
                Resp::Done => break,
            }
        }
        if matches!(ex.resp, Resp::Done) {
            // Bytes after a complete response: the backend is out of step, do not reuse it.
            let clean = pos == input.len();
            self.finish_backend(cx, client, clean);
            return input.len();
        }
        let b = ex.backend;
        if ex.resp_started {
            cx.set_timer(self.proxy.config(b).timeouts.server);
        }
        if cx.peer_pending_output() > MAX_PENDING_OUTPUT {
            cx.pause_input();
        }
        pos
    }

    /// The response is complete: release the connection to the pool (or close it) and wake the
    /// client to finish.
    fn finish_backend(&mut self, cx: &mut Cx<'_>, client: coreplex_engine::Id, clean: bool) {
        let Some(ex) = self.proxy.exchanges.get_mut(&client) else {
            return;
        };
        ex.done = true;
        let b = ex.backend;
        let reusable =
            clean && ex.backend_keep && ex.req_done && !ex.client_eof && !cx.is_stopping();
        cx.clear_timer();
        let release = self.proxy.pools[b].release(conn_id(cx.id()), reusable, ex.private, cx.now());
        self.proxy.dirty = true;
        cx.unpair();
        if !matches!(release, Ok(Release::Keep)) {
            cx.close(CloseReason::Done);
        }
        cx.wake(client);
    }

    /// The backend closed its side (EOF).
    pub(in crate::http) fn backend_closed(&mut self, cx: &mut Cx<'_>, _conn: &mut HttpConn) {
        let Some(client) = cx.peer() else {
            cx.close(CloseReason::PeerClosed);
            return;
        };
        match self.proxy.exchanges.get_mut(&client) {
            Some(ex) if matches!(ex.resp, Resp::UntilClose) && !ex.done => {
                ex.resp = Resp::Done;
                ex.backend_keep = false;
                self.finish_backend(cx, client, false);
                cx.close(CloseReason::PeerClosed);
            }
            _ => cx.close(CloseReason::PeerClosed),
        }
    }

    /// The backend went silent for `timeouts.server` mid-response.
    ///
    /// A backend held back because the client is not reading is not late: the client's own
    /// timeout bounds that wait.
    pub(in crate::http) fn backend_timer(&mut self, cx: &mut Cx<'_>, _conn: &mut HttpConn) {
        let Some(client) = cx.peer() else {
            cx.close(CloseReason::ClientTimeout);
            return;
        };
        if cx.peer_pending_output() > 0 {
            if let Some(ex) = self.proxy.exchanges.get(&client) {
                let t = self.proxy.config(ex.backend).timeouts.server;
                cx.set_timer(t);
                return;
            }
        }
        if let Some(ex) = self.proxy.exchanges.get_mut(&client) {
            ex.failure = Some(Failure::ServerTimeout);
        }
        cx.close(CloseReason::ClientTimeout);
    }
}

fn write_head(out: &mut Vec<u8>, head: &ResponseHead<'_, '_>, persist: Persist, dechunk: bool) {
    rewrite::response_head(
        out,
        head.status,
        head.reason,
        head.headers,
        persist,
        dechunk,
    );
}

//! The backend side of an exchange: a new connection's outcome, the response head (strict
//! framing by `parse_response`, hop-by-hop removal, the client's connection header), the body
//! streamed to the client with backpressure, and the release of the connection to its pool.
//!
//! A backend connection is busy while paired with a client and idle (in a pool list) while not;
//! an idle one that sends anything or closes is closed and forgotten by the pool.

use super::rewrite;
use super::{conn_id, Failure, Resp, Stage};
use crate::response::Persist;
use crate::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::CloseReason;
use coreplex_pool::Release;
use coreplex_protocol::h1::{
    parse_response, BodyDecoder, BodyKind, Limits, Method, ResponseBody, ResponseHead,
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
    pub(crate) fn backend_connected(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        result: std::io::Result<()>,
    ) {
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
        ex.connected = true;
        let (server, session, since) = (ex.server, ex.info.session, ex.since);
        self.proxy
            .note_connected(cx, b, server, session, since, None);
        cx.wake(client);
    }

    /// Response bytes from a backend (or unexpected bytes from an idle one).
    pub(crate) fn backend_input(
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
        let draining = conn.draining() || cx.is_stopping();
        let mut resp = std::mem::replace(&mut ex.resp, Resp::Done);
        let method = ex.method;
        let read = read_response(
            &mut resp,
            input,
            method,
            &mut ClientSink { ex, cx, draining },
        );
        let ex = self.proxy.exchanges.get_mut(&client).expect("checked");
        ex.resp = resp;
        let pos = match read {
            Ok(r) => r.used,
            Err(()) => {
                ex.failure = Some(Failure::BadResponse);
                cx.close(CloseReason::ProtocolError);
                return input.len();
            }
        };
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
    pub(crate) fn backend_closed(&mut self, cx: &mut Cx<'_>, _conn: &mut HttpConn) {
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
    pub(crate) fn backend_timer(&mut self, cx: &mut Cx<'_>, _conn: &mut HttpConn) {
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

/// What a backend's response is read into: the client connection of an HTTP/1.1 exchange, or
/// the buffers of an HTTP/2 stream's exchange.
pub(super) trait ResponseSink {
    /// A response head. Interim (1xx) heads return `Ok(None)`; a final head returns how its
    /// body is read (`Err`: the head is unacceptable).
    fn head(&mut self, head: &ResponseHead<'_, '_>) -> Result<Option<Resp>, ()>;
    /// Body bytes (payload only where the body state says to strip chunked framing).
    fn body(&mut self, bytes: &[u8]);
    /// How many more body bytes (as received, framing included) may be taken now; reading
    /// stops at 0 and the rest waits in the connection's input.
    fn room(&self) -> usize {
        usize::MAX
    }
}

/// How a final response head's body is read: `dechunk` strips chunked framing.
pub(super) fn body_state(body: ResponseBody, dechunk: bool) -> Resp {
    match body {
        ResponseBody::Length(n) => {
            Resp::Body(BodyDecoder::new(BodyKind::Length(n), u64::MAX), false)
        }
        ResponseBody::Chunked => Resp::Body(BodyDecoder::new(BodyKind::Chunked, u64::MAX), dechunk),
        ResponseBody::UntilClose => Resp::UntilClose,
        ResponseBody::None | ResponseBody::Tunnel => Resp::Done,
    }
}

/// How far a response read got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Read {
    /// Bytes of the input consumed.
    pub used: usize,
    /// Reading stopped for lack of room in the sink (not for lack of input).
    pub blocked: bool,
}

/// Reads response bytes from `input` into `sink` as far as `resp` (updated) and the sink's
/// room allow (`Err`: a malformed head or body).
pub(super) fn read_response(
    resp: &mut Resp,
    input: &[u8],
    method: Method,
    sink: &mut impl ResponseSink,
) -> Result<Read, ()> {
    let mut pos = 0;
    let stop = |used, blocked| Ok(Read { used, blocked });
    loop {
        match resp {
            Resp::Head => {
                let mut scratch = [httparse::EMPTY_HEADER; 128];
                let head =
                    match parse_response(&input[pos..], method, &RESPONSE_LIMITS, &mut scratch) {
                        Ok(Some(h)) => h,
                        Ok(None) => return stop(pos, false),
                        Err(e) => {
                            tracing::debug!("bad response from backend: {e}");
                            return Err(());
                        }
                    };
                pos += head.head_len;
                if let Some(next) = sink.head(&head)? {
                    *resp = next;
                }
            }
            Resp::Body(decoder, dechunk) => {
                let room = sink.room();
                if room == 0 {
                    return stop(pos, pos < input.len());
                }
                let end = pos.saturating_add(room).min(input.len());
                let limited = end < input.len();
                let rest = &input[pos..end];
                let step = decoder.decode(rest).map_err(|e| {
                    tracing::debug!("bad response body from backend: {e}");
                })?;
                let bytes = if *dechunk {
                    &rest[step.payload.clone()]
                } else {
                    &rest[..step.consumed]
                };
                if !bytes.is_empty() {
                    sink.body(bytes);
                }
                pos += step.consumed;
                if step.done {
                    *resp = Resp::Done;
                } else if step.consumed == 0 || pos == end {
                    return stop(pos, limited);
                }
            }
            Resp::UntilClose => {
                let end = pos.saturating_add(sink.room()).min(input.len());
                sink.body(&input[pos..end]);
                return stop(end, end < input.len());
            }
            Resp::Done => return stop(pos, false),
        }
    }
}

/// An HTTP/1.1 client's exchange: heads and body bytes go to the paired client's output.
struct ClientSink<'a, 'c> {
    ex: &'a mut super::Exchange,
    cx: &'a mut Cx<'c>,
    /// A stop is under way: the response closes the client connection.
    draining: bool,
}

impl ResponseSink for ClientSink<'_, '_> {
    fn head(&mut self, head: &ResponseHead<'_, '_>) -> Result<Option<Resp>, ()> {
        let ex = &mut *self.ex;
        if head.interim {
            // 1xx (100 Continue, 103 Early Hints): HTTP/1.1 clients see it.
            if !ex.http10 {
                if let Some(out) = self.cx.peer_output() {
                    write_head(out, head, Persist::KeepAlive11, false);
                }
            }
            return Ok(None);
        }
        if head.body == ResponseBody::Tunnel {
            // Upgrades are not forwarded (the Upgrade field is removed), so a 101 or a 2xx to
            // CONNECT is a backend error.
            return Err(());
        }
        ex.status = head.status;
        ex.private = rewrite::is_connection_auth(head.status, head.headers);
        ex.backend_keep = head.keep_alive;
        let dechunk = ex.http10 && head.body == ResponseBody::Chunked;
        // A response before the whole request was read ends the client connection (the rest
        // of the body cannot be told from a next request): say so.
        if head.body == ResponseBody::UntilClose || dechunk || !ex.req_done || self.draining {
            ex.persist = Persist::Close;
        }
        if let Some(out) = self.cx.peer_output() {
            write_head(out, head, ex.persist, dechunk);
        }
        ex.resp_started = true;
        ex.head = Vec::new();
        Ok(Some(body_state(head.body, dechunk)))
    }

    fn body(&mut self, bytes: &[u8]) {
        if let Some(out) = self.cx.peer_output() {
            out.extend_from_slice(bytes);
        }
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

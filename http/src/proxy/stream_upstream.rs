//! Exchanges on HTTP/1.1 backend connections: the backend side, for HTTP/2 streams and
//! HTTP/1.1 requests alike. `ProxyShard::stream_of_conn` leads from a backend connection to the
//! exchange it serves. It sends
//! the request head and the body the client side left in the exchange (within the output
//! bound), reads the response into the exchange (stopping while [`DOWN_MAX`] bytes wait for the
//! client), and once the response is complete goes back to its pool or closes. A client's
//! half-close to pass on (`client_close = "forward"`) goes as a FIN after the request; that
//! connection is not reused.

use super::h1_reader::{body_state, read_response, ResponseSink};
use super::rewrite;
use super::streams::{StreamExchange, DOWN_MAX};
use super::translate::ResponseFields;
use super::{conn_id, Failure, Resp, Spare, Stage};
use crate::response::Persist;
use crate::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_pool::Release;
use coreplex_protocol::h1::{ResponseBody, ResponseHead};

/// A stream's exchange as the response reader's sink (its buffers taken from `spare`).
struct StreamSink<'a> {
    ex: &'a mut StreamExchange,
    spare: &'a mut Spare,
}

impl StreamSink<'_> {
    /// The 101 to an h2 stream's extended CONNECT (RFC 8441 section 5): the stream gets 200
    /// with the backend's end-to-end fields (its `Sec-WebSocket-Accept`, checked against the
    /// key made here, stays here), then everything the backend sends until it closes.
    fn h2_tunnel_head(&mut self, head: &ResponseHead<'_, '_>) -> Result<Option<Resp>, ()> {
        let ex = &mut *self.ex;
        let accept = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value);
        if let Some(want) = &ex.accept {
            if accept != Some(&want[..]) {
                return Err(());
            }
        }
        ex.status = 200;
        ex.backend_keep = false;
        let kept: Vec<httparse::Header<'_>> = head
            .headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .copied()
            .collect();
        ex.fields = Some(ResponseFields::from_h1_in(&kept, self.spare.take()));
        Ok(Some(Resp::UntilClose))
    }
}

impl ResponseSink for StreamSink<'_> {
    fn head(&mut self, head: &ResponseHead<'_, '_>) -> Result<Option<Resp>, ()> {
        if head.interim {
            // 1xx heads reach HTTP/1.1 clients (not HTTP/1.0 ones, nor h2 streams). A 100
            // Continue is not one of them: the proxy answered `Expect` itself.
            let ex = &mut *self.ex;
            if ex.relay.is_some_and(|r| !r.http10) && head.status != 100 {
                rewrite::response_head(
                    &mut ex.interim,
                    head.status,
                    head.reason,
                    head.headers,
                    Persist::KeepAlive11,
                    false,
                );
            }
            return Ok(None);
        }
        let ex = &mut *self.ex;
        if head.body == ResponseBody::Tunnel {
            // Only the upgrade a request asked for may switch protocols.
            if ex.upgrade.is_none() || head.status != 101 {
                return Err(());
            }
            if ex.h2_tunnel {
                return self.h2_tunnel_head(head);
            }
            if let Some(ws) = &ex.ws {
                // Our WebSocket to the backend: its accept must answer the key, and it offered
                // no extension, so none may come back.
                let field = |name: &str| {
                    head.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if field("sec-websocket-accept") != Some(&ws.accept[..])
                    || field("sec-websocket-extensions").is_some()
                {
                    return Err(());
                }
            }
            ex.status = 101;
            ex.switched = true;
            let mut fields = ResponseFields::from_h1_in(head.headers, self.spare.take());
            for h in head.headers {
                if h.name.eq_ignore_ascii_case("upgrade") {
                    fields.push(b"upgrade", h.value);
                }
            }
            ex.fields = Some(fields);
            return Ok(Some(Resp::Done));
        }
        ex.status = head.status;
        ex.head_at = Some(std::time::Instant::now());
        ex.private = rewrite::is_connection_auth(head.status, head.headers);
        ex.backend_keep = head.keep_alive;
        ex.fields = Some(ResponseFields::from_h1_in(head.headers, self.spare.take()));
        // The h2 framing delimits the body: chunked framing is always stripped.
        Ok(Some(body_state(head.body, true)))
    }

    fn body(&mut self, bytes: &[u8]) {
        if self.ex.down.capacity() == 0 {
            self.ex.down = self.spare.take();
        }
        self.ex.down.extend_from_slice(bytes);
    }

    fn room(&self) -> usize {
        DOWN_MAX.saturating_sub(self.ex.down.len())
    }
}

impl HttpService {
    /// The exchange a backend connection serves, if it serves a stream.
    pub(crate) fn stream_key(&self, id: Id) -> Option<u64> {
        self.proxy.stream_of_conn.get(&id).copied()
    }

    /// A connection opened for exchange `key` exists (still connecting).
    pub(crate) fn stream_opened(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, key: u64) {
        if let Some(b) = self.proxy.h2_opening.get(&key).map(|h| h.backend) {
            // An h2 connection: it serves whoever still waits for it.
            if !self.h2_opened(cx, key) {
                cx.close(CloseReason::Done);
                return;
            }
            conn.phase = Phase::Backend;
            conn.listener = b as u8;
            cx.set_timer(self.proxy.backends[b].config.timeouts.connect);
            return;
        }
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            cx.close(CloseReason::Done);
            return;
        };
        if ex.stage != Stage::Connecting || ex.conn.is_some() {
            cx.close(CloseReason::Done);
            return;
        }
        ex.conn = Some(cx.id());
        ex.opening = false;
        conn.phase = Phase::Backend;
        conn.listener = ex.backend as u8;
        self.proxy.stream_of_conn.insert(cx.id(), key);
        cx.set_timer(self.proxy.backends[ex.backend].config.timeouts.connect);
    }

    /// The asker could not get a connection slot for exchange `key`.
    pub(crate) fn stream_open_failed(&mut self, cx: &mut Cx<'_>, key: u64) {
        self.h2_open_failed(key);
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            ex.failure = None; // no slot: answered 503 without blaming the server
            ex.conn = None;
            ex.opening = false;
            cx.wake(ex.client);
        }
    }

    /// A stream's backend connection connected (or failed).
    pub(crate) fn stream_connected(
        &mut self,
        cx: &mut Cx<'_>,
        key: u64,
        result: std::io::Result<()>,
    ) {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
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
        ex.connected = true;
        ex.conn_at = Some(cx.now());
        ex.connect_ms = cx.now().saturating_duration_since(ex.since).as_millis() as i64;
        ex.stage = Stage::Forwarding;
        let (server, session, since) = (ex.server, ex.info.session, ex.since);
        self.proxy
            .note_connected(cx, b, server, session, since, None);
        self.stream_send(cx, key);
    }

    /// Sends what the exchange has for the backend: the head once, then the request body as far
    /// as the output bound allows; the client gets the window back for what was taken.
    pub(crate) fn stream_send(&mut self, cx: &mut Cx<'_>, key: u64) {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return;
        };
        if !ex.connected {
            return;
        }
        let mut moved = false;
        if !ex.head_sent {
            cx.output().extend_from_slice(&ex.head);
            ex.head_sent = true;
            moved = true;
        }
        if !ex.up.is_empty() && cx.pending_output() < MAX_PENDING_OUTPUT {
            let out = cx.output();
            if ex.chunked {
                out.extend_from_slice(format!("{:x}\r\n", ex.up.len()).as_bytes());
                out.extend_from_slice(&ex.up);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&ex.up);
            }
            ex.up_credit += ex.up.len();
            ex.up_sent = true;
            ex.up.clear();
            moved = true;
        }
        if ex.up_end && ex.up.is_empty() && !ex.up_end_sent {
            if ex.chunked {
                cx.output().extend_from_slice(b"0\r\n\r\n");
            }
            ex.up_end_sent = true;
            moved = true;
        }
        if ex.client_fin && ex.up_end_sent && !ex.fin_sent {
            // The client's half-close (`client_close = "forward"`), after the request.
            cx.shutdown_write();
            ex.fin_sent = true;
        }
        if ex.backend_paused && ex.down.len() < DOWN_MAX / 2 {
            ex.backend_paused = false;
            cx.resume_input();
        }
        if moved {
            let t = self.proxy.backends[ex.backend].config.timeouts;
            cx.set_timer(if ex.tunnel_open() { t.tunnel } else { t.server });
            cx.wake(ex.client);
        }
    }

    /// Response bytes on a stream's backend connection.
    pub(crate) fn stream_backend_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        key: u64,
        input: &[u8],
    ) -> usize {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            cx.close(CloseReason::ProtocolError);
            return input.len();
        };
        if !ex.connected || !ex.head_sent {
            cx.close(CloseReason::ProtocolError);
            return input.len();
        }
        ex.resp_seen = true;
        let mut resp = std::mem::replace(&mut ex.resp, Resp::Done);
        let method = ex.method;
        let spare = &mut self.proxy.spare;
        let read = read_response(&mut resp, input, method, &mut StreamSink { ex, spare });
        let ex = self.proxy.streams.get_mut(&key).expect("checked");
        ex.resp = resp;
        let client = ex.client;
        let Ok(super::h1_reader::Read { used: pos, blocked }) = read else {
            ex.failure = Some(Failure::BadResponse);
            cx.close(CloseReason::ProtocolError);
            return input.len();
        };
        cx.wake(client);
        if ex.switched {
            // A 101: what follows it is the tunnel's, once the client end pairs.
            ex.down_end = true;
            let ws = ex.ws;
            self.tunnel_backend_start(cx, conn);
            if let Some(ws) = ws {
                self.ws_proxy_backend_start(cx, conn, ws.listener);
            }
            return pos;
        }
        if matches!(ex.resp, Resp::Done) {
            let clean = pos == input.len();
            self.stream_finish_backend(cx, key, clean);
            return input.len();
        }
        if blocked {
            ex.backend_paused = true;
            cx.pause_input();
        }
        let t = self.proxy.backends[ex.backend].config.timeouts;
        cx.set_timer(if ex.tunnel_open() { t.tunnel } else { t.server });
        pos
    }

    /// The response is complete: the connection goes back to its pool (or closes).
    fn stream_finish_backend(&mut self, cx: &mut Cx<'_>, key: u64, clean: bool) {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            return;
        };
        ex.down_end = true;
        ex.conn = None;
        let b = ex.backend;
        let reusable =
            clean && ex.backend_keep && ex.up_end_sent && !ex.fin_sent && !cx.is_stopping();
        let private = ex.private;
        self.proxy.stream_of_conn.remove(&cx.id());
        cx.clear_timer();
        let release = self.proxy.pools[b].release(conn_id(cx.id()), reusable, private, cx.now());
        self.proxy.dirty = true;
        if !matches!(release, Ok(Release::Keep)) {
            cx.close(CloseReason::Done);
        }
    }

    /// The backend closed its side: the end of a close-delimited body, else a failure (heard
    /// by the exchange when the connection closes).
    pub(crate) fn stream_backend_eof(&mut self, cx: &mut Cx<'_>, key: u64) {
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            if matches!(ex.resp, Resp::UntilClose) {
                ex.resp = Resp::Done;
                ex.backend_keep = false;
                cx.wake(ex.client);
                self.stream_finish_backend(cx, key, false);
            }
        }
        cx.close(CloseReason::PeerClosed);
    }

    /// A stream's backend connection timer: connect timeout, or the server silent for
    /// `timeouts.server` (not while the client is the one holding the response back).
    pub(crate) fn stream_backend_timer(&mut self, cx: &mut Cx<'_>, key: u64) {
        let Some(ex) = self.proxy.streams.get_mut(&key) else {
            cx.close(CloseReason::ClientTimeout);
            return;
        };
        let t = self.proxy.backends[ex.backend].config.timeouts;
        let t = if ex.tunnel_open() { t.tunnel } else { t.server };
        if ex.connected && ex.backend_paused {
            cx.set_timer(t);
            return;
        }
        ex.failure = Some(if ex.connected {
            Failure::ServerTimeout
        } else {
            Failure::ConnectTimeout
        });
        cx.close(CloseReason::ClientTimeout);
    }

    /// A backend connection closed: the exchange it served (if any) learns it on its client's
    /// next wake.
    pub(crate) fn stream_backend_closed(&mut self, id: Id) {
        let Some(key) = self.proxy.stream_of_conn.remove(&id) else {
            return;
        };
        if let Some(ex) = self.proxy.streams.get_mut(&key) {
            if ex.conn == Some(id) {
                ex.conn = None;
                if ex.failure.is_none() && !ex.connected {
                    ex.failure = Some(Failure::ConnectFailed);
                }
                let client = ex.client;
                self.proxy.wake_later(client);
            }
        }
    }
}

//! WebSocket endpoints on HTTP/1.1 connections (RFC 6455), written on the engine's public
//! service API: a `websocket = "echo"` route answers a valid upgrade with its 101 (refusals get
//! 426, 405 or 400 and a close), then the connection's frames are read by
//! `coreplex_protocol::ws` and every message is echoed as its bytes arrive, one frame per
//! piece read, so no message is ever buffered whole.
//!
//! Pings are answered with pongs, a close frame with a close frame carrying the peer's code,
//! and a broken rule with a close frame carrying the rule's code (1002, 1007, 1009); the server
//! closes the TCP connection after its close frame is sent (section 7.1.1). An idle endpoint
//! closes after `timeouts.tunnel` with 1001. Output above the connection's bound pauses reading
//! at the next message boundary (the engine presents the rest again once it is sent): clients
//! commonly send a whole message before reading the echo, so the unsent echo of one message
//! (at most `max_message`) may be held beyond the bound.
//!
//! A connection between messages keeps nothing here: the per-connection state (the decoder and
//! where its echo stands) lives in a shard table only while a message is half read.

use crate::response::{Persist, Rendered};
use crate::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_protocol::h1::RequestHead;
use coreplex_protocol::ws::close::code;
use coreplex_protocol::ws::encode::{write_close, write_frame};
use coreplex_protocol::ws::{handshake, Decoder, DecoderConfig, Event, HandshakeError, Opcode};
use std::collections::HashMap;

/// A connection's state while a message is half read.
#[derive(Clone, Copy)]
struct EchoConn {
    decoder: Decoder,
    /// The opcode of the next echoed frame: the message's own for its first, then continuation.
    next: Opcode,
    /// The echo already sent the message's final frame.
    fin_sent: bool,
}

impl EchoConn {
    fn new() -> EchoConn {
        EchoConn {
            decoder: Decoder::new(false),
            next: Opcode::Binary,
            fin_sent: false,
        }
    }
}

/// The WebSocket state of one shard.
pub(crate) struct WsShard {
    /// Connections with a message half read.
    conns: HashMap<Id, EchoConn>,
    /// Where a piece's payload is unmasked before it is echoed.
    scratch: Vec<u8>,
    config: DecoderConfig,
    upgrade_required: Rendered,
    method_not_allowed: Rendered,
    bad_request: Rendered,
}

impl WsShard {
    pub(crate) fn new() -> WsShard {
        WsShard {
            conns: HashMap::new(),
            scratch: Vec::new(),
            config: DecoderConfig::default(),
            upgrade_required: Rendered::with_headers(
                426,
                &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
                b"Upgrade Required: this is a WebSocket endpoint\n".to_vec(),
            ),
            method_not_allowed: Rendered::with_headers(
                405,
                &[("Allow", "GET")],
                b"Method Not Allowed\n".to_vec(),
            ),
            bad_request: Rendered::text(400, "Bad Request: invalid WebSocket handshake\n"),
        }
    }
}

impl HttpService {
    /// A request on a `websocket = "echo"` route: the upgrade accepted, or refused and closed.
    /// Returns whether the connection is now a WebSocket.
    pub(crate) fn websocket_upgrade(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
    ) -> bool {
        match handshake::accept(head) {
            Ok(accept) => {
                handshake::write_accept(cx.output(), &accept);
                self.stats.response(101);
                cx.take_busy();
                conn.phase = Phase::WebSocket;
                cx.set_timer(self.timeouts(conn).tunnel);
                true
            }
            Err(e) => {
                let page = match e {
                    HandshakeError::NotUpgrade | HandshakeError::Version => {
                        &self.ws.upgrade_required
                    }
                    HandshakeError::NotGet => &self.ws.method_not_allowed,
                    _ => &self.ws.bad_request,
                };
                debug_assert_eq!(page.status, e.status());
                let date = self.date.get(cx.now());
                page.write(
                    cx.output(),
                    date,
                    Persist::Close,
                    head.method != coreplex_protocol::Method::Head,
                );
                self.stats.response(page.status);
                conn.phase = Phase::Closing;
                cx.take_busy();
                cx.set_timer(self.timeouts(conn).client);
                cx.close_after_flush(CloseReason::ProtocolError);
                false
            }
        }
    }

    /// Frames from a WebSocket client: echoes, answers and closes; returns the bytes consumed.
    pub(crate) fn websocket_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        input: &[u8],
    ) -> usize {
        let id = cx.id();
        let mut st = self.ws.conns.remove(&id).unwrap_or_else(EchoConn::new);
        let mut pos = 0;
        loop {
            // Reading pauses only between messages: a client may send a whole message before it
            // reads (most do), so pausing inside one would stall both ends. Unsent output is
            // thus bounded by the bound plus one message (`max_message`).
            if cx.pending_output() > MAX_PENDING_OUTPUT && st.decoder.is_idle() {
                cx.pause_input();
                break;
            }
            let scratch = &mut self.ws.scratch;
            scratch.clear();
            let d = match st.decoder.decode(&self.ws.config, &input[pos..], scratch) {
                Ok(d) => d,
                Err(e) => {
                    self.websocket_close(
                        cx,
                        conn,
                        Some(e.close_code()),
                        e.label(),
                        CloseReason::ProtocolError,
                    );
                    return input.len();
                }
            };
            pos += d.consumed;
            let out = cx.output();
            match d.event {
                None if d.consumed == 0 => break,
                None => {}
                Some(Event::DataFrame { opcode, .. }) if opcode != Opcode::Continuation => {
                    st.next = opcode;
                    st.fin_sent = false;
                }
                Some(Event::DataFrame { .. }) => {}
                Some(Event::Data { last, .. }) => {
                    write_frame(out, last, st.next, scratch, None);
                    st.next = Opcode::Continuation;
                    st.fin_sent = last;
                }
                Some(Event::MessageEnd) if !st.fin_sent => {
                    write_frame(out, true, st.next, &[], None)
                }
                Some(Event::MessageEnd) => {}
                Some(Event::Ping(p)) => write_frame(out, true, Opcode::Pong, p.as_bytes(), None),
                Some(Event::Pong(_)) => {}
                Some(Event::Close(c)) => {
                    self.websocket_close(cx, conn, c.code, "", CloseReason::Done);
                    return input.len();
                }
            }
        }
        if !st.decoder.is_idle() {
            self.ws.conns.insert(id, st);
        }
        cx.set_timer(self.timeouts(conn).tunnel);
        pos
    }

    /// Sends a close frame (`code` none: an empty one) and closes once it is sent.
    fn websocket_close(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        code: Option<u16>,
        reason: &str,
        why: CloseReason,
    ) {
        write_close(cx.output(), code, reason, None);
        self.ws.conns.remove(&cx.id());
        conn.phase = Phase::Closing;
        cx.set_timer(self.timeouts(conn).client);
        cx.close_after_flush(why);
    }

    /// `timeouts.tunnel` passed without a frame: 1001 and close.
    pub(crate) fn websocket_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        self.websocket_close(
            cx,
            conn,
            Some(code::GOING_AWAY),
            "idle",
            CloseReason::ClientTimeout,
        );
    }

    /// The shard stops: 1001 and close.
    pub(crate) fn websocket_shutdown(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        self.websocket_close(
            cx,
            conn,
            Some(code::GOING_AWAY),
            "shutting down",
            CloseReason::Shutdown,
        );
    }

    /// A WebSocket connection closed, however it ended.
    pub(crate) fn websocket_closed(&mut self, id: Id) {
        self.ws.conns.remove(&id);
    }
}

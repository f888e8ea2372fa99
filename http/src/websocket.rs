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
use crate::stats::WsStats;
use crate::ws_deflate::{self, DeflateConn, Deflaters, InflateError, Inflaters};
use coreplex_engine::{CloseReason, Id};
use coreplex_protocol::h1::RequestHead;
use coreplex_protocol::ws::close::code;
use coreplex_protocol::ws::deflate::{self, DeflateConfig};
use coreplex_protocol::ws::encode::{write_close, write_frame, write_header};
use coreplex_protocol::ws::{
    handshake, Decoder, DecoderConfig, Event, HandshakeError, Opcode, Role, Utf8Stream,
};
use flate2::{Compress, Decompress};
use std::collections::HashMap;

/// One direction's state while a message is half read: how it is decoded, and how it goes on
/// (echoed, or forwarded by `ws_proxy`).
pub(crate) struct Leg {
    pub(crate) decoder: Decoder,
    /// The opcode of the next echoed frame: the message's own for its first, then continuation.
    pub(crate) next: Opcode,
    /// The echo already sent the message's final frame.
    pub(crate) fin_sent: bool,
    /// The message is compressed (RSV1): its decompressor, lent from the shard's pool.
    pub(crate) inflater: Option<Decompress>,
    /// A compressed text message's UTF-8, checked as it is inflated.
    pub(crate) utf8: Option<Utf8Stream>,
    /// Bytes inflated so far.
    pub(crate) inflated: u64,
    /// The compressor of the message sent on (with its window bits and level), lent for its
    /// length.
    pub(crate) deflater: Option<(u8, Compress)>,
}

impl Leg {
    pub(crate) fn new(deflate: bool) -> Leg {
        Leg {
            decoder: Decoder::new(deflate),
            next: Opcode::Binary,
            fin_sent: false,
            inflater: None,
            utf8: None,
            inflated: 0,
            deflater: None,
        }
    }
}

/// Why a message fails the connection: the close code and its reason.
pub(crate) type Failure = (u16, &'static str);

/// What [`forward_piece`] wrote: frames, and whether they ended the message.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sent {
    pub frames: u64,
    pub message_done: bool,
}

/// A listener's WebSocket settings, as the codec takes them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WsListener {
    pub(crate) decoder: DecoderConfig,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) ping_interval: Option<std::time::Duration>,
    /// Messages shorter than this go to clients uncompressed (proxied routes).
    pub(crate) compression_threshold: u64,
    /// zlib level of messages compressed for clients.
    pub(crate) compression_level: u8,
    /// Data messages a client may send per second.
    pub(crate) max_message_rate: Option<u32>,
}

impl WsListener {
    pub(crate) fn new(w: &crate::runtime::WebSocket) -> WsListener {
        WsListener {
            decoder: DecoderConfig {
                role: Role::Server,
                max_frame: w.max_frame,
                max_message: w.max_message,
            },
            deflate: w.deflate,
            ping_interval: w.ping_interval,
            compression_threshold: w.compression_threshold,
            compression_level: w.compression_level,
            max_message_rate: w.max_message_rate,
        }
    }
}

/// The WebSocket state of one shard.
pub(crate) struct WsShard {
    /// Connections with a message half read (by the connection it arrives on).
    pub(crate) conns: HashMap<Id, Leg>,
    /// Where a piece's payload is unmasked before it is echoed.
    pub(crate) scratch: Vec<u8>,
    upgrade_required: Rendered,
    method_not_allowed: Rendered,
    bad_request: Rendered,
    /// Client connections that negotiated permessage-deflate: what was agreed, the client's
    /// window.
    pub(crate) deflate: HashMap<Id, DeflateConn>,
    pub(crate) inflaters: Inflaters,
    pub(crate) deflaters: Deflaters,
    /// Where a compressed piece is inflated before it is echoed.
    plain: Vec<u8>,
    /// Where the echo of a compressed piece is compressed again.
    packed: Vec<u8>,
    /// Proxied WebSockets (`ws_proxy`): the client listener of each backend end.
    pub(crate) proxied: HashMap<Id, u8>,
    /// Proxied WebSocket ends that have been sent a close frame (`ws_proxy`).
    pub(crate) closing: std::collections::HashSet<Id>,
    /// Masking keys for frames to backends.
    pub(crate) masks: crate::ws_proxy::MaskKeys,
    /// Clients with a message rate limit that sent a message this second: the second and the
    /// count (swept once a second, so a silent connection leaves nothing here).
    rates: HashMap<Id, (u64, u32)>,
    /// The second `rates` was last swept.
    rate_swept: u64,
}

/// What a shard's work buffers keep between calls: one piece inflated from a compression bomb
/// may have grown them to the message limit, and that must not stay with the shard.
const SCRATCH_KEEP: usize = 256 * 1024;

impl WsShard {
    /// Counts a message from client `id` in second `now_s`; returns whether it is beyond
    /// `limit` messages in that second.
    pub(crate) fn over_rate(&mut self, id: Id, now_s: u64, limit: u32) -> bool {
        if now_s != self.rate_swept {
            self.rates.retain(|_, (s, _)| *s == now_s);
            self.rate_swept = now_s;
        }
        let e = self.rates.entry(id).or_insert((now_s, 0));
        if e.0 != now_s {
            *e = (now_s, 0);
        }
        e.1 += 1;
        e.1 > limit
    }

    /// Forgets a closed connection's rate count.
    pub(crate) fn forget_rate(&mut self, id: Id) {
        self.rates.remove(&id);
    }

    /// Gives back work buffers that grew past [`SCRATCH_KEEP`].
    pub(crate) fn trim(&mut self) {
        for buf in [&mut self.scratch, &mut self.plain, &mut self.packed] {
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
        }
    }

    pub(crate) fn new() -> WsShard {
        WsShard {
            conns: HashMap::new(),
            scratch: Vec::new(),
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
            deflate: HashMap::new(),
            inflaters: Inflaters::default(),
            deflaters: Deflaters::default(),
            plain: Vec::new(),
            packed: Vec::new(),
            proxied: HashMap::new(),
            closing: std::collections::HashSet::new(),
            masks: crate::ws_proxy::MaskKeys::new(),
            rates: HashMap::new(),
            rate_swept: 0,
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
                let offers = head
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                    .map(|h| h.value);
                let listener = self.listeners[conn.listener as usize].websocket;
                let agreed = listener
                    .deflate
                    .and_then(|config| deflate::negotiate(offers, &config));
                let id = cx.id();
                let out = cx.output();
                handshake::write_accept_head(out, &accept);
                if let Some(a) = &agreed {
                    deflate::write_response(out, a);
                    self.ws.deflate.insert(id, DeflateConn::new(*a));
                }
                out.extend_from_slice(b"\r\n");
                self.stats.response(101);
                let started = cx.busy_ref().map_or(cx.now(), |r| r.started);
                self.log_response(cx, conn, 101, started, 0, *b"--");
                self.stats.ws.upgrades += 1;
                self.stats.ws.current += 1;
                self.stats.ws.deflate += u64::from(agreed.is_some());
                cx.take_busy();
                conn.phase = Phase::WebSocket;
                cx.set_timer(self.websocket_silence(conn));
                true
            }
            Err(e) => {
                self.websocket_refuse(cx, conn, head, e);
                false
            }
        }
    }

    /// Refuses an upgrade request with its status (426, 405 or 400) and closes.
    pub(crate) fn websocket_refuse(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
        e: HandshakeError,
    ) {
        let page = match e {
            HandshakeError::NotUpgrade | HandshakeError::Version => &self.ws.upgrade_required,
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
        self.stats.ws.refused += 1;
        conn.phase = Phase::Closing;
        cx.take_busy();
        cx.set_timer(self.timeouts(conn).client);
        cx.close_after_flush(CloseReason::ProtocolError);
    }

    /// Frames from a WebSocket client: echoes, answers and closes; returns the bytes consumed.
    pub(crate) fn websocket_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        input: &[u8],
    ) -> usize {
        let id = cx.id();
        let config = self.listeners[conn.listener as usize].websocket.decoder;
        let level = self.listeners[conn.listener as usize]
            .websocket
            .compression_level;
        let rate = self.listeners[conn.listener as usize]
            .websocket
            .max_message_rate;
        let now_s = cx.now().saturating_duration_since(self.epoch).as_secs();
        let deflate = self.ws.deflate.contains_key(&id);
        let mut st = self
            .ws
            .conns
            .remove(&id)
            .unwrap_or_else(|| Leg::new(deflate));
        let mut pos = 0;
        let failure = loop {
            // Reading pauses only between messages: a client may send a whole message before it
            // reads (most do), so pausing inside one would stall both ends. Unsent output is
            // thus bounded by the bound plus one message (`max_message`).
            if cx.pending_output() > MAX_PENDING_OUTPUT && st.decoder.is_idle() {
                cx.pause_input();
                break None;
            }
            let ws = &mut self.ws;
            let stats = &mut self.stats.ws;
            ws.scratch.clear();
            let d = match st.decoder.decode(&config, &input[pos..], &mut ws.scratch) {
                Ok(d) => d,
                Err(e) => break Some((e.close_code(), e.label())),
            };
            pos += d.consumed;
            let out = cx.output();
            match d.event {
                None if d.consumed == 0 => break None,
                None => {}
                Some(Event::DataFrame { opcode, rsv1, .. }) if opcode != Opcode::Continuation => {
                    stats.frames_in += 1;
                    stats.messages_in += 1;
                    if rate.is_some_and(|r| ws.over_rate(id, now_s, r)) {
                        stats.rate_limited += 1;
                        break Some((code::POLICY_VIOLATION, "message_rate_limit"));
                    }
                    st.next = opcode;
                    st.fin_sent = false;
                    if let (true, Some(c)) = (rsv1, ws.deflate.get(&id)) {
                        st.inflater = Some(ws.inflaters.lend(&c.window));
                        st.deflater =
                            Some(ws.deflaters.lend(c.agreed.server_max_window_bits, level));
                        st.utf8 = (opcode == Opcode::Text).then(Utf8Stream::default);
                        st.inflated = 0;
                    }
                }
                Some(Event::DataFrame { .. }) => stats.frames_in += 1,
                Some(Event::Data { last, .. }) => {
                    match forward_piece(ws, stats, id, &mut st, last, config.max_message, out, None)
                    {
                        Ok(sent) => stats.count_out(sent),
                        Err(f) => break Some(f),
                    }
                }
                // The final frame was empty (a compressed message may still have its tail to
                // inflate).
                Some(Event::MessageEnd) if !st.fin_sent => {
                    ws.scratch.clear();
                    match forward_piece(ws, stats, id, &mut st, true, config.max_message, out, None)
                    {
                        Ok(sent) => stats.count_out(sent),
                        Err(f) => break Some(f),
                    }
                }
                Some(Event::MessageEnd) => {}
                Some(Event::Ping(p)) => {
                    stats.frames_in += 1;
                    stats.pings_in += 1;
                    write_frame(out, true, Opcode::Pong, p.as_bytes(), None);
                    stats.frames_out += 1;
                }
                Some(Event::Pong(_)) => stats.frames_in += 1,
                Some(Event::Close(c)) => {
                    stats.frames_in += 1;
                    stats.closes_in[WsStats::close_slot(c.code)] += 1;
                    self.release(&mut st);
                    self.websocket_close(cx, conn, c.code, "", CloseReason::Done);
                    return input.len();
                }
            }
        };
        if let Some((code, reason)) = failure {
            self.release(&mut st);
            self.websocket_close(cx, conn, Some(code), reason, CloseReason::ProtocolError);
            return input.len();
        }
        if !st.decoder.is_idle() {
            self.ws.conns.insert(id, st);
        }
        self.ws.trim();
        if pos > 0 {
            // Any frame (a pong among them) answers an outstanding ping.
            conn.set_ping_out(false);
        }
        cx.set_timer(self.websocket_silence(conn));
        pos
    }

    /// How long a WebSocket may stay silent before the next step: a ping, or (after an
    /// unanswered one, or without pings) the close.
    pub(crate) fn websocket_silence(&self, conn: &HttpConn) -> std::time::Duration {
        let listener = &self.listeners[conn.listener as usize];
        listener
            .websocket
            .ping_interval
            .unwrap_or(listener.timeouts.tunnel)
    }

    /// Gives a half-read message's decompressor and compressor back.
    pub(crate) fn release(&mut self, st: &mut Leg) {
        release(&mut self.ws, st);
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
        self.stats.ws.frames_out += 1;
        self.stats.ws.closes_out[WsStats::close_slot(code)] += 1;
        self.stats.ws.current -= 1;
        if let Some(mut st) = self.ws.conns.remove(&cx.id()) {
            self.release(&mut st);
        }
        self.ws.deflate.remove(&cx.id());
        self.ws.forget_rate(cx.id());
        self.ws.trim();
        conn.phase = Phase::Closing;
        cx.set_timer(self.timeouts(conn).client);
        cx.close_after_flush(why);
    }

    /// The WebSocket was silent: with pings, a ping (or, if the last one is unanswered, 1001
    /// and close); without, `timeouts.tunnel` passed: 1001 and close.
    pub(crate) fn websocket_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        let Some(reason) = self.websocket_silent(cx, conn) else {
            return;
        };
        self.websocket_close(
            cx,
            conn,
            Some(code::GOING_AWAY),
            reason,
            CloseReason::ClientTimeout,
        );
    }

    /// A client's silence ran out: with pings and none outstanding, a ping is sent (`None`);
    /// else the reason to close with 1001 (the ping went unanswered, or idle without pings).
    pub(crate) fn websocket_silent(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
    ) -> Option<&'static str> {
        let pings = self.listeners[conn.listener as usize]
            .websocket
            .ping_interval
            .is_some();
        if pings && !conn.ping_out() {
            write_frame(cx.output(), true, Opcode::Ping, b"coreplex", None);
            self.stats.ws.frames_out += 1;
            self.stats.ws.pings_sent += 1;
            conn.set_ping_out(true);
            cx.set_timer(self.websocket_silence(conn));
            return None;
        }
        Some(if pings {
            self.stats.ws.pings_unanswered += 1;
            "ping unanswered"
        } else {
            "idle"
        })
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

    /// A WebSocket connection closed without a close frame of ours (the client went).
    pub(crate) fn websocket_closed(&mut self, id: Id) {
        self.stats.ws.current -= 1;
        if let Some(mut st) = self.ws.conns.remove(&id) {
            self.release(&mut st);
        }
        self.ws.deflate.remove(&id);
        self.ws.forget_rate(id);
    }
}

/// Gives a message's decompressor and compressor back to the shard.
fn release(ws: &mut WsShard, st: &mut Leg) {
    if let Some(d) = st.inflater.take() {
        ws.inflaters.give_back(d);
    }
    if let Some(c) = st.deflater.take() {
        ws.deflaters.give_back(c);
    }
}

/// Sends the piece of a message in `ws.scratch` (`last`: its final one) on as the next frame
/// of the message written to `out`, masked with `mask`: inflated first when the message arrived
/// compressed (its text checked, the context of the client `window_of` remembered), compressed
/// when the leg has a compressor. An empty piece of a compressed message writes nothing unless
/// it is the last.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_piece(
    ws: &mut WsShard,
    stats: &mut WsStats,
    window_of: Id,
    st: &mut Leg,
    last: bool,
    max_message: u64,
    out: &mut Vec<u8>,
    mask: Option<[u8; 4]>,
) -> Result<Sent, Failure> {
    let inflated = st.inflater.is_some();
    if let Some(d) = st.inflater.as_mut() {
        ws.plain.clear();
        let budget = max_message - st.inflated.min(max_message);
        ws_deflate::inflate(d, &ws.scratch, last, &mut ws.plain, budget).map_err(|e| match e {
            InflateError::Corrupt => (code::INVALID_PAYLOAD, "invalid_deflate_data"),
            InflateError::TooBig => (code::TOO_BIG, "message_too_big"),
        })?;
        st.inflated += ws.plain.len() as u64;
        stats.deflated_in += ws.scratch.len() as u64;
        stats.inflated_in += ws.plain.len() as u64;
        if let Some(utf8) = &mut st.utf8 {
            let checked = utf8
                .feed(&ws.plain)
                .and_then(|()| if last { utf8.finish() } else { Ok(()) });
            checked.map_err(|_| (code::INVALID_PAYLOAD, "invalid_utf8"))?;
        }
        if let Some(c) = ws.deflate.get_mut(&window_of) {
            c.remember(&ws.plain);
        }
    }
    let plain: &[u8] = if inflated { &ws.plain } else { &ws.scratch };
    let mut sent = Sent::default();
    match st.deflater.as_mut() {
        Some((_, c)) => {
            ws.packed.clear();
            ws_deflate::deflate(c, plain, last, &mut ws.packed);
            stats.plain_out += plain.len() as u64;
            if !ws.packed.is_empty() || last {
                // RSV1 on the message's first frame only.
                let first = st.next != Opcode::Continuation;
                write_header(out, last, first, st.next, mask, ws.packed.len() as u64);
                match mask {
                    Some(key) => {
                        coreplex_protocol::ws::mask::extend_masked(out, &ws.packed, key, 0)
                    }
                    None => out.extend_from_slice(&ws.packed),
                }
                stats.deflated_out += ws.packed.len() as u64;
                sent.frames = 1;
            }
        }
        None => {
            write_frame(out, last, st.next, plain, mask);
            sent.frames = 1;
        }
    }
    if sent.frames > 0 {
        st.next = Opcode::Continuation;
        st.fin_sent = last;
        sent.message_done = last;
    }
    if last {
        release(ws, st);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_buffers_grown_by_a_bomb_do_not_stay_with_the_shard() {
        let mut ws = WsShard::new();
        ws.plain.reserve(16 << 20);
        ws.packed.reserve(SCRATCH_KEEP);
        ws.scratch.reserve(64 * 1024);
        ws.trim();
        assert_eq!(ws.plain.capacity(), 0);
        assert!(ws.packed.capacity() >= SCRATCH_KEEP && ws.scratch.capacity() >= 64 * 1024);
    }
}

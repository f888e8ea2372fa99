//! WebSocket-aware routes (`websocket = "terminate"` with a `backend`): the client's WebSocket
//! ends here and its messages go on over a WebSocket of ours to the backend.
//!
//! The upgrade is checked as for an echo endpoint (426, 405, 400 refused here) and
//! permessage-deflate negotiated with the client; the request then goes to the backend as a
//! tunnel request (`proxy::tunnel`) without `Sec-WebSocket-Extensions`, so the backend speaks
//! uncompressed. Its 101 must carry the accept value of the client's key and no extension (a
//! 502 otherwise); the client's 101 gets the backend's fields and the agreed extension. A
//! refusal is passed on as any response.
//!
//! ```text
//!  client ──frames (masked, maybe compressed)──▶ client leg: unmask, inflate, check UTF-8 and
//!                                                limits, answer pings ──masked frames──▶ backend
//!  client ◀──frames (compressed above compression_threshold)── backend leg: check, answer
//!                                                pings ◀──frames── backend
//!  close frame from one side ──▶ passed to the other; its answer passed back ──▶ both closed
//!  broken rule: its code to the side that broke it, 1001 (client) or 1014 (backend) to the
//!  other; silence: pings to the client (ping_interval), 1001 both ways (timeouts.tunnel or an
//!  unanswered ping); a FIN without a close frame: 1001 to the other side
//! ```
//!
//! Messages stream piece by piece in both directions, never buffered whole; a leg stops reading
//! between messages while the other side has more than the output bound unsent. Between
//! messages the pair keeps nothing but the engine's pair entry, the client's permessage-deflate
//! agreement (and window, when the client keeps context) and the backend end's listener index.
//! The client's silence governs the pair (the backend end has no timer: TCP keepalive finds a
//! vanished backend).

use crate::proxy::tunnel::TunnelAsk;
use crate::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use crate::stats::WsStats;
use crate::websocket::{forward_piece, Failure, Leg, Sent};
use crate::ws_deflate::DeflateConn;
use coreplex_engine::{CloseReason, Id};
use coreplex_protocol::h1::RequestHead;
use coreplex_protocol::ws::close::code;
use coreplex_protocol::ws::deflate::{self, Agreed};
use coreplex_protocol::ws::encode::{write_close, write_frame};
use coreplex_protocol::ws::{handshake, DecoderConfig, Event, Opcode, Role, Utf8Stream};
use std::hash::{BuildHasher, Hasher};

/// A WebSocket-aware route's upgrade, carried by its exchange: what the client agreed to, the
/// accept value the backend's 101 must carry, and the client's listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WsAsk {
    pub agreed: Option<Agreed>,
    pub accept: [u8; 28],
    pub listener: u8,
}

/// Masking keys for frames to backends (RFC 6455 section 5.3): a SplitMix64 sequence seeded
/// from the process's random hasher keys. The masks protect intermediaries from a client that
/// picks its own payloads; the backend side is the proxy's own, so keys that are unpredictable
/// to the peers (not cryptographically strong) are enough.
pub(crate) struct MaskKeys(u64);

impl MaskKeys {
    pub(crate) fn new() -> MaskKeys {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5EED);
        MaskKeys(h.finish())
    }

    pub(crate) fn next(&mut self) -> [u8; 4] {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) as u32).to_ne_bytes()
    }
}

/// What one pass over a leg's input ended with.
enum Outcome {
    /// Read what there was (or paused between messages).
    More,
    /// This side's close frame went on to the other.
    CloseSent,
    /// This side broke a rule.
    Broken(Failure),
}

impl HttpService {
    /// An upgrade request on a WebSocket-aware route to backend `b`: checked and negotiated
    /// here, then asked of the backend without extensions.
    pub(crate) fn ws_proxy_request(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        head: &RequestHead<'_, '_>,
        b: usize,
        started: std::time::Instant,
    ) -> Option<usize> {
        let accept = match handshake::accept(head) {
            Ok(a) => a,
            Err(e) => {
                self.websocket_refuse(cx, conn, head, e);
                return None;
            }
        };
        let listener = self.listeners[conn.listener as usize].websocket;
        let offers = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|h| h.value);
        let agreed = listener
            .deflate
            .and_then(|config| deflate::negotiate(offers, &config));
        // The backend speaks uncompressed: the client's offers stay here.
        let fields: Vec<httparse::Header<'_>> = head
            .headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .copied()
            .collect();
        let mut upstream = *head;
        upstream.headers = &fields;
        let ask = TunnelAsk {
            protocols: b"websocket",
            websocket: true,
        };
        let ws = WsAsk {
            agreed,
            accept,
            listener: conn.listener,
        };
        self.relay_request(cx, conn, &upstream, b, started, Some(ask), Some(ws))
    }

    /// The backend switched protocols for a WebSocket-aware route: the client connection
    /// becomes the pair's client leg.
    pub(crate) fn ws_proxy_client_start(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        backend: Id,
        ws: WsAsk,
    ) {
        conn.phase = Phase::TunnelClient;
        conn.set_ws_aware();
        conn.set_served();
        cx.take_busy();
        let s = &mut self.stats.ws;
        s.upgrades += 1;
        s.current += 1;
        if let Some(a) = ws.agreed {
            s.deflate += 1;
            self.ws.deflate.insert(cx.id(), DeflateConn::new(a));
        }
        cx.pair(backend);
        cx.set_timer(self.websocket_silence(conn));
    }

    /// The backend's 101 for a WebSocket-aware route: this connection becomes the backend leg
    /// (for the client on `listener`); it has no timer of its own.
    pub(crate) fn ws_proxy_backend_start(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        listener: u8,
    ) {
        conn.set_ws_aware();
        self.ws.proxied.insert(cx.id(), listener);
        cx.clear_timer();
    }

    /// Frames from either side of a proxied WebSocket.
    pub(crate) fn ws_proxy_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        input: &[u8],
    ) -> usize {
        if cx.is_closing() || conn.close_in() {
            return input.len(); // after its close frame: discarded
        }
        if cx.peer().is_none() {
            // Not paired yet: the frames wait.
            cx.pause_input();
            return 0;
        }
        let from_client = !cx.is_outbound();
        let listener = if from_client {
            Some(conn.listener)
        } else {
            self.ws.proxied.get(&cx.id()).copied()
        };
        let Some(listener) = listener else {
            cx.close(CloseReason::ProtocolError);
            return input.len();
        };
        let w = self.listeners[usize::from(listener)].websocket;
        let config = DecoderConfig {
            role: if from_client {
                Role::Server
            } else {
                Role::Client
            },
            ..w.decoder
        };
        let (pos, outcome) = self.ws_proxy_pump(cx, &config, &w, input);
        if from_client && pos > 0 {
            // Any frame (a pong among them) answers an outstanding ping.
            conn.set_ping_out(false);
            cx.set_timer(self.websocket_silence(conn));
        }
        match outcome {
            Outcome::More => pos,
            Outcome::CloseSent => {
                conn.set_close_in();
                let peer = cx.peer().expect("checked");
                self.ws.closing.insert(peer);
                if self.ws.closing.contains(&cx.id()) {
                    // This side was sent the other's close and answered it: both are done.
                    self.ws_proxy_end(cx, conn, CloseReason::Done);
                }
                input.len()
            }
            Outcome::Broken((c, reason)) => {
                // The rule's code to the side that broke it, and a close to the other.
                let mask = (!from_client).then(|| self.ws.masks.next());
                write_close(cx.output(), Some(c), reason, mask);
                let (other, why, other_mask) = if from_client {
                    self.stats.ws.frames_out += 1;
                    self.stats.ws.closes_out[WsStats::close_slot(Some(c))] += 1;
                    let m = Some(self.ws.masks.next());
                    (code::GOING_AWAY, "client broke the protocol", m)
                } else {
                    self.note_close_to_client(code::BAD_GATEWAY);
                    (code::BAD_GATEWAY, "backend broke the protocol", None)
                };
                if let Some(out) = cx.peer_output() {
                    write_close(out, Some(other), why, other_mask);
                }
                self.ws_proxy_end(cx, conn, CloseReason::ProtocolError);
                input.len()
            }
        }
    }

    /// Decodes what `input` holds and sends it on; returns the bytes consumed and how it ended.
    fn ws_proxy_pump(
        &mut self,
        cx: &mut Cx<'_>,
        config: &DecoderConfig,
        w: &crate::websocket::WsListener,
        input: &[u8],
    ) -> (usize, Outcome) {
        let (threshold, level) = (w.compression_threshold, w.compression_level);
        let rate = w.max_message_rate.filter(|_| config.role == Role::Server);
        let now_s = cx.now().saturating_duration_since(self.epoch).as_secs();
        let id = cx.id();
        let from_client = config.role == Role::Server;
        let client = if from_client {
            id
        } else {
            cx.peer().expect("paired")
        };
        let inflate = from_client && self.ws.deflate.contains_key(&id);
        let mut st = self
            .ws
            .conns
            .remove(&id)
            .unwrap_or_else(|| Leg::new(inflate));
        let mut pos = 0;
        let outcome = loop {
            if cx.peer_pending_output() > MAX_PENDING_OUTPUT && st.decoder.is_idle() {
                cx.pause_input();
                break Outcome::More;
            }
            let ws = &mut self.ws;
            let stats = &mut self.stats.ws;
            ws.scratch.clear();
            let d = match st.decoder.decode(config, &input[pos..], &mut ws.scratch) {
                Ok(d) => d,
                Err(e) => break Outcome::Broken((e.close_code(), e.label())),
            };
            pos += d.consumed;
            // Frames to the backend are masked with a fresh key each; to the client, never.
            let mask = from_client.then(|| ws.masks.next());
            match d.event {
                None if d.consumed == 0 => break Outcome::More,
                None => {}
                Some(Event::DataFrame {
                    opcode,
                    rsv1,
                    fin,
                    len,
                }) if opcode != Opcode::Continuation => {
                    if from_client {
                        stats.frames_in += 1;
                        stats.messages_in += 1;
                    }
                    if rate.is_some_and(|r| ws.over_rate(id, now_s, r)) {
                        stats.rate_limited += 1;
                        break Outcome::Broken((code::POLICY_VIOLATION, "message_rate_limit"));
                    }
                    st.next = opcode;
                    st.fin_sent = false;
                    if from_client && rsv1 {
                        if let Some(c) = ws.deflate.get(&id) {
                            st.inflater = Some(ws.inflaters.lend(&c.window));
                            st.utf8 = (opcode == Opcode::Text).then(Utf8Stream::default);
                            st.inflated = 0;
                        }
                    }
                    let small = fin && len < threshold;
                    if !from_client && !small {
                        if let Some(c) = ws.deflate.get(&client) {
                            st.deflater =
                                Some(ws.deflaters.lend(c.agreed.server_max_window_bits, level));
                        }
                    }
                }
                Some(Event::DataFrame { .. }) => stats.frames_in += u64::from(from_client),
                Some(Event::Data { last, .. }) => {
                    let out = cx.peer_output().expect("paired");
                    match forward_piece(
                        ws,
                        stats,
                        client,
                        &mut st,
                        last,
                        config.max_message,
                        out,
                        mask,
                    ) {
                        Ok(sent) => count(stats, from_client, sent),
                        Err(f) => break Outcome::Broken(f),
                    }
                }
                Some(Event::MessageEnd) if !st.fin_sent => {
                    ws.scratch.clear();
                    let out = cx.peer_output().expect("paired");
                    match forward_piece(
                        ws,
                        stats,
                        client,
                        &mut st,
                        true,
                        config.max_message,
                        out,
                        mask,
                    ) {
                        Ok(sent) => count(stats, from_client, sent),
                        Err(f) => break Outcome::Broken(f),
                    }
                }
                Some(Event::MessageEnd) => {}
                Some(Event::Ping(p)) => {
                    // Answered here, on each side: a pong back where the ping came from.
                    let back = (!from_client).then(|| ws.masks.next());
                    write_frame(cx.output(), true, Opcode::Pong, p.as_bytes(), back);
                    if from_client {
                        stats.frames_in += 1;
                        stats.pings_in += 1;
                        stats.frames_out += 1;
                    }
                }
                Some(Event::Pong(_)) => stats.frames_in += u64::from(from_client),
                Some(Event::Close(c)) => {
                    let out = cx.peer_output().expect("paired");
                    write_close(out, c.code, c.reason(), mask);
                    if from_client {
                        stats.frames_in += 1;
                        stats.closes_in[WsStats::close_slot(c.code)] += 1;
                    } else {
                        stats.frames_out += 1;
                        stats.closes_out[WsStats::close_slot(c.code)] += 1;
                    }
                    self.release(&mut st);
                    self.ws.trim();
                    return (input.len(), Outcome::CloseSent);
                }
            }
        };
        if matches!(outcome, Outcome::Broken(_)) {
            self.release(&mut st);
        } else if !st.decoder.is_idle() {
            self.ws.conns.insert(id, st);
        }
        self.ws.trim();
        (pos, outcome)
    }

    /// Counts a close frame sent to the client.
    fn note_close_to_client(&mut self, c: u16) {
        self.stats.ws.frames_out += 1;
        self.stats.ws.closes_out[WsStats::close_slot(Some(c))] += 1;
    }

    /// Ends the pair: both ends close once what they hold is sent (each has been sent its
    /// close frame).
    fn ws_proxy_end(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn, why: CloseReason) {
        self.ws.closing.insert(cx.id());
        if let Some(peer) = cx.peer() {
            self.ws.closing.insert(peer);
        }
        cx.set_timer(self.ws_proxy_fin_timeout(cx, conn));
        cx.close_peer(why, true);
        cx.close_after_flush(why);
    }

    /// How long an end that is closing waits for its peer to read the last frames: the
    /// listener's `client_fin` for the client end, the backend's `server_fin` for the backend
    /// end (whose `listener` field is the backend's index).
    fn ws_proxy_fin_timeout(&self, cx: &Cx<'_>, conn: &HttpConn) -> std::time::Duration {
        if cx.is_outbound() {
            self.proxy.backends[conn.listener as usize]
                .timeouts()
                .server_fin
        } else {
            self.timeouts(conn).client_fin
        }
    }

    /// Sends a close with `c` both ways (1001 and the like) and ends the pair.
    fn ws_proxy_close_both(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        c: u16,
        reason: &str,
        why: CloseReason,
    ) {
        let to_client_is_mine = !cx.is_outbound();
        let mask = self.ws.masks.next();
        let (mine, theirs) = if to_client_is_mine {
            (None, Some(mask))
        } else {
            (Some(mask), None)
        };
        write_close(cx.output(), Some(c), reason, mine);
        if let Some(out) = cx.peer_output() {
            write_close(out, Some(c), reason, theirs);
        }
        self.note_close_to_client(c);
        self.ws_proxy_end(cx, conn, why);
    }

    /// The client leg's timer: a ping to a silent client, or (an unanswered ping, or silence
    /// for `timeouts.tunnel` without pings) 1001 both ways. The backend leg has no timer.
    pub(crate) fn ws_proxy_timer(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() || cx.is_outbound() {
            return cx.close(CloseReason::ClientTimeout);
        }
        let Some(reason) = self.websocket_silent(cx, conn) else {
            return;
        };
        self.ws_proxy_close_both(
            cx,
            conn,
            code::GOING_AWAY,
            reason,
            CloseReason::ClientTimeout,
        );
    }

    /// One side's FIN without a close frame: 1001 to the other, and the pair ends.
    pub(crate) fn ws_proxy_peer_closed(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() {
            return;
        }
        // The other side hears 1001, unless it was sent a close already.
        let told = cx.peer().is_none_or(|p| self.ws.closing.contains(&p));
        if !told {
            let (reason, mask) = if cx.is_outbound() {
                self.note_close_to_client(code::GOING_AWAY);
                ("backend went away", None)
            } else {
                ("client went away", Some(self.ws.masks.next()))
            };
            if let Some(out) = cx.peer_output() {
                write_close(out, Some(code::GOING_AWAY), reason, mask);
            }
        }
        self.ws_proxy_end(cx, conn, CloseReason::PeerClosed);
    }

    /// The other end closed (reset, or gone without its close): a client hears 1001.
    pub(crate) fn ws_proxy_unpaired(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() {
            return;
        }
        if !cx.is_outbound() && !self.ws.closing.contains(&cx.id()) {
            write_close(
                cx.output(),
                Some(code::GOING_AWAY),
                "backend went away",
                None,
            );
            self.note_close_to_client(code::GOING_AWAY);
        }
        cx.set_timer(self.ws_proxy_fin_timeout(cx, conn));
        cx.close_after_flush(CloseReason::Done);
    }

    /// The shard stops: 1001 both ways.
    pub(crate) fn ws_proxy_shutdown(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        if cx.is_closing() || cx.is_outbound() {
            return;
        }
        self.ws_proxy_close_both(
            cx,
            conn,
            code::GOING_AWAY,
            "shutting down",
            CloseReason::Shutdown,
        );
    }

    /// One end of a proxied WebSocket closed: what the shard held for it goes.
    pub(crate) fn ws_proxy_closed(&mut self, id: Id, client: bool) {
        if client {
            self.stats.ws.current -= 1;
            self.ws.deflate.remove(&id);
            self.ws.forget_rate(id);
        } else {
            self.ws.proxied.remove(&id);
        }
        self.ws.closing.remove(&id);
        if let Some(mut st) = self.ws.conns.remove(&id) {
            self.release(&mut st);
        }
    }
}

/// Counts frames sent on: to the client when they came from the backend.
fn count(stats: &mut WsStats, from_client: bool, sent: Sent) {
    if !from_client {
        stats.count_out(sent);
    }
}

/// The client's 101 for a WebSocket-aware route: the agreed extension, after the backend's
/// fields.
pub(crate) fn write_client_extension(out: &mut Vec<u8>, ws: &WsAsk) {
    if let Some(a) = &ws.agreed {
        deflate::write_response(out, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keys_change_every_frame() {
        let mut m = MaskKeys::new();
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| m.next()).collect();
        assert!(keys.len() > 990, "{} distinct keys of 1000", keys.len());
    }
}

//! Upgrade tunnels (RFC 9110 section 7.8): an HTTP/1.1 request whose `Upgrade` lists only
//! protocols its route tunnels (the route's `upgrade`, `["websocket"]` by default) goes to an
//! HTTP/1.1 backend connection with its `Upgrade` and `Connection: upgrade`. A 101 passes back
//! to the client and the two connections become an engine pair carrying bytes both ways with
//! backpressure (the sender pauses while its peer has [`MAX_PENDING_OUTPUT`] bytes unsent).
//! Any other answer is an ordinary response: the client goes on over HTTP/1.1.
//!
//! ```text
//!  relay exchange, upgrade asked ──101──▶ backend end: TunnelBackend (input paused)
//!        │ other status: passed on          │ client writes the 101, pairs, resumes both
//!        ▼                                  ▼
//!  ordinary response                  Tunnel (both ends) ──FIN from one socket──▶ FIN to
//!                                       │                  the other (half-closed: that
//!                                       │                  end's timer is client_fin or
//!                                       │                  server_fin) ──both FINs──▶ closed
//!                                       └──timer (tunnel) / reset / close of one end──▶ both
//!                                          closed
//! ```
//!
//! Each end keeps its own inactivity timer and sees traffic both ways: its own input, and its
//! output draining (what the other end sent). The client end's timeouts are the listener's,
//! the backend end's the backend's. A tunnel's backend connection stays in use in its pool
//! until it closes: it never goes back to be reused.

use super::ProxyShard;
use crate::runtime::BackendProtocol;
use crate::service::{Cx, HttpConn, HttpService, Phase, MAX_PENDING_OUTPUT};
use coreplex_engine::{CloseReason, Id};
use coreplex_protocol::h1::{BodyKind, RequestHead, Version};

/// What an upgrade request asks to tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TunnelAsk<'h> {
    /// The request's `Upgrade` value, passed on as it is.
    pub protocols: &'h [u8],
    /// The first protocol asked for is `websocket` (counted as a WebSocket tunnel).
    pub websocket: bool,
}

/// The protocol names (without versions) of an `Upgrade` value; `None` when one is empty or
/// malformed.
fn protocol_names(value: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let ok = value.split(|&b| b == b',').all(|p| {
        let name = p
            .trim_ascii()
            .split(|&b| b == b'/')
            .next()
            .unwrap_or_default();
        !name.is_empty()
    });
    ok.then(|| {
        value.split(|&b| b == b',').map(|p| {
            p.trim_ascii()
                .split(|&b| b == b'/')
                .next()
                .unwrap_or_default()
        })
    })
}

/// The tunnel an HTTP/1.1 request to backend `b` asks for, when it may have one: it asks to
/// upgrade (RFC 9110 section 7.8: `Connection: upgrade` and one `Upgrade` field; ignored in
/// HTTP/1.0), every protocol it names is one its route tunnels (`allowed`, lowercase), it has
/// no body, and the backend can carry it: over HTTP/1.1, or for a WebSocket as an RFC 8441
/// stream (an h2-only backend gets other upgrades without the upgrade, as any request).
pub(crate) fn asked<'h>(
    head: &RequestHead<'h, '_>,
    allowed: &[String],
    proxy: &ProxyShard,
    b: usize,
) -> Option<TunnelAsk<'h>> {
    if !head.upgrade
        || allowed.is_empty()
        || head.version != Version::Http11
        || !matches!(head.body, BodyKind::None | BodyKind::Length(0))
    {
        return None;
    }
    let mut fields = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let value = fields.next()?.value;
    if fields.next().is_some() {
        return None;
    }
    let mut names = protocol_names(value)?.peekable();
    let websocket = names
        .peek()
        .is_some_and(|n| n.eq_ignore_ascii_case(b"websocket"));
    if proxy.backends[b].config.protocol == BackendProtocol::H2 && !websocket {
        return None;
    }
    names
        .all(|n| allowed.iter().any(|a| n.eq_ignore_ascii_case(a.as_bytes())))
        .then_some(TunnelAsk {
            protocols: value,
            websocket,
        })
}

impl HttpService {
    /// The backend answered an upgrade with 101: this backend connection becomes the tunnel's
    /// backend end. Its input waits (bytes behind the 101 included) until the client end pairs
    /// with it (its exchange still leads to it, so a close meanwhile is heard); its pool keeps
    /// it in use until it closes.
    pub(super) fn tunnel_backend_start(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        conn.phase = Phase::TunnelBackend;
        cx.pause_input();
        let t = self.proxy.backends[conn.listener as usize]
            .config
            .timeouts
            .tunnel;
        cx.set_timer(t);
    }

    /// The 101 is written to the client: the client connection pairs with backend connection
    /// `backend` (which resumes in `on_paired`).
    pub(super) fn tunnel_client_start(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        backend: Id,
        websocket: bool,
    ) {
        conn.phase = Phase::TunnelClient;
        conn.set_served();
        cx.take_busy();
        let t = &mut self.stats.tunnels;
        t.current += 1;
        if websocket {
            conn.set_ws_tunnel();
            t.websocket += 1;
            t.websocket_current += 1;
        } else {
            t.other += 1;
        }
        cx.pair(backend);
        cx.set_timer(self.tunnel_timeout(cx, conn));
    }

    /// The pair is in place: both ends read again (what waited is presented first).
    pub(crate) fn tunnel_paired(&mut self, cx: &mut Cx<'_>) {
        cx.resume_input();
        cx.resume_peer();
    }

    /// The inactivity timeout of a tunnel end: `tunnel`, or once its socket sent its FIN
    /// `client_fin` (client end) / `server_fin` (backend end).
    fn tunnel_timeout(&self, cx: &Cx<'_>, conn: &HttpConn) -> std::time::Duration {
        let t = if cx.is_outbound() {
            &self.proxy.backends[conn.listener as usize].config.timeouts
        } else {
            &self.listeners[conn.listener as usize].timeouts
        };
        match (conn.half_closed(), cx.is_outbound()) {
            (false, _) => t.tunnel,
            (true, false) => t.client_fin,
            (true, true) => t.server_fin,
        }
    }

    /// Bytes from one end go to the other; this end pauses while the other has too much unsent.
    pub(crate) fn tunnel_input(
        &mut self,
        cx: &mut Cx<'_>,
        conn: &mut HttpConn,
        input: &[u8],
    ) -> usize {
        let Some(out) = cx.peer_output() else {
            // Not paired yet (a backend end before the client pairs): the bytes wait.
            cx.pause_input();
            return 0;
        };
        out.extend_from_slice(input);
        if cx.peer_pending_output() > MAX_PENDING_OUTPUT {
            cx.pause_input();
        }
        cx.set_timer(self.tunnel_timeout(cx, conn));
        input.len()
    }

    /// What the other end sent went out: traffic, so the timer starts again.
    pub(crate) fn tunnel_drained(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        cx.set_timer(self.tunnel_timeout(cx, conn));
    }

    /// This end's socket sent its FIN: it goes on to the other end once what it sent is out
    /// (each connection closes once both of its directions are done).
    pub(crate) fn tunnel_peer_closed(&mut self, cx: &mut Cx<'_>, conn: &mut HttpConn) {
        conn.set_half_closed();
        if cx.peer().is_some() {
            cx.shutdown_peer_write();
            cx.set_timer(self.tunnel_timeout(cx, conn));
        } else {
            cx.close_after_flush(CloseReason::PeerClosed);
        }
    }

    /// No traffic either way for a whole timeout: both ends close.
    pub(crate) fn tunnel_timer(&mut self, cx: &mut Cx<'_>) {
        self.stats.tunnels.timeouts += 1;
        if cx.peer().is_some() {
            cx.close_peer(CloseReason::ClientTimeout, false);
        }
        cx.close(CloseReason::ClientTimeout);
    }

    /// The other end closed: this one sends what it holds and closes.
    pub(crate) fn tunnel_unpaired(&mut self, cx: &mut Cx<'_>) {
        if !cx.is_closing() {
            cx.close_after_flush(CloseReason::Done);
        }
    }

    /// A tunnel's client end closed.
    pub(crate) fn tunnel_client_closed(&mut self, conn: &HttpConn) {
        let t = &mut self.stats.tunnels;
        t.current -= 1;
        if conn.ws_tunnel() {
            t.websocket_current -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_drop_versions_and_refuse_empty_ones() {
        let names: Vec<&[u8]> = protocol_names(b"websocket, foo/2 , Bar").unwrap().collect();
        assert_eq!(names, [&b"websocket"[..], b"foo", b"Bar"]);
        assert!(protocol_names(b"websocket,").is_none());
        assert!(protocol_names(b"/1").is_none());
        assert!(protocol_names(b"").is_none());
    }
}

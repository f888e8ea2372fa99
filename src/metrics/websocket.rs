//! The WebSocket series: upgrades accepted and refused, WebSockets open by kind, messages and
//! frames by direction, pings, permessage-deflate byte counts both ways (the compression
//! ratio), close frames by direction and code; and the upgrade tunnels to backends.

use super::table::Table;
use crate::http::{TunnelStats, WsStats, WS_CLOSE_CODES};
use std::fmt::Write;

/// Appends the WebSocket series.
pub fn render(o: &mut Table, w: &WsStats, t: &TunnelStats) {
    let counter = |o: &mut Table, name: &str, help: &str, v: u64| {
        super::header(o, name, help, "counter");
        let _ = writeln!(o, "{name} {v}");
    };
    counter(
        o,
        "coreplex_websocket_upgrades_total",
        "WebSocket upgrades accepted (101).",
        w.upgrades,
    );
    counter(
        o,
        "coreplex_websocket_refused_total",
        "WebSocket upgrade requests refused (426, 405, 400).",
        w.refused,
    );
    super::header(
        o,
        "coreplex_websocket_current",
        "WebSockets open now, by kind: terminated here (echo endpoints, WebSocket-aware routes), tunnelled to a backend, or an h2 stream (RFC 8441) tunnelled to a backend.",
        "gauge",
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_current{{kind=\"terminated\"}} {}",
        w.current.max(0)
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_current{{kind=\"tunnel\"}} {}",
        t.websocket_current.max(0)
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_current{{kind=\"h2_stream\"}} {}",
        t.h2_websocket_current.max(0)
    );
    counter(
        o,
        "coreplex_websocket_deflate_total",
        "WebSocket upgrades that negotiated permessage-deflate.",
        w.deflate,
    );
    super::header(
        o,
        "coreplex_websocket_messages_total",
        "WebSocket data messages, by direction.",
        "counter",
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_messages_total{{direction=\"in\"}} {}",
        w.messages_in
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_messages_total{{direction=\"out\"}} {}",
        w.messages_out
    );
    super::header(
        o,
        "coreplex_websocket_frames_total",
        "WebSocket frames (data and control), by direction.",
        "counter",
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_frames_total{{direction=\"in\"}} {}",
        w.frames_in
    );
    let _ = writeln!(
        o,
        "coreplex_websocket_frames_total{{direction=\"out\"}} {}",
        w.frames_out
    );
    counter(
        o,
        "coreplex_websocket_pings_received_total",
        "WebSocket pings received (each answered).",
        w.pings_in,
    );
    counter(
        o,
        "coreplex_websocket_pings_sent_total",
        "WebSocket pings sent to silent clients (listener.websocket.ping_interval).",
        w.pings_sent,
    );
    counter(
        o,
        "coreplex_websocket_pings_unanswered_total",
        "WebSockets closed (1001) because a ping went unanswered.",
        w.pings_unanswered,
    );
    counter(
        o,
        "coreplex_websocket_rate_limited_total",
        "WebSockets closed with 1008 for sending beyond max_message_rate.",
        w.rate_limited,
    );
    super::header(
        o,
        "coreplex_websocket_deflate_bytes_total",
        "permessage-deflate bytes: compressed and plain, by direction (their ratio is the compression ratio).",
        "counter",
    );
    for (dir, compressed, plain) in [
        ("in", w.deflated_in, w.inflated_in),
        ("out", w.deflated_out, w.plain_out),
    ] {
        let _ = writeln!(o, "coreplex_websocket_deflate_bytes_total{{direction=\"{dir}\",form=\"compressed\"}} {compressed}");
        let _ = writeln!(
            o,
            "coreplex_websocket_deflate_bytes_total{{direction=\"{dir}\",form=\"plain\"}} {plain}"
        );
    }
    super::header(
        o,
        "coreplex_websocket_closes_total",
        "WebSocket close frames, by direction and code.",
        "counter",
    );
    for (dir, counts) in [("in", &w.closes_in), ("out", &w.closes_out)] {
        for ((_, label), n) in WS_CLOSE_CODES.iter().zip(counts.iter()) {
            let _ = writeln!(
                o,
                "coreplex_websocket_closes_total{{direction=\"{dir}\",code=\"{label}\"}} {n}"
            );
        }
    }
}

/// Appends the upgrade-tunnel series.
pub fn render_tunnels(o: &mut Table, t: &TunnelStats) {
    super::header(
        o,
        "coreplex_tunnels_total",
        "Upgrade tunnels opened to backends (101), by protocol kind.",
        "counter",
    );
    let _ = writeln!(
        o,
        "coreplex_tunnels_total{{kind=\"websocket\"}} {}",
        t.websocket
    );
    let _ = writeln!(o, "coreplex_tunnels_total{{kind=\"other\"}} {}", t.other);
    super::gauge(
        o,
        "coreplex_tunnels_current",
        "Upgrade tunnels open now.",
        t.current.max(0) as u64,
    );
    super::counter(
        o,
        "coreplex_upgrades_refused_by_backend_total",
        "Upgrade requests a backend answered without switching protocols (passed on).",
        t.refused,
    );
    super::counter(
        o,
        "coreplex_tunnels_over_h2_total",
        "HTTP/1.1 WebSocket tunnels carried as extended CONNECT streams over shared h2 backend connections.",
        t.over_h2,
    );
    super::counter(
        o,
        "coreplex_h2_tunnels_total",
        "RFC 8441 extended CONNECT streams tunnelled to a backend (got their 200).",
        t.h2_streams,
    );
    super::gauge(
        o,
        "coreplex_h2_tunnels_current",
        "RFC 8441 extended CONNECT streams open now.",
        t.h2_current.max(0) as u64,
    );
    super::counter(
        o,
        "coreplex_tunnel_timeouts_total",
        "Tunnels closed for inactivity (timeouts.tunnel, or client_fin/server_fin once half-closed).",
        t.timeouts,
    );
}

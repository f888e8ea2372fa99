//! The HTTP/2 series: connections, streams, RST_STREAM and GOAWAY by direction and code.

use crate::http::H2Stats;
use coreplex_protocol::h2::error::ErrorCode;
use std::fmt::Write;

/// Appends the HTTP/2 series.
pub fn render(o: &mut String, h: &H2Stats) {
    super::header(
        o,
        "coreplex_h2_connections_total",
        "Client connections that spoke HTTP/2 (ALPN h2 or h2c).",
        "counter",
    );
    let _ = writeln!(o, "coreplex_h2_connections_total {}", h.connections);
    super::header(
        o,
        "coreplex_h2_connections_current",
        "HTTP/2 client connections open now.",
        "gauge",
    );
    let _ = writeln!(
        o,
        "coreplex_h2_connections_current {}",
        h.connections_current.max(0)
    );
    super::header(
        o,
        "coreplex_h2_streams_total",
        "HTTP/2 streams (requests) received.",
        "counter",
    );
    let _ = writeln!(o, "coreplex_h2_streams_total {}", h.streams);
    for (name, help, counts) in [
        (
            "coreplex_h2_rst_stream_total",
            "RST_STREAM frames, by direction and error code.",
            [("sent", &h.rst_sent), ("received", &h.rst_received)],
        ),
        (
            "coreplex_h2_goaway_total",
            "GOAWAY frames, by direction and error code (sent enhance_your_calm: a flood limit was hit).",
            [("sent", &h.goaway_sent), ("received", &h.goaway_received)],
        ),
    ] {
        super::header(o, name, help, "counter");
        for (dir, c) in counts {
            for code in ErrorCode::ALL {
                let _ = writeln!(
                    o,
                    "{name}{{direction=\"{dir}\",code=\"{}\"}} {}",
                    code.label(),
                    c[code.slot()]
                );
            }
        }
    }
}

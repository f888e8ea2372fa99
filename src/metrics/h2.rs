//! The HTTP/2 series: connections, streams (total, open, per connection), RST_STREAM and
//! GOAWAY by direction and code, connections cut by each flood limit.

use super::table::Table;
use crate::http::{H2Stats, STREAMS_PER_CONNECTION_BUCKETS};
use coreplex_protocol::h2::conn::Flood;
use coreplex_protocol::h2::error::ErrorCode;
use std::fmt::Write;

/// Appends the HTTP/2 series.
pub fn render(o: &mut Table, h: &H2Stats) {
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
    super::header(
        o,
        "coreplex_h2_streams_current",
        "HTTP/2 streams open now.",
        "gauge",
    );
    let _ = writeln!(
        o,
        "coreplex_h2_streams_current {}",
        h.streams_current.max(0)
    );
    super::header(
        o,
        "coreplex_h2_streams_per_connection",
        "Streams carried by each closed HTTP/2 client connection.",
        "histogram",
    );
    let mut cumulative = 0;
    for (i, bound) in STREAMS_PER_CONNECTION_BUCKETS.iter().enumerate() {
        cumulative += h.streams_per_connection[i];
        let _ = writeln!(
            o,
            "coreplex_h2_streams_per_connection_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += h.streams_per_connection[STREAMS_PER_CONNECTION_BUCKETS.len()];
    let _ = writeln!(
        o,
        "coreplex_h2_streams_per_connection_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        o,
        "coreplex_h2_streams_per_connection_sum {}",
        h.streams_of_closed
    );
    let _ = writeln!(o, "coreplex_h2_streams_per_connection_count {cumulative}");
    super::header(
        o,
        "coreplex_h2_flood_limit_total",
        "HTTP/2 connections cut with GOAWAY(ENHANCE_YOUR_CALM), by the limit they exceeded.",
        "counter",
    );
    for limit in Flood::ALL {
        let _ = writeln!(
            o,
            "coreplex_h2_flood_limit_total{{limit=\"{}\"}} {}",
            limit.label(),
            h.flood_hits[limit.slot()]
        );
    }
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

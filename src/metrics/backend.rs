//! Per-backend and per-server series: the servers' response time (quantiles), connections new and
//! reused (the reuse ratio), idle, safe
//! and private pool lists, requests in flight, queues (current, max, time), connect time,
//! responses by class, failures by kind, retries, passive health, TLS handshakes to the
//! backend (full, resumed, the resumption ratio), and HTTP/2 to the backend (streams in use,
//! sessions, refused streams, GOAWAYs, ALPN fallbacks per server).

use super::header;
use super::table::Table;
use crate::http::proxy::stats::{BackendStats, ProxyError};
use std::fmt::Write;

/// One series line per backend: `name{backend="..."} value`.
fn per_backend(
    o: &mut Table,
    backends: &[BackendStats],
    name: &str,
    help: &str,
    kind: &str,
    value: impl Fn(&BackendStats) -> f64,
) {
    header(o, name, help, kind);
    for b in backends {
        let _ = writeln!(o, "{name}{{backend=\"{}\"}} {}", b.name, value(b));
    }
}

/// One series line per server: `name{backend="...",server="..."} value`.
fn per_server(
    o: &mut Table,
    backends: &[BackendStats],
    name: &str,
    help: &str,
    kind: &str,
    value: impl Fn(&coreplex_pool::ServerStats) -> f64,
) {
    header(o, name, help, kind);
    for b in backends {
        for (s, stats) in b.servers.iter().zip(&b.pool.servers) {
            let _ = writeln!(
                o,
                "{name}{{backend=\"{}\",server=\"{s}\"}} {}",
                b.name,
                value(stats)
            );
        }
    }
}

/// Appends the backend series.
pub fn render(o: &mut Table, backends: &[BackendStats]) {
    if backends.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    header(
        o,
        "coreplex_backend_response_seconds",
        "Servers' response time: from the request sent on a connection to the response head.",
        "summary",
    );
    for b in backends {
        let h = b.response_time.as_deref();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let v = h
                .filter(|h| !h.is_empty())
                .map_or(0, |h| h.value_at_quantile(q));
            let _ = writeln!(
                o,
                "coreplex_backend_response_seconds{{backend=\"{}\",quantile=\"{q}\"}} {}",
                b.name,
                v as f64 / 1e6
            );
        }
        let (sum, count) = h.map_or((0.0, 0), |h| {
            let sum: f64 = h
                .iter_recorded()
                .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
                .sum();
            (sum / 1e6, h.len())
        });
        let _ = writeln!(
            o,
            "coreplex_backend_response_seconds_sum{{backend=\"{}\"}} {sum}",
            b.name
        );
        let _ = writeln!(
            o,
            "coreplex_backend_response_seconds_count{{backend=\"{}\"}} {count}",
            b.name
        );
    }
    per_server(
        o,
        backends,
        "coreplex_backend_connections_new_total",
        "Backend connections established.",
        "counter",
        |s| s.new_conns as f64,
    );
    per_server(
        o,
        backends,
        "coreplex_backend_connections_reused_total",
        "Requests sent on a reused backend connection.",
        "counter",
        |s| s.reused as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_reuse_ratio",
        "Share of backend requests that reused a connection (0 before any request).",
        "gauge",
        |b| b.pool.reuse_ratio().unwrap_or(0.0),
    );
    header(
        o,
        "coreplex_backend_connections_idle",
        "Idle backend connections by pool list (idle: served one request; safe: proven; private: bound to a client).",
        "gauge",
    );
    for b in backends {
        for (s, st) in b.servers.iter().zip(&b.pool.servers) {
            for (list, v) in [
                ("idle", st.idle),
                ("safe", st.safe),
                ("private", st.private),
            ] {
                let _ = writeln!(
                    o,
                    "coreplex_backend_connections_idle{{backend=\"{}\",server=\"{s}\",list=\"{list}\"}} {v}",
                    b.name
                );
            }
        }
    }
    per_server(
        o,
        backends,
        "coreplex_backend_connections_used",
        "Backend requests in flight (slots counted against maxconn).",
        "gauge",
        |s| f64::from(s.in_flight),
    );
    per_server(
        o,
        backends,
        "coreplex_backend_tunnels",
        "Tunnels open (connections that switched protocols; each holds a slot, never pooled).",
        "gauge",
        |s| f64::from(s.tunnels),
    );
    per_server(
        o,
        backends,
        "coreplex_backend_connecting",
        "Backend connection attempts in progress.",
        "gauge",
        |s| f64::from(s.connecting),
    );
    per_server(
        o,
        backends,
        "coreplex_backend_server_down",
        "1 while passive health holds the server down (on any shard).",
        "gauge",
        |s| f64::from(u8::from(s.down_until.is_some_and(|t| t > now))),
    );
    per_server(
        o,
        backends,
        "coreplex_backend_server_connect_failures_total",
        "Failed connection attempts per server.",
        "counter",
        |s| s.connect_failures as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_requests_total",
        "Requests that asked the pool for a connection.",
        "counter",
        |b| b.pool.requests as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_queue_current",
        "Requests waiting in the backend and server queues.",
        "gauge",
        |b| {
            (b.pool.queue.current
                + b.pool
                    .servers
                    .iter()
                    .map(|s| s.queue.current)
                    .sum::<usize>()) as f64
        },
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_queue_max",
        "Longest backend queue seen (summed over shards).",
        "gauge",
        |b| b.pool.queue.max as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_queued_total",
        "Requests that waited in a queue.",
        "counter",
        |b| b.queued as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_queue_seconds_total",
        "Total time requests waited in queues.",
        "counter",
        |b| b.queue_time_us as f64 / 1e6,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_connect_seconds_total",
        "Total time spent establishing backend connections.",
        "counter",
        |b| b.connect_time_us as f64 / 1e6,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_connects_total",
        "Backend connections established (denominator of the connect time).",
        "counter",
        |b| b.connects as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_tls_handshakes_full_total",
        "TLS handshakes to the backend that were full (0 for plaintext backends).",
        "counter",
        |b| b.tls_handshakes[0] as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_tls_handshakes_resumed_total",
        "TLS handshakes to the backend that resumed a session (a ticket or session id).",
        "counter",
        |b| b.tls_handshakes[1] as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_tls_resumption_ratio",
        "Share of TLS handshakes to the backend that resumed (0 before any).",
        "gauge",
        |b| {
            let all = b.tls_handshakes[0] + b.tls_handshakes[1];
            if all == 0 {
                0.0
            } else {
                b.tls_handshakes[1] as f64 / all as f64
            }
        },
    );
    per_server(
        o,
        backends,
        "coreplex_backend_h2_streams",
        "Requests in flight as streams of multiplexed (HTTP/2) backend connections.",
        "gauge",
        |s| f64::from(s.streams),
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_h2_sessions_total",
        "HTTP/2 backend connections that reached the server's SETTINGS.",
        "counter",
        |b| b.h2_sessions as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_h2_refused_total",
        "Streams the servers did not process (REFUSED_STREAM, or above a GOAWAY's last stream), sent again when they could be.",
        "counter",
        |b| b.h2_refused as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_h2_goaway_received_total",
        "GOAWAY frames received from the servers.",
        "counter",
        |b| b.h2_goaway_received as f64,
    );
    per_backend(
        o,
        backends,
        "coreplex_backend_h2_goaway_sent_total",
        "GOAWAY frames sent to the servers on a connection error.",
        "counter",
        |b| b.h2_goaway_sent as f64,
    );
    header(
        o,
        "coreplex_backend_alpn_fallbacks_total",
        "Times a server of an `auto` backend was found to speak HTTP/1.1 instead of h2.",
        "counter",
    );
    for b in backends {
        for (s, v) in b.servers.iter().zip(&b.alpn_fallbacks) {
            let _ = writeln!(
                o,
                "coreplex_backend_alpn_fallbacks_total{{backend=\"{}\",server=\"{s}\"}} {v}",
                b.name
            );
        }
    }
    per_backend(
        o,
        backends,
        "coreplex_backend_retries_total",
        "Requests sent again after a connect failure or a dead reused connection.",
        "counter",
        |b| b.retries as f64,
    );
    header(
        o,
        "coreplex_backend_responses_total",
        "Responses to proxied requests by status class (the proxy's own 502/503/504 included).",
        "counter",
    );
    for b in backends {
        for (i, v) in b.responses.iter().enumerate() {
            let _ = writeln!(
                o,
                "coreplex_backend_responses_total{{backend=\"{}\",class=\"{}xx\"}} {v}",
                b.name,
                i + 1
            );
        }
    }
    header(
        o,
        "coreplex_backend_errors_total",
        "Proxied requests that failed, by kind.",
        "counter",
    );
    for b in backends {
        for e in ProxyError::ALL {
            let _ = writeln!(
                o,
                "coreplex_backend_errors_total{{backend=\"{}\",kind=\"{}\"}} {}",
                b.name,
                e.label(),
                b.errors[e as usize]
            );
        }
    }
}

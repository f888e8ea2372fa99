//! The shards' aggregated statistics as a metric table ([`table::Table`]): Prometheus text for
//! `/metrics`, JSON and CSV exports, and the stats page's data.

mod backend;
mod h2;
pub mod table;
mod tls;
mod websocket;

pub use table::Table;

use crate::http::HttpStats;
use coreplex_engine::{CloseReason, EngineStats, ShardReport};
use coreplex_protocol::h1::{BodyError, RequestError};
use std::fmt::Write;

/// Renders all shards' reports as Prometheus text exposition format (version 0.0.4).
#[cfg(test)]
pub fn render(reports: &[ShardReport<HttpStats>], shards_expected: usize) -> String {
    table(reports, shards_expected).prometheus()
}

/// The metric table of all shards' reports.
pub fn table(reports: &[ShardReport<HttpStats>], shards_expected: usize) -> Table {
    let mut e = EngineStats::default();
    let mut h = HttpStats::default();
    for r in reports {
        e.merge(&r.engine);
        h.merge(&r.service);
    }
    let mut out = Table::default();
    let o = &mut out;
    gauge(
        o,
        "coreplex_shards",
        "Shards running.",
        shards_expected as u64,
    );
    gauge(
        o,
        "coreplex_shards_reporting",
        "Shards that answered this scrape.",
        reports.len() as u64,
    );
    gauge(
        o,
        "coreplex_connections_current",
        "Open client connections.",
        e.connections,
    );
    header(
        o,
        "coreplex_shard_connections",
        "Open client connections per shard.",
        "gauge",
    );
    for r in reports {
        let _ = writeln!(
            o,
            "coreplex_shard_connections{{shard=\"{}\"}} {}",
            r.shard, r.engine.connections
        );
    }
    per_shard(
        o,
        reports,
        "coreplex_shard_connections_accepted_total",
        "Connections accepted per shard.",
        "counter",
        |r| r.engine.accepted,
    );
    per_shard(
        o,
        reports,
        "coreplex_shard_requests_total",
        "Responses sent per shard.",
        "counter",
        |r| r.service.responses.iter().sum(),
    );
    per_shard(
        o,
        reports,
        "coreplex_shard_outbound_connections",
        "Open outbound (backend) connections per shard.",
        "gauge",
        |r| r.engine.outbound,
    );
    counter(
        o,
        "coreplex_connections_accepted_total",
        "Connections accepted.",
        e.accepted,
    );
    gauge(
        o,
        "coreplex_outbound_connections_current",
        "Open outbound (backend) connections.",
        e.outbound,
    );
    counter(
        o,
        "coreplex_outbound_connections_opened_total",
        "Outbound connections started.",
        e.outbound_opened,
    );
    counter(
        o,
        "coreplex_outbound_connect_errors_total",
        "Outbound connections that failed to connect.",
        e.outbound_failed,
    );
    counter(
        o,
        "coreplex_outbound_refused_total",
        "Outbound connections refused for lack of a slot.",
        e.outbound_refused,
    );
    header(
        o,
        "coreplex_connections_closed_total",
        "Connections closed, by reason.",
        "counter",
    );
    for reason in CloseReason::ALL {
        let _ = writeln!(
            o,
            "coreplex_connections_closed_total{{reason=\"{}\"}} {}",
            reason.label(),
            e.closed[reason as usize]
        );
    }
    counter(
        o,
        "coreplex_bytes_received_total",
        "Bytes received from clients.",
        e.bytes_in,
    );
    counter(
        o,
        "coreplex_bytes_sent_total",
        "Bytes sent to clients.",
        e.bytes_out,
    );
    header(
        o,
        "coreplex_requests_total",
        "Responses sent, by status class.",
        "counter",
    );
    for (i, n) in h.responses.iter().enumerate() {
        let _ = writeln!(o, "coreplex_requests_total{{class=\"{}xx\"}} {}", i + 1, n);
    }
    header(
        o,
        "coreplex_parse_errors_total",
        "Rejected requests, by kind of error.",
        "counter",
    );
    for (i, err) in RequestError::ALL.iter().enumerate() {
        let _ = writeln!(
            o,
            "coreplex_parse_errors_total{{kind=\"{}\"}} {}",
            err.label(),
            h.request_errors[i]
        );
    }
    for (i, err) in BodyError::ALL.iter().enumerate() {
        let _ = writeln!(
            o,
            "coreplex_parse_errors_total{{kind=\"body_{}\"}} {}",
            err.label(),
            h.body_errors[i]
        );
    }
    counter(
        o,
        "coreplex_continue_total",
        "100 Continue interim responses sent.",
        h.continues,
    );
    header(
        o,
        "coreplex_accept_errors_total",
        "Failed accepts, by cause.",
        "counter",
    );
    let a = e.accept_errors;
    for (k, v) in [
        ("emfile", a.emfile),
        ("enfile", a.enfile),
        ("enomem", a.enomem),
        ("other", a.other),
    ] {
        let _ = writeln!(o, "coreplex_accept_errors_total{{kind=\"{k}\"}} {v}");
    }
    counter(
        o,
        "coreplex_accept_paused_total",
        "Times accepting paused because a shard's connection table was full.",
        e.accept_paused,
    );
    counter(
        o,
        "coreplex_accept_rate_limited_total",
        "Times a listener paused accepting because of its rate_limit.",
        e.accept_rate_limited,
    );
    counter(
        o,
        "coreplex_recv_no_buffers_total",
        "Receives that found the provided-buffer ring empty.",
        e.recv_no_buffers,
    );
    gauge(
        o,
        "coreplex_timers",
        "Timers scheduled in the shards' timer wheels.",
        e.timers,
    );
    gauge(
        o,
        "coreplex_slab_used",
        "Connection slots in use.",
        e.slab_used,
    );
    gauge(
        o,
        "coreplex_slab_capacity",
        "Connection slots available (max_connections x shards).",
        e.slab_capacity,
    );
    gauge(
        o,
        "coreplex_slab_slot_bytes",
        "Bytes per connection slot.",
        e.slab_slot_bytes,
    );
    gauge(
        o,
        "coreplex_buffers_outstanding",
        "Provided receive buffers held by user space.",
        e.buffers_outstanding,
    );
    gauge(
        o,
        "coreplex_buffers_total",
        "Provided receive buffers.",
        e.buffers_total,
    );
    counter(
        o,
        "coreplex_loop_turns_total",
        "Event loop turns (io_uring_enter calls).",
        e.loop_turns,
    );
    counter(
        o,
        "coreplex_completions_total",
        "io_uring completions processed.",
        e.completions,
    );
    let l = &h.latency;
    header(
        o,
        "coreplex_request_duration_seconds",
        "Time from a request's first byte to its response being queued.",
        "summary",
    );
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = if l.is_empty() {
            0
        } else {
            l.value_at_quantile(q)
        };
        let _ = writeln!(
            o,
            "coreplex_request_duration_seconds{{quantile=\"{q}\"}} {}",
            secs(v)
        );
    }
    let sum: f64 = l
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum();
    let _ = writeln!(o, "coreplex_request_duration_seconds_sum {}", sum / 1e6);
    let _ = writeln!(o, "coreplex_request_duration_seconds_count {}", l.len());
    gauge_f(
        o,
        "coreplex_request_duration_seconds_max",
        "Longest request seen.",
        secs(l.max()),
    );
    backend::render(o, &h.backends);
    tls::render(o, &h.tls);
    h2::render(o, &h.h2);
    websocket::render(o, &h.ws, &h.tunnels);
    websocket::render_tunnels(o, &h.tunnels);
    counter(
        o,
        "coreplex_access_log_bytes_total",
        "Bytes written to access logs.",
        e.log_bytes,
    );
    counter(
        o,
        "coreplex_access_log_dropped_bytes_total",
        "Access log bytes dropped (the log was too far behind, or could not be opened).",
        e.log_dropped_bytes,
    );
    counter(
        o,
        "coreplex_access_log_write_errors_total",
        "Access log writes that failed.",
        e.log_write_errors,
    );
    let pp = &h.proxy_protocol;
    header(
        o,
        "coreplex_proxy_protocol_total",
        "PROXY protocol headers on listeners that accept them, by outcome (missing, malformed and untrusted ones close the connection).",
        "counter",
    );
    for (outcome, n) in [
        ("accepted", pp.accepted),
        ("local", pp.local),
        ("missing", pp.missing),
        ("malformed", pp.malformed),
        ("untrusted", pp.untrusted),
    ] {
        let _ = writeln!(
            o,
            "coreplex_proxy_protocol_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    out
}

/// One series line per shard: `name{shard="..."} value`.
fn per_shard(
    o: &mut Table,
    reports: &[ShardReport<HttpStats>],
    name: &str,
    help: &str,
    kind: &str,
    value: impl Fn(&ShardReport<HttpStats>) -> u64,
) {
    header(o, name, help, kind);
    for r in reports {
        let _ = writeln!(o, "{name}{{shard=\"{}\"}} {}", r.shard, value(r));
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn header(o: &mut Table, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(o: &mut Table, name: &str, help: &str, v: u64) {
    header(o, name, help, "gauge");
    let _ = writeln!(o, "{name} {v}");
}

fn gauge_f(o: &mut Table, name: &str, help: &str, v: f64) {
    header(o, name, help, "gauge");
    let _ = writeln!(o, "{name} {v}");
}

fn counter(o: &mut Table, name: &str, help: &str, v: u64) {
    header(o, name, help, "counter");
    let _ = writeln!(o, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_exposition_round_trips_through_the_table() {
        let reports = vec![ShardReport {
            shard: 0,
            engine: EngineStats::default(),
            service: HttpStats::default(),
        }];
        let text = render(&reports, 1);
        let mut again = Table::default();
        again.write_str(&text).unwrap();
        assert_eq!(again.prometheus(), text);
        for f in &again.families {
            assert!(!f.help.is_empty() && !f.kind.is_empty(), "{f:?}");
        }
    }

    #[test]
    fn renders_merged_counters() {
        let mut a = ShardReport {
            shard: 0,
            engine: EngineStats::default(),
            service: HttpStats::default(),
        };
        a.engine.accepted = 3;
        a.service.response(200);
        a.service.latency_us(100);
        let mut b = ShardReport {
            shard: 1,
            engine: EngineStats::default(),
            service: HttpStats::default(),
        };
        b.engine.accepted = 4;
        b.service.response(404);
        let text = render(&[a, b], 2);
        assert!(
            text.contains("coreplex_connections_accepted_total 7\n"),
            "{text}"
        );
        assert!(text.contains("coreplex_requests_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("coreplex_requests_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("coreplex_request_duration_seconds_count 1\n"));
        assert!(
            text.contains("coreplex_connections_closed_total{reason=\"keepalive_timeout\"} 0\n")
        );
    }
}

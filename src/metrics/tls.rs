//! The TLS series: handshakes full and resumed by version and side, failures by reason, ALPN
//! outcomes, listener handshake durations, ticket keys in use.

use super::table::Table;
use coreplex_tls::stats::{Failure, TlsStats};
use std::fmt::Write;

/// Appends the TLS series.
pub fn render(o: &mut Table, t: &TlsStats) {
    super::header(
        o,
        "coreplex_tls_handshakes_total",
        "TLS handshakes completed, by side (listener or backend), version and kind (full or resumed).",
        "counter",
    );
    for (side, counts) in [
        ("listener", &t.handshakes),
        ("backend", &t.backend_handshakes),
    ] {
        for (i, (version, kind)) in [
            ("1.2", "full"),
            ("1.2", "resumed"),
            ("1.3", "full"),
            ("1.3", "resumed"),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = writeln!(
                o,
                "coreplex_tls_handshakes_total{{side=\"{side}\",version=\"{version}\",kind=\"{kind}\"}} {}",
                counts[i]
            );
        }
    }
    super::header(
        o,
        "coreplex_tls_failures_total",
        "TLS sessions that failed, by side and reason (handshake timeouts are a close reason).",
        "counter",
    );
    for (side, counts) in [("listener", &t.failures), ("backend", &t.backend_failures)] {
        for f in Failure::ALL {
            let _ = writeln!(
                o,
                "coreplex_tls_failures_total{{side=\"{side}\",reason=\"{}\"}} {}",
                f.label(),
                counts[f as usize]
            );
        }
    }
    super::header(
        o,
        "coreplex_tls_alpn_total",
        "Listener handshakes by negotiated ALPN protocol.",
        "counter",
    );
    for (i, p) in ["h2", "http/1.1", "none"].into_iter().enumerate() {
        let _ = writeln!(
            o,
            "coreplex_tls_alpn_total{{protocol=\"{p}\"}} {}",
            t.alpn[i]
        );
    }
    super::header(
        o,
        "coreplex_tls_cipher_total",
        "Listener handshakes by negotiated cipher suite.",
        "counter",
    );
    let mut suites = t.suites.clone();
    suites.sort_unstable();
    for (suite, n) in suites {
        let _ = writeln!(o, "coreplex_tls_cipher_total{{suite=\"{suite}\"}} {n}");
    }
    super::header(
        o,
        "coreplex_tls_unknown_sni_total",
        "Listener ClientHellos whose server name (or lack of one) no certificate names, by answer: the default certificate, or refused with unrecognized_name.",
        "counter",
    );
    let _ = writeln!(
        o,
        "coreplex_tls_unknown_sni_total{{answer=\"default\"}} {}",
        t.unknown_names_served
    );
    let _ = writeln!(
        o,
        "coreplex_tls_unknown_sni_total{{answer=\"refused\"}} {}",
        t.failures[Failure::UnknownName as usize]
    );
    let h = &t.handshake_us;
    super::header(
        o,
        "coreplex_tls_handshake_seconds",
        "Listener handshake time, from the first byte to done.",
        "summary",
    );
    for q in [0.5, 0.9, 0.99] {
        let v = if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        };
        let _ = writeln!(
            o,
            "coreplex_tls_handshake_seconds{{quantile=\"{q}\"}} {}",
            super::secs(v)
        );
    }
    let _ = writeln!(o, "coreplex_tls_handshake_seconds_count {}", h.len());
    super::gauge(
        o,
        "coreplex_tls_ticket_keys",
        "Ticket keys in use (the first seals, all open).",
        t.ticket_keys,
    );
}

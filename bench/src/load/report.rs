//! The result of a load run: a human table (default) or JSON (`--json`), and the progress line.

use super::{Errors, Options, Plan, Tally};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// A load run's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Target URL.
    pub url: String,
    /// "closed" or "open".
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// Pipelining depth.
    pub depth: usize,
    /// Open loop: the requested rate.
    pub target_rate: Option<f64>,
    /// Seconds measured.
    pub duration_s: f64,
    /// Requests written.
    pub sent: u64,
    /// Responses received.
    pub answered: u64,
    /// Responses by class, 1xx..5xx.
    pub status: [u64; 5],
    /// Errors by kind.
    pub errors: Errors,
    /// Requests sent and without a response when the run ended (not errors). Always
    /// `sent = answered + timeout + reset + closed + parse + in_flight_at_end`.
    pub in_flight_at_end: u64,
    /// Open loop: requests due but never sent for lack of a free connection.
    pub unsent_at_end: u64,
    /// Responses that arrived with no request outstanding.
    pub unsolicited: u64,
    /// Responses per second.
    pub requests_per_sec: f64,
    /// Latency, microseconds (open loop: from the intended send time).
    pub latency_us: Latency,
    /// (quantile, latency in microseconds) at `plot::QUANTILES`, for curves.
    pub percentiles: Vec<(f64, f64)>,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Connections opened, reconnects included.
    pub connects: u64,
    /// CPU seconds (user + system) this process spent.
    pub client_cpu_s: f64,
    /// This process's CPU microseconds per response.
    pub client_cpu_us_per_request: f64,
}

impl Report {
    /// Builds the report from the merged tally.
    pub fn new(o: &Options, t: Tally, elapsed: Duration, cpu_s: f64) -> Report {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &t.latency;
        let q = |x: f64| {
            if h.is_empty() {
                0.0
            } else {
                us(h.value_at_quantile(x))
            }
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            url: o.url.clone(),
            mode: if o.rate.is_some() { "open" } else { "closed" },
            connections: o.connections,
            threads: o.threads.min(o.connections),
            depth: o.depth,
            target_rate: o.rate,
            duration_s: secs,
            sent: t.sent,
            answered: t.answered,
            status: t.status,
            errors: t.errors,
            in_flight_at_end: t.in_flight_at_end,
            unsent_at_end: t.unsent_at_end,
            unsolicited: t.unsolicited,
            requests_per_sec: t.answered as f64 / secs,
            latency_us: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: if h.is_empty() { 0.0 } else { us(h.max()) },
                mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            },
            percentiles: crate::plot::QUANTILES
                .iter()
                .map(|&x| (x, if x >= 1.0 { us(h.max()) } else { q(x) }))
                .collect(),
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            connects: t.connects,
            client_cpu_s: cpu_s,
            client_cpu_us_per_request: cpu_s * 1e6 / (t.answered.max(1) as f64),
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let e = &self.errors;
        let l = &self.latency_us;
        let mut s = String::new();
        s.push_str(&format!(
            "{} {} loop, {} connections, {} thread(s), depth {}{}\n",
            self.url,
            self.mode,
            self.connections,
            self.threads,
            self.depth,
            self.target_rate
                .map(|r| format!(", target {r:.0} req/s"))
                .unwrap_or_default()
        ));
        s.push_str(&format!(
            "  requests   {:>12} sent {:>12} answered {:>10.0} req/s over {:.2}s\n",
            self.sent, self.answered, self.requests_per_sec, self.duration_s
        ));
        s.push_str(&format!(
            "  latency    p50 {} p90 {} p99 {} p99.9 {} max {} (mean {})\n",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean)
        ));
        s.push_str(&format!(
            "  status     1xx {} 2xx {} 3xx {} 4xx {} 5xx {}\n",
            self.status[0], self.status[1], self.status[2], self.status[3], self.status[4]
        ));
        s.push_str(&format!(
            "  errors     connect {} timeout {} reset {} closed {} parse {} non-2xx {}; in flight at end {}, unsent {}\n",
            e.connect, e.timeout, e.reset, e.closed, e.parse, e.non_2xx, self.in_flight_at_end, self.unsent_at_end
        ));
        s.push_str(&format!(
            "  bytes      in {} out {}; connections opened {}\n",
            self.bytes_in, self.bytes_out, self.connects
        ));
        s.push_str(&format!(
            "  client CPU {:.2}s, {:.3} us per response\n",
            self.client_cpu_s, self.client_cpu_us_per_request
        ));
        s
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

/// Prints a progress line to stderr every second until the threads finish.
pub fn progress<T>(plan: &Plan, handles: &[JoinHandle<T>]) {
    let total = plan.duration.as_secs_f64();
    let mut last = (Instant::now(), 0u64);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        if now.duration_since(last.0) < Duration::from_secs(1) {
            continue;
        }
        let done = plan.progress.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let t = now
            .saturating_duration_since(plan.start)
            .as_secs_f64()
            .min(total);
        let width = 30;
        let filled = ((t / total.max(1e-9)) * width as f64) as usize;
        let _ = write!(
            std::io::stderr(),
            "\r[{}{}] {:>5.1}s/{:.0}s {:>10.0} req/s",
            "=".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            t,
            total,
            rate
        );
    }
    let _ = writeln!(std::io::stderr());
}

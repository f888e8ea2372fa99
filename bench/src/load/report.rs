//! The result of a load run: a human table (default) or JSON (`--json`), and the progress line.

use super::{Counts, Options, Plan, Tally};
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
    /// Request and byte counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Responses per second.
    pub requests_per_sec: f64,
    /// Latency, microseconds (open loop: from the intended send time).
    pub latency_us: Latency,
    /// (quantile, latency in microseconds) at `plot::QUANTILES`, for curves.
    pub percentiles: Vec<(f64, f64)>,
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
            counts: t.counts,
            requests_per_sec: t.counts.answered as f64 / secs,
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
            client_cpu_s: cpu_s,
            client_cpu_us_per_request: cpu_s * 1e6 / (t.counts.answered.max(1) as f64),
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let c = &self.counts;
        let e = &c.errors;
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
            c.sent, c.answered, self.requests_per_sec, self.duration_s
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
            c.status[0], c.status[1], c.status[2], c.status[3], c.status[4]
        ));
        s.push_str(&format!(
            "  errors     connect {} timeout {} reset {} closed {} parse {} non-2xx {}; in flight at end {}, unsent {}\n",
            e.connect, e.timeout, e.reset, e.closed, e.parse, e.non_2xx, c.in_flight_at_end, c.unsent_at_end
        ));
        s.push_str(&format!(
            "  bytes      in {} out {}; connections opened {}\n",
            c.bytes_in, c.bytes_out, c.connects
        ));
        if c.handshakes_full + c.handshakes_resumed + e.tls > 0 {
            s.push_str(&format!(
                "  tls        handshakes full {} resumed {}; tls errors {}\n",
                c.handshakes_full, c.handshakes_resumed, e.tls
            ));
        }
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

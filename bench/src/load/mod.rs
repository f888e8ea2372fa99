//! `coreplex-bench load`: HTTP/1.1 keep-alive load from T pinned threads over N connections,
//! closed loop (like wrk) or open loop at a fixed rate with coordinated-omission correction (like
//! wrk2), optional pipelining, a request template; latencies in HdrHistogram; errors by kind.
//! Its own CPU time per request is reported so it can be compared with wrk's.

mod client;
mod report;
pub mod response;
pub mod tls;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::Report;

/// Errors by kind; each counts requests that got no (valid) response, except `non_2xx`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Errors {
    /// Connection attempts that failed.
    pub connect: u64,
    /// Requests without a response within --timeout.
    pub timeout: u64,
    /// Requests lost to a reset or a failed send.
    pub reset: u64,
    /// Requests lost because the server closed the connection.
    pub closed: u64,
    /// Requests lost to an unparseable response.
    pub parse: u64,
    /// Responses with a status of 400 or more (answered, but counted as errors).
    pub non_2xx: u64,
    /// Requests lost to a TLS error (or connections, when none was outstanding).
    pub tls: u64,
}

/// Request and byte counts of a run, per thread and then merged. Always
/// `sent = answered + timeout + reset + closed + parse + in_flight_at_end`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    /// Requests written to connections.
    pub sent: u64,
    /// Responses received.
    pub answered: u64,
    /// Responses by class 1xx..5xx.
    pub status: [u64; 5],
    /// Errors by kind.
    pub errors: Errors,
    /// Requests sent and still waiting for a response at the end (not errors).
    pub in_flight_at_end: u64,
    /// Open loop: requests that were due but had no free connection by the end (never sent).
    pub unsent_at_end: u64,
    /// Responses that arrived with no request outstanding.
    pub unsolicited: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Connections opened (including reconnects).
    pub connects: u64,
    /// TLS: full handshakes completed.
    pub handshakes_full: u64,
    /// TLS: resumed handshakes completed.
    pub handshakes_resumed: u64,
}

impl Counts {
    fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.answered += o.answered;
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        let (e, f) = (&mut self.errors, o.errors);
        e.connect += f.connect;
        e.timeout += f.timeout;
        e.reset += f.reset;
        e.closed += f.closed;
        e.parse += f.parse;
        e.non_2xx += f.non_2xx;
        e.tls += f.tls;
        self.in_flight_at_end += o.in_flight_at_end;
        self.unsent_at_end += o.unsent_at_end;
        self.unsolicited += o.unsolicited;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.connects += o.connects;
        self.handshakes_full += o.handshakes_full;
        self.handshakes_resumed += o.handshakes_resumed;
    }
}

/// What one thread measured.
pub struct Tally {
    /// Counts.
    pub counts: Counts,
    /// Latency in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            counts: Counts::default(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds"),
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.counts.merge(&o.counts);
        let _ = self.latency.add(&o.latency);
    }
}

/// Everything the threads share.
pub struct Plan {
    /// Server address.
    pub target: SocketAddr,
    /// The request bytes (one request).
    pub request: Vec<u8>,
    /// The request is HEAD (responses carry no body).
    pub head: bool,
    /// Requests outstanding per connection.
    pub depth: usize,
    /// Open loop: requests per second for one thread; `None` = closed loop.
    pub rate: Option<f64>,
    /// Run time.
    pub duration: Duration,
    /// A request with no response after this is a timeout.
    pub timeout: Duration,
    /// Source addresses 127.0.0.2.. to spread connections over (loopback targets).
    pub sources: u8,
    /// CPUs to pin threads to (round-robin); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Common start instant.
    pub start: Instant,
    /// Responses so far (for the progress line).
    pub progress: Arc<AtomicU64>,
    /// TLS client (https:// targets).
    pub tls: Option<tls::TlsClient>,
    /// A new connection for every request (the client closes after each response).
    pub reconnect: bool,
}

/// Options of `load`.
pub struct Options {
    /// `http://host:port/path`.
    pub url: String,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// Run time.
    pub duration: Duration,
    /// Total requests per second (open loop), or closed loop.
    pub rate: Option<f64>,
    /// Pipelining depth.
    pub depth: usize,
    /// Method.
    pub method: String,
    /// Extra headers `Name: value`.
    pub headers: Vec<String>,
    /// Request body.
    pub body: Option<String>,
    /// Request timeout.
    pub timeout: Duration,
    /// Source addresses.
    pub sources: u8,
    /// CPUs for the threads.
    pub cpus: Vec<usize>,
    /// Show a progress line.
    pub progress: bool,
    /// TLS settings for https:// URLs.
    pub tls: tls::TlsOptions,
    /// A new connection for every request.
    pub reconnect: bool,
}

/// Parses `http[s]://host[:port][/path]`: (authority, address, path, https).
pub fn parse_url(url: &str) -> Result<(String, SocketAddr, String, bool)> {
    let (rest, https) = match url.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (
            url.strip_prefix("http://")
                .with_context(|| format!("{url}: only http:// and https:// URLs are supported"))?,
            false,
        ),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else if https {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    Ok((authority.to_string(), addr, path.to_string(), https))
}

/// Builds the request bytes from the template.
pub fn build_request(o: &Options, host: &str, path: &str) -> Result<Vec<u8>> {
    let mut r = format!("{} {path} HTTP/1.1\r\nHost: {host}\r\n", o.method);
    for h in &o.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!("header {h:?}: expected \"Name: value\"");
        };
        if name.trim().eq_ignore_ascii_case("host") {
            bail!("the Host header comes from the URL");
        }
        r.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    if o.reconnect
        && !o.headers.iter().any(|h| {
            h.trim_start()
                .to_ascii_lowercase()
                .starts_with("connection:")
        })
    {
        // One request per connection, as a client without keep-alive says it.
        r.push_str("Connection: close\r\n");
    }
    if let Some(b) = &o.body {
        r.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    Ok(r.into_bytes())
}

/// Runs the load and returns the merged report.
pub fn run(o: &Options) -> Result<Report> {
    if o.connections == 0 || o.threads == 0 || o.depth == 0 {
        bail!("connections, threads and depth must be at least 1");
    }
    let threads = o.threads.min(o.connections);
    let (host, target, path, https) = parse_url(&o.url)?;
    let request = build_request(o, &host, &path)?;
    let tls = if https {
        let name = host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&host)
            .trim_matches(['[', ']']);
        Some(tls::TlsClient::new(&o.tls, name)?)
    } else {
        None
    };
    let progress = Arc::new(AtomicU64::new(0));
    let start =
        Instant::now() + Duration::from_millis(100 + 2 * o.connections as u64 / threads as u64);
    let plan = Arc::new(Plan {
        target,
        head: o.method.eq_ignore_ascii_case("HEAD"),
        request,
        depth: o.depth,
        rate: o.rate.map(|r| r / threads as f64),
        duration: o.duration,
        timeout: o.timeout,
        sources: o.sources,
        cpus: o.cpus.clone(),
        start,
        progress: progress.clone(),
        tls,
        reconnect: o.reconnect,
    });
    let cpu0 = cpu_time();
    let mut handles = Vec::new();
    for t in 0..threads {
        let plan = plan.clone();
        let n = o.connections / threads + usize::from(t < o.connections % threads);
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || client::run(&plan, t, n))?,
        );
    }
    if o.progress {
        report::progress(&plan, &handles);
    }
    let mut total = Tally::new();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        total.merge(&t);
    }
    let elapsed = start
        .elapsed()
        .min(o.duration.max(Duration::from_millis(1)) + Duration::from_millis(5));
    let cpu = cpu_time() - cpu0;
    let _ = progress.load(Ordering::Relaxed);
    Ok(Report::new(o, total, elapsed, cpu))
}

/// User + system CPU seconds of this process so far.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let tick = 100.0; // USER_HZ on Linux
    let t = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(11) + t(12)) / tick
}

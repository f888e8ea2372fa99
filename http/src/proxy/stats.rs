//! Per-backend statistics: the pool's snapshot (connections new/reused, idle/safe/private lists,
//! queues, health) plus what the forwarding code counts (responses, errors by kind, retries, queue
//! and connect times). Summed over shards for `/metrics`.

use coreplex_pool::{PoolStats, ServerStats};

/// Why a proxied request failed (a label in the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProxyError {
    /// A backend connection could not be established.
    ConnectFailed = 0,
    /// A backend connection attempt timed out.
    ConnectTimeout,
    /// The server did not answer (or stalled) within `timeouts.server`.
    ServerTimeout,
    /// The request waited longer than `timeouts.queue`.
    QueueTimeout,
    /// The backend queue was full.
    QueueFull,
    /// Every server was down.
    NoServer,
    /// The backend closed or reset the connection before the response was complete.
    BackendClosed,
    /// The backend's response could not be parsed or was framed ambiguously.
    BadResponse,
    /// The client went away before the response was complete.
    ClientAbort,
    /// No connection slot for another outbound connection (`global.max_outbound`).
    NoSlot,
}

impl ProxyError {
    /// Every kind, in discriminant order.
    pub const ALL: [ProxyError; 10] = [
        ProxyError::ConnectFailed,
        ProxyError::ConnectTimeout,
        ProxyError::ServerTimeout,
        ProxyError::QueueTimeout,
        ProxyError::QueueFull,
        ProxyError::NoServer,
        ProxyError::BackendClosed,
        ProxyError::BadResponse,
        ProxyError::ClientAbort,
        ProxyError::NoSlot,
    ];

    /// A stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            ProxyError::ConnectFailed => "connect_failed",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::ServerTimeout => "server_timeout",
            ProxyError::QueueTimeout => "queue_timeout",
            ProxyError::QueueFull => "queue_full",
            ProxyError::NoServer => "no_server",
            ProxyError::BackendClosed => "backend_closed",
            ProxyError::BadResponse => "bad_response",
            ProxyError::ClientAbort => "client_abort",
            ProxyError::NoSlot => "no_slot",
        }
    }
}

/// One backend's counters on one shard (or summed).
#[derive(Clone, Debug, Default)]
pub struct BackendStats {
    /// Backend name.
    pub name: String,
    /// Server names, indexed like the pool's servers.
    pub servers: Vec<String>,
    /// The pool's snapshot.
    pub pool: PoolStats,
    /// Responses forwarded, by status class (index 0 = 1xx ... 4 = 5xx), including the proxy's
    /// own 502/503/504.
    pub responses: [u64; 5],
    /// Failures by [`ProxyError`] index.
    pub errors: [u64; ProxyError::ALL.len()],
    /// Requests sent again (connect-failure retries and idempotent resends).
    pub retries: u64,
    /// Requests that waited in a queue, and their total wait in microseconds.
    pub queued: u64,
    /// Total queue wait in microseconds.
    pub queue_time_us: u64,
    /// Backend connections established, and their total connect time in microseconds.
    pub connects: u64,
    /// Total connect time in microseconds.
    pub connect_time_us: u64,
    /// TLS backends: handshakes completed, `[full, resumed]`.
    pub tls_handshakes: [u64; 2],
    /// HTTP/2 backend connections that reached SETTINGS.
    pub h2_sessions: u64,
    /// Streams the servers refused (REFUSED_STREAM, or above a GOAWAY's last stream).
    pub h2_refused: u64,
    /// GOAWAY frames received from the servers.
    pub h2_goaway_received: u64,
    /// GOAWAY frames sent to the servers (connection errors).
    pub h2_goaway_sent: u64,
    /// Per server: times an `auto` server was found to speak HTTP/1.1 instead of h2.
    pub alpn_fallbacks: Vec<u64>,
    /// The servers' response times in microseconds (request sent on a connection to response
    /// head), made on the first one.
    pub response_time: Option<Box<hdrhistogram::Histogram<u64>>>,
}

/// The longest response time recorded exactly (longer ones count as this).
const RESPONSE_TIME_MAX_US: u64 = 3_600_000_000;

impl BackendStats {
    /// Records a server's response time.
    pub fn response_time_us(&mut self, us: u64) {
        let h = self.response_time.get_or_insert_with(|| {
            Box::new(
                hdrhistogram::Histogram::new_with_bounds(1, RESPONSE_TIME_MAX_US, 2)
                    .expect("valid histogram bounds"),
            )
        });
        h.saturating_record(us.clamp(1, RESPONSE_TIME_MAX_US));
    }

    /// Counts a failure.
    pub fn error(&mut self, e: ProxyError) {
        self.errors[e as usize] += 1;
    }

    /// Counts a response with `status`.
    pub fn response(&mut self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class] += 1;
    }

    /// Adds another shard's counters for the same backend.
    pub fn merge(&mut self, o: &BackendStats) {
        if self.name.is_empty() {
            self.name.clone_from(&o.name);
            self.servers.clone_from(&o.servers);
        }
        merge_pool(&mut self.pool, &o.pool);
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.retries += o.retries;
        self.queued += o.queued;
        self.queue_time_us += o.queue_time_us;
        self.connects += o.connects;
        self.connect_time_us += o.connect_time_us;
        self.tls_handshakes[0] += o.tls_handshakes[0];
        self.tls_handshakes[1] += o.tls_handshakes[1];
        self.h2_sessions += o.h2_sessions;
        self.h2_refused += o.h2_refused;
        self.h2_goaway_received += o.h2_goaway_received;
        self.h2_goaway_sent += o.h2_goaway_sent;
        if self.alpn_fallbacks.len() < o.alpn_fallbacks.len() {
            self.alpn_fallbacks.resize(o.alpn_fallbacks.len(), 0);
        }
        for (a, b) in self.alpn_fallbacks.iter_mut().zip(&o.alpn_fallbacks) {
            *a += b;
        }
        match (&mut self.response_time, &o.response_time) {
            (Some(a), Some(b)) => {
                let _ = a.add(&**b);
            }
            (None, Some(b)) => self.response_time = Some(b.clone()),
            _ => {}
        }
    }
}

fn merge_pool(a: &mut PoolStats, b: &PoolStats) {
    if a.servers.len() < b.servers.len() {
        a.servers.resize_with(b.servers.len(), ServerStats::default);
    }
    for (x, y) in a.servers.iter_mut().zip(&b.servers) {
        x.idle += y.idle;
        x.safe += y.safe;
        x.private += y.private;
        x.in_flight += y.in_flight;
        x.streams += y.streams;
        x.tunnels += y.tunnels;
        x.connecting += y.connecting;
        x.new_conns += y.new_conns;
        x.reused += y.reused;
        x.queue.current += y.queue.current;
        x.queue.max = x.queue.max.max(y.queue.max);
        x.queue.total += y.queue.total;
        x.queue.timeouts += y.queue.timeouts;
        x.connect_failures += y.connect_failures;
        x.times_down += y.times_down;
        x.consecutive_failures = x.consecutive_failures.max(y.consecutive_failures);
        // Down on any shard: the latest end of a down period.
        x.down_until = x.down_until.max(y.down_until);
    }
    a.queue.current += b.queue.current;
    a.queue.max = a.queue.max.max(b.queue.max);
    a.queue.total += b.queue.total;
    a.queue.timeouts += b.queue.timeouts;
    a.in_flight += b.in_flight;
    a.requests += b.requests;
    a.reused += b.reused;
    a.new_conns += b.new_conns;
    a.queue_full += b.queue_full;
    a.all_down += b.all_down;
    a.sessions += b.sessions;
    a.conns += b.conns;
}

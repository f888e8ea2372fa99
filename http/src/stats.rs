//! Per-shard HTTP statistics: requests by status class, parse errors by kind, request latency.

use super::proxy::stats::BackendStats;
use coreplex_protocol::h1::{BodyError, RequestError};
use coreplex_protocol::h2::conn::Flood;
use hdrhistogram::Histogram;

/// Highest latency the histogram tracks, in microseconds (larger values are clamped).
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A snapshot of one shard's HTTP counters (also the accumulator, merged across shards).
#[derive(Clone, Debug)]
pub struct HttpStats {
    /// Requests answered, by status class (index 0 = 1xx ... 4 = 5xx).
    pub responses: [u64; 5],
    /// Request parse errors, by `RequestError::ALL` index.
    pub request_errors: Vec<u64>,
    /// Body errors, by `BodyError::ALL` index.
    pub body_errors: Vec<u64>,
    /// `100 Continue` interim responses sent.
    pub continues: u64,
    /// Request latency in microseconds: first byte of the request to its response being queued.
    pub latency: Histogram<u64>,
    /// Per-backend counters, indexed like the configuration's backends.
    pub backends: Vec<BackendStats>,
    /// TLS counters (listeners and backends).
    pub tls: coreplex_tls::TlsStats,
    /// HTTP/2 front-end counters.
    pub h2: H2Stats,
}

/// HTTP/2 front-end counters. Error-code arrays are indexed by `ErrorCode::slot`.
#[derive(Clone, Debug, Default)]
pub struct H2Stats {
    /// Connections that started speaking HTTP/2 (ALPN h2 or h2c).
    pub connections: u64,
    /// Such connections open now.
    pub connections_current: i64,
    /// Streams (requests) received.
    pub streams: u64,
    /// RST_STREAM received, by code.
    pub rst_received: [u64; 14],
    /// RST_STREAM sent for stream errors and early responses, by code.
    pub rst_sent: [u64; 14],
    /// GOAWAY sent, by code (ENHANCE_YOUR_CALM: a flood limit was hit).
    pub goaway_sent: [u64; 14],
    /// GOAWAY received, by code.
    pub goaway_received: [u64; 14],
    /// Streams open now (requests not yet answered, or answers still being sent).
    pub streams_current: i64,
    /// Closed connections by the streams each carried, by `STREAMS_PER_CONNECTION_BUCKETS`
    /// (cumulative counts are made when rendered; the last slot is beyond the last bound).
    pub streams_per_connection: [u64; STREAMS_PER_CONNECTION_BUCKETS.len() + 1],
    /// The streams of closed connections, summed (the histogram's `_sum`).
    pub streams_of_closed: u64,
    /// Connections cut by a flood limit, by `Flood::slot`.
    pub flood_hits: [u64; Flood::ALL.len()],
}

/// Upper bounds of the streams-per-connection histogram's buckets.
pub const STREAMS_PER_CONNECTION_BUCKETS: [u64; 6] = [1, 10, 100, 1_000, 10_000, 100_000];

impl H2Stats {
    /// Records a closed connection that carried `streams` streams.
    pub fn connection_closed(&mut self, streams: u64) {
        let slot = STREAMS_PER_CONNECTION_BUCKETS
            .iter()
            .position(|&b| streams <= b)
            .unwrap_or(STREAMS_PER_CONNECTION_BUCKETS.len());
        self.streams_per_connection[slot] += 1;
        self.streams_of_closed += streams;
    }

    fn merge(&mut self, o: &H2Stats) {
        self.connections += o.connections;
        self.connections_current += o.connections_current;
        self.streams += o.streams;
        self.streams_current += o.streams_current;
        self.streams_of_closed += o.streams_of_closed;
        for (x, y) in self
            .streams_per_connection
            .iter_mut()
            .zip(&o.streams_per_connection)
        {
            *x += y;
        }
        for (x, y) in self.flood_hits.iter_mut().zip(&o.flood_hits) {
            *x += y;
        }
        for (a, b) in [
            (&mut self.rst_received, &o.rst_received),
            (&mut self.rst_sent, &o.rst_sent),
            (&mut self.goaway_sent, &o.goaway_sent),
            (&mut self.goaway_received, &o.goaway_received),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

impl Default for HttpStats {
    fn default() -> Self {
        HttpStats {
            responses: [0; 5],
            request_errors: vec![0; RequestError::ALL.len()],
            body_errors: vec![0; BodyError::ALL.len()],
            continues: 0,
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("valid histogram bounds"),
            backends: Vec::new(),
            tls: coreplex_tls::TlsStats::default(),
            h2: H2Stats::default(),
        }
    }
}

impl HttpStats {
    /// Counts a response with `status`.
    pub fn response(&mut self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class] += 1;
    }

    /// Records a request latency.
    pub fn latency_us(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    /// Counts a request parse error.
    pub fn request_error(&mut self, e: RequestError) {
        if let Some(i) = RequestError::ALL.iter().position(|x| *x == e) {
            self.request_errors[i] += 1;
        }
    }

    /// Counts a body error.
    pub fn body_error(&mut self, e: BodyError) {
        if let Some(i) = BodyError::ALL.iter().position(|x| *x == e) {
            self.body_errors[i] += 1;
        }
    }

    /// Adds another shard's counters.
    pub fn merge(&mut self, o: &HttpStats) {
        for (a, b) in self.responses.iter_mut().zip(o.responses.iter()) {
            *a += b;
        }
        for (a, b) in self.request_errors.iter_mut().zip(o.request_errors.iter()) {
            *a += b;
        }
        for (a, b) in self.body_errors.iter_mut().zip(o.body_errors.iter()) {
            *a += b;
        }
        self.continues += o.continues;
        let _ = self.latency.add(&o.latency);
        if self.backends.len() < o.backends.len() {
            self.backends
                .resize_with(o.backends.len(), BackendStats::default);
        }
        for (a, b) in self.backends.iter_mut().zip(&o.backends) {
            a.merge(b);
        }
        self.tls.merge(&o.tls);
        self.h2.merge(&o.h2);
    }
}

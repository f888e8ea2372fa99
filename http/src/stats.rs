//! Per-shard HTTP statistics: requests by status class, parse errors by kind, request latency,
//! HTTP/2 and WebSocket counters.

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
    /// WebSocket endpoint counters.
    pub ws: WsStats,
    /// Upgrade tunnels to backends.
    pub tunnels: TunnelStats,
    /// PROXY protocol headers on listeners that accept them.
    pub proxy_protocol: ProxyProtocolStats,
}

/// PROXY protocol headers (`[listener.proxy_protocol]`), by outcome.
#[derive(Clone, Debug, Default)]
pub struct ProxyProtocolStats {
    /// Headers that named a client (v1 TCP4/TCP6, v2 PROXY).
    pub accepted: u64,
    /// Headers that named none (v1 UNKNOWN, v2 LOCAL: a balancer's health check).
    pub local: u64,
    /// Connections from trusted sources without a header (closed).
    pub missing: u64,
    /// Malformed or truncated headers, or too long (closed).
    pub malformed: u64,
    /// Headers from sources not in `trusted` (closed).
    pub untrusted: u64,
}

impl ProxyProtocolStats {
    fn merge(&mut self, o: &ProxyProtocolStats) {
        self.accepted += o.accepted;
        self.local += o.local;
        self.missing += o.missing;
        self.malformed += o.malformed;
        self.untrusted += o.untrusted;
    }
}

/// Upgrade tunnels (`proxy::tunnel`): HTTP/1.1 upgrades a backend accepted with 101.
#[derive(Clone, Debug, Default)]
pub struct TunnelStats {
    /// Tunnels opened for `Upgrade: websocket`.
    pub websocket: u64,
    /// Tunnels opened for other protocols a route allows.
    pub other: u64,
    /// Tunnels open now (client connections).
    pub current: i64,
    /// Of them, WebSocket tunnels.
    pub websocket_current: i64,
    /// Upgrade requests the backend answered with something other than 101 (passed on).
    pub refused: u64,
    /// Tunnels closed by `timeouts.tunnel` (or `client_fin`/`server_fin` once half-closed).
    pub timeouts: u64,
    /// Of the WebSocket tunnels, those carried as extended CONNECT streams over shared h2
    /// backend connections.
    pub over_h2: u64,
    /// RFC 8441 extended CONNECT streams of h2 clients that got their 200.
    pub h2_streams: u64,
    /// Of them, open now.
    pub h2_current: i64,
    /// Of those open, WebSockets.
    pub h2_websocket_current: i64,
}

impl TunnelStats {
    fn merge(&mut self, o: &TunnelStats) {
        self.websocket += o.websocket;
        self.other += o.other;
        self.current += o.current;
        self.websocket_current += o.websocket_current;
        self.refused += o.refused;
        self.timeouts += o.timeouts;
        self.over_h2 += o.over_h2;
        self.h2_streams += o.h2_streams;
        self.h2_current += o.h2_current;
        self.h2_websocket_current += o.h2_websocket_current;
    }
}

/// The close codes counted by name ([`WsStats::close_slot`]); the last slot is any other code.
pub const WS_CLOSE_CODES: [(u16, &str); 11] = [
    (1000, "1000"),
    (1001, "1001"),
    (1002, "1002"),
    (1003, "1003"),
    (1005, "none"),
    (1007, "1007"),
    (1008, "1008"),
    (1009, "1009"),
    (1010, "1010"),
    (1011, "1011"),
    (0, "other"),
];

/// WebSocket endpoint counters (echo endpoints, terminated here).
#[derive(Clone, Debug, Default)]
pub struct WsStats {
    /// Upgrades accepted (101).
    pub upgrades: u64,
    /// Upgrade requests refused (426, 405, 400).
    pub refused: u64,
    /// WebSockets open now.
    pub current: i64,
    /// Upgrades that negotiated permessage-deflate.
    pub deflate: u64,
    /// Data messages received and sent.
    pub messages_in: u64,
    /// Data messages sent.
    pub messages_out: u64,
    /// Frames received (data and control).
    pub frames_in: u64,
    /// Frames sent (data and control).
    pub frames_out: u64,
    /// Pings received (each answered with a pong).
    pub pings_in: u64,
    /// Pings sent to silent WebSockets (`ping_interval`).
    pub pings_sent: u64,
    /// WebSockets closed because a ping went unanswered.
    pub pings_unanswered: u64,
    /// WebSockets closed (1008) for sending beyond `max_message_rate`.
    pub rate_limited: u64,
    /// Compressed bytes received, and what they inflated to.
    pub deflated_in: u64,
    /// What received compressed bytes inflated to.
    pub inflated_in: u64,
    /// Plaintext bytes compressed for sending, and what they compressed to.
    pub plain_out: u64,
    /// What plaintext compressed for sending came to.
    pub deflated_out: u64,
    /// Close frames received, by [`WS_CLOSE_CODES`] slot.
    pub closes_in: [u64; WS_CLOSE_CODES.len()],
    /// Close frames sent, by [`WS_CLOSE_CODES`] slot.
    pub closes_out: [u64; WS_CLOSE_CODES.len()],
}

impl WsStats {
    /// Counts what went to a client.
    pub(crate) fn count_out(&mut self, sent: crate::websocket::Sent) {
        self.frames_out += sent.frames;
        self.messages_out += u64::from(sent.message_done);
    }

    /// The slot of close code `code` (`None`: a close frame without one).
    pub fn close_slot(code: Option<u16>) -> usize {
        let c = code.unwrap_or(1005);
        WS_CLOSE_CODES
            .iter()
            .position(|&(k, _)| k == c)
            .unwrap_or(WS_CLOSE_CODES.len() - 1)
    }

    fn merge(&mut self, o: &WsStats) {
        self.upgrades += o.upgrades;
        self.refused += o.refused;
        self.current += o.current;
        self.deflate += o.deflate;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.frames_in += o.frames_in;
        self.frames_out += o.frames_out;
        self.pings_in += o.pings_in;
        self.pings_sent += o.pings_sent;
        self.pings_unanswered += o.pings_unanswered;
        self.rate_limited += o.rate_limited;
        self.deflated_in += o.deflated_in;
        self.inflated_in += o.inflated_in;
        self.plain_out += o.plain_out;
        self.deflated_out += o.deflated_out;
        for (x, y) in self.closes_in.iter_mut().zip(&o.closes_in) {
            *x += y;
        }
        for (x, y) in self.closes_out.iter_mut().zip(&o.closes_out) {
            *x += y;
        }
    }
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
            ws: WsStats::default(),
            tunnels: TunnelStats::default(),
            proxy_protocol: ProxyProtocolStats::default(),
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
        self.ws.merge(&o.ws);
        self.tunnels.merge(&o.tunnels);
        self.proxy_protocol.merge(&o.proxy_protocol);
    }
}

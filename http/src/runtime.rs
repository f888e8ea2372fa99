//! The runtime tables the HTTP service takes, built and validated by the configuration
//! (`coreplex::config`): listeners with their routes, timeouts, limits, TLS and HTTP/2 settings,
//! and backends with their servers, pool policy and protocol. Plain data: no parsing here.

use coreplex_pool::BackendPolicy;
use coreplex_protocol::h1::Limits;
use coreplex_protocol::h2::conn::Settings;
use coreplex_tls::settings::ServerSettings;
use std::net::SocketAddr;
use std::time::Duration;

/// TCP keepalive settings of a socket (`SO_KEEPALIVE`, `TCP_KEEPIDLE/INTVL/CNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

/// One server of a backend.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where to connect.
    pub address: SocketAddr,
    /// Name in the metrics (default: the address).
    pub name: String,
    /// TLS to this server (the backend's settings with this server's name and address).
    pub tls: Option<coreplex_tls::settings::ClientSettings>,
}

/// A validated backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Name (the key under `[backend]`).
    pub name: String,
    /// Servers, indexed like the policy's.
    pub servers: Vec<Server>,
    /// The whole process's policy; shards take [`Backend::policy_for_shard`].
    pub policy: BackendPolicy,
    /// Connect-failure retries of one request (another server preferred).
    pub retries: u32,
    /// The backend's timeout profile (`connect`, `server`, `server_fin`, `queue`, `tunnel` apply).
    pub timeouts: Timeouts,
    /// TCP keepalive on backend connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Add `X-Forwarded-For` and `X-Forwarded-Proto` (default on).
    pub forwarded_for: bool,
    /// Add an RFC 7239 `Forwarded` header (default off).
    pub forwarded: bool,
    /// Add `Via: 1.1 coreplex` to requests (default on, RFC 9110 §7.6.3).
    pub via: bool,
    /// What a client's half-close (FIN after a complete request, before the response starts)
    /// does to the backend side.
    pub client_close: ClientClose,
    /// What HTTP/2 clients' streams travel over (HTTP/1.1 clients always use HTTP/1.1).
    pub protocol: BackendProtocol,
    /// Our side of h2 connections to the servers (`[backend.NAME.http2]`): streams per
    /// connection at most, windows, frame and header limits.
    pub http2: coreplex_protocol::h2::conn::Settings,
    /// A PROXY protocol header first on every backend connection, naming its client.
    pub send_proxy: Option<ProxyVersion>,
}

/// `send_proxy`: which PROXY protocol header a backend connection starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text line (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// `protocol`: how streams of HTTP/2 clients reach the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1: a connection per stream in flight.
    H1,
    /// HTTP/2, multiplexed: ALPN `h2` over TLS, h2c with prior knowledge on plaintext.
    H2,
    /// HTTP/2 where the server speaks it, else HTTP/1.1, learned per server: over TLS by ALPN
    /// (`h2`, `http/1.1` offered), on plaintext by trying h2c (a server that answers the
    /// preface with an HTTP/1 response, or closes before its SETTINGS, is taken as HTTP/1.1;
    /// h2 is tried again a minute later).
    Auto,
}

/// What a client's FIN before the response does (`client_close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClose {
    /// Pass the half-close on to the backend (its connection is then not reused): a backend
    /// that still answers reaches the half-closed client, one that treats it as an abort stops
    /// its work. The default.
    Forward,
    /// Close the backend connection at once (nginx's `proxy_ignore_client_abort off`).
    Abort,
    /// Keep waiting for the response, backend connection reusable (HAProxy without
    /// `option abortonclose`).
    Wait,
}

impl Backend {
    /// This shard's share of the limits (see the `pool` crate's `config` module docs).
    pub fn policy_for_shard(&self, shard: usize, shards: usize) -> BackendPolicy {
        let mut p = self.policy.clone();
        let share = |v: u64| coreplex_engine::limits::shard_share(v, shards, shard);
        let part32 =
            |v: Option<u32>| v.map(|x| u32::try_from(share(u64::from(x))).unwrap_or(u32::MAX));
        let part =
            |v: Option<usize>| v.map(|x| usize::try_from(share(x as u64)).unwrap_or(usize::MAX));
        for s in &mut p.servers {
            s.maxconn = part32(s.maxconn);
            s.maxqueue = part32(s.maxqueue);
            s.conn_rate = part32(s.conn_rate);
        }
        p.maxconn = part32(p.maxconn);
        p.queue_cap = part(p.queue_cap);
        p.max_idle_per_server = part(p.max_idle_per_server);
        p
    }
}

/// A direct response, as configured.
#[derive(Debug, Clone)]
pub struct Respond {
    /// Status code (200..=599).
    pub status: u16,
    /// Extra headers, in file order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Answer directly.
    Respond(Respond),
    /// Forward to the backend with this index in the configuration's backends.
    Backend(usize),
    /// A WebSocket endpoint that echoes every message (RFC 6455, terminated here).
    WebSocketEcho,
    /// A WebSocket-aware route: the client's framing ends here (permessage-deflate, pings,
    /// limits), messages go on uncompressed over a WebSocket to the backend with this index.
    WebSocketProxy(usize),
}

/// A route of a listener.
#[derive(Debug, Clone)]
pub struct Route {
    /// Host to match (lowercase, without port); any host when `None`.
    pub host: Option<String>,
    /// Path to match.
    pub path: PathMatch,
    /// What to do.
    pub action: RouteAction,
    /// The `Upgrade` protocols (lowercase) a backend route tunnels: an HTTP/1.1 request asking
    /// for one of them goes to the backend with its `Upgrade`, and a 101 makes the pair a byte
    /// tunnel. Empty on other routes.
    pub upgrade: Vec<String>,
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name (for logs and metrics).
    pub name: String,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// listen(2) backlog.
    pub backlog: i32,
    /// New connections per second (whole process, split among shards); `None` unlimited.
    pub rate_limit: Option<u32>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Request limits.
    pub limits: Limits,
    /// TCP keepalive on accepted connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Routes, first match wins; no match answers 404.
    pub routes: Vec<Route>,
    /// TLS on this listener.
    pub tls: Option<ListenerTls>,
    /// HTTP/2 settings; whether h2 is spoken: ALPN `h2` on TLS, `h2c` on plaintext.
    pub http2: Http2,
    /// What WebSocket endpoints (routes with `websocket`) accept.
    pub websocket: WebSocket,
    /// PROXY protocol headers accepted from trusted sources.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The access log this listener's requests go to: its number among the process's logs
    /// (one per distinct destination) and the line format.
    pub access_log: Option<(usize, crate::access_log::LogFormat)>,
}

/// `[listener.proxy_protocol]`: PROXY protocol v1/v2 headers, accepted from these sources only.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// Source networks that must send a header (anyone else is served as is, and closed if it
    /// sends one).
    pub trusted: Vec<ipnet::IpNet>,
    /// How long the header may take to arrive.
    pub timeout: Duration,
}

impl ProxyProtocol {
    /// Whether `ip` is a trusted source (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

impl Listener {
    /// Whether connections may speak HTTP/2 (offered by ALPN, or h2c on plaintext).
    pub fn speaks_h2(&self) -> bool {
        match &self.tls {
            Some(t) => t.settings.alpn.iter().any(|a| a == "h2"),
            None => self.http2.h2c,
        }
    }
}

/// A resolved timeout profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request head must arrive within this (408 otherwise).
    pub http_request: Duration,
    /// Wait for the next request after a response (silent close).
    pub http_keep_alive: Duration,
    /// Client inactivity while it is expected to send a body or read a response.
    pub client: Duration,
    /// Client inactivity once one direction is shut (a final response being read).
    pub client_fin: Duration,
    /// A backend connection attempt must succeed within this.
    pub connect: Duration,
    /// Server inactivity: the wait for the response head, then between response bytes.
    pub server: Duration,
    /// Server inactivity once the backend connection is half-closed.
    pub server_fin: Duration,
    /// The longest a request waits in a server or backend queue (503 after).
    pub queue: Duration,
    /// Inactivity on both sides of an upgraded connection.
    pub tunnel: Duration,
    /// A TLS handshake must finish within this (HAProxy's `timeout client-hs`).
    pub client_hs: Duration,
}

/// HTTP/2 on a listener, validated.
#[derive(Debug, Clone, Copy)]
pub struct Http2 {
    /// Plaintext connections that start with the HTTP/2 preface speak h2c (prior knowledge).
    pub h2c: bool,
    /// What each connection advertises and enforces.
    pub settings: Settings,
    /// How long an h2 connection may stay without an open stream (then GOAWAY and close);
    /// `None`: the listener's `http_keep_alive`.
    pub idle_timeout: Option<Duration>,
}

/// WebSocket endpoints on a listener, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocket {
    /// The longest frame payload accepted (1009 beyond it).
    pub max_frame: u64,
    /// The longest message accepted, inflated where compressed (1009 beyond it).
    pub max_message: u64,
    /// permessage-deflate: the window bits the server compresses with and allows a client
    /// that keeps context; `None`: offers are declined.
    pub deflate: Option<coreplex_protocol::ws::deflate::DeflateConfig>,
    /// A silent WebSocket gets a ping after this long; one that stays silent as long again is
    /// closed (1001). `None`: no pings, an idle one closes after `timeouts.tunnel`.
    pub ping_interval: Option<Duration>,
    /// Proxied routes: a message from the backend shorter than this goes to a client that
    /// negotiated permessage-deflate uncompressed (not worth the CPU).
    pub compression_threshold: u64,
    /// zlib's level (1-9) for messages compressed for clients.
    pub compression_level: u8,
    /// Data messages a client may send per second (a fixed one-second window); beyond, the
    /// connection is closed with 1008. `None`: no limit.
    pub max_message_rate: Option<u32>,
}

impl Default for WebSocket {
    /// 16 MiB frames and messages, permessage-deflate with 15-bit windows.
    fn default() -> Self {
        WebSocket {
            max_frame: 16 << 20,
            max_message: 16 << 20,
            deflate: Some(Default::default()),
            ping_interval: None,
            compression_threshold: 0,
            compression_level: 6,
            max_message_rate: None,
        }
    }
}

/// A listener's TLS, validated.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// For the TLS crate.
    pub settings: ServerSettings,
    /// New TLS sessions per second (whole process, split among shards).
    pub session_rate: Option<u32>,
}

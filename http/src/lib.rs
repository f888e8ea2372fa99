//! The HTTP server service that runs inside each shard: parses HTTP/1.1 requests with
//! `coreplex-protocol` (and drives HTTP/2 connections through its `h2` module, in `h2.rs`),
//! matches routes, writes direct responses or forwards to backends through the [`proxy`],
//! enforces timeouts and limits, and keeps per-shard statistics. It takes the runtime tables
//! ([`runtime`]) that `coreplex::config` builds; nothing here reads configuration files.

mod access_log;
mod h2;
pub mod proxy;
mod proxy_header;
mod response;
pub mod runtime;
pub use access_log::{json_str, LogFormat, ReopenLogs};
mod service;
mod stats;
mod websocket;
mod ws_deflate;
mod ws_proxy;

pub use proxy::BackendRuntime;
pub use service::{HttpService, ListenerRuntime};
pub use stats::{
    H2Stats, HttpStats, TunnelStats, WsStats, STREAMS_PER_CONNECTION_BUCKETS, WS_CLOSE_CODES,
};

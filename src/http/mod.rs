//! The HTTP/1.1 server service that runs inside each shard: parses requests with
//! `coreplex-protocol`, matches routes, writes direct responses, enforces timeouts and limits, and
//! keeps per-shard statistics.

mod response;
mod service;
mod stats;

pub use service::{HttpService, ListenerRuntime};
pub use stats::HttpStats;

//! What the engine's integration tests share: a one-shard runtime configuration listening on a
//! loopback port.

use coreplex_engine::{ListenerSpec, RuntimeConfig, ShardConfig};
use std::time::Duration;

/// One shard on the first allowed CPU, one listener on 127.0.0.1 (a free port), 64 connections,
/// 64 receive buffers of 4 KiB, 200 ms linger, 64 KiB of buffered input, no outbound connections.
/// Tests change the fields they need.
pub fn one_shard() -> RuntimeConfig {
    RuntimeConfig {
        cpus: vec![coreplex_engine::cpus::allowed_cpus()[0]],
        listeners: vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            backlog: 128,
            rate_limit: None,
            preface: None,
        }],
        shard: ShardConfig {
            max_connections: 64,
            ring_entries: 256,
            buffers: 64,
            buffer_size: 4096,
            linger: Duration::from_millis(200),
            max_input: 1 << 16,
            max_outbound: 0,
        },
    }
}

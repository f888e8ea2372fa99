//! `[listener.websocket]`: what the listener's WebSocket endpoints (routes with `websocket`)
//! accept: frame and message limits, permessage-deflate with its window bits and the size
//! below which proxied messages go uncompressed, a message rate limit, and pings to silent
//! clients.

use super::{err, ConfigError};
use crate::units::{Bytes, Dur};
pub use coreplex_http::runtime::WebSocket;
use coreplex_protocol::ws::deflate::DeflateConfig;
use serde::Deserialize;

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebSocket {
    max_frame: Option<Bytes>,
    max_message: Option<Bytes>,
    compression: Option<bool>,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<u8>,
    ping_interval: Option<Dur>,
    compression_threshold: Option<Bytes>,
    compression_level: Option<u8>,
    max_message_rate: Option<u32>,
}

/// Validates `[listener.websocket]`.
pub(super) fn validate(
    raw: Option<&RawWebSocket>,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> WebSocket {
    let raw = raw.cloned().unwrap_or_default();
    let d = WebSocket::default();
    let size = |v: Option<Bytes>, default: u64, key: &str, errors: &mut Vec<ConfigError>| {
        let n = v.map_or(default, |b| b.0);
        if !(125..=1 << 30).contains(&n) {
            errors.push(err(
                format!("{p}.{key}"),
                "must be between 125 bytes and 1GiB",
            ));
            return default;
        }
        n
    };
    let max_message = size(raw.max_message, d.max_message, "max_message", errors);
    let max_frame = size(
        raw.max_frame,
        d.max_frame.min(max_message),
        "max_frame",
        errors,
    );
    let server = raw.server_max_window_bits.unwrap_or(15);
    if !(9..=15).contains(&server) {
        errors.push(err(
            format!("{p}.server_max_window_bits"),
            "must be between 9 and 15 (zlib's raw deflate has no 8-bit window)",
        ));
    }
    let client = raw.client_max_window_bits.unwrap_or(15);
    if !(8..=15).contains(&client) {
        errors.push(err(
            format!("{p}.client_max_window_bits"),
            "must be between 8 and 15",
        ));
    }
    let compression = raw.compression.unwrap_or(true);
    if !compression
        && (raw.server_max_window_bits.is_some() || raw.client_max_window_bits.is_some())
    {
        errors.push(err(
            p.to_string(),
            "window bits are set but compression = false: leave them out or enable compression",
        ));
    }
    let ping_interval = raw.ping_interval.map(|d| d.0);
    if ping_interval.is_some_and(|d| d < std::time::Duration::from_millis(100)) {
        errors.push(err(format!("{p}.ping_interval"), "must be at least 100ms"));
    }
    let compression_threshold = raw
        .compression_threshold
        .map_or(d.compression_threshold, |b| b.0);
    if compression_threshold > max_message {
        errors.push(err(
            format!("{p}.compression_threshold"),
            "must not exceed max_message",
        ));
    }
    let compression_level = raw.compression_level.unwrap_or(d.compression_level);
    if !(1..=9).contains(&compression_level) {
        errors.push(err(
            format!("{p}.compression_level"),
            "must be between 1 (fastest) and 9 (smallest)",
        ));
    }
    if raw.max_message_rate == Some(0) {
        errors.push(err(
            format!("{p}.max_message_rate"),
            "must be at least 1 message per second (leave it out for no limit)",
        ));
    }
    WebSocket {
        max_message_rate: raw.max_message_rate.filter(|&r| r > 0),
        ping_interval,
        compression_threshold,
        compression_level: compression_level.clamp(1, 9),
        max_frame,
        max_message,
        deflate: compression.then_some(DeflateConfig {
            server_max_window_bits: server.clamp(9, 15),
            client_max_window_bits: client.clamp(8, 15),
        }),
    }
}

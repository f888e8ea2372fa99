//! `[listener.http2]`: HTTP/2 on a listener (over TLS by ALPN `h2`, or h2c with prior
//! knowledge on plaintext) and the settings it advertises and enforces.

use super::{err, ConfigError};
use crate::units::{Bytes, Dur};
pub use coreplex_http::runtime::Http2;
use coreplex_protocol::h2::conn::Settings;
use serde::Deserialize;

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp2 {
    h2c: Option<bool>,
    max_concurrent_streams: Option<u32>,
    initial_window_size: Option<Bytes>,
    connection_window_size: Option<Bytes>,
    max_frame_size: Option<Bytes>,
    header_table_size: Option<Bytes>,
    max_header_list_size: Option<Bytes>,
    idle_timeout: Option<Dur>,
}

impl RawHttp2 {
    /// Whether keys that only mean something on a listener are set.
    pub(super) fn sets_listener_keys(&self) -> bool {
        self.h2c.is_some() || self.idle_timeout.is_some()
    }
}

fn within(
    v: Option<Bytes>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    p: &str,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> u32 {
    let n = v.map_or(default, |b| b.0);
    if !range.contains(&n) {
        errors.push(err(p.to_string(), what));
        return default as u32;
    }
    n as u32
}

/// Validates `[listener.http2]`; `max_header_bytes` (the listener's head limit) is the default
/// header list size.
pub(super) fn validate(
    raw: Option<&RawHttp2>,
    max_header_bytes: usize,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> Http2 {
    let raw = raw.cloned().unwrap_or_default();
    let mut s = Settings::default();
    let streams = raw.max_concurrent_streams.unwrap_or(100);
    if !(1..=10_000).contains(&streams) {
        errors.push(err(
            format!("{p}.max_concurrent_streams"),
            "must be between 1 and 10000",
        ));
    } else {
        s.max_concurrent_streams = streams;
    }
    s.initial_window_size = within(
        raw.initial_window_size,
        65_535,
        1024..=(1 << 31) - 1,
        &format!("{p}.initial_window_size"),
        "must be between 1KiB and 2GiB - 1 byte",
        errors,
    );
    s.connection_window = within(
        raw.connection_window_size,
        1 << 20,
        65_535..=(1 << 31) - 1,
        &format!("{p}.connection_window_size"),
        "must be between 65535 bytes and 2GiB - 1 byte",
        errors,
    );
    s.max_frame_size = within(
        raw.max_frame_size,
        16_384,
        16_384..=(1 << 24) - 1,
        &format!("{p}.max_frame_size"),
        "must be between 16KiB and 16MiB - 1 byte (RFC 9113 section 6.5.2)",
        errors,
    );
    s.header_table_size = within(
        raw.header_table_size,
        4096,
        0..=1 << 16,
        &format!("{p}.header_table_size"),
        "must be at most 64KiB",
        errors,
    );
    s.max_header_list_size = within(
        raw.max_header_list_size,
        max_header_bytes as u64,
        256..=1 << 20,
        &format!("{p}.max_header_list_size"),
        "must be between 256 bytes and 1MiB",
        errors,
    );
    // A header block may be up to twice the list it decodes to (literals), and may arrive in
    // frames of any size: bound what one block may take.
    s.limits.max_block_bytes = (2 * s.max_header_list_size).max(16 << 10) + 1024;
    s.limits.reset_burst = (2 * s.max_concurrent_streams).max(200);
    s.limits.resets_per_sec = s.max_concurrent_streams.max(100);
    let idle_timeout = raw.idle_timeout.map(|d| d.0);
    if idle_timeout.is_some_and(|d| d.is_zero()) {
        errors.push(err(
            format!("{p}.idle_timeout"),
            "must be above 0 (leave it out to use timeouts.http_keep_alive)",
        ));
    }
    Http2 {
        h2c: raw.h2c.unwrap_or(false),
        settings: s,
        idle_timeout,
    }
}

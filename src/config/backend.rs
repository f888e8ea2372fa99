//! `[backend.NAME]`: servers, balancing, reuse mode, pool sizing, limits, health, timeouts and
//! TCP keepalive of one backend, validated into a [`Backend`] whose [`BackendPolicy`] the shards
//! split with [`Backend::policy_for_shard`].

use super::timeouts::RawTimeouts;
use super::{err, ConfigError};
use crate::units::Dur;
pub use coreplex_http::runtime::{
    Backend, BackendProtocol, ClientClose, ProxyVersion, Server, TcpKeepalive,
};
use coreplex_pool::{BackendPolicy, Balance, ReuseMode, ServerPolicy};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawServer {
    address: String,
    name: Option<String>,
    weight: Option<u32>,
    maxconn: Option<u32>,
    maxqueue: Option<u32>,
    conn_rate: Option<u32>,
    sni: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawPool {
    max_idle_per_server: Option<usize>,
    idle_timeout: Option<Dur>,
    purge_delay: Option<Dur>,
    max_reuse: Option<u32>,
    max_private_per_session: Option<usize>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    fail_threshold: Option<u32>,
    down_for: Option<Dur>,
}

/// TCP keepalive probes, as written.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeepalive {
    idle: Option<Dur>,
    interval: Option<Dur>,
    count: Option<u32>,
}

impl RawKeepalive {
    pub(super) fn validate(&self, p: &str, errors: &mut Vec<ConfigError>) -> TcpKeepalive {
        let k = TcpKeepalive {
            idle: self.idle.map_or(Duration::from_secs(60), |d| d.0),
            interval: self.interval.map_or(Duration::from_secs(10), |d| d.0),
            count: self.count.unwrap_or(6),
        };
        for (key, d) in [("idle", k.idle), ("interval", k.interval)] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(32767) {
                errors.push(err(
                    format!("{p}.{key}"),
                    "must be between 1s and 32767s (kernel limit, whole seconds)",
                ));
            }
        }
        if !(1..=127).contains(&k.count) {
            errors.push(err(format!("{p}.count"), "must be between 1 and 127"));
        }
        k
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    #[serde(default)]
    servers: Vec<RawServer>,
    balance: Option<String>,
    reuse: Option<String>,
    maxconn: Option<u32>,
    queue_length: Option<usize>,
    retries: Option<u32>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    health: RawHealth,
    tcp_keepalive: Option<RawKeepalive>,
    forwarded_for: Option<bool>,
    forwarded: Option<bool>,
    via: Option<bool>,
    client_close: Option<String>,
    tls: Option<super::tls::RawBackendTls>,
    protocol: Option<String>,
    http2: Option<super::http2::RawHttp2>,
    send_proxy: Option<String>,
}

impl RawBackend {
    /// Makes the paths of its TLS settings relative to `base`.
    pub(super) fn rebase(&mut self, base: &std::path::Path) {
        if let Some(t) = &mut self.tls {
            t.rebase(base);
        }
    }
}

pub(super) fn validate(
    name: &str,
    raw: RawBackend,
    defaults: &RawTimeouts,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Backend {
    let p = format!("backend.{name}");
    let protocol = match raw.protocol.as_deref() {
        None | Some("h1") => BackendProtocol::H1,
        Some("h2") => BackendProtocol::H2,
        Some("auto") => BackendProtocol::Auto,
        Some(other) => {
            errors.push(err(
                format!("{p}.protocol"),
                format!("unknown protocol {other:?}: expected \"h1\", \"h2\" or \"auto\""),
            ));
            BackendProtocol::H1
        }
    };
    let http2 = backend_http2(raw.http2.as_ref(), &format!("{p}.http2"), errors);
    let tls = raw
        .tls
        .as_ref()
        .map(|t| super::tls::validate_backend(t, &format!("{p}.tls"), errors, warnings));
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        errors.push(err(
            &p,
            "backend names may use letters, digits, '_', '-' and '.'",
        ));
    }
    if raw.servers.is_empty() {
        errors.push(err(
            format!("{p}.servers"),
            "at least one server is required: servers = [ { address = \"127.0.0.1:8080\" } ]",
        ));
    }
    let mut servers = Vec::new();
    let mut policies = Vec::new();
    for (i, s) in raw.servers.iter().enumerate() {
        let sp = format!("{p}.servers[{i}]");
        let address = match s.address.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => a,
            _ => {
                errors.push(err(
                    format!("{sp}.address"),
                    format!(
                        "invalid address {:?}: expected ip:port such as \"127.0.0.1:8080\"",
                        s.address
                    ),
                ));
                SocketAddr::from(([127, 0, 0, 1], 1))
            }
        };
        for (key, v) in [("maxconn", s.maxconn), ("conn_rate", s.conn_rate)] {
            if v == Some(0) {
                errors.push(err(
                    format!("{sp}.{key}"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        let name = s.name.clone().unwrap_or_else(|| address.to_string());
        if servers.iter().any(|x: &Server| x.name == name) {
            errors.push(err(
                format!("{sp}.name"),
                format!("duplicate server name {name:?}"),
            ));
        }
        if s.sni.is_some() && tls.is_none() {
            errors.push(err(
                format!("{sp}.sni"),
                "needs TLS: add tls = { ... } to the backend",
            ));
        }
        let server_tls = tls.as_ref().map(|t| {
            let mut c = t.settings.clone();
            c.address = address.ip();
            if let Some(sni) = &s.sni {
                c.server_name = Some(sni.clone());
            }
            c
        });
        servers.push(Server {
            address,
            name,
            tls: server_tls,
        });
        policies.push(ServerPolicy {
            weight: s.weight.unwrap_or(1),
            maxconn: s.maxconn,
            maxqueue: s.maxqueue,
            conn_rate: s.conn_rate,
        });
    }
    if !policies.is_empty() && policies.iter().all(|s| s.weight == 0) {
        errors.push(err(
            format!("{p}.servers"),
            "at least one server needs a weight above 0",
        ));
    }
    let mut policy = BackendPolicy::new(policies);
    policy.balance = match raw.balance.as_deref() {
        None | Some("roundrobin") => Balance::RoundRobin,
        Some("leastconn") => Balance::LeastConn,
        Some(other) => {
            errors.push(err(
                format!("{p}.balance"),
                format!("unknown balance {other:?}: expected \"roundrobin\" or \"leastconn\""),
            ));
            Balance::RoundRobin
        }
    };
    policy.reuse = match raw.reuse.as_deref() {
        None | Some("safe") => ReuseMode::Safe,
        Some("never") => ReuseMode::Never,
        Some("aggressive") => ReuseMode::Aggressive,
        Some("always") => ReuseMode::Always,
        Some(other) => {
            errors.push(err(
                format!("{p}.reuse"),
                format!(
                    "unknown reuse mode {other:?}: expected \"never\", \"safe\", \"aggressive\" or \"always\""
                ),
            ));
            ReuseMode::Safe
        }
    };
    let send_proxy = match raw.send_proxy.as_deref() {
        None => None,
        Some("v1") => Some(ProxyVersion::V1),
        Some("v2") => Some(ProxyVersion::V2),
        Some(other) => {
            errors.push(err(
                format!("{p}.send_proxy"),
                format!("unknown PROXY protocol version {other:?}: expected \"v1\" or \"v2\""),
            ));
            None
        }
    };
    if send_proxy.is_some() {
        // The header names one client: a connection carries that client's requests only.
        if raw.reuse.as_deref().is_some_and(|r| r != "never") {
            errors.push(err(
                format!("{p}.reuse"),
                "with send_proxy a backend connection carries one client's requests (its PROXY header names that client): leave reuse out or set \"never\"",
            ));
        }
        policy.reuse = ReuseMode::Never;
        if protocol != BackendProtocol::H1 {
            errors.push(err(
                format!("{p}.send_proxy"),
                "needs protocol = \"h1\": a multiplexed h2 connection carries many clients' streams, and a PROXY header names one",
            ));
        }
    }
    if raw.maxconn == Some(0) {
        errors.push(err(
            format!("{p}.maxconn"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    policy.maxconn = raw.maxconn;
    policy.queue_cap = raw.queue_length;
    let timeouts = defaults.overlay(&raw.timeouts).resolve();
    policy.queue_timeout = timeouts.queue;
    if timeouts.connect.is_zero() {
        errors.push(err(format!("{p}.timeouts.connect"), "must be above 0"));
    }
    let pool = &raw.pool;
    policy.max_idle_per_server = pool.max_idle_per_server;
    if let Some(d) = pool.idle_timeout {
        policy.idle_timeout = d.0;
    }
    if let Some(d) = pool.purge_delay {
        if d.0.is_zero() {
            errors.push(err(format!("{p}.pool.purge_delay"), "must be above 0"));
        } else {
            policy.purge_delay = d.0;
        }
    }
    policy.max_reuse = pool.max_reuse;
    if let Some(m) = pool.max_private_per_session {
        policy.max_private_per_session = m;
    }
    if let Some(t) = raw.health.fail_threshold {
        policy.fail_threshold = t;
    }
    if let Some(d) = raw.health.down_for {
        policy.down_for = d.0;
    }
    let retries = raw.retries.unwrap_or(3);
    if retries > 100 {
        errors.push(err(format!("{p}.retries"), "must be at most 100"));
    }
    let tcp_keepalive = raw
        .tcp_keepalive
        .map(|k| k.validate(&format!("{p}.tcp_keepalive"), errors));
    Backend {
        name: name.to_string(),
        servers,
        policy,
        retries,
        timeouts,
        tcp_keepalive,
        forwarded_for: raw.forwarded_for.unwrap_or(true),
        forwarded: raw.forwarded.unwrap_or(false),
        via: raw.via.unwrap_or(true),
        client_close: match raw.client_close.as_deref() {
            None | Some("forward") => ClientClose::Forward,
            Some("abort") => ClientClose::Abort,
            Some("wait") => ClientClose::Wait,
            Some(other) => {
                errors.push(err(
                    format!("{p}.client_close"),
                    format!("unknown value {other:?}: expected \"forward\", \"abort\" or \"wait\""),
                ));
                ClientClose::Forward
            }
        },
        protocol,
        http2,
        send_proxy,
    }
}

/// `[backend.NAME.http2]`: the listener keys that make sense for a client (`h2c` and
/// `idle_timeout` do not: `protocol` and `pool.idle_timeout` say those).
fn backend_http2(
    raw: Option<&super::http2::RawHttp2>,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> coreplex_protocol::h2::conn::Settings {
    let h = super::http2::validate(raw, 64 * 1024, p, errors);
    if raw.is_some_and(|r| r.sets_listener_keys()) {
        errors.push(err(
            p.to_string(),
            "h2c and idle_timeout are listener keys: use protocol and pool.idle_timeout",
        ));
    }
    h.settings
}

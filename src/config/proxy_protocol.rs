//! `[listener.proxy_protocol]`: accept the PROXY protocol (v1 and v2, told apart by their
//! signatures) from an L4 balancer or another proxy, only from the source networks in `trusted`.
//! A trusted source must send a header; a connection from any other source is served as it is,
//! and closed if it sends a header (a client cannot claim another's address).

use super::{err, ConfigError};
use crate::units::Dur;
pub use coreplex_http::runtime::ProxyProtocol;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyProtocol {
    trusted: Vec<String>,
    timeout: Option<Dur>,
}

/// Validates `[listener.proxy_protocol]` (`p` is its key path); the header's deadline defaults
/// to the listener's `http_request` timeout.
pub(super) fn validate(
    raw: Option<&RawProxyProtocol>,
    default_timeout: Duration,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ProxyProtocol> {
    let raw = raw?;
    let mut trusted = Vec::with_capacity(raw.trusted.len());
    for (i, net) in raw.trusted.iter().enumerate() {
        // A bare address is a network of one.
        let parsed = net
            .parse::<ipnet::IpNet>()
            .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => trusted.push(n.trunc()),
            Err(_) => errors.push(err(
                format!("{p}.trusted[{i}]"),
                format!(
                    "{net:?} is not a network (\"10.0.0.0/8\", \"2001:db8::/32\") or an address"
                ),
            )),
        }
    }
    if raw.trusted.is_empty() {
        errors.push(err(
            format!("{p}.trusted"),
            "lists no network: name the balancers' source networks (a header from anyone else is refused)",
        ));
    }
    let timeout = raw.timeout.map_or(default_timeout, |d| d.0);
    if timeout.is_zero() {
        errors.push(err(format!("{p}.timeout"), "must be above 0"));
    }
    Some(ProxyProtocol { trusted, timeout })
}

//! TLS in the configuration: `listener[].tls` (certificates, names, versions, suites, groups,
//! ALPN, client certificates, session cache, new-session rate), `global.tls` (ticket keys:
//! a shared file or generated and rotated) and `backend.NAME.tls` (CA, verification, SNI, client
//! certificate, ALPN). Validation loads every certificate and key, so `coreplex check` reports
//! unreadable files, mismatched keys, certificates out of their validity period (and warns 30 days
//! before expiry), names a certificate does not cover and unknown suite or group names, each with
//! its key path.

use super::{err, ConfigError};
use crate::units::Dur;
pub use coreplex_http::runtime::ListenerTls;
use coreplex_tls::settings::{
    CertSpec, ClientAuth, ClientSettings, Roots, ServerSettings, TicketKeys, TicketSettings,
    Version,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCert {
    cert: String,
    key: String,
    names: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerTls {
    #[serde(default)]
    certificates: Vec<RawCert>,
    unknown_sni: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    alpn: Option<Vec<String>>,
    client_ca: Option<String>,
    client_auth: Option<String>,
    session_cache: Option<usize>,
    tls13_tickets: Option<usize>,
    session_rate: Option<u32>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobalTls {
    tickets: Option<bool>,
    ticket_key_file: Option<String>,
    ticket_lifetime: Option<Dur>,
    ticket_rotate: Option<Dur>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    ca: Option<String>,
    verify: Option<bool>,
    sni: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    alpn: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    resumption_cache: Option<usize>,
}

/// `path` relative to `base` unless it is absolute (paths in a file are relative to the file).
fn rebase_one(path: &mut String, base: &std::path::Path) {
    let p = std::path::Path::new(path.as_str());
    if p.is_relative() {
        *path = base.join(p).to_string_lossy().into_owned();
    }
}

impl RawListenerTls {
    /// Makes its paths relative to `base`.
    pub(super) fn rebase(&mut self, base: &std::path::Path) {
        for c in &mut self.certificates {
            rebase_one(&mut c.cert, base);
            rebase_one(&mut c.key, base);
        }
        if let Some(ca) = &mut self.client_ca {
            rebase_one(ca, base);
        }
    }
}

impl RawGlobalTls {
    /// Makes its paths relative to `base`.
    pub(super) fn rebase(&mut self, base: &std::path::Path) {
        if let Some(f) = &mut self.ticket_key_file {
            rebase_one(f, base);
        }
    }
}

impl RawBackendTls {
    /// Makes its paths relative to `base`.
    pub(super) fn rebase(&mut self, base: &std::path::Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .flatten()
        {
            rebase_one(p, base);
        }
    }
}

/// A backend's TLS, validated (per server: its own name and address).
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// Settings with the backend-wide name; a server's own `sni` replaces it.
    pub settings: ClientSettings,
}

/// Seconds in 30 days: certificates expiring within this are warned about.
const EXPIRY_WARNING: i64 = 30 * 86_400;

fn version(v: Option<&str>, default: Version, p: &str, errors: &mut Vec<ConfigError>) -> Version {
    match v {
        None => default,
        Some("1.2") => Version::Tls12,
        Some("1.3") => Version::Tls13,
        Some(other) => {
            errors.push(err(
                p,
                format!("unknown TLS version {other:?}: expected \"1.2\" or \"1.3\""),
            ));
            default
        }
    }
}

/// `{p}.min_version` and `{p}.max_version` (TLS 1.2 and 1.3 unless set), the minimum not above
/// the maximum.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> (Version, Version) {
    let min_version = version(min, Version::Tls12, &format!("{p}.min_version"), errors);
    let max_version = version(max, Version::Tls13, &format!("{p}.max_version"), errors);
    if min_version > max_version {
        errors.push(err(format!("{p}.min_version"), "is above max_version"));
    }
    (min_version, max_version)
}

/// A listener's ALPN list (default: `h2`, then `http/1.1`).
fn listener_alpn(
    list: Option<&Vec<String>>,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let list = list
        .cloned()
        .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]);
    for (i, a) in list.iter().enumerate() {
        if a != "http/1.1" && a != "h2" {
            errors.push(err(
                format!("{p}[{i}]"),
                format!(
                    "unsupported ALPN protocol {a:?}: this coreplex speaks \"h2\" and \"http/1.1\""
                ),
            ));
        }
    }
    list
}

/// A backend's ALPN list for its HTTP/1.1 connections (`http/1.1`; HTTP/2 connections offer
/// what the backend's `protocol` says).
fn backend_alpn(list: Option<&Vec<String>>, p: &str, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let list = list.cloned().unwrap_or_else(|| vec!["http/1.1".into()]);
    for (i, a) in list.iter().enumerate() {
        if a != "http/1.1" {
            errors.push(err(
                format!("{p}[{i}]"),
                format!("unsupported ALPN protocol {a:?} for a backend's HTTP/1.1 connections: set protocol = \"h2\" or \"auto\" for HTTP/2 (its connections offer h2 by themselves)"),
            ));
        }
    }
    list
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Loads a certificate to check it; reports problems at `p` and near-expiry in `warnings`.
fn check_cert(
    spec: &CertSpec,
    p: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<coreplex_tls::certs::LoadedCert> {
    match coreplex_tls::certs::load(&spec.cert, &spec.key) {
        Ok(c) => {
            let now = now_secs();
            let v = c.validity;
            if now < v.not_before {
                errors.push(err(
                    format!("{p}.cert"),
                    format!(
                        "{}: not valid yet (valid from {} in Unix seconds)",
                        spec.cert.display(),
                        v.not_before
                    ),
                ));
            } else if now > v.not_after {
                errors.push(err(
                    format!("{p}.cert"),
                    format!(
                        "{}: expired {} days ago",
                        spec.cert.display(),
                        (now - v.not_after) / 86_400
                    ),
                ));
            } else if v.not_after - now < EXPIRY_WARNING {
                warnings.push(err(
                    format!("{p}.cert"),
                    format!(
                        "{}: expires in {} days",
                        spec.cert.display(),
                        (v.not_after - now) / 86_400
                    ),
                ));
            }
            Some(c)
        }
        Err(e) => {
            let key = match e {
                coreplex_tls::TlsError::BadKey { .. }
                | coreplex_tls::TlsError::UnsupportedKey { .. } => "key",
                coreplex_tls::TlsError::Read { ref path, .. } if *path == spec.key => "key",
                _ => "cert",
            };
            errors.push(err(format!("{p}.{key}"), e.to_string()));
            None
        }
    }
}

/// Validates `listener[N].tls` at path `p` (`handshake_timeout`: the listener's `client_hs`).
pub(super) fn validate_listener(
    raw: &RawListenerTls,
    p: &str,
    handshake_timeout: Duration,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> ListenerTls {
    if raw.certificates.is_empty() {
        errors.push(err(
            format!("{p}.certificates"),
            "at least one certificate is required: certificates = [ { cert = \"server.pem\", key = \"server.key\" } ]",
        ));
    }
    let mut certs = Vec::new();
    for (i, c) in raw.certificates.iter().enumerate() {
        let cp = format!("{p}.certificates[{i}]");
        let spec = CertSpec {
            cert: PathBuf::from(&c.cert),
            key: PathBuf::from(&c.key),
            names: c.names.clone().unwrap_or_default(),
        };
        if let Some(loaded) = check_cert(&spec, &cp, errors, warnings) {
            for (j, name) in spec.names.iter().enumerate() {
                let probe = name
                    .strip_prefix("*.")
                    .map_or(name.clone(), |d| format!("x.{d}"));
                if !coreplex_tls::certs::covers(&loaded, &probe) {
                    errors.push(err(
                        format!("{cp}.names[{j}]"),
                        format!(
                            "{name:?} is not covered by the certificate {}",
                            spec.cert.display()
                        ),
                    ));
                }
            }
        }
        certs.push(spec);
    }
    let default_for_unknown = match raw.unknown_sni.as_deref() {
        None | Some("default") => true,
        Some("refuse") => false,
        Some(other) => {
            errors.push(err(
                format!("{p}.unknown_sni"),
                format!("unknown value {other:?}: expected \"default\" or \"refuse\""),
            ));
            true
        }
    };
    let (min_version, max_version) = versions(
        raw.min_version.as_deref(),
        raw.max_version.as_deref(),
        p,
        errors,
    );
    if let Err(e) =
        coreplex_tls::server::provider(raw.cipher_suites.as_deref(), raw.groups.as_deref())
    {
        let key = if raw.cipher_suites.as_ref().is_some_and(|l| {
            l.iter()
                .any(|n| coreplex_tls::server::suite_named(n).is_none())
        }) {
            "cipher_suites"
        } else {
            "groups"
        };
        errors.push(err(format!("{p}.{key}"), e.to_string()));
    }
    let client_auth = match (&raw.client_ca, raw.client_auth.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            errors.push(err(
                format!("{p}.client_auth"),
                "needs client_ca (the CA file client certificates chain to)",
            ));
            None
        }
        (Some(ca), mode) => {
            let required = match mode {
                None | Some("required") => true,
                Some("optional") => false,
                Some(other) => {
                    errors.push(err(
                        format!("{p}.client_auth"),
                        format!("unknown value {other:?}: expected \"required\" or \"optional\""),
                    ));
                    true
                }
            };
            if let Err(e) = coreplex_tls::server::roots_from(std::path::Path::new(ca)) {
                errors.push(err(format!("{p}.client_ca"), e.to_string()));
            }
            Some(ClientAuth {
                ca: PathBuf::from(ca),
                required,
            })
        }
    };
    if raw.session_rate == Some(0) {
        errors.push(err(
            format!("{p}.session_rate"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    ListenerTls {
        settings: ServerSettings {
            certs,
            default_for_unknown,
            min_version,
            max_version,
            cipher_suites: raw.cipher_suites.clone(),
            groups: raw.groups.clone(),
            alpn: listener_alpn(raw.alpn.as_ref(), &format!("{p}.alpn"), errors),
            client_auth,
            handshake_timeout,
            session_cache: raw.session_cache.unwrap_or(0),
            tls13_tickets: raw.tls13_tickets.unwrap_or(2).min(8),
        },
        session_rate: raw.session_rate,
    }
}

/// Validates `global.tls`.
pub(super) fn validate_global(raw: &RawGlobalTls, errors: &mut Vec<ConfigError>) -> TicketSettings {
    let lifetime = raw
        .ticket_lifetime
        .map_or(Duration::from_secs(12 * 3600), |d| d.0);
    if lifetime > Duration::from_secs(7 * 86_400) || lifetime.is_zero() {
        errors.push(err(
            "global.tls.ticket_lifetime",
            "must be above 0 and at most 7 days (RFC 8446 4.6.1)",
        ));
    }
    let keys = match (raw.tickets, &raw.ticket_key_file) {
        (Some(false), _) => TicketKeys::Off,
        (_, Some(path)) => {
            if let Err(e) = coreplex_tls::tickets::load_keys(std::path::Path::new(path)) {
                errors.push(err("global.tls.ticket_key_file", e.to_string()));
            }
            TicketKeys::File(PathBuf::from(path))
        }
        _ => {
            let rotate = raw.ticket_rotate.map_or(Duration::from_secs(3600), |d| d.0);
            if rotate < Duration::from_secs(1) || rotate > lifetime {
                errors.push(err(
                    "global.tls.ticket_rotate",
                    "must be between 1s and ticket_lifetime",
                ));
            }
            TicketKeys::Generated { rotate }
        }
    };
    if raw.ticket_rotate.is_some() && raw.ticket_key_file.is_some() {
        errors.push(err(
            "global.tls.ticket_rotate",
            "keys from ticket_key_file are rotated by rewriting the file (and reloading), not on a schedule",
        ));
    }
    TicketSettings { keys, lifetime }
}

/// Validates `backend.NAME.tls` at `p`.
pub(super) fn validate_backend(
    raw: &RawBackendTls,
    p: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> BackendTls {
    let roots = match &raw.ca {
        Some(ca) => {
            if let Err(e) = coreplex_tls::server::roots_from(std::path::Path::new(ca)) {
                errors.push(err(format!("{p}.ca"), e.to_string()));
            }
            Roots::CaFile(PathBuf::from(ca))
        }
        None => Roots::WebPki,
    };
    let client_cert = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            let spec = CertSpec {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                names: Vec::new(),
            };
            check_cert(&spec, p, errors, warnings);
            Some(spec)
        }
        (None, None) => None,
        _ => {
            errors.push(err(
                format!("{p}.cert"),
                "cert and key go together (a client certificate and its key)",
            ));
            None
        }
    };
    if let Some(name) = &raw.sni {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            errors.push(err(
                format!("{p}.sni"),
                format!("{name:?} is not a host name"),
            ));
        }
    }
    let (min_version, max_version) = versions(
        raw.min_version.as_deref(),
        raw.max_version.as_deref(),
        p,
        errors,
    );
    BackendTls {
        settings: ClientSettings {
            roots,
            verify: raw.verify.unwrap_or(true),
            server_name: raw.sni.clone(),
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            client_cert,
            alpn: backend_alpn(raw.alpn.as_ref(), &format!("{p}.alpn"), errors),
            min_version,
            max_version,
            resumption_cache: raw.resumption_cache.unwrap_or(64),
        },
    }
}

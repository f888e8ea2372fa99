//! rustls server configurations from [`ServerSettings`]: the provider narrowed to the configured
//! suites and groups, the versions, the certificate resolver, ALPN, client certificates, and the
//! resumption state (the shared ticketer; a per-shard session cache only if asked for: rustls'
//! default cache is a process-wide locked map, not used).

use crate::certs::{self, LoadedCert};
use crate::error::TlsError;
use crate::resolver::{Resolver, Vhosts};
use crate::settings::{ServerSettings, Version};
use crate::tickets::Ticketer;
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use std::sync::Arc;

/// Cipher suites by IANA name.
pub fn suite_named(name: &str) -> Option<SupportedCipherSuite> {
    aws_lc_rs::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .find(|s| s.suite().as_str() == Some(name))
}

/// Key-exchange groups by name (also the RFC 8446 spellings `secp256r1`, `secp384r1`).
pub fn group_named(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    use aws_lc_rs::kx_group as g;
    let g: &'static dyn SupportedKxGroup = match name {
        "X25519" | "x25519" => g::X25519,
        "P-256" | "secp256r1" => g::SECP256R1,
        "P-384" | "secp384r1" => g::SECP384R1,
        "X25519MLKEM768" => g::X25519MLKEM768,
        "SECP256R1MLKEM768" => g::SECP256R1MLKEM768,
        "MLKEM768" => g::MLKEM768,
        _ => return None,
    };
    Some(g)
}

fn names<T>(all: impl Iterator<Item = T>, name: impl Fn(&T) -> String) -> String {
    all.map(|x| name(&x)).collect::<Vec<_>>().join(", ")
}

/// The provider with the configured suites and groups (rustls' defaults for `None`).
pub fn provider(
    suites: Option<&[String]>,
    groups: Option<&[String]>,
) -> Result<CryptoProvider, TlsError> {
    let mut p = aws_lc_rs::default_provider();
    if let Some(list) = suites {
        p.cipher_suites = list
            .iter()
            .map(|n| {
                suite_named(n).ok_or_else(|| TlsError::UnknownName {
                    what: "cipher suite",
                    name: n.clone(),
                    known: names(aws_lc_rs::ALL_CIPHER_SUITES.iter(), |s| {
                        s.suite().as_str().unwrap_or("?").to_string()
                    }),
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(list) = groups {
        p.kx_groups = list
            .iter()
            .map(|n| {
                group_named(n).ok_or_else(|| TlsError::UnknownName {
                    what: "key-exchange group",
                    name: n.clone(),
                    known: "X25519, P-256, P-384, X25519MLKEM768, SECP256R1MLKEM768, MLKEM768"
                        .into(),
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(p)
}

/// The rustls versions from `min` to `max`.
pub fn versions(min: Version, max: Version) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if min <= Version::Tls13 && max >= Version::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= Version::Tls12 && max >= Version::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// Loads CA certificates for verification.
pub fn roots_from(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs::load_chain(path)? {
        store.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// A listener's TLS, loaded: its vhosts and a configuration to clone per shard.
#[derive(Debug, Clone)]
pub struct ServerSide {
    /// The rustls configuration (its ticketer is replaced when keys rotate).
    pub config: Arc<ServerConfig>,
    /// The certificates by name.
    pub vhosts: Arc<Vhosts>,
    /// How long a handshake may take.
    pub handshake_timeout: std::time::Duration,
}

/// Loads every certificate of `s` with the names it serves.
pub fn load_certs(s: &ServerSettings) -> Result<Vec<(LoadedCert, Vec<String>)>, TlsError> {
    s.certs
        .iter()
        .map(|c| {
            let loaded = certs::load(&c.cert, &c.key)?;
            let names = if c.names.is_empty() {
                certs::alt_names(loaded.key.cert[0].as_ref())
            } else {
                c.names.clone()
            };
            Ok((loaded, names))
        })
        .collect()
}

/// Builds a listener's TLS from `s`, sealing tickets with `ticketer` (`None`: no tickets).
pub fn build(s: &ServerSettings, ticketer: Option<Arc<Ticketer>>) -> Result<ServerSide, TlsError> {
    let provider = Arc::new(provider(s.cipher_suites.as_deref(), s.groups.as_deref())?);
    let vhosts = Arc::new(Vhosts::new(load_certs(s)?, s.default_for_unknown));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(s.min_version, s.max_version))?;
    let builder = match &s.client_auth {
        Some(auth) => {
            let roots = Arc::new(roots_from(&auth.ca)?);
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if auth.required {
                b.build()
            } else {
                b.allow_unauthenticated().build()
            }
            .map_err(|e| TlsError::General(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(vhosts.clone())));
    config.alpn_protocols = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // A configured suite list is the server's preference, in its order (nginx's
    // `ssl_prefer_server_ciphers on`); without one the client's order picks among the defaults.
    config.ignore_client_order = s.cipher_suites.is_some();
    config.session_storage = if s.session_cache > 0 {
        ServerSessionMemoryCache::new(s.session_cache)
    } else {
        Arc::new(NoServerSessionStorage {})
    };
    config.send_tls13_tickets = if ticketer.is_some() {
        s.tls13_tickets
    } else {
        0
    };
    if let Some(t) = ticketer {
        config.ticketer = t;
    }
    config.max_early_data_size = 0;
    // After the handshake rustls hands the secrets to `records` (an idle connection then keeps
    // only those, not two expanded keys and rustls' record state).
    config.enable_secret_extraction = true;
    Ok(ServerSide {
        config: Arc::new(config),
        vhosts,
        handshake_timeout: s.handshake_timeout,
    })
}

/// `side` with tickets sealed by `ticketer` from now on.
pub fn with_ticketer(
    side: &ServerSide,
    ticketer: Arc<Ticketer>,
    tls13_tickets: usize,
) -> ServerSide {
    let mut config = (*side.config).clone();
    config.ticketer = ticketer;
    config.send_tls13_tickets = tls13_tickets;
    ServerSide {
        config: Arc::new(config),
        ..side.clone()
    }
}

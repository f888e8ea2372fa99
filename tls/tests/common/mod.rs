//! What the TLS transport's tests share: the localhost test certificates, a listener's
//! settings with both of them, a shard's transport, and a rustls client configuration trusting
//! the test CA.
#![allow(dead_code)] // each test binary uses its own part

use coreplex_tls::server::{self, ServerSide};
use coreplex_tls::settings::{CertSpec, ServerSettings, Version};
use coreplex_tls::tickets::{TicketKey, Ticketer};
use coreplex_tls::{ListenerTls, Tls};
use rustls::{ClientConfig, RootCertStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub fn certs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/certs"))
}

pub fn spec(name: &str, names: &[&str]) -> CertSpec {
    CertSpec {
        cert: certs_dir().join(format!("{name}.pem")),
        key: certs_dir().join(format!("{name}.key")),
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn settings() -> ServerSettings {
    ServerSettings {
        certs: vec![spec("ecdsa", &[]), spec("rsa", &[])],
        default_for_unknown: true,
        min_version: Version::Tls12,
        max_version: Version::Tls13,
        cipher_suites: None,
        groups: None,
        alpn: vec!["http/1.1".into()],
        client_auth: None,
        handshake_timeout: Duration::from_secs(5),
        session_cache: 0,
        tls13_tickets: 2,
    }
}

pub fn listener(s: &ServerSettings) -> ServerSide {
    server::build(s, None).expect("listener TLS builds")
}

pub fn shard(side: &ServerSide, keys: &[TicketKey]) -> Tls {
    let ticketer = (!keys.is_empty()).then(|| Ticketer::new(keys, 3600).unwrap());
    Tls::new(
        &[Some(ListenerTls {
            side: side.clone(),
            session_cache: 0,
            tls13_tickets: 2,
        })],
        &[],
        ticketer,
    )
}

pub fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in coreplex_tls::certs::load_chain(&certs_dir().join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let mut c = ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(c)
}

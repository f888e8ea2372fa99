//! Certificates by server name: each listener's certificates with the names they serve (given
//! in the configuration, or else the DNS names of the certificate), exact names before
//! wildcards (`*.example.com` serves one label), and for a name with both an ECDSA and an RSA
//! certificate the one the client can verify (ECDSA first). A name no certificate serves gets the
//! default certificate (the first configured) unless the listener refuses unknown names; that
//! refusal is answered before rustls (`hello.rs`), so the resolver never returns `None` for it.

use crate::certs::LoadedCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;
use std::collections::HashMap;
use std::sync::Arc;

/// The certificates of one listener, by name.
#[derive(Debug, Default)]
pub struct Vhosts {
    /// Exact names (lowercase) -> indices into `certs`, ECDSA first.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard suffixes (`.example.com` for `*.example.com`) -> indices.
    wildcard: HashMap<String, Vec<usize>>,
    /// Every certificate, in configuration order (the first is the default).
    certs: Vec<LoadedCert>,
    /// Unknown or missing names get the default (else they are refused).
    default_for_unknown: bool,
}

fn rank(alg: SignatureAlgorithm) -> u8 {
    match alg {
        SignatureAlgorithm::ECDSA => 0,
        SignatureAlgorithm::ED25519 => 1,
        _ => 2,
    }
}

impl Vhosts {
    /// Builds the table from `(certificate, names it serves)`.
    pub fn new(certs: Vec<(LoadedCert, Vec<String>)>, default_for_unknown: bool) -> Vhosts {
        let mut v = Vhosts {
            default_for_unknown,
            ..Vhosts::default()
        };
        for (i, (cert, names)) in certs.into_iter().enumerate() {
            for name in names {
                let name = name.to_ascii_lowercase();
                let map = match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => {
                        v.wildcard.entry(suffix.to_string()).or_default()
                    }
                    _ => v.exact.entry(name).or_default(),
                };
                if !map.contains(&i) {
                    map.push(i);
                }
            }
            v.certs.push(cert);
        }
        let certs = &v.certs;
        for list in v.exact.values_mut().chain(v.wildcard.values_mut()) {
            list.sort_by_key(|&i| rank(certs[i].algorithm));
        }
        v
    }

    /// The certificates serving `name`, ECDSA first (`None`: no certificate names it).
    fn named(&self, name: &str) -> Option<&[usize]> {
        if let Some(l) = self.exact.get(name) {
            return Some(l);
        }
        let dot = name.find('.')?;
        self.wildcard.get(&name[dot..]).map(Vec::as_slice)
    }

    /// Whether a ClientHello naming `name` (or none) is served: a certificate names it, or the
    /// listener serves unknown names its default certificate.
    pub fn serves(&self, name: Option<&str>) -> bool {
        self.default_for_unknown || name.and_then(|n| self.named(n)).is_some()
    }

    /// Whether a certificate names `name` (false for no name: served, if at all, by the
    /// default).
    pub fn knows(&self, name: Option<&str>) -> bool {
        name.and_then(|n| self.named(n)).is_some()
    }

    /// Every certificate, in configuration order.
    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }

    /// The certificate for `name` that can sign with one of `schemes`.
    fn pick(&self, name: Option<&str>, schemes: &[rustls::SignatureScheme]) -> Option<&LoadedCert> {
        let candidates: Vec<usize> = match name.and_then(|n| self.named(n)) {
            Some(l) => l.to_vec(),
            None if self.default_for_unknown => {
                // The default certificate, or another of the same names the client can verify.
                let mut all: Vec<usize> = (0..self.certs.len()).collect();
                all.sort_by_key(|&i| (i != 0, rank(self.certs[i].algorithm)));
                all
            }
            None => return None,
        };
        candidates
            .iter()
            .map(|&i| &self.certs[i])
            .find(|c| c.key.key.choose_scheme(schemes).is_some())
            .or_else(|| candidates.first().map(|&i| &self.certs[i]))
    }
}

/// rustls' view of a listener's [`Vhosts`].
#[derive(Debug)]
pub struct Resolver(pub Arc<Vhosts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .pick(hello.server_name(), hello.signature_schemes())
            .map(|c| c.key.clone())
    }
}

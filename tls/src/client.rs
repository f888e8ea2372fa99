//! rustls client configurations for backends, from [`ClientSettings`]: trust anchors (a CA file
//! or the bundled Mozilla roots), the name sent and verified, an optional client certificate,
//! ALPN, versions, and a per-shard resumption cache so pool refills resume. Verification is on
//! unless the settings turn it off explicitly (`NoVerification` then accepts any certificate but
//! still checks the handshake signatures, so the peer holds the key of what it presented).

use crate::certs;
use crate::error::TlsError;
use crate::server::{provider, roots_from, versions};
use crate::settings::{ClientSettings, Roots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// One backend server's TLS, loaded.
#[derive(Debug, Clone)]
pub struct ClientSide {
    /// The configuration (cloned per shard with its own resumption cache).
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI (an IP address: no SNI) and verified.
    pub server_name: ServerName<'static>,
    /// Sessions each shard keeps for resumption.
    pub resumption_cache: usize,
}

/// Accepts any certificate (an explicit `verify = false`; the load tool's `-k`), checking only
/// that the peer signs the handshake with the key of the certificate it presented. Offers
/// `schemes` when given (which picks the certificate of a server holding several), else every
/// scheme the provider verifies.
#[derive(Debug)]
pub struct NoVerification {
    provider: Arc<CryptoProvider>,
    schemes: Option<Vec<SignatureScheme>>,
}

impl NoVerification {
    /// A verifier accepting any certificate signed for with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>, schemes: Option<Vec<SignatureScheme>>) -> Self {
        NoVerification { provider, schemes }
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        if let Some(s) = &self.schemes {
            return s.clone();
        }
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds one backend server's TLS from `s`.
pub fn build(s: &ClientSettings) -> Result<ClientSide, TlsError> {
    let provider = Arc::new(provider(None, None)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(s.min_version, s.max_version))?;
    let builder = if s.verify {
        let roots = match &s.roots {
            Roots::WebPki => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Roots::CaFile(path) => roots_from(path)?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider, None)))
    };
    let mut config = match &s.client_cert {
        Some(spec) => {
            // Loaded (and checked) with the listeners' loader, then handed over as DER.
            certs::load(&spec.cert, &spec.key)?;
            let chain = certs::load_chain(&spec.cert)?;
            let key = certs::load_key_der(&spec.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.resumption = Resumption::disabled();
    let server_name = match &s.server_name {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|e| TlsError::General(format!("server name {name:?}: {e}")))?,
        None => ServerName::IpAddress(s.address.into()),
    };
    Ok(ClientSide {
        config: Arc::new(config),
        server_name,
        resumption_cache: s.resumption_cache,
    })
}

/// `side`'s configuration for one shard: its own resumption cache (no lock shared between shards).
pub fn for_shard(side: &ClientSide) -> Arc<ClientConfig> {
    let mut config = (*side.config).clone();
    config.resumption = if side.resumption_cache > 0 {
        Resumption::in_memory_sessions(side.resumption_cache)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

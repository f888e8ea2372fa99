//! TLS for the load client: one rustls client configuration shared by every connection of a run
//! (so its in-memory session store lets reconnects resume, unless `--no-resume`), and the
//! per-connection glue between rustls' buffered client and the ring's byte-oriented sends and
//! receives. The load tool is not under the engine's memory budget: the buffered API is fine here.

use anyhow::{bail, Context, Result};
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, SignatureScheme};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// What `load` was told about TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) that sign the server's certificate; `None` with `insecure`.
    pub ca: Option<PathBuf>,
    /// Accept any certificate (measure, never for real traffic).
    pub insecure: bool,
    /// The SNI name (default: the URL's host when it is a name).
    pub sni: Option<String>,
    /// "1.2" or "1.3" (both offered when unset).
    pub version: Option<String>,
    /// Key-exchange groups by name (x25519, secp256r1, secp384r1, x25519mlkem768), in order.
    pub groups: Vec<String>,
    /// Signature schemes the client offers narrowed to one family: "ecdsa" or "rsa" (picks which
    /// certificate a server holding both presents).
    pub sig: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// Resume with tickets or session ids across this run's connections.
    pub resume: bool,
}

/// A built client side: the configuration and the name to ask for.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Builds the configuration (`host` is the URL's host, the default SNI).
    pub fn new(o: &TlsOptions, host: &str) -> Result<TlsClient> {
        let mut p = provider::default_provider();
        if !o.groups.is_empty() {
            let mut groups = Vec::new();
            for g in &o.groups {
                let found = provider::ALL_KX_GROUPS.iter().find(|k| {
                    format!("{:?}", k.name()).eq_ignore_ascii_case(g)
                        || (g.eq_ignore_ascii_case("p256")
                            && k.name() == rustls::NamedGroup::secp256r1)
                });
                match found {
                    Some(k) => groups.push(*k),
                    None => bail!("unknown key-exchange group {g:?}"),
                }
            }
            p.kx_groups = groups;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match o.version.as_deref() {
            None => rustls::ALL_VERSIONS,
            Some("1.2") => &[&rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(v) => bail!("--tls-version {v:?}: 1.2 or 1.3"),
        };
        let sig = o.sig.clone();
        let builder = ClientConfig::builder_with_provider(Arc::new(p))
            .with_protocol_versions(versions)
            .context("TLS versions")?;
        if sig.is_some() && !o.insecure {
            bail!("--tls-sig narrows the offered schemes and needs --insecure");
        }
        let mut config = if o.insecure {
            // Signatures are still checked: the handshake costs what a real client's does.
            let verifier = coreplex_tls::client::NoVerification::new(
                Arc::new(provider::default_provider()),
                Some(schemes(sig.as_deref())?),
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let path =
                o.ca.as_ref()
                    .context("https:// needs --cacert FILE (or --insecure)")?;
            for c in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                roots
                    .add(c.with_context(|| format!("parsing {}", path.display()))?)
                    .with_context(|| format!("adding {}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = o.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        if !o.resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let sni = o.sni.clone().unwrap_or_else(|| host.to_string());
        let name = ServerName::try_from(sni.clone())
            .with_context(|| format!("{sni:?} is not a server name"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client connection (its ClientHello is ready to write).
    pub fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.name.clone())
    }
}

/// How a finished handshake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// A full handshake.
    Full,
    /// Resumed from a ticket or session id.
    Resumed,
}

/// One connection's TLS state.
pub struct TlsConn {
    conn: ClientConnection,
    counted: bool,
}

impl TlsConn {
    /// Wraps a new client connection.
    pub fn new(conn: ClientConnection) -> TlsConn {
        TlsConn {
            conn,
            counted: false,
        }
    }

    /// Takes received ciphertext; decrypted bytes are appended to `plain`. Returns the handshake
    /// outcome the first time it is known.
    pub fn receive(
        &mut self,
        mut wire: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Option<Handshake>, rustls::Error> {
        while !wire.is_empty() {
            if self.conn.read_tls(&mut wire).is_err() {
                return Err(rustls::Error::General("TLS input buffer full".into()));
            }
            let state = self.conn.process_new_packets()?;
            if state.plaintext_bytes_to_read() > 0 {
                let _ = self.conn.reader().read_to_end(plain);
            }
        }
        if !self.counted && !self.conn.is_handshaking() {
            self.counted = true;
            return Ok(Some(match self.conn.handshake_kind() {
                Some(HandshakeKind::Resumed) => Handshake::Resumed,
                _ => Handshake::Full,
            }));
        }
        Ok(None)
    }

    /// Encrypts `plain` (buffered by rustls until the handshake is done).
    pub fn write(&mut self, plain: &[u8]) {
        let _ = self.conn.writer().write_all(plain);
    }

    /// Whether there are records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends every pending record to `out`.
    pub fn drain_records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }
}

fn schemes(sig: Option<&str>) -> Result<Vec<SignatureScheme>> {
    use SignatureScheme as S;
    let ecdsa = [
        S::ECDSA_NISTP256_SHA256,
        S::ECDSA_NISTP384_SHA384,
        S::ED25519,
    ];
    let rsa = [
        S::RSA_PSS_SHA256,
        S::RSA_PSS_SHA384,
        S::RSA_PSS_SHA512,
        S::RSA_PKCS1_SHA256,
        S::RSA_PKCS1_SHA384,
        S::RSA_PKCS1_SHA512,
    ];
    Ok(match sig {
        None => ecdsa.iter().chain(rsa.iter()).copied().collect(),
        Some("ecdsa") => ecdsa.to_vec(),
        Some("rsa") => rsa.to_vec(),
        Some(s) => bail!("--tls-sig {s:?}: ecdsa or rsa"),
    })
}

//! What the configuration asks of TLS, as plain data (paths and names; nothing loaded). The
//! binary's config layer fills these from TOML; [`crate::server`] and [`crate::client`] build
//! rustls configurations from them and say what is wrong.

use std::path::PathBuf;
use std::time::Duration;

/// A certificate chain and its key, with the names it serves (empty: the certificate's own DNS
/// names and IP addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Names (exact, or `*.example.com`) this certificate serves.
    pub names: Vec<String>,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Client certificates on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca: PathBuf,
    /// A client without a certificate is refused (else it may go on without one).
    pub required: bool,
}

/// TLS on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// The certificates; the first is the default.
    pub certs: Vec<CertSpec>,
    /// A ClientHello naming no configured certificate (or none) gets the default certificate;
    /// else it is refused with `unrecognized_name`.
    pub default_for_unknown: bool,
    /// Lowest version accepted.
    pub min_version: Version,
    /// Highest version accepted.
    pub max_version: Version,
    /// Cipher suite names (IANA, e.g. `TLS13_AES_128_GCM_SHA256`); `None`: rustls' defaults.
    pub cipher_suites: Option<Vec<String>>,
    /// Key-exchange group names (`X25519`, `P-256`, `P-384`, `X25519MLKEM768`); `None`: defaults.
    pub groups: Option<Vec<String>>,
    /// ALPN protocols in preference order.
    pub alpn: Vec<String>,
    /// Client certificate verification.
    pub client_auth: Option<ClientAuth>,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// TLS 1.2 sessions kept per shard for clients without ticket support (0: none).
    pub session_cache: usize,
    /// TLS 1.3 tickets sent after a full handshake.
    pub tls13_tickets: usize,
}

/// Where a backend's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The Mozilla roots bundled with webpki-roots.
    WebPki,
    /// CA certificates from a PEM file.
    CaFile(PathBuf),
}

/// TLS to one backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Trust anchors.
    pub roots: Roots,
    /// Verify the server's certificate (off only when the configuration says so explicitly).
    pub verify: bool,
    /// The name sent as SNI and verified (`None`: the server's address, no SNI).
    pub server_name: Option<String>,
    /// The server's address, used when no name is configured.
    pub address: std::net::IpAddr,
    /// A client certificate to present.
    pub client_cert: Option<CertSpec>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// Lowest version.
    pub min_version: Version,
    /// Highest version.
    pub max_version: Version,
    /// Sessions kept per shard for resumption (0: none).
    pub resumption_cache: usize,
}

/// The ticket keys every shard seals with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketKeys {
    /// Read from a file shared by every instance (nginx / Envoy format).
    File(PathBuf),
    /// Generated at start and rotated every `rotate`; old keys open tickets for one lifetime.
    Generated {
        /// How often a new key is made.
        rotate: Duration,
    },
    /// No tickets: every handshake is full (unless a session cache is configured).
    Off,
}

/// Ticket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSettings {
    /// Where keys come from.
    pub keys: TicketKeys,
    /// How long a ticket may be used.
    pub lifetime: Duration,
}

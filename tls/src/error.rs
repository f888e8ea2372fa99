//! Errors of the TLS layer: loading certificates, keys and ticket keys, building configurations.
//! Each names what to fix; the config layer adds the key path.

use std::path::PathBuf;

/// What went wrong setting TLS up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE` blocks)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file holds no private key, or one that cannot be parsed.
    #[error("{}: no usable private key ({reason})", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The parser's or the provider's reason.
        reason: String,
    },
    /// The key is of a type the provider cannot sign with.
    #[error("{}: unsupported private key type ({reason}): use ECDSA P-256/P-384, RSA 2048-4096 or Ed25519", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// The provider's reason.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate could not be parsed.
    #[error("{}: the certificate cannot be parsed ({reason})", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A ticket key file is not a whole number of 48- or 80-byte keys.
    #[error("{}: {len} bytes is not a ticket key file (one or more keys of 80 bytes, or of 48; the first one seals)", path.display())]
    BadTicketKeys {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// An unknown cipher suite, key-exchange group or version name.
    #[error("unknown {what} {name:?} (known: {known})")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
    /// rustls refused the configuration.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// Something else (the message says what).
    #[error("{0}")]
    General(String),
}

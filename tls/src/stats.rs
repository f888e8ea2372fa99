//! TLS counters of one shard (merged over shards for `/metrics`): handshakes full and resumed by
//! version and side, failures by reason, ALPN outcomes, unknown names, plaintext HTTP on a TLS
//! port, handshake times, and the ticket keys in use.

use hdrhistogram::Histogram;

/// Why a handshake (or a session) failed, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Failure {
    /// The peer sent a fatal alert.
    AlertReceived = 0,
    /// A malformed message.
    BadMessage,
    /// No version, suite, group or signature scheme in common.
    Incompatible,
    /// A message out of order or otherwise against the protocol.
    Misbehaved,
    /// ALPN offered with no protocol in common.
    NoAlpn,
    /// A certificate that does not verify (a backend's, or a client's).
    BadCertificate,
    /// A required client certificate was not presented.
    NoClientCertificate,
    /// A record did not decrypt.
    DecryptError,
    /// Plaintext HTTP sent to a TLS port (answered 400 in plaintext).
    PlaintextHttp,
    /// A server name no certificate serves (refused with `unrecognized_name`).
    UnknownName,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every reason, in discriminant order.
    pub const ALL: [Failure; 11] = [
        Failure::AlertReceived,
        Failure::BadMessage,
        Failure::Incompatible,
        Failure::Misbehaved,
        Failure::NoAlpn,
        Failure::BadCertificate,
        Failure::NoClientCertificate,
        Failure::DecryptError,
        Failure::PlaintextHttp,
        Failure::UnknownName,
        Failure::Other,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::AlertReceived => "alert_received",
            Failure::BadMessage => "bad_message",
            Failure::Incompatible => "incompatible",
            Failure::Misbehaved => "misbehaved",
            Failure::NoAlpn => "no_alpn",
            Failure::BadCertificate => "bad_certificate",
            Failure::NoClientCertificate => "no_client_certificate",
            Failure::DecryptError => "decrypt_error",
            Failure::PlaintextHttp => "plaintext_http",
            Failure::UnknownName => "unknown_name",
            Failure::Other => "other",
        }
    }

    /// The reason for a rustls error.
    pub fn of(e: &rustls::Error) -> Failure {
        use rustls::Error as E;
        match e {
            E::AlertReceived(_) => Failure::AlertReceived,
            E::InvalidMessage(_) | E::PeerSentOversizedRecord => Failure::BadMessage,
            E::PeerIncompatible(_) => Failure::Incompatible,
            E::PeerMisbehaved(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. } => Failure::Misbehaved,
            E::NoApplicationProtocol => Failure::NoAlpn,
            E::InvalidCertificate(_) => Failure::BadCertificate,
            E::NoCertificatesPresented => Failure::NoClientCertificate,
            E::DecryptError => Failure::DecryptError,
            _ => Failure::Other,
        }
    }
}

/// Handshakes by version and resumption: `[TLS 1.2 full, TLS 1.2 resumed, TLS 1.3 full,
/// TLS 1.3 resumed]`.
pub type ByVersion = [u64; 4];

/// The index into [`ByVersion`].
pub fn version_index(tls13: bool, resumed: bool) -> usize {
    usize::from(tls13) * 2 + usize::from(resumed)
}

/// One shard's TLS counters.
#[derive(Clone, Debug)]
pub struct TlsStats {
    /// Handshakes completed on listeners.
    pub handshakes: ByVersion,
    /// Handshakes completed to backends.
    pub backend_handshakes: ByVersion,
    /// Failed listener sessions by [`Failure`].
    pub failures: [u64; Failure::ALL.len()],
    /// Failed backend sessions by [`Failure`].
    pub backend_failures: [u64; Failure::ALL.len()],
    /// ALPN outcomes on listeners: `h2`, `http/1.1`, none.
    pub alpn: [u64; 3],
    /// Listener handshake durations, microseconds (from the first byte to done).
    pub handshake_us: Histogram<u64>,
    /// Ticket keys in use (a gauge: the shard's current set).
    pub ticket_keys: u64,
    /// ClientHellos whose server name (or lack of one) no certificate names, served the
    /// listener's default certificate (refused ones count as [`Failure::UnknownName`]).
    pub unknown_names_served: u64,
    /// Listener handshakes by negotiated cipher suite (a handful of names: a short list).
    pub suites: Vec<(&'static str, u64)>,
}

impl Default for TlsStats {
    fn default() -> Self {
        TlsStats {
            handshakes: [0; 4],
            backend_handshakes: [0; 4],
            failures: [0; Failure::ALL.len()],
            backend_failures: [0; Failure::ALL.len()],
            alpn: [0; 3],
            handshake_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
            ticket_keys: 0,
            unknown_names_served: 0,
            suites: Vec::new(),
        }
    }
}

impl TlsStats {
    /// Adds another shard's counters (`ticket_keys` is the largest set: every shard has one).
    pub fn merge(&mut self, o: &TlsStats) {
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.handshakes, &o.handshakes);
        add(&mut self.backend_handshakes, &o.backend_handshakes);
        add(&mut self.failures, &o.failures);
        add(&mut self.backend_failures, &o.backend_failures);
        add(&mut self.alpn, &o.alpn);
        let _ = self.handshake_us.add(&o.handshake_us);
        self.ticket_keys = self.ticket_keys.max(o.ticket_keys);
        self.unknown_names_served += o.unknown_names_served;
        for &(name, n) in &o.suites {
            self.count_suite(name, n);
        }
    }

    /// Adds `n` handshakes that agreed on `suite`.
    pub fn count_suite(&mut self, suite: &'static str, n: u64) {
        match self.suites.iter_mut().find(|(s, _)| *s == suite) {
            Some((_, c)) => *c += n,
            None => self.suites.push((suite, n)),
        }
    }
}

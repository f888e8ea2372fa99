//! [`Tls`]: the engine [`Transport`] of one shard. It owns the shard's copies of the listeners'
//! server configurations and the backends' client configurations, creates a [`State`] per
//! secure connection, and keeps the shard's [`TlsStats`].
//!
//! A listener connection first goes through `hello.rs` (plaintext HTTP gets a 400, an unknown
//! server name `unrecognized_name` if the listener refuses them), then rustls. The handshake is
//! timed from the connection's first byte to done.

use crate::client::{self, ClientSide};
use crate::hello::{self, Peek};
use crate::records::{Opened, RecordError, Records};
use crate::server::{self, ServerSide};
use crate::session::{self, Agreed, Conn, Progress};
use crate::stats::{version_index, Failure, TlsStats};
use crate::tickets::Ticketer;
use coreplex_engine::{Received, Status, Transport};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerSessionMemoryCache, UnbufferedServerConnection};
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A listener's session before the ClientHello has been looked at.
    Peek,
    /// In rustls' handshake.
    Handshake,
    /// Application data flows.
    Ready,
    /// Failed or closed: nothing more is processed.
    Done,
}

/// What a listener connection keeps of its handshake once rustls has handed over to
/// [`Records`].
#[derive(Default)]
struct Saved {
    agreed: Agreed,
    cipher: Option<&'static str>,
    alpn: Option<Box<[u8]>>,
    client_certificate: bool,
}

/// One secure connection's TLS state (kept for its life; it holds secrets, never buffers).
pub struct State {
    /// rustls, during the handshake and for the life of a backend connection.
    conn: Option<Box<Conn>>,
    /// A listener connection after its handshake.
    records: Option<Records>,
    saved: Saved,
    phase: Phase,
    /// The listener (server side) or backend profile (client side) it belongs to.
    owner: u32,
    client_side: bool,
    /// When the first byte arrived (server) or the connection was made (client).
    since: Option<Instant>,
    sni: Option<Box<str>>,
    close_sent: bool,
    /// Whether anything was sent back yet (an alert in the clear is only understood before).
    replied: bool,
}

impl State {
    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<&[u8]> {
        match &self.conn {
            Some(c) => session::alpn(c),
            None => self.saved.alpn.as_deref(),
        }
    }

    /// The server name the client asked for (server side).
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Version and resumption, once the handshake is done.
    pub fn agreed(&self) -> Agreed {
        match &self.conn {
            Some(c) => session::agreed(c),
            None => self.saved.agreed,
        }
    }

    /// The negotiated cipher suite's name.
    pub fn cipher(&self) -> Option<&'static str> {
        match &self.conn {
            Some(c) => session::cipher(c),
            None => self.saved.cipher,
        }
    }

    /// Whether the client presented a certificate (it was verified if so).
    pub fn client_certificate(&self) -> bool {
        match &self.conn {
            Some(c) => session::peer_certificate(c),
            None => self.saved.client_certificate,
        }
    }

    /// Whether the records are ours (rustls handed the secrets over).
    pub fn detached(&self) -> bool {
        self.records.is_some()
    }

    /// A listener connection whose handshake is done goes over to [`Records`] (a backend
    /// connection stays with rustls). False if that failed (the connection then fails).
    fn detach(&mut self) -> bool {
        if let Some(c) = &self.conn {
            self.saved = Saved {
                agreed: session::agreed(c),
                cipher: session::cipher(c),
                alpn: session::alpn(c).map(Box::from),
                client_certificate: session::peer_certificate(c),
            };
        }
        match self.conn.take().map(|c| *c) {
            Some(Conn::Server(conn)) => {
                self.records = session::into_records(conn);
                self.records.is_some()
            }
            other => {
                self.conn = other.map(Box::new);
                true
            }
        }
    }
}

/// A listener's TLS in one shard.
struct Listener {
    side: ServerSide,
    session_cache: usize,
    tls13_tickets: usize,
}

/// A backend profile in one shard.
struct Profile {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// One shard's TLS transport.
pub struct Tls {
    listeners: Vec<Option<Listener>>,
    profiles: Vec<Profile>,
    stats: TlsStats,
}

/// A listener's TLS as the binary hands it to each shard.
#[derive(Clone)]
pub struct ListenerTls {
    /// The loaded configuration.
    pub side: ServerSide,
    /// TLS 1.2 sessions cached per shard (0: none).
    pub session_cache: usize,
    /// TLS 1.3 tickets sent after a full handshake.
    pub tls13_tickets: usize,
}

impl Tls {
    /// A shard's transport over `listeners` (`None`: plaintext) and backend `profiles` (the
    /// index is the profile number services pass to `connect_secure`), with tickets sealed by
    /// `ticketer`.
    pub fn new(
        listeners: &[Option<ListenerTls>],
        profiles: &[ClientSide],
        ticketer: Option<Arc<Ticketer>>,
    ) -> Tls {
        let mut t = Tls {
            listeners: listeners
                .iter()
                .map(|l| {
                    l.as_ref().map(|l| {
                        let mut config = (*l.side.config).clone();
                        if l.session_cache > 0 {
                            // This shard's own cache: no lock shared with the others.
                            config.session_storage = ServerSessionMemoryCache::new(l.session_cache);
                        }
                        Listener {
                            side: ServerSide {
                                config: Arc::new(config),
                                ..l.side.clone()
                            },
                            session_cache: l.session_cache,
                            tls13_tickets: l.tls13_tickets,
                        }
                    })
                })
                .collect(),
            profiles: profiles
                .iter()
                .map(|p| Profile {
                    config: client::for_shard(p),
                    name: p.server_name.clone(),
                })
                .collect(),
            stats: TlsStats::default(),
        };
        if let Some(ticketer) = ticketer {
            t.set_ticketer(ticketer);
        }
        t
    }

    /// Seals new tickets with `ticketer` from now on (keys rotated or reloaded); tickets sealed
    /// with a key it still lists keep resuming.
    pub fn set_ticketer(&mut self, ticketer: Arc<Ticketer>) {
        self.stats.ticket_keys = ticketer.key_count() as u64;
        for l in self.listeners.iter_mut().flatten() {
            l.side = server::with_ticketer(&l.side, ticketer.clone(), l.tls13_tickets);
            let _ = l.session_cache;
        }
    }

    /// The shard's counters.
    pub fn stats(&self) -> TlsStats {
        self.stats.clone()
    }

    /// Whether listener `listener` speaks TLS.
    pub fn is_secure(&self, listener: usize) -> bool {
        self.listeners.get(listener).is_some_and(Option::is_some)
    }

    fn server_config(&self, listener: usize) -> Option<(&Arc<ServerConfig>, Duration)> {
        let l = self.listeners.get(listener)?.as_ref()?;
        Some((&l.side.config, l.side.handshake_timeout))
    }

    fn failed(&mut self, s: &mut State, why: Failure) -> Status {
        s.phase = Phase::Done;
        let counts = if s.client_side {
            &mut self.stats.backend_failures
        } else {
            &mut self.stats.failures
        };
        counts[why as usize] += 1;
        Status::Failed
    }

    fn handshake_done(&mut self, s: &mut State) {
        s.phase = Phase::Ready;
        let a = s.agreed();
        let i = version_index(a.tls13, a.resumed);
        if s.client_side {
            self.stats.backend_handshakes[i] += 1;
            return;
        }
        self.stats.handshakes[i] += 1;
        let alpn = match s.alpn() {
            Some(b"h2") => 0,
            Some(b"http/1.1") => 1,
            _ => 2,
        };
        self.stats.alpn[alpn] += 1;
        self.stats.count_suite(s.cipher().unwrap_or("unknown"), 1);
        if let Some(t0) = s.since {
            let _ = self
                .stats
                .handshake_us
                .record(t0.elapsed().as_micros().max(1) as u64);
        }
    }
}

impl Transport for Tls {
    type Session = Box<State>;

    fn accept(&mut self, listener: usize) -> Option<(Box<State>, Duration)> {
        let (config, timeout) = self.server_config(listener)?;
        let conn = UnbufferedServerConnection::new(config.clone())
            .map_err(|e| tracing::error!("TLS session for listener {listener}: {e}"))
            .ok();
        let phase = if conn.is_some() {
            Phase::Peek
        } else {
            Phase::Done
        };
        Some((
            Box::new(State {
                conn: conn.map(|c| Box::new(Conn::Server(c))),
                records: None,
                saved: Saved::default(),
                phase,
                owner: listener as u32,
                client_side: false,
                since: None,
                sni: None,
                close_sent: false,
                replied: false,
            }),
            timeout,
        ))
    }

    fn connect(&mut self, profile: u32) -> std::io::Result<Box<State>> {
        let p = self.profiles.get(profile as usize).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such TLS profile")
        })?;
        let conn = UnbufferedClientConnection::new(p.config.clone(), p.name.clone())
            .map_err(std::io::Error::other)?;
        Ok(Box::new(State {
            conn: Some(Box::new(Conn::Client(conn))),
            records: None,
            saved: Saved::default(),
            phase: Phase::Handshake,
            owner: profile,
            client_side: true,
            since: Some(Instant::now()),
            sni: None,
            close_sent: false,
            replied: false,
        }))
    }

    fn receive(
        &mut self,
        s: &mut Box<State>,
        wire: &mut [u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Received {
        let failed = |status| Received {
            consumed: wire.len(),
            status,
        };
        if s.phase == Phase::Peek {
            s.since.get_or_insert_with(Instant::now);
            match hello::peek(wire) {
                Peek::NeedMore => {
                    return Received {
                        consumed: 0,
                        status: Status::Handshaking,
                    }
                }
                Peek::PlainHttp => {
                    reply.extend_from_slice(hello::PLAIN_HTTP_ANSWER);
                    return failed(self.failed(s, Failure::PlaintextHttp));
                }
                Peek::Hello(name) => {
                    let (serves, knows) = self
                        .listeners
                        .get(s.owner as usize)
                        .and_then(Option::as_ref)
                        .map_or((false, false), |l| {
                            let v = &l.side.vhosts;
                            (v.serves(name.as_deref()), v.knows(name.as_deref()))
                        });
                    if !serves {
                        reply.extend_from_slice(hello::UNRECOGNIZED_NAME_ALERT);
                        return failed(self.failed(s, Failure::UnknownName));
                    }
                    if !knows {
                        self.stats.unknown_names_served += 1;
                    }
                    s.sni = name.map(String::into_boxed_str);
                }
                Peek::OldVersion => {
                    reply.extend_from_slice(hello::PROTOCOL_VERSION_ALERT);
                    return failed(self.failed(s, Failure::Incompatible));
                }
                Peek::Other => {}
            }
            s.phase = Phase::Handshake;
        }
        if s.phase == Phase::Done {
            return failed(Status::Failed);
        }
        if let Some(records) = s.records.as_mut() {
            let (consumed, opened) = records.open(wire, plain, reply);
            let status = match opened {
                Ok(Opened::Open) => Status::Ready,
                Ok(Opened::PeerClosed) => Status::PeerClosed,
                Err(e) => self.failed(s, record_failure(e)),
            };
            return Received { consumed, status };
        }
        let Some(conn) = s.conn.as_mut() else {
            return failed(self.failed(s, Failure::Other));
        };
        let reply_before = reply.len();
        let (consumed, result) = session::receive(conn, wire, plain, reply);
        let status = match result {
            Ok(Progress::Handshaking) => Status::Handshaking,
            Ok(p @ (Progress::Ready | Progress::PeerClosed)) => {
                if s.phase == Phase::Handshake {
                    self.handshake_done(s);
                }
                if p == Progress::PeerClosed {
                    Status::PeerClosed
                } else {
                    Status::Ready
                }
            }
            Err(e) => {
                tracing::debug!("TLS: {e}");
                if !s.client_side && !s.replied && reply.len() == reply_before {
                    // rustls rejects some first flights without an alert of its own.
                    reply.extend_from_slice(match e {
                        rustls::Error::InvalidMessage(_) => hello::DECODE_ERROR_ALERT,
                        _ => hello::HANDSHAKE_FAILURE_ALERT,
                    });
                }
                let why = Failure::of(&e);
                return Received {
                    consumed,
                    status: self.failed(s, why),
                };
            }
        };
        s.replied |= reply.len() > reply_before;
        Received { consumed, status }
    }

    fn seal(
        &mut self,
        s: &mut Box<State>,
        plain: &[u8],
        unread: &mut [u8],
        wire: &mut Vec<u8>,
    ) -> bool {
        if s.phase != Phase::Ready {
            return false;
        }
        match (s.records.as_mut(), s.conn.as_mut()) {
            (Some(records), _) => records.seal(plain, wire),
            (None, Some(conn)) => session::seal(conn, plain, unread, wire),
            (None, None) => false,
        }
    }

    fn close(&mut self, s: &mut Box<State>, unread: &mut [u8], wire: &mut Vec<u8>) -> bool {
        if s.close_sent || s.phase != Phase::Ready {
            return false;
        }
        s.close_sent = true;
        match (s.records.as_mut(), s.conn.as_mut()) {
            (Some(records), _) => records.close(wire),
            (None, Some(conn)) => session::close(conn, unread, wire),
            (None, None) => false,
        }
    }

    /// A listener connection goes over to [`Records`] the first time it idles (one that closes
    /// before, as most one-request connections do, never pays the hand-over), and drops its
    /// expanded keys each time.
    fn idle(&mut self, s: &mut Box<State>) {
        if s.records.is_none() && s.phase == Phase::Ready && !s.client_side && !s.detach() {
            s.phase = Phase::Done;
            self.stats.failures[Failure::Other as usize] += 1;
        }
        if let Some(records) = s.records.as_mut() {
            records.idle();
        }
    }

    fn handshaking(&self, s: &Box<State>) -> bool {
        matches!(s.phase, Phase::Peek | Phase::Handshake)
    }
}

/// The metrics reason of a record-layer failure.
fn record_failure(e: RecordError) -> Failure {
    match e {
        RecordError::Decrypt => Failure::DecryptError,
        RecordError::Overflow | RecordError::Decode | RecordError::IllegalParameter => {
            Failure::BadMessage
        }
        RecordError::Unexpected | RecordError::Renegotiation | RecordError::TooMany => {
            Failure::Misbehaved
        }
        RecordError::AlertReceived => Failure::AlertReceived,
        RecordError::Internal => Failure::Other,
    }
}

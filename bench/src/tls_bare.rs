//! `coreplex-bench tls-bare`: the cost of a TLS handshake to a bare rustls server, in memory, on
//! this machine, as the yardstick for coreplex's own figure. A rustls client and a rustls server
//! (buffered API, aws-lc-rs, the same certificates) exchange records through a buffer in one
//! pinned thread; only the time spent in the server's calls counts (creating the connection,
//! reading and processing records, writing records). No sockets, no HTTP: what is left is rustls.
//!
//! `coreplex-bench tls-bare --serve ADDR` is the same bare rustls server over TCP instead: one
//! thread, blocking sockets, one connection at a time (accept, handshake, read one request head,
//! answer "Hello, World!" with `Connection: close`, close_notify, close), so that a load run
//! against it measures rustls plus the kernel's TCP work per connection and nothing else: the
//! over-the-wire yardstick beside coreplex, nginx and haproxy.
//!
//! Each case runs twice: against a bare rustls `ServerConnection` (buffered API, its own
//! ticketer), then against coreplex's own TLS transport (`coreplex_tls::Tls`, built as a
//! listener's is: unbuffered API, SNI certificate resolver, coreplex's ticketer, the hand-over to
//! its own record layer), so the difference is what coreplex adds to rustls.
//!
//! Cases: full handshakes (TLS 1.3 and 1.2, ECDSA P-256 or RSA-2048, X25519 or X25519MLKEM768)
//! and resumed ones (TLS 1.3 PSK tickets, TLS 1.2 RFC 5077 tickets: the server keeps no session
//! cache, so tickets are the only way back).

use anyhow::{bail, Context, Result};
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Case {
    /// e.g. "tls13 ecdsa x25519 full".
    pub name: String,
    /// Handshakes measured.
    pub handshakes: u64,
    /// Server microseconds per handshake.
    pub server_us: f64,
    /// Client microseconds per handshake (for reference).
    pub client_us: f64,
}

struct Spec {
    version: &'static rustls::SupportedProtocolVersion,
    rsa: bool,
    group: rustls::NamedGroup,
    resumed: bool,
}

impl Spec {
    fn name(&self) -> String {
        format!(
            "tls{} {} {:?} {}",
            if self.version.version == rustls::ProtocolVersion::TLSv1_3 {
                "13"
            } else {
                "12"
            },
            if self.rsa { "rsa2048" } else { "ecdsa-p256" },
            self.group,
            if self.resumed { "resumed" } else { "full" }
        )
        .to_lowercase()
    }
}

fn provider_with(group: rustls::NamedGroup) -> Result<rustls::crypto::CryptoProvider> {
    let mut p = provider::default_provider();
    let g = provider::ALL_KX_GROUPS
        .iter()
        .find(|k| k.name() == group)
        .with_context(|| format!("no {group:?}"))?;
    p.kx_groups = vec![*g];
    Ok(p)
}

fn server_config(spec: &Spec, certs: &Path) -> Result<Arc<ServerConfig>> {
    let stem = if spec.rsa { "rsa" } else { "ecdsa" };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join(format!("{stem}.pem")))
            .context("certificate")?
            .collect::<Result<_, _>>()
            .context("certificate")?;
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{stem}.key"))).context("key")?;
    let mut c = ServerConfig::builder_with_provider(Arc::new(provider_with(spec.group)?))
        .with_protocol_versions(&[spec.version])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    c.ticketer = provider::Ticketer::new()?;
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    c.send_tls13_tickets = 1;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

fn client_config(spec: &Spec, certs: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).context("ca.pem")? {
        roots.add(c?)?;
    }
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider_with(spec.group)?))
        .with_protocol_versions(&[spec.version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !spec.resumed {
        c.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(c))
}

/// Moves every pending record of `from` into `to`; returns the time spent in `to`'s calls and in
/// `from`'s, in that order.
fn pump_into_server(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    buf: &mut Vec<u8>,
) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    buf.clear();
    while client.wants_write() {
        client.write_tls(buf)?;
    }
    let client_t = t.elapsed();
    if buf.is_empty() {
        return Ok((Duration::ZERO, client_t));
    }
    let t = Instant::now();
    let mut rd = &buf[..];
    while !rd.is_empty() {
        server.read_tls(&mut rd)?;
        server.process_new_packets()?;
    }
    Ok((t.elapsed(), client_t))
}

fn pump_into_client(
    server: &mut ServerConnection,
    client: &mut ClientConnection,
    buf: &mut Vec<u8>,
) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    buf.clear();
    while server.wants_write() {
        server.write_tls(buf)?;
    }
    let server_t = t.elapsed();
    if buf.is_empty() {
        return Ok((server_t, Duration::ZERO));
    }
    let t = Instant::now();
    let mut rd = &buf[..];
    while !rd.is_empty() {
        client.read_tls(&mut rd)?;
        client.process_new_packets()?;
    }
    Ok((server_t, t.elapsed()))
}

/// One handshake: (server time, client time, kind).
fn handshake(
    sc: &Arc<ServerConfig>,
    cc: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    buf: &mut Vec<u8>,
) -> Result<(Duration, Duration, Option<HandshakeKind>)> {
    let t = Instant::now();
    let mut client = ClientConnection::new(cc.clone(), name.clone())?;
    let mut client_t = t.elapsed();
    let t = Instant::now();
    let mut server = ServerConnection::new(sc.clone())?;
    let mut server_t = t.elapsed();
    for _ in 0..16 {
        let (s, c) = pump_into_server(&mut client, &mut server, buf)?;
        server_t += s;
        client_t += c;
        let (s, c) = pump_into_client(&mut server, &mut client, buf)?;
        server_t += s;
        client_t += c;
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return Ok((server_t, client_t, client.handshake_kind()));
        }
    }
    bail!("the handshake did not finish")
}

/// coreplex's TLS transport for `spec`, built as a listener's would be (its certificate
/// resolver, one stateless-ticket key, `tls13_tickets` 1 like the bare server), one shard's.
fn transport(spec: &Spec, certs: &Path) -> Result<coreplex_tls::Tls> {
    use coreplex_tls::settings::{CertSpec, ServerSettings, Version};
    use coreplex_tls::tickets::{TicketKey, Ticketer};
    let stem = if spec.rsa { "rsa" } else { "ecdsa" };
    let version = if spec.version.version == rustls::ProtocolVersion::TLSv1_3 {
        Version::Tls13
    } else {
        Version::Tls12
    };
    let settings = ServerSettings {
        certs: vec![CertSpec {
            cert: certs.join(format!("{stem}.pem")),
            key: certs.join(format!("{stem}.key")),
            names: vec![],
        }],
        default_for_unknown: true,
        min_version: version,
        max_version: version,
        cipher_suites: None,
        groups: Some(vec![format!("{:?}", spec.group)]),
        alpn: vec!["http/1.1".into()],
        client_auth: None,
        handshake_timeout: Duration::from_secs(5),
        session_cache: 0,
        tls13_tickets: 1,
    };
    let ticketer = Ticketer::new(&[TicketKey::generate()?], 3600)?;
    let side = coreplex_tls::server::build(&settings, Some(ticketer.clone()))?;
    Ok(coreplex_tls::Tls::new(
        &[Some(coreplex_tls::ListenerTls {
            side,
            session_cache: 0,
            tls13_tickets: 1,
        })],
        &[],
        Some(ticketer),
    ))
}

/// One handshake against coreplex's transport: (server time, client time, kind). The server's
/// time is its `accept` and `receive` calls, the handing over to its own record layer included.
fn transport_handshake(
    tls: &mut coreplex_tls::Tls,
    cc: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    buf: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) -> Result<(Duration, Duration, Option<HandshakeKind>)> {
    use coreplex_engine::{Status, Transport};
    let t = Instant::now();
    let mut client = ClientConnection::new(cc.clone(), name.clone())?;
    let mut client_t = t.elapsed();
    let t = Instant::now();
    let (mut session, _) = tls.accept(0).context("listener 0 speaks TLS")?;
    let mut server_t = t.elapsed();
    let mut plain = Vec::new();
    for _ in 0..16 {
        let t = Instant::now();
        buf.clear();
        while client.wants_write() {
            client.write_tls(buf)?;
        }
        client_t += t.elapsed();
        let t = Instant::now();
        reply.clear();
        let r = tls.receive(&mut session, buf, &mut plain, reply);
        server_t += t.elapsed();
        if r.status == Status::Failed || r.consumed != buf.len() {
            bail!("the transport failed the handshake");
        }
        let t = Instant::now();
        let mut rd = &reply[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd)?;
            client.process_new_packets()?;
        }
        client_t += t.elapsed();
        if !client.is_handshaking() && !tls.handshaking(&session) && !client.wants_write() {
            return Ok((server_t, client_t, client.handshake_kind()));
        }
    }
    bail!("the handshake did not finish")
}

/// Measures every case for `duration` each, pinned to `cpu` when given.
pub fn run(certs: &Path, duration: Duration, cpu: Option<usize>) -> Result<Vec<Case>> {
    if let Some(cpu) = cpu {
        coreplex_engine::cpus::pin_current_thread(cpu)?;
    }
    use rustls::version::{TLS12, TLS13};
    use rustls::NamedGroup as G;
    let specs = [
        (&TLS13, false, G::X25519, false),
        (&TLS13, false, G::X25519MLKEM768, false),
        (&TLS13, true, G::X25519, false),
        (&TLS13, true, G::X25519MLKEM768, false),
        (&TLS12, false, G::X25519, false),
        (&TLS12, true, G::X25519, false),
        (&TLS13, false, G::X25519, true),
        (&TLS13, true, G::X25519, true),
        (&TLS12, false, G::X25519, true),
        (&TLS12, true, G::X25519, true),
    ];
    let name = ServerName::try_from("localhost")?;
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut reply = Vec::with_capacity(16 * 1024);
    for ((version, rsa, group, resumed), via_coreplex) in
        specs.into_iter().flat_map(|s| [(s, false), (s, true)])
    {
        let spec = Spec {
            version,
            rsa,
            group,
            resumed,
        };
        let sc = server_config(&spec, certs)?;
        let cc = client_config(&spec, certs)?;
        let mut tls = transport(&spec, certs)?;
        let mut once = |buf: &mut Vec<u8>| {
            if via_coreplex {
                transport_handshake(&mut tls, &cc, &name, buf, &mut reply)
            } else {
                handshake(&sc, &cc, &name, buf)
            }
        };
        // Warm up (and, for resumption, get the first ticket).
        for _ in 0..20 {
            once(&mut buf)?;
        }
        let (mut server, mut client, mut n) = (Duration::ZERO, Duration::ZERO, 0u64);
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let (s, c, kind) = once(&mut buf)?;
            let want = if resumed {
                HandshakeKind::Resumed
            } else {
                HandshakeKind::Full
            };
            if kind != Some(want) {
                bail!("{}: a handshake was {kind:?}", spec.name());
            }
            server += s;
            client += c;
            n += 1;
        }
        out.push(Case {
            name: if via_coreplex {
                format!("{} via coreplex-tls", spec.name())
            } else {
                spec.name()
            },
            handshakes: n,
            server_us: server.as_secs_f64() * 1e6 / n as f64,
            client_us: client.as_secs_f64() * 1e6 / n as f64,
        });
    }
    Ok(out)
}

/// Serves TLS on `addr` forever, one connection at a time (see the module docs): ECDSA and RSA
/// certificates chosen by what the client offers, tickets for TLS 1.2 and 1.3, no session cache.
pub fn serve(certs: &Path, addr: std::net::SocketAddr, cpu: Option<usize>) -> Result<()> {
    use std::io::{Read, Write};
    if let Some(cpu) = cpu {
        coreplex_engine::cpus::pin_current_thread(cpu)?;
    }
    let key = |stem: &str| -> Result<Arc<rustls::sign::CertifiedKey>> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.join(format!("{stem}.pem")))?
                .collect::<Result<_, _>>()?;
        let der = PrivateKeyDer::from_pem_file(certs.join(format!("{stem}.key")))?;
        let signing = provider::sign::any_supported_type(&der)?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
    };
    let resolver = ByScheme {
        ecdsa: key("ecdsa")?,
        rsa: key("rsa")?,
    };
    let mut c = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    c.ticketer = provider::Ticketer::new()?;
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    c.send_tls13_tickets = 1;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(c);
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    eprintln!("bare rustls server on {addr}");
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
    let mut head = Vec::with_capacity(1024);
    loop {
        let Ok((mut sock, _)) = listener.accept() else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(mut conn) = ServerConnection::new(config.clone()) else {
            continue;
        };
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        head.clear();
        let mut buf = [0u8; 4096];
        let answered = loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break true;
                    }
                }
            }
        };
        if answered && tls.write_all(RESPONSE).is_ok() {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

/// Picks the ECDSA certificate when the client offers an ECDSA scheme, else the RSA one.
#[derive(Debug)]
struct ByScheme {
    ecdsa: Arc<rustls::sign::CertifiedKey>,
    rsa: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for ByScheme {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        use rustls::SignatureScheme as S;
        let ecdsa = hello
            .signature_schemes()
            .iter()
            .any(|s| matches!(s, S::ECDSA_NISTP256_SHA256));
        Some(if ecdsa { &self.ecdsa } else { &self.rsa }.clone())
    }
}

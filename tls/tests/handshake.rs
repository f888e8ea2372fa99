//! The TLS transport against rustls' own buffered client (an independent driver of the same
//! protocol), in memory: handshakes with SNI and ALPN over ECDSA and RSA certificates, records
//! split at every byte, application data both ways, close_notify, ticket resumption across two
//! transports holding the same keys (two shards), plaintext HTTP and unknown names refused, and
//! the backend side against a listener transport.

use coreplex_engine::{Status, Transport};
use coreplex_tls::settings::{ClientSettings, Roots, Version};
use coreplex_tls::tickets::TicketKey;
use coreplex_tls::{client, Tls};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};
use std::sync::Arc;

mod common;
use common::{certs_dir, client_config, listener, settings, shard, spec};

/// A server session of `tls` and the bytes exchanged with a rustls client.
struct Pair<'a> {
    tls: &'a mut Tls,
    session: Box<coreplex_tls::State>,
    client: ClientConnection,
    /// Bytes received by the server and not yet consumed (an incomplete record).
    pending: Vec<u8>,
    /// Application bytes the server received.
    plain: Vec<u8>,
    status: Status,
    /// Feed the server at most this many bytes per call (1: split at every byte).
    chunk: usize,
}

impl<'a> Pair<'a> {
    fn new(tls: &'a mut Tls, config: Arc<ClientConfig>, sni: &str, chunk: usize) -> Pair<'a> {
        let (session, _) = tls.accept(0).expect("listener 0 is TLS");
        let name = ServerName::try_from(sni.to_string()).unwrap();
        Pair {
            tls,
            session,
            client: ClientConnection::new(config, name).unwrap(),
            pending: Vec::new(),
            plain: Vec::new(),
            status: Status::Handshaking,
            chunk,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut to_server = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut to_server).unwrap();
            }
            let mut to_client = Vec::new();
            for piece in to_server.chunks(self.chunk.max(1)) {
                self.pending.extend_from_slice(piece);
                let mut wire = std::mem::take(&mut self.pending);
                let r = self.tls.receive(
                    &mut self.session,
                    &mut wire,
                    &mut self.plain,
                    &mut to_client,
                );
                self.pending = wire[r.consumed..].to_vec();
                self.status = r.status;
                if r.status == Status::Failed {
                    break;
                }
            }
            if to_client.is_empty() && to_server.is_empty() {
                return;
            }
            let mut rd = &to_client[..];
            while !rd.is_empty() {
                if self.client.read_tls(&mut rd).unwrap() == 0 {
                    break;
                }
                if let Err(e) = self.client.process_new_packets() {
                    panic!("client: {e}");
                }
            }
        }
        panic!("the handshake did not settle");
    }

    /// Sends `data` from the server and returns what the client reads.
    fn server_says(&mut self, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        assert!(self
            .tls
            .seal(&mut self.session, data, &mut self.pending, &mut wire));
        let mut rd = &wire[..];
        let mut got = Vec::new();
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets().unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = self.client.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    }
}

#[test]
fn handshake_sni_alpn_and_data_both_ways_at_every_split() {
    let side = listener(&settings());
    for (chunk, versions) in [
        (1, &[&rustls::version::TLS13][..]),
        (7, &[&rustls::version::TLS12][..]),
        (
            100_000,
            &[&rustls::version::TLS13, &rustls::version::TLS12][..],
        ),
    ] {
        let mut tls = shard(&side, &[]);
        let config = client_config(versions, &["h2", "http/1.1"]);
        let mut p = Pair::new(&mut tls, config, "localhost", chunk);
        p.pump();
        assert_eq!(p.status, Status::Ready, "chunk {chunk}");
        assert!(!p.client.is_handshaking());
        assert_eq!(p.session.alpn(), Some(&b"http/1.1"[..]));
        assert_eq!(p.session.sni(), Some("localhost"));
        assert_eq!(
            p.session.agreed().tls13,
            versions.len() == 2 || versions[0] == &rustls::version::TLS13
        );
        p.client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        p.pump();
        assert_eq!(p.plain, b"GET / HTTP/1.1\r\n\r\n");
        let big = vec![b'z'; 40_000];
        assert_eq!(p.server_says(&big), big);
        let mut wire = Vec::new();
        assert!(p.tls.close(&mut p.session, &mut [], &mut wire));
        assert!(
            !p.tls.close(&mut p.session, &mut [], &mut wire),
            "close_notify once"
        );
    }
}

#[test]
fn ecdsa_or_rsa_by_what_the_client_accepts() {
    let side = listener(&settings());
    // A TLS 1.2 client that offers only RSA suites gets the RSA certificate.
    let mut tls = shard(&side, &[]);
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut roots = RootCertStore::empty();
    for c in coreplex_tls::certs::load_chain(&certs_dir().join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let config = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut p = Pair::new(&mut tls, config, "localhost", 1000);
    p.pump();
    assert_eq!(p.status, Status::Ready);
    let leaf = p.client.peer_certificates().unwrap()[0].clone();
    let rsa = coreplex_tls::certs::load_chain(&certs_dir().join("rsa.pem")).unwrap();
    assert_eq!(leaf, rsa[0], "not the RSA certificate");
    // A default client gets ECDSA.
    let mut p = Pair::new(
        &mut tls,
        client_config(&[&rustls::version::TLS13], &[]),
        "localhost",
        1000,
    );
    p.pump();
    let ecdsa = coreplex_tls::certs::load_chain(&certs_dir().join("ecdsa.pem")).unwrap();
    assert_eq!(p.client.peer_certificates().unwrap()[0], ecdsa[0]);
}

#[test]
fn tickets_resume_on_another_shard_holding_the_same_keys() {
    let side = listener(&settings());
    let keys = [TicketKey::generate().unwrap()];
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = client_config(versions, &[]);
        let mut shard0 = shard(&side, &keys);
        let mut p = Pair::new(&mut shard0, config.clone(), "localhost", 1000);
        p.pump();
        assert!(!p.session.agreed().resumed);
        // Another shard (its own transport and configuration copy), the same keys: resumed.
        let mut shard1 = shard(&side, &keys);
        let mut p = Pair::new(&mut shard1, config.clone(), "localhost", 1000);
        p.pump();
        assert_eq!(p.status, Status::Ready);
        assert!(
            p.session.agreed().resumed,
            "{versions:?}: not resumed on another shard"
        );
        // A shard without those keys: a full handshake.
        let mut other = shard(&side, &[TicketKey::generate().unwrap()]);
        let mut p = Pair::new(&mut other, config, "localhost", 1000);
        p.pump();
        assert_eq!(p.status, Status::Ready);
        assert!(!p.session.agreed().resumed);
        assert_eq!(shard1.stats().handshakes.iter().sum::<u64>(), 1);
    }
}

#[test]
fn unknown_names_are_refused_when_asked_and_plaintext_gets_a_400() {
    let mut s = settings();
    s.certs = vec![spec("ecdsa", &["localhost"])];
    s.default_for_unknown = false;
    let side = listener(&s);
    let mut tls = shard(&side, &[]);
    let mut p = Pair::new(
        &mut tls,
        client_config(&[&rustls::version::TLS13], &[]),
        "other.test",
        1000,
    );
    let mut to_server = Vec::new();
    p.client.write_tls(&mut to_server).unwrap();
    let mut reply = Vec::new();
    let mut plain = Vec::new();
    let r = p
        .tls
        .receive(&mut p.session, &mut to_server, &mut plain, &mut reply);
    assert_eq!(r.status, Status::Failed);
    assert_eq!(reply, coreplex_tls::hello::UNRECOGNIZED_NAME_ALERT);
    // Plaintext HTTP.
    let (mut session, _) = tls.accept(0).unwrap();
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let mut reply = Vec::new();
    let r = tls.receive(&mut session, &mut req, &mut plain, &mut reply);
    assert_eq!(r.status, Status::Failed);
    assert!(
        reply.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    let st = tls.stats();
    assert_eq!(
        st.failures[coreplex_tls::stats::Failure::UnknownName as usize],
        1
    );
    assert_eq!(
        st.failures[coreplex_tls::stats::Failure::PlaintextHttp as usize],
        1
    );
}

#[test]
fn the_backend_side_talks_to_a_listener_and_resumes() {
    let side = listener(&settings());
    let keys = [TicketKey::generate().unwrap()];
    let profile = backend_profile();
    let mut backend_shard = Tls::new(&[], &[profile], None);
    let mut listener_shard = shard(&side, &keys);
    for round in 0..2 {
        let mut c = backend_shard.connect(0).unwrap();
        let (mut s, _) = listener_shard.accept(0).unwrap();
        let (mut cs, mut ss) = (Status::Handshaking, Status::Handshaking);
        let (mut to_s, mut to_c) = (Vec::new(), Vec::new());
        let (mut plain_c, mut plain_s) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut out = Vec::new();
            let r = backend_shard.receive(&mut c, &mut to_c, &mut plain_c, &mut out);
            to_c.drain(..r.consumed);
            cs = r.status;
            to_s.extend_from_slice(&out);
            let mut back = Vec::new();
            let r = listener_shard.receive(&mut s, &mut to_s, &mut plain_s, &mut back);
            to_s.drain(..r.consumed);
            ss = r.status;
            to_c.extend_from_slice(&back);
            if cs == Status::Ready && ss == Status::Ready && to_c.is_empty() && to_s.is_empty() {
                break;
            }
        }
        assert_eq!((cs, ss), (Status::Ready, Status::Ready), "round {round}");
        assert_eq!(c.alpn(), Some(&b"http/1.1"[..]));
        assert_eq!(c.agreed().resumed, round == 1, "round {round}");
        let mut wire = Vec::new();
        assert!(backend_shard.seal(&mut c, b"ping", &mut to_c, &mut wire));
        let r = listener_shard.receive(&mut s, &mut wire, &mut plain_s, &mut Vec::new());
        assert_eq!(r.status, Status::Ready);
        assert_eq!(plain_s, b"ping");
    }
    assert_eq!(
        backend_shard.stats().backend_handshakes.iter().sum::<u64>(),
        2
    );
}

#[test]
fn garbage_in_a_handshake_record_gets_a_fatal_alert() {
    let side = listener(&settings());
    let mut tls = shard(&side, &[]);
    // A handshake record holding no ClientHello, a record of another type first, an oversized
    // record header.
    let bodies: [Vec<u8>; 3] = [
        [
            &[22u8, 3, 1, 0, 64][..],
            &(0..64u32).map(|i| (i * 37 % 251) as u8).collect::<Vec<_>>(),
        ]
        .concat(),
        vec![23, 3, 3, 0, 5, 1, 2, 3, 4, 5],
        vec![22, 3, 1, 0xff, 0xff, 1],
    ];
    for mut wire in bodies {
        let (mut session, _) = tls.accept(0).unwrap();
        let mut plain = Vec::new();
        let mut reply = Vec::new();
        let r = tls.receive(&mut session, &mut wire, &mut plain, &mut reply);
        assert_eq!(r.status, Status::Failed, "{wire:?}");
        assert_eq!(reply.first(), Some(&21), "an alert for {wire:?}: {reply:?}");
        assert_eq!(reply.get(5), Some(&2), "fatal: {reply:?}");
    }
}

/// The backend side's profile trusting the test CA, naming `localhost`.
fn backend_profile() -> coreplex_tls::client::ClientSide {
    client::build(&ClientSettings {
        roots: Roots::CaFile(certs_dir().join("ca.pem")),
        verify: true,
        server_name: Some("localhost".into()),
        address: "127.0.0.1".parse().unwrap(),
        client_cert: None,
        alpn: vec!["http/1.1".into()],
        min_version: Version::Tls12,
        max_version: Version::Tls13,
        resumption_cache: 16,
    })
    .unwrap()
}

/// A handshake message split over records, only part of it here (a fragmented TLS 1.3 ticket
/// from a backend), while the service writes: rustls keeps offsets into those unread bytes, so
/// sealing and closing must see them (it panicked on an empty slice in their stead).
#[test]
fn sealing_while_a_fragmented_handshake_message_is_half_read() {
    let side = listener(&settings());
    let mut config = (*side.config).clone();
    config.max_fragment_size = Some(64);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
    config.send_tls13_tickets = 2;
    let mut server = rustls::ServerConnection::new(Arc::new(config)).unwrap();
    let mut shard = Tls::new(&[], &[backend_profile()], None);
    let mut c = shard.connect(0).unwrap();
    let mut to_c: Vec<u8> = Vec::new();
    let mut plain = Vec::new();
    let mut status = Status::Handshaking;
    for _ in 0..20 {
        let mut out = Vec::new();
        let r = shard.receive(&mut c, &mut to_c, &mut plain, &mut out);
        to_c.drain(..r.consumed);
        status = r.status;
        let mut rd = &out[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        if status == Status::Ready && !server.is_handshaking() {
            break;
        }
        while server.wants_write() {
            server.write_tls(&mut to_c).unwrap();
        }
    }
    assert_eq!(status, Status::Ready);
    // The tickets, fragmented into 64-byte records: deliver the first record and a half.
    let mut tickets = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut tickets).unwrap();
    }
    let first = 5 + usize::from(u16::from_be_bytes([tickets[3], tickets[4]]));
    assert!(
        tickets.len() > first + 10,
        "tickets span records: {}",
        tickets.len()
    );
    let mut unread = tickets[..first + 10].to_vec();
    let r = shard.receive(&mut c, &mut unread, &mut plain, &mut Vec::new());
    assert_eq!(r.status, Status::Ready);
    unread.drain(..r.consumed);
    assert!(!unread.is_empty(), "a record waits for its end");
    let mut wire = Vec::new();
    assert!(shard.seal(&mut c, b"ping", &mut unread, &mut wire));
    assert!(shard.close(&mut c, &mut unread, &mut wire));
    let mut rd = &wire[..];
    while !rd.is_empty() {
        server.read_tls(&mut rd).unwrap();
    }
    server.process_new_packets().unwrap();
    let mut got = [0u8; 4];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // The rest of the tickets still reads.
    unread.extend_from_slice(&tickets[first + 10..]);
    let r = shard.receive(&mut c, &mut unread, &mut plain, &mut Vec::new());
    assert_ne!(r.status, Status::Failed);
    assert_eq!(r.consumed, unread.len());
}

#[test]
fn a_configured_suite_list_is_the_servers_preference() {
    // rustls clients list TLS13_AES_256_GCM_SHA384 first: the client's order wins by default,
    // a configured list's order wins when there is one.
    for (suites, expected) in [
        (None, "TLS13_AES_256_GCM_SHA384"),
        (
            Some(vec![
                "TLS13_AES_128_GCM_SHA256".to_string(),
                "TLS13_AES_256_GCM_SHA384".to_string(),
            ]),
            "TLS13_AES_128_GCM_SHA256",
        ),
    ] {
        let mut s = settings();
        s.cipher_suites = suites.clone();
        let side = listener(&s);
        let mut tls = shard(&side, &[]);
        let config = client_config(&[&rustls::version::TLS13], &["http/1.1"]);
        let mut p = Pair::new(&mut tls, config, "localhost", 100_000);
        p.pump();
        assert_eq!(p.status, Status::Ready);
        assert_eq!(p.session.cipher(), Some(expected), "{suites:?}");
        assert_eq!(
            p.client
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str()),
            Some(expected)
        );
    }
}

/// A client that offers only `suite`.
fn client_with_suite(suite: rustls::SupportedCipherSuite) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = RootCertStore::empty();
    for c in coreplex_tls::certs::load_chain(&certs_dir().join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let version = match suite {
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        _ => &rustls::version::TLS12,
    };
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// The client's bytes for `data`, as records, without handing them to the server.
fn client_records(p: &mut Pair<'_>, data: &[u8]) -> Vec<u8> {
    p.client.writer().write_all(data).unwrap();
    let mut wire = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Hands `reply` (the server's answer to bad input) to the client: the alert it reads.
fn client_reads_alert(p: &mut Pair<'_>, reply: &[u8]) -> rustls::Error {
    let mut rd = reply;
    p.client.read_tls(&mut rd).unwrap();
    p.client.process_new_packets().expect_err("an alert")
}

#[test]
fn after_the_handshake_records_are_ours_for_every_suite_across_idle_and_key_updates() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let side = listener(&settings());
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        let name = suite.suite().as_str().unwrap();
        let tls13 = matches!(suite, rustls::SupportedCipherSuite::Tls13(_));
        let mut tls = shard(&side, &[]);
        let mut p = Pair::new(&mut tls, client_with_suite(suite), "localhost", 100_000);
        p.pump();
        assert_eq!(p.status, Status::Ready, "{name}");
        assert!(
            !p.session.detached(),
            "{name}: rustls until the connection idles"
        );
        // Both ways, several records each, the keys dropped while idle and rebuilt; on TLS 1.3
        // the client renews its keys (asking the server to renew its own) between rounds.
        for round in 0..4u8 {
            let up = vec![b'0' + round; 40_000];
            p.client.writer().write_all(&up).unwrap();
            p.plain.clear();
            p.pump();
            assert_eq!(p.plain, up, "{name} round {round}: client to server");
            let down = vec![b'a' + round; 70_000];
            assert_eq!(p.server_says(&down), down, "{name} round {round}");
            p.tls.idle(&mut p.session);
            assert!(p.session.detached(), "{name}: rustls handed over");
            assert_eq!(p.session.cipher(), Some(name));
            assert_eq!(p.session.alpn(), Some(&b"http/1.1"[..]));
            if tls13 && round % 2 == 1 {
                p.client.refresh_traffic_keys().unwrap();
                p.pump();
                assert_eq!(p.status, Status::Ready, "{name}: after a KeyUpdate");
            }
        }
        // The client's close_notify ends the input.
        p.client.send_close_notify();
        p.pump();
        assert_eq!(p.status, Status::PeerClosed, "{name}");
    }
}

#[test]
fn a_record_that_does_not_authenticate_gets_bad_record_mac_and_a_clear_record_unexpected_message() {
    let side = listener(&settings());
    for (version, idled) in [
        (&rustls::version::TLS13, true),
        (&rustls::version::TLS12, true),
        (&rustls::version::TLS13, false),
    ] {
        let mut tls = shard(&side, &[]);
        let mut p = Pair::new(
            &mut tls,
            client_config(&[version], &["http/1.1"]),
            "localhost",
            100_000,
        );
        p.pump();
        if idled {
            p.tls.idle(&mut p.session);
        }
        assert_eq!(p.session.detached(), idled);
        let mut wire = client_records(&mut p, b"GET / HTTP/1.1\r\n\r\n");
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut reply = Vec::new();
        let r = p
            .tls
            .receive(&mut p.session, &mut wire, &mut p.plain, &mut reply);
        assert_eq!(r.status, Status::Failed, "{version:?}");
        assert!(p.plain.is_empty());
        assert!(
            matches!(
                client_reads_alert(&mut p, &reply),
                rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
            ),
            "{version:?}"
        );
        // Nothing more is processed.
        let mut again = [
            23, 3, 3, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let r = p
            .tls
            .receive(&mut p.session, &mut again, &mut p.plain, &mut Vec::new());
        assert_eq!(r.status, Status::Failed);
    }
    // TLS 1.3: a change_cipher_spec (or any record in the clear) after the handshake.
    let mut tls = shard(&side, &[]);
    let mut p = Pair::new(
        &mut tls,
        client_config(&[&rustls::version::TLS13], &["http/1.1"]),
        "localhost",
        100_000,
    );
    p.pump();
    p.tls.idle(&mut p.session);
    let mut reply = Vec::new();
    let r = p.tls.receive(
        &mut p.session,
        &mut [20, 3, 3, 0, 1, 1],
        &mut p.plain,
        &mut reply,
    );
    assert_eq!(r.status, Status::Failed);
    assert!(matches!(
        client_reads_alert(&mut p, &reply),
        rustls::Error::AlertReceived(rustls::AlertDescription::UnexpectedMessage)
    ));
    // A record longer than TLS allows: record_overflow before it is even complete.
    let mut tls = shard(&side, &[]);
    let mut p = Pair::new(
        &mut tls,
        client_config(&[&rustls::version::TLS13], &["http/1.1"]),
        "localhost",
        100_000,
    );
    p.pump();
    p.tls.idle(&mut p.session);
    let mut reply = Vec::new();
    let r = p.tls.receive(
        &mut p.session,
        &mut [23, 3, 3, 0x48, 0x01],
        &mut p.plain,
        &mut reply,
    );
    assert_eq!(r.status, Status::Failed);
    assert!(matches!(
        client_reads_alert(&mut p, &reply),
        rustls::Error::AlertReceived(rustls::AlertDescription::RecordOverflow)
    ));
}

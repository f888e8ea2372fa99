//! The transport seam with a toy transport (records `[len: u16 BE][payload XOR 0x5a]`; the client
//! opens with a record "HELLO", the server answers "WELCOME"; an empty record closes): the service
//! hears of a connection only after its handshake, records split across writes are reassembled,
//! output is sealed, the closing record goes out before the FIN, and a silent or garbled
//! handshake is closed and counted without the service ever seeing the connection.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Received, Runtime, Service, Status, Transport};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const KEY: u8 = 0x5a;

fn record(payload: &[u8]) -> Vec<u8> {
    let mut r = (payload.len() as u16).to_be_bytes().to_vec();
    r.extend(payload.iter().map(|b| b ^ KEY));
    r
}

#[derive(Default)]
struct Toy {
    handshaken: bool,
    closed: bool,
    failed: bool,
}

/// Counts the sessions it was told went idle.
#[derive(Default)]
struct ToyTransport {
    idles: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Transport for ToyTransport {
    type Session = Toy;

    fn accept(&mut self, _listener: usize) -> Option<(Toy, Duration)> {
        Some((Toy::default(), Duration::from_millis(300)))
    }

    fn connect(&mut self, _profile: u32) -> std::io::Result<Toy> {
        Err(std::io::Error::other("server only"))
    }

    fn receive(
        &mut self,
        s: &mut Toy,
        wire: &mut [u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Received {
        let mut pos = 0;
        while wire.len() - pos >= 2 {
            let len = u16::from_be_bytes([wire[pos], wire[pos + 1]]) as usize;
            if len > 1000 {
                s.failed = true;
                reply.extend_from_slice(&record(b"ALERT"));
                return Received {
                    consumed: wire.len(),
                    status: Status::Failed,
                };
            }
            if wire.len() - pos - 2 < len {
                break;
            }
            // Decrypted in place.
            let body = &mut wire[pos + 2..pos + 2 + len];
            body.iter_mut().for_each(|b| *b ^= KEY);
            pos += 2 + len;
            if !s.handshaken {
                if body != b"HELLO" {
                    s.failed = true;
                    return Received {
                        consumed: pos,
                        status: Status::Failed,
                    };
                }
                s.handshaken = true;
                reply.extend_from_slice(&record(b"WELCOME"));
            } else if len == 0 {
                return Received {
                    consumed: pos,
                    status: Status::PeerClosed,
                };
            } else {
                plain.extend_from_slice(body);
            }
        }
        let status = if s.handshaken {
            Status::Ready
        } else {
            Status::Handshaking
        };
        Received {
            consumed: pos,
            status,
        }
    }

    fn seal(&mut self, _: &mut Toy, plain: &[u8], _: &mut [u8], wire: &mut Vec<u8>) -> bool {
        for chunk in plain.chunks(100) {
            wire.extend_from_slice(&record(chunk));
        }
        true
    }

    fn close(&mut self, s: &mut Toy, _: &mut [u8], wire: &mut Vec<u8>) -> bool {
        if s.closed || s.failed {
            return false;
        }
        s.closed = true;
        wire.extend_from_slice(&record(b""));
        true
    }

    fn handshaking(&self, s: &Toy) -> bool {
        !s.handshaken
    }

    fn idle(&mut self, s: &mut Toy) {
        assert!(s.handshaken, "idle before the handshake");
        self.idles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Echoes input upper-cased, after greeting; counts the connections it saw.
struct Echo {
    transport: ToyTransport,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Service for Echo {
    type Conn = ();
    type Busy = ();
    type Stats = ();
    type Transport = ToyTransport;

    fn transport(&mut self) -> &mut ToyTransport {
        &mut self.transport
    }

    fn on_accept(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), _listener: usize) {
        assert!(cx.is_secure());
        assert!(cx.session::<Toy>().is_some_and(|t| t.handshaken));
        self.accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cx.output().extend_from_slice(b"hi ");
    }

    fn on_input(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), input: &[u8]) -> usize {
        let up: Vec<u8> = input.iter().map(u8::to_ascii_uppercase).collect();
        cx.output().extend_from_slice(&up);
        input.len()
    }

    fn on_peer_closed(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.output().extend_from_slice(b" bye");
        cx.close_after_flush(CloseReason::PeerClosed);
    }

    fn on_timer(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::ClientTimeout);
    }

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, _: Id, _: (), _: CloseReason) {}

    fn stats(&mut self) {}
}

fn start() -> (Runtime<()>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (rt, accepted, _) = start_counting();
    (rt, accepted)
}

/// A runtime, its accepted-connection count and its transport's idle count.
fn start_counting() -> (
    Runtime<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let cfg = common::one_shard();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let idles = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (a, i) = (accepted.clone(), idles.clone());
    let rt = Runtime::start(cfg, move |_| Echo {
        transport: ToyTransport { idles: i.clone() },
        accepted: a.clone(),
    })
    .expect("runtime starts");
    (rt, accepted, idles)
}

#[test]
fn the_transport_hears_when_a_secure_connection_goes_idle() {
    use std::sync::atomic::Ordering::SeqCst;
    let (rt, _, idles) = start_counting();
    let mut c = TcpStream::connect(rt.listener_addrs()[0]).unwrap();
    c.write_all(&record(b"HELLO")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    // WELCOME and "hi ": 2 + 7 + 2 + 3 bytes.
    while got < 14 {
        got += c.read(&mut buf[got..]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let after_hello = idles.load(SeqCst);
    assert!(after_hello >= 1, "no idle after the greeting was sent");
    c.write_all(&record(b"abc")).unwrap();
    let mut got = 0;
    while got < 5 {
        got += c.read(&mut buf[got..]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(idles.load(SeqCst) > after_hello, "no idle after the echo");
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

/// Reads records until the peer closes (EOF or reset) or 3 s pass; returns their payloads
/// decoded, and whether the connection ended.
fn read_records(c: &mut TcpStream) -> (Vec<Vec<u8>>, bool) {
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while raw.len() - pos >= 2 {
        let len = u16::from_be_bytes([raw[pos], raw[pos + 1]]) as usize;
        let body: Vec<u8> = raw[pos + 2..pos + 2 + len]
            .iter()
            .map(|b| b ^ KEY)
            .collect();
        out.push(body);
        pos += 2 + len;
    }
    (out, ended)
}

fn closed(rt: &Runtime<()>, reason: CloseReason) -> u64 {
    rt.handle().stats(Duration::from_secs(1))[0].engine.closed[reason as usize]
}

#[test]
fn handshake_then_sealed_echo_then_closing_record_before_the_fin() {
    let (rt, accepted) = start();
    let mut c = TcpStream::connect(rt.listener_addrs()[0]).unwrap();
    c.set_nodelay(true).unwrap();
    // The hello split across two writes (and the first data record glued to it).
    let mut hello = record(b"HELLO");
    hello.extend_from_slice(&record(b"abc"));
    c.write_all(&hello[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    c.write_all(&hello[3..]).unwrap();
    c.write_all(&record(b"def")).unwrap();
    // The client's closing record: the service says bye, then the server's closing record, FIN.
    c.write_all(&record(b"")).unwrap();
    let (records, ended) = read_records(&mut c);
    assert!(ended, "the server did not close");
    let text: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert_eq!(
        text.first().map(String::as_str),
        Some("WELCOME"),
        "{text:?}"
    );
    assert_eq!(
        text.last().map(String::as_str),
        Some(""),
        "no closing record last: {text:?}"
    );
    assert_eq!(
        text[1..text.len() - 1].concat(),
        "hi ABCDEF bye",
        "{text:?}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

#[test]
fn a_silent_or_garbled_handshake_is_closed_unseen_by_the_service() {
    let (rt, accepted) = start();
    let addr = rt.listener_addrs()[0];
    // Silent: the handshake deadline (300 ms) closes it.
    let mut silent = TcpStream::connect(addr).unwrap();
    let t0 = std::time::Instant::now();
    let (records, ended) = read_records(&mut silent);
    assert!(ended && records.is_empty(), "{records:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // Garbled: the alert, then the close.
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    let (records, ended) = read_records(&mut bad);
    assert!(ended);
    assert_eq!(records, vec![b"ALERT".to_vec()]);
    // The wrong first message: closed without an answer.
    let mut wrong = TcpStream::connect(addr).unwrap();
    wrong.write_all(&record(b"HOWDY")).unwrap();
    let (records, ended) = read_records(&mut wrong);
    assert!(ended && records.is_empty(), "{records:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while closed(&rt, CloseReason::HandshakeFailed) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "handshake failures not counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(closed(&rt, CloseReason::HandshakeTimeout), 1);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

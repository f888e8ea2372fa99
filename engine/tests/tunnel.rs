//! The engine's outbound connections and pairs, through a TCP tunnel service: every accepted
//! connection is paired with a new connection to an upstream echo server and bytes flow both ways
//! with backpressure; a refused upstream closes the client; counters return to zero; one
//! connection wakes another.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Runtime, Service};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const HIGH_WATER: usize = 256 * 1024;

struct Tunnel {
    upstream: SocketAddr,
    /// Wake test (upstream port 1): the first client, waiting to be woken by the second.
    waiter: Option<coreplex_engine::table::Id>,
    plain: coreplex_engine::Plain,
}

impl Service for Tunnel {
    type Conn = ();
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.plain
    }

    fn on_accept(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), _listener: usize) {
        if let Some(waiter) = self.waiter.take() {
            // The second client of the wake test: it wakes the first one.
            cx.wake(waiter);
            cx.close_after_flush(CloseReason::Done);
            return;
        }
        if self.upstream.port() == 1 {
            // Wake test: the first client waits to be woken.
            self.waiter = Some(cx.id());
            return;
        }
        match cx.connect(self.upstream) {
            // Read nothing until the pair is in place.
            Ok(()) => cx.pause_input(),
            Err(_) => cx.close(CloseReason::ConnectFailed),
        }
    }

    fn on_paired(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        // The upstream may still be connecting: what the client sends now is queued on it.
        cx.resume_input();
    }

    fn on_wake(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.output().extend_from_slice(b"woken\n");
    }

    fn on_connected(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), r: std::io::Result<()>) {
        if r.is_err() {
            cx.close_peer(CloseReason::ConnectFailed, false);
            cx.close(CloseReason::ConnectFailed);
        }
    }

    fn on_input(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), input: &[u8]) -> usize {
        let Some(out) = cx.peer_output() else {
            return 0;
        };
        out.extend_from_slice(input);
        if cx.peer_pending_output() > HIGH_WATER {
            cx.pause_input();
        }
        input.len()
    }

    fn on_peer_closed(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        // Half-close: the other side finishes sending, then gets a FIN; each connection closes
        // once both of its directions are done.
        if cx.peer().is_some() {
            cx.shutdown_peer_write();
        } else {
            cx.close_after_flush(CloseReason::PeerClosed);
        }
    }

    fn on_unpaired(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close_after_flush(CloseReason::Done);
    }

    fn on_timer(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::ClientTimeout);
    }

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, _: coreplex_engine::Id, _: (), _: CloseReason) {}

    fn stats(&mut self) {}
}

/// An echo server on a thread per connection.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

fn start(upstream: SocketAddr) -> (Runtime<()>, SocketAddr) {
    let mut cfg = common::one_shard();
    cfg.shard.buffer_size = 16 * 1024;
    cfg.shard.max_input = 1 << 20;
    cfg.shard.max_outbound = 64;
    let rt = Runtime::start(cfg, move |_| Tunnel {
        upstream,
        waiter: None,
        plain: coreplex_engine::Plain,
    })
    .expect("runtime starts");
    let addr = rt.listener_addrs()[0];
    (rt, addr)
}

fn stop(rt: Runtime<()>) {
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

fn wait_idle(rt: &Runtime<()>) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = rt.handle().stats(Duration::from_secs(1));
        let (c, o) = (r[0].engine.connections, r[0].engine.outbound);
        if (c, o) == (0, 0) || Instant::now() > deadline {
            return (c, o);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bytes_flow_both_ways_through_a_pair() {
    let (rt, addr) = start(echo_server());
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"hello through the tunnel").unwrap();
    let mut buf = [0u8; 24];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello through the tunnel");
    drop(c);
    assert_eq!(
        wait_idle(&rt),
        (0, 0),
        "connections left after the client closed"
    );
    let s = &rt.handle().stats(Duration::from_secs(1))[0].engine;
    assert_eq!(s.outbound_opened, 1);
    stop(rt);
}

#[test]
fn eight_megabytes_round_trip_with_backpressure() {
    let (rt, addr) = start(echo_server());
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(data.len());
    let mut r = c;
    if let Err(e) = r.read_to_end(&mut got) {
        let s = &rt.handle().stats(Duration::from_secs(1))[0].engine;
        panic!(
            "{e} after {} of {} bytes; engine: {s:?}",
            got.len(),
            data.len()
        );
    }
    writer.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ after the round trip");
    assert_eq!(wait_idle(&rt), (0, 0));
    stop(rt);
}

#[test]
fn a_refused_upstream_closes_the_client() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (rt, addr) = start(dead);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"anyone there?");
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected EOF, got {:?}", &buf[..n]);
    assert_eq!(wait_idle(&rt), (0, 0));
    let s = &rt.handle().stats(Duration::from_secs(1))[0].engine;
    assert_eq!(s.outbound_failed, 1);
    assert_eq!(s.closed[CloseReason::ConnectFailed as usize], 2);
    stop(rt);
}

#[test]
fn a_connection_wakes_another() {
    let (rt, addr) = start("127.0.0.1:1".parse().unwrap());
    let mut first = TcpStream::connect(addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The first one is accepted (and waiting) before the second connects.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.handle().stats(Duration::from_secs(1))[0].engine.accepted < 1 {
        assert!(
            Instant::now() < deadline,
            "the first client was not accepted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = TcpStream::connect(addr).unwrap();
    let mut buf = [0u8; 6];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"woken\n");
    drop((first, second));
    stop(rt);
}

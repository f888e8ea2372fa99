//! Timers that fire in one batch: a handler re-arms its own timer and closes its peer, whose
//! timer fired in the same batch. The re-armed timer must survive the peer's close (its key must
//! not be one the peer still holds), and the peer's already-fired timer must not run.
//!
//! The service pairs every second client with the first and arms both connections' timers in
//! one callback turn (the second's accept wakes the first), so both deadlines fall on the same
//! millisecond and fire in the same wheel poll. Each connection's first tick writes `tick1`,
//! re-arms and closes the peer; its second tick writes `tick2` and closes. Exactly one of the
//! two clients must read `tick1 tick2`; the other only sees its connection close.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Runtime, Service};
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(40);

#[derive(Default)]
struct Pairs {
    waiting: Option<Id>,
    plain: coreplex_engine::Plain,
}

impl Service for Pairs {
    /// Ticks so far.
    type Conn = u8;
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.plain
    }

    fn on_accept(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut u8, _listener: usize) {
        match self.waiting.take() {
            None => self.waiting = Some(cx.id()),
            Some(first) => {
                cx.pair(first);
                cx.set_timer(TICK);
                // In this same turn: the first connection arms the same deadline.
                cx.wake(first);
            }
        }
    }

    fn on_wake(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut u8) {
        cx.set_timer(TICK);
    }

    fn on_input(&mut self, _: &mut ConnCx<'_, ()>, _: &mut u8, input: &[u8]) -> usize {
        input.len()
    }

    fn on_timer(&mut self, cx: &mut ConnCx<'_, ()>, ticks: &mut u8) {
        *ticks += 1;
        if *ticks == 1 {
            cx.output().extend_from_slice(b"tick1\n");
            cx.set_timer(TICK);
            if cx.peer().is_some() {
                cx.close_peer(CloseReason::Done, false);
            }
        } else {
            cx.output().extend_from_slice(b"tick2\n");
            cx.close_after_flush(CloseReason::Done);
        }
    }

    fn on_peer_closed(&mut self, _: &mut ConnCx<'_, ()>, _: &mut u8) {}

    fn on_unpaired(&mut self, _: &mut ConnCx<'_, ()>, _: &mut u8) {}

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut u8) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, _: Id, _: u8, _: CloseReason) {}

    fn stats(&mut self) {}
}

fn start() -> Runtime<()> {
    let cfg = common::one_shard();
    Runtime::start(cfg, |_| Pairs::default()).expect("runtime starts")
}

/// Everything a client reads until its connection closes (or 3 s pass).
fn read_all(mut c: TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_handler_rearming_and_closing_its_peer_within_one_batch() {
    let rt = start();
    let addr = rt.listener_addrs()[0];
    for round in 0..10 {
        let first = TcpStream::connect(addr).unwrap();
        // The second connects once the first is accepted (it must be the pair's first).
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while rt.handle().stats(Duration::from_secs(1))[0].engine.accepted < 2 * round + 1 {
            assert!(std::time::Instant::now() < deadline, "first not accepted");
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = TcpStream::connect(addr).unwrap();
        let a = std::thread::spawn(move || read_all(first));
        let b = read_all(second);
        let a = a.join().unwrap();
        let mut got = [a.clone(), b.clone()];
        got.sort();
        assert_eq!(
            got,
            [String::new(), "tick1\ntick2\n".to_string()],
            "round {round}: first client read {a:?}, second {b:?}"
        );
    }
    let s = &rt.handle().stats(Duration::from_secs(1))[0].engine;
    assert_eq!(s.timers, 0, "timers left behind");
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

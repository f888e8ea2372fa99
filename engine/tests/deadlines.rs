//! A connection's deadline table (`ConnCx::set_deadline`): several named deadlines beside the
//! plain timer, each set, moved and cleared on its own, heard in time order (slots due together
//! in slot order), and nothing left on the wheel once the connection is gone, whether it ended
//! through its last deadline or closed with deadlines still set.
//!
//! On accept the service sets: slot 0 at 20 ms; slot 1 at 10 ms, then moved to 60 ms; slot 2 at
//! 60 ms; slot 3 at 30 ms, then cleared; and the plain timer at 40 ms. Each writes its name when
//! heard; slot 2 (the last) closes. The client must read `d0 t d1 d2` and nothing of slot 3.
//! A connection whose request says `long` sets deadlines a minute out and is closed by its
//! client: the wheel must be empty afterwards.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Runtime, Service};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Table {
    plain: coreplex_engine::Plain,
}

/// When the request arrived (the shard's clock), to check no deadline is heard early.
#[derive(Default)]
struct Conn {
    since: Option<Instant>,
}

impl Service for Table {
    type Conn = Conn;
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.plain
    }

    fn on_accept(&mut self, _: &mut ConnCx<'_, ()>, _: &mut Conn, _listener: usize) {}

    fn on_input(&mut self, cx: &mut ConnCx<'_, ()>, conn: &mut Conn, input: &[u8]) -> usize {
        conn.since = Some(cx.now());
        if input.starts_with(b"long") {
            for slot in 0..coreplex_engine::DEADLINES {
                cx.set_deadline(slot, Duration::from_secs(60));
            }
            cx.set_timer(Duration::from_secs(60));
            cx.output().extend_from_slice(b"armed\n");
            return input.len();
        }
        cx.set_deadline(0, 20 * MS);
        cx.set_deadline(1, 10 * MS);
        cx.set_deadline(2, 60 * MS);
        cx.set_deadline(3, 30 * MS);
        cx.set_deadline(1, 60 * MS); // moved
        cx.clear_deadline(3);
        assert_eq!(cx.deadline(3), None);
        assert!(cx.deadline(1).is_some_and(|d| d > 50 * MS));
        cx.set_timer(40 * MS);
        input.len()
    }

    fn on_timer(&mut self, cx: &mut ConnCx<'_, ()>, conn: &mut Conn) {
        // The wheel counts whole milliseconds of the shard's clock: 1 ms of slack.
        assert!(cx.now() - conn.since.unwrap() >= 39 * MS, "timer early");
        cx.output().extend_from_slice(b"t ");
    }

    fn on_deadline(&mut self, cx: &mut ConnCx<'_, ()>, conn: &mut Conn, slot: usize) {
        let after = ([20, 60, 60, 30][slot] - 1) * MS;
        assert!(
            cx.now() - conn.since.unwrap() >= after,
            "slot {slot} heard early"
        );
        assert_eq!(cx.deadline(slot), None, "a due slot is cleared first");
        cx.output()
            .extend_from_slice(format!("d{slot}{}", if slot == 2 { "\n" } else { " " }).as_bytes());
        if slot == 2 {
            cx.close_after_flush(CloseReason::Done);
        }
    }

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut Conn) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, _: Id, _: Conn, _: CloseReason) {}

    fn stats(&mut self) {}
}

fn start() -> Runtime<()> {
    let cfg = common::one_shard();
    Runtime::start(cfg, |_| Table::default()).expect("runtime starts")
}

fn timers_on(rt: &Runtime<()>) -> u64 {
    rt.handle().stats(Duration::from_secs(1))[0].engine.timers
}

/// Waits until the shard holds `n` timers (3 s at most).
fn wait_timers(rt: &Runtime<()>, n: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if timers_on(rt) == n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn named_deadlines_fire_in_order_beside_the_timer_and_leave_nothing_behind() {
    let rt = start();
    let addr = rt.listener_addrs()[0];
    for round in 0..5 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"go").unwrap();
        let mut got = String::new();
        let _ = c.read_to_string(&mut got);
        assert_eq!(got, "d0 t d1 d2\n", "round {round}");
    }
    assert!(wait_timers(&rt, 0), "timers left: {}", timers_on(&rt));

    // Deadlines still set when the client leaves: the table's wheel entry goes with the box.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"long").unwrap();
    let mut buf = [0u8; 6];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"armed\n");
    // One wheel entry for the four deadlines, one for the plain timer.
    assert_eq!(timers_on(&rt), 2);
    drop(c);
    assert!(wait_timers(&rt, 0), "timers left: {}", timers_on(&rt));
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
}

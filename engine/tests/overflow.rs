//! Input a service leaves unconsumed beyond `max_input` without pausing closes the connection
//! with `CloseReason::Overflow` (the engine's bound on buffered input, whatever the protocol
//! above it). The service here never consumes anything; the client sends more than the 64 KiB
//! bound and must see its connection end, and the service must hear `Overflow` for it. A
//! connection that stays under the bound is served when its input is finally complete.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Runtime, Service};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Consumes input only once it ends with `end\n` (then answers `ok` and closes).
struct Hoarder {
    plain: coreplex_engine::Plain,
    closes: Arc<Mutex<Vec<CloseReason>>>,
}

impl Service for Hoarder {
    type Conn = ();
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.plain
    }

    fn on_accept(&mut self, _: &mut ConnCx<'_, ()>, _: &mut (), _listener: usize) {}

    fn on_input(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), input: &[u8]) -> usize {
        if input.ends_with(b"end\n") {
            cx.output().extend_from_slice(b"ok");
            cx.close_after_flush(CloseReason::Done);
            return input.len();
        }
        0
    }

    fn on_timer(&mut self, _: &mut ConnCx<'_, ()>, _: &mut ()) {}

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, _: Id, _: (), reason: CloseReason) {
        self.closes.lock().unwrap().push(reason);
    }

    fn stats(&mut self) {}
}

fn wait_closes(closes: &Mutex<Vec<CloseReason>>, n: usize) -> Vec<CloseReason> {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let got = closes.lock().unwrap().clone();
        if got.len() >= n || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn unconsumed_input_beyond_max_input_closes_with_overflow() {
    let closes = Arc::new(Mutex::new(Vec::new()));
    let shared = closes.clone();
    let rt = Runtime::start(common::one_shard(), move |_| Hoarder {
        plain: coreplex_engine::Plain,
        closes: shared.clone(),
    })
    .expect("runtime starts");
    let addr = rt.listener_addrs()[0];

    // Under the bound (60 KiB, then the end): kept, then served.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(&vec![b'a'; 60 * 1024]).unwrap();
    c.write_all(b"end\n").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ok");
    assert_eq!(wait_closes(&closes, 1), [CloseReason::Done]);

    // Beyond it (80 KiB, never consumed): closed as an overflow.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = c.write_all(&vec![b'a'; 80 * 1024]);
    let mut buf = [0u8; 16];
    let end = c.read(&mut buf);
    assert!(
        matches!(end, Ok(0) | Err(_)),
        "the connection answered instead of closing: {end:?}"
    );
    assert_eq!(
        wait_closes(&closes, 2),
        [CloseReason::Done, CloseReason::Overflow]
    );
}

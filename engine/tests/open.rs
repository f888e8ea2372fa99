//! Unpaired outbound connections (`ConnCx::open`): one client asks for three in one callback;
//! each new connection hears `on_opened` with its tag before it connects, talks to an echo
//! server on its own, and reports back to the client by `wake`. With `max_outbound` below the
//! number asked for, the asker hears `on_open_failed` with the tag of each one refused.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Runtime, Service};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

struct Fanout {
    upstream: SocketAddr,
    /// The client waiting for its replies.
    client: Option<Id>,
    /// Outbound connection -> its tag.
    tags: HashMap<Id, u64>,
    /// What each tag's connection heard back (or "failed").
    replies: BTreeMap<u64, String>,
    plain: coreplex_engine::Plain,
}

const ASKED: u64 = 3;

impl Service for Fanout {
    type Conn = ();
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.plain
    }

    fn on_accept(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), _listener: usize) {
        self.client = Some(cx.id());
        for tag in 0..ASKED {
            cx.open(self.upstream, None, tag).expect("socket created");
        }
    }

    fn on_opened(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), tag: u64) {
        assert!(cx.is_outbound() && cx.peer().is_none());
        self.tags.insert(cx.id(), tag);
        // Queued until the connect completes.
        cx.output()
            .extend_from_slice(format!("hello{tag}\n").as_bytes());
    }

    fn on_open_failed(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), tag: u64) {
        self.replies.insert(tag, "failed".into());
        let me = cx.id();
        self.report(cx, me);
    }

    fn on_input(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut (), input: &[u8]) -> usize {
        let Some(&tag) = self.tags.get(&cx.id()) else {
            return input.len();
        };
        if !input.ends_with(b"\n") {
            return 0;
        }
        self.replies
            .insert(tag, String::from_utf8_lossy(input).trim().to_string());
        cx.close(CloseReason::Done);
        if let Some(client) = self.client {
            cx.wake(client);
        }
        input.len()
    }

    fn on_wake(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        let me = cx.id();
        self.report(cx, me);
    }

    fn on_timer(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::ClientTimeout);
    }

    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::Shutdown);
    }

    fn on_close(&mut self, id: Id, _: (), _: CloseReason) {
        self.tags.remove(&id);
    }

    fn stats(&mut self) {}
}

impl Fanout {
    /// Once every tag is accounted for, the client gets them in tag order and closes.
    fn report(&mut self, cx: &mut ConnCx<'_, ()>, me: Id) {
        if Some(me) != self.client || self.replies.len() as u64 != ASKED {
            return;
        }
        let text: Vec<String> = self.replies.values().cloned().collect();
        cx.output()
            .extend_from_slice(format!("{}\n", text.join(" ")).as_bytes());
        cx.close_after_flush(CloseReason::Done);
    }
}

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

fn run(max_outbound: usize) -> String {
    let mut cfg = common::one_shard();
    // The slab holds max_connections + max_outbound: one client, the rest outbound.
    cfg.shard.max_connections = 1;
    cfg.shard.max_outbound = max_outbound;
    let upstream = echo_server();
    let rt = Runtime::start(cfg, move |_| Fanout {
        upstream,
        client: None,
        tags: HashMap::new(),
        replies: BTreeMap::new(),
        plain: coreplex_engine::Plain,
    })
    .expect("runtime starts");
    let mut c = TcpStream::connect(rt.listener_addrs()[0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"x").unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
    got
}

#[test]
fn each_opened_connection_hears_its_tag_and_works_on_its_own() {
    assert_eq!(run(8), "hello0 hello1 hello2\n");
}

#[test]
fn connections_beyond_max_outbound_are_reported_to_the_asker() {
    assert_eq!(run(2), "hello0 hello1 failed\n");
}

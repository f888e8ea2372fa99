//! The architecture invariant "no allocation per accept or per request on the fast path",
//! checked with a counting global allocator ([`CountingAlloc`], counting the shard thread only):
//! a real shard running the HTTP service on a loopback port, warmed up, then a burst of whole
//! requests (sequential keep-alive requests on many connections at once, short pipelines that
//! arrive in one read, and new connections each carrying one request) must not allocate at all.
//! Off the fast path by design: a request split across reads (its bytes wait in a buffer) and a
//! pipeline whose input or output outgrows a pooled buffer's kept capacity (the pool drops
//! large buffers to bound idle memory, so the next such burst grows them again).

use crate::config;
use crate::run::{runtime_config, service_factory};
use coreplex_engine::sys::CountingAlloc;
use coreplex_engine::Runtime;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const CONFIG: &str = r#"
version = 1
[global]
shards = 1
max_connections = 512
[[listener]]
bind = "127.0.0.1:0"
[[listener.route]]
path = "/"
respond = { status = 200, headers = { "Content-Type" = "text/plain" }, body = "Hello, World!" }
[[listener.route]]
path_prefix = "/api"
respond = { status = 201, body = "api" }
"#;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: alloc-test\r\n\r\n";

/// Reads until `n` complete responses (each ends with the body "Hello, World!") have arrived.
fn read_responses(c: &mut TcpStream, n: usize) {
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    while seen < n {
        let k = c.read(&mut buf).expect("read responses");
        assert!(k > 0, "closed after {seen} of {n} responses");
        tail.extend_from_slice(&buf[..k]);
        let text = String::from_utf8_lossy(&tail);
        let found = text.matches("Hello, World!").count();
        seen += found;
        if let Some(last) = text.rfind("Hello, World!") {
            tail.drain(..last + "Hello, World!".len());
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// One round of traffic: 20 keep-alive connections with 50 sequential requests each, 10
/// connections with 10 pipelined in one write, and 100 new connections with one request each.
fn burst(addr: SocketAddr) {
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for _ in 0..50 {
        for c in &mut conns {
            c.write_all(REQUEST).unwrap();
        }
        for c in &mut conns {
            read_responses(c, 1);
        }
    }
    for _ in 0..10 {
        let mut p = connect(addr);
        p.write_all(&REQUEST.repeat(10)).unwrap();
        read_responses(&mut p, 10);
    }
    for _ in 0..100 {
        let mut c = connect(addr);
        c.write_all(REQUEST).unwrap();
        read_responses(&mut c, 1);
    }
}

#[test]
fn whole_requests_and_accepts_do_not_allocate() {
    let cfg = config::load(CONFIG).expect("valid config");
    let secure = crate::secure::Secure::load(&cfg, None).expect("no TLS to load");
    let make = service_factory(&cfg, &secure, Vec::new());
    let rt = Runtime::start(runtime_config(&cfg, 512), move |shard| {
        CountingAlloc::count_this_thread(true);
        make(shard)
    })
    .expect("the shard starts");
    let addr = rt.listener_addrs()[0];
    // Warm-up: pools and buffers reach their working size. It does allocate (busy connections'
    // boxes, their buffers), which also shows the shard thread is counted.
    let cold = CountingAlloc::allocations();
    burst(addr);
    assert!(
        CountingAlloc::allocations() > cold,
        "nothing counted: the shard thread is not counted"
    );
    burst(addr);
    let before = CountingAlloc::allocations();
    burst(addr);
    let during = CountingAlloc::allocations() - before;
    rt.handle().stop(Duration::from_millis(500));
    rt.join();
    assert_eq!(
        during, 0,
        "the shard allocated {during} times over 1,200 whole requests and 130 accepts"
    );
}

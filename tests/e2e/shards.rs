//! Limits are per shard, with two shards: `max_connections`, listener `rate_limit`, server and
//! backend `maxconn`, `queue_length`, `max_idle_per_server` and `conn_rate` each hold on one shard
//! while the other shard still has its own share (a limit `L` gives each of 2 shards `L / 2`,
//! at least 1). Clients are steered onto a chosen shard by their source port: the kernel picks a
//! SO_REUSEPORT listener by hashing the 4-tuple, so a port found (by probing, with
//! `coreplex_shard_connections`) to land on shard `k` lands there again.

use crate::backend::{wait_until, Client, TestBackend};
use crate::harness::{
    assert_metric, config, get, metric, metric_in, metrics_text, note_untested, Conn, Server,
};
use crate::proxy::{proxy_config, srv};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Whether this machine can run two shards (one per CPU); says so when it cannot.
fn two_shards(test: &str) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        note_untested(&format!("{test}: needs 2 CPUs for 2 shards, have {cpus}"));
    }
    cpus >= 2
}

/// Open client connections per shard, from `/metrics`.
fn per_shard(admin: SocketAddr) -> [f64; 2] {
    let text = metrics_text(admin);
    let get = |i: usize| {
        metric_in(
            &text,
            &format!("coreplex_shard_connections{{shard=\"{i}\"}}"),
        )
        .unwrap_or_else(|| panic!("no shard {i} in:\n{text}"))
    };
    [get(0), get(1)]
}

/// A TCP connection to `addr` from `127.0.0.1:port`.
fn connect_from(addr: SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.bind(&local.into())?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// Closes with a reset (SO_LINGER 0): the 4-tuple leaves no TIME_WAIT, so its port can connect
/// again at once.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// `n` source ports for each of the two shards of `s` (which must have room on both).
fn ports_per_shard(s: &Server, n: usize) -> [Vec<u16>; 2] {
    let mut found: [Vec<u16>; 2] = [Vec::new(), Vec::new()];
    // Ports below the ephemeral range (32768+), so no other test's connection holds one.
    let mut port = 20_000 + (std::process::id() % 5_000) as u16 * 2;
    let mut tries = 0;
    while found.iter().any(|f| f.len() < n) {
        tries += 1;
        assert!(tries < 400, "could not find {n} ports per shard: {found:?}");
        port += 1;
        let before = per_shard(s.admin());
        let Ok(c) = connect_from(s.addr(), port) else {
            continue;
        };
        let mut after = before;
        assert!(
            wait_until(Duration::from_secs(3), || {
                after = per_shard(s.admin());
                after[0] + after[1] > before[0] + before[1]
            }),
            "the probe from port {port} was not accepted"
        );
        let shard = usize::from(after[1] > before[1]);
        if found[shard].len() < n {
            found[shard].push(port);
        }
        reset(c);
        assert!(wait_until(Duration::from_secs(3), || {
            let now = per_shard(s.admin());
            now[0] + now[1] == before[0] + before[1]
        }));
    }
    found
}

/// A client on the shard its port leads to.
fn client_from(s: &Server, port: u16) -> Client {
    Client::from_stream(
        connect_from(s.addr(), port).expect("connect from a probed port"),
        Duration::from_secs(10),
    )
}

/// One `GET /` from each of `ports`, all at once, each on its own thread: their statuses.
fn gets_from(s: &Server, ports: &[u16]) -> Vec<std::thread::JoinHandle<u16>> {
    let addr = s.addr();
    ports
        .iter()
        .map(|&p| {
            std::thread::spawn(move || {
                let stream = connect_from(addr, p).expect("connect from a probed port");
                Client::from_stream(stream, Duration::from_secs(10))
                    .get("/")
                    .status
            })
        })
        .collect()
}

#[test]
fn max_connections_is_per_shard() {
    if !two_shards("max_connections_is_per_shard") {
        return;
    }
    let s = Server::start(&config("shards = 2\nmax_connections = 2", ""));
    let ports = ports_per_shard(&s, 3);
    let mut on0: Vec<Conn> = ports[0][..2]
        .iter()
        .map(|&p| {
            let mut c = Conn::from_stream(connect_from(s.addr(), p).unwrap());
            c.send(&get("/"));
            assert_eq!(c.response().status, 200);
            c
        })
        .collect();
    assert_eq!(per_shard(s.admin()), [2.0, 0.0]);
    // Shard 0 is full: a third client there waits in the backlog, unserved...
    let mut third = Client::from_stream(
        connect_from(s.addr(), ports[0][2]).unwrap(),
        Duration::from_secs(1),
    );
    third.send(&get("/"));
    // ...while shard 1 still serves its own two.
    let mut a = client_from(&s, ports[1][0]);
    assert_eq!(a.get("/").status, 200);
    let mut b = client_from(&s, ports[1][1]);
    assert_eq!(b.get("/").status, 200);
    assert_eq!(per_shard(s.admin()), [2.0, 2.0]);
    assert!(
        third.response(false, true).is_none(),
        "served beyond shard 0's two"
    );
    // A slot frees on shard 0: the waiting client is served.
    drop(on0.pop());
    let r = third.response(false, true);
    assert!(
        r.is_some_and(|r| r.status == 200),
        "not served after a slot freed"
    );
    assert!(metric(s.admin(), "coreplex_accept_paused_total") >= 1.0);
}

#[test]
fn listener_rate_limit_is_split_between_shards() {
    if !two_shards("listener_rate_limit_is_split_between_shards") {
        return;
    }
    // 4 per second over 2 shards: 2 per second each (a burst of 2, then one every 500 ms).
    let s = Server::start(&config("shards = 2", "rate_limit = 4"));
    let ports = ports_per_shard(&s, 4);
    // The probes spent tokens: let both buckets refill.
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = Instant::now();
    let on0 = gets_from(&s, &ports[0]);
    // Shard 1's bucket is untouched by shard 0's burst: its two connections go through at once.
    for &p in &ports[1][..2] {
        let mut c = client_from(&s, p);
        assert_eq!(c.get("/").status, 200);
    }
    let fast = t0.elapsed();
    for h in on0 {
        assert_eq!(h.join().unwrap(), 200);
    }
    let slow = t0.elapsed();
    assert!(
        fast < Duration::from_millis(900),
        "shard 1 was held back by shard 0's rate ({fast:?})"
    );
    assert!(
        slow >= Duration::from_millis(900),
        "4 connections on a shard limited to 2/s took only {slow:?}"
    );
    assert!(metric(s.admin(), "coreplex_accept_rate_limited_total") >= 1.0);
}

/// A proxy with two shards in front of `b`, with `backend_extra` in `[backend.app]`.
fn two_shard_proxy(b: &TestBackend, backend_extra: &str) -> Server {
    let cfg =
        proxy_config(&[srv(b.addr(), "")], backend_extra, "").replace("shards = 1", "shards = 2");
    Server::start(&cfg)
}

#[test]
fn server_and_backend_maxconn_are_per_shard() {
    if !two_shards("server_and_backend_maxconn_are_per_shard") {
        return;
    }
    for limit in ["servers_maxconn", "maxconn = 2"] {
        let b = TestBackend::start();
        let s = if limit == "servers_maxconn" {
            let cfg = proxy_config(
                &[srv(b.addr(), "maxconn = 2")],
                "timeouts = { queue = \"10s\" }",
                "",
            )
            .replace("shards = 1", "shards = 2");
            Server::start(&cfg)
        } else {
            two_shard_proxy(&b, &format!("{limit}\ntimeouts = {{ queue = \"10s\" }}"))
        };
        let ports = ports_per_shard(&s, 2);
        // 2 over 2 shards: one request at a time on each.
        let mut busy = client_from(&s, ports[0][0]);
        busy.send(b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
        let mut queued = client_from(&s, ports[0][1]);
        queued.send(&get("/"));
        assert_metric(
            s.admin(),
            "coreplex_backend_queue_current{backend=\"app\"}",
            1.0,
        );
        // Shard 1 has its own slot.
        let t0 = Instant::now();
        let mut other = client_from(&s, ports[1][0]);
        assert_eq!(other.get("/").text(), "ok", "{limit}");
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{limit}: shard 1 waited for shard 0's slot"
        );
        let r = queued.response(false, true).expect("the queued request");
        assert_eq!(r.status, 200);
        assert!(busy.response(false, true).is_some());
    }
}

#[test]
fn queue_length_is_per_shard() {
    if !two_shards("queue_length_is_per_shard") {
        return;
    }
    let b = TestBackend::start();
    // maxconn 2 and queue_length 2 over 2 shards: one in flight and one waiting on each.
    let s = two_shard_proxy(
        &b,
        "maxconn = 2\nqueue_length = 2\ntimeouts = { queue = \"10s\" }",
    );
    let ports = ports_per_shard(&s, 3);
    let mut busy = client_from(&s, ports[0][0]);
    busy.send(b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 1));
    let mut queued = client_from(&s, ports[0][1]);
    queued.send(&get("/"));
    assert_metric(
        s.admin(),
        "coreplex_backend_queue_current{backend=\"app\"}",
        1.0,
    );
    // Shard 0's queue is full: 503 at once.
    let mut refused = client_from(&s, ports[0][2]);
    assert_eq!(refused.get("/").status, 503);
    // Shard 1: its own slot and its own queue.
    let mut busy1 = client_from(&s, ports[1][0]);
    busy1.send(b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || b.requests() == 2));
    let mut queued1 = client_from(&s, ports[1][1]);
    queued1.send(&get("/"));
    assert_metric(
        s.admin(),
        "coreplex_backend_queue_current{backend=\"app\"}",
        2.0,
    );
    for c in [&mut queued, &mut queued1, &mut busy, &mut busy1] {
        assert_eq!(c.response(false, true).expect("answered").status, 200);
    }
    assert_metric(
        s.admin(),
        "coreplex_backend_errors_total{backend=\"app\",kind=\"queue_full\"}",
        1.0,
    );
}

#[test]
fn max_idle_per_server_is_per_shard_and_at_least_one() {
    if !two_shards("max_idle_per_server_is_per_shard_and_at_least_one") {
        return;
    }
    let b = TestBackend::start();
    // 1 over 2 shards: still 1 on each (a pool that keeps nothing would never reuse).
    let s = two_shard_proxy(&b, "reuse = \"always\"\npool = { max_idle_per_server = 1 }");
    let ports = ports_per_shard(&s, 2);
    for (shard, ports) in ports.iter().enumerate() {
        // Two requests at once on this shard: two backend connections, one kept afterwards.
        let before = b.accepted();
        let mut x = client_from(&s, ports[0]);
        let mut y = client_from(&s, ports[1]);
        x.send(b"GET /delay/300 HTTP/1.1\r\nHost: a\r\n\r\n");
        y.send(b"GET /delay/300 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(x.response(false, true).unwrap().status, 200);
        assert_eq!(y.response(false, true).unwrap().status, 200);
        assert_eq!(b.accepted() - before, 2);
        assert!(
            wait_until(Duration::from_secs(3), || b.open() == shard + 1),
            "shard {shard}: {} backend connections open, expected one idle per shard so far",
            b.open()
        );
    }
    let idle = format!(
        "coreplex_backend_connections_idle{{backend=\"app\",server=\"{}\",list=\"idle\"}}",
        b.addr()
    );
    assert_metric(s.admin(), &idle, 2.0);
}

#[test]
fn conn_rate_is_per_shard() {
    if !two_shards("conn_rate_is_per_shard") {
        return;
    }
    let b = TestBackend::start();
    // 2 new connections per second over 2 shards: 1 per second each.
    let cfg = proxy_config(
        &[srv(b.addr(), "conn_rate = 2")],
        "reuse = \"never\"\ntimeouts = { queue = \"10s\" }",
        "",
    )
    .replace("shards = 1", "shards = 2");
    let s = Server::start(&cfg);
    let ports = ports_per_shard(&s, 2);
    let t0 = Instant::now();
    let slow = gets_from(&s, &ports[0]);
    let mut other = client_from(&s, ports[1][0]);
    assert_eq!(other.get("/").status, 200);
    let fast = t0.elapsed();
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    let took = t0.elapsed();
    assert!(
        fast < Duration::from_millis(900),
        "shard 1's connection waited for shard 0's rate ({fast:?})"
    );
    assert!(
        took >= Duration::from_millis(900),
        "2 new connections on a shard limited to 1/s took only {took:?}"
    );
    assert_eq!(b.accepted(), 3);
}

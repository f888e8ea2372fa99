//! What an idle TLS session costs: heap bytes the listener transport keeps per connection once
//! the handshake and a request are done and the engine has called `idle` (the engine keeps no buffer for an idle connection, so
//! this is its whole user-space TLS cost beside the 28-byte slot). The engine's counting
//! allocator sees every allocation of this test binary; the clients are dropped before counting.

use coreplex_engine::sys::CountingAlloc;
use coreplex_engine::{Status, Transport};
use coreplex_tls::tickets::TicketKey;
use coreplex_tls::Tls;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::io::Write;

mod common;
use common::{client_config, listener, settings, shard};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Moves records between `client` and the server `session` until both are quiet.
fn pump(tls: &mut Tls, session: &mut Box<coreplex_tls::State>, client: &mut ClientConnection) {
    let mut plain = Vec::new();
    for _ in 0..100 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let mut to_client = Vec::new();
        if !to_server.is_empty() {
            let r = tls.receive(session, &mut to_server, &mut plain, &mut to_client);
            assert_ne!(r.status, Status::Failed);
            assert_eq!(r.consumed, to_server.len(), "whole records only here");
        }
        if to_client.is_empty() && to_server.is_empty() {
            return;
        }
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    panic!("did not settle");
}

/// Heap bytes and blocks per idle session after `n` handshakes with one request each.
fn per_session(version: &'static rustls::SupportedProtocolVersion, n: usize) -> (f64, f64) {
    let side = listener(&settings());
    let mut tls = shard(&side, &[TicketKey::generate().unwrap()]);
    let config = client_config(&[version], &["http/1.1"]);
    let mut kept = Vec::with_capacity(n);
    // One warm-up connection: first-use allocations (tables, caches) are not per connection.
    for round in 0..2 {
        let count = if round == 0 { 1 } else { n };
        let (bytes0, blocks0) = (CountingAlloc::live_bytes(), CountingAlloc::live_blocks());
        for _ in 0..count {
            let (mut session, _) = tls.accept(0).unwrap();
            let mut client =
                ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
                    .unwrap();
            pump(&mut tls, &mut session, &mut client);
            client
                .writer()
                .write_all(b"GET / HTTP/1.1\r\n\r\n")
                .unwrap();
            pump(&mut tls, &mut session, &mut client);
            let mut wire = Vec::new();
            assert!(tls.seal(&mut session, b"HTTP/1.1 200 OK\r\n\r\n", &mut [], &mut wire));
            // As the engine does when the connection's buffers go back to the pool.
            tls.idle(&mut session);
            drop(client);
            kept.push(session);
        }
        if round == 1 {
            let bytes = CountingAlloc::live_bytes() - bytes0;
            let blocks = CountingAlloc::live_blocks() - blocks0;
            // `kept` grew in place (capacity reserved): it is not in the figure.
            return (bytes as f64 / n as f64, blocks as f64 / n as f64);
        }
    }
    unreachable!()
}

#[test]
fn an_idle_tls_session_keeps_its_secrets_and_little_else() {
    // TLS 1.3 keeps rustls' KernelConnection for KeyUpdates (about 800 bytes); TLS 1.2 keeps
    // nothing of rustls. Before the record layer was ours, both kept rustls' whole connection
    // with two expanded keys: 2.3-2.5 KB.
    for (name, version, budget) in [
        ("TLS 1.3", &rustls::version::TLS13, 1280.0),
        ("TLS 1.2", &rustls::version::TLS12, 512.0),
    ] {
        let (bytes, blocks) = per_session(version, 200);
        // malloc adds about 16 bytes per block.
        let with_overhead = bytes + 16.0 * blocks;
        println!(
            "{name}: {bytes:.0} heap bytes in {blocks:.1} blocks per idle session (~{with_overhead:.0} with malloc's headers)"
        );
        assert!(
            with_overhead <= budget,
            "{name}: an idle TLS session holds {with_overhead:.0} bytes (budget {budget})"
        );
    }
}

//! The TLS entry point of a listener: a client's bytes (the ClientHello peek, then rustls through
//! the transport) at arbitrary splits, with the service writing and closing in between, as the
//! shard does. Never a panic; the transport consumes within its input and, once failed, stays
//! failed.
#![no_main]

use coreplex_engine::{Status, Transport};
use coreplex_tls::settings::{CertSpec, ServerSettings, Version};
use coreplex_tls::tickets::{TicketKey, Ticketer};
use coreplex_tls::{server, ListenerTls, Tls};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn listener() -> &'static (ListenerTls, Arc<Ticketer>) {
    static L: OnceLock<(ListenerTls, Arc<Ticketer>)> = OnceLock::new();
    L.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/certs"));
        let spec = |n: &str| CertSpec {
            cert: dir.join(format!("{n}.pem")),
            key: dir.join(format!("{n}.key")),
            names: Vec::new(),
        };
        let settings = ServerSettings {
            certs: vec![spec("ecdsa"), spec("rsa")],
            default_for_unknown: false,
            min_version: Version::Tls12,
            max_version: Version::Tls13,
            cipher_suites: None,
            groups: None,
            alpn: vec!["http/1.1".into()],
            client_auth: None,
            handshake_timeout: Duration::from_secs(5),
            session_cache: 4,
            tls13_tickets: 1,
        };
        let ticketer =
            Ticketer::new(&[TicketKey::generate().expect("key")], 3600).expect("ticketer");
        let side = server::build(&settings, Some(ticketer.clone())).expect("listener builds");
        (
            ListenerTls {
                side,
                session_cache: 4,
                tls13_tickets: 1,
            },
            ticketer,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let (l, ticketer) = listener();
    let mut tls = Tls::new(&[Some(l.clone())], &[], Some(ticketer.clone()));
    let (mut session, _) = tls.accept(0).expect("listener 0 is TLS");
    let step = usize::from(ctl % 32) + 1;
    let mut unread: Vec<u8> = Vec::new();
    let (mut plain, mut reply) = (Vec::new(), Vec::new());
    let mut failed = false;
    for piece in input.chunks(step) {
        unread.extend_from_slice(piece);
        let r = tls.receive(&mut session, &mut unread, &mut plain, &mut reply);
        assert!(r.consumed <= unread.len());
        if failed {
            assert_eq!(r.status, Status::Failed, "a failed session came back");
        }
        if r.status == Status::Failed {
            failed = true;
            unread.clear();
            continue;
        }
        unread.drain(..r.consumed);
        if r.status == Status::Ready && ctl & 0x40 != 0 {
            let mut wire = Vec::new();
            let _ = tls.seal(
                &mut session,
                b"HTTP/1.1 200 OK\r\n\r\n",
                &mut unread,
                &mut wire,
            );
            if ctl & 0x20 != 0 {
                let _ = tls.close(&mut session, &mut unread, &mut wire);
            }
        }
    }
});

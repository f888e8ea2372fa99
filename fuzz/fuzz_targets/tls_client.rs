//! The TLS entry point of a backend connection: whatever a (hostile) backend sends after our
//! ClientHello, at arbitrary splits, with requests sealed in between. Never a panic.
#![no_main]

use coreplex_engine::{Status, Transport};
use coreplex_tls::client::{self, ClientSide};
use coreplex_tls::settings::{ClientSettings, Roots, Version};
use coreplex_tls::Tls;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn profile() -> &'static ClientSide {
    static P: OnceLock<ClientSide> = OnceLock::new();
    P.get_or_init(|| {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/certs"));
        client::build(&ClientSettings {
            roots: Roots::CaFile(dir.join("ca.pem")),
            verify: true,
            server_name: Some("localhost".into()),
            address: "127.0.0.1".parse().unwrap(),
            client_cert: None,
            alpn: vec!["http/1.1".into()],
            min_version: Version::Tls12,
            max_version: Version::Tls13,
            resumption_cache: 4,
        })
        .expect("profile builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let mut tls = Tls::new(&[], std::slice::from_ref(profile()), None);
    let mut session = tls.connect(0).expect("profile 0");
    let (mut plain, mut hello) = (Vec::new(), Vec::new());
    let r = tls.receive(&mut session, &mut [], &mut plain, &mut hello);
    assert_eq!(r.status, Status::Handshaking);
    assert!(!hello.is_empty(), "a ClientHello");
    let step = usize::from(ctl % 32) + 1;
    let mut unread: Vec<u8> = Vec::new();
    for piece in input.chunks(step) {
        unread.extend_from_slice(piece);
        let mut reply = Vec::new();
        let r = tls.receive(&mut session, &mut unread, &mut plain, &mut reply);
        assert!(r.consumed <= unread.len());
        if r.status == Status::Failed {
            return;
        }
        unread.drain(..r.consumed);
        if r.status == Status::Ready {
            let mut wire = Vec::new();
            let _ = tls.seal(
                &mut session,
                b"GET / HTTP/1.1\r\n\r\n",
                &mut unread,
                &mut wire,
            );
        }
    }
});

//! Certificates from the shipped test files: names, validity, a key that does not match, files
//! that hold no certificate or key.

use coreplex_tls::certs;
use coreplex_tls::TlsError;
use std::path::PathBuf;

fn f(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/certs")).join(name)
}

#[test]
fn names_validity_and_coverage() {
    for name in ["ecdsa", "rsa"] {
        let c = certs::load(&f(&format!("{name}.pem")), &f(&format!("{name}.key"))).unwrap();
        let der = c.key.cert[0].as_ref().to_vec();
        assert_eq!(certs::alt_names(&der), ["localhost", "127.0.0.1"]);
        let v = c.validity;
        let years = (v.not_after - v.not_before) as f64 / (365.25 * 86_400.0);
        assert!((9.9..10.1).contains(&years), "{v:?}");
        assert!(certs::covers(&c, "localhost"));
        assert!(certs::covers(&c, "127.0.0.1"));
        assert!(!certs::covers(&c, "example.com"));
    }
}

#[test]
fn a_key_of_another_certificate_and_files_without_pem_are_errors() {
    let e = certs::load(&f("ecdsa.pem"), &f("rsa.key")).unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    let e = certs::load(&f("ecdsa.key"), &f("ecdsa.key")).unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    let e = certs::load(&f("ecdsa.pem"), &f("ecdsa.pem")).unwrap_err();
    assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
    let e = certs::load(&f("missing.pem"), &f("ecdsa.key")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

//! Certificates and keys from PEM files: the chain and its signing key (checked to match), the
//! key's algorithm (to offer ECDSA before RSA), the names a certificate covers, and its validity
//! period (read from the DER with a small walker over the few fields it needs).

use crate::error::TlsError;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate chain with its key, loaded and checked.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// For rustls.
    pub key: Arc<CertifiedKey>,
    /// The key's algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The leaf's validity, seconds since the Unix epoch.
    pub validity: Validity,
    /// Where it came from.
    pub cert_path: PathBuf,
}

/// A certificate's validity period, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

/// The largest certificate, key, CA or ticket key file read (a chain with a few certificates is
/// a few KiB; `/dev/zero` by mistake must not hang `check`).
pub const MAX_FILE: u64 = 1 << 20;

/// Reads a file of at most [`MAX_FILE`] bytes.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let fail = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(fail(std::io::Error::other(format!(
            "larger than {} KiB: not a certificate, key or key file",
            MAX_FILE / 1024
        ))));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| TlsError::BadCertificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file, as DER.
pub fn load_key_der(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads a chain and its private key, and checks that they belong together.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, TlsError> {
    let chain = load_chain(cert_path)?;
    let key_der = load_key_der(key_path)?;
    let signing =
        aws_lc_rs::sign::any_supported_type(&key_der).map_err(|e| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let algorithm = signing.algorithm();
    let validity = validity(&chain[0]).ok_or_else(|| TlsError::BadCertificate {
        path: cert_path.to_path_buf(),
        reason: "no validity period".into(),
    })?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        algorithm,
        validity,
        cert_path: cert_path.to_path_buf(),
    })
}

/// Whether the leaf certificate of `cert` is valid for host name (or IP address) `name`.
pub fn covers(cert: &LoadedCert, name: &str) -> bool {
    let Some(leaf) = cert.key.cert.first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// One DER element: `(tag, contents, rest)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A DER certificate's tbsCertificate fields from serialNumber on (past the optional `[0]`
/// version).
fn tbs_after_version(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (tag, _, after) = tlv(tbs)?;
    Some(if tag == 0xa0 { after } else { tbs })
}

/// The validity period of a DER certificate (RFC 5280 4.1: Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity
/// SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }).
pub fn validity(cert: &[u8]) -> Option<Validity> {
    let mut rest = tbs_after_version(cert)?;
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, before, rest) = tlv(validity)?;
    let (t2, after, _) = tlv(rest)?;
    Some(Validity {
        not_before: time(t1, before)?,
        not_after: time(t2, after)?,
    })
}

/// The subject alternative names of a DER certificate: DNS names (lowercase) and IP addresses
/// (as text). RFC 5280 4.1 and 4.2.1.6: after `validity` come `subject`, `subjectPublicKeyInfo`,
/// optional `[1]` and `[2]` unique ids, then `[3] EXPLICIT Extensions`; the SAN extension (OID
/// 2.5.29.17) holds a SEQUENCE of GeneralName, `[2] dNSName` and `[7] iPAddress` being read.
pub fn alt_names(cert: &[u8]) -> Vec<String> {
    alt_names_inner(cert).unwrap_or_default()
}

fn alt_names_inner(cert: &[u8]) -> Option<Vec<String>> {
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
    let mut rest = tbs_after_version(cert)?;
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    for _ in 0..6 {
        rest = tlv(rest)?.2;
    }
    let mut names = Vec::new();
    while !rest.is_empty() {
        let (tag, body, after) = tlv(rest)?;
        rest = after;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = tlv(body)? else {
            return None;
        };
        while !exts.is_empty() {
            let (0x30, ext, after) = tlv(exts)? else {
                return None;
            };
            exts = after;
            let (0x06, oid, mut fields) = tlv(ext)? else {
                return None;
            };
            if oid != SAN_OID {
                continue;
            }
            if let Some((0x01, _, after)) = tlv(fields) {
                fields = after; // critical
            }
            let (0x04, value, _) = tlv(fields)? else {
                return None;
            };
            let (0x30, mut general, _) = tlv(value)? else {
                return None;
            };
            while !general.is_empty() {
                let (tag, name, after) = tlv(general)?;
                general = after;
                match tag {
                    0x82 => names.push(std::str::from_utf8(name).ok()?.to_ascii_lowercase()),
                    0x87 if name.len() == 4 => {
                        let ip: [u8; 4] = name.try_into().ok()?;
                        names.push(std::net::Ipv4Addr::from(ip).to_string());
                    }
                    0x87 if name.len() == 16 => {
                        let ip: [u8; 16] = name.try_into().ok()?;
                        names.push(std::net::Ipv6Addr::from(ip).to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    Some(names)
}

/// A DER UTCTime (tag 0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`), in
/// seconds since the Unix epoch.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |a, &c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            // RFC 5280 4.1.2.5.1: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, s) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the validity of untrusted input (for the fuzz target).
#[doc(hidden)]
pub fn fuzz_validity(data: &[u8]) {
    let _ = validity(data);
    let _ = alt_names(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_past_the_size_bound_are_refused_without_reading_them_whole() {
        let big = std::env::temp_dir().join(format!("coreplex-big-{}.pem", std::process::id()));
        std::fs::write(&big, vec![b'A'; MAX_FILE as usize + 1]).unwrap();
        let err = load_chain(&big).unwrap_err().to_string();
        std::fs::remove_file(&big).unwrap();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        // An endless file ends at the bound too.
        let err = load_key_der(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        let keys = crate::tickets::load_keys(Path::new("/dev/zero")).unwrap_err();
        assert!(keys.to_string().contains("larger than"), "{keys}");
    }

    #[test]
    fn times_convert() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x18, b"20261203000000Z"), Some(1_796_256_000));
        assert_eq!(time(0x17, b"701301000000Z"), None);
        assert_eq!(time(0x17, b"70010100000Z"), None);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn truncated_der_is_refused_at_every_length() {
        // A certificate-shaped prefix cut at every byte never panics and never yields a period.
        let mut der = vec![
            0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 0xf0, 0xa0, 0x03, 0x02, 0x01, 0x02,
        ];
        der.extend_from_slice(&[0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x1e]);
        der.extend_from_slice(&[0x17, 0x0d]);
        der.extend_from_slice(b"250101000000Z");
        der.extend_from_slice(&[0x17, 0x0d]);
        der.extend_from_slice(b"350101000000Z");
        for n in 0..der.len() {
            assert_eq!(validity(&der[..n]), None, "cut at {n}");
        }
    }
}

//! Stateless session tickets sealed with one key set that every shard (and every instance that
//! shares the key file) holds, so a returning client resumes wherever it lands.
//!
//! # Key file
//! The nginx / Envoy format: one or more keys, concatenated. A key is 80 bytes (`name[16]
//! hmac[32] aes[32]`) or 48 bytes (`name[16] aes[16] hmac[16]`). The first key seals new tickets;
//! every key opens them (so a rotated-out key keeps resuming its tickets while it is listed).
//! coreplex seals with AES-GCM (AES-256 for 80-byte keys, AES-128 for 48-byte ones) under the
//! key's AES part and ignores the HMAC part; the ticket bytes are coreplex's own, so only
//! coreplex instances share tickets through the file.
//!
//! # Ticket
//! `name[16] nonce[12] seal(issued_at[8] || rustls state) tag[16]`, with the name as associated
//! data. A ticket older than its lifetime is refused (a full handshake follows), whatever the
//! client kept it for, and key rotation drops old keys after one lifetime.

use crate::error::TlsError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of a key's name.
const NAME_LEN: usize = 16;
/// Bytes of the AEAD tag.
const TAG_LEN: usize = 16;

/// One ticket key (secret material: not `Debug`-printed).
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    /// Names the key inside the tickets it seals.
    pub name: [u8; NAME_LEN],
    /// AES key: 32 bytes (AES-256-GCM) or 16 (AES-128-GCM).
    aes: Vec<u8>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TicketKey({:02x?}, AES-{})",
            &self.name[..4],
            self.aes.len() * 8
        )
    }
}

impl TicketKey {
    /// A fresh random AES-256 key.
    pub fn generate() -> Result<TicketKey, TlsError> {
        let mut bytes = [0u8; 48];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| TlsError::General("no randomness for a ticket key".into()))?;
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&bytes[..NAME_LEN]);
        Ok(TicketKey {
            name,
            aes: bytes[NAME_LEN..].to_vec(),
        })
    }

    /// The key in the file format (80 bytes; the HMAC part is zero).
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = self.name.to_vec();
        out.extend_from_slice(&[0; 32]);
        let mut aes = self.aes.clone();
        aes.resize(32, 0);
        out.extend_from_slice(&aes);
        out
    }
}

/// Parses a key file's bytes: 80-byte keys, or 48-byte keys.
pub fn parse_keys(bytes: &[u8]) -> Option<Vec<TicketKey>> {
    let size = if !bytes.is_empty() && bytes.len() % 80 == 0 {
        80
    } else if !bytes.is_empty() && bytes.len() % 48 == 0 {
        48
    } else {
        return None;
    };
    Some(
        bytes
            .chunks(size)
            .map(|k| {
                let mut name = [0u8; NAME_LEN];
                name.copy_from_slice(&k[..NAME_LEN]);
                let aes = if size == 80 { &k[48..80] } else { &k[16..32] };
                TicketKey {
                    name,
                    aes: aes.to_vec(),
                }
            })
            .collect(),
    )
}

/// Reads a key file.
pub fn load_keys(path: &Path) -> Result<Vec<TicketKey>, TlsError> {
    let bytes = crate::certs::read(path)?;
    parse_keys(&bytes).ok_or(TlsError::BadTicketKeys {
        path: path.to_path_buf(),
        len: bytes.len(),
    })
}

/// A key ready to seal and open.
struct SealKey {
    name: [u8; NAME_LEN],
    aead: LessSafeKey,
}

/// The ticketer rustls calls: seals with the first key, opens with any.
pub struct Ticketer {
    keys: Vec<SealKey>,
    lifetime: u32,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer")
            .field("keys", &self.keys.len())
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ticketer {
    /// A ticketer over `keys` (the first seals) whose tickets live `lifetime` seconds.
    pub fn new(keys: &[TicketKey], lifetime: u32) -> Result<Arc<Ticketer>, TlsError> {
        if keys.is_empty() {
            return Err(TlsError::General("no ticket key".into()));
        }
        let keys = keys
            .iter()
            .map(|k| {
                let alg = if k.aes.len() == 32 {
                    &AES_256_GCM
                } else {
                    &AES_128_GCM
                };
                let key = UnboundKey::new(alg, &k.aes)
                    .map_err(|_| TlsError::General("bad ticket key length".into()))?;
                Ok(SealKey {
                    name: k.name,
                    aead: LessSafeKey::new(key),
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(Arc::new(Ticketer {
            keys,
            lifetime: lifetime.min(7 * 24 * 3600),
        }))
    }

    /// Keys in use.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn seal_at(&self, plain: &[u8], issued: u64) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + 8 + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(&issued.to_be_bytes());
        out.extend_from_slice(plain);
        let mut body = out.split_off(start);
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + 8 + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.name == name)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(name),
                &mut buf,
            )
            .ok()?;
        let issued = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        if now.saturating_sub(issued) > u64::from(self.lifetime) || issued > now + 60 {
            return None;
        }
        Some(plain[8..].to_vec())
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, now_secs())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, now_secs())
    }
}

/// Opens untrusted ticket bytes with a fixed key (the fuzz target).
#[doc(hidden)]
pub fn fuzz_open(data: &[u8]) {
    let key = TicketKey {
        name: [1; NAME_LEN],
        aes: vec![2; 32],
    };
    if let Ok(t) = Ticketer::new(&[key], 3600) {
        let _ = t.open_at(data, 1_000_000);
    }
    let _ = parse_keys(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_any_listed_key_within_its_lifetime() {
        let (old, new) = (
            TicketKey::generate().unwrap(),
            TicketKey::generate().unwrap(),
        );
        let before = Ticketer::new(std::slice::from_ref(&old), 100).unwrap();
        let ticket = before.seal_at(b"state", 1_000).unwrap();
        assert_eq!(
            before.open_at(&ticket, 1_050).as_deref(),
            Some(&b"state"[..])
        );
        // Rotated: the new key seals, the old still opens.
        let after = Ticketer::new(&[new.clone(), old], 100).unwrap();
        assert_eq!(
            after.open_at(&ticket, 1_099).as_deref(),
            Some(&b"state"[..])
        );
        assert!(
            after.open_at(&ticket, 1_101).is_none(),
            "older than its lifetime"
        );
        // The old key dropped: a full handshake.
        let later = Ticketer::new(&[new], 100).unwrap();
        assert!(later.open_at(&ticket, 1_050).is_none());
        // Tampering anywhere fails.
        for i in 0..ticket.len() {
            let mut t = ticket.clone();
            t[i] ^= 1;
            assert!(before.open_at(&t, 1_050).is_none(), "byte {i}");
        }
    }

    #[test]
    fn key_files_of_80_and_48_byte_keys() {
        let k = TicketKey::generate().unwrap();
        let mut file = k.to_file_bytes();
        file.extend_from_slice(&TicketKey::generate().unwrap().to_file_bytes());
        let keys = parse_keys(&file).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], k);
        let short = parse_keys(&[9u8; 96]).unwrap();
        assert_eq!(short.len(), 2);
        assert_eq!(short[0].aes.len(), 16);
        assert!(parse_keys(&[0u8; 81]).is_none());
        assert!(parse_keys(&[]).is_none());
        // A 48-byte key seals and opens with AES-128.
        let t = Ticketer::new(&short, 60).unwrap();
        let ticket = t.seal_at(b"x", 5).unwrap();
        assert_eq!(t.open_at(&ticket, 6).as_deref(), Some(&b"x"[..]));
    }
}

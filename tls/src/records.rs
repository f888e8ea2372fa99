//! The record layer of a listener's connection once its handshake is done.
//!
//! rustls hands over the traffic secrets and sequence numbers (`dangerous_into_kernel_connection`,
//! the API rustls 0.23 made for kernel TLS: this module and `session` are the only ones that speak
//! rustls' 0.23-specific APIs); from then on records are opened and sealed here with aws-lc-rs. On
//! TLS 1.3 rustls' `KernelConnection` is kept, boxed, to derive the next secrets on a KeyUpdate; on
//! TLS 1.2 nothing of rustls is kept. An idle connection keeps only the secrets and sequence
//! numbers: the expanded AEAD keys (aws-lc allocates a context of about 600 bytes for each
//! AES-GCM key) are dropped by [`Records::idle`] and rebuilt from the secrets by the next record.
//!
//! Records (RFC 8446 5.2; RFC 5246 6.2.3.3 with RFC 5288 for AES-GCM and RFC 7905 for ChaCha20):
//!
//! ```text
//! TLS 1.3           23 03 03 len | AEAD(plaintext || type || zeros)  nonce = iv ^ seq, aad = header
//! TLS 1.2 AES-GCM   type 03 03 len | explicit(8) || AEAD(plaintext)   nonce = salt(4) || explicit
//! TLS 1.2 ChaCha20  type 03 03 len | AEAD(plaintext)                  nonce = iv ^ seq
//!                   (TLS 1.2 aad = seq(8) || type || 03 03 || plaintext length(2))
//! ```
//!
//! What may arrive after the handshake, and the answer (RFC 8446 4.6.3, 6; RFC 5746 4.4):
//! application data is handed out; close_notify ends the input; a TLS 1.3 KeyUpdate switches the
//! receive keys (and the send keys after our own KeyUpdate, when asked); a TLS 1.2 ClientHello
//! (renegotiation) gets a no_renegotiation warning and is otherwise ignored; warning alerts on
//! TLS 1.2 and user_canceled on TLS 1.3 are ignored; anything else is fatal with its alert
//! (bad_record_mac, record_overflow, unexpected_message, decode_error, illegal_parameter).

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use zeroize::Zeroize;

/// Content types (RFC 8446 B.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Handshake message types met after the handshake.
const CLIENT_HELLO: u8 = 1;
const KEY_UPDATE: u8 = 24;
/// Alert descriptions.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
const NO_RENEGOTIATION: u8 = 100;

const HEADER: usize = 5;
const TAG: usize = 16;
const EXPLICIT_NONCE: usize = 8;
/// Largest plaintext of a record (RFC 8446 5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest ciphertext: TLS 1.3 allows 256 bytes of expansion (RFC 8446 5.2), TLS 1.2 2048.
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
/// Records sealed under one AES-GCM key before it is replaced (TLS 1.3: a KeyUpdate) or the
/// connection refuses to send more (TLS 1.2), as rustls does (RFC 8446 5.5, its limit 2^24).
const AES_GCM_RECORD_LIMIT: u64 = 1 << 24;

/// A fatal condition, with the alert it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// A record did not authenticate (bad_record_mac).
    Decrypt,
    /// A record longer than the protocol allows (record_overflow).
    Overflow,
    /// A record or message not allowed here (unexpected_message).
    Unexpected,
    /// A malformed alert or message (decode_error).
    Decode,
    /// A KeyUpdate with a value other than 0 or 1 (illegal_parameter).
    IllegalParameter,
    /// The peer sent a fatal alert (nothing is answered).
    AlertReceived,
    /// A second renegotiation attempt (a fatal no_renegotiation).
    Renegotiation,
    /// More warning alerts, or KeyUpdates without data between them, than a peer has reason to
    /// send (unexpected_message): the limits rustls and BoringSSL set.
    TooMany,
    /// Our own failure: a key could not be set up or renewed (internal_error).
    Internal,
}

impl RecordError {
    /// The alert description sent for it (`None`: none is sent).
    fn alert(self) -> Option<u8> {
        match self {
            RecordError::Decrypt => Some(20),
            RecordError::Overflow => Some(22),
            RecordError::Unexpected => Some(10),
            RecordError::Decode => Some(50),
            RecordError::IllegalParameter => Some(47),
            RecordError::AlertReceived => None,
            RecordError::Renegotiation => Some(NO_RENEGOTIATION),
            RecordError::TooMany => Some(10),
            RecordError::Internal => Some(80),
        }
    }
}

/// Where the input stands after [`Records::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Records were opened (or more bytes are needed).
    Open,
    /// The peer sent close_notify: nothing after it is read.
    PeerClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's traffic secret: key, IV and the next record's sequence number.
struct Secret {
    aead: Aead,
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Secret {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Secret, RecordError> {
        let (aead, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Aead::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Aead::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Aead::Chacha20Poly1305, key, iv)
            }
            _ => return Err(RecordError::Internal),
        };
        let mut s = Secret {
            aead,
            key: [0; 32],
            iv: [0; 12],
            seq,
        };
        let (k, i) = (key.as_ref(), iv.as_ref());
        if k.len() > 32 || i.len() != 12 {
            return Err(RecordError::Internal);
        }
        s.key[..k.len()].copy_from_slice(k);
        s.iv.copy_from_slice(i);
        Ok(s)
    }

    fn key_len(&self) -> usize {
        match self.aead {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::Chacha20Poly1305 => 32,
        }
    }

    /// The expanded key.
    fn expand(&self) -> Result<LessSafeKey, RecordError> {
        let alg = match self.aead {
            Aead::Aes128Gcm => &AES_128_GCM,
            Aead::Aes256Gcm => &AES_256_GCM,
            Aead::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        UnboundKey::new(alg, &self.key[..self.key_len()])
            .map(LessSafeKey::new)
            .map_err(|_| RecordError::Internal)
    }

    /// The IV with the sequence number XORed into its last 8 bytes (RFC 8446 5.3).
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    fn gcm(&self) -> bool {
        self.aead != Aead::Chacha20Poly1305
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// The expanded keys of a busy connection.
struct Keys {
    tx: LessSafeKey,
    rx: LessSafeKey,
}

/// A listener connection's records after its handshake.
pub(crate) struct Records {
    tls13: bool,
    tx: Secret,
    rx: Secret,
    /// Built on the first record after the connection was idle.
    keys: Option<Keys>,
    /// TLS 1.3: what derives the next secrets on a KeyUpdate.
    kernel: Option<Box<KernelConnection<ServerConnectionData>>>,
    /// TLS 1.2: bytes still to skip of a renegotiating ClientHello longer than its record.
    skip_hello: u32,
    /// What is left of the peer's allowance of warning alerts, renegotiation attempts and
    /// KeyUpdates since its last application data.
    warnings_left: u8,
    renegotiations_left: u8,
    key_updates_left: u8,
    peer_closed: bool,
}

/// The allowances (rustls' and BoringSSL's `kMaxWarningAlerts`, `kMaxKeyUpdates`).
const WARNING_ALERTS: u8 = 4;
const RENEGOTIATIONS: u8 = 1;
const KEY_UPDATES: u8 = 32;

/// The TLS 1.2 additional data (RFC 5246 6.2.3.3).
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

impl Records {
    /// Takes over from rustls: `secrets` and, on TLS 1.3, the connection that renews them.
    pub(crate) fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, RecordError> {
        let tls13 = kernel.protocol_version() == rustls::ProtocolVersion::TLSv1_3;
        let ExtractedSecrets { tx, rx } = secrets;
        Ok(Records {
            tls13,
            tx: Secret::new(tx.0, tx.1)?,
            rx: Secret::new(rx.0, rx.1)?,
            keys: None,
            kernel: tls13.then(|| Box::new(kernel)),
            skip_hello: 0,
            warnings_left: WARNING_ALERTS,
            renegotiations_left: RENEGOTIATIONS,
            key_updates_left: KEY_UPDATES,
            peer_closed: false,
        })
    }

    /// The connection is idle: the expanded keys go, the secrets stay.
    pub(crate) fn idle(&mut self) {
        self.keys = None;
    }

    fn keys(&mut self) -> Result<&Keys, RecordError> {
        if self.keys.is_none() {
            self.keys = Some(Keys {
                tx: self.tx.expand()?,
                rx: self.rx.expand()?,
            });
        }
        Ok(self.keys.as_ref().expect("just built"))
    }

    /// Opens the complete records at the front of `wire` (in place): application bytes go to
    /// `plain`, what must be answered (a renegotiation's warning, our KeyUpdate, the fatal alert
    /// of an error) to `reply`. Returns the bytes consumed (an incomplete record at the end is
    /// left, to be presented again with what follows it) and where the input stands.
    pub(crate) fn open(
        &mut self,
        wire: &mut [u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> (usize, Result<Opened, RecordError>) {
        let mut at = 0;
        while !self.peer_closed {
            let rest = &mut wire[at..];
            if rest.len() < HEADER {
                break;
            }
            let (major, len) = (rest[1], usize::from(u16::from_be_bytes([rest[3], rest[4]])));
            let max = if self.tls13 {
                MAX_CIPHERTEXT_13
            } else {
                MAX_CIPHERTEXT_12
            };
            if major != 3 {
                return self.fail(wire.len(), RecordError::Decode, reply);
            }
            if len > max {
                return self.fail(wire.len(), RecordError::Overflow, reply);
            }
            if rest.len() < HEADER + len {
                break;
            }
            let record = &mut rest[..HEADER + len];
            at += HEADER + len;
            let step = self
                .open_record(record)
                .and_then(|(typ, range)| self.deliver(typ, &record[range], plain, reply));
            if let Err(e) = step {
                return self.fail(wire.len(), e, reply);
            }
        }
        if self.peer_closed {
            return (wire.len(), Ok(Opened::PeerClosed));
        }
        (at, Ok(Opened::Open))
    }

    /// Decrypts one whole record in place: its inner content type and where its plaintext lies.
    fn open_record(
        &mut self,
        record: &mut [u8],
    ) -> Result<(u8, std::ops::Range<usize>), RecordError> {
        let (header, body) = record.split_at_mut(HEADER);
        let typ = header[0];
        let seq = self.rx.seq;
        let nonce = if self.tls13 || !self.rx.gcm() {
            self.rx.nonce()
        } else {
            if body.len() < EXPLICIT_NONCE {
                return Err(RecordError::Decrypt);
            }
            let mut n = [0; 12];
            n[..4].copy_from_slice(&self.rx.iv[..4]);
            n[4..].copy_from_slice(&body[..EXPLICIT_NONCE]);
            n
        };
        let explicit = if self.tls13 || !self.rx.gcm() {
            0
        } else {
            EXPLICIT_NONCE
        };
        if self.tls13 {
            // RFC 8446 5: a change_cipher_spec after the handshake, or any record in the clear,
            // is unexpected.
            if typ != APPLICATION_DATA {
                return Err(RecordError::Unexpected);
            }
        } else if !matches!(typ, ALERT | HANDSHAKE | APPLICATION_DATA) {
            return Err(RecordError::Unexpected);
        }
        let sealed = body.len() - explicit;
        if sealed < TAG {
            return Err(RecordError::Decrypt);
        }
        let tls12_aad = tls12_aad(seq, typ, sealed - TAG);
        let aad = if self.tls13 {
            Aad::from(&header[..])
        } else {
            Aad::from(&tls12_aad[..])
        };
        let key = &self.keys()?.rx;
        let opened = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                aad,
                &mut body[explicit..],
            )
            .map_err(|_| RecordError::Decrypt)?
            .len();
        self.rx.seq += 1;
        let start = HEADER + explicit;
        if !self.tls13 {
            if opened > MAX_PLAINTEXT {
                return Err(RecordError::Overflow);
            }
            return Ok((typ, start..start + opened));
        }
        // TLS 1.3 inner plaintext: content || type || zero padding.
        let inner = &body[..opened];
        let Some(end) = inner.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::Unexpected);
        };
        if end > MAX_PLAINTEXT {
            return Err(RecordError::Overflow);
        }
        Ok((inner[end], start..start + end))
    }

    /// Acts on one record's plaintext.
    fn deliver(
        &mut self,
        typ: u8,
        data: &[u8],
        plain: &mut Vec<u8>,
        reply: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        match typ {
            APPLICATION_DATA => {
                plain.extend_from_slice(data);
                self.key_updates_left = KEY_UPDATES;
                Ok(())
            }
            ALERT => self.alert(data),
            HANDSHAKE if self.tls13 => self.key_update(data, reply),
            HANDSHAKE => self.renegotiation(data, reply),
            _ => Err(RecordError::Unexpected),
        }
    }

    fn alert(&mut self, data: &[u8]) -> Result<(), RecordError> {
        let &[level, description] = data else {
            return Err(RecordError::Decode);
        };
        match (description, level) {
            (CLOSE_NOTIFY, _) => {
                self.peer_closed = true;
                Ok(())
            }
            (USER_CANCELED, _) if self.tls13 => self.warning(),
            (_, 1) if !self.tls13 => self.warning(),
            _ => Err(RecordError::AlertReceived),
        }
    }

    fn warning(&mut self) -> Result<(), RecordError> {
        self.warnings_left = self
            .warnings_left
            .checked_sub(1)
            .ok_or(RecordError::TooMany)?;
        Ok(())
    }

    /// TLS 1.3 post-handshake messages from a client: only KeyUpdate (RFC 8446 4.6.3), which
    /// must end its record (the keys change after it).
    fn key_update(&mut self, data: &[u8], reply: &mut Vec<u8>) -> Result<(), RecordError> {
        let request = match data {
            &[KEY_UPDATE, 0, 0, 1, request] => request,
            // A message after it, or one cut short: the keys would change mid-record.
            [KEY_UPDATE, 0, 0, 1, ..] => return Err(RecordError::Unexpected),
            [KEY_UPDATE, ..] => return Err(RecordError::Decode),
            _ => return Err(RecordError::Unexpected),
        };
        if request > 1 {
            return Err(RecordError::IllegalParameter);
        }
        self.key_updates_left = self
            .key_updates_left
            .checked_sub(1)
            .ok_or(RecordError::TooMany)?;
        let kernel = self.kernel.as_mut().ok_or(RecordError::Internal)?;
        let (seq, next) = kernel
            .update_rx_secret()
            .map_err(|_| RecordError::Internal)?;
        self.rx = Secret::new(seq, next)?;
        if request == 1 {
            // Answer under the old keys, then switch (RFC 8446 4.6.3).
            self.update_tx(reply)?;
        }
        self.keys = None;
        Ok(())
    }

    /// Sends our KeyUpdate (update_not_requested) and moves to the next send secret.
    fn update_tx(&mut self, wire: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], wire)?;
        let kernel = self.kernel.as_mut().ok_or(RecordError::Internal)?;
        let (seq, next) = kernel
            .update_tx_secret()
            .map_err(|_| RecordError::Internal)?;
        self.tx = Secret::new(seq, next)?;
        self.keys = None;
        Ok(())
    }

    /// TLS 1.2: a ClientHello asks to renegotiate, refused with a warning (RFC 5746 4.4, as
    /// rustls does); its bytes are skipped, across records if it is longer than one.
    fn renegotiation(&mut self, data: &[u8], reply: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut data = data;
        if self.skip_hello > 0 {
            let skip = data.len().min(self.skip_hello as usize);
            self.skip_hello -= skip as u32;
            data = &data[skip..];
            if data.is_empty() {
                return Ok(());
            }
        }
        let &[CLIENT_HELLO, a, b, c, ref body @ ..] = data else {
            return Err(RecordError::Unexpected);
        };
        let len = u32::from_be_bytes([0, a, b, c]);
        if body.len() as u32 > len {
            // Another message after the ClientHello: not how a client renegotiates.
            return Err(RecordError::Unexpected);
        }
        self.skip_hello = len - body.len() as u32;
        self.renegotiations_left = self
            .renegotiations_left
            .checked_sub(1)
            .ok_or(RecordError::Renegotiation)?;
        self.seal_record(ALERT, &[1, NO_RENEGOTIATION], reply)
    }

    /// An error: its alert (if it has one) sealed into `reply`.
    fn fail(
        &mut self,
        consumed: usize,
        e: RecordError,
        reply: &mut Vec<u8>,
    ) -> (usize, Result<Opened, RecordError>) {
        if let Some(description) = e.alert() {
            let _ = self.seal_record(ALERT, &[2, description], reply);
        }
        (consumed, Err(e))
    }

    /// Seals `plain` into application-data records appended to `wire`. False when the
    /// connection may send no more (its key could not be set up or renewed).
    pub(crate) fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> bool {
        let records = plain.len().div_ceil(MAX_PLAINTEXT).max(1);
        wire.reserve(plain.len() + records * (HEADER + EXPLICIT_NONCE + TAG));
        plain
            .chunks(MAX_PLAINTEXT)
            .all(|chunk| self.seal_record(APPLICATION_DATA, chunk, wire).is_ok())
    }

    /// Appends close_notify. False when it could not be sealed.
    pub(crate) fn close(&mut self, wire: &mut Vec<u8>) -> bool {
        self.seal_record(ALERT, &[1, CLOSE_NOTIFY], wire).is_ok()
    }

    /// Seals one record of content type `typ`.
    fn seal_record(&mut self, typ: u8, data: &[u8], wire: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.tx.gcm() && self.tx.seq >= AES_GCM_RECORD_LIMIT - 1 {
            if !self.tls13 {
                return Err(RecordError::Internal);
            }
            if typ != HANDSHAKE {
                self.update_tx(wire)?;
            }
        }
        let seq = self.tx.seq;
        let nonce = self.tx.nonce();
        let start = wire.len();
        let (outer, explicit, inner_len) = if self.tls13 {
            (APPLICATION_DATA, 0, data.len() + 1)
        } else if self.tx.gcm() {
            (typ, EXPLICIT_NONCE, data.len())
        } else {
            (typ, 0, data.len())
        };
        let len = explicit + inner_len + TAG;
        wire.extend_from_slice(&[outer, 3, 3]);
        wire.extend_from_slice(&(len as u16).to_be_bytes());
        if explicit > 0 {
            wire.extend_from_slice(&nonce[4..]);
        }
        wire.extend_from_slice(data);
        if self.tls13 {
            wire.push(typ);
        }
        let aad12 = tls12_aad(seq, typ, data.len());
        let (header, body) = wire[start..].split_at_mut(HEADER);
        let aad = if self.tls13 {
            Aad::from(&header[..])
        } else {
            Aad::from(&aad12[..])
        };
        let sealed = match self.keys() {
            Ok(keys) => keys.tx.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aad,
                &mut body[explicit..],
            ),
            Err(e) => {
                wire.truncate(start);
                return Err(e);
            }
        };
        match sealed {
            Ok(tag) => {
                wire.extend_from_slice(tag.as_ref());
                self.tx.seq += 1;
                Ok(())
            }
            Err(_) => {
                wire.truncate(start);
                Err(RecordError::Internal)
            }
        }
    }
}

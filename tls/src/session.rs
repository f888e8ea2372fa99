//! The one module that speaks rustls 0.23's unbuffered API (rustls 0.24 replaces it: only this
//! module changes then).
//!
//! [`Conn`] wraps a server or client `Unbuffered*Connection`; [`receive`] drives it over received
//! bytes until it needs more input or is idle, [`seal`] encrypts application bytes, [`close`]
//! queues close_notify. rustls processes records in the caller's buffer (it decrypts there) and
//! reports how many bytes to drop from its front (`discard`); the bytes after them must be kept
//! unchanged and presented again with the next ones, which the engine does. rustls 0.23 then hands
//! each record's plaintext out in a `Vec` of its own (it is copied once more, into `plain`).

use crate::records::Records;
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};

/// A TLS connection of either side.
pub(crate) enum Conn {
    /// Terminating TLS for a client.
    Server(UnbufferedServerConnection),
    /// Speaking TLS to a backend.
    Client(UnbufferedClientConnection),
}

/// Runs `$body` with `$c` bound to the connection, whichever side it is (the two types share
/// their methods but not a trait).
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Server($c) => $body,
            Conn::Client($c) => $body,
        }
    };
}

/// Where a connection stands after [`receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The handshake needs more input.
    Handshaking,
    /// Application data flows.
    Ready,
    /// The peer sent close_notify.
    PeerClosed,
}

/// Appends what `write` puts into a slice to `out`, growing it as the callee asks.
fn append<E>(
    out: &mut Vec<u8>,
    estimate: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let len = out.len();
    out.resize(len + estimate, 0);
    let written = match write(&mut out[len..]) {
        Ok(n) => n,
        Err(e) => match needs(&e) {
            Some(required) => {
                out.resize(len + required, 0);
                match write(&mut out[len..]) {
                    Ok(n) => n,
                    Err(e) => {
                        out.truncate(len);
                        return Err(e);
                    }
                }
            }
            None => {
                out.truncate(len);
                return Err(e);
            }
        },
    };
    out.truncate(len + written);
    Ok(())
}

fn encode_needs(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

fn encrypt_needs(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// Bytes TLS adds per record, at most (TLS 1.2 AES-GCM: 29; TLS 1.3: 22).
const RECORD_OVERHEAD: usize = 29;
/// Largest plaintext per record.
const RECORD_PAYLOAD: usize = 16 * 1024;
/// A bound on state changes in one call (rustls reports each queued message separately).
const MAX_STEPS: usize = 256;

/// Drives `conn` over `wire`: appends application bytes to `plain` and bytes to send to `reply`.
/// Returns the bytes of `wire` consumed and where the connection stands, or the error (its alert,
/// if rustls produced one, is in `reply`).
pub(crate) fn receive(
    conn: &mut Conn,
    wire: &mut [u8],
    plain: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) -> (usize, Result<Progress, rustls::Error>) {
    let mut consumed = 0;
    let mut peer_closed = false;
    for _ in 0..MAX_STEPS {
        let step = with_conn!(conn, c => {
            let UnbufferedStatus { discard, state } = c.process_tls_records(&mut wire[consumed..]);
            let step = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    let mut r = Ok(None);
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(AppDataRecord { payload, .. }) => plain.extend_from_slice(payload),
                            Err(e) => {
                                r = Err(e);
                                break;
                            }
                        }
                    }
                    r
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    match append(reply, 1024, |b| e.encode(b), encode_needs) {
                        Ok(()) => Ok(None),
                        Err(e) => Err(rustls::Error::General(e.to_string())),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // The bytes are in `reply` already; the engine sends them.
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Progress::Handshaking)),
                Ok(ConnectionState::WriteTraffic(_)) => Ok(Some(Progress::Ready)),
                Ok(ConnectionState::PeerClosed) => {
                    peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => Ok(Some(Progress::PeerClosed)),
                // Early data is never accepted (max_early_data_size 0), nor anything newer.
                Ok(_) => Ok(Some(Progress::Handshaking)),
            };
            (discard, step)
        });
        let (discard, step) = step;
        consumed += discard;
        match step {
            Err(e) => {
                consumed += flush_alert(conn, &mut wire[consumed..], reply);
                return (consumed, Err(e));
            }
            Ok(Some(p)) => {
                let p = if peer_closed { Progress::PeerClosed } else { p };
                return (consumed, Ok(p));
            }
            Ok(None) => {}
        }
    }
    (
        consumed,
        Err(rustls::Error::General(
            "TLS state machine did not settle".into(),
        )),
    )
}

/// After an error: collects the alert rustls queued. It comes out of the next
/// `process_tls_records` before any input is looked at, so one call gets it; a second would
/// deframe the same bad input again (and queue a second fatal alert). `rest` is the input not yet
/// discarded: rustls' deframer keeps offsets into it (a partial handshake message is joined in
/// place), so it must see the same bytes, never an empty slice in their stead (rustls 0.23 panics
/// on that when no alert was queued). Returns the bytes discarded.
fn flush_alert(conn: &mut Conn, rest: &mut [u8], reply: &mut Vec<u8>) -> usize {
    with_conn!(conn, c => {
        let UnbufferedStatus { discard, state } = c.process_tls_records(rest);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                let _ = append(reply, 64, |b| e.encode(b), encode_needs);
            }
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            _ => {}
        }
        discard
    })
}

/// Encrypts `plain` into records appended to `wire`. False if the connection cannot send
/// application data (not ready, or failed). `unread`: the input `receive` left (an incomplete
/// record). rustls' deframer keeps offsets into it, so it is passed again rather than an empty
/// slice; it holds no complete record, so nothing of it is consumed (if rustls discarded some,
/// the connection fails rather than lose bytes).
pub(crate) fn seal(conn: &mut Conn, plain: &[u8], unread: &mut [u8], wire: &mut Vec<u8>) -> bool {
    for _ in 0..MAX_STEPS {
        let done = with_conn!(conn, c => {
            let UnbufferedStatus { discard, state } = c.process_tls_records(unread);
            if discard != 0 {
                return false;
            }
            match state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let estimate = plain.len() + plain.len().div_ceil(RECORD_PAYLOAD).max(1) * RECORD_OVERHEAD;
                    Some(append(wire, estimate, |b| w.encrypt(plain, b), encrypt_needs).is_ok())
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    // Something queued first (a key update, a ticket): it goes before the data.
                    if append(wire, 1024, |b| e.encode(b), encode_needs).is_err() {
                        Some(false)
                    } else {
                        None
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    None
                }
                _ => Some(false),
            }
        });
        if let Some(ok) = done {
            return ok;
        }
    }
    false
}

/// Queues close_notify into `wire`. False if it cannot (not ready or failed). `unread` as
/// for [`seal`].
pub(crate) fn close(conn: &mut Conn, unread: &mut [u8], wire: &mut Vec<u8>) -> bool {
    with_conn!(conn, c => {
        let UnbufferedStatus { discard, state } = c.process_tls_records(unread);
        match state {
            Ok(ConnectionState::WriteTraffic(mut w)) if discard == 0 => {
                append(wire, 64, |b| w.queue_close_notify(b), encrypt_needs).is_ok()
            }
            _ => false,
        }
    })
}

/// Hands a listener connection whose handshake is done (rustls reported `WriteTraffic`, so
/// nothing is queued) over to our own record layer. `None` if rustls or the record layer
/// refused (the connection is then lost).
pub(crate) fn into_records(conn: UnbufferedServerConnection) -> Option<Records> {
    match conn.dangerous_into_kernel_connection() {
        Ok((secrets, kernel)) => Records::new(secrets, kernel)
            .map_err(|e| tracing::error!("TLS: the record layer could not take over: {e:?}"))
            .ok(),
        Err(e) => {
            tracing::error!("TLS: rustls did not hand over the secrets: {e}");
            None
        }
    }
}

/// What was agreed, once the handshake is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreed {
    /// TLS 1.3 (else 1.2).
    pub tls13: bool,
    /// Resumed from a ticket or session id.
    pub resumed: bool,
}

/// The handshake's outcome (call once it is done).
pub(crate) fn agreed(conn: &Conn) -> Agreed {
    with_conn!(conn, c => Agreed {
        tls13: c.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
        resumed: c.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    })
}

/// The negotiated ALPN protocol.
pub(crate) fn alpn(conn: &Conn) -> Option<&[u8]> {
    with_conn!(conn, c => c.alpn_protocol())
}

/// The negotiated cipher suite's name.
pub(crate) fn cipher(conn: &Conn) -> Option<&'static str> {
    with_conn!(conn, c => c.negotiated_cipher_suite().and_then(|s| s.suite().as_str()))
}

/// Whether a client certificate was presented (server side).
pub(crate) fn peer_certificate(conn: &Conn) -> bool {
    with_conn!(conn, c => c.peer_certificates().is_some_and(|p| !p.is_empty()))
}

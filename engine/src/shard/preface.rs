//! Connection prefaces: on a listener with one, the first bytes of a connection (a PROXY
//! protocol header) go to [`Service::preface`] before anything else sees the connection. Until it
//! decides, the connection holds only its slot, a timer for the preface's deadline and the bytes
//! so far (`Core::prefaces`); then it starts as any accepted connection (TLS handshake, or
//! `on_accept`) with the rest of the bytes, or closes ([`CloseReason::PrefaceRejected`]).

use super::*;
use crate::service::Preface;

/// The most bytes a preface may take before the service decides (PROXY v2 allows 16 + 65,535).
const MAX_PREFACE: usize = 16 + 65_535;

impl<S: Service> Shard<S> {
    /// Connection `id` waits for its preface, at most `deadline`.
    pub(super) fn await_preface(&mut self, id: Id, listener: usize, deadline: Duration) {
        let at = self.core.now_ms + deadline.as_millis() as u64;
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.state |= state::PREFACE;
        conn.timer = self.core.wheel.insert(at, id.index);
        self.core.prefaces.insert(
            id.index,
            PendingPreface {
                listener,
                input: Vec::new(),
            },
        );
    }

    /// Bytes arrived on `id` while its preface is read.
    pub(super) fn preface_input(&mut self, id: Id, data: &[u8]) {
        let Some(conn) = self.core.conns.get(id) else {
            return;
        };
        if conn.life.is_ending() {
            return;
        }
        let peer = SockRef::from(&conn.fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket());
        let Some(pending) = self.core.prefaces.get_mut(&id.index) else {
            return;
        };
        pending.input.extend_from_slice(data);
        let listener = pending.listener;
        let verdict = self.core.service.preface(listener, peer, &pending.input);
        match verdict {
            Preface::NeedMore if pending.input.len() <= MAX_PREFACE => {}
            Preface::NeedMore | Preface::Reject => {
                self.core.prefaces.remove(&id.index);
                self.begin_close(id, CloseReason::PrefaceRejected);
            }
            Preface::Done { consumed, origin } => {
                let mut rest = self
                    .core
                    .prefaces
                    .remove(&id.index)
                    .map(|p| p.input)
                    .unwrap_or_default();
                let Some(conn) = self.core.conns.get_mut(id) else {
                    return;
                };
                conn.state &= !state::PREFACE;
                if conn.timer.is_some() {
                    self.core.wheel.cancel(conn.timer);
                    conn.timer = TimerKey::NONE;
                }
                if let Some(o) = origin {
                    self.core.origins.insert(id.index, o);
                }
                rest.drain(..consumed.min(rest.len()));
                self.start_accepted(id, listener);
                if !rest.is_empty() {
                    self.first_input(id, &mut rest);
                }
            }
        }
    }

    /// The bytes that followed a preface, as a receive would hand them on.
    fn first_input(&mut self, id: Id, data: &mut [u8]) {
        let Some(conn) = self.core.conns.get(id) else {
            return;
        };
        if conn.life.is_ending() {
            return;
        }
        if conn.state & state::SECURE != 0 {
            if let Some(status) = self.core.open_records(id, data) {
                self.after_records(id, status);
            }
        } else if conn.state & state::PAUSED != 0 {
            self.core.buffer(id, data);
        } else if let Some(req) = self.core.deliver(id, data) {
            self.apply(id, req);
        }
    }
}

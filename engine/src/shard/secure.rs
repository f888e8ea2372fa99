//! Secure connections: the shard's side of the transport seam (see [`crate::transport`]).
//!
//! A connection accepted on a listener the transport claims gets a session and a handshake
//! deadline, and its service hears of it only once the handshake is done; an outbound one made with
//! `connect_secure` reports `on_connected` then. Received bytes go through the transport in place
//! (a record split across reads waits in `wire_in`); what the service writes is sealed into
//! `wire_out` by `flush` just before the send; the closing record goes out before the FIN.

use super::*;

impl<S: Service> Core<S> {
    /// Runs the transport over received bytes `data` of secure connection `id`: application bytes
    /// land in `self.plain`, bytes to send in the connection's `wire_out`. Returns the session's
    /// status, or `None` for a connection without a session.
    pub(super) fn open_records(&mut self, id: Id, data: &mut [u8]) -> Option<Status> {
        let conn = self.conns.get_mut(id)?;
        let sec = self.sessions.get_mut(&id.index)?;
        let pool = &mut self.io_pool;
        let io = conn
            .io
            .get_or_insert_with(|| pool.pop().unwrap_or_default());
        self.plain.clear();
        let transport = self.service.transport();
        let received = if io.wire_in.is_empty() {
            let r = transport.receive(&mut sec.session, data, &mut self.plain, &mut io.wire_out);
            let rest = data.get(r.consumed..).unwrap_or_default();
            if r.status != Status::Failed && !rest.is_empty() {
                io.wire_in.extend_from_slice(rest);
            }
            r
        } else {
            io.wire_in.extend_from_slice(data);
            let mut wire = std::mem::take(&mut io.wire_in);
            let r = transport.receive(
                &mut sec.session,
                &mut wire,
                &mut self.plain,
                &mut io.wire_out,
            );
            wire.drain(..r.consumed.min(wire.len()));
            io.wire_in = wire;
            r
        };
        if received.status == Status::Failed || io.wire_in.len() > self.max_input {
            io.wire_in.clear();
            return Some(Status::Failed);
        }
        Some(received.status)
    }

    /// Whether connection `id`'s session has been handed to its service (handshake done).
    pub(super) fn secure_started(&self, id: Id) -> bool {
        self.sessions.get(&id.index).is_some_and(|s| s.started)
    }
}

/// The most application bytes sealed into records per send (three full records): the sealed
/// buffer then stays under the capacity a connection keeps, so it is reused, not reallocated.
const SEAL_CHUNK: usize = 3 * 16 * 1024;

impl<S: Service> Shard<S> {
    /// A connection accepted on `listener`: if the transport claims the listener, the connection
    /// becomes secure (session, handshake deadline) and its service waits for the handshake.
    /// Returns whether it did.
    pub(super) fn accept_secure(&mut self, id: Id, listener: usize) -> bool {
        let Some((session, deadline)) = self.core.service.transport().accept(listener) else {
            return false;
        };
        let Some(conn) = self.core.conns.get_mut(id) else {
            return false;
        };
        conn.state |= state::SECURE;
        let at = self.core.now_ms + deadline.as_millis() as u64;
        conn.timer = self.core.wheel.insert(at, id.index);
        self.core.sessions.insert(
            id.index,
            Secure {
                session,
                listener: Some(listener),
                started: false,
            },
        );
        true
    }

    /// The TCP connection of secure outbound connection `id` is up: sends the first handshake
    /// flight.
    pub(super) fn start_handshake(&mut self, id: Id) {
        if let Some(status) = self.core.open_records(id, &mut []) {
            self.after_records(id, status);
        }
    }

    /// Acts on what the transport made of received bytes (in `self.core.plain`).
    pub(super) fn after_records(&mut self, id: Id, status: Status) {
        match status {
            Status::Failed => self.secure_failed(id),
            Status::Handshaking => self.flush(id),
            Status::Ready | Status::PeerClosed => {
                if !self.core.secure_started(id) {
                    self.handshake_done(id);
                }
                self.flush(id);
                let plain = std::mem::take(&mut self.core.plain);
                let open = self
                    .core
                    .conns
                    .get(id)
                    .filter(|c| !c.life.is_ending())
                    .map(|c| c.state);
                if let (false, Some(st)) = (plain.is_empty(), open) {
                    if st & state::PAUSED != 0 {
                        self.core.buffer(id, &plain);
                    } else if let Some(req) = self.core.deliver(id, &plain) {
                        self.apply(id, req);
                    }
                }
                self.core.plain = plain;
                if status == Status::PeerClosed {
                    self.peer_eof(id);
                }
            }
        }
    }

    /// The handshake of `id` finished: its deadline goes, and the service hears of the
    /// connection (`on_accept`, or `on_connected` for an outbound one).
    fn handshake_done(&mut self, id: Id) {
        let Some(sec) = self.core.sessions.get_mut(&id.index) else {
            return;
        };
        sec.started = true;
        let listener = sec.listener;
        if let Some(conn) = self.core.conns.get_mut(id) {
            if listener.is_some() && conn.timer.is_some() {
                self.core.wheel.cancel(conn.timer);
                conn.timer = TimerKey::NONE;
            }
        }
        let req = match listener {
            Some(l) => self.core.call(id, |svc, cx, app| svc.on_accept(cx, app, l)),
            None => self
                .core
                .call(id, |svc, cx, app| svc.on_connected(cx, app, Ok(()))),
        };
        if let Some(((), req)) = req {
            self.apply(id, req);
        }
    }

    /// The transport failed on `id` (its alert, if any, is queued): an outbound connection still
    /// handshaking reports a failed connect; the connection closes once the alert is sent.
    fn secure_failed(&mut self, id: Id) {
        let started = self.core.secure_started(id);
        let outbound = self
            .core
            .sessions
            .get(&id.index)
            .is_some_and(|s| s.listener.is_none());
        if outbound && !started {
            self.core.stats.outbound_failed += 1;
            let err = std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the secure handshake failed",
            );
            if let Some(((), req)) = self
                .core
                .call(id, |svc, cx, app| svc.on_connected(cx, app, Err(err)))
            {
                self.apply(id, req);
            }
        }
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if !matches!(conn.life, Life::Open { .. }) {
            return;
        }
        conn.life = conn.life.close_after_flush();
        conn.reason = if started {
            CloseReason::ProtocolError
        } else {
            CloseReason::HandshakeFailed
        };
        if let Some(io) = conn.io.as_mut() {
            // Nothing more of the service's is sent: only the alert.
            io.out.clear();
            io.sealed = 0;
        }
        self.flush(id);
    }

    /// Seals the application bytes waiting in `id`'s output into records (once its handshake is
    /// done), at most [`SEAL_CHUNK`] at a time: the rest waits in `out` until the records sent
    /// drain. Returns false if the transport failed (the connection is then closing).
    pub(super) fn seal_output(&mut self, id: Id) -> bool {
        let core = &mut self.core;
        let (Some(conn), Some(sec)) = (core.conns.get_mut(id), core.sessions.get_mut(&id.index))
        else {
            return true;
        };
        let Some(io) = conn.io.as_mut() else {
            return true;
        };
        // The front `sealed` bytes are records already; a service that shortened its output
        // below them cannot take those back (it may only append), but must not break the shard.
        io.sealed = io.sealed.min(io.out.len());
        if io.out.len() == io.sealed || !sec.started || io.wire_out.len() >= SEAL_CHUNK {
            return true;
        }
        let end = io.out.len().min(io.sealed + SEAL_CHUNK);
        let ok = core.service.transport().seal(
            &mut sec.session,
            &io.out[io.sealed..end],
            &mut io.wire_in,
            &mut io.wire_out,
        );
        io.sealed = end;
        if io.sealed == io.out.len() {
            io.out.clear();
            io.sealed = 0;
        }
        if !ok {
            self.begin_close(id, CloseReason::ProtocolError);
            self.maybe_finalize(id);
        }
        ok
    }

    /// Queues `id`'s closing record (close_notify) if it has not gone out yet. Returns whether it
    /// queued one (it is sent before the FIN).
    pub(super) fn queue_close_record(&mut self, id: Id) -> bool {
        let core = &mut self.core;
        let (Some(conn), Some(sec)) = (core.conns.get_mut(id), core.sessions.get_mut(&id.index))
        else {
            return false;
        };
        let pool = &mut core.io_pool;
        let io = conn
            .io
            .get_or_insert_with(|| pool.pop().unwrap_or_default());
        core.service
            .transport()
            .close(&mut sec.session, &mut io.wire_in, &mut io.wire_out)
    }
}

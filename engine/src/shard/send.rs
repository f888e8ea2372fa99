//! Sending: one send in flight per connection from its output buffer, partial sends, and what
//! follows a drained output (resume paused input, half-close, linger).

use super::*;

impl<S: Service> Shard<S> {
    // ---- send ---------------------------------------------------------------------------------

    /// Starts a send of pending output when none is in flight; when nothing is pending, carries
    /// out what the life cycle says follows (a FIN, the linger phase, the close).
    pub(super) fn flush(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & (state::SENDING | state::CONNECTING) != 0 || !conn.life.sends() {
            return;
        }
        let secure = conn.state & state::SECURE != 0;
        if secure && !self.seal_output(id) {
            return;
        }
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let has_out = conn.io.as_ref().is_some_and(|io| {
            if secure {
                !io.wire_out.is_empty()
            } else {
                !io.out.is_empty()
            }
        });
        if has_out {
            let io = conn.io.as_mut().expect("checked");
            let spare = std::mem::take(&mut io.spare);
            let src = if secure {
                &mut io.wire_out
            } else {
                &mut io.out
            };
            let buf = std::mem::replace(src, spare);
            io.in_flight = buf.len();
            conn.state |= state::SENDING;
            let fd = conn.fd.as_raw_fd();
            self.ring.send(fd, buf, token::pack(OP_SEND, id));
        } else if conn.io.as_ref().is_none_or(|io| io.out.is_empty()) {
            // (A secure connection still handshaking keeps its application bytes for later.)
            self.output_sent(id);
        }
    }

    /// All output is sent: takes the life cycle's next step ([`Life::output_sent`]). Returns
    /// whether the connection goes on serving (false once it lingers or closes).
    pub(super) fn output_sent(&mut self, id: Id) -> bool {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return false;
        };
        let (next, then) = conn.life.output_sent(!self.linger.is_zero());
        if then != AfterOutput::Continue
            && conn.state & state::SECURE != 0
            && self.queue_close_record(id)
        {
            // The closing record goes out first; this runs again once it is sent.
            self.flush(id);
            return false;
        }
        let Some(conn) = self.core.conns.get_mut(id) else {
            return false;
        };
        if then != AfterOutput::Continue {
            let _ = SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
        }
        match then {
            AfterOutput::Continue => true,
            AfterOutput::SendFin => {
                conn.life = next;
                if next.both_done() {
                    self.enter_closing(id, CloseReason::Done);
                    self.maybe_finalize(id);
                    return false;
                }
                true
            }
            AfterOutput::Linger => {
                conn.life = next;
                self.start_linger(id);
                false
            }
            AfterOutput::FinThenClose => {
                let reason = conn.reason;
                self.enter_closing(id, reason);
                self.maybe_finalize(id);
                false
            }
        }
    }

    pub(super) fn on_send(&mut self, c: Completion) {
        let Some(outcome) = self.ring.complete_send(c.user_data, c.result) else {
            return;
        };
        let owner = match &outcome {
            SendOutcome::Partial { owner, .. }
            | SendOutcome::Failed { owner, .. }
            | SendOutcome::Done { owner, .. } => *owner,
        };
        if token::op(owner) == token::OP_LOG {
            return self.sink_written(owner as u32 as usize, outcome);
        }
        match outcome {
            SendOutcome::Partial { owner, sent } => {
                self.core.stats.bytes_out += sent as u64;
                if let Some(io) = self
                    .core
                    .conns
                    .get_mut(token::id(owner))
                    .and_then(|c| c.io.as_mut())
                {
                    io.in_flight = io.in_flight.saturating_sub(sent);
                }
            }
            SendOutcome::Failed { owner, buf, errno } => {
                let id = token::id(owner);
                self.sent_back(id, buf);
                let reason = if errno == libc::ECANCELED {
                    CloseReason::Shutdown
                } else {
                    CloseReason::PeerReset
                };
                self.begin_close(id, reason);
                self.maybe_finalize(id);
            }
            SendOutcome::Done { owner, buf, sent } => {
                self.core.stats.bytes_out += sent as u64;
                let id = token::id(owner);
                self.sent_back(id, buf);
                self.drained(id);
            }
        }
    }

    pub(super) fn sent_back(&mut self, id: Id, buf: Vec<u8>) {
        if let Some(conn) = self.core.conns.get_mut(id) {
            conn.state &= !state::SENDING;
            if let Some(io) = conn.io.as_mut() {
                io.in_flight = 0;
                if buf.capacity() <= KEEP_CAPACITY && io.spare.capacity() < buf.capacity() {
                    io.spare = buf;
                }
            }
        }
    }

    pub(super) fn drained(&mut self, id: Id) {
        let started = self.core.secure_started(id);
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.life.is_closing() {
            self.maybe_finalize(id);
            return;
        }
        let started = conn.state & state::SECURE == 0 || started;
        let pending = conn
            .io
            .as_ref()
            .is_some_and(|io| !io.wire_out.is_empty() || (!io.out.is_empty() && started));
        if pending {
            self.flush(id);
            return;
        }
        if conn.io.as_ref().is_some_and(|io| !io.out.is_empty()) {
            return; // handshaking: the application bytes wait for it
        }
        if !self.output_sent(id) {
            return;
        }
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::PAUSED != 0 {
            conn.state &= !state::PAUSED;
            if let Some(req) = self.core.deliver(id, &[]) {
                self.apply(id, req);
            }
            self.after_recv(id);
            if self.deferred_eof(id) {
                return;
            }
        }
        if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_drained(cx, app)) {
            self.apply(id, req);
        }
        // A peer that paused because this connection's output was full may read again.
        if let Some(peer) = self.peer_of(id) {
            self.resume(peer);
        }
    }
}

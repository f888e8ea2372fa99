//! Closing: the linger phase after a final response, cancelling a connection's operations and
//! freeing its slot once their completions are in.

use super::*;

impl<S: Service> Shard<S> {
    // ---- close --------------------------------------------------------------------------------

    /// The connection entered [`Life::Lingering`] (its FIN is sent): input is read and dropped
    /// until the peer's FIN or the linger timer; its buffers go back to the pool.
    pub(super) fn start_linger(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.state &= !state::PAUSED;
        if conn.timer.is_some() {
            self.core.wheel.cancel(conn.timer);
        }
        let at = self.core.now_ms + self.linger.as_millis() as u64;
        conn.timer = self.core.wheel.insert(at, id.index);
        if let Some(io) = conn.io.take() {
            self.core.release_io(io);
        }
        self.after_recv(id);
    }

    /// Marks a connection closing and cancels its operations; `maybe_finalize` frees it once they
    /// have completed. Does nothing to a connection already closing.
    pub(super) fn begin_close(&mut self, id: Id, reason: CloseReason) {
        if self
            .core
            .conns
            .get(id)
            .is_some_and(|c| !c.life.is_closing())
        {
            self.enter_closing(id, reason);
        }
    }

    /// Enters [`Life::Closing`] with `reason`: cancels the timer and the kernel's operations.
    pub(super) fn enter_closing(&mut self, id: Id, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.life = Life::Closing;
        conn.reason = reason;
        if conn.timer.is_some() {
            self.core.wheel.cancel(conn.timer);
            conn.timer = TimerKey::NONE;
        }
        if conn.state & state::IN_KERNEL != 0 {
            let fd = conn.fd.as_raw_fd();
            self.ring.cancel_fd(fd, token::pack_index(OP_CANCEL, 0));
        }
    }

    pub(super) fn maybe_finalize(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get(id) else {
            return;
        };
        if !conn.life.is_closing() || conn.state & state::IN_KERNEL != 0 {
            return;
        }
        let conn = self.core.conns.remove(id).expect("checked");
        if !self.core.origins.is_empty() {
            self.core.origins.remove(&id.index);
        }
        if !self.core.preambles.is_empty() {
            self.core.preambles.remove(&id.index);
        }
        let started = if conn.state & state::PREFACE != 0 {
            self.core.prefaces.remove(&id.index);
            false
        } else if conn.state & state::SECURE != 0 {
            self.core
                .sessions
                .remove(&id.index)
                .is_some_and(|s| s.started)
        } else {
            true
        };
        self.core.stats.closed[conn.reason as usize] += 1;
        if conn.state & state::OUTBOUND != 0 {
            self.core.outbound -= 1;
        }
        let peer = if conn.state & state::PAIRED != 0 {
            self.core.pairs.remove(&id.index)
        } else {
            None
        };
        if let Some(io) = conn.io {
            self.core.release_io(io);
        }
        drop(conn.fd);
        // A secure connection whose handshake failed or timed out was never the service's (an
        // outbound one was: it asked for it).
        if started || conn.state & state::OUTBOUND != 0 {
            self.core.service.on_close(id, conn.app, conn.reason);
        }
        if let Some(p) = peer {
            self.core.unpair_one(p);
            let live = self.core.conns.get(p).is_some_and(|c| !c.life.is_closing());
            if live {
                if let Some(((), req)) = self.core.call(p, |svc, cx, app| svc.on_unpaired(cx, app))
                {
                    self.apply(p, req);
                }
                self.settle(p);
            }
        }
        self.maybe_resume_accepting();
    }
}

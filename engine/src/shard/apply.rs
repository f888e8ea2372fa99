//! Carrying out what a service callback asked for (its own state, its peer, wake-ups).

use super::*;

impl<S: Service> Shard<S> {
    // ---- requests from callbacks --------------------------------------------------------------

    pub(super) fn apply(&mut self, id: Id, req: Requests) {
        const PEER_BITS: u16 = flags::PEER_OUTPUT
            | flags::RESUME_PEER
            | flags::UNPAIR
            | flags::CLOSE_PEER
            | flags::CLOSE_PEER_AFTER_FLUSH
            | flags::SHUTDOWN_PEER_WRITE;
        let Requests {
            bits,
            reason,
            mut effects,
        } = req;
        // This connection's own state first, so what the peer effects trigger (e.g. `on_paired`
        // resuming input) sees it.
        if bits & flags::CLOSE == 0 {
            self.apply_own(id, bits, reason);
        }
        let wake = std::mem::take(&mut effects.wake);
        let opens = std::mem::take(&mut effects.opens);
        if bits & PEER_BITS != 0 || effects.connect.is_some() || effects.pair.is_some() {
            self.apply_peer(id, bits, effects);
        }
        for o in opens {
            self.open_detached(id, o.fd, o.profile, o.tag, o.preamble);
        }
        // Woken connections are called after the current batch (`Shard::run_woken`).
        self.woken.extend(wake);
        if bits & flags::CLOSE != 0 {
            self.begin_close(id, reason);
            self.maybe_finalize(id);
            return;
        }
        if bits & flags::RESUME != 0 {
            self.resume(id);
        }
        self.flush(id);
        self.settle(id);
    }

    pub(super) fn apply_own(&mut self, id: Id, bits: u16, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if bits & flags::SHUTDOWN_WRITE != 0 {
            conn.life = conn.life.shutdown_write();
        }
        if bits & flags::CLOSE_AFTER_FLUSH != 0 && matches!(conn.life, Life::Open { .. }) {
            conn.life = conn.life.close_after_flush();
            conn.reason = reason;
        }
        if bits & flags::PAUSE != 0 && conn.state & state::PAUSED == 0 && !conn.life.is_flushing() {
            conn.state |= state::PAUSED;
            if conn.state & state::RECV_ARMED != 0 {
                self.ring
                    .cancel(token::pack(OP_RECV, id), token::pack_index(OP_CANCEL, 0));
            }
        }
    }
}

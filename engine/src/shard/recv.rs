//! Receiving: multishot receives with buffer selection, input handed to the service straight
//! from the ring buffer (only unconsumed bytes are kept), the peer's EOF.

use super::*;

impl<S: Service> Shard<S> {
    // ---- receive ------------------------------------------------------------------------------

    pub(super) fn on_recv(&mut self, c: Completion) {
        let id = token::id(c.user_data);
        let buf = self.ring.bufs().take(c.flags, c.result);
        let Some(conn) = self.core.conns.get_mut(id) else {
            if let Some(b) = buf {
                self.ring.bufs().recycle(b);
            }
            return;
        };
        if !c.more() {
            conn.state &= !state::RECV_ARMED;
        }
        let (st, life) = (conn.state, conn.life);
        if c.result > 0 {
            self.core.stats.bytes_in += c.result as u64;
            if st & state::PREFACE != 0 {
                if let Some(b) = buf {
                    let data = self.ring.bufs_ref().data(&b).to_vec();
                    self.ring.bufs().recycle(b);
                    self.preface_input(id, &data);
                }
            } else if st & state::SECURE != 0 {
                let Some(mut b) = buf else {
                    self.after_recv(id);
                    return;
                };
                let status = if life.is_ending() {
                    None
                } else {
                    let data = self.ring.bufs().data_mut(&mut b);
                    self.core.open_records(id, data)
                };
                self.ring.bufs().recycle(b);
                if let Some(status) = status {
                    self.after_records(id, status);
                }
            } else if let Some(b) = buf {
                let mut req = None;
                if !life.is_ending() {
                    let data = self.ring.bufs_ref().data(&b);
                    if st & state::PAUSED != 0 {
                        self.core.buffer(id, data);
                    } else {
                        req = self.core.deliver(id, data);
                    }
                }
                self.ring.bufs().recycle(b);
                if let Some(req) = req {
                    self.apply(id, req);
                }
            }
        } else if c.result == 0 {
            self.peer_eof(id);
        } else {
            match -c.result {
                libc::ENOBUFS => self.core.stats.recv_no_buffers += 1,
                libc::ECANCELED => {}
                _ => self.begin_close(id, CloseReason::PeerReset),
            }
        }
        self.after_recv(id);
    }

    /// Re-arms a receive that ended, or finishes a close that waited for it.
    pub(super) fn after_recv(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let st = conn.state;
        if st & state::RECV_ARMED != 0 {
            return;
        }
        let life = conn.life;
        if life.is_closing() {
            self.maybe_finalize(id);
        } else if !life.eof() && (life == Life::Lingering || st & state::PAUSED == 0) {
            conn.state |= state::RECV_ARMED;
            let fd = conn.fd.as_raw_fd();
            self.ring.recv_multi(fd, token::pack(OP_RECV, id));
        }
    }

    pub(super) fn peer_eof(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::PREFACE != 0 {
            // Gone before its preface: the service never saw it.
            self.core.prefaces.remove(&id.index);
            self.begin_close(id, CloseReason::PeerClosed);
            self.maybe_finalize(id);
            return;
        }
        let was = conn.life;
        conn.life = was.peer_eof();
        match was {
            Life::Lingering => {
                let reason = conn.reason;
                self.enter_closing(id, reason);
                return;
            }
            Life::Closing => return,
            Life::Open { .. } | Life::Flushing { .. } => {}
        }
        if conn.state & state::PAUSED != 0 {
            // Complete requests may wait behind the pause: `drained` serves them first and
            // reports the EOF after.
            return;
        }
        self.report_peer_closed(id);
        self.close_if_both_done(id);
    }

    pub(super) fn report_peer_closed(&mut self, id: Id) {
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_peer_closed(cx, app))
        {
            self.apply(id, req);
        }
    }
}

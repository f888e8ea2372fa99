//! Fired timers: accept retry, rate limit, the stop deadline and connection timers.

use super::*;

impl<S: Service> Shard<S> {
    // ---- timers -------------------------------------------------------------------------------

    /// Runs the handler of a fired timer whose holder still holds its key (keys fired in this
    /// batch are not reused within it: see the wheel's docs), so a connection closed or a slot
    /// refilled earlier in the batch is never acted on.
    pub(super) fn on_timer(&mut self, fired: Fired) {
        match fired.token {
            TIMER_ACCEPT_RETRY => {
                if self.accept_retry != fired.key {
                    return;
                }
                self.accept_retry = TimerKey::NONE;
                if !self.accept_paused && !self.core.stopping {
                    self.arm_accepts();
                }
            }
            TIMER_RATE if self.rate_timer == fired.key => self.on_rate_timer(),
            TIMER_RATE => {}
            TIMER_STOP_DEADLINE => {
                let open = self.core.conns.len();
                if open > 0 {
                    tracing::info!(
                        shard = self.id,
                        "shutdown_timeout reached: closing {open} connection(s)"
                    );
                }
                for id in self.core.conns.ids() {
                    self.begin_close(id, CloseReason::Shutdown);
                    self.maybe_finalize(id);
                }
            }
            token if token & DEADLINE_TOKEN != 0 => {
                self.on_deadlines(token & !DEADLINE_TOKEN, fired.key);
            }
            index => {
                let Some(id) = self.core.conns.id_at(index) else {
                    return;
                };
                let conn = self.core.conns.get_mut(id).expect("id_at");
                if conn.timer != fired.key {
                    return;
                }
                conn.timer = TimerKey::NONE;
                if conn.life == Life::Lingering {
                    let reason = conn.reason;
                    self.begin_close(id, reason);
                    self.maybe_finalize(id);
                    return;
                }
                if conn.life.is_closing() {
                    return;
                }
                if conn.state & state::PREFACE != 0 {
                    self.core.prefaces.remove(&id.index);
                    self.begin_close(id, CloseReason::PrefaceTimeout);
                    self.maybe_finalize(id);
                    return;
                }
                if conn.state & state::SECURE != 0 && !self.core.secure_started(id) {
                    // The handshake deadline: the service never saw this connection.
                    self.begin_close(id, CloseReason::HandshakeTimeout);
                    self.maybe_finalize(id);
                    return;
                }
                if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_timer(cx, app)) {
                    self.apply(id, req);
                }
            }
        }
    }

    /// A connection's deadline table fired (if it still holds `key`): the slots due are cleared,
    /// the table re-armed for the rest, and the service hears each due slot in order.
    fn on_deadlines(&mut self, index: u32, key: TimerKey) {
        let Some(id) = self.core.conns.id_at(index) else {
            return;
        };
        let now_ms = self.core.now_ms;
        let conn = self.core.conns.get_mut(id).expect("id_at");
        let closing = conn.life.is_closing();
        let Some(io) = conn.io.as_mut() else {
            return;
        };
        if io.deadlines.key != key {
            return;
        }
        io.deadlines.fired();
        let due = io.deadlines.take_due(now_ms);
        io.deadlines.arm(&mut self.core.wheel, index);
        if closing {
            return;
        }
        for slot in (0..DEADLINES).filter(|&s| due[s]) {
            let open = self
                .core
                .conns
                .get(id)
                .is_some_and(|c| !c.life.is_closing());
            if !open {
                break;
            }
            if let Some(((), req)) = self
                .core
                .call(id, |svc, cx, app| svc.on_deadline(cx, app, slot))
            {
                self.apply(id, req);
            }
        }
    }
}

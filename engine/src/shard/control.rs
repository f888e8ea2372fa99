//! Control messages from other threads (statistics, stop) and the statistics report.

use super::*;

impl<S: Service> Shard<S> {
    // ---- control ------------------------------------------------------------------------------

    pub(super) fn on_wake(&mut self, c: Completion) {
        let _ = self.inbox.wake.read();
        if !c.more() {
            let fd = self.inbox.wake.as_raw_fd();
            self.ring.poll_multi(fd, token::pack_index(OP_WAKE, 0));
        }
        while let Ok(msg) = self.inbox.rx.try_recv() {
            match msg {
                Control::Stats(reply) => {
                    let report = self.report();
                    let _ = reply.send(report);
                }
                Control::Stop { grace } => self.begin_stop(grace),
                Control::Service(msg) => self.core.service.on_control(msg),
            }
        }
    }

    pub(super) fn report(&mut self) -> ShardReport<S::Stats> {
        let s = &mut self.core.stats;
        s.connections = (self.core.conns.len() - self.core.outbound) as u64;
        s.outbound = self.core.outbound as u64;
        s.slab_used = self.core.conns.len() as u64;
        s.timers = self.core.wheel.len() as u64;
        s.buffers_outstanding = self.ring.bufs_ref().outstanding() as u64;
        ShardReport {
            shard: self.id,
            engine: s.clone(),
            service: self.core.service.stats(),
        }
    }

    pub(super) fn begin_stop(&mut self, grace: Duration) {
        if self.core.stopping {
            return;
        }
        self.core.stopping = true;
        // Connections accepted but waiting (for a free slot or the rate limit) are served as
        // slots free up: they were accepted, so dropping them would lose their requests.
        let rate_held: Vec<_> = self.rate_held.drain(..).collect();
        self.held.extend(rate_held);
        self.cancel_accepts();
        for l in self.listeners.iter_mut().filter(|l| !l.armed) {
            l.fd = None;
        }
        let at = self.core.now_ms + grace.as_millis() as u64;
        self.core.wheel.insert(at, TIMER_STOP_DEADLINE);
        for id in self.core.conns.ids() {
            let closing = self.core.conns.get(id).is_none_or(|c| c.life.is_ending());
            if closing {
                continue;
            }
            let secure = self
                .core
                .conns
                .get(id)
                .is_some_and(|c| c.state & state::SECURE != 0);
            let preface = self
                .core
                .conns
                .get(id)
                .is_some_and(|c| c.state & state::PREFACE != 0);
            if preface || secure && !self.core.secure_started(id) {
                // Still handshaking: not the service's yet.
                self.begin_close(id, CloseReason::Shutdown);
                self.maybe_finalize(id);
                continue;
            }
            if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_shutdown(cx, app)) {
                self.apply(id, req);
            }
        }
        self.maybe_resume_accepting();
    }
}

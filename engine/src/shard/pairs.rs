//! Pairs and outbound connections: linking two connections, non-blocking connects, resuming a
//! paused peer, deferred EOFs, returning idle buffers to the pool.

use super::*;

impl<S: Service> Shard<S> {
    // ---- pairs and outbound connections --------------------------------------------------------

    pub(super) fn peer_of(&self, id: Id) -> Option<Id> {
        self.core.peer_of(id)
    }

    /// Carries out what a callback on `id` asked of its peer or of new connections.
    pub(super) fn apply_peer(&mut self, id: Id, bits: u16, effects: Effects) {
        if bits & flags::UNPAIR != 0 {
            self.unlink(id);
        }
        let asked = effects.pair.is_some() || effects.connect.is_some();
        if let Some(other) = effects.pair {
            self.link(id, other);
        }
        if let Some(fd) = effects.connect {
            self.open_outbound(id, fd, effects.connect_profile);
        }
        if asked && self.peer_of(id).is_some() {
            if let Some(((), req)) = self.core.call(id, |svc, cx, app| svc.on_paired(cx, app)) {
                self.apply(id, req);
            }
        }
        let Some(peer) = self.peer_of(id) else {
            return;
        };
        if bits & flags::CLOSE_PEER != 0 {
            let reason = effects.peer_reason.unwrap_or(CloseReason::Done);
            self.begin_close(peer, reason);
            self.maybe_finalize(peer);
            return;
        }
        if bits & flags::CLOSE_PEER_AFTER_FLUSH != 0 {
            if let Some(p) = self.core.conns.get_mut(peer) {
                if matches!(p.life, Life::Open { .. }) {
                    p.life = p.life.close_after_flush();
                    p.reason = effects.peer_reason.unwrap_or(CloseReason::Done);
                }
            }
        }
        if bits & flags::SHUTDOWN_PEER_WRITE != 0 {
            if let Some(p) = self.core.conns.get_mut(peer) {
                p.life = p.life.shutdown_write();
            }
        }
        if bits & (flags::PEER_OUTPUT | flags::CLOSE_PEER_AFTER_FLUSH | flags::SHUTDOWN_PEER_WRITE)
            != 0
        {
            self.flush(peer);
        }
        if bits & flags::RESUME_PEER != 0 {
            self.resume(peer);
        }
    }

    /// Pairs two live, unpaired connections.
    pub(super) fn link(&mut self, a: Id, b: Id) {
        if a == b || self.peer_of(a).is_some() || self.peer_of(b).is_some() {
            return;
        }
        let (Some(x), Some(y)) = self.core.conns.get2_mut(a, b) else {
            return;
        };
        x.state |= state::PAIRED;
        y.state |= state::PAIRED;
        self.core.pairs.insert(a.index, b);
        self.core.pairs.insert(b.index, a);
    }

    /// Ends `id`'s pairing on both sides.
    pub(super) fn unlink(&mut self, id: Id) {
        let Some(peer) = self.core.unpair_one(id) else {
            return;
        };
        self.core.unpair_one(peer);
        self.settle(id);
        self.settle(peer);
    }

    /// Adds connecting socket `fd` as an outbound connection paired with `from` (secure with
    /// the transport's client profile `profile`, if given).
    pub(super) fn open_outbound(&mut self, from: Id, fd: OwnedFd, profile: Option<u32>) {
        match self.add_outbound(fd, profile, None) {
            Some(nid) => self.link(from, nid),
            None => self.refuse_outbound(from),
        }
    }

    /// Adds connecting socket `fd` as an unpaired outbound connection ([`ConnCx::open`]): it
    /// hears `on_opened` with `tag`, or `from` hears `on_open_failed`.
    pub(super) fn open_detached(
        &mut self,
        from: Id,
        fd: OwnedFd,
        profile: Option<u32>,
        tag: u64,
        preamble: Option<Box<[u8]>>,
    ) {
        match self.add_outbound(fd, profile, preamble) {
            Some(nid) => {
                if let Some(((), req)) = self
                    .core
                    .call(nid, |svc, cx, app| svc.on_opened(cx, app, tag))
                {
                    self.apply(nid, req);
                }
            }
            None => {
                self.core.stats.outbound_refused += 1;
                if let Some(((), req)) = self
                    .core
                    .call(from, |svc, cx, app| svc.on_open_failed(cx, app, tag))
                {
                    self.apply(from, req);
                }
            }
        }
    }

    /// Inserts a connecting socket as an outbound connection and arms its connect; `None`
    /// (the socket closed) without a slot or when the transport refuses the profile.
    fn add_outbound(
        &mut self,
        fd: OwnedFd,
        profile: Option<u32>,
        preamble: Option<Box<[u8]>>,
    ) -> Option<Id> {
        let session = match profile.map(|p| self.core.service.transport().connect(p)) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::debug!("the transport refused client profile {profile:?}: {e}");
                return None;
            }
            None => None,
        };
        let raw = fd.as_raw_fd();
        let conn = Conn {
            fd,
            state: state::OUTBOUND | state::CONNECTING,
            life: Life::OPEN,
            reason: CloseReason::Done,
            timer: TimerKey::NONE,
            io: None,
            app: S::Conn::default(),
        };
        match self.core.conns.insert(conn) {
            Ok(nid) => {
                self.core.outbound += 1;
                self.core.stats.outbound_opened += 1;
                if let Some(p) = preamble {
                    self.core.preambles.insert(nid.index, p);
                }
                if let Some(session) = session {
                    self.core.sessions.insert(
                        nid.index,
                        Secure {
                            session,
                            listener: None,
                            started: false,
                        },
                    );
                    if let Some(c) = self.core.conns.get_mut(nid) {
                        c.state |= state::SECURE;
                    }
                }
                self.ring.poll_out(raw, token::pack(OP_CONNECT, nid));
                Some(nid)
            }
            // No slot for another outbound connection (global.max_outbound): the socket is
            // closed on drop.
            Err(_) => None,
        }
    }

    /// The asking connection learns it has no peer (no slot, or a refused profile).
    fn refuse_outbound(&mut self, from: Id) {
        self.core.stats.outbound_refused += 1;
        if let Some(((), req)) = self
            .core
            .call(from, |svc, cx, app| svc.on_unpaired(cx, app))
        {
            self.apply(from, req);
        }
    }

    pub(super) fn on_connect(&mut self, c: Completion) {
        let id = token::id(c.user_data);
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::CONNECTING == 0 {
            return;
        }
        conn.state &= !state::CONNECTING;
        if conn.life.is_closing() {
            self.maybe_finalize(id);
            return;
        }
        let sock = SockRef::from(&conn.fd);
        let result = if c.result < 0 {
            Err(std::io::Error::from_raw_os_error(-c.result))
        } else {
            match sock.take_error() {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            }
        };
        let ok = result.is_ok();
        if ok {
            let _ = sock.set_nodelay(true);
            conn.state |= state::RECV_ARMED;
            let fd = conn.fd.as_raw_fd();
            self.ring.recv_multi(fd, token::pack(OP_RECV, id));
            if let Some(p) = (!self.core.preambles.is_empty())
                .then(|| self.core.preambles.remove(&id.index))
                .flatten()
            {
                // The first bytes on the wire, as they are: before the TLS handshake's records,
                // or before what the service writes.
                let secure = conn.state & state::SECURE != 0;
                let io = conn
                    .io
                    .get_or_insert_with(|| self.core.io_pool.pop().unwrap_or_default());
                if secure {
                    io.wire_out.extend_from_slice(&p);
                } else {
                    io.out.extend_from_slice(&p);
                }
            }
            if conn.state & state::SECURE != 0 {
                // `on_connected` comes once the handshake is done.
                self.start_handshake(id);
                return;
            }
        } else {
            self.core.stats.outbound_failed += 1;
        }
        if let Some(((), req)) = self
            .core
            .call(id, |svc, cx, app| svc.on_connected(cx, app, result))
        {
            self.apply(id, req);
        }
        if !ok {
            self.begin_close(id, CloseReason::ConnectFailed);
            self.maybe_finalize(id);
        }
    }

    /// Lets a paused connection read again, presenting its buffered input first.
    pub(super) fn resume(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::PAUSED == 0 || conn.life.is_closing() {
            return;
        }
        conn.state &= !state::PAUSED;
        if let Some(req) = self.core.deliver(id, &[]) {
            self.apply(id, req);
        }
        self.after_recv(id);
        self.deferred_eof(id);
    }

    /// Reports an EOF that arrived while input was paused, once the buffered input is consumed.
    /// Returns true when it did.
    pub(super) fn deferred_eof(&mut self, id: Id) -> bool {
        let due = self
            .core
            .conns
            .get(id)
            .is_some_and(|c| c.life.open_at_eof() && c.state & state::PAUSED == 0);
        if due {
            self.report_peer_closed(id);
            self.close_if_both_done(id);
        }
        due
    }

    /// A connection that has seen the peer's FIN and sent its own is finished.
    pub(super) fn close_if_both_done(&mut self, id: Id) {
        let done = self.core.conns.get(id).is_some_and(|c| c.life.both_done());
        if done {
            self.begin_close(id, CloseReason::PeerClosed);
            self.maybe_finalize(id);
        }
    }

    /// Returns an idle connection's buffers to the pool.
    pub(super) fn settle(&mut self, id: Id) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if conn.state & state::SENDING != 0 || conn.life.is_closing() {
            return;
        }
        if conn.io.as_ref().is_some_and(|io| io.is_idle()) {
            let io = conn.io.take().expect("checked");
            self.core.release_io(io);
            if let Some(sec) = self.core.sessions.get_mut(&id.index) {
                self.core.service.transport().idle(&mut sec.session);
            }
        }
    }
}

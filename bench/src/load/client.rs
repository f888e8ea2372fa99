//! One load thread: its own io_uring (the engine's `sys::Ring`), a set of keep-alive connections,
//! requests sent in batches from reused buffers, responses framed as they arrive from the provided
//! buffer ring, latencies into an HdrHistogram.
//!
//! Closed loop: each connection keeps `depth` requests outstanding and sends the next as soon as a
//! response completes. Open loop: requests are scheduled at a fixed rate; each has an intended send
//! time and its latency is measured from that time, so time spent waiting for a free connection
//! counts (coordinated-omission correction, as wrk2 and oha do).

use super::response::{Parser, Step};
use super::tls::{Handshake, TlsConn};
use super::{Plan, Tally};
use coreplex_engine::sys::{Completion, Ring, SendOutcome};
use coreplex_engine::table::Id;
use coreplex_engine::token::{self, OP_RECV, OP_SEND, SEND_TAG};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Conn {
    fd: Option<OwnedFd>,
    gen: u32,
    recv_armed: bool,
    sending: bool,
    queued: Vec<u8>,
    spare: Vec<u8>,
    input: Vec<u8>,
    parser: Parser,
    /// Intended send times (ns since start) of the requests in flight, oldest first.
    outstanding: VecDeque<u64>,
    /// Dead: waiting for a reconnect.
    dead: bool,
    /// TLS state (https:// targets).
    tls: Option<TlsConn>,
    /// Decrypted input of a TLS connection, before framing.
    plain: Vec<u8>,
}

struct State<'p> {
    plan: &'p Plan,
    conns: Vec<Conn>,
    tally: Tally,
    start: Instant,
    now_ns: u64,
    end_ns: u64,
    /// Open loop: intended times of requests due but not yet on a connection.
    backlog: VecDeque<u64>,
    /// Open loop: requests scheduled so far.
    scheduled: u64,
    graveyard: Vec<OwnedFd>,
    next_conn: usize,
}

/// Runs one thread's share of the load and returns its tally.
pub fn run(plan: &Plan, thread: usize, conns: usize) -> Tally {
    if let Some(cpu) = plan.cpus.get(thread % plan.cpus.len().max(1)) {
        let _ = coreplex_engine::cpus::pin_current_thread(*cpu);
    }
    let mut ring = match Ring::new(4096, 4096, 16 * 1024, 0, SEND_TAG) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load thread {thread}: {e}");
            let mut t = Tally::new();
            t.counts.errors.connect += conns as u64;
            return t;
        }
    };
    let start = plan.start;
    let mut st = State {
        plan,
        conns: Vec::with_capacity(conns),
        tally: Tally::new(),
        start,
        now_ns: 0,
        end_ns: plan.duration.as_nanos() as u64,
        backlog: VecDeque::new(),
        scheduled: 0,
        graveyard: Vec::new(),
        next_conn: 0,
    };
    for i in 0..conns {
        let mut c = Conn {
            fd: None,
            gen: 0,
            recv_armed: false,
            sending: false,
            queued: Vec::with_capacity(plan.request.len() * plan.depth),
            spare: Vec::with_capacity(plan.request.len() * plan.depth),
            input: Vec::new(),
            parser: Parser::default(),
            outstanding: VecDeque::with_capacity(plan.depth),
            dead: true,
            tls: None,
            plain: Vec::new(),
        };
        c.gen = (thread as u32) << 16;
        st.conns.push(c);
        st.reconnect(&mut ring, i);
    }
    // Wait for the common start so threads begin together.
    while Instant::now() < start {
        std::thread::sleep(Duration::from_micros(200));
    }
    st.tick();
    if plan.rate.is_none() {
        for i in 0..st.conns.len() {
            st.fill_closed_loop(i);
            st.flush(&mut ring, i);
        }
    }
    let mut cqes: Vec<Completion> = Vec::with_capacity(4096);
    let mut last_housekeeping = 0u64;
    let mut reported = 0u64;
    while st.now_ns < st.end_ns {
        let wait = st.wait_time();
        if let Err(e) = ring.submit_and_wait(Some(wait)) {
            eprintln!("load thread {thread}: io_uring_enter: {e}");
            break;
        }
        st.graveyard.clear();
        cqes.clear();
        ring.drain(&mut cqes);
        st.tick();
        for c in &cqes {
            st.dispatch(&mut ring, *c);
        }
        if plan.rate.is_some() {
            st.schedule_open_loop(&mut ring);
        }
        if st.now_ns - last_housekeeping >= 100_000_000 {
            last_housekeeping = st.now_ns;
            st.housekeeping(&mut ring);
            plan.progress
                .fetch_add(st.tally.counts.answered - reported, Ordering::Relaxed);
            reported = st.tally.counts.answered;
        }
    }
    plan.progress
        .fetch_add(st.tally.counts.answered - reported, Ordering::Relaxed);
    st.tally.counts.in_flight_at_end = st
        .conns
        .iter()
        .map(|c| c.outstanding.len() as u64)
        .sum::<u64>();
    st.tally.counts.unsent_at_end = st.backlog.len() as u64;
    st.tally
}

impl State<'_> {
    fn tick(&mut self) {
        self.now_ns = Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64;
    }

    fn wait_time(&self) -> Duration {
        let until_end = self.end_ns.saturating_sub(self.now_ns);
        let mut ns = until_end.min(100_000_000);
        if let Some(rate) = self.plan.rate {
            let next_due = ((self.scheduled + 1) as f64 * 1e9 / rate) as u64;
            ns = ns.min(next_due.saturating_sub(self.now_ns));
        }
        Duration::from_nanos(ns.max(1_000))
    }

    fn connect(&self, i: usize) -> std::io::Result<OwnedFd> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if self.plan.sources > 0 && self.plan.target.ip().is_loopback() {
            let n = i % self.plan.sources as usize;
            let src = Ipv4Addr::new(127, 0, 0, 2 + n as u8);
            s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
        }
        if self.plan.reconnect {
            // Thousands of connections a second: closing with a reset leaves no TIME_WAIT
            // behind to crowd the source ports of later runs.
            s.set_linger(Some(Duration::ZERO))?;
        }
        s.connect_timeout(&self.plan.target.into(), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        Ok(s.into())
    }

    fn reconnect(&mut self, ring: &mut Ring, i: usize) {
        match self.connect(i) {
            Ok(fd) => {
                let tls = match &self.plan.tls {
                    Some(t) => match t.connect() {
                        Ok(conn) => Some(TlsConn::new(conn)),
                        Err(_) => {
                            self.tally.counts.errors.tls += 1;
                            return;
                        }
                    },
                    None => None,
                };
                let c = &mut self.conns[i];
                c.tls = tls;
                c.gen = c.gen.wrapping_add(1) & coreplex_engine::table::GEN_MASK;
                ring.recv_multi(fd.as_raw_fd(), token::pack(OP_RECV, self.id(i)));
                let c = &mut self.conns[i];
                c.fd = Some(fd);
                c.recv_armed = true;
                c.dead = false;
                c.input.clear();
                c.parser = Parser::default();
                self.tally.counts.connects += 1;
            }
            Err(_) => self.tally.counts.errors.connect += 1,
        }
    }

    fn id(&self, i: usize) -> Id {
        Id {
            index: i as u32,
            gen: self.conns[i].gen,
        }
    }

    /// Ends a connection: its outstanding requests count as `kind` errors.
    fn kill(&mut self, i: usize, kind: ErrorKind) {
        let c = &mut self.conns[i];
        if c.dead {
            return;
        }
        let lost = c.outstanding.len() as u64;
        c.outstanding.clear();
        c.queued.clear();
        c.dead = true;
        c.recv_armed = false;
        if let Some(fd) = c.fd.take() {
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
            self.graveyard.push(fd);
        }
        c.gen = c.gen.wrapping_add(1) & coreplex_engine::table::GEN_MASK;
        let e = &mut self.tally.counts.errors;
        match kind {
            ErrorKind::Timeout => e.timeout += lost,
            ErrorKind::Reset => e.reset += lost,
            ErrorKind::Closed => e.closed += lost,
            ErrorKind::Parse => e.parse += lost,
            ErrorKind::Tls => e.tls += lost,
        }
    }

    fn dispatch(&mut self, ring: &mut Ring, c: Completion) {
        match token::op(c.user_data) {
            OP_RECV => self.on_recv(ring, c),
            OP_SEND => {
                let Some(outcome) = ring.complete_send(c.user_data, c.result) else {
                    return;
                };
                match outcome {
                    SendOutcome::Partial { sent, .. } => self.tally.counts.bytes_out += sent as u64,
                    SendOutcome::Done { owner, buf, sent } => {
                        self.tally.counts.bytes_out += sent as u64;
                        let id = token::id(owner);
                        let i = id.index as usize;
                        let conn = &mut self.conns[i];
                        if conn.gen != id.gen {
                            return;
                        }
                        conn.sending = false;
                        conn.spare = buf;
                        self.flush(ring, i);
                    }
                    SendOutcome::Failed { owner, .. } => {
                        let id = token::id(owner);
                        if self.conns[id.index as usize].gen == id.gen {
                            self.kill(id.index as usize, ErrorKind::Reset);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_recv(&mut self, ring: &mut Ring, c: Completion) {
        let id = token::id(c.user_data);
        let buf = ring.bufs().take(c.flags, c.result);
        let i = id.index as usize;
        let live = i < self.conns.len() && self.conns[i].gen == id.gen && !self.conns[i].dead;
        if !live {
            if let Some(b) = buf {
                ring.bufs().recycle(b);
            }
            return;
        }
        if !c.more() {
            self.conns[i].recv_armed = false;
        }
        if c.result > 0 {
            self.tally.counts.bytes_in += c.result as u64;
            if let Some(b) = buf {
                let data = ring.bufs_ref().data(&b);
                if self.conns[i].tls.is_some() {
                    self.on_tls_data(i, data);
                } else {
                    self.on_data(i, data);
                }
                ring.bufs().recycle(b);
            }
        } else if c.result == 0 {
            if let Some(status) = self.conns[i].parser.on_eof() {
                self.complete(i, status);
            }
            self.kill(i, ErrorKind::Closed);
        } else if c.result != -libc::ENOBUFS && c.result != -libc::ECANCELED {
            self.kill(i, ErrorKind::Reset);
        }
        let conn = &mut self.conns[i];
        if !conn.dead && !conn.recv_armed {
            conn.recv_armed = true;
            let fd = conn.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
            ring.recv_multi(fd, token::pack(OP_RECV, self.id(i)));
        }
        if self.conns[i].dead && self.plan.reconnect && self.now_ns < self.end_ns {
            // One request per connection: the next connection at once.
            self.reconnect(ring, i);
        }
        if !self.conns[i].dead {
            if self.plan.rate.is_none() {
                self.fill_closed_loop(i);
            }
            self.flush(ring, i);
        }
    }

    /// Decrypts a TLS connection's input, counts its handshake, frames the plaintext.
    fn on_tls_data(&mut self, i: usize, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.conns[i].plain);
        plain.clear();
        let Some(tls) = self.conns[i].tls.as_mut() else {
            return;
        };
        match tls.receive(data, &mut plain) {
            Ok(done) => {
                match done {
                    Some(Handshake::Full) => self.tally.counts.handshakes_full += 1,
                    Some(Handshake::Resumed) => self.tally.counts.handshakes_resumed += 1,
                    None => {}
                }
                if !plain.is_empty() {
                    self.on_data(i, &plain);
                }
            }
            Err(e) => {
                if self.tally.counts.errors.tls == 0 {
                    eprintln!("TLS error (the first of this thread): {e}");
                }
                // Lost requests count as TLS errors; a connection lost before any request
                // counts once.
                if self.conns[i].outstanding.is_empty() {
                    self.tally.counts.errors.tls += 1;
                }
                self.kill(i, ErrorKind::Tls);
            }
        }
        self.conns[i].plain = plain;
    }

    fn on_data(&mut self, i: usize, data: &[u8]) {
        let mut input = std::mem::take(&mut self.conns[i].input);
        let direct = input.is_empty();
        if !direct {
            input.extend_from_slice(data);
        }
        let buf: &[u8] = if direct { data } else { &input };
        let mut pos = 0;
        let mut close = false;
        while pos < buf.len() {
            match self.conns[i].parser.feed(&buf[pos..]) {
                Ok(Step::Done(d)) => {
                    pos += d.len;
                    if (100..200).contains(&d.status) {
                        continue;
                    }
                    self.complete(i, d.status);
                    if d.close || (self.plan.reconnect && self.conns[i].outstanding.is_empty()) {
                        close = true;
                        break;
                    }
                }
                Ok(Step::NeedMore { consumed }) => {
                    pos += consumed;
                    break;
                }
                Err(_) => {
                    self.kill(i, ErrorKind::Parse);
                    return;
                }
            }
        }
        if direct {
            input.clear();
            input.extend_from_slice(&data[pos..]);
        } else {
            input.drain(..pos);
        }
        self.conns[i].input = input;
        if close {
            self.kill(i, ErrorKind::Closed);
        }
    }

    fn complete(&mut self, i: usize, status: u16) {
        let Some(intended) = self.conns[i].outstanding.pop_front() else {
            self.tally.counts.unsolicited += 1; // a response nobody asked for
            return;
        };
        let t = &mut self.tally;
        t.counts.answered += 1;
        let class = (status / 100).clamp(1, 5) as usize - 1;
        t.counts.status[class] += 1;
        if status >= 400 {
            t.counts.errors.non_2xx += 1;
        }
        let _ = t.latency.record(
            self.now_ns
                .saturating_sub(intended)
                .clamp(1, 3_600_000_000_000),
        );
    }

    fn queue(&mut self, i: usize, intended: u64) {
        let c = &mut self.conns[i];
        c.queued.extend_from_slice(&self.plan.request);
        c.outstanding.push_back(intended);
        c.parser.expect_head_response(self.plan.head);
        self.tally.counts.sent += 1;
    }

    fn fill_closed_loop(&mut self, i: usize) {
        if self.now_ns >= self.end_ns {
            return;
        }
        while !self.conns[i].dead && self.conns[i].outstanding.len() < self.plan.depth {
            let now = self.now_ns;
            self.queue(i, now);
        }
    }

    fn flush(&mut self, ring: &mut Ring, i: usize) {
        let c = &mut self.conns[i];
        if c.sending || c.dead {
            return;
        }
        let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let buf = match c.tls.as_mut() {
            Some(tls) => {
                if !c.queued.is_empty() {
                    tls.write(&c.queued);
                    c.queued.clear();
                }
                if !tls.wants_write() {
                    return;
                }
                let mut records = std::mem::take(&mut c.spare);
                records.clear();
                tls.drain_records(&mut records);
                records
            }
            None => {
                if c.queued.is_empty() {
                    return;
                }
                let mut spare = std::mem::take(&mut c.spare);
                spare.clear();
                std::mem::replace(&mut c.queued, spare)
            }
        };
        c.sending = true;
        let owner = token::pack(OP_SEND, self.id(i));
        ring.send(fd, buf, owner);
    }

    fn schedule_open_loop(&mut self, ring: &mut Ring) {
        let Some(rate) = self.plan.rate else { return };
        if self.now_ns >= self.end_ns {
            return;
        }
        let due = (self.now_ns as f64 * rate / 1e9) as u64;
        while self.scheduled < due {
            self.scheduled += 1;
            self.backlog
                .push_back((self.scheduled as f64 * 1e9 / rate) as u64);
        }
        // Hand due requests to connections with room, round-robin.
        let n = self.conns.len();
        let mut tried = 0;
        while !self.backlog.is_empty() && tried < n {
            let i = self.next_conn;
            self.next_conn = (self.next_conn + 1) % n;
            let c = &self.conns[i];
            if c.dead || c.outstanding.len() >= self.plan.depth {
                tried += 1;
                continue;
            }
            tried = 0;
            let intended = self.backlog.pop_front().expect("not empty");
            self.queue(i, intended);
            self.flush(ring, i);
        }
    }

    fn housekeeping(&mut self, ring: &mut Ring) {
        let timeout = self.plan.timeout.as_nanos() as u64;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.dead {
                if self.now_ns < self.end_ns {
                    self.reconnect(ring, i);
                    if self.plan.rate.is_none() {
                        self.fill_closed_loop(i);
                    }
                    self.flush(ring, i);
                }
                continue;
            }
            // A request is late when it has waited `timeout` since it was sent (the closed loop
            // sends at its intended time; the open loop may have queued it later).
            if let Some(&oldest) = c.outstanding.front() {
                if self.now_ns.saturating_sub(oldest) > timeout {
                    self.kill(i, ErrorKind::Timeout);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum ErrorKind {
    Timeout,
    Reset,
    Closed,
    Parse,
    Tls,
}

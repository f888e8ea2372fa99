//! Holding many idle keep-alive connections: connect from several loopback source addresses (bind
//! before connect, so one address's ephemeral ports are never the limit), send one request each,
//! read its response, then keep the sockets open. With `--tls` each connection first completes a
//! TLS handshake (and its request goes over TLS); the client then drops its own TLS state and
//! keeps only the socket, so the server holds an idle TLS connection.

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::BufRead;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `hold`.
pub struct HoldOptions {
    /// Server address.
    pub target: SocketAddr,
    /// Connections in all.
    pub conns: usize,
    /// Seconds to hold.
    pub duration: u64,
    /// Source addresses.
    pub sources: u8,
    /// Request path.
    pub path: String,
    /// Fraction of connections that send a request every `interval`.
    pub active_fraction: f64,
    /// Seconds between those requests.
    pub interval: u64,
    /// Client processes to spread the connections over (each has its own fd limit).
    pub processes: usize,
    /// Open the connections over TLS.
    pub tls: bool,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub h2c: bool,
}

/// Runs `hold`: in this process, or spread over child processes. Returns (alive, total).
pub fn run(o: &HoldOptions) -> Result<(usize, usize)> {
    if o.processes > 1 {
        let mut kids = spawn_holders(o)?;
        let mut alive = 0;
        for k in kids.iter_mut() {
            let out = wait_child(k, Duration::from_secs(o.duration + 120))?;
            alive += out
                .lines()
                .find_map(|l| l.strip_prefix("alive after "))
                .and_then(|l| l.split_once(": "))
                .and_then(|(_, r)| r.split('/').next())
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
        }
        return Ok((alive, o.conns));
    }
    if (o.tls || o.h2c) && o.active_fraction > 0.0 {
        bail!("--tls and --h2c hold idle connections only (no --active-fraction)");
    }
    let mut h = if o.h2c {
        Holder::open_h2c(o.target, o.conns, o.sources, &o.path)?
    } else {
        Holder::open(o.target, o.conns, o.sources, &o.path, o.tls)?
    };
    println!("opened {} connections ({} failed)", h.alive(), h.failed);
    let end = Instant::now() + Duration::from_secs(o.duration);
    let mut pinged = 0;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        if o.active_fraction > 0.0 && o.interval > 0 {
            std::thread::sleep(left.min(Duration::from_secs(o.interval)));
            if Instant::now() < end {
                pinged += h.ping(o.active_fraction, &o.path);
            }
        } else {
            std::thread::sleep(left);
        }
    }
    let alive = h.check_alive();
    if pinged > 0 {
        println!("requests answered on active connections: {pinged}");
    }
    println!("alive after {}s: {alive}/{}", o.duration, o.conns);
    h.close();
    Ok((alive, o.conns))
}

/// Starts `processes` child `hold` processes sharing `conns`, and waits until each has opened its
/// connections (it prints "opened ..."). The children hold for `duration` seconds.
pub fn spawn_holders(o: &HoldOptions) -> Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for i in 0..o.processes {
        let n = o.conns / o.processes + usize::from(i < o.conns % o.processes);
        let mut child = Command::new(&exe)
            .args([
                "hold",
                "--target",
                &o.target.to_string(),
                "--conns",
                &n.to_string(),
                "--duration",
                &o.duration.to_string(),
                "--sources",
                &o.sources.to_string(),
                "--path",
                &o.path,
                "--active-fraction",
                &o.active_fraction.to_string(),
                "--interval",
                &o.interval.to_string(),
            ])
            .args(o.tls.then_some("--tls"))
            .args(o.h2c.then_some("--h2c"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning a hold process")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = std::io::BufReader::new(stdout);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        if !first.starts_with("opened ") {
            let _ = child.kill();
            bail!("hold process {i} failed to open its connections: {first:?}");
        }
        child.stdout = None;
        kids.push((child, lines));
    }
    // Re-attach the readers so the callers can collect the rest of each child's output.
    Ok(kids
        .into_iter()
        .map(|(mut c, r)| {
            c.stdout = Some(r.into_inner());
            c
        })
        .collect())
}

fn wait_child(c: &mut Child, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        if c.try_wait()?.is_some() {
            let mut s = String::new();
            if let Some(mut out) = c.stdout.take() {
                let _ = out.read_to_string(&mut s);
            }
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            bail!("a hold process did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connections whose requests are in flight together while opening.
const BATCH: usize = 64;

/// A set of held connections.
pub struct Holder {
    conns: Vec<TcpStream>,
    /// Connections that failed to open or to get a response.
    pub failed: usize,
}

impl Holder {
    /// Opens `n` connections to `target`, each having served one request for `path` (over TLS
    /// when `tls`: one connection at a time, as each handshake takes round trips).
    pub fn open(
        target: SocketAddr,
        n: usize,
        sources: u8,
        path: &str,
        tls: bool,
    ) -> Result<Holder> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        if tls {
            return Holder::open_tls(target, n, sources, &req);
        }
        let mut ok = Vec::with_capacity(n);
        let mut failed = 0;
        // Requests go out in batches (send a batch, then read its responses): quick for 19k
        // connections, while only a bounded number of them is busy on the server at once.
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..n {
            match connect(target, i, sources) {
                Ok(mut s) => {
                    if s.write_all(req.as_bytes()).is_ok() {
                        batch.push(s);
                    } else {
                        failed += 1;
                    }
                }
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("connect failed: {e:#}");
                    }
                }
            }
            if batch.len() == BATCH || i + 1 == n {
                for mut s in batch.drain(..) {
                    if read_response(&mut s).is_ok() {
                        ok.push(s);
                    } else {
                        failed += 1;
                    }
                }
            }
        }
        if ok.is_empty() && n > 0 {
            bail!("no connection to {target} could be opened and served");
        }
        Ok(Holder { conns: ok, failed })
    }

    fn open_tls(target: SocketAddr, n: usize, sources: u8, req: &str) -> Result<Holder> {
        let client = crate::load::tls::TlsClient::new(
            &crate::load::tls::TlsOptions {
                insecure: true,
                sni: Some("localhost".into()),
                alpn: vec!["http/1.1".into()],
                ..Default::default()
            },
            "localhost",
        )?;
        Holder::open_one_by_one(target, n, sources, "TLS", |s| {
            let mut conn = client.connect()?;
            let mut tls = rustls::Stream::new(&mut conn, s);
            tls.write_all(req.as_bytes())?;
            read_response(&mut tls)?;
            drop(conn); // the server's state is what is measured: keep only the socket
            Ok(())
        })
    }

    /// Opens `n` connections one at a time, each served by `exchange` before the next.
    fn open_one_by_one(
        target: SocketAddr,
        n: usize,
        sources: u8,
        what: &str,
        exchange: impl Fn(&mut TcpStream) -> Result<()>,
    ) -> Result<Holder> {
        let mut ok = Vec::with_capacity(n);
        let mut failed = 0;
        for i in 0..n {
            let served = connect(target, i, sources).and_then(|mut s| {
                exchange(&mut s)?;
                Ok(s)
            });
            match served {
                Ok(s) => ok.push(s),
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("{what} connection failed: {e:#}");
                    }
                }
            }
        }
        if ok.is_empty() && n > 0 {
            bail!("no {what} connection to {target} could be opened and served");
        }
        Ok(Holder { conns: ok, failed })
    }

    /// Opens `n` h2c connections (prior knowledge), each having served one `GET path`.
    pub fn open_h2c(target: SocketAddr, n: usize, sources: u8, path: &str) -> Result<Holder> {
        Holder::open_one_by_one(target, n, sources, "h2c", |s| crate::h2c::exchange(s, path))
    }

    /// Connections currently held.
    pub fn alive(&self) -> usize {
        self.conns.len()
    }

    /// Counts connections the server has not closed (a non-blocking peek sees no EOF).
    pub fn check_alive(&mut self) -> usize {
        let mut alive = 0;
        let mut b = [0u8; 1];
        for s in &self.conns {
            let _ = s.set_nonblocking(true);
            match s.peek(&mut b) {
                // Nothing to read, or bytes (a late TLS ticket, say) but no EOF: still open.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
                Ok(n) if n > 0 => alive += 1,
                _ => {}
            }
            let _ = s.set_nonblocking(false);
        }
        alive
    }

    /// Sends one request on every `1/fraction`-th connection and reads its response; returns how
    /// many were answered. Keeps the exercised connections warm (a fraction of a fleet that talks).
    pub fn ping(&mut self, fraction: f64, path: &str) -> usize {
        if fraction <= 0.0 || self.conns.is_empty() {
            return 0;
        }
        let step = (1.0 / fraction.min(1.0)).round().max(1.0) as usize;
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let mut ok = 0;
        for s in self.conns.iter_mut().step_by(step) {
            if s.write_all(req.as_bytes()).is_ok() && read_response(s).is_ok() {
                ok += 1;
            }
        }
        ok
    }

    /// Closes everything with linger 0 (RST), so no TIME_WAIT state piles up between rounds.
    pub fn close(self) {
        for s in self.conns {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    }
}

fn connect(target: SocketAddr, i: usize, sources: u8) -> Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if sources > 0 && target.ip().is_loopback() {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % sources as usize) as u8);
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .with_context(|| format!("bind {src}"))?;
    }
    s.connect_timeout(&target.into(), Duration::from_secs(5))
        .with_context(|| format!("connect {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s.into())
}

fn read_response(s: &mut impl Read) -> Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("closed before the response");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

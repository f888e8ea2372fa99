//! Holding many idle keep-alive connections: connect from several loopback source addresses (bind
//! before connect, so one address's ephemeral ports are never the limit), send one request each,
//! read its response, then keep the sockets open.

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// Connections whose requests are in flight together while opening.
const BATCH: usize = 64;

/// A set of held connections.
pub struct Holder {
    conns: Vec<TcpStream>,
    /// Connections that failed to open or to get a response.
    pub failed: usize,
}

impl Holder {
    /// Opens `n` connections to `target`, each having served one request for `path`.
    pub fn open(target: SocketAddr, n: usize, sources: u8, path: &str) -> Result<Holder> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
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
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
                _ => {}
            }
            let _ = s.set_nonblocking(false);
        }
        alive
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
    Ok(s.into())
}

fn read_response(s: &mut TcpStream) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
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

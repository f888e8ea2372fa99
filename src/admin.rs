//! The admin endpoint: `/metrics` (Prometheus text), `/stats` (the live page), `/stats.json` and
//! `/stats.csv` (the same metric table), and `/health`, served by plain blocking threads
//! outside the shards (an accept thread, one short-lived thread per connection, at most 64). A scrape asks every shard for a snapshot over the control channels and
//! merges them; nothing on the shards' hot path is shared or locked.
//!
//! The accept thread polls its socket and checks a release flag between polls: after a binary
//! upgrade the successor serves the same socket, and the predecessor's thread lets go of it.

use crate::http::HttpStats;
use crate::metrics;
use coreplex_engine::RuntimeHandle;
use coreplex_protocol::h1::{parse_request, HeadScanner, Limits, Method, Scan};
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Admin connections served at once; more are closed at accept.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Starts the admin thread on an already bound listener.
pub fn spawn(
    listener: TcpListener,
    handle: RuntimeHandle<HttpStats>,
    stopping: Arc<AtomicBool>,
    released: Arc<AtomicBool>,
) -> std::io::Result<()> {
    // Non-blocking: a successor shares the socket, and either process may find the queue empty.
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("coreplex-admin".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            while !released.load(Ordering::Relaxed) {
                if !crate::control_socket::readable(&listener) {
                    continue;
                }
                match listener.accept() {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Ok((s, _)) => {
                        if s.set_nonblocking(false).is_err() {
                            continue;
                        }
                        // One thread per scrape, a few at a time: a client that connects and says
                        // nothing delays no one else.
                        if active.load(Ordering::Relaxed) >= MAX_ADMIN_CONNECTIONS {
                            drop(s);
                            continue;
                        }
                        active.fetch_add(1, Ordering::Relaxed);
                        let (handle, stopping, done) =
                            (handle.clone(), stopping.clone(), active.clone());
                        let spawned = std::thread::Builder::new()
                            .name("coreplex-admin-conn".into())
                            .stack_size(256 * 1024)
                            .spawn(move || {
                                if let Err(e) = serve(s, &handle, &stopping) {
                                    tracing::debug!("admin connection: {e}");
                                }
                                done.fetch_sub(1, Ordering::Relaxed);
                            });
                        if spawned.is_err() {
                            active.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("admin accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map(|_| ())
}

/// Binds the admin address, with an error that names the fix.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("cannot listen on admin.bind {addr}: address already in use (another process holds the port: stop it or change admin.bind)")
        } else {
            format!("cannot listen on admin.bind {addr}: {e}")
        }
    })
}

fn serve(
    mut s: TcpStream,
    handle: &RuntimeHandle<HttpStats>,
    stopping: &AtomicBool,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(1024);
    let mut scanner = HeadScanner::new();
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match scanner.scan(&buf, &limits) {
            Ok(Scan::Complete { head_len }) => break head_len,
            Ok(Scan::Incomplete) => continue,
            Err(e) => return respond(&mut s, e.status(), "text/plain", "bad request\n", false),
        }
    };
    let mut headers = [const { MaybeUninit::uninit() }; 64];
    let head = match parse_request(&buf[..head_len], &limits, &mut headers) {
        Ok(Some(h)) => h,
        Ok(None) => return respond(&mut s, 400, "text/plain", "bad request\n", false),
        Err(e) => return respond(&mut s, e.status(), "text/plain", "bad request\n", false),
    };
    let is_head = head.method == Method::Head;
    if !matches!(head.method, Method::Get | Method::Head) {
        return respond(&mut s, 405, "text/plain", "method not allowed\n", is_head);
    }
    let table = || metrics::table(&handle.stats(Duration::from_secs(2)), handle.shards());
    match head.path {
        "/metrics" => respond(
            &mut s,
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &table().prometheus(),
            is_head,
        ),
        "/stats" => respond(
            &mut s,
            200,
            "text/html; charset=utf-8",
            crate::stats_page::PAGE,
            is_head,
        ),
        "/stats.json" => respond(&mut s, 200, "application/json", &table().json(), is_head),
        // `;csv` as HAProxy's stats URI takes it.
        "/stats.csv" | "/stats;csv" => respond(
            &mut s,
            200,
            "text/csv; charset=utf-8",
            &table().csv(),
            is_head,
        ),
        "/health" => {
            if stopping.load(Ordering::Relaxed) {
                respond(&mut s, 503, "text/plain", "stopping\n", is_head)
            } else {
                respond(&mut s, 200, "text/plain", "ok\n", is_head)
            }
        }
        "/" => respond(
            &mut s,
            200,
            "text/plain",
            "coreplex admin: /metrics (Prometheus), /stats (live page), /stats.json, /stats.csv, /health\n",
            is_head,
        ),
        _ => respond(&mut s, 404, "text/plain", "not found\n", is_head),
    }
}

fn respond(
    s: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = coreplex_protocol::h1::reason_phrase(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: coreplex\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Drain what the client may still send so the close does not turn into a reset.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

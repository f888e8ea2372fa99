//! A controllable HTTP/1.1 test backend for the reverse-proxy tests ([`TestBackend`]), a small
//! HTTP/1.1 client that understands Content-Length, chunked and close-delimited bodies
//! ([`Client`]), and self-tests of both over plain sockets.
//!
//! The backend is plain `std::net` with one accept thread and one thread per connection, with
//! keep-alive. Its behaviour is chosen by the request path, so one backend serves every test:
//!
//! | path | answer |
//! |---|---|
//! | `/delay/<ms>` | sleeps (watching for the peer closing), then 200 `ok` |
//! | `/deaf-delay/<ms>` | sleeps without watching the socket (a FIN from the peer changes nothing), then 200 `ok` |
//! | `/conn` | 200 with the backend connection's number (accept order, from 0): `c<N>` |
//! | `/drop-next` | 200 `ok`; the next request on this connection is read, then the connection is closed unanswered (a pooled connection that dies as it is reused) |
//! | `/stall-mid-body/<ms>` | `Content-Length: 20000`, 10000 bytes, a pause of `<ms>` (watching for the peer), then the rest |
//! | `/early-hints` | `103 Early Hints` with a `Link` field (and a `Content-Length: 0` that RFC 9110 forbids there), then 200 `ok` |
//! | `/bad-response` | a response head with an invalid Content-Length (`12abc`), then closes |
//! | `/bytes/<n>` | 200, `Content-Length: n`, `n` bytes `x` from a reused 64 KiB buffer |
//! | `/chunked/<n>` | 200, chunked: `n` bytes `x` in 16 KiB chunks, then `0\r\n\r\n` |
//! | `/upload` | reads the whole body (Content-Length or chunked), 200 with the byte count |
//! | `/echo` | 200 with the request head exactly as received |
//! | `/close` | 200 `ok` with `Connection: close`, then closes |
//! | `/reset-mid-body` | `Content-Length: 1000000`, 10000 bytes, then a reset (SO_LINGER 0) |
//! | `/reset-before-response` | reads the request, then resets without answering |
//! | `/status/<code>` | that status (200-999, so also invalid ones) with body `s` |
//! | `/ntlm` | 401 with `WWW-Authenticate: NTLM`, body `a` |
//! | `/negotiate` | 401 with `WWW-Authenticate: Negotiate`, body `a` |
//! | `/eof-body` | 200 without Content-Length or Transfer-Encoding, body `until-close`, then closes |
//! | `/eof-reset` | 200 without Content-Length or Transfer-Encoding, body `partial`, then resets |
//! | anything else | 200 `ok` |
//!
//! Every request body is read in full (and counted) before the answer. HEAD gets the same head
//! without a body. Every socket has read and write timeouts; dropping the backend stops every
//! thread (sockets shut down, joins bounded to 2 s).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Read and write timeout of every backend socket.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest request line, header line or chunk-size line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Longest request head accepted.
const MAX_HEAD: usize = 256 * 1024;
/// Chunk size of `/chunked/<n>` answers.
const CHUNK: usize = 16 * 1024;
/// How long [`TestBackend`]'s drop waits for its threads in all.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// The bytes every generated body is made of (`/bytes`, `/chunked`, `/reset-mid-body`).
pub const FILL_BYTE: u8 = b'x';
static FILL: [u8; 64 * 1024] = [FILL_BYTE; 64 * 1024];

/// Polls `cond` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where a backend connection is, as seen by [`TestBackend::close_idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: waiting for the first byte of the next one.
    Idle,
    /// Reading a request or answering it.
    Busy,
    /// Shut down by `close_idle`.
    Closed,
}

/// One open backend connection: a clone of its socket (to shut it down) and its state.
struct Entry {
    stream: TcpStream,
    state: Arc<Mutex<State>>,
}

/// What the backend threads share with the [`TestBackend`] handle.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
    dropped: AtomicUsize,
    body_bytes: AtomicU64,
    /// Whether the listening socket should be open ([`TestBackend::close_listener`]).
    want_listening: AtomicBool,
    /// Whether it is open now, as the accept thread last set it.
    listening: AtomicBool,
    last_head: Mutex<String>,
    conns: Mutex<HashMap<u64, Entry>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running test backend on `127.0.0.1:<any port>`; see the module docs for its paths.
pub struct TestBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TestBackend {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub fn start() -> TestBackend {
        TestBackend::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// Binds `addr` (e.g. a port a proxy already knows as a dead server) and starts accepting.
    pub fn start_on(addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        shared.want_listening.store(true, Ordering::SeqCst);
        shared.listening.store(true, Ordering::SeqCst);
        let sh = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, addr, sh));
        TestBackend {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now (accepted and not yet closed by either side).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Request heads received so far (counted before the answer is written).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Closes the listening socket (new connections are refused, as by a server that went away)
    /// and waits (up to 2 s) until it is closed; open connections go on.
    pub fn close_listener(&self) {
        self.set_listening(false);
    }

    /// Listens again on the same address, after [`TestBackend::close_listener`].
    pub fn reopen_listener(&self) {
        self.set_listening(true);
    }

    fn set_listening(&self, on: bool) {
        self.shared.want_listening.store(on, Ordering::SeqCst);
        assert!(
            wait_until(Duration::from_secs(2), || self
                .shared
                .listening
                .load(Ordering::SeqCst)
                == on),
            "the accept thread did not {} the listener on {}",
            if on { "reopen" } else { "close" },
            self.addr
        );
    }

    /// Requests read and left unanswered because `/drop-next` armed their connection.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Request body bytes received so far (decoded, for chunked bodies), over all requests.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// The last request head received, as text (up to and including the empty line).
    pub fn last_head(&self) -> String {
        self.shared.last_head.lock().unwrap().clone()
    }

    /// Closes (FIN) every connection that is idle between requests, as a backend closing pooled
    /// keep-alive connections does, and waits (up to 1 s) until their threads are done. Returns
    /// how many it closed.
    pub fn close_idle(&self) -> usize {
        let mut closed = Vec::new();
        {
            let conns = self.shared.conns.lock().unwrap();
            for (id, e) in conns.iter() {
                let mut st = e.state.lock().unwrap();
                if *st == State::Idle {
                    *st = State::Closed;
                    let _ = e.stream.shutdown(Shutdown::Both);
                    closed.push(*id);
                }
            }
        }
        wait_until(Duration::from_secs(1), || {
            let conns = self.shared.conns.lock().unwrap();
            closed.iter().all(|id| !conns.contains_key(id))
        });
        closed.len()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        let deadline = Instant::now() + JOIN_WAIT;
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(h) = self.accept.take() {
            join_bounded(h, deadline);
        }
        for e in self.shared.conns.lock().unwrap().values() {
            let _ = e.stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for h in threads {
            join_bounded(h, deadline);
        }
    }
}

/// Joins `h` if it finishes before `deadline`; otherwise leaves it detached.
fn join_bounded(h: JoinHandle<()>, deadline: Instant) {
    while !h.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if h.is_finished() {
        let _ = h.join();
    }
}

/// Accepts connections, polling a non-blocking listener every 2 ms so that it can close and
/// reopen the listening socket when asked.
fn accept_loop(listener: TcpListener, addr: SocketAddr, sh: Arc<Shared>) {
    let mut next_id = 0u64;
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let mut listener = Some(listener);
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let want = sh.want_listening.load(Ordering::SeqCst);
        if want != listener.is_some() {
            listener = if want {
                match TcpListener::bind(addr) {
                    Ok(l) => Some(l),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(l) = &listener {
                l.set_nonblocking(true).expect("non-blocking listener");
            }
            sh.listening.store(want, Ordering::SeqCst);
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let stream = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        sh.accepted.fetch_add(1, Ordering::SeqCst);
        sh.open.fetch_add(1, Ordering::SeqCst);
        let id = next_id;
        next_id += 1;
        let state = Arc::new(Mutex::new(State::Idle));
        sh.conns.lock().unwrap().insert(
            id,
            Entry {
                stream: clone,
                state: state.clone(),
            },
        );
        let conn_sh = sh.clone();
        let h = std::thread::spawn(move || serve_conn(&conn_sh, id, stream, &state));
        let mut threads = sh.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        threads.push(h);
    }
}

/// How a connection goes on after an exchange.
enum Next {
    KeepAlive,
    Close,
    Reset,
}

fn serve_conn(sh: &Shared, id: u64, stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut rd = BufReader::with_capacity(64 * 1024, stream);
    let mut conn = ConnInfo {
        id,
        drop_next: false,
    };
    let reset = loop {
        match serve_one(sh, &mut rd, state, &mut conn) {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) | Err(_) => break false,
            Ok(Next::Reset) => break true,
        }
    };
    let stream = rd.into_inner();
    if reset {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    } else {
        let _ = stream.shutdown(Shutdown::Write);
    }
    // Under the map lock, so that a connection gone from the map is also closed and uncounted:
    // drop the clone, then the socket itself (it closes, or resets, with its last descriptor).
    let mut conns = sh.conns.lock().unwrap();
    drop(conns.remove(&id));
    drop(stream);
    sh.open.fetch_sub(1, Ordering::SeqCst);
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_string())
}

fn eof() -> io::Error {
    io::Error::new(ErrorKind::UnexpectedEof, "connection closed")
}

/// Appends one line (through its `\n`) to `out`; fails at EOF or past [`MAX_LINE`].
fn read_line<R: BufRead>(rd: &mut R, out: &mut Vec<u8>) -> io::Result<()> {
    let n = rd.by_ref().take(MAX_LINE).read_until(b'\n', out)?;
    if n == 0 {
        return Err(eof());
    }
    if out.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            invalid("line too long")
        } else {
            eof()
        });
    }
    Ok(())
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// Reads a message head up to and including the empty line (leading empty lines skipped).
fn read_head<R: BufRead>(rd: &mut R) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        read_line(rd, &mut head)?;
        if is_blank(&head[start..]) {
            if start == 0 {
                head.clear();
                continue;
            }
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(invalid("head too long"));
        }
    }
}

/// Consumes `n` bytes, keeping them in `keep` if given; adds each read to `count`.
fn take_bytes<R: BufRead>(
    rd: &mut R,
    mut n: u64,
    count: &mut u64,
    mut keep: Option<&mut Vec<u8>>,
) -> io::Result<()> {
    while n > 0 {
        let buf = rd.fill_buf()?;
        if buf.is_empty() {
            return Err(eof());
        }
        let k = (buf.len() as u64).min(n) as usize;
        if let Some(v) = keep.as_deref_mut() {
            v.extend_from_slice(&buf[..k]);
        }
        rd.consume(k);
        n -= k as u64;
        *count += k as u64;
    }
    Ok(())
}

/// Reads a body framed by `framing`, adding its (decoded) length to `count` as it goes, so a
/// failed read still tells how much arrived. Chunk extensions and trailers are read and dropped.
pub fn read_body<R: BufRead>(
    rd: &mut R,
    framing: Framing,
    count: &mut u64,
    mut keep: Option<&mut Vec<u8>>,
) -> io::Result<()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => take_bytes(rd, n, count, keep),
        Framing::Chunked => loop {
            let mut line = Vec::new();
            read_line(rd, &mut line)?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    read_line(rd, &mut line)?;
                    if is_blank(&line) {
                        return Ok(());
                    }
                }
            }
            take_bytes(rd, size, count, keep.as_deref_mut())?;
            line.clear();
            read_line(rd, &mut line)?;
            if !is_blank(&line) {
                return Err(invalid("no CRLF after chunk data"));
            }
        },
        Framing::Close => loop {
            let buf = match rd.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(());
            }
            let k = buf.len();
            if let Some(v) = keep.as_deref_mut() {
                v.extend_from_slice(buf);
            }
            rd.consume(k);
            *count += k as u64;
        },
    }
}

/// Header fields of a head (after its first line), names as given, values trimmed.
fn header_fields(head: &str) -> Vec<(String, String)> {
    head.split('\n')
        .skip(1)
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Whether a comma-separated `Connection`-style header among `fields` lists `token`.
fn lists_token(fields: &[(String, String)], name: &str, token: &str) -> bool {
    fields
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The body framing declared by header `fields` (chunked wins over Content-Length).
fn declared_framing(fields: &[(String, String)]) -> io::Result<Option<Framing>> {
    if lists_token(fields, "transfer-encoding", "chunked") {
        return Ok(Some(Framing::Chunked));
    }
    match fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        Some((_, v)) => v
            .parse()
            .map(|n| Some(Framing::Length(n)))
            .map_err(|_| invalid("bad Content-Length")),
        None => Ok(None),
    }
}

/// The reason phrase for the statuses the backend sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A response head with `extra` header lines (each ending in CRLF) and, if given, Content-Length.
fn response_head(status: u16, extra: &str, len: Option<u64>) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n{extra}", reason(status));
    if let Some(n) = len {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Writes the last bytes of a response. On a keep-alive connection the connection becomes idle
/// under its state lock, so that [`TestBackend::close_idle`] called once a client has seen the
/// whole response always finds it idle.
fn finish(
    rd: &BufReader<TcpStream>,
    state: &Mutex<State>,
    bytes: &[u8],
    keep: bool,
) -> io::Result<Next> {
    let mut w = rd.get_ref();
    if !keep {
        w.write_all(bytes)?;
        return Ok(Next::Close);
    }
    let mut st = state.lock().unwrap();
    w.write_all(bytes)?;
    *st = State::Idle;
    Ok(Next::KeepAlive)
}

/// Sleeps `dur` while watching the socket: returns false as soon as the peer closes (or the
/// backend stops), true once the time is up.
fn sleep_watching(s: &TcpStream, dur: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + dur;
    let mut more_data = false;
    let alive = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        if stop.load(Ordering::SeqCst) {
            break false;
        }
        let step = left.min(Duration::from_millis(20));
        if more_data {
            // Pipelined bytes are waiting: peek would not block, so just sleep.
            std::thread::sleep(step);
            continue;
        }
        let _ = s.set_read_timeout(Some(step));
        let mut b = [0u8; 1];
        match s.peek(&mut b) {
            Ok(0) => break false,
            Ok(_) => more_data = true,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break false,
        }
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    alive
}

/// What one backend connection knows about itself.
struct ConnInfo {
    /// Accept order, from 0.
    id: u64,
    /// Set by `/drop-next`: read the next request, then close without answering.
    drop_next: bool,
}

/// Reads and answers one request.
fn serve_one(
    sh: &Shared,
    rd: &mut BufReader<TcpStream>,
    state: &Mutex<State>,
    conn: &mut ConnInfo,
) -> io::Result<Next> {
    // Idle until the first byte of the next request arrives (or the connection ends).
    let more = !rd.fill_buf()?.is_empty();
    {
        let mut st = state.lock().unwrap();
        if *st == State::Closed || !more {
            return Ok(Next::Close);
        }
        *st = State::Busy;
    }
    let head = read_head(rd)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    sh.requests.fetch_add(1, Ordering::SeqCst);
    *sh.last_head.lock().unwrap() = text.clone();

    let first = text.split('\n').next().unwrap_or("").trim_end_matches('\r');
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let fields = header_fields(&text);
    let keep = if version == "HTTP/1.0" {
        lists_token(&fields, "connection", "keep-alive")
    } else {
        !lists_token(&fields, "connection", "close")
    };
    let framing = declared_framing(&fields)?.unwrap_or(Framing::None);
    let mut body_len = 0u64;
    let res = read_body(rd, framing, &mut body_len, None);
    sh.body_bytes.fetch_add(body_len, Ordering::SeqCst);
    res?;
    if conn.drop_next {
        sh.dropped.fetch_add(1, Ordering::SeqCst);
        return Ok(Next::Close);
    }

    let is_head = method == "HEAD";
    let path = target.split('?').next().unwrap_or("/");
    let simple = |status: u16, extra: &str, body: &[u8]| {
        let mut out = response_head(status, extra, Some(body.len() as u64));
        if !is_head {
            out.extend_from_slice(body);
        }
        out
    };
    let num = |prefix: &str| -> Option<u64> { path.strip_prefix(prefix)?.parse().ok() };

    if let Some(ms) = num("/deaf-delay/") {
        std::thread::sleep(Duration::from_millis(ms));
        return finish(rd, state, &simple(200, "", b"ok"), keep);
    }
    if let Some(ms) = num("/stall-mid-body/") {
        let mut w = rd.get_ref();
        w.write_all(&response_head(200, "", Some(20_000)))?;
        w.write_all(&FILL[..10_000])?;
        if !sleep_watching(rd.get_ref(), Duration::from_millis(ms), &sh.stop) {
            return Ok(Next::Close);
        }
        return finish(rd, state, &FILL[..10_000], keep);
    }
    if let Some(ms) = num("/delay/") {
        if !sleep_watching(rd.get_ref(), Duration::from_millis(ms), &sh.stop) {
            return Ok(Next::Close);
        }
        return finish(rd, state, &simple(200, "", b"ok"), keep);
    }
    if let Some(n) = num("/bytes/") {
        let head = response_head(200, "", Some(n));
        if is_head || n == 0 {
            return finish(rd, state, &head, keep);
        }
        let mut w = rd.get_ref();
        w.write_all(&head)?;
        let mut left = n;
        while left > FILL.len() as u64 {
            w.write_all(&FILL)?;
            left -= FILL.len() as u64;
        }
        return finish(rd, state, &FILL[..left as usize], keep);
    }
    if let Some(n) = num("/chunked/") {
        let head = response_head(200, "Transfer-Encoding: chunked\r\n", None);
        if is_head {
            return finish(rd, state, &head, keep);
        }
        let mut w = rd.get_ref();
        w.write_all(&head)?;
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            let mut chunk = format!("{k:x}\r\n").into_bytes();
            chunk.extend_from_slice(&FILL[..k]);
            chunk.extend_from_slice(b"\r\n");
            w.write_all(&chunk)?;
            left -= k as u64;
        }
        return finish(rd, state, b"0\r\n\r\n", keep);
    }
    match path {
        "/upload" => finish(
            rd,
            state,
            &simple(200, "", body_len.to_string().as_bytes()),
            keep,
        ),
        "/echo" => finish(rd, state, &simple(200, "", &head), keep),
        "/close" => {
            rd.get_ref()
                .write_all(&simple(200, "Connection: close\r\n", b"ok"))?;
            Ok(Next::Close)
        }
        "/reset-mid-body" => {
            let mut w = rd.get_ref();
            w.write_all(&response_head(200, "", Some(1_000_000)))?;
            if !is_head {
                w.write_all(&FILL[..10_000])?;
            }
            // Let the peer read what was sent before the reset discards anything in flight.
            std::thread::sleep(Duration::from_millis(100));
            Ok(Next::Reset)
        }
        "/reset-before-response" => Ok(Next::Reset),
        "/ntlm" => finish(
            rd,
            state,
            &simple(401, "WWW-Authenticate: NTLM\r\n", b"a"),
            keep,
        ),
        "/negotiate" => finish(
            rd,
            state,
            &simple(401, "WWW-Authenticate: Negotiate\r\n", b"a"),
            keep,
        ),
        "/conn" => {
            let body = format!("c{}", conn.id);
            finish(rd, state, &simple(200, "", body.as_bytes()), keep)
        }
        "/drop-next" => {
            conn.drop_next = true;
            finish(rd, state, &simple(200, "", b"ok"), keep)
        }
        "/early-hints" => {
            let mut out =
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nContent-Length: 0\r\n\r\n"
                    .to_vec();
            out.extend_from_slice(&simple(200, "", b"ok"));
            finish(rd, state, &out, keep)
        }
        "/bad-response" => {
            rd.get_ref()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello")?;
            Ok(Next::Close)
        }
        "/eof-reset" => {
            let mut out = response_head(200, "Content-Type: text/plain\r\n", None);
            out.extend_from_slice(b"partial");
            rd.get_ref().write_all(&out)?;
            std::thread::sleep(Duration::from_millis(100));
            Ok(Next::Reset)
        }
        "/eof-body" => {
            let mut out = response_head(200, "Content-Type: text/plain\r\n", None);
            if !is_head {
                out.extend_from_slice(b"until-close");
            }
            rd.get_ref().write_all(&out)?;
            Ok(Next::Close)
        }
        _ => match num("/status/") {
            // 600..=999: an invalid status a proxy must not pass on (RFC 9110 section 15).
            Some(code @ 200..=999) => {
                let code = code as u16;
                if code == 204 || code == 304 {
                    finish(rd, state, &response_head(code, "", None), keep)
                } else {
                    finish(rd, state, &simple(code, "", b"s"), keep)
                }
            }
            Some(_) => finish(rd, state, &simple(400, "", b"bad status"), keep),
            None => finish(rd, state, &simple(200, "", b"ok"), keep),
        },
    }
}

/// One response read by [`Client`].
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// The status line and headers, as text (with the final empty line).
    pub head: String,
    /// How the body was delimited.
    pub framing: Framing,
    /// The body bytes received (decoded), when the client keeps bodies.
    pub body: Vec<u8>,
    /// How many body bytes were received (decoded), kept or not.
    pub body_len: u64,
    /// Whether the body ended as its framing says (for [`Framing::Close`]: a clean EOF).
    pub complete: bool,
}

impl Resp {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        header_fields(&self.head)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain `TcpStream` HTTP/1.1 client: writes requests, reads responses of any framing.
pub struct Client {
    rd: BufReader<TcpStream>,
}

impl Client {
    /// Connects (2 s timeout) with Nagle off and 10 s read and write timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(s, Duration::from_secs(10))
    }

    /// Wraps a connected stream, setting `timeout` on its reads and writes.
    pub fn from_stream(s: TcpStream, timeout: Duration) -> Client {
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        s.set_write_timeout(Some(timeout)).unwrap();
        Client {
            rd: BufReader::with_capacity(256 * 1024, s),
        }
    }

    /// Writes all of `bytes` (panics on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.rd.get_ref().write_all(bytes).expect("client send");
    }

    /// Reads one response; `head_only`: it answers a HEAD; `keep_body`: store the body (else only
    /// count it). Returns `None` if the connection ends or a read times out before a whole head.
    /// A body cut short comes back with `complete == false`.
    pub fn response(&mut self, head_only: bool, keep_body: bool) -> Option<Resp> {
        let head = read_head(&mut self.rd).ok()?;
        let text = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = text.split(' ').nth(1)?.trim().parse().ok()?;
        let fields = header_fields(&text);
        let framing = if head_only || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else {
            declared_framing(&fields).ok()?.unwrap_or(Framing::Close)
        };
        let mut body = Vec::new();
        let mut body_len = 0;
        let complete = read_body(
            &mut self.rd,
            framing,
            &mut body_len,
            keep_body.then_some(&mut body),
        )
        .is_ok();
        Some(Resp {
            status,
            head: text,
            framing,
            body,
            body_len,
            complete,
        })
    }

    /// Sends `GET path` (Host `a`) and reads the response, keeping the body (panics if none).
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        self.response(false, true)
            .unwrap_or_else(|| panic!("no response to GET {path}"))
    }

    /// Whether the peer closes (EOF or reset) within `timeout` without sending anything more.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        if !self.rd.buffer().is_empty() {
            return false;
        }
        let mut s = self.rd.get_ref();
        let _ = s.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        let r = s.read(&mut b);
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

#[test]
fn keep_alive_requests_share_one_connection() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    for i in 0..5 {
        let r = c.get("/");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok"),
            "#{i}: {}",
            r.head
        );
        assert_eq!(r.framing, Framing::Length(2));
    }
    assert_eq!(b.accepted(), 1);
    assert_eq!(b.open(), 1);
    assert_eq!(b.requests(), 5);
    assert!(
        b.last_head().starts_with("GET / HTTP/1.1\r\n"),
        "{}",
        b.last_head()
    );
    let mut c2 = Client::connect(b.addr());
    assert_eq!(c2.get("/anything?q=1").text(), "ok");
    assert_eq!(b.accepted(), 2);
    drop(c);
    drop(c2);
    assert!(
        wait_until(Duration::from_secs(1), || b.open() == 0),
        "open() did not drop to 0: {}",
        b.open()
    );
}

#[test]
fn head_pipelining_and_http10_close() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    c.send(
        b"HEAD /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let r = c.response(true, true).expect("HEAD response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("100"));
    let r = c.response(false, true).expect("pipelined response");
    assert_eq!((r.status, r.text().as_str()), (404, "s"), "{}", r.head);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response(false, true).expect("1.0 response");
    assert_eq!(r.text(), "ok");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "1.0 without keep-alive stayed open"
    );
}

#[test]
fn bytes_and_chunked_bodies() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    let n = 200_000;
    let r = c.get(&format!("/bytes/{n}"));
    assert_eq!(r.framing, Framing::Length(n));
    assert!(r.complete && r.body.len() as u64 == n && r.body.iter().all(|&x| x == FILL_BYTE));
    let r = c.get(&format!("/chunked/{n}"));
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head);
    assert!(r.complete, "chunked body incomplete");
    assert_eq!(r.body.len() as u64, n);
    assert!(r.body.iter().all(|&x| x == FILL_BYTE));
    let r = c.get("/chunked/0");
    assert!(r.complete && r.body.is_empty());
    // Still usable after the chunked answers: the framing was exact.
    assert_eq!(c.get("/").text(), "ok");
    assert_eq!(b.accepted(), 1);
}

#[test]
fn upload_counts_content_length_and_chunked_bodies() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c.response(false, true).unwrap();
    assert_eq!(r.text(), "11");
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let r = c.response(false, true).unwrap();
    assert_eq!(r.text(), "21");
    // A body on another path is consumed too (the next request parses).
    c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response(false, true).unwrap();
    assert!(
        r.text().starts_with("POST /echo HTTP/1.1\r\n"),
        "{}",
        r.text()
    );
    assert!(
        r.text().ends_with("Content-Length: 3\r\n\r\n"),
        "{}",
        r.text()
    );
    assert_eq!(c.get("/").text(), "ok");
    assert_eq!(b.body_bytes(), 11 + 21 + 3);
    assert_eq!(b.requests(), 4);
}

#[test]
fn close_idle_closes_only_idle_connections() {
    let b = TestBackend::start();
    let mut idle = Client::connect(b.addr());
    assert_eq!(idle.get("/").text(), "ok");
    let mut busy = Client::connect(b.addr());
    busy.send(b"GET /delay/400 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(2), || b.requests() == 2));
    assert_eq!(b.open(), 2);
    assert_eq!(b.close_idle(), 1);
    assert!(
        idle.closed_within(Duration::from_secs(1)),
        "idle connection not closed"
    );
    let r = busy
        .response(false, true)
        .expect("busy connection answered");
    assert_eq!(r.text(), "ok");
    assert_eq!(b.open(), 1);
    // Once answered it is idle, and close_idle takes it too.
    assert_eq!(b.close_idle(), 1);
    assert!(busy.closed_within(Duration::from_secs(1)));
    assert_eq!(b.open(), 0);
}

#[test]
fn close_eof_and_resets() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    let r = c.get("/close");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed_within(Duration::from_secs(1)));

    let mut c = Client::connect(b.addr());
    let r = c.get("/eof-body");
    assert_eq!((r.framing, r.complete), (Framing::Close, true));
    assert_eq!(r.text(), "until-close");

    let mut c = Client::connect(b.addr());
    c.send(b"GET /reset-mid-body HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response(false, false).expect("head before the reset");
    assert_eq!(r.framing, Framing::Length(1_000_000));
    assert!(!r.complete);
    assert_eq!(r.body_len, 10_000, "bytes before the reset");

    let mut c = Client::connect(b.addr());
    c.send(b"GET /reset-before-response HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(c.response(false, true).is_none());

    let mut c = Client::connect(b.addr());
    let r = c.get("/ntlm");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("NTLM"));
    assert!(wait_until(Duration::from_secs(1), || b.open() == 1));
}

#[test]
fn delay_notices_the_peer_closing() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    c.send(b"GET /delay/5000 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(wait_until(Duration::from_secs(2), || b.requests() == 1));
    let t0 = Instant::now();
    drop(c);
    assert!(
        wait_until(Duration::from_secs(1), || b.open() == 0),
        "the delayed connection stayed open after the client left"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn listener_closes_and_reopens_and_connections_know_their_number() {
    let b = TestBackend::start();
    let mut c = Client::connect(b.addr());
    assert_eq!(c.get("/conn").text(), "c0");
    b.close_listener();
    assert!(
        TcpStream::connect_timeout(&b.addr(), Duration::from_secs(1)).is_err(),
        "a closed listener accepted"
    );
    // The open connection goes on.
    assert_eq!(c.get("/conn").text(), "c0");
    b.reopen_listener();
    let mut c2 = Client::connect(b.addr());
    assert_eq!(c2.get("/conn").text(), "c1");
    // `/drop-next`: the next request is read and left unanswered.
    assert_eq!(c2.get("/drop-next").text(), "ok");
    c2.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        c2.response(false, true).is_none(),
        "answered after /drop-next"
    );
    assert_eq!(b.dropped(), 1);
    let r = c.get("/early-hints");
    assert_eq!(r.status, 103, "{}", r.head);
    assert_eq!(c.response(false, true).unwrap().text(), "ok");
}

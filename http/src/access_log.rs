//! Access logs (`[listener.access_log]`): one line per request, JSON or HAProxy-like, with the
//! timers (queue, connect, response, total) and a termination state. Lines gather in a per-shard
//! buffer per log and go to the engine's sinks once per loop turn
//! ([`coreplex_engine::ShardActions::log`]), which write them through the ring without blocking
//! the shard. A reopen (rotation) hands every shard a new descriptor ([`ReopenLogs`]).
//!
//! ```text
//! json:    {"time":"2026-12-08T01:02:03.456Z","listener":"web","client":"203.0.113.7:4000",
//!           "method":"GET","target":"/x","protocol":"HTTP/1.1","status":200,"bytes":13,
//!           "backend":"app","server":"s1","queue_ms":0,"connect_ms":1,"response_ms":2,
//!           "total_ms":3,"termination":"--"}
//! haproxy: 203.0.113.7:4000 [08/Dec/2026:01:02:03.456] web app/s1 0/1/2/3 200 13 -- "GET /x HTTP/1.1"
//! ```
//!
//! Timers are milliseconds, -1 where the request never got there (HAProxy's convention): queue
//! (`Tw`, waiting for a server slot), connect (`Tc`), response (`Tr`, from the request sent to the
//! response head), total (`Tt`, from the first byte of the request to the end of the response).
//! The termination state is HAProxy's two characters: who ended it (`-` nobody, `C` the client,
//! `S` the server, `P` the proxy, `c`/`s` a client or server timeout) and in which phase (`R`
//! request, `Q` queue, `C` connect, `H` response headers, `D` data, `-` completed). A request
//! its client abandoned before the response was complete is logged with status 0 (`CR`, `CD`).

use std::fmt::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

/// A log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// HAProxy's HTTP log line.
    Haproxy,
}

/// New descriptors for every log, by log number (sent to each shard on a reopen).
pub struct ReopenLogs(pub Vec<Arc<OwnedFd>>);

/// The request line of a request in progress.
#[derive(Debug, Clone)]
pub(crate) struct RequestLine {
    pub method: Box<str>,
    pub target: Box<str>,
    pub protocol: &'static str,
    /// The client (its PROXY header's, else its socket's peer).
    pub client: Option<SocketAddr>,
    /// The request's first byte.
    pub started: std::time::Instant,
}

/// The backend side of the response being completed (set by the proxy just before it
/// completes the client's response).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream {
    pub backend: usize,
    /// The server's index, once one was chosen.
    pub server: Option<usize>,
    /// Queue, connect and response, in ms (-1: not reached).
    pub timers: [i64; 3],
    /// Response body bytes relayed.
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<crate::proxy::stats::ProxyError>,
}

/// HAProxy's termination state of a proxied request that failed with `e`.
pub(crate) fn termination_of(e: crate::proxy::stats::ProxyError) -> [u8; 2] {
    use crate::proxy::stats::ProxyError as E;
    match e {
        E::ConnectFailed | E::NoServer => *b"SC",
        E::ConnectTimeout => *b"sC",
        E::ServerTimeout => *b"sH",
        E::QueueTimeout => *b"sQ",
        E::QueueFull => *b"PQ",
        E::BackendClosed => *b"SH",
        E::BadResponse => *b"PH",
        E::ClientAbort => *b"CH",
        E::NoSlot => *b"RC",
        #[allow(unreachable_patterns)]
        _ => *b"P-",
    }
}

/// One finished request.
pub(crate) struct Entry<'a> {
    pub listener: &'a str,
    pub client: Option<SocketAddr>,
    pub line: Option<&'a RequestLine>,
    pub status: u16,
    pub bytes: u64,
    /// `(backend, server)`; a server of `None` is HAProxy's `<NOSRV>`.
    pub backend: Option<(&'a str, Option<&'a str>)>,
    /// Queue, connect, response and total, in ms (-1: not reached).
    pub timers: [i64; 4],
    pub termination: [u8; 2],
}

/// One shard's logs.
#[derive(Default)]
pub(crate) struct AccessLogs {
    /// Lines not yet handed to the engine, by log number.
    buffers: Vec<Vec<u8>>,
    /// Descriptors to hand over, by log number.
    install: Vec<(usize, Arc<OwnedFd>)>,
}

impl AccessLogs {
    /// Logs writing to `fds` (one per log number).
    pub fn new(fds: Vec<Arc<OwnedFd>>) -> AccessLogs {
        AccessLogs {
            buffers: fds.iter().map(|_| Vec::new()).collect(),
            install: fds.into_iter().enumerate().collect(),
        }
    }

    /// New descriptors (a reopen).
    pub fn reopen(&mut self, fds: Vec<Arc<OwnedFd>>) {
        self.install = fds.into_iter().enumerate().collect();
    }

    /// Appends `e` to log `log` in `format`.
    pub fn write(&mut self, log: usize, format: LogFormat, e: &Entry<'_>) {
        let Some(out) = self.buffers.get_mut(log) else {
            return;
        };
        let mut line = String::with_capacity(256);
        match format {
            LogFormat::Json => json(&mut line, e),
            LogFormat::Haproxy => haproxy(&mut line, e),
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }

    /// Hands the lines and any new descriptors to the engine.
    pub fn flush(&mut self, actions: &mut coreplex_engine::ShardActions) {
        for (i, fd) in self.install.drain(..) {
            actions.set_sink(i, fd);
        }
        for (i, buf) in self.buffers.iter_mut().enumerate() {
            if !buf.is_empty() {
                actions.log(i, buf);
            }
        }
    }
}

fn json(o: &mut String, e: &Entry<'_>) {
    o.push_str("{\"time\":\"");
    iso_time(o, SystemTime::now());
    o.push_str("\",\"listener\":");
    json_str(o, e.listener);
    o.push_str(",\"client\":");
    match e.client {
        Some(a) => json_str(o, &a.to_string()),
        None => o.push_str("null"),
    }
    // A request whose head did not parse has no request line: null.
    for (key, value) in [
        ("method", e.line.map(|l| &*l.method)),
        ("target", e.line.map(|l| &*l.target)),
        ("protocol", e.line.map(|l| l.protocol)),
    ] {
        let _ = write!(o, ",\"{key}\":");
        match value {
            Some(v) => json_str(o, v),
            None => o.push_str("null"),
        }
    }
    let _ = write!(o, ",\"status\":{},\"bytes\":{}", e.status, e.bytes);
    o.push_str(",\"backend\":");
    match e.backend {
        Some((b, _)) => json_str(o, b),
        None => o.push_str("null"),
    }
    o.push_str(",\"server\":");
    match e.backend.and_then(|(_, s)| s) {
        Some(s) => json_str(o, s),
        None => o.push_str("null"),
    }
    let [q, c, r, t] = e.timers;
    let _ = write!(
        o,
        ",\"queue_ms\":{q},\"connect_ms\":{c},\"response_ms\":{r},\"total_ms\":{t},\"termination\":\"{}{}\"}}",
        e.termination[0] as char, e.termination[1] as char
    );
}

fn haproxy(o: &mut String, e: &Entry<'_>) {
    match e.client {
        Some(a) => {
            let _ = write!(o, "{a}");
        }
        None => o.push('-'),
    }
    o.push_str(" [");
    clf_time(o, SystemTime::now());
    let _ = write!(o, "] {} ", e.listener);
    match e.backend {
        Some((b, s)) => {
            let _ = write!(o, "{b}/{}", s.unwrap_or("<NOSRV>"));
        }
        None => o.push_str("-/-"),
    }
    let [q, c, r, t] = e.timers;
    let _ = write!(
        o,
        " {q}/{c}/{r}/{t} {} {} {}{} \"",
        e.status, e.bytes, e.termination[0] as char, e.termination[1] as char
    );
    match e.line {
        Some(l) => {
            for ch in format!("{} {} {}", l.method, l.target, l.protocol).chars() {
                match ch {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if c.is_control() => o.push('?'),
                    c => o.push(c),
                }
            }
        }
        None => o.push_str("<BADREQ>"),
    }
    o.push('"');
}

/// Appends `s` as a JSON string (quoted, escaped). Shared with the metric table's JSON export.
pub fn json_str(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
    )
}

fn iso_time(o: &mut String, t: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    let _ = write!(o, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

fn clf_time(o: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, ms) = civil(t);
    let _ = write!(
        o,
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02}.{ms:03}",
        MONTHS[(mo - 1) as usize]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_civil_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_691_723_456);
        let mut o = String::new();
        iso_time(&mut o, t);
        o.push(' ');
        clf_time(&mut o, t);
        assert_eq!(o, "2026-12-08T01:02:03.456Z 08/Dec/2026:01:02:03.456");
        let mut leap = String::new();
        iso_time(
            &mut leap,
            SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400),
        );
        assert_eq!(leap, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn both_formats_carry_every_field() {
        let line = RequestLine {
            method: "GET".into(),
            target: "/a\"b".into(),
            protocol: "HTTP/1.1",
            client: None,
            started: std::time::Instant::now(),
        };
        let e = Entry {
            listener: "web",
            client: Some("203.0.113.7:4000".parse().unwrap()),
            line: Some(&line),
            status: 200,
            bytes: 13,
            backend: Some(("app", Some("s1"))),
            timers: [0, 1, 2, 3],
            termination: *b"--",
        };
        let mut j = String::new();
        json(&mut j, &e);
        assert!(j.starts_with("{\"time\":\"20"), "{j}");
        assert!(j.ends_with(",\"listener\":\"web\",\"client\":\"203.0.113.7:4000\",\"method\":\"GET\",\"target\":\"/a\\\"b\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":13,\"backend\":\"app\",\"server\":\"s1\",\"queue_ms\":0,\"connect_ms\":1,\"response_ms\":2,\"total_ms\":3,\"termination\":\"--\"}"), "{j}");
        let mut h = String::new();
        haproxy(&mut h, &e);
        let (head, tail) = h.split_once("] ").unwrap();
        assert!(head.starts_with("203.0.113.7:4000 ["), "{h}");
        assert_eq!(
            tail,
            "web app/s1 0/1/2/3 200 13 -- \"GET /a\\\"b HTTP/1.1\""
        );
    }
}

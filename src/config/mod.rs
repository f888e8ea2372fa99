//! The configuration file: TOML, `version = 1`, unknown keys rejected, durations as strings.
//!
//! Loading has two steps. `parse` deserializes each section on its own (so one mistake does not hide
//! the others) into the `Raw*` structs, which mirror the file exactly. `validate` then checks values
//! and cross-references and builds the typed [`Config`] the server runs with. Both steps collect
//! every problem as a [`ConfigError`] with its key path (`listener[0].route[1].respond.status`).
//!
//! With no file, [`EMBEDDED_DEFAULT`] (the same text as `examples/hello.toml`) is used.

use crate::units::{Bytes, Dur};
use coreplex_protocol::h1::Limits;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The configuration used when no file is given: a hello listener and the admin endpoint.
pub const EMBEDDED_DEFAULT: &str = include_str!("../examples/hello.toml");

/// One problem in a configuration, with the path of the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `listener[0].bind`; empty for file-level errors.
    pub path: String,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

// ---- the file, as written ---------------------------------------------------------------------

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    shards: Option<usize>,
    cpus: Option<String>,
    max_connections: Option<usize>,
    ring_entries: Option<u32>,
    buffers: Option<u32>,
    buffer_size: Option<Bytes>,
    shutdown_timeout: Option<Dur>,
    linger: Option<Dur>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    http_request: Option<Dur>,
    http_keep_alive: Option<Dur>,
    client: Option<Dur>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_line: Option<Bytes>,
    max_header_bytes: Option<Bytes>,
    max_headers: Option<usize>,
    max_body: Option<Bytes>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bind: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    #[serde(default = "default_status")]
    status: u32,
    #[serde(default)]
    headers: toml::Table,
    #[serde(default)]
    body: String,
}

fn default_status() -> u32 {
    200
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    respond: RawRespond,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    bind: String,
    backlog: Option<i32>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    route: Vec<RawRoute>,
}

// ---- the validated configuration --------------------------------------------------------------

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Global {
    /// CPUs to run shards on, one shard each.
    pub cpus: Vec<usize>,
    /// Connections per shard (sizes the slab); `None`: derived from the open-files limit at start,
    /// as HAProxy derives its maxconn.
    pub max_connections: Option<usize>,
    /// io_uring submission queue entries per shard.
    pub ring_entries: u32,
    /// Provided buffers per shard.
    pub buffers: u16,
    /// Bytes per provided buffer.
    pub buffer_size: u32,
    /// Deadline of a graceful stop.
    pub shutdown_timeout: Duration,
    /// How long a closing connection drains input after its last response.
    pub linger: Duration,
}

/// The timeouts of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request head must arrive within this (408 otherwise).
    pub http_request: Duration,
    /// Wait for the next request after a response (silent close).
    pub http_keep_alive: Duration,
    /// Client inactivity while it is expected to send a body or read a response.
    pub client: Duration,
}

/// A direct response, as configured.
#[derive(Debug, Clone)]
pub struct Respond {
    /// Status code (200..=599).
    pub status: u16,
    /// Extra headers, in file order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
}

/// A route of a listener.
#[derive(Debug, Clone)]
pub struct Route {
    /// Host to match (lowercase, without port); any host when `None`.
    pub host: Option<String>,
    /// Path to match.
    pub path: PathMatch,
    /// What to answer.
    pub respond: Respond,
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name (for logs and metrics).
    pub name: String,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// listen(2) backlog.
    pub backlog: i32,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Request limits.
    pub limits: Limits,
    /// Routes, first match wins; no match answers 404.
    pub routes: Vec<Route>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub global: Global,
    /// Admin endpoint address, if enabled.
    pub admin: Option<SocketAddr>,
    /// Listeners.
    pub listeners: Vec<Listener>,
}

/// Built-in timeouts, used where neither `[defaults]` nor the listener sets one.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    http_request: Duration::from_secs(10),
    http_keep_alive: Duration::from_secs(75),
    client: Duration::from_secs(60),
};

/// Parses and validates a configuration text. Returns every problem found.
pub fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![err("", format!("invalid TOML: {}", e.to_string().trim()))]
    })?;
    let mut errors = Vec::new();
    let mut global = RawGlobal::default();
    let mut defaults = RawDefaults::default();
    let mut admin = None;
    let mut listeners = Vec::new();
    let mut version_seen = false;
    for (key, value) in table {
        match key.as_str() {
            "version" => {
                version_seen = true;
                if value.as_integer() != Some(1) {
                    errors.push(err(
                        "version",
                        format!("unsupported version {value}: this coreplex reads version = 1"),
                    ));
                }
            }
            "global" => {
                if let Some(v) = section(&key, value, &mut errors) {
                    global = v;
                }
            }
            "defaults" => {
                if let Some(v) = section(&key, value, &mut errors) {
                    defaults = v;
                }
            }
            "admin" => admin = section::<RawAdmin>(&key, value, &mut errors),
            "listener" => match value {
                toml::Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        listeners.push(section::<RawListener>(
                            &format!("listener[{i}]"),
                            item,
                            &mut errors,
                        ));
                    }
                }
                _ => errors.push(err(
                    "listener",
                    "expected an array of tables: write [[listener]]",
                )),
            },
            other => errors.push(err(
                other,
                "unknown key; expected one of: version, global, defaults, admin, listener",
            )),
        }
    }
    if !version_seen {
        errors.push(err(
            "version",
            "missing: the file must start with `version = 1`",
        ));
    }
    let config = validate(global, defaults, admin, listeners, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn section<T: for<'de> Deserialize<'de>>(
    path: &str,
    value: toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            // toml appends "in `key`" context lines; the path already says where.
            let msg = e.into_inner().to_string();
            let msg = msg.lines().next().unwrap_or_default().trim().to_string();
            errors.push(err(full, msg));
            None
        }
    }
}

fn validate(
    g: RawGlobal,
    defaults: RawDefaults,
    admin: Option<RawAdmin>,
    listeners: Vec<Option<RawListener>>,
    errors: &mut Vec<ConfigError>,
) -> Config {
    let global = validate_global(&g, errors);
    let base_timeouts = merge_timeouts(&DEFAULT_TIMEOUTS, &defaults.timeouts);
    let base_limits = merge_limits(
        &Limits::default(),
        &defaults.limits,
        "defaults.limits",
        errors,
    );
    let admin = admin.and_then(|a| match a.bind.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(err(
                "admin.bind",
                format!(
                    "invalid address {:?}: expected ip:port such as \"127.0.0.1:9090\"",
                    a.bind
                ),
            ));
            None
        }
    });
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    if let Some(a) = admin.filter(|a| a.port() != 0) {
        binds.insert(a);
    }
    for (i, raw) in listeners.into_iter().enumerate() {
        let Some(raw) = raw else { continue };
        let p = format!("listener[{i}]");
        let name = raw.name.clone().unwrap_or_else(|| format!("listener{i}"));
        if !names.insert(name.clone()) {
            errors.push(err(
                format!("{p}.name"),
                format!("duplicate listener name {name:?}"),
            ));
        }
        let bind = match raw.bind.parse::<SocketAddr>() {
            Ok(a) => {
                // Port 0 means "any free port": it never collides.
                if a.port() != 0 && !binds.insert(a) {
                    errors.push(err(
                        format!("{p}.bind"),
                        format!("{a} is already used by another listener or the admin endpoint"),
                    ));
                }
                a
            }
            Err(_) => {
                errors.push(err(
                    format!("{p}.bind"),
                    format!(
                        "invalid address {:?}: expected ip:port such as \"127.0.0.1:8080\"",
                        raw.bind
                    ),
                ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let backlog = raw.backlog.unwrap_or(4096);
        if !(1..=1 << 20).contains(&backlog) {
            errors.push(err(format!("{p}.backlog"), "must be between 1 and 1048576"));
        }
        let timeouts = merge_timeouts(&base_timeouts, &raw.timeouts);
        let limits = merge_limits(&base_limits, &raw.limits, &format!("{p}.limits"), errors);
        let mut routes = Vec::new();
        for (j, r) in raw.route.into_iter().enumerate() {
            if let Some(route) = validate_route(r, &format!("{p}.route[{j}]"), &limits, errors) {
                routes.push(route);
            }
        }
        out.push(Listener {
            name,
            bind,
            backlog,
            timeouts,
            limits,
            routes,
        });
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(err("listener", "at least one [[listener]] is required"));
    }
    if out.len() > 200 {
        errors.push(err("listener", "at most 200 listeners are supported"));
    }
    Config {
        global,
        admin,
        listeners: out,
    }
}

fn validate_global(g: &RawGlobal, errors: &mut Vec<ConfigError>) -> Global {
    let mut cpus = match &g.cpus {
        Some(list) => match coreplex_engine::cpus::parse_cpu_list(list) {
            Ok(c) => c,
            Err(e) => {
                errors.push(err("global.cpus", e.to_string()));
                vec![0]
            }
        },
        None => coreplex_engine::cpus::allowed_cpus(),
    };
    if let Some(n) = g.shards {
        if n == 0 {
            // 0 means one shard per CPU.
        } else if n > cpus.len() {
            errors.push(err("global.shards", format!("{n} shards need {n} cpus, but only {} are available (global.cpus or the process affinity)", cpus.len())));
        } else {
            cpus.truncate(n);
        }
    }
    let max_connections = g.max_connections;
    if max_connections.is_some_and(|m| !(1..=16_000_000).contains(&m)) {
        errors.push(err(
            "global.max_connections",
            "must be between 1 and 16000000 (per shard)",
        ));
    }
    let ring_entries = g.ring_entries.unwrap_or(4096);
    if !ring_entries.is_power_of_two() || !(64..=32768).contains(&ring_entries) {
        errors.push(err(
            "global.ring_entries",
            "must be a power of two between 64 and 32768",
        ));
    }
    let buffers = g.buffers.unwrap_or(1024);
    if !buffers.is_power_of_two() || !(16..=32768).contains(&buffers) {
        errors.push(err(
            "global.buffers",
            "must be a power of two between 16 and 32768",
        ));
    }
    let buffer_size = g.buffer_size.map_or(4096, |b| b.0);
    if !(512..=1 << 20).contains(&buffer_size) {
        errors.push(err(
            "global.buffer_size",
            "must be between 512 bytes and 1MiB",
        ));
    }
    Global {
        cpus,
        max_connections,
        ring_entries,
        buffers: buffers.min(32768) as u16,
        buffer_size: buffer_size.min(1 << 20) as u32,
        shutdown_timeout: g.shutdown_timeout.map_or(Duration::from_secs(10), |d| d.0),
        linger: g.linger.map_or(Duration::from_secs(2), |d| d.0),
    }
}

fn merge_timeouts(base: &Timeouts, raw: &RawTimeouts) -> Timeouts {
    Timeouts {
        http_request: raw.http_request.map_or(base.http_request, |d| d.0),
        http_keep_alive: raw.http_keep_alive.map_or(base.http_keep_alive, |d| d.0),
        client: raw.client.map_or(base.client, |d| d.0),
    }
}

fn merge_limits(base: &Limits, raw: &RawLimits, p: &str, errors: &mut Vec<ConfigError>) -> Limits {
    let mut l = Limits {
        max_request_line: raw
            .max_request_line
            .map_or(base.max_request_line, |b| b.0 as usize),
        max_header_bytes: raw
            .max_header_bytes
            .map_or(base.max_header_bytes, |b| b.0 as usize),
        max_headers: raw.max_headers.unwrap_or(base.max_headers),
        max_body: raw.max_body.map_or(base.max_body, |b| b.0),
    };
    if !(64..=1 << 20).contains(&l.max_request_line) {
        errors.push(err(
            format!("{p}.max_request_line"),
            "must be between 64 bytes and 1MiB",
        ));
        l.max_request_line = base.max_request_line;
    }
    if !(256..=1 << 20).contains(&l.max_header_bytes) {
        errors.push(err(
            format!("{p}.max_header_bytes"),
            "must be between 256 bytes and 1MiB",
        ));
        l.max_header_bytes = base.max_header_bytes;
    }
    if !(1..=1000).contains(&l.max_headers) {
        errors.push(err(
            format!("{p}.max_headers"),
            "must be between 1 and 1000",
        ));
        l.max_headers = base.max_headers;
    }
    l
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_route(
    r: RawRoute,
    p: &str,
    _limits: &Limits,
    errors: &mut Vec<ConfigError>,
) -> Option<Route> {
    let before = errors.len();
    let path = match (r.path, r.path_prefix) {
        (Some(x), None) => PathMatch::Exact(x),
        (None, Some(x)) => PathMatch::Prefix(x),
        (Some(_), Some(_)) => {
            errors.push(err(p, "set either `path` or `path_prefix`, not both"));
            PathMatch::Prefix("/".into())
        }
        (None, None) => PathMatch::Prefix("/".into()),
    };
    let (PathMatch::Exact(s) | PathMatch::Prefix(s)) = &path;
    if !s.starts_with('/') {
        errors.push(err(
            format!("{p}.path"),
            format!("{s:?} must start with '/'"),
        ));
    }
    let host = r.host.map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/') {
            errors.push(err(format!("{p}.host"), format!("invalid host {h:?}")));
        }
    }
    let status = r.respond.status;
    if !(200..=599).contains(&status) {
        errors.push(err(
            format!("{p}.respond.status"),
            format!("{status} is not a final status code (200-599)"),
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in r.respond.headers {
        let hp = format!("{p}.respond.headers.{name}");
        let Some(v) = value.as_str() else {
            errors.push(err(hp, "header values must be strings"));
            continue;
        };
        if !is_token(&name) {
            errors.push(err(hp, format!("invalid header name {name:?}")));
            continue;
        }
        let lname = name.to_ascii_lowercase();
        if matches!(
            lname.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date"
        ) {
            errors.push(err(
                hp,
                format!("{name} is set by coreplex and cannot be configured"),
            ));
            continue;
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            errors.push(err(hp, "header values cannot contain CR, LF or NUL"));
            continue;
        }
        headers.push((name, v.to_string()));
    }
    if r.respond.body.len() > 1 << 20 {
        errors.push(err(
            format!("{p}.respond.body"),
            "direct response bodies are limited to 1MiB",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(Route {
        host,
        path,
        respond: Respond {
            status: status as u16,
            headers,
            body: r.respond.body.into_bytes(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = load(EMBEDDED_DEFAULT).expect("embedded default must load");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(c.listeners[0].routes[0].respond.body, b"Hello, World!");
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let text = r#"
version = 2
bogus = 1
[global]
max_connections = 0
ring_entries = 100
[defaults.timeouts]
client = "5 parsecs"
[[listener]]
bind = "nope"
[[listener.route]]
path = "x"
respond = { status = 42, headers = { "Bad Name" = "v" } }
[[listener]]
bind = "127.0.0.1:1"
colour = "red"
"#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "version",
            "bogus",
            "defaults.timeouts.client",
            "listener[0].bind",
            "listener[0].route[0].path",
            "listener[0].route[0].respond.status",
            "listener[0].route[0].respond.headers.Bad Name",
            "listener[1].colour",
        ] {
            assert!(paths.contains(&want), "missing {want} in {errs:#?}");
        }
        // `global` fails as a section only if a key is of the wrong type; here values are checked.
        let joined = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            joined.contains("global.max_connections") || joined.contains("defaults"),
            "{joined}"
        );
    }

    #[test]
    fn global_value_errors_are_all_reported() {
        let text = "version = 1\n[global]\nmax_connections = 0\nring_entries = 100\nbuffers = 3\n[[listener]]\nbind = \"127.0.0.1:1\"\n";
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "global.max_connections",
                "global.ring_entries",
                "global.buffers"
            ]
        );
    }

    #[test]
    fn listener_overrides_defaults() {
        let text = r#"
version = 1
[defaults.timeouts]
http_keep_alive = "5s"
[[listener]]
bind = "127.0.0.1:1"
timeouts = { client = "250ms" }
limits = { max_body = "2MiB" }
"#;
        let c = load(text).unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.timeouts.http_keep_alive, Duration::from_secs(5));
        assert_eq!(l.timeouts.client, Duration::from_millis(250));
        assert_eq!(l.timeouts.http_request, DEFAULT_TIMEOUTS.http_request);
        assert_eq!(l.limits.max_body, 2 << 20);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let errs = load("version = 1\n[[listener]\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("invalid TOML"));
    }
}

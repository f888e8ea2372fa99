//! The configuration file: TOML, `version = 1`, unknown keys rejected, durations as strings.
//!
//! Loading has two steps. `parse` deserializes each section on its own (so one mistake does not hide
//! the others) into the `Raw*` structs, which mirror the file exactly. `validate` then checks values
//! and cross-references and builds the typed [`Config`] the server runs with. Both steps collect
//! every problem as a [`ConfigError`] with its key path (`listener[0].route[1].respond.status`).
//!
//! With no file, [`EMBEDDED_DEFAULT`] (the same text as `examples/hello.toml`) is used.

mod backend;
mod http2;
mod proxy_protocol;
mod timeouts;
mod tls;
mod websocket;

pub use http2::Http2;
pub use websocket::WebSocket;

pub use backend::{Backend, BackendProtocol, ClientClose, TcpKeepalive};
pub use coreplex_http::runtime::{Listener, PathMatch, Respond, Route, RouteAction};
pub use timeouts::Timeouts;
#[cfg(test)]
use timeouts::DEFAULT_TIMEOUTS;
pub use tls::ListenerTls;

use crate::units::{Bytes, Dur};
use backend::{RawBackend, RawKeepalive};
use coreplex_protocol::h1::Limits;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use timeouts::RawTimeouts;

/// The configuration used when no file is given: a hello listener and the admin endpoint.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/hello.toml");

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
    #[serde(alias = "hard_stop_after")]
    shutdown_timeout: Option<Dur>,
    close_spread_time: Option<Dur>,
    linger: Option<Dur>,
    control_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    tls: Option<tls::RawGlobalTls>,
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
    respond: Option<RawRespond>,
    backend: Option<String>,
    /// `"echo"`: a WebSocket endpoint that echoes every message.
    websocket: Option<String>,
    /// The `Upgrade` protocols a backend route tunnels (default `["websocket"]`).
    upgrade: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    bind: String,
    backlog: Option<i32>,
    rate_limit: Option<u32>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    tcp_keepalive: Option<RawKeepalive>,
    tls: Option<tls::RawListenerTls>,
    http2: Option<http2::RawHttp2>,
    websocket: Option<websocket::RawWebSocket>,
    proxy_protocol: Option<proxy_protocol::RawProxyProtocol>,
    access_log: Option<RawAccessLog>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: String,
    format: Option<String>,
}

/// Where an access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
    /// A file, opened for appending (created with mode 0640).
    File(PathBuf),
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
    /// Deadline of a graceful stop, and of an old process's drain after a binary upgrade
    /// (HAProxy's `hard-stop-after`, accepted as `hard_stop_after`).
    pub shutdown_timeout: Duration,
    /// A stop closes idle keep-alive connections over this window rather than all at once, so
    /// their clients do not reconnect in one burst (HAProxy's `close-spread-time`; 0: at once).
    pub close_spread_time: Duration,
    /// The Unix socket `coreplex upgrade` and `coreplex status` talk to (mode 0600).
    pub control_socket: Option<PathBuf>,
    /// A file the running process writes its pid to (a successor rewrites it).
    pub pid_file: Option<PathBuf>,
    /// How long a closing connection drains input after its last response.
    pub linger: Duration,
    /// TLS session tickets (every TLS listener).
    pub tickets: coreplex_tls::settings::TicketSettings,
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
    /// Backends, sorted by name.
    pub backends: Vec<Backend>,
    /// The access logs, numbered as the listeners' `access_log` name them (one per
    /// destination, shared by the listeners that name it).
    pub access_logs: Vec<LogDestination>,
    /// Problems that do not stop it (a certificate about to expire), with their key paths.
    pub warnings: Vec<ConfigError>,
}

/// Parses and validates a configuration text (file paths in it are relative to the working
/// directory). Returns every problem found.
pub fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    load_in(text, None)
}

/// Like [`load`], with relative file paths (certificates, keys) taken from directory `base`
/// (the configuration file's).
pub fn load_in(text: &str, base: Option<&std::path::Path>) -> Result<Config, Vec<ConfigError>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![err("", format!("invalid TOML: {}", e.to_string().trim()))]
    })?;
    let mut errors = Vec::new();
    let mut global = RawGlobal::default();
    let mut defaults = RawDefaults::default();
    let mut admin = None;
    let mut listeners = Vec::new();
    let mut backends = Vec::new();
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
            "backend" => match value {
                toml::Value::Table(items) => {
                    for (name, item) in items {
                        let raw =
                            section::<RawBackend>(&format!("backend.{name}"), item, &mut errors);
                        backends.push((name, raw));
                    }
                }
                _ => errors.push(err(
                    "backend",
                    "expected tables: write [backend.NAME] with servers = [...]",
                )),
            },
            other => errors.push(err(
                other,
                "unknown key; expected one of: version, global, defaults, admin, listener, backend",
            )),
        }
    }
    if !version_seen {
        errors.push(err(
            "version",
            "missing: the file must start with `version = 1`",
        ));
    }
    if let Some(base) = base {
        for p in [&mut global.control_socket, &mut global.pid_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = &mut global.tls {
            t.rebase(base);
        }
        for l in listeners.iter_mut().flatten() {
            if let Some(t) = &mut l.tls {
                t.rebase(base);
            }
            if let Some(a) = &mut l.access_log {
                let relative = std::path::Path::new(&a.path).is_relative();
                if relative && !["stdout", "stderr", ""].contains(&a.path.as_str()) {
                    a.path = base.join(&a.path).to_string_lossy().into_owned();
                }
            }
        }
        for (_, b) in backends.iter_mut() {
            if let Some(b) = b {
                b.rebase(base);
            }
        }
    }
    let mut warnings = Vec::new();
    let mut config = validate(
        global,
        defaults,
        admin,
        listeners,
        backends,
        &mut errors,
        &mut warnings,
    );
    config.warnings = warnings;
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
    raw_backends: Vec<(String, Option<RawBackend>)>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Config {
    let global = validate_global(&g, errors);
    let mut backends: BTreeMap<String, Option<Backend>> = BTreeMap::new();
    for (name, raw) in raw_backends {
        let b = raw.map(|r| backend::validate(&name, r, &defaults.timeouts, errors, warnings));
        backends.insert(name, b);
    }
    let backend_index = |name: &str| backends.keys().position(|k| k == name);
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
    let mut access_logs: Vec<LogDestination> = Vec::new();
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
        if raw.rate_limit == Some(0) {
            errors.push(err(
                format!("{p}.rate_limit"),
                "must be at least 1 new connection per second (leave it out for no limit)",
            ));
        }
        let backlog = raw.backlog.unwrap_or(4096);
        if !(1..=1 << 20).contains(&backlog) {
            errors.push(err(format!("{p}.backlog"), "must be between 1 and 1048576"));
        }
        let timeouts = defaults.timeouts.overlay(&raw.timeouts).resolve();
        let limits = merge_limits(&base_limits, &raw.limits, &format!("{p}.limits"), errors);
        let tcp_keepalive = raw
            .tcp_keepalive
            .map(|k| k.validate(&format!("{p}.tcp_keepalive"), errors));
        let tls = raw.tls.as_ref().map(|t| {
            tls::validate_listener(t, &format!("{p}.tls"), timeouts.client_hs, errors, warnings)
        });
        let http2 = http2::validate(
            raw.http2.as_ref(),
            limits.max_header_bytes,
            &format!("{p}.http2"),
            errors,
        );
        let websocket =
            websocket::validate(raw.websocket.as_ref(), &format!("{p}.websocket"), errors);
        let proxy_protocol = proxy_protocol::validate(
            raw.proxy_protocol.as_ref(),
            timeouts.http_request,
            &format!("{p}.proxy_protocol"),
            errors,
        );
        let access_log = raw.access_log.as_ref().map(|a| {
            let format = match a.format.as_deref() {
                None | Some("json") => coreplex_http::LogFormat::Json,
                Some("haproxy") => coreplex_http::LogFormat::Haproxy,
                Some(other) => {
                    errors.push(err(
                        format!("{p}.access_log.format"),
                        format!("unknown format {other:?}: expected \"json\" or \"haproxy\""),
                    ));
                    coreplex_http::LogFormat::Json
                }
            };
            let dest = match a.path.as_str() {
                "stdout" => LogDestination::Stdout,
                "stderr" => LogDestination::Stderr,
                "" => {
                    errors.push(err(
                        format!("{p}.access_log.path"),
                        "is empty: a file, \"stdout\" or \"stderr\"",
                    ));
                    LogDestination::Stderr
                }
                path => LogDestination::File(PathBuf::from(path)),
            };
            let n = match access_logs.iter().position(|d| *d == dest) {
                Some(n) => n,
                None => {
                    access_logs.push(dest);
                    access_logs.len() - 1
                }
            };
            (n, format)
        });
        let mut routes = Vec::new();
        for (j, r) in raw.route.into_iter().enumerate() {
            let rp = format!("{p}.route[{j}]");
            if let Some(route) = validate_route(r, &rp, &backend_index, errors) {
                routes.push(route);
            }
        }
        out.push(Listener {
            name,
            bind,
            backlog,
            rate_limit: raw.rate_limit,
            timeouts,
            limits,
            tcp_keepalive,
            routes,
            tls,
            http2,
            websocket,
            proxy_protocol,
            access_log,
        });
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(err("listener", "at least one [[listener]] is required"));
    }
    if out.len() > 200 {
        errors.push(err("listener", "at most 200 listeners are supported"));
    }
    if backends.len() > 255 {
        errors.push(err("backend", "at most 255 backends are supported"));
    }
    Config {
        global,
        admin,
        listeners: out,
        backends: backends.into_values().flatten().collect(),
        access_logs,
        warnings: Vec::new(),
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
    let shutdown_timeout = g.shutdown_timeout.map_or(Duration::from_secs(10), |d| d.0);
    let close_spread_time = g.close_spread_time.map_or(Duration::ZERO, |d| d.0);
    if close_spread_time > shutdown_timeout {
        errors.push(err(
            "global.close_spread_time",
            format!("{close_spread_time:?} is longer than global.shutdown_timeout ({shutdown_timeout:?}): idle connections would still be open when the stop's deadline closes them"),
        ));
    }
    Global {
        cpus,
        max_connections,
        ring_entries,
        buffers: buffers.min(32768) as u16,
        buffer_size: buffer_size.min(1 << 20) as u32,
        shutdown_timeout,
        close_spread_time,
        control_socket: g.control_socket.clone(),
        pid_file: g.pid_file.clone(),
        linger: g.linger.map_or(Duration::from_secs(2), |d| d.0),
        tickets: tls::validate_global(&g.tls.clone().unwrap_or_default(), errors),
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
    backend_index: &dyn Fn(&str) -> Option<usize>,
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
    let upgrade = validate_upgrade(r.upgrade.as_deref(), r.backend.is_some(), p, errors);
    if let Some(kind) = r.websocket {
        let action = match (kind.as_str(), &r.respond, &r.backend) {
            ("echo", None, None) => RouteAction::WebSocketEcho,
            ("echo", _, _) => {
                errors.push(err(
                    p,
                    "websocket = \"echo\" answers by itself: leave out `respond` and `backend`",
                ));
                return None;
            }
            ("terminate", None, Some(name)) => match backend_index(name) {
                Some(i) => RouteAction::WebSocketProxy(i),
                None => {
                    errors.push(err(
                        format!("{p}.backend"),
                        format!("unknown backend {name:?}: define it as [backend.{name}]"),
                    ));
                    return None;
                }
            },
            ("terminate", _, _) => {
                errors.push(err(
                    p,
                    "websocket = \"terminate\" needs `backend = \"NAME\"` (and no `respond`)",
                ));
                return None;
            }
            _ => {
                errors.push(err(
                    format!("{p}.websocket"),
                    format!(
                        "unknown WebSocket kind {kind:?}: \"echo\" (an endpoint) or \"terminate\" \
                         (the framing ends here, messages go on to the backend)"
                    ),
                ));
                return None;
            }
        };
        if r.upgrade.is_some() {
            errors.push(err(
                format!("{p}.upgrade"),
                "`upgrade` applies to plain backend routes: a websocket route handles its upgrade",
            ));
        }
        return (errors.len() == before).then_some(Route {
            host,
            path,
            action,
            upgrade: Vec::new(),
        });
    }
    let respond = match (r.respond, r.backend) {
        (Some(_), Some(_)) => {
            errors.push(err(p, "set either `respond` or `backend`, not both"));
            return None;
        }
        (None, None) => {
            errors.push(err(
                p,
                "a route needs `respond = {...}`, `backend = \"NAME\"` or `websocket = \"echo\"`",
            ));
            return None;
        }
        (None, Some(name)) => {
            return match backend_index(&name) {
                Some(i) if errors.len() == before => Some(Route {
                    host,
                    path,
                    action: RouteAction::Backend(i),
                    upgrade,
                }),
                Some(_) => None,
                None => {
                    errors.push(err(
                        format!("{p}.backend"),
                        format!("unknown backend {name:?}: define it as [backend.{name}]"),
                    ));
                    None
                }
            };
        }
        (Some(r), None) => r,
    };
    let status = respond.status;
    if !(200..=599).contains(&status) {
        errors.push(err(
            format!("{p}.respond.status"),
            format!("{status} is not a final status code (200-599)"),
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in respond.headers {
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
    if respond.body.len() > 1 << 20 {
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
        action: RouteAction::Respond(Respond {
            status: status as u16,
            headers,
            body: respond.body.into_bytes(),
        }),
        upgrade,
    })
}

/// The `Upgrade` protocols a route tunnels to its backend (lowercase): `upgrade` when given
/// (only on backend routes), else `websocket` for backend routes and none for the others.
fn validate_upgrade(
    upgrade: Option<&[String]>,
    backend: bool,
    p: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let Some(list) = upgrade else {
        return if backend {
            vec!["websocket".to_string()]
        } else {
            Vec::new()
        };
    };
    if !backend {
        errors.push(err(
            format!("{p}.upgrade"),
            "`upgrade` applies to routes with `backend`: only they tunnel",
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        if !is_token(t) {
            errors.push(err(
                format!("{p}.upgrade[{i}]"),
                format!("{t:?} is not a protocol name (an HTTP token)"),
            ));
        } else if t.eq_ignore_ascii_case("h2c") || t.eq_ignore_ascii_case("h2") {
            errors.push(err(
                format!("{p}.upgrade[{i}]"),
                "h2c cannot be tunnelled: coreplex speaks HTTP/2 to clients itself (http2.h2c)",
            ));
        } else {
            out.push(t.to_ascii_lowercase());
        }
    }
    out
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
        let RouteAction::Respond(r) = &c.listeners[0].routes[0].action else {
            panic!("the hello route answers directly");
        };
        assert_eq!(r.body, b"Hello, World!");
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
        // Value errors in `global` are reported beside the syntax and type errors elsewhere.
        for want in ["global.max_connections", "global.ring_entries"] {
            assert!(paths.contains(&want), "missing {want} in {errs:#?}");
        }
    }

    #[test]
    fn proxy_protocol_send_proxy_and_upgrade_keys_are_checked_with_their_paths() {
        let text = r#"version = 1
[global]
shutdown_timeout = "2s"
close_spread_time = "5s"
[[listener]]
bind = "127.0.0.1:1"
proxy_protocol = { trusted = ["10.0.0.0/33", "nope"], timeout = "0s" }
[[listener.route]]
backend = "a"
[[listener]]
name = "empty"
bind = "127.0.0.1:2"
proxy_protocol = { trusted = [] }
access_log = { path = "", format = "xml" }
[backend.a]
servers = [{ address = "127.0.0.1:9" }]
send_proxy = "v3"
[backend.b]
servers = [{ address = "127.0.0.1:9" }]
send_proxy = "v2"
reuse = "always"
protocol = "h2"
"#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "global.close_spread_time",
            "listener[0].proxy_protocol.trusted[0]",
            "listener[0].proxy_protocol.trusted[1]",
            "listener[0].proxy_protocol.timeout",
            "listener[1].proxy_protocol.trusted",
            "listener[1].access_log.path",
            "listener[1].access_log.format",
            "backend.a.send_proxy",
            "backend.b.reuse",
            "backend.b.send_proxy",
        ] {
            assert!(paths.contains(&want), "missing {want} in {errs:#?}");
        }
        let ok = load(
            r#"version = 1
[global]
hard_stop_after = "30s"
close_spread_time = "5s"
control_socket = "/run/coreplex/control.sock"
[[listener]]
bind = "127.0.0.1:1"
proxy_protocol = { trusted = ["10.1.2.3/8", "::1", "192.168.0.7"] }
[[listener.route]]
backend = "a"
[backend.a]
servers = [{ address = "127.0.0.1:9" }]
send_proxy = "v1"
"#,
        )
        .expect("valid");
        assert_eq!(ok.global.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(ok.global.close_spread_time, Duration::from_secs(5));
        let pp = ok.listeners[0].proxy_protocol.as_ref().unwrap();
        assert!(pp.trusts("10.200.0.1".parse().unwrap()));
        assert!(pp.trusts("::ffff:192.168.0.7".parse().unwrap()));
        assert!(pp.trusts("::1".parse().unwrap()));
        assert!(!pp.trusts("192.168.0.8".parse().unwrap()));
        assert_eq!(
            pp.timeout,
            Duration::from_secs(10),
            "the http_request timeout"
        );
        assert_eq!(ok.backends[0].policy.reuse, coreplex_pool::ReuseMode::Never);
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
    fn backends_and_routes_to_them() {
        let text = r#"
version = 1
[defaults.timeouts]
connect = "2s"
server = "30s"
[[listener]]
bind = "127.0.0.1:1"
tcp_keepalive = { idle = "30s" }
[[listener.route]]
path_prefix = "/api"
backend = "api"
[[listener.route]]
respond = { body = "x" }
[backend.api]
servers = [{ address = "127.0.0.1:9001", maxconn = 10 }, { address = "127.0.0.1:9002", weight = 3 }]
balance = "leastconn"
reuse = "always"
maxconn = 100
queue_length = 50
timeouts = { server = "5s" }
pool = { max_idle_per_server = 8, idle_timeout = "10s", max_reuse = 1000 }
"#;
        let c = load(text).unwrap();
        let b = &c.backends[0];
        assert_eq!(b.name, "api");
        assert_eq!(b.servers[1].name, "127.0.0.1:9002");
        assert_eq!(b.policy.reuse, coreplex_pool::ReuseMode::Always);
        assert_eq!(b.policy.balance, coreplex_pool::Balance::LeastConn);
        assert_eq!(b.policy.servers[0].maxconn, Some(10));
        assert_eq!(b.policy.servers[1].weight, 3);
        assert_eq!(b.policy.maxconn, Some(100));
        assert_eq!(b.policy.queue_cap, Some(50));
        assert_eq!(b.policy.max_idle_per_server, Some(8));
        assert_eq!(b.timeouts.connect, Duration::from_secs(2));
        assert_eq!(b.timeouts.server, Duration::from_secs(5));
        assert_eq!(
            b.timeouts.queue,
            Duration::from_secs(2),
            "queue falls back to connect"
        );
        assert_eq!(b.policy.queue_timeout, Duration::from_secs(2));
        assert!(matches!(
            c.listeners[0].routes[0].action,
            RouteAction::Backend(0)
        ));
        assert_eq!(
            c.listeners[0].tcp_keepalive.unwrap().idle,
            Duration::from_secs(30)
        );
        let shard = b.policy_for_shard(1, 4);
        assert_eq!(shard.maxconn, Some(25));
        assert_eq!(shard.servers[0].maxconn, Some(3));
    }

    #[test]
    fn every_backend_limit_is_split_per_shard_with_a_floor_of_one() {
        let text = r#"
version = 1
[[listener]]
bind = "127.0.0.1:1"
[[listener.route]]
backend = "app"
[backend.app]
servers = [{ address = "127.0.0.1:9001", maxconn = 3, maxqueue = 1, conn_rate = 1 }]
maxconn = 5
queue_length = 1
pool = { max_idle_per_server = 0 }
"#;
        let c = load(text).expect("valid");
        let b = &c.backends[0];
        let parts: Vec<_> = (0..2).map(|i| b.policy_for_shard(i, 2)).collect();
        let s = |i: usize| &parts[i].servers[0];
        assert_eq!((s(0).maxconn, s(1).maxconn), (Some(2), Some(1)));
        assert_eq!((s(0).maxqueue, s(1).maxqueue), (Some(1), Some(1)));
        assert_eq!((s(0).conn_rate, s(1).conn_rate), (Some(1), Some(1)));
        assert_eq!((parts[0].maxconn, parts[1].maxconn), (Some(3), Some(2)));
        assert_eq!((parts[0].queue_cap, parts[1].queue_cap), (Some(1), Some(1)));
        // 0 (keep no idle connection) stays 0 on every shard.
        assert_eq!(
            (parts[0].max_idle_per_server, parts[1].max_idle_per_server),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn backend_errors_carry_their_key_paths() {
        let text = r#"
version = 1
[[listener]]
bind = "127.0.0.1:1"
[[listener.route]]
backend = "nope"
[[listener.route]]
backend = "app"
respond = { body = "x" }
[backend.app]
servers = [{ address = "localhost" }, { address = "127.0.0.1:2", maxconn = 0 }]
reuse = "sometimes"
balance = "random"
client_close = "maybe"
tcp_keepalive = { count = 0 }
[backend.empty]
colour = 1
[backend.none]
servers = []
"#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "listener[0].route[0].backend",
            "listener[0].route[1]",
            "backend.app.servers[0].address",
            "backend.app.servers[1].maxconn",
            "backend.app.reuse",
            "backend.app.balance",
            "backend.app.client_close",
            "backend.app.tcp_keepalive.count",
            "backend.empty.colour",
            "backend.none.servers",
        ] {
            assert!(paths.contains(&want), "missing {want} in {errs:#?}");
        }
    }

    #[test]
    fn upgrade_protocols_are_checked_with_their_key_paths() {
        let text = r#"
version = 1
[[listener]]
bind = "127.0.0.1:1"
[[listener.route]]
path = "/a"
backend = "app"
upgrade = ["WebSocket", "x-echo"]
[[listener.route]]
path = "/b"
backend = "app"
upgrade = ["bad token", "h2c"]
[[listener.route]]
path = "/c"
respond = { body = "x" }
upgrade = ["websocket"]
[[listener.route]]
backend = "app"
[backend.app]
servers = [{ address = "127.0.0.1:2" }]
"#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listener[0].route[1].upgrade[0]",
                "listener[0].route[1].upgrade[1]",
                "listener[0].route[2].upgrade"
            ],
            "{errs:#?}"
        );
        let ok = load(&text.replace("\"bad token\", \"h2c\"", "").replace(
            "respond = { body = \"x\" }\nupgrade = [\"websocket\"]",
            "respond = { body = \"x\" }",
        ))
        .unwrap();
        let r = &ok.listeners[0].routes;
        assert_eq!(r[0].upgrade, ["websocket", "x-echo"]);
        assert!(r[1].upgrade.is_empty(), "an empty list tunnels nothing");
        assert!(r[2].upgrade.is_empty(), "direct responses never tunnel");
        assert_eq!(r[3].upgrade, ["websocket"], "the default");
    }

    #[test]
    fn websocket_routes_are_checked_with_their_key_paths() {
        let text = r#"
version = 1
[[listener]]
bind = "127.0.0.1:1"
[[listener.route]]
path = "/echo"
websocket = "echo"
[[listener.route]]
websocket = "chat"
[[listener.route]]
websocket = "echo"
respond = { body = "x" }
[[listener.route]]
path = "/t"
websocket = "terminate"
backend = "app"
[[listener.route]]
websocket = "terminate"
[[listener.route]]
websocket = "terminate"
backend = "nope"
[[listener.route]]
websocket = "terminate"
backend = "app"
upgrade = ["websocket"]
[backend.app]
servers = [{ address = "127.0.0.1:2" }]
"#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listener[0].route[1].websocket",
                "listener[0].route[2]",
                "listener[0].route[4]",
                "listener[0].route[5].backend",
                "listener[0].route[6].upgrade"
            ],
            "{errs:#?}"
        );
        let ok = load(
            &text
                .replace(
                    "websocket = \"chat\"",
                    "path = \"/c\"\nwebsocket = \"echo\"",
                )
                .replace(
                    "websocket = \"echo\"\nrespond = { body = \"x\" }",
                    "respond = { body = \"x\" }",
                )
                .replace(
                    "[[listener.route]]\nwebsocket = \"terminate\"\n[[listener.route]]",
                    "[[listener.route]]",
                )
                .replace("backend = \"nope\"", "backend = \"app\"")
                .replace("upgrade = [\"websocket\"]\n", ""),
        )
        .unwrap();
        assert!(matches!(
            ok.listeners[0].routes[3].action,
            RouteAction::WebSocketProxy(0)
        ));
        let ok = load("version = 1\n[[listener]]\nbind = \"127.0.0.1:1\"\n[[listener.route]]\nwebsocket = \"echo\"\n").unwrap();
        assert!(matches!(
            ok.listeners[0].routes[0].action,
            RouteAction::WebSocketEcho
        ));
        let listener = |table: &str| {
            format!(
                "version = 1\n[[listener]]\nbind = \"127.0.0.1:1\"\nwebsocket = {{ {table} }}\n"
            )
        };
        let errs = load(&listener("max_frame = \"1KiB\", colour = 1")).unwrap_err();
        assert!(errs[0].message.contains("colour"), "{errs:#?}");
        let errs = load(&listener(
            "max_message = \"2GiB\", server_max_window_bits = 8, client_max_window_bits = 16, ping_interval = \"10ms\", compression_threshold = \"32MiB\", compression_level = 0, max_message_rate = 0",
        ))
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listener[0].websocket.max_message",
                "listener[0].websocket.server_max_window_bits",
                "listener[0].websocket.client_max_window_bits",
                "listener[0].websocket.ping_interval",
                "listener[0].websocket.compression_threshold",
                "listener[0].websocket.compression_level",
                "listener[0].websocket.max_message_rate"
            ],
            "{errs:#?}"
        );
        let c = load(&listener("max_message = \"1MiB\", compression = false")).unwrap();
        let w = c.listeners[0].websocket;
        assert_eq!(
            (w.max_message, w.max_frame, w.deflate),
            (1 << 20, 1 << 20, None)
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let errs = load("version = 1\n[[listener]\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("invalid TOML"));
    }
}

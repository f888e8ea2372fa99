//! The timeout profile: `[defaults.timeouts]`, overridden per listener (client side) and per
//! backend (server side). Semantics follow HAProxy's (`../shared/reference`): `client_fin` falls
//! back to `client`, `server_fin` to `server`, `queue` to `connect`.

use crate::units::Dur;
pub use coreplex_http::runtime::Timeouts;
use serde::Deserialize;
use std::time::Duration;

/// The timeouts as written in one table (every key optional).
#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    http_request: Option<Dur>,
    http_keep_alive: Option<Dur>,
    client: Option<Dur>,
    client_fin: Option<Dur>,
    connect: Option<Dur>,
    server: Option<Dur>,
    server_fin: Option<Dur>,
    queue: Option<Dur>,
    tunnel: Option<Dur>,
    client_hs: Option<Dur>,
}

impl RawTimeouts {
    /// `self` with the keys `over` sets replaced.
    pub(super) fn overlay(&self, over: &RawTimeouts) -> RawTimeouts {
        RawTimeouts {
            http_request: over.http_request.or(self.http_request),
            http_keep_alive: over.http_keep_alive.or(self.http_keep_alive),
            client: over.client.or(self.client),
            client_fin: over.client_fin.or(self.client_fin),
            connect: over.connect.or(self.connect),
            server: over.server.or(self.server),
            server_fin: over.server_fin.or(self.server_fin),
            queue: over.queue.or(self.queue),
            tunnel: over.tunnel.or(self.tunnel),
            client_hs: over.client_hs.or(self.client_hs),
        }
    }

    /// The complete profile: built-in defaults where unset, then the fallbacks.
    pub(super) fn resolve(&self) -> Timeouts {
        let d = DEFAULT_TIMEOUTS;
        let get = |v: Option<Dur>, fallback: Duration| v.map_or(fallback, |x| x.0);
        let client = get(self.client, d.client);
        let server = get(self.server, d.server);
        let connect = get(self.connect, d.connect);
        Timeouts {
            http_request: get(self.http_request, d.http_request),
            http_keep_alive: get(self.http_keep_alive, d.http_keep_alive),
            client,
            client_fin: get(self.client_fin, client),
            connect,
            server,
            server_fin: get(self.server_fin, server),
            queue: get(self.queue, connect),
            tunnel: get(self.tunnel, d.tunnel),
            client_hs: get(self.client_hs, client),
        }
    }
}

/// Built-in timeouts, used where neither `[defaults]` nor a listener or backend sets one.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    http_request: Duration::from_secs(10),
    http_keep_alive: Duration::from_secs(75),
    client: Duration::from_secs(60),
    client_fin: Duration::from_secs(60),
    connect: Duration::from_secs(5),
    server: Duration::from_secs(60),
    server_fin: Duration::from_secs(60),
    queue: Duration::from_secs(5),
    tunnel: Duration::from_secs(3600),
    client_hs: Duration::from_secs(60),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawTimeouts {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn fallbacks_follow_the_reference() {
        let t = raw("client = \"7s\"\nconnect = \"2s\"\nserver = \"9s\"").resolve();
        assert_eq!(t.client_fin, Duration::from_secs(7));
        assert_eq!(t.queue, Duration::from_secs(2));
        assert_eq!(t.server_fin, Duration::from_secs(9));
        assert_eq!(t.http_request, DEFAULT_TIMEOUTS.http_request);
    }

    #[test]
    fn overlay_replaces_only_what_is_set() {
        let base = raw("client = \"7s\"\nqueue = \"1s\"");
        let t = base.overlay(&raw("client = \"3s\"")).resolve();
        assert_eq!(t.client, Duration::from_secs(3));
        assert_eq!(t.queue, Duration::from_secs(1));
    }
}

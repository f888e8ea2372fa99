//! TLS wiring of the process: each TLS listener's loaded configuration, a client profile per
//! TLS backend server (profile numbers are what the proxy passes to `connect_secure`), and the
//! ticket keys every shard seals with: read from the shared key file, or generated at start and
//! rotated on a schedule by a thread that pushes each new key set to every shard over the control
//! channel (old keys keep opening tickets for one lifetime; nothing is locked on a handshake).
//! A binary upgrade hands the generated keys to the successor, which seals with a fresh key and
//! keeps opening the predecessor's tickets.

use crate::config::{BackendProtocol, Config};
use coreplex_engine::RuntimeHandle;
use coreplex_tls::settings::TicketKeys;
use coreplex_tls::tickets::{self, TicketKey, Ticketer};
use coreplex_tls::{client, server, ListenerTls};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TLS of a configuration, loaded once and copied into each shard's transport.
#[derive(Clone)]
pub struct Secure {
    /// Per listener (`None`: plaintext).
    pub listeners: Vec<Option<ListenerTls>>,
    /// Client profiles, numbered in order.
    pub profiles: Vec<client::ClientSide>,
    /// Per backend, per server: its profile number (HTTP/1.1 connections).
    pub backend_profiles: Vec<Vec<Option<u32>>>,
    /// Per backend, per server: the profile of its HTTP/2 connections (ALPN `h2`, or `h2` then
    /// `http/1.1` for `protocol = "auto"`), for backends that speak h2 over TLS.
    pub backend_h2_profiles: Vec<Vec<Option<u32>>>,
    /// The ticketer shards start with (`None`: tickets off).
    pub ticketer: Option<Arc<Ticketer>>,
    /// The generated keys in use (newest first), when they rotate; the rotation thread keeps
    /// them current.
    keys: Arc<Mutex<Vec<TicketKey>>>,
}

impl Secure {
    /// Loads every certificate and key of `cfg` and sets up the ticket keys (generated ones
    /// after `inherited`, a predecessor's, when given).
    pub fn load(cfg: &Config, inherited: Option<Vec<TicketKey>>) -> Result<Secure, String> {
        let mut listeners = Vec::new();
        for l in &cfg.listeners {
            listeners.push(match &l.tls {
                Some(t) => {
                    let side = server::build(&t.settings, None)
                        .map_err(|e| format!("listener {}: TLS: {e}", l.name))?;
                    Some(ListenerTls {
                        side,
                        session_cache: t.settings.session_cache,
                        tls13_tickets: t.settings.tls13_tickets,
                    })
                }
                None => None,
            });
        }
        let mut profiles = Vec::new();
        let mut backend_profiles = Vec::new();
        let mut backend_h2_profiles = Vec::new();
        for b in &cfg.backends {
            let h2_alpn: Option<Vec<String>> = match b.protocol {
                BackendProtocol::H1 => None,
                BackendProtocol::H2 => Some(vec!["h2".into()]),
                BackendProtocol::Auto => Some(vec!["h2".into(), "http/1.1".into()]),
            };
            let mut ids = Vec::new();
            let mut h2_ids = Vec::new();
            for s in &b.servers {
                let mut build = |settings: &coreplex_tls::settings::ClientSettings| {
                    let side = client::build(settings)
                        .map_err(|e| format!("backend {} server {}: TLS: {e}", b.name, s.name))?;
                    profiles.push(side);
                    Ok::<_, String>(Some((profiles.len() - 1) as u32))
                };
                let Some(settings) = &s.tls else {
                    ids.push(None);
                    h2_ids.push(None);
                    continue;
                };
                ids.push(build(settings)?);
                h2_ids.push(match &h2_alpn {
                    Some(alpn) => {
                        let mut h2 = settings.clone();
                        h2.alpn = alpn.clone();
                        build(&h2)?
                    }
                    None => None,
                });
            }
            backend_profiles.push(ids);
            backend_h2_profiles.push(h2_ids);
        }
        let lifetime = cfg
            .global
            .tickets
            .lifetime
            .as_secs()
            .min(u64::from(u32::MAX)) as u32;
        let any_tls = listeners.iter().any(Option::is_some);
        let (keys, ticketer) = match &cfg.global.tickets.keys {
            _ if !any_tls => (Vec::new(), None),
            TicketKeys::Off => (Vec::new(), None),
            TicketKeys::File(path) => {
                let keys = tickets::load_keys(path).map_err(|e| e.to_string())?;
                let t = Ticketer::new(&keys, lifetime).map_err(|e| e.to_string())?;
                (Vec::new(), Some(t))
            }
            TicketKeys::Generated { rotate } => {
                let mut keys = vec![TicketKey::generate().map_err(|e| e.to_string())?];
                keys.extend(inherited.unwrap_or_default());
                keys.truncate(keys_kept(cfg.global.tickets.lifetime, *rotate));
                let t = Ticketer::new(&keys, lifetime).map_err(|e| e.to_string())?;
                (keys, Some(t))
            }
        };
        Ok(Secure {
            listeners,
            profiles,
            backend_profiles,
            backend_h2_profiles,
            ticketer,
            keys: Arc::new(Mutex::new(keys)),
        })
    }

    /// The generated ticket keys in use (newest first), for a successor; empty with a key file
    /// (the successor reads it) or no tickets.
    pub fn generated_keys(&self) -> Vec<TicketKey> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A shard's transport.
    pub fn transport(&self) -> coreplex_tls::Tls {
        coreplex_tls::Tls::new(&self.listeners, &self.profiles, self.ticketer.clone())
    }

    /// Starts the rotation of generated ticket keys (nothing to do for a key file or no tickets).
    pub fn rotate<St: Send + 'static>(&self, cfg: &Config, handle: RuntimeHandle<St>) {
        let TicketKeys::Generated { rotate } = cfg.global.tickets.keys else {
            return;
        };
        if self.ticketer.is_none() {
            return;
        }
        let lifetime = cfg.global.tickets.lifetime;
        let shared = self.keys.clone();
        let keep = keys_kept(lifetime, rotate);
        let secs = lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let spawned = std::thread::Builder::new()
            .name("coreplex-tickets".into())
            .spawn(move || loop {
                std::thread::sleep(rotate.max(Duration::from_secs(1)));
                let Ok(key) = TicketKey::generate() else {
                    tracing::warn!("ticket key rotation: no randomness; keeping the keys");
                    continue;
                };
                let keys = {
                    let mut keys = shared.lock().unwrap_or_else(|e| e.into_inner());
                    keys.insert(0, key);
                    keys.truncate(keep);
                    keys.clone()
                };
                let Ok(t) = Ticketer::new(&keys, secs) else {
                    continue;
                };
                if handle.broadcast(|| t.clone()) == 0 {
                    return; // the shards are gone
                }
                tracing::debug!("ticket keys rotated: {} in use", keys.len());
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the ticket key rotation: {e}");
        }
    }
}

/// Generated keys kept: a ticket sealed just before a rotation must open for a whole lifetime
/// after it.
fn keys_kept(lifetime: Duration, rotate: Duration) -> usize {
    (lifetime.as_secs_f64() / rotate.as_secs_f64().max(1.0)).ceil() as usize + 1
}

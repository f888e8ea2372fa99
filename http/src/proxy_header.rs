//! PROXY protocol headers on listeners with `[listener.proxy_protocol]` (the engine hands a
//! connection's first bytes to [`Service::preface`](coreplex_engine::Service::preface) before TLS
//! and before `on_accept`). A trusted source must open with a valid header (v1 or v2); its client
//! address then stands for the connection's (X-Forwarded-For, `Forwarded`, the PROXY header sent
//! on to a backend). A source outside `trusted` is served as it is, and closed if it opens with a
//! header. Every refusal is counted by kind (`coreplex_proxy_protocol_total`).

use super::service::HttpService;
use coreplex_engine::{Origin, Preface};
use coreplex_protocol::proxy::{self, Header, Parse, ProxyError};
use std::net::SocketAddr;

impl HttpService {
    /// The verdict on the first bytes `input` of a connection from `peer` on `listener`.
    pub(super) fn proxy_preface(
        &mut self,
        listener: usize,
        peer: Option<SocketAddr>,
        input: &[u8],
    ) -> Preface {
        let Some(pp) = self
            .listeners
            .get(listener)
            .and_then(|l| l.proxy_protocol.as_ref())
        else {
            return Preface::Done {
                consumed: 0,
                origin: None,
            };
        };
        let stats = &mut self.stats.proxy_protocol;
        if !peer.is_some_and(|p| pp.trusts(p.ip())) {
            return match proxy::looks_like_header(input) {
                None => Preface::NeedMore,
                Some(false) => Preface::Done {
                    consumed: 0,
                    origin: None,
                },
                Some(true) => {
                    tracing::debug!("PROXY header from untrusted {peer:?}: closed");
                    stats.untrusted += 1;
                    Preface::Reject
                }
            };
        }
        match proxy::parse(input) {
            Ok(Parse::Incomplete) => Preface::NeedMore,
            Ok(Parse::Complete { header, len }) => match header {
                Header::Proxied {
                    source,
                    destination,
                } => {
                    stats.accepted += 1;
                    Preface::Done {
                        consumed: len,
                        origin: Some(Origin {
                            source,
                            destination,
                        }),
                    }
                }
                Header::Local => {
                    stats.local += 1;
                    Preface::Done {
                        consumed: len,
                        origin: None,
                    }
                }
            },
            Err(ProxyError::Missing) => {
                stats.missing += 1;
                Preface::Reject
            }
            Err(e) => {
                tracing::debug!("PROXY header from {peer:?}: {e}");
                stats.malformed += 1;
                Preface::Reject
            }
        }
    }
}

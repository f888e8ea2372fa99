//! Listening sockets: one SO_REUSEPORT socket per listener per shard, so the kernel spreads
//! connections over shards and no accept crosses cores.

use crate::error::EngineError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// What to listen on.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// Address and port.
    pub addr: SocketAddr,
    /// listen(2) backlog.
    pub backlog: i32,
    /// New connections per second for the whole process (split among shards); beyond it a
    /// shard stops accepting until its rate allows, and new clients wait in the backlog
    /// (HAProxy's `rate-limit sessions`). `None`: unlimited.
    pub rate_limit: Option<u32>,
    /// Connections open with a preface the service reads first ([`crate::Service::preface`]:
    /// a PROXY protocol header), within this deadline. `None`: none.
    pub preface: Option<std::time::Duration>,
}

/// Creates a non-blocking, SO_REUSEPORT listening socket.
pub fn bind(spec: &ListenerSpec) -> Result<OwnedFd, EngineError> {
    let err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            EngineError::AddrInUse { addr: spec.addr }
        } else {
            EngineError::Listen {
                addr: spec.addr,
                source,
            }
        }
    };
    let socket = Socket::new(
        Domain::for_address(spec.addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    if spec.addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.bind(&spec.addr.into()).map_err(err)?;
    socket.listen(spec.backlog).map_err(err)?;
    Ok(socket.into())
}

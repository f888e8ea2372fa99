//! Log sinks: files (or pipes) a service appends lines to without blocking its shard. The service
//! hands its bytes over in [`crate::Service::poll`] ([`ShardActions::log`]); each sink keeps one
//! write in flight on the ring (a file write runs on the kernel's workers) and gathers what comes
//! meanwhile, so lines stay in order and a slow disk only delays them. A sink's descriptor is
//! replaced by [`ShardActions::set_sink`] (a log reopened for rotation): the old one is let go
//! when its write completes. Bytes beyond [`MAX_PENDING`] per sink are dropped and counted.

use super::*;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// The most bytes a sink holds while its write is in flight.
pub(super) const MAX_PENDING: usize = 4 << 20;

/// One sink of a shard.
#[derive(Default)]
pub(super) struct Sink {
    fd: Option<Arc<OwnedFd>>,
    /// The descriptor of the write in flight, when it was replaced meanwhile.
    retired: Option<Arc<OwnedFd>>,
    pending: Vec<u8>,
    /// The buffer of the last write, back from the ring, for the next.
    spare: Vec<u8>,
    in_flight: bool,
}

impl<S: Service> Shard<S> {
    /// Takes what the service's `poll` asked of the sinks.
    pub(super) fn sink_actions(&mut self, actions: &mut ShardActions) {
        for (i, fd) in actions.sinks.drain(..) {
            if self.sinks.len() <= i {
                self.sinks.resize_with(i + 1, Sink::default);
            }
            let sink = &mut self.sinks[i];
            let old = sink.fd.replace(fd);
            if sink.in_flight {
                sink.retired = sink.retired.take().or(old);
            }
        }
        for (i, bytes) in actions.logs.iter_mut().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let Some(sink) = self.sinks.get_mut(i).filter(|s| s.fd.is_some()) else {
                self.core.stats.log_dropped_bytes += bytes.len() as u64;
                bytes.clear();
                continue;
            };
            if sink.pending.len() + bytes.len() > MAX_PENDING {
                self.core.stats.log_dropped_bytes += bytes.len() as u64;
                bytes.clear();
            } else if sink.pending.is_empty() {
                std::mem::swap(&mut sink.pending, bytes);
            } else {
                sink.pending.append(bytes);
            }
        }
        self.flush_sinks();
    }

    /// Starts a write on every sink with bytes waiting and none in flight.
    pub(super) fn flush_sinks(&mut self) {
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if sink.in_flight || sink.pending.is_empty() {
                continue;
            }
            let Some(fd) = &sink.fd else {
                continue;
            };
            let next = std::mem::take(&mut sink.spare);
            let buf = std::mem::replace(&mut sink.pending, next);
            sink.in_flight = true;
            self.ring.write_file(
                fd.as_raw_fd(),
                buf,
                token::pack_index(token::OP_LOG, i as u32),
            );
        }
    }

    /// A sink's write completed (or failed: its bytes are dropped and counted).
    pub(super) fn sink_written(&mut self, i: usize, outcome: SendOutcome) {
        let Some(sink) = self.sinks.get_mut(i) else {
            return;
        };
        match outcome {
            SendOutcome::Partial { sent, .. } => {
                self.core.stats.log_bytes += sent as u64;
                return;
            }
            SendOutcome::Done { buf, sent, .. } => {
                self.core.stats.log_bytes += sent as u64;
                sink.spare = buf;
            }
            SendOutcome::Failed { buf, errno, .. } => {
                self.core.stats.log_write_errors += 1;
                tracing::warn!(
                    shard = self.id,
                    "log write failed: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
                sink.spare = buf;
            }
        }
        sink.in_flight = false;
        sink.retired = None;
        self.flush_sinks();
    }

    /// Whether every sink has written what it was given.
    pub(super) fn sinks_idle(&self) -> bool {
        self.sinks
            .iter()
            .all(|s| !s.in_flight && (s.pending.is_empty() || s.fd.is_none()))
    }
}

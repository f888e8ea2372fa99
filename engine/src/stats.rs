//! Per-shard engine counters. Plain integers owned by the shard; copied into a snapshot when the
//! admin endpoint asks (no atomics, no sharing on the hot path).

use crate::service::CloseReason;

/// Accept failures by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptErrors {
    /// EMFILE: the process hit its open-files limit.
    pub emfile: u64,
    /// ENFILE: the system hit fs.file-max.
    pub enfile: u64,
    /// ENOMEM / ENOBUFS: the kernel ran out of memory for sockets.
    pub enomem: u64,
    /// Anything else (ECONNABORTED, ...).
    pub other: u64,
}

/// A snapshot of one shard's engine counters.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Open client (accepted) connections.
    pub connections: u64,
    /// Open outbound connections (made by the service, e.g. to backends).
    pub outbound: u64,
    /// Outbound connections started.
    pub outbound_opened: u64,
    /// Outbound connections that failed to connect.
    pub outbound_failed: u64,
    /// Outbound connections refused for lack of a slot (max_outbound).
    pub outbound_refused: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed, by [`CloseReason`] discriminant.
    pub closed: [u64; CloseReason::ALL.len()],
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Accept errors.
    pub accept_errors: AcceptErrors,
    /// Times accepting was paused because the connection table was full.
    pub accept_paused: u64,
    /// Times a listener stopped accepting because of its rate limit.
    pub accept_rate_limited: u64,
    /// Receives that found the provided-buffer ring empty (ENOBUFS).
    pub recv_no_buffers: u64,
    /// Bytes written to log sinks.
    pub log_bytes: u64,
    /// Log bytes dropped (a sink without a descriptor, or too far behind).
    pub log_dropped_bytes: u64,
    /// Log writes that failed (their bytes are lost).
    pub log_write_errors: u64,
    /// Scheduled timers.
    pub timers: u64,
    /// Connection slots in use.
    pub slab_used: u64,
    /// Connection slots available (max_connections per shard).
    pub slab_capacity: u64,
    /// Bytes of one connection slot.
    pub slab_slot_bytes: u64,
    /// Provided buffers held by user space right now.
    pub buffers_outstanding: u64,
    /// Provided buffers in the shard's ring.
    pub buffers_total: u64,
    /// Loop turns (io_uring_enter calls).
    pub loop_turns: u64,
    /// Completions processed.
    pub completions: u64,
}

impl EngineStats {
    /// Adds another shard's counters into this one.
    pub fn merge(&mut self, o: &EngineStats) {
        self.connections += o.connections;
        self.outbound += o.outbound;
        self.outbound_opened += o.outbound_opened;
        self.outbound_failed += o.outbound_failed;
        self.accept_rate_limited += o.accept_rate_limited;
        self.outbound_refused += o.outbound_refused;
        self.accepted += o.accepted;
        for (a, b) in self.closed.iter_mut().zip(o.closed.iter()) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.accept_errors.emfile += o.accept_errors.emfile;
        self.accept_errors.enfile += o.accept_errors.enfile;
        self.accept_errors.enomem += o.accept_errors.enomem;
        self.accept_errors.other += o.accept_errors.other;
        self.accept_paused += o.accept_paused;
        self.recv_no_buffers += o.recv_no_buffers;
        self.log_bytes += o.log_bytes;
        self.log_dropped_bytes += o.log_dropped_bytes;
        self.log_write_errors += o.log_write_errors;
        self.timers += o.timers;
        self.slab_used += o.slab_used;
        self.slab_capacity += o.slab_capacity;
        self.slab_slot_bytes = self.slab_slot_bytes.max(o.slab_slot_bytes);
        self.buffers_outstanding += o.buffers_outstanding;
        self.buffers_total += o.buffers_total;
        self.loop_turns += o.loop_turns;
        self.completions += o.completions;
    }
}

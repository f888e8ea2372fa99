//! What the kernel offers the engine: io_uring availability, the opcodes and features the shards
//! use, and provided-buffer rings. Used by `coreplex tune`; nothing here changes the system.

use crate::sys::BufRing;
use io_uring::{opcode, IoUring};

/// The result of probing io_uring.
#[derive(Debug, Clone)]
pub struct UringProbe {
    /// `Ok` when a ring could be created, else the error text.
    pub setup: Result<(), String>,
    /// SINGLE_ISSUER | DEFER_TASKRUN accepted.
    pub defer_taskrun: bool,
    /// Opcodes the engine uses, with support.
    pub opcodes: Vec<(&'static str, bool)>,
    /// Features the engine relies on, with support.
    pub features: Vec<(&'static str, bool)>,
    /// Provided-buffer rings can be registered.
    pub buf_ring: bool,
}

impl UringProbe {
    /// Names of what is missing, empty when everything the engine needs is there.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m: Vec<&'static str> = self
            .opcodes
            .iter()
            .chain(self.features.iter())
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        if !self.buf_ring {
            m.push("provided buffer rings (IORING_REGISTER_PBUF_RING)");
        }
        m
    }
}

/// Probes io_uring with a small throwaway ring.
pub fn probe_io_uring() -> UringProbe {
    let defer_taskrun = IoUring::<io_uring::squeue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .is_ok();
    let ring: IoUring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            return UringProbe {
                setup: Err(e.to_string()),
                defer_taskrun,
                opcodes: Vec::new(),
                features: Vec::new(),
                buf_ring: false,
            }
        }
    };
    let mut probe = io_uring::Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let op = |code: u8| probed && probe.is_supported(code);
    let opcodes = vec![
        ("ACCEPT (multishot)", op(opcode::AcceptMulti::CODE)),
        (
            "RECV (multishot, buffer select)",
            op(opcode::RecvMulti::CODE),
        ),
        ("SEND", op(opcode::Send::CODE)),
        ("POLL_ADD (multishot)", op(opcode::PollAdd::CODE)),
        ("ASYNC_CANCEL", op(opcode::AsyncCancel::CODE)),
    ];
    let p = ring.params();
    let features = vec![
        ("IORING_FEAT_NODROP", p.is_feature_nodrop()),
        (
            "IORING_FEAT_EXT_ARG (bounded waits)",
            p.is_feature_ext_arg(),
        ),
        ("IORING_FEAT_FAST_POLL", p.is_feature_fast_poll()),
    ];
    let buf_ring = BufRing::new(&ring.submitter(), 0, 1, 512)
        .map(|b| b.unregister(&ring.submitter()))
        .is_ok();
    UringProbe {
        setup: Ok(()),
        defer_taskrun,
        opcodes,
        features,
        buf_ring,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_the_engine_uses() {
        // The engine's own tests need io_uring; so does this one.
        let p = probe_io_uring();
        assert!(p.setup.is_ok(), "{:?}", p.setup);
        assert!(p.missing().is_empty(), "missing: {:?}", p.missing());
    }
}

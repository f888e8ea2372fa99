//! Descriptors returned by the kernel in completions, turned into owned descriptors.

use std::os::fd::{FromRawFd, OwnedFd};

/// Takes ownership of a descriptor that an accept completion returned.
///
/// Returns `None` for a negative result (an error code, not a descriptor).
pub fn from_accept_result(res: i32) -> Option<OwnedFd> {
    if res < 0 {
        return None;
    }
    // SAFETY: a non-negative accept result is a fresh descriptor that nothing else owns: the kernel
    // installed it for this completion, and each completion is consumed exactly once by the shard.
    Some(unsafe { OwnedFd::from_raw_fd(res) })
}

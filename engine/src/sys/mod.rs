//! The operating-system layer: the only module of the workspace that contains `unsafe`.
//!
//! Everything that hands memory or descriptors to the kernel lives here, behind safe types:
//! - [`Ring`]: one io_uring per shard. Send buffers are moved into the ring and handed back only when
//!   their completion arrives, so a buffer can never be freed or reused while the kernel reads it.
//! - [`BufRing`]: the provided-buffer ring that multishot receives pick from. A buffer leaves the
//!   kernel's ownership only through a completion ([`RecvBuf`]) and goes back through `recycle`.
//! - `fd` (crate-private): turning the descriptor an accept completion returns into an owned one;
//!   nothing outside the engine can turn an integer into an `OwnedFd` through it.
//! - [`fdpass`]: descriptors passed between processes (SCM_RIGHTS) for a binary upgrade, and the
//!   one inherited socket a successor takes over.
//! - [`CountingAlloc`]: a counting global allocator for the tests of "no allocation on the fast
//!   path" (installed by those tests only).
//!
//! Invariant: every `unsafe` block carries a `// SAFETY:` line naming what makes it sound.

mod alloc;
mod bufring;
pub(crate) mod fd;
pub mod fdpass;
mod ring;

pub use alloc::CountingAlloc;
pub use bufring::{BufRing, RecvBuf};
pub use ring::{Completion, Ring, RingError, RingFeatures, SendOutcome};

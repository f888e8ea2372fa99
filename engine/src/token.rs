//! Packing of operation tags and connection ids into io_uring `user_data`.
//!
//! Layout: `op` in bits 60..64, the connection's generation in bits 32..60 (28 bits), its slot index
//! in bits 0..32. A completion that arrives after its connection was closed carries the old
//! generation and is recognised as stale by [`crate::table::Table::get`].

use crate::table::{Id, GEN_MASK};

/// Multishot accept on listener `index`.
pub const OP_ACCEPT: u64 = 1;
/// Multishot receive of a connection.
pub const OP_RECV: u64 = 2;
/// Send (the low bits are the ring's send-table key, not a connection id).
pub const OP_SEND: u64 = 3;
/// Readiness of the shard's control eventfd.
pub const OP_WAKE: u64 = 4;
/// Cancellation requests: their completions carry nothing to act on.
pub const OP_CANCEL: u64 = 5;
/// Writability of an outbound connection whose connect is in progress.
pub const OP_CONNECT: u64 = 6;
/// A write to a log sink (the owner token of a file write; the index is the sink).
pub const OP_LOG: u64 = 7;

const OP_SHIFT: u32 = 60;

/// `user_data` for `op` on connection `id`.
pub fn pack(op: u64, id: Id) -> u64 {
    (op << OP_SHIFT) | (((id.gen & GEN_MASK) as u64) << 32) | id.index as u64
}

/// `user_data` for `op` with a bare index (listeners, the wake fd).
pub fn pack_index(op: u64, index: u32) -> u64 {
    (op << OP_SHIFT) | index as u64
}

/// The op tag of a `user_data`.
pub fn op(user_data: u64) -> u64 {
    user_data >> OP_SHIFT
}

/// The connection id of a `user_data`.
pub fn id(user_data: u64) -> Id {
    Id {
        index: user_data as u32,
        gen: ((user_data >> 32) as u32) & GEN_MASK,
    }
}

/// The tag OR-ed into send completions.
pub const SEND_TAG: u64 = OP_SEND << OP_SHIFT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let i = Id {
            index: 0xdead_beef,
            gen: GEN_MASK,
        };
        let ud = pack(OP_RECV, i);
        assert_eq!(op(ud), OP_RECV);
        assert_eq!(id(ud), i);
        assert_eq!(op(pack_index(OP_ACCEPT, 3)), OP_ACCEPT);
        assert_eq!(op(SEND_TAG | 77), OP_SEND);
    }
}

//! The provided-buffer ring (`IORING_REGISTER_PBUF_RING`) that multishot receives read into.
//!
//! A fixed pool of `count` buffers of `size` bytes, allocated and pre-faulted once per shard, so it is
//! a fixed cost of the shard and never a cost per connection: an idle connection holds no buffer, a
//! receive takes one only when data arrives.
//!
//! Ownership: a buffer belongs to the kernel while it sits in the ring. A completion carrying
//! `IORING_CQE_F_BUFFER` hands it to user space as a [`RecvBuf`] (not `Clone`), which can be read
//! with [`BufRing::data`] and must be given back with [`BufRing::recycle`]. Recycled buffers become
//! visible to the kernel at the next [`BufRing::publish`] (once per loop turn).
//!
//! A [`RecvBuf`] names the ring it came from: reading or recycling it through another ring (whose
//! buffer of that number may be the kernel's at that moment) panics instead of racing the kernel.
//! Registering the memory is the crate's own business ([`BufRing::new`] is `pub(crate)`): the
//! ring that registers it must unregister it (or be destroyed) before the memory is freed.

use io_uring::types::BufRingEntry;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// Source of [`BufRing`] identities.
static NEXT_RING: AtomicU32 = AtomicU32::new(1);

/// A buffer that a completion handed to user space. Give it back with [`BufRing::recycle`].
#[derive(Debug)]
#[must_use = "a RecvBuf must be recycled or the ring runs dry"]
pub struct RecvBuf {
    bid: u16,
    len: u32,
    /// The [`BufRing`] it belongs to.
    ring: u32,
}

impl RecvBuf {
    /// Number of bytes the kernel wrote.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the completion carried no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A registered ring of provided buffers.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    data: *mut u8,
    data_layout: Layout,
    mask: u16,
    tail: u16,
    size: u32,
    count: u16,
    bgid: u16,
    dirty: bool,
    outstanding: u32,
    /// This ring's identity, carried by its [`RecvBuf`]s.
    id: u32,
}

impl BufRing {
    /// Allocates `count` (a power of two, at most 32768) buffers of `size` bytes and registers them
    /// with `submitter` under buffer group `bgid`. The ring behind `submitter` must unregister the
    /// group ([`BufRing::unregister`]) or be destroyed before this value is dropped.
    pub(crate) fn new(
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
        count: u16,
        size: u32,
    ) -> std::io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768 and size > 0",
            ));
        }
        let entries_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let data_layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1) checked above.
        let (entries, data) = unsafe {
            (
                alloc_zeroed(entries_layout) as *mut BufRingEntry,
                alloc_zeroed(data_layout),
            )
        };
        if entries.is_null() || data.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        // Pre-fault the pool so it shows as a fixed cost of the shard, not of the first connections.
        for off in (0..data_layout.size()).step_by(4096) {
            // SAFETY: off < data_layout.size(), inside the allocation made above.
            unsafe { data.add(off).write_volatile(0) };
        }
        let mut ring = BufRing {
            entries,
            entries_layout,
            data,
            data_layout,
            mask: count - 1,
            tail: 0,
            size,
            count,
            bgid,
            dirty: false,
            outstanding: 0,
            id: NEXT_RING.fetch_add(1, Ordering::Relaxed),
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        // SAFETY: `entries` points to `count` entries that stay allocated until `Drop`, which
        // unregisters the group before freeing them.
        unsafe {
            submitter.register_buf_ring_with_flags(entries as u64, count, bgid, 0)?;
        }
        Ok(ring)
    }

    /// The buffer group id receives must name.
    pub fn group(&self) -> u16 {
        self.bgid
    }

    /// Size in bytes of each buffer.
    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    /// Total bytes of buffer memory (a fixed cost per shard).
    pub fn total_bytes(&self) -> usize {
        self.data_layout.size()
    }

    /// Buffers currently held by user space (taken and not yet recycled).
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Claims the buffer a completion reports in its `flags`, if any.
    pub fn take(&mut self, flags: u32, len: i32) -> Option<RecvBuf> {
        let bid = io_uring::cqueue::buffer_select(flags)?;
        if bid >= self.count {
            return None;
        }
        self.outstanding += 1;
        Some(RecvBuf {
            bid,
            len: len.max(0) as u32,
            ring: self.id,
        })
    }

    /// The bytes a completion wrote into `buf`. Panics if `buf` came from another ring.
    pub fn data(&self, buf: &RecvBuf) -> &[u8] {
        assert_eq!(buf.ring, self.id, "a RecvBuf read through another ring");
        let len = (buf.len as usize).min(self.size as usize);
        // SAFETY: `buf` came from this ring (asserted) with bid < count (checked in `take`), so the
        // range lies inside the allocation; the kernel no longer writes to this buffer: it handed it
        // over with the completion and gets it back only through `recycle`, which consumes the
        // RecvBuf this borrow depends on.
        unsafe {
            std::slice::from_raw_parts(self.data.add(buf.bid as usize * self.size as usize), len)
        }
    }

    /// The bytes a completion wrote into `buf`, writable (a transport decrypts in place). Panics if
    /// `buf` came from another ring.
    pub fn data_mut(&mut self, buf: &mut RecvBuf) -> &mut [u8] {
        assert_eq!(buf.ring, self.id, "a RecvBuf read through another ring");
        let len = (buf.len as usize).min(self.size as usize);
        // SAFETY: as for `data`; the buffer is ours (not the kernel's) until `recycle` consumes
        // the RecvBuf, and the `&mut RecvBuf` borrow makes this the only reference to its bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.data.add(buf.bid as usize * self.size as usize),
                len,
            )
        }
    }

    /// Gives a buffer back to the kernel (visible after the next `publish`). Panics if `buf` came
    /// from another ring.
    pub fn recycle(&mut self, buf: RecvBuf) {
        assert_eq!(buf.ring, self.id, "a RecvBuf recycled through another ring");
        self.outstanding -= 1;
        self.push(buf.bid);
        self.dirty = true;
    }

    /// Makes recycled buffers visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: `entries` is the ring base allocated in `new`; the tail field overlays the first
        // entry's `resv` as the kernel ABI defines, and is only written by this (the only) producer.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
        self.dirty = false;
    }

    /// True when recycled buffers wait for `publish`.
    pub fn needs_publish(&self) -> bool {
        self.dirty
    }

    fn push(&mut self, bid: u16) {
        // SAFETY: the index is masked into 0..count, inside the entries allocation; the kernel only
        // reads entries between its head and our published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        // SAFETY: bid < count, so the address is inside the data allocation.
        let addr = unsafe { self.data.add(bid as usize * self.size as usize) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Unregisters the group from `submitter`; the memory is freed on drop.
    pub(crate) fn unregister(&self, submitter: &io_uring::Submitter<'_>) {
        let _ = submitter.unregister_buf_ring(self.bgid);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both pointers come from `alloc_zeroed` with these layouts. The owner (`Ring`)
        // unregisters the group or destroys the io_uring before dropping the BufRing, so the kernel
        // holds no reference to this memory any more.
        unsafe {
            dealloc(self.entries as *mut u8, self.entries_layout);
            dealloc(self.data, self.data_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two buffer rings, each after its io_uring so that (dropped in reverse order) every
    /// io_uring is destroyed before the memory registered with it is freed, panics included.
    fn two_rings() -> (BufRing, io_uring::IoUring, BufRing, io_uring::IoUring) {
        let a = io_uring::IoUring::new(8).expect("io_uring");
        let b = io_uring::IoUring::new(8).expect("io_uring");
        let ra = BufRing::new(&a.submitter(), 0, 4, 64).expect("buffer ring");
        let rb = BufRing::new(&b.submitter(), 0, 4, 64).expect("buffer ring");
        (ra, a, rb, b)
    }

    /// The flags a completion carries when the kernel picked buffer `bid` (the kernel ABI:
    /// `IORING_CQE_F_BUFFER` = 1, the buffer id in the upper 16 bits).
    fn flags_for(bid: u16) -> u32 {
        1 | (u32::from(bid) << 16)
    }

    #[test]
    #[should_panic(expected = "read through another ring")]
    fn a_buffer_cannot_be_read_through_another_ring() {
        let (mut ra, a, rb, b) = two_rings();
        let buf = ra.take(flags_for(1), 10).expect("a buffer");
        assert_eq!(ra.data(&buf).len(), 10);
        let _ = rb.data(&buf);
        drop((b, a));
    }

    #[test]
    #[should_panic(expected = "recycled through another ring")]
    fn a_buffer_cannot_be_recycled_through_another_ring() {
        let (mut ra, a, mut rb, b) = two_rings();
        let buf = ra.take(flags_for(2), 10).expect("a buffer");
        rb.recycle(buf);
        drop((b, a));
    }
}

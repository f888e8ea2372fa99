//! A counting global allocator for tests that check "no allocation on the fast path".
//!
//! [`CountingAlloc`] forwards to the system allocator and counts the allocations (`alloc`,
//! `alloc_zeroed`, `realloc`) made by threads that opted in with
//! [`CountingAlloc::count_this_thread`]: a test installs it with `#[global_allocator]`, opts a
//! shard thread in (from the service factory, which runs on the shard's thread), drives traffic,
//! and reads [`CountingAlloc::allocations`] before and after. Other threads (the test's clients,
//! libtest) are not counted. The per-thread switch is a const-initialized thread-local `Cell`, so
//! reading it never allocates. It also keeps the live heap bytes and blocks of the whole process
//! ([`CountingAlloc::live_bytes`], [`CountingAlloc::live_blocks`]), for tests of what a state
//! costs to keep.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting the allocations of opted-in threads.
pub struct CountingAlloc;

impl CountingAlloc {
    /// Starts (or stops) counting the current thread's allocations.
    pub fn count_this_thread(on: bool) {
        COUNTING.with(|c| c.set(on));
    }

    /// Allocations made so far by counted threads.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::SeqCst)
    }

    /// Heap bytes allocated and not yet freed, by every thread (requested sizes: the
    /// allocator's own headers are not included).
    pub fn live_bytes() -> i64 {
        LIVE_BYTES.load(Ordering::SeqCst)
    }

    /// Heap blocks allocated and not yet freed, by every thread.
    pub fn live_blocks() -> i64 {
        LIVE_BLOCKS.load(Ordering::SeqCst)
    }

    fn grew(bytes: usize, blocks: i64) {
        LIVE_BYTES.fetch_add(bytes as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
    }

    fn shrank(bytes: usize, blocks: i64) {
        LIVE_BYTES.fetch_sub(bytes as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(blocks, Ordering::Relaxed);
    }

    fn note() {
        // `try_with`: a thread being torn down has no thread-locals left; it is not counted.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract `System` upholds is upheld here; counting touches no allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note();
        Self::grew(layout.size(), 1);
        // SAFETY: the caller guarantees `layout` has a non-zero size, as `System.alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note();
        Self::grew(layout.size(), 1);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::shrank(layout.size(), 1);
        // SAFETY: the caller passes a block this allocator (that is, `System`) returned, with the
        // layout it was allocated with.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note();
        Self::shrank(layout.size(), 0);
        Self::grew(new_size, 0);
        // SAFETY: the caller passes a block `System` returned with its layout, and a valid size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

//! The global allocator: a linked-list heap over a fixed static region of
//! [`config::HEAP_BYTES`], counting bytes in use and their peak.
//!
//! Invariants: the region is handed to the allocator once ([`init`]), before the first
//! allocation; `in_use` is the sum of live allocation sizes; `peak >= in_use` always.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use linked_list_allocator::LockedHeap;

use crate::config;

struct Counting {
    inner: LockedHeap,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

#[global_allocator]
static HEAP: Counting = Counting {
    inner: LockedHeap::empty(),
    in_use: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

#[repr(C, align(4096))]
struct Region(UnsafeCell<[MaybeUninit<u8>; config::HEAP_BYTES]>);

// SAFETY: the region is only reached through the allocator, which hands each byte to at most
// one owner; the firmware runs on one CPU.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([MaybeUninit::uninit(); config::HEAP_BYTES]));
static INITIALISED: AtomicBool = AtomicBool::new(false);

// SAFETY: allocation is delegated to `LockedHeap`, which upholds `GlobalAlloc`'s contract;
// the counters do not affect the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (non-zero size) is passed through unchanged.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            let now = self.in_use.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract (`ptr` came from `alloc` with `layout`) passes through.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

/// Gives the static region to the allocator. Later calls do nothing.
pub fn init() {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return;
    }
    let start = REGION.0.get().cast::<u8>();
    // SAFETY: `REGION` is HEAP_BYTES of static memory used by nothing else, and this runs once
    // (guarded by INITIALISED), so the heap takes sole ownership of it.
    unsafe { HEAP.inner.lock().init(start, config::HEAP_BYTES) }
}

/// Bytes allocated now.
pub fn in_use() -> usize {
    HEAP.in_use.load(Ordering::Relaxed)
}

/// Most bytes ever allocated at once.
pub fn peak() -> usize {
    HEAP.peak.load(Ordering::Relaxed)
}

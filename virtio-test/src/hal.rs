//! virtio-drivers glue: DMA memory from a static pool, identity-mapped addresses, and
//! probing the board's virtio-mmio slots for block devices.
//!
//! Invariants: guest physical = virtual on every board (identity map or no MMU), so a
//! buffer's address is its DMA address; DMA pages are handed out once and never reused
//! (the firmware makes four devices per boot), so they need no free list.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use alloc::vec::Vec;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::{board, config};

/// The HAL for virtio-drivers.
pub struct FwHal;

/// A virtio block device on an MMIO transport.
pub type Blk = VirtIOBlk<FwHal, MmioTransport<'static>>;

#[repr(C, align(4096))]
struct DmaPool(UnsafeCell<[u8; config::DMA_BYTES]>);

// SAFETY: pages of the pool are handed out at most once (`NEXT` only grows), so no two owners
// share a byte; the firmware runs on one CPU.
unsafe impl Sync for DmaPool {}

static DMA: DmaPool = DmaPool(UnsafeCell::new([0; config::DMA_BYTES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);
static PROBED: AtomicBool = AtomicBool::new(false);

fn addr_of(p: NonNull<u8>) -> PhysAddr {
    p.as_ptr() as usize as PhysAddr
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, never-aliased pages of a static pool (or
// panics when it is exhausted); `share` returns the buffer's own address, which is its
// physical address on these boards.
unsafe impl Hal for FwHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let bytes = pages * PAGE_SIZE;
        let offset = NEXT.fetch_add(bytes, Ordering::Relaxed);
        assert!(
            offset + bytes <= config::DMA_BYTES,
            "DMA pool exhausted (FW_DMA_KIB)"
        );
        let base = DMA.0.get().cast::<u8>();
        // SAFETY: offset + bytes is within the pool (asserted above), so the pointer stays in
        // the same static allocation.
        let p = unsafe { base.add(offset) };
        // SAFETY: these `bytes` bytes were never handed out before (`NEXT` only grows).
        unsafe { p.write_bytes(0, bytes) };
        let p = NonNull::new(p).expect("static memory is not null");
        (addr_of(p), p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Never reused: see the module invariants.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("MMIO address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        addr_of(buffer.cast())
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Initialises every virtio block device found in the board's virtio-mmio slots. May be
/// called once; later calls find nothing (each transport must have a single owner).
pub fn probe_block_devices() -> Vec<Blk> {
    let mut found = Vec::new();
    if PROBED.swap(true, Ordering::AcqRel) {
        return found;
    }
    for (base, size) in board::virtio_mmio_slots() {
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the board names `base..base+size` as a virtio-mmio transport, identity
        // mapped for the whole run; this function runs once, so the transport gets a single
        // owner.
        let transport = match unsafe { MmioTransport::new(header, size) } {
            Ok(t) => t,
            Err(_) => continue, // empty slot (device id 0) or not virtio
        };
        if transport.device_type() != DeviceType::Block {
            continue;
        }
        match VirtIOBlk::<FwHal, _>::new(transport) {
            Ok(blk) => found.push(blk),
            Err(e) => crate::println!("virtio-mmio at {base:#x}: block device init failed: {e}"),
        }
    }
    found
}

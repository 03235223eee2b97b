//! QEMU riscv64 `virt` board, run with `-bios none`: the firmware is the first and only
//! software, in M-mode with no paging.
//!
//! Boot: the reset vector jumps to `_start` at 0x8000_0000. Harts other than 0 park; hart 0
//! zeroes `.bss`, turns the FPU on, sets its stack (256 KiB in `.bss`) and calls the
//! firmware's `firmware_main`.
//!
//! Invariants:
//! - one hart runs, interrupts off; devices are polled;
//! - physical = virtual (no MMU, no IOMMU), so DMA addresses are plain pointers;
//! - the firmware's entry point is `extern "Rust" fn firmware_main() -> !`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::arch::global_asm;
use core::ptr;

/// Board name for reports.
pub const NAME: &str = "riscv64 (QEMU virt, M-mode, virtio-mmio)";

const VIRTIO_MMIO_BASE: usize = 0x1000_1000;
const VIRTIO_MMIO_SIZE: usize = 0x1000;
const VIRTIO_MMIO_COUNT: usize = 8;

/// 16550 UART, byte-wide registers.
const UART: usize = 0x1000_0000;
/// SiFive test device: 0x5555 = pass, `(code << 16) | 0x3333` = fail with `code`.
const TEST_DEVICE: usize = 0x10_0000;

/// The virtio-mmio slots to probe, as (physical base, size).
pub fn virtio_mmio_slots() -> impl Iterator<Item = (usize, usize)> {
    (0..VIRTIO_MMIO_COUNT).map(|i| (VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, VIRTIO_MMIO_SIZE))
}

fn uart_read(reg: usize) -> u8 {
    // SAFETY: a byte register of the virt machine's 16550 (reg < 8); MMIO, always mapped.
    unsafe { ptr::read_volatile((UART + reg) as *const u8) }
}

fn uart_write(reg: usize, value: u8) {
    // SAFETY: as in `uart_read`.
    unsafe { ptr::write_volatile((UART + reg) as *mut u8, value) }
}

/// Writes bytes to the UART (polled; `\n` becomes `\r\n`).
pub fn console_write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

fn put(b: u8) {
    // Line status register bit 5: transmit holding register empty.
    while uart_read(5) & 0x20 == 0 {}
    uart_write(0, b);
}

/// Ends QEMU with exit status `code` (0 = success).
pub fn exit(code: u8) -> ! {
    let value: u32 = if code == 0 {
        0x5555
    } else {
        (u32::from(code) << 16) | 0x3333
    };
    // SAFETY: the SiFive test device's only register; writing it stops the machine.
    unsafe { ptr::write_volatile(TEST_DEVICE as *mut u32, value) }
    halt()
}

/// Stops the hart for good, leaving QEMU running (until it is killed).
pub fn halt() -> ! {
    loop {
        // SAFETY: `wfi` only waits; with interrupts off it returns spuriously at most.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) }
    }
}

extern "Rust" {
    fn firmware_main() -> !;
}

/// Called by the boot stub on the boot stack, with `.bss` zeroed.
#[no_mangle]
extern "C" fn board_rust_start() -> ! {
    // 8N1, FIFO on.
    uart_write(3, 0x03);
    uart_write(2, 0x01);
    // SAFETY: the firmware defines `firmware_main` with this signature; it is called once.
    unsafe { firmware_main() }
}

global_asm!(
    r#"
    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_stack: .skip 256 * 1024
boot_stack_top:

    .section .text.entry, "ax"
    .global _start
_start:
    csrw mie, zero
    csrr t0, mhartid
    bnez t0, 3f
    la sp, boot_stack_top
    li t0, 0x2000
    csrs mstatus, t0
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  call board_rust_start
3:  wfi
    j 3b
    "#
);

//! QEMU `microvm` board for x86_64, booted through PVH.
//!
//! Boot: QEMU reads the `XEN_ELFNOTE_PHYS32_ENTRY` note and enters [`pvh_start`] in 32-bit
//! protected mode with paging off. The stub zeroes `.bss`, identity-maps the first 4 GiB with
//! 2 MiB pages (the last GiB, where the virtio-mmio window lives, uncached), enables PAE and
//! long mode, loads a flat GDT, and calls the firmware's `firmware_main` on a 256 KiB stack.
//!
//! Invariants:
//! - one CPU, interrupts off for the whole run; devices are polled;
//! - guest physical = virtual for RAM and MMIO, so DMA addresses are plain pointers;
//! - the firmware's entry point is `extern "Rust" fn firmware_main() -> !`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::arch::{asm, global_asm};

/// Board name for reports.
pub const NAME: &str = "x86_64 (QEMU microvm, PVH, virtio-mmio)";

/// microvm's virtio-mmio transports: 0xfeb0_0000 + i * 0x200; 24 with the second IOAPIC
/// (the default), 8 without.
const VIRTIO_MMIO_BASE: usize = 0xfeb0_0000;
const VIRTIO_MMIO_SIZE: usize = 0x200;
const VIRTIO_MMIO_COUNT: usize = 24;

/// COM1.
const COM1: u16 = 0x3f8;
/// isa-debug-exit (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The virtio-mmio slots to probe, as (physical base, size). Physical = virtual on this board.
pub fn virtio_mmio_slots() -> impl Iterator<Item = (usize, usize)> {
    (0..VIRTIO_MMIO_COUNT).map(|i| (VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, VIRTIO_MMIO_SIZE))
}

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O on COM1 and the debug-exit port only (callers pass those constants);
    // neither touches memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reads COM1's line status register; no memory is touched.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) }
    value
}

/// Writes bytes to COM1 (polled; `\n` becomes `\r\n`).
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
    while inb(COM1 + 5) & 0x20 == 0 {}
    outb(COM1, b);
}

/// Ends QEMU. isa-debug-exit makes QEMU exit with `(code << 1) | 1`, so code 0 shows as 1.
pub fn exit(code: u8) -> ! {
    let value = u32::from(code);
    // SAFETY: a 32-bit write to the isa-debug-exit port, which stops the machine.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") value, options(nomem, nostack))
    }
    // Without the exit device (run by hand), stop here.
    halt()
}

/// Stops the CPU for good, leaving QEMU running (until it is killed).
pub fn halt() -> ! {
    loop {
        // SAFETY: halts the CPU; interrupts are off so it stays halted.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

extern "Rust" {
    fn firmware_main() -> !;
}

/// Called by the boot stub in long mode, on the boot stack, with `.bss` zeroed.
#[no_mangle]
extern "C" fn board_rust_start() -> ! {
    // 115200 8N1, FIFO on (QEMU ignores the rate, a real 16550 would not).
    for (reg, val) in [
        (1, 0x00),
        (3, 0x80),
        (0, 0x01),
        (1, 0x00),
        (3, 0x03),
        (2, 0xc7),
    ] {
        outb(COM1 + reg, val);
    }
    // SAFETY: the firmware defines `firmware_main` with this signature; it is called once.
    unsafe { firmware_main() }
}

// The PVH note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), a 32-bit entry address.
global_asm!(
    r#"
    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start
    "#
);

// 32-bit PVH entry → long mode. Page tables and the stack live in .bss (zeroed here first).
global_asm!(
    r#"
    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
boot_stack: .skip 256 * 1024
boot_stack_top:

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .text.pvh, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax

    xor ecx, ecx
2:  mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jne 2b

    xor ecx, ecx
3:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    cmp ecx, 1536
    jb 4f
    or eax, 0x18
4:  mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jne 3b

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    mov eax, offset long_mode_start
    push 0x08
    push eax
    retf

    .code64
long_mode_start:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor ax, ax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    call board_rust_start
5:  hlt
    jmp 5b
    "#
);

//! Shared helpers for the end-to-end tests (real peers: Debian's thin-provisioning-tools,
//! the Linux kernel in QEMU, spdk-rpc).
//!
//! * [`guest_image`]: builds and caches the Linux guest (kernel + initramfs) under build/guest/;
//!   also used by `cargo xtask guest-image`.
//! * [`qemu`]: the [`qemu::Guest`] builder that boots it and runs a script.

pub mod cpio;
pub mod elf;
pub mod guest_image;
pub mod qemu;

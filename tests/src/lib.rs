//! Shared helpers for the end-to-end tests (real peers: Debian's thin-provisioning-tools,
//! the Linux kernel in QEMU, spdk-rpc).
//!
//! * [`xmlgen`] — seeded generator of pool descriptions that follow dm-thin semantics;
//! * [`debian`] — runs Debian's `thin_restore`/`thin_check`/`thin_dump` on files.

pub mod debian;
pub mod xmlgen;

//! Shared helpers for the end-to-end tests (real peers: Debian's thin-provisioning-tools,
//! the Linux kernel in QEMU, spdk-rpc).
//!
//! * [`xmlgen`] — seeded generator of pool descriptions that follow dm-thin semantics;
//! * [`debian`] — runs Debian's `thin_restore`/`thin_check`/`thin_dump` on files;
//! * [`guest_image`]: builds and caches the Linux guest (kernel + initramfs) under build/guest/;
//!   also used by `cargo xtask guest-image`.
//! * [`qemu`]: the [`qemu::Guest`] builder that boots it and runs a script.
//! * [`spdk_rpc`]: runs SPDK's `spdk-rpc` client (and our plugin) against a daemon.

pub mod cpio;
pub mod debian;
pub mod dm_tools;
pub mod elf;
pub mod guest_image;
pub mod kernel_fixtures;
pub mod ours;
pub mod qemu;
pub mod spdk_rpc;
pub mod xmlgen;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str) -> Result<Self, guest_image::GuestError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(guest_image::io_err(format!("creating {}", path.display())))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

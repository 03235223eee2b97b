//! `thin-core`: a thin-provisioning engine whose on-disk metadata is byte-compatible with
//! Linux dm-thin (persistent-data format: checksummed 4 KiB blocks, copy-on-write B-trees,
//! reference-counted space maps, a two-level mapping tree).
//!
//! Layers, each depending only on the ones before it:
//! - [`block`]: the [`block::BlockDevice`] trait (4 KiB metadata blocks) and an in-memory device;
//!   [`checksum`]: CRC-32C with the per-block-type XOR salts.
//! - [`pdata`]: generic persistent data — bounded block cache, transaction manager with
//!   shadowing, B-trees, space maps. Knows nothing of thin devices.
//! - [`thin`]: the dm-thin domain — superblock, device details, the pool and the checker.
//!
//! The engine does no data I/O: it tells the caller which data block to write, copy or zero
//! and records the mapping once the caller has done it.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod block;
pub mod checksum;
#[cfg(feature = "std")]
pub mod file;
pub mod pdata;
pub mod sim;
pub mod thin;

pub use block::{BlockDevice, BlockError, MemDevice, BLOCK_SIZE};

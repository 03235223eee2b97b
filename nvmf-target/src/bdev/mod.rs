//! Block devices behind namespaces: [`malloc`] (RAM), file (regular file or block device) and
//! thin volumes. The controller sees only the [`Bdev`] trait.
//!
//! I/O is synchronous and runs on the reactor that owns the bdev (one owner, no locks): a
//! thin volume's pool metadata belongs to exactly one reactor. Each call returns when its
//! I/O completed; the file bdev moves data through a small io_uring of its own where the
//! kernel allows it (else positional I/O), and [`Bdev::read_segments`] lets a caller hand
//! several reads over at once (a thin volume's data blocks of one request).

use thiserror::Error;

pub mod file;
pub mod lvs;
pub mod malloc;
#[cfg(test)]
pub(crate) mod spy;
pub mod stat;
pub mod thin;

pub use stat::{IoStat, StatBdev};

/// Why a block I/O failed; the controller maps these to NVMe status codes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BdevError {
    /// LBA range beyond the device.
    #[error("LBA range {lba}+{count} is beyond the device ({num_blocks} blocks)")]
    OutOfRange {
        lba: u64,
        count: u64,
        num_blocks: u64,
    },
    /// The backing pool has no free data block (Capacity Exceeded).
    #[error("out of space")]
    NoSpace,
    /// The pool is out of data space and queues writes while it waits to be grown
    /// (dm-thin's default policy): run the write again later.
    #[error("out of data space; waiting for the pool to grow")]
    NoSpaceWait,
    /// The device is read-only.
    #[error("device is read-only")]
    ReadOnly,
    /// The backing store failed.
    #[error("I/O error: {0}")]
    Io(String),
}

/// Thin-provisioning figures of a bdev (for Identify Namespace NUSE and NSFEAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinInfo {
    /// Logical blocks that are allocated (mapped data blocks × LBAs per data block).
    pub allocated_lbas: u64,
}

/// A block device.
pub trait Bdev: Send {
    /// Name (unique within the target).
    fn name(&self) -> &str;
    /// Logical block size in bytes (512 or 4096).
    fn block_size(&self) -> u32;
    /// Number of logical blocks.
    fn num_blocks(&self) -> u64;
    /// A stable UUID (namespace identification descriptors).
    fn uuid(&self) -> [u8; 16];
    /// Reads `buf.len() / block_size` blocks at `lba`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError>;
    /// Reads several `(lba, buffer)` segments, as [`Bdev::read`] would one after the other.
    /// Bdevs that can issue them together override it (the file bdev: one io_uring
    /// submission for all); wrappers forward it so that the batch reaches the bottom.
    fn read_segments(&mut self, segs: &mut [(u64, &mut [u8])]) -> Result<(), BdevError> {
        for (lba, buf) in segs.iter_mut() {
            self.read(*lba, buf)?;
        }
        Ok(())
    }
    /// Writes `data.len() / block_size` blocks at `lba`; `fua` makes them durable first.
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BdevError>;
    /// Writes zeroes to `count` blocks at `lba`.
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError>;
    /// Deallocates `count` blocks at `lba`; afterwards they read as zeroes.
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError>;
    /// Thin-provisioning figures, for thin bdevs.
    fn thin_info(&self) -> Option<ThinInfo> {
        None
    }
    /// Re-reads the device's size after it changed underneath (a grown file); returns
    /// the number of blocks.
    fn rescan(&mut self) -> Result<u64, BdevError> {
        Ok(self.num_blocks())
    }
    /// Called by the reactor regularly with a monotonic time in milliseconds (periodic
    /// commits, out-of-space timeouts).
    fn poll(&mut self, _now_ms: u64) {}
    /// I/O counters, for bdevs that keep them ([`StatBdev`]).
    fn io_stat(&self) -> Option<&IoStat> {
        None
    }
    /// I/O counters, to reset them.
    fn io_stat_mut(&mut self) -> Option<&mut IoStat> {
        None
    }
}

/// Checks that `[lba, lba + count)` lies within `num_blocks`.
pub fn check_range(lba: u64, count: u64, num_blocks: u64) -> Result<(), BdevError> {
    match lba.checked_add(count) {
        Some(end) if end <= num_blocks => Ok(()),
        _ => Err(BdevError::OutOfRange {
            lba,
            count,
            num_blocks,
        }),
    }
}

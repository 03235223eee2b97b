//! The two disks: the metadata disk as thin-core's [`BlockDevice`] (one 4 KiB metadata block
//! = 8 sectors), and the data disk addressed in data blocks of [`DATA_BLOCK_SECTORS`].
//!
//! Which disk is which comes from its virtio serial (`-drive …,serial=thin-meta` /
//! `thin-data`), never from probe order.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::string::String;
use alloc::vec::Vec;

use thin_core::block::{check_range, Block};
use thin_core::{BlockDevice, BlockError};

use crate::hal::Blk;

/// virtio-blk sector size.
pub const SECTOR: usize = 512;
/// Sectors per metadata block.
const META_SECTORS: u64 = 8;
/// Data block size of the pool, in sectors (64 KiB), as dm-thin counts it.
pub const DATA_BLOCK_SECTORS: u32 = 128;
/// Data block size in bytes.
pub const DATA_BLOCK_BYTES: usize = DATA_BLOCK_SECTORS as usize * SECTOR;

/// Serial of the metadata disk.
pub const META_SERIAL: &str = "thin-meta";
/// Serial of the data disk.
pub const DATA_SERIAL: &str = "thin-data";
/// Serial of the out-of-space phase's metadata disk.
pub const OOS_META_SERIAL: &str = "oos-meta";
/// Serial of the out-of-space phase's data disk.
pub const OOS_DATA_SERIAL: &str = "oos-data";

/// The disks the firmware uses.
pub struct Disks {
    pub meta: MetaDisk,
    pub data: DataDisk,
    /// The out-of-space phase's pair (boot 2 requires them).
    pub oos: Option<(MetaDisk, DataDisk)>,
}

/// Finds the metadata and data disks among `devices` by serial.
pub fn pick(devices: Vec<Blk>) -> Result<Disks, String> {
    let mut meta = None;
    let mut data = None;
    let mut oos_meta = None;
    let mut oos_data = None;
    for mut blk in devices {
        let mut id = [0u8; 20];
        let len = blk
            .device_id(&mut id)
            .map_err(|e| alloc::format!("GET_ID: {e}"))?;
        let serial = core::str::from_utf8(id.get(..len).unwrap_or(&[])).unwrap_or("?");
        crate::println!("disk {serial:?}: {} sectors", blk.capacity());
        match serial {
            META_SERIAL if meta.is_none() => meta = Some(blk),
            DATA_SERIAL if data.is_none() => data = Some(blk),
            OOS_META_SERIAL if oos_meta.is_none() => oos_meta = Some(MetaDisk::new(blk)),
            OOS_DATA_SERIAL if oos_data.is_none() => oos_data = Some(DataDisk::new(blk)),
            _ => {}
        }
    }
    let meta =
        meta.ok_or_else(|| alloc::format!("no virtio-blk disk with serial {META_SERIAL}"))?;
    let data =
        data.ok_or_else(|| alloc::format!("no virtio-blk disk with serial {DATA_SERIAL}"))?;
    Ok(Disks {
        meta: MetaDisk::new(meta),
        data: DataDisk::new(data),
        oos: oos_meta.zip(oos_data),
    })
}

/// Metadata blocks written since boot.
static META_WRITES: AtomicU64 = AtomicU64::new(0);

/// Metadata blocks written since boot (the crash test reports how many reached the disk
/// after the last commit).
pub fn meta_writes() -> u64 {
    META_WRITES.load(Ordering::Relaxed)
}

fn sector_index(sector: u64) -> Option<usize> {
    usize::try_from(sector).ok()
}

/// The metadata disk, in 4 KiB blocks. Errors latch: after a failed write or flush every call
/// answers [`BlockError::PreviousIo`].
/// The pool sees the first `nr_blocks` blocks (the window: all of the disk unless
/// [`MetaDisk::set_window`] narrows it, as a small metadata volume later grown would).
pub struct MetaDisk {
    blk: Blk,
    nr_blocks: u64,
    capacity: u64,
    failed: bool,
}

impl MetaDisk {
    fn new(blk: Blk) -> Self {
        let nr_blocks = blk.capacity() / META_SECTORS;
        MetaDisk {
            blk,
            nr_blocks,
            capacity: nr_blocks,
            failed: false,
        }
    }

    /// Shows the pool the first `nr_blocks` blocks (at most the disk); returns the window.
    pub fn set_window(&mut self, nr_blocks: u64) -> u64 {
        self.nr_blocks = nr_blocks.min(self.capacity);
        self.nr_blocks
    }

    /// Metadata blocks on the disk.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn start(&self, block: u64) -> Result<usize, BlockError> {
        if self.failed {
            return Err(BlockError::PreviousIo);
        }
        check_range(block, self.nr_blocks)?;
        sector_index(block * META_SECTORS).ok_or(BlockError::OutOfRange {
            block,
            nr_blocks: self.nr_blocks,
        })
    }
}

impl BlockDevice for MetaDisk {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        let s = self.start(block)?;
        self.blk
            .read_blocks(s, buf)
            .map_err(|_| BlockError::Read { block })
    }

    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        let s = self.start(block)?;
        self.blk.write_blocks(s, buf).map_err(|_| {
            self.failed = true;
            BlockError::Write { block }
        })?;
        META_WRITES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::PreviousIo);
        }
        self.blk.flush().map_err(|_| {
            self.failed = true;
            BlockError::Flush
        })
    }
}

/// The data disk, in whole data blocks or sector ranges of one.
pub struct DataDisk {
    blk: Blk,
    nr_blocks: u64,
}

impl DataDisk {
    fn new(blk: Blk) -> Self {
        let nr_blocks = blk.capacity() / u64::from(DATA_BLOCK_SECTORS);
        DataDisk { blk, nr_blocks }
    }

    /// Whole data blocks on the disk.
    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// First sector of `sector_in_block` in data block `block`.
    fn sector(&self, block: u64, sector_in_block: usize, len: usize) -> Result<usize, String> {
        let end = sector_in_block * SECTOR + len;
        if block >= self.nr_blocks
            || len == 0
            || !len.is_multiple_of(SECTOR)
            || end > DATA_BLOCK_BYTES
        {
            return Err(alloc::format!(
                "data I/O out of range: block {block}, sector {sector_in_block}, {len} bytes"
            ));
        }
        sector_index(block * u64::from(DATA_BLOCK_SECTORS) + sector_in_block as u64)
            .ok_or_else(|| alloc::format!("data block {block} beyond address space"))
    }

    /// Reads sectors of data block `block` starting at `sector_in_block` into `buf`.
    pub fn read(
        &mut self,
        block: u64,
        sector_in_block: usize,
        buf: &mut [u8],
    ) -> Result<(), String> {
        let s = self.sector(block, sector_in_block, buf.len())?;
        self.blk
            .read_blocks(s, buf)
            .map_err(|e| alloc::format!("reading data block {block}: {e}"))
    }

    /// Writes `buf` to data block `block` from `sector_in_block` on.
    pub fn write(&mut self, block: u64, sector_in_block: usize, buf: &[u8]) -> Result<(), String> {
        let s = self.sector(block, sector_in_block, buf.len())?;
        self.blk
            .write_blocks(s, buf)
            .map_err(|e| alloc::format!("writing data block {block}: {e}"))
    }

    /// Makes the data writes durable.
    pub fn flush(&mut self) -> Result<(), String> {
        self.blk
            .flush()
            .map_err(|e| alloc::format!("flushing the data disk: {e}"))
    }
}

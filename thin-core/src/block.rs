//! The bottom of the stack: a device of 4 KiB metadata blocks.
//!
//! Invariants:
//! - every transfer is one whole, aligned 4096-byte block;
//! - after a failed write or flush a [`LatchingDevice`] answers [`BlockError::PreviousIo`] to
//!   everything until it is rebuilt, so a half-written transaction can never be committed.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

/// Metadata block size in bytes (fixed by the dm-thin format).
pub const BLOCK_SIZE: usize = 4096;
/// Metadata block size in 512-byte sectors.
pub const BLOCK_SECTORS: u32 = 8;

/// One metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Errors of the block layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    /// The device failed to read the block.
    Read { block: u64 },
    /// The device failed to write the block.
    Write { block: u64 },
    /// The device failed to flush its cache.
    Flush,
    /// The block lies beyond the end of the device.
    OutOfRange { block: u64, nr_blocks: u64 },
    /// An earlier write or flush failed; nothing more is accepted until reopen.
    PreviousIo,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Read { block } => write!(f, "I/O error reading metadata block {block}"),
            BlockError::Write { block } => write!(f, "I/O error writing metadata block {block}"),
            BlockError::Flush => write!(f, "I/O error flushing the metadata device"),
            BlockError::OutOfRange { block, nr_blocks } => write!(
                f,
                "metadata block {block} is beyond the end of the device ({nr_blocks} blocks)"
            ),
            BlockError::PreviousIo => write!(f, "an earlier metadata write or flush failed"),
        }
    }
}

/// A device of 4 KiB blocks holding pool metadata.
pub trait BlockDevice {
    /// Number of 4 KiB blocks.
    fn nr_blocks(&self) -> u64;
    /// Reads block `block` into `buf`.
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError>;
    /// Writes `buf` to block `block`. It is durable only after [`BlockDevice::flush`].
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for Box<T> {
    fn nr_blocks(&self) -> u64 {
        (**self).nr_blocks()
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        (**self).read_block(block, buf)
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        (**self).write_block(block, buf)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn nr_blocks(&self) -> u64 {
        (**self).nr_blocks()
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        (**self).read_block(block, buf)
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        (**self).write_block(block, buf)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
}

/// Checks that `block` exists on a device of `nr_blocks` blocks.
pub fn check_range(block: u64, nr_blocks: u64) -> Result<(), BlockError> {
    if block < nr_blocks {
        Ok(())
    } else {
        Err(BlockError::OutOfRange { block, nr_blocks })
    }
}

/// A RAM-backed device; blocks never written read as zeroes.
#[derive(Clone)]
pub struct MemDevice {
    nr_blocks: u64,
    blocks: Vec<Option<Box<Block>>>,
}

impl fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDevice")
            .field("nr_blocks", &self.nr_blocks)
            .finish()
    }
}

impl MemDevice {
    /// A zero-filled device of `nr_blocks` blocks (memory is used only for written blocks).
    pub fn new(nr_blocks: u64) -> Self {
        let mut blocks = Vec::new();
        blocks.resize_with(nr_blocks as usize, || None);
        MemDevice { nr_blocks, blocks }
    }

    /// Builds a device from a raw image (its length is rounded down to whole blocks).
    pub fn from_image(image: &[u8]) -> Self {
        let mut dev = MemDevice::new((image.len() / BLOCK_SIZE) as u64);
        for (i, chunk) in image.chunks_exact(BLOCK_SIZE).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                let mut b = Box::new([0u8; BLOCK_SIZE]);
                b.copy_from_slice(chunk);
                dev.blocks[i] = Some(b);
            }
        }
        dev
    }

    /// The raw image of the device.
    pub fn to_image(&self) -> Vec<u8> {
        let mut out = alloc::vec![0u8; self.blocks.len() * BLOCK_SIZE];
        for (i, b) in self.blocks.iter().enumerate() {
            if let Some(b) = b {
                out[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE].copy_from_slice(&b[..]);
            }
        }
        out
    }

    /// Grows the device to `nr_blocks` (never shrinks).
    pub fn grow(&mut self, nr_blocks: u64) {
        if nr_blocks > self.nr_blocks {
            self.blocks.resize_with(nr_blocks as usize, || None);
            self.nr_blocks = nr_blocks;
        }
    }

    /// Direct access to a block, for tests that corrupt metadata on purpose.
    pub fn block_mut(&mut self, block: u64) -> Option<&mut Block> {
        let slot = self.blocks.get_mut(block as usize)?;
        Some(&mut **slot.get_or_insert_with(|| Box::new([0u8; BLOCK_SIZE])))
    }
}

impl BlockDevice for MemDevice {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        check_range(block, self.nr_blocks)?;
        match &self.blocks[block as usize] {
            Some(b) => buf.copy_from_slice(&b[..]),
            None => buf.fill(0),
        }
        Ok(())
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        check_range(block, self.nr_blocks)?;
        let slot = &mut self.blocks[block as usize];
        match slot {
            Some(b) => b.copy_from_slice(buf),
            None => *slot = Some(Box::new(*buf)),
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// Wraps a device so that the first failed write or flush latches: every later call fails
/// with [`BlockError::PreviousIo`].
#[derive(Debug)]
pub struct LatchingDevice<D> {
    inner: D,
    failed: bool,
}

impl<D: BlockDevice> LatchingDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        LatchingDevice {
            inner,
            failed: false,
        }
    }
    /// Gives the wrapped device back.
    pub fn into_inner(self) -> D {
        self.inner
    }
    /// Whether an earlier write or flush failed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }
}

impl<D: BlockDevice> BlockDevice for LatchingDevice<D> {
    fn nr_blocks(&self) -> u64 {
        self.inner.nr_blocks()
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::PreviousIo);
        }
        self.inner.read_block(block, buf)
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::PreviousIo);
        }
        let r = self.inner.write_block(block, buf);
        self.failed = r.is_err();
        r
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::PreviousIo);
        }
        let r = self.inner.flush();
        self.failed = r.is_err();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_round_trip_and_bounds() {
        let mut d = MemDevice::new(4);
        let mut b = [0u8; BLOCK_SIZE];
        b[7] = 9;
        d.write_block(3, &b).unwrap();
        let mut r = [1u8; BLOCK_SIZE];
        d.read_block(3, &mut r).unwrap();
        assert_eq!(r[7], 9);
        d.read_block(0, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 0));
        assert_eq!(
            d.read_block(4, &mut r),
            Err(BlockError::OutOfRange {
                block: 4,
                nr_blocks: 4
            })
        );
        let img = d.to_image();
        assert_eq!(MemDevice::from_image(&img).to_image(), img);
    }
}

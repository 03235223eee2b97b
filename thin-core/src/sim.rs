//! Deterministic crash simulation support: a device that records every write and flush, and
//! the reconstruction of what a disk may hold after a crash at any point of that history.
//!
//! Crash model: writes completed before the last flush are durable; writes after it may each
//! have reached the disk or not, in any combination (a disk reorders freely between flushes),
//! and the last one that did may be torn at a 512-byte sector boundary.

use crate::block::{Block, BlockDevice, BlockError, MemDevice, BLOCK_SIZE};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// One recorded device operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// A block write.
    Write(u64, Box<Block>),
    /// A cache flush.
    Flush,
}

/// A RAM device that logs every write and flush.
#[derive(Debug, Clone)]
pub struct RecordingDevice {
    inner: MemDevice,
    /// Every operation, in order.
    pub log: Vec<Op>,
}

impl RecordingDevice {
    /// Records on top of `inner` (its current content is the starting point).
    pub fn new(inner: MemDevice) -> Self {
        RecordingDevice {
            inner,
            log: Vec::new(),
        }
    }
}

impl BlockDevice for RecordingDevice {
    fn nr_blocks(&self) -> u64 {
        self.inner.nr_blocks()
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        self.inner.read_block(block, buf)
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        self.inner.write_block(block, buf)?;
        self.log.push(Op::Write(block, Box::new(*buf)));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.log.push(Op::Flush);
        Ok(())
    }
}

/// How the writes after the last flush fared in a crash.
#[derive(Debug, Clone, Copy)]
pub struct CrashShape {
    /// Bit `i` set: pending write `i` (counting from the last flush) reached the disk.
    /// Pending writes beyond 64 are taken to have reached it.
    pub kept: u64,
    /// Sectors (1..8) of the last kept write that reached the disk; 8 = not torn.
    pub torn_sectors: u8,
}

/// Replays a log onto a base image, one operation at a time, and builds crash images.
#[derive(Debug)]
pub struct Replayer {
    durable: MemDevice,
    pending: Vec<(u64, Box<Block>)>,
}

impl Replayer {
    /// Starts from `base`.
    pub fn new(base: MemDevice) -> Self {
        Replayer {
            durable: base,
            pending: Vec::new(),
        }
    }

    /// Applies the next operation of the history.
    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Write(b, data) => self.pending.push((*b, data.clone())),
            Op::Flush => {
                for (b, d) in self.pending.drain(..) {
                    // The device accepted it once; it can again.
                    let _ = self.durable.write_block(b, &d);
                }
            }
        }
    }

    /// Writes since the last flush.
    pub fn nr_pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether the pending write `i` targets `block`.
    pub fn pending_block(&self, i: usize) -> Option<u64> {
        self.pending.get(i).map(|(b, _)| *b)
    }

    /// The disk after a crash now, shaped by `shape`.
    pub fn crash_image(&self, shape: CrashShape) -> MemDevice {
        let mut dev = self.durable.clone();
        let kept: Vec<usize> = (0..self.pending.len())
            .filter(|&i| i >= 64 || shape.kept & (1 << i) != 0)
            .collect();
        let last = kept.last().copied();
        for i in kept {
            let (b, d) = &self.pending[i];
            if Some(i) == last && shape.torn_sectors < 8 {
                let mut old = [0u8; BLOCK_SIZE];
                let _ = dev.read_block(*b, &mut old);
                let cut = 512 * usize::from(shape.torn_sectors.max(1));
                old[..cut].copy_from_slice(&d[..cut]);
                let _ = dev.write_block(*b, &old);
            } else {
                let _ = dev.write_block(*b, d);
            }
        }
        dev
    }
}

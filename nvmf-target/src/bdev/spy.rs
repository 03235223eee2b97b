//! For tests of the layers above a bdev: a malloc bdev that logs how it is called.

use std::sync::{Arc, Mutex, MutexGuard};

use super::malloc::Malloc;
use super::{Bdev, BdevError};

/// What reached a [`Spy`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SpyLog {
    /// `read` calls.
    pub reads: usize,
    /// Segments of each `read_segments` call, in order.
    pub segment_calls: Vec<usize>,
    /// `flush` calls.
    pub flushes: usize,
}

/// The log of a [`Spy`], shared with the test.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<SpyLog>>);

impl Log {
    pub fn get(&self) -> MutexGuard<'_, SpyLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the log and clears it.
    pub fn take(&self) -> SpyLog {
        std::mem::take(&mut *self.get())
    }
}

/// A malloc bdev that logs reads, segment batches and flushes into a [`Log`].
pub(crate) struct Spy {
    inner: Malloc,
    log: Log,
}

impl Spy {
    pub fn new(inner: Malloc) -> (Self, Log) {
        let log = Log::default();
        (
            Self {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

impl Bdev for Spy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        self.log.get().reads += 1;
        self.inner.read(lba, buf)
    }
    fn read_segments(&mut self, segs: &mut [(u64, &mut [u8])]) -> Result<(), BdevError> {
        self.log.get().segment_calls.push(segs.len());
        self.inner.read_segments(segs)
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        self.inner.write(lba, data, fua)
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        self.log.get().flushes += 1;
        self.inner.flush()
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.inner.write_zeroes(lba, count)
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.inner.deallocate(lba, count)
    }
}

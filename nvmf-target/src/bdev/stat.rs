//! Per-bdev I/O statistics, SPDK's `bdev_get_iostat` counters.
//!
//! [`StatBdev`] wraps any [`Bdev`] and counts every successful read, write and unmap
//! (deallocate) that reaches it, whoever issues it (the NVMe I/O path, an RPC). Counters are
//! plain `u64`s owned by whoever owns the bdev (the reactor while it is exported), so the
//! I/O path takes no lock; management reads them through `TargetHandle::with_state`.
//!
//! Invariants:
//! * only successful I/Os are counted (as SPDK does); Write Zeroes and Flush are not
//!   counted (SPDK has no counter for them);
//! * [`Bdev::read_segments`] is forwarded as one call (the inner bdev may batch it) and
//!   counts one read per segment, each with the whole call's latency;
//! * latencies are in ticks of [`TICK_RATE`] per second (nanoseconds), measured around the
//!   bdev call; `min_*` is 0 while no I/O of that kind happened;
//! * counters never wrap in practice (`saturating_add`).

use std::sync::OnceLock;
use std::time::Instant;

use super::{Bdev, BdevError, ThinInfo};

/// Ticks per second of every latency and of [`now_ticks`]: nanoseconds.
pub const TICK_RATE: u64 = 1_000_000_000;

/// Monotonic ticks since the first call in this process.
pub fn now_ticks() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Counters of one I/O kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStat {
    pub bytes: u64,
    pub ops: u64,
    pub latency_ticks: u64,
    pub max_latency_ticks: u64,
    /// Meaningful only when `ops > 0`.
    pub min_latency_ticks: u64,
}

impl OpStat {
    /// Records one completed I/O of `bytes` that took `ticks`.
    pub fn record(&mut self, bytes: u64, ticks: u64) {
        self.min_latency_ticks = if self.ops == 0 {
            ticks
        } else {
            self.min_latency_ticks.min(ticks)
        };
        self.max_latency_ticks = self.max_latency_ticks.max(ticks);
        self.ops = self.ops.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
        self.latency_ticks = self.latency_ticks.saturating_add(ticks);
    }

    fn reset_maxmin(&mut self) {
        self.max_latency_ticks = 0;
        self.min_latency_ticks = 0;
    }
}

/// What `bdev_get_iostat --reset-mode` clears after reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// Everything.
    All,
    /// Only the min/max latencies.
    MaxMin,
    /// Only error counters (we keep none).
    Error,
    /// Nothing.
    None,
}

/// SPDK's `spdk_bdev_io_stat` subset: read, write, unmap, copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStat {
    pub read: OpStat,
    pub write: OpStat,
    pub unmap: OpStat,
    /// We have no copy command; always zero, reported for SPDK's shape.
    pub copy: OpStat,
}

impl IoStat {
    pub fn reset(&mut self, mode: ResetMode) {
        match mode {
            ResetMode::All => *self = Self::default(),
            ResetMode::MaxMin => {
                for s in [
                    &mut self.read,
                    &mut self.write,
                    &mut self.unmap,
                    &mut self.copy,
                ] {
                    s.reset_maxmin();
                }
            }
            ResetMode::Error | ResetMode::None => {}
        }
    }
}

/// A bdev whose I/O is counted.
pub struct StatBdev {
    inner: Box<dyn Bdev>,
    stat: IoStat,
}

impl StatBdev {
    pub fn new(inner: Box<dyn Bdev>) -> Self {
        Self::with_stat(inner, IoStat::default())
    }

    /// Continues counting from `stat` (a bdev re-wrapped after an export).
    pub fn with_stat(inner: Box<dyn Bdev>, stat: IoStat) -> Self {
        Self { inner, stat }
    }
}

/// Runs `f`, records its duration and `bytes` into `s` on success.
fn timed<T>(
    s: &mut OpStat,
    bytes: u64,
    f: impl FnOnce() -> Result<T, BdevError>,
) -> Result<T, BdevError> {
    let t = Instant::now();
    let r = f();
    if r.is_ok() {
        let ticks = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.record(bytes, ticks);
    }
    r
}

impl Bdev for StatBdev {
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
        let inner = &mut self.inner;
        timed(&mut self.stat.read, buf.len() as u64, || {
            inner.read(lba, buf)
        })
    }
    fn read_segments(&mut self, segs: &mut [(u64, &mut [u8])]) -> Result<(), BdevError> {
        // Forwarded whole, so that the inner bdev can batch them; each segment counts as
        // one read whose latency is the batch's (they were in flight together).
        let t = Instant::now();
        let r = self.inner.read_segments(segs);
        if r.is_ok() {
            let ticks = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            for (_, buf) in segs.iter() {
                self.stat.read.record(buf.len() as u64, ticks);
            }
        }
        r
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let inner = &mut self.inner;
        timed(&mut self.stat.write, data.len() as u64, || {
            inner.write(lba, data, fua)
        })
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        self.inner.flush()
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.inner.write_zeroes(lba, count)
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        let bytes = count.saturating_mul(u64::from(self.inner.block_size()));
        let inner = &mut self.inner;
        timed(&mut self.stat.unmap, bytes, || inner.deallocate(lba, count))
    }
    fn thin_info(&self) -> Option<ThinInfo> {
        self.inner.thin_info()
    }
    fn poll(&mut self, now_ms: u64) {
        self.inner.poll(now_ms)
    }
    fn io_stat(&self) -> Option<&IoStat> {
        Some(&self.stat)
    }
    fn io_stat_mut(&mut self) -> Option<&mut IoStat> {
        Some(&mut self.stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::malloc::Malloc;

    #[test]
    fn counts_successful_reads_writes_and_unmaps() {
        let m = Malloc::new("m", 64, 512, [1; 16]).expect("malloc");
        let mut b = StatBdev::new(Box::new(m));
        b.write(0, &[7u8; 1024], false).expect("write");
        b.write(2, &[7u8; 512], false).expect("write");
        let mut buf = [0u8; 2048];
        b.read(0, &mut buf).expect("read");
        b.deallocate(0, 4).expect("unmap");
        b.write_zeroes(0, 4).expect("write zeroes");
        b.flush().expect("flush");
        assert!(b.read(63, &mut buf).is_err(), "out of range");
        let s = *b.io_stat().expect("stat");
        assert_eq!((s.write.ops, s.write.bytes), (2, 1536));
        assert_eq!((s.read.ops, s.read.bytes), (1, 2048));
        assert_eq!((s.unmap.ops, s.unmap.bytes), (1, 2048));
        assert_eq!(s.copy, OpStat::default());
        assert!(s.write.min_latency_ticks <= s.write.max_latency_ticks);
        assert!(s.write.max_latency_ticks <= s.write.latency_ticks);
        b.io_stat_mut().expect("stat").reset(ResetMode::MaxMin);
        let s = *b.io_stat().expect("stat");
        assert_eq!((s.write.ops, s.write.max_latency_ticks), (2, 0));
        b.io_stat_mut().expect("stat").reset(ResetMode::All);
        assert_eq!(*b.io_stat().expect("stat"), IoStat::default());
    }

    #[test]
    fn read_segments_are_forwarded_whole_and_counted_as_reads() {
        let m = Malloc::new("m", 64, 512, [1; 16]).expect("malloc");
        let (spy, log) = crate::bdev::spy::Spy::new(m);
        let mut b = StatBdev::new(Box::new(spy));
        b.write(0, &[7u8; 2048], false).expect("write");
        let (mut x, mut y) = ([0u8; 512], [0u8; 1024]);
        b.read_segments(&mut [(1, &mut x[..]), (2, &mut y[..])])
            .expect("read_segments");
        assert!(x.iter().chain(&y).all(|&v| v == 7));
        let s = *b.io_stat().expect("stat");
        assert_eq!(
            (s.read.ops, s.read.bytes),
            (2, 1536),
            "one read per segment"
        );
        assert!(s.read.latency_ticks >= s.read.max_latency_ticks);
        let mut over = [0u8; 1024];
        assert!(b.read_segments(&mut [(63, &mut over[..])]).is_err());
        assert_eq!(
            b.io_stat().expect("stat").read.ops,
            2,
            "failures are not counted"
        );
        assert_eq!(
            log.get().segment_calls,
            [2, 1],
            "both calls reached the inner bdev whole"
        );
    }
}

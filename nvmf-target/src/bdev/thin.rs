//! Thin volumes: bdevs backed by a thin pool (dm-thin metadata on one file or device, data
//! on another).
//!
//! - Reads of unmapped blocks return zeroes.
//! - A first write to a data block provisions it; a partial write zero-fills the rest of
//!   the new block, or copies it from the shared block it replaces (the pool's two-phase
//!   plan: the data goes to disk before the mapping is recorded).
//! - Flush and FUA flush the data device, then commit the pool (data before the metadata
//!   that references it, as dm-thin does). A pool with changes also commits every
//!   `commit_interval_ms` (1 s by default) from [`Bdev::poll`].
//! - Deallocate unmaps whole data blocks (their space returns to the pool at the next
//!   commit) and zeroes the covered part of partially covered mapped blocks, so deallocated
//!   ranges always read as zeroes.
//! - Out of data space follows dm-thin's two policies. By default writes that need a new
//!   block wait for the pool to grow: they fail with [`BdevError::NoSpaceWait`] (the
//!   transport parks them and runs them again every tick) for up to
//!   [`DEFAULT_NO_SPACE_TIMEOUT_MS`] (60 s, dm-thin's `no_space_timeout`), then with
//!   [`BdevError::NoSpace`] until space comes back (a grow, or blocks freed by a discard or
//!   a delete). With a timeout of 0 (`error_if_no_space`) they fail at once. Either way
//!   reads and writes to blocks already owned keep working, and nothing is half-recorded.
//!
//! - Low-water mark (dm-thin's `low_water_mark` table argument): when a write provisions a
//!   data block and the free data blocks fall to or below the mark, one `warn!` event is
//!   logged; the mark re-arms once free blocks are above it again (checked after commits
//!   and growth). The check reads the space map's free count: O(1) per provisioning write.
//!
//! All volumes of a pool share its state through an `Arc<Mutex<…>>`. They live on the one
//! reactor that owns the pool, so the mutex is never contended; it exists to make the
//! volumes `Send` for the hand-over to that reactor.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use thin_core::block::{Block, BlockDevice, BlockError, BLOCK_SIZE};
use thin_core::pdata::tm::Which;
use thin_core::thin::{
    FormatOptions, OpenOptions as PoolOpenOptions, Pool, PoolError, PoolStats, WritePlan,
};

use super::file::FileBdev;
use super::{check_range, Bdev, BdevError, ThinInfo};

/// Metadata cache per pool, in 4 KiB blocks (16 MiB).
pub const DEFAULT_CACHE_BLOCKS: usize = 4096;
/// Default periodic commit interval.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1000;
/// How long writes wait for a pool out of data space to grow (dm-thin's default).
pub const DEFAULT_NO_SPACE_TIMEOUT_MS: u64 = 60_000;
/// Most mapped data-block pieces of one read handed to the data device in one
/// [`Bdev::read_segments`] call (2 MiB of 64 KiB blocks); longer reads make several calls.
const READ_SEGMENTS_MAX: usize = 32;

fn pool_err(e: PoolError) -> BdevError {
    match e {
        PoolError::NoDataSpace | PoolError::NoMetadataSpace => BdevError::NoSpace,
        PoolError::ReadOnly => BdevError::ReadOnly,
        e => BdevError::Io(e.to_string()),
    }
}

/// A byte range of a bdev: `len` bytes from `start`, or to the end of the device when
/// `len` is `None` (a region that grows with the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: Option<u64>,
}

impl Region {
    /// The whole device.
    pub const WHOLE: Region = Region {
        start: 0,
        len: None,
    };

    fn bytes_on(&self, dev: &dyn Bdev) -> u64 {
        let total = dev.num_blocks() * u64::from(dev.block_size());
        let avail = total.saturating_sub(self.start);
        self.len.map_or(avail, |l| l.min(avail))
    }

    fn check(&self, dev: &dyn Bdev, what: &str) -> Result<(), BdevError> {
        if !self.start.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(BdevError::Io(format!(
                "{what} region of {} does not start on a 4 KiB boundary",
                dev.name()
            )));
        }
        Ok(())
    }
}

/// The dm-thin metadata device: 4 KiB blocks in a region of a bdev. When the pool keeps its
/// data on the same bdev, the data path reaches that bdev through [`MetaDev::bdev`].
pub struct MetaDev {
    bdev: Box<dyn Bdev>,
    region: Region,
    nr_blocks: u64,
}

impl MetaDev {
    fn new(bdev: Box<dyn Bdev>, region: Region) -> Result<Self, BdevError> {
        region.check(bdev.as_ref(), "metadata")?;
        let nr_blocks = region.bytes_on(bdev.as_ref()) / BLOCK_SIZE as u64;
        Ok(Self {
            bdev,
            region,
            nr_blocks,
        })
    }

    fn lba(&self, block: u64) -> Result<u64, BlockError> {
        if block >= self.nr_blocks {
            return Err(BlockError::OutOfRange {
                block,
                nr_blocks: self.nr_blocks,
            });
        }
        Ok((self.region.start + block * BLOCK_SIZE as u64) / u64::from(self.bdev.block_size()))
    }
}

fn block_io(e: &BdevError, err: BlockError) -> BlockError {
    log::error!("metadata device: {e}");
    err
}

impl BlockDevice for MetaDev {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        let lba = self.lba(block)?;
        self.bdev
            .read(lba, buf)
            .map_err(|e| block_io(&e, BlockError::Read { block }))
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        let lba = self.lba(block)?;
        self.bdev
            .write(lba, buf, false)
            .map_err(|e| block_io(&e, BlockError::Write { block }))
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.bdev
            .flush()
            .map_err(|e| block_io(&e, BlockError::Flush))
    }
}

struct Inner {
    pool: Pool<MetaDev>,
    /// The data bdev; `None` when the data lives on the metadata bdev.
    data: Option<Box<dyn Bdev>>,
    data_region: Region,
    block_bytes: u64,
    /// Metadata changed since the last commit (the periodic commit's trigger).
    dirty: bool,
    last_commit_ms: u64,
    commit_interval_ms: u64,
    scratch: Vec<u8>,
    /// 0: fail writes at once when out of data space (`error_if_no_space`).
    no_space_timeout_ms: u64,
    /// When the pool ran out of data space (cleared once a block is allocated again).
    out_of_space_since: Option<u64>,
    /// The wait expired: writes that need a new block fail until space comes back.
    out_of_space_failing: bool,
    /// Latest time seen by [`Bdev::poll`].
    now_ms: u64,
    /// Free data blocks at or below which the low-water event fires (0: off).
    low_water_blocks: u64,
    /// The event fired and free blocks have not been above the mark since.
    low_water_crossed: bool,
    /// A provisioning write failed for want of a data block and none has succeeded since.
    out_of_data_space: bool,
}

/// What `dmsetup status` reports for a pool, plus the low-water state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub stats: PoolStats,
    pub low_water_blocks: u64,
    pub low_water_crossed: bool,
    /// dm-thin's `out_of_data_space` mode: an allocation failed and no block is free.
    pub out_of_data_space: bool,
}

impl Inner {
    /// Free data blocks now (the space map's counter: O(1)).
    fn free_data_blocks(&mut self) -> u64 {
        self.pool.tm().space_map(Which::Data).nr_free()
    }

    /// Fires the low-water event once per crossing and re-arms it when free blocks are
    /// above the mark again. O(1).
    fn check_low_water(&mut self) {
        if self.low_water_blocks == 0 {
            self.low_water_crossed = false;
            return;
        }
        let free = self.free_data_blocks();
        if free <= self.low_water_blocks {
            if !self.low_water_crossed {
                self.low_water_crossed = true;
                log::warn!(
                    "thin pool: free data blocks {free} at or below the low-water mark {}",
                    self.low_water_blocks
                );
            }
        } else if self.low_water_crossed {
            self.low_water_crossed = false;
            log::info!(
                "thin pool: free data blocks {free} above the low-water mark {} again",
                self.low_water_blocks
            );
        }
    }

    /// The error for a write that found no free data block.
    fn out_of_space(&mut self) -> BdevError {
        if self.no_space_timeout_ms == 0 {
            return BdevError::NoSpace;
        }
        let now = self.now_ms;
        let since = *self.out_of_space_since.get_or_insert_with(|| {
            log::warn!(
                "thin pool out of data space: writes that need a new block wait up to {} s \
                 for the pool to grow",
                self.no_space_timeout_ms / 1000
            );
            now
        });
        if now.saturating_sub(since) < self.no_space_timeout_ms {
            BdevError::NoSpaceWait
        } else {
            if !std::mem::replace(&mut self.out_of_space_failing, true) {
                log::error!(
                    "thin pool still out of data space after {} s: failing writes that need \
                     a new block until it grows",
                    self.no_space_timeout_ms / 1000
                );
            }
            BdevError::NoSpace
        }
    }

    fn data_dev(&mut self) -> &mut dyn Bdev {
        match &mut self.data {
            Some(d) => d.as_mut(),
            None => self.pool.tm().cache.dev_mut().bdev.as_mut(),
        }
    }

    /// The data device's LBA of byte `off` of data block `block`.
    fn data_lba(&mut self, block: u64, off: u64) -> u64 {
        let pos = self.data_region.start + block * self.block_bytes + off;
        pos / u64::from(self.data_dev().block_size())
    }

    /// Reads `buf.len()` bytes at byte `off` of data block `block`.
    fn data_read(&mut self, block: u64, off: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let lba = self.data_lba(block, off);
        self.data_dev().read(lba, buf)
    }

    /// Writes `data` at byte `off` of data block `block`.
    fn data_write(&mut self, block: u64, off: u64, data: &[u8]) -> Result<(), BdevError> {
        let pos = self.data_region.start + block * self.block_bytes + off;
        let dev = self.data_dev();
        let lba = pos / u64::from(dev.block_size());
        dev.write(lba, data, false)
    }

    /// Data blocks the data region holds now.
    fn data_blocks(&mut self) -> u64 {
        let region = self.data_region;
        let bb = self.block_bytes;
        region.bytes_on(self.data_dev()) / bb
    }

    fn commit(&mut self) -> Result<(), BdevError> {
        // Data before the metadata that references it. Data on the metadata bdev is made
        // durable by the commit's own flush, which precedes the superblock write.
        if let Some(d) = &mut self.data {
            d.flush()?;
        }
        self.pool.commit().map_err(pool_err)?;
        self.dirty = false;
        // Discarded blocks come back at commit: the mark may re-arm.
        if self.low_water_crossed {
            self.check_low_water();
        }
        Ok(())
    }

    /// Writes `data` at `off` within virtual block `vb` of device `id`.
    fn write_in_block(
        &mut self,
        id: u64,
        vb: u64,
        off: usize,
        data: &[u8],
    ) -> Result<(), BdevError> {
        let bb = self.block_bytes as usize;
        let plan = match self.pool.prepare_write(id, vb) {
            Ok(p) => p,
            Err(PoolError::NoDataSpace) => {
                self.out_of_data_space = true;
                return Err(self.out_of_space());
            }
            Err(e) => return Err(pool_err(e)),
        };
        if !matches!(plan, WritePlan::InPlace { .. }) {
            self.out_of_data_space = false;
            self.check_low_water();
            if self.out_of_space_since.take().is_some() {
                self.out_of_space_failing = false;
                log::info!("thin pool has data space again");
            }
        }
        let full = off == 0 && data.len() == bb;
        let r = match plan {
            WritePlan::InPlace { data_block } => self.data_write(data_block, off as u64, data),
            _ if full => self.data_write(plan.target(), 0, data),
            WritePlan::Provision { data_block } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                scratch.resize(bb, 0);
                scratch[off..off + data.len()].copy_from_slice(data);
                let r = self.data_write(data_block, 0, &scratch);
                self.scratch = scratch;
                r
            }
            WritePlan::BreakSharing { from, to } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.resize(bb, 0);
                let r = self.data_read(from, 0, &mut scratch).and_then(|()| {
                    scratch[off..off + data.len()].copy_from_slice(data);
                    self.data_write(to, 0, &scratch)
                });
                self.scratch = scratch;
                r
            }
        };
        if let Err(e) = r {
            let _ = self.pool.abort_write(plan);
            return Err(e);
        }
        self.pool.complete_write(id, vb, plan).map_err(pool_err)?;
        // Only a new mapping needs a commit. A write into a block the device owns changes no
        // metadata: like any disk's cache, it becomes durable at the host's next Flush or
        // FUA (which commits), not on the periodic timer, whose fsync of the whole data
        // device would only stall the reactor.
        if !matches!(plan, WritePlan::InPlace { .. }) {
            self.dirty = true;
        }
        Ok(())
    }
}

/// A thin pool shared by its volumes: dm-thin metadata in a region of one bdev, data in a
/// region of the same or another bdev.
#[derive(Clone)]
pub struct ThinPool {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for ThinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinPool").finish()
    }
}

fn lock(m: &Mutex<Inner>) -> Result<MutexGuard<'_, Inner>, BdevError> {
    m.lock()
        .map_err(|_| BdevError::Io("pool state poisoned by an earlier panic".into()))
}

/// The bdevs a pool gives back: metadata, and data when separate.
pub type PoolBdevs = (Box<dyn Bdev>, Option<Box<dyn Bdev>>);

/// Where a pool lives: the metadata bdev and region, and the data bdev (`None`: the
/// metadata bdev) and region.
pub struct PoolDevices {
    pub meta: Box<dyn Bdev>,
    pub meta_region: Region,
    pub data: Option<Box<dyn Bdev>>,
    pub data_region: Region,
}

impl PoolDevices {
    /// Two whole files: metadata and data (a pool Linux dm-thin can activate as is).
    pub fn files(meta: &Path, data: &Path) -> Result<Self, BdevError> {
        Self::files_with(meta, data, false)
    }

    /// [`PoolDevices::files`], with both files opened `O_DIRECT` when `direct`.
    pub fn files_with(meta: &Path, data: &Path, direct: bool) -> Result<Self, BdevError> {
        let open = if direct {
            FileBdev::open_direct
        } else {
            FileBdev::open
        };
        Ok(Self {
            meta: Box::new(open("thin-meta", meta, 4096, [0; 16])?),
            meta_region: Region::WHOLE,
            data: Some(Box::new(open("thin-data", data, 512, [0; 16])?)),
            data_region: Region::WHOLE,
        })
    }
}

impl ThinPool {
    /// Formats a pool: metadata on `meta` (whole file), data on `data` (whole file, in
    /// blocks of `data_block_sectors` 512-byte sectors).
    pub fn create(
        meta: &Path,
        data: &Path,
        data_block_sectors: u32,
        cache_blocks: usize,
    ) -> Result<Self, BdevError> {
        Self::create_on(
            PoolDevices::files(meta, data)?,
            data_block_sectors,
            cache_blocks,
        )
    }

    /// Opens an existing pool in two files.
    pub fn open(meta: &Path, data: &Path, cache_blocks: usize) -> Result<Self, BdevError> {
        Self::open_on(PoolDevices::files(meta, data)?, cache_blocks)
    }

    fn check_data(devs: &PoolDevices) -> Result<(), BdevError> {
        let d = devs.data.as_deref().unwrap_or(devs.meta.as_ref());
        devs.data_region.check(d, "data")
    }

    /// Formats a pool on `devs`, filling the data region with blocks of
    /// `data_block_sectors` sectors.
    pub fn create_on(
        devs: PoolDevices,
        data_block_sectors: u32,
        cache_blocks: usize,
    ) -> Result<Self, BdevError> {
        Self::check_data(&devs)?;
        let block_bytes = u64::from(data_block_sectors) * 512;
        if block_bytes == 0 {
            return Err(BdevError::Io("data block size 0".into()));
        }
        let d = devs.data.as_deref().unwrap_or(devs.meta.as_ref());
        let nr_data_blocks = devs.data_region.bytes_on(d) / block_bytes;
        let dev = MetaDev::new(devs.meta, devs.meta_region)?;
        let pool = Pool::format(
            dev,
            FormatOptions {
                data_block_size: data_block_sectors,
                nr_data_blocks,
                cache_blocks,
            },
        )
        .map_err(pool_err)?;
        Ok(Self::wrap(pool, devs.data, devs.data_region))
    }

    /// Opens an existing pool on `devs`.
    pub fn open_on(devs: PoolDevices, cache_blocks: usize) -> Result<Self, BdevError> {
        Self::check_data(&devs)?;
        let dev = MetaDev::new(devs.meta, devs.meta_region)?;
        let mut pool = Pool::open(
            dev,
            PoolOpenOptions {
                cache_blocks,
                read_only: false,
            },
        )
        .map_err(pool_err)?;
        let nr = pool.stats().map_err(pool_err)?.nr_data_blocks;
        let me = Self::wrap(pool, devs.data, devs.data_region);
        let have = lock(&me.inner)?.data_blocks();
        if have < nr {
            return Err(BdevError::Io(format!(
                "data device holds {have} blocks, the pool expects {nr}"
            )));
        }
        Ok(me)
    }

    fn wrap(pool: Pool<MetaDev>, data: Option<Box<dyn Bdev>>, data_region: Region) -> Self {
        let block_bytes = u64::from(pool.superblock().data_block_size) * 512;
        ThinPool {
            inner: Arc::new(Mutex::new(Inner {
                pool,
                data,
                data_region,
                block_bytes,
                dirty: false,
                last_commit_ms: 0,
                commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
                scratch: Vec::new(),
                no_space_timeout_ms: DEFAULT_NO_SPACE_TIMEOUT_MS,
                out_of_space_since: None,
                out_of_space_failing: false,
                now_ms: 0,
                low_water_blocks: 0,
                low_water_crossed: false,
                out_of_data_space: false,
            })),
        }
    }

    /// Runs `f` on the pool (management operations: create, snapshot, delete …), then
    /// commits.
    pub fn with_pool<R>(
        &self,
        f: impl FnOnce(&mut Pool<MetaDev>) -> Result<R, PoolError>,
    ) -> Result<R, BdevError> {
        let mut g = lock(&self.inner)?;
        let r = f(&mut g.pool).map_err(pool_err)?;
        g.commit()?;
        Ok(r)
    }

    /// Runs `f` on the pool without committing (read-only queries such as mapping walks;
    /// `f` must not change the pool).
    pub fn inspect<R>(&self, f: impl FnOnce(&mut Pool<MetaDev>) -> R) -> Result<R, BdevError> {
        let mut g = lock(&self.inner)?;
        Ok(f(&mut g.pool))
    }

    /// Runs `f` on the metadata bdev, outside the metadata region (labels).
    pub fn with_meta_bdev<R>(&self, f: impl FnOnce(&mut dyn Bdev) -> R) -> Result<R, BdevError> {
        let mut g = lock(&self.inner)?;
        Ok(f(g.pool.tm().cache.dev_mut().bdev.as_mut()))
    }

    /// Takes the pool apart and gives its bdevs back (metadata, data), without a commit;
    /// fails (giving the pool back) while volumes still use it.
    pub fn into_bdevs(self) -> Result<PoolBdevs, Self> {
        match Arc::try_unwrap(self.inner) {
            Ok(m) => {
                let inner = m.into_inner().unwrap_or_else(|p| p.into_inner());
                Ok((inner.pool.into_device().bdev, inner.data))
            }
            Err(inner) => Err(ThinPool { inner }),
        }
    }

    /// Whether volumes (or other handles) still share this pool.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// How long writes wait for space when the pool is out of data space; 0 fails them at
    /// once (dm-thin's `error_if_no_space`).
    pub fn set_no_space_timeout_ms(&self, ms: u64) -> Result<(), BdevError> {
        lock(&self.inner)?.no_space_timeout_ms = ms;
        Ok(())
    }

    /// The out-of-space wait (0: fail at once).
    pub fn no_space_timeout_ms(&self) -> Result<u64, BdevError> {
        Ok(lock(&self.inner)?.no_space_timeout_ms)
    }

    /// Whether the pool is out of data space, and since when (poll clock, ms).
    pub fn out_of_space_since(&self) -> Result<Option<u64>, BdevError> {
        Ok(lock(&self.inner)?.out_of_space_since)
    }

    /// Pool statistics.
    pub fn stats(&self) -> Result<PoolStats, BdevError> {
        lock(&self.inner)?.pool.stats().map_err(pool_err)
    }

    /// dm-thin's status: statistics, low-water mark and state, mode.
    pub fn status(&self) -> Result<PoolStatus, BdevError> {
        let mut g = lock(&self.inner)?;
        let stats = g.pool.stats().map_err(pool_err)?;
        Ok(PoolStatus {
            stats,
            low_water_blocks: g.low_water_blocks,
            low_water_crossed: g.low_water_crossed,
            out_of_data_space: g.out_of_data_space && stats.free_data_blocks == 0,
        })
    }

    /// Sets the low-water mark in data blocks (0 turns it off) and checks it at once.
    pub fn set_low_water_mark(&self, blocks: u64) -> Result<(), BdevError> {
        let mut g = lock(&self.inner)?;
        g.low_water_blocks = blocks;
        g.low_water_crossed = false;
        g.check_low_water();
        Ok(())
    }

    /// The low-water mark in data blocks (0: off).
    pub fn low_water_mark(&self) -> Result<u64, BdevError> {
        Ok(lock(&self.inner)?.low_water_blocks)
    }

    /// Data block size in bytes.
    pub fn block_bytes(&self) -> Result<u64, BdevError> {
        Ok(lock(&self.inner)?.block_bytes)
    }

    /// Data blocks mapped by thin device `dev_id` (no commit: a read-only query).
    pub fn mapped_blocks(&self, dev_id: u64) -> Result<u64, BdevError> {
        let mut g = lock(&self.inner)?;
        let d = g.pool.device_details(dev_id).map_err(pool_err)?;
        Ok(d.mapped_blocks)
    }

    /// Grows the pool to the data device's current size (after the device grew).
    pub fn grow_to_data_device(&self) -> Result<u64, BdevError> {
        let mut g = lock(&self.inner)?;
        g.data_dev().rescan()?;
        let nr = g.data_blocks();
        g.pool.grow_data(nr).map_err(pool_err)?;
        g.commit()?;
        g.out_of_space_since = None;
        g.out_of_space_failing = false;
        g.check_low_water();
        Ok(nr)
    }

    /// Commits now.
    pub fn commit(&self) -> Result<(), BdevError> {
        lock(&self.inner)?.commit()
    }

    /// A bdev for thin device `dev_id`, `size_bytes` long, with `lba_size`-byte blocks.
    pub fn volume(
        &self,
        name: &str,
        dev_id: u64,
        size_bytes: u64,
        lba_size: u32,
        uuid: [u8; 16],
    ) -> Result<ThinVolume, BdevError> {
        let mut g = lock(&self.inner)?;
        let bb = g.block_bytes;
        let data_lba = u64::from(g.data_dev().block_size());
        if (lba_size != 512 && lba_size != 4096)
            || !bb.is_multiple_of(u64::from(lba_size))
            || !u64::from(lba_size).is_multiple_of(data_lba)
        {
            return Err(BdevError::Io(format!(
                "LBA size {lba_size} does not divide the data block size or is smaller than \
                 the data device's blocks"
            )));
        }
        if !g.pool.device_exists(dev_id).map_err(pool_err)? {
            return Err(BdevError::Io(format!(
                "thin device {dev_id} does not exist"
            )));
        }
        drop(g);
        Ok(ThinVolume {
            pool: self.inner.clone(),
            name: name.into(),
            dev_id,
            lba_size,
            num_blocks: size_bytes / u64::from(lba_size),
            block_bytes: bb,
            uuid,
        })
    }
}

/// A thin volume as a bdev.
pub struct ThinVolume {
    pool: Arc<Mutex<Inner>>,
    name: String,
    dev_id: u64,
    lba_size: u32,
    num_blocks: u64,
    block_bytes: u64,
    uuid: [u8; 16],
}

impl std::fmt::Debug for ThinVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinVolume")
            .field("name", &self.name)
            .field("dev_id", &self.dev_id)
            .finish()
    }
}

impl ThinVolume {
    /// Byte range of an LBA transfer, checked.
    fn bytes(&self, lba: u64, count: u64) -> Result<(u64, u64), BdevError> {
        check_range(lba, count, self.num_blocks)?;
        let ls = u64::from(self.lba_size);
        Ok((lba * ls, (lba + count) * ls))
    }

    fn blocks(&self, len: usize) -> Result<u64, BdevError> {
        if !(len as u64).is_multiple_of(u64::from(self.lba_size)) {
            return Err(BdevError::Io(
                "transfer is not a whole number of blocks".into(),
            ));
        }
        Ok(len as u64 / u64::from(self.lba_size))
    }

    /// Splits the byte range `[start, end)` into per-data-block pieces.
    fn pieces(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        let bb = self.block_bytes;
        let mut pos = start;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let vb = pos / bb;
            let off = pos % bb;
            let n = (bb - off).min(end - pos);
            let piece = (vb, off as usize, n as usize);
            pos += n;
            Some(piece)
        })
    }

    /// Makes `[start, end)` read as zeroes: unmaps whole blocks, zeroes mapped partial ones.
    fn unmap(&mut self, start: u64, end: u64) -> Result<(), BdevError> {
        let pieces: Vec<_> = self.pieces(start, end).collect();
        let mut g = lock(&self.pool)?;
        let bb = g.block_bytes as usize;
        let (mut run_start, mut run_end) = (None, 0u64);
        for (vb, off, n) in pieces {
            if off == 0 && n == bb {
                if run_start.is_none() {
                    run_start = Some(vb);
                }
                run_end = vb + 1;
                continue;
            }
            if g.pool
                .lookup_data(self.dev_id, vb)
                .map_err(pool_err)?
                .is_some()
            {
                let zeros = vec![0u8; n];
                g.write_in_block(self.dev_id, vb, off, &zeros)?;
            }
        }
        if let Some(s) = run_start {
            if g.pool.discard(self.dev_id, s, run_end).map_err(pool_err)? > 0 {
                g.dirty = true;
            }
        }
        Ok(())
    }
}

impl Bdev for ThinVolume {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> u32 {
        self.lba_size
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let (start, end) = self.bytes(lba, self.blocks(buf.len())?)?;
        let mut g = lock(&self.pool)?;
        // The mapped pieces go to the data device together (one `read_segments` call per
        // READ_SEGMENTS_MAX of them); unmapped pieces read as zeroes.
        let mut segs: [(u64, &mut [u8]); READ_SEGMENTS_MAX] =
            std::array::from_fn(|_| (0, Default::default()));
        let mut k = 0;
        let mut rest = buf;
        for (vb, off, n) in self.pieces(start, end) {
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            match g.pool.lookup_data(self.dev_id, vb).map_err(pool_err)? {
                Some(bt) => {
                    if k == READ_SEGMENTS_MAX {
                        g.data_dev().read_segments(&mut segs[..k])?;
                        k = 0;
                    }
                    segs[k] = (g.data_lba(bt.block, off as u64), dst);
                    k += 1;
                }
                None => dst.fill(0),
            }
        }
        if k > 0 {
            g.data_dev().read_segments(&mut segs[..k])?;
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let (start, end) = self.bytes(lba, self.blocks(data.len())?)?;
        let mut g = lock(&self.pool)?;
        let mut at = 0usize;
        for (vb, off, n) in self.pieces(start, end) {
            g.write_in_block(self.dev_id, vb, off, &data[at..at + n])?;
            at += n;
        }
        if fua {
            g.commit()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        lock(&self.pool)?.commit()
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        let (start, end) = self.bytes(lba, count)?;
        self.unmap(start, end)
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        let (start, end) = self.bytes(lba, count)?;
        self.unmap(start, end)
    }
    fn thin_info(&self) -> Option<ThinInfo> {
        let mut g = self.pool.lock().ok()?;
        let mapped = g.pool.device_details(self.dev_id).ok()?.mapped_blocks;
        Some(ThinInfo {
            allocated_lbas: mapped * (self.block_bytes / u64::from(self.lba_size)),
        })
    }
    fn poll(&mut self, now_ms: u64) {
        let Ok(mut g) = self.pool.lock() else { return };
        g.now_ms = now_ms;
        if g.dirty && now_ms.saturating_sub(g.last_commit_ms) >= g.commit_interval_ms {
            g.last_commit_ms = now_ms;
            if let Err(e) = g.commit() {
                log::error!("thin pool: periodic commit failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use thin_core::file::FileDevice;
    use thin_core::thin::check::{check, CheckOptions};

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(name: &str, data_blocks: u64) -> (Tmp, std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("thinbdev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (m, d) = (dir.join("meta"), dir.join("data"));
        File::create(&m).unwrap().set_len(4 << 20).unwrap();
        File::create(&d)
            .unwrap()
            .set_len(data_blocks * 65536)
            .unwrap();
        (Tmp(dir), m, d)
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
    }

    #[test]
    fn thin_volume_semantics() {
        let (_t, m, d) = files("sem", 64);
        let pool = ThinPool::create(&m, &d, 128, 256).unwrap();
        pool.with_pool(|p| p.create_thin(1)).unwrap();
        let mut v1 = pool.volume("v1", 1, 1 << 30, 4096, [1; 16]).unwrap();
        let mut buf = vec![0xAAu8; 65536 * 2];
        // Unmapped reads are zero.
        v1.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // Partial first write: the rest of the block reads zero.
        v1.write(3, &pattern(1, 4096), false).unwrap();
        v1.read(0, &mut buf[..65536]).unwrap();
        assert!(buf[..3 * 4096].iter().all(|&x| x == 0));
        assert_eq!(&buf[3 * 4096..4 * 4096], &pattern(1, 4096)[..]);
        assert!(buf[4 * 4096..65536].iter().all(|&x| x == 0));
        // A write spanning two data blocks.
        v1.write(14, &pattern(2, 3 * 4096), false).unwrap();
        let mut r = vec![0u8; 3 * 4096];
        v1.read(14, &mut r).unwrap();
        assert_eq!(r, pattern(2, 3 * 4096));
        assert_eq!(v1.thin_info().unwrap().allocated_lbas, 2 * 16);
        // Snapshot, then a partial overwrite of the origin copies the shared block.
        pool.with_pool(|p| p.create_snap(2, 1)).unwrap();
        let mut v2 = pool.volume("v2", 2, 1 << 30, 4096, [2; 16]).unwrap();
        v1.write(5, &pattern(3, 4096), true).unwrap();
        let mut a = vec![0u8; 65536];
        v2.read(0, &mut a).unwrap();
        assert_eq!(&a[3 * 4096..4 * 4096], &pattern(1, 4096)[..]);
        assert!(
            a[5 * 4096..6 * 4096].iter().all(|&x| x == 0),
            "snapshot sees the origin's new write"
        );
        v1.read(0, &mut a).unwrap();
        assert_eq!(
            &a[3 * 4096..4 * 4096],
            &pattern(1, 4096)[..],
            "copy kept the untouched part"
        );
        assert_eq!(&a[5 * 4096..6 * 4096], &pattern(3, 4096)[..]);
        // Deallocate: partial zeroes, whole blocks unmap and space comes back.
        v1.deallocate(3, 1).unwrap();
        v1.read(3, &mut a[..4096]).unwrap();
        assert!(a[..4096].iter().all(|&x| x == 0));
        let free_before = pool.stats().unwrap().free_data_blocks;
        v1.deallocate(0, 32).unwrap();
        v1.flush().unwrap();
        assert_eq!(v1.thin_info().unwrap().allocated_lbas, 0);
        assert!(pool.stats().unwrap().free_data_blocks > free_before);
        v2.read(14, &mut r).unwrap();
        assert_eq!(
            r,
            pattern(2, 3 * 4096),
            "snapshot keeps its data after the origin's discard"
        );
        // Persisted: reopen and read.
        v2.flush().unwrap();
        drop((v1, v2, pool));
        let pool = ThinPool::open(&m, &d, 64).unwrap();
        let mut v2 = pool.volume("v2", 2, 1 << 30, 4096, [2; 16]).unwrap();
        v2.read(14, &mut r).unwrap();
        assert_eq!(r, pattern(2, 3 * 4096));
        drop((v2, pool));
        let mut dev = FileDevice::open_read_only(&m).unwrap();
        assert!(check(&mut dev, &CheckOptions::default()).is_clean());
    }

    #[test]
    fn out_of_space_fails_writes_keeps_reads_and_growing_recovers() {
        let (_t, m, d) = files("nospace", 8);
        let pool = ThinPool::create(&m, &d, 128, 64).unwrap();
        pool.set_no_space_timeout_ms(0).unwrap(); // error_if_no_space
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        let mut v = pool.volume("v", 0, 1 << 30, 512, [0; 16]).unwrap();
        let block = pattern(9, 65536);
        for i in 0..8 {
            v.write(i * 128, &block, false).unwrap();
        }
        assert_eq!(v.write(8 * 128, &block, false), Err(BdevError::NoSpace));
        let mut r = vec![0u8; 65536];
        v.read(7 * 128, &mut r).unwrap();
        assert_eq!(r, block);
        v.flush().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&d)
            .unwrap()
            .set_len(16 * 65536)
            .unwrap();
        assert_eq!(pool.grow_to_data_device().unwrap(), 16);
        v.write(8 * 128, &block, false).unwrap();
        v.read(8 * 128, &mut r).unwrap();
        assert_eq!(r, block);
        v.flush().unwrap();
        drop((v, pool));
        let mut dev = FileDevice::open_read_only(&m).unwrap();
        assert!(check(&mut dev, &CheckOptions::default()).is_clean());
    }

    #[test]
    fn out_of_space_queue_policy_waits_then_fails_until_the_pool_grows() {
        let (_t, m, d) = files("nospace-wait", 4);
        let pool = ThinPool::create(&m, &d, 128, 64).unwrap();
        assert_eq!(
            pool.no_space_timeout_ms().unwrap(),
            DEFAULT_NO_SPACE_TIMEOUT_MS
        );
        pool.set_no_space_timeout_ms(1000).unwrap();
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        let mut v = pool.volume("v", 0, 1 << 30, 4096, [0; 16]).unwrap();
        let block = pattern(5, 65536);
        v.poll(10_000);
        for i in 0..4 {
            v.write(i * 16, &block, false).unwrap();
        }
        // Full: a write needing a new block waits ...
        assert_eq!(v.write(4 * 16, &block, false), Err(BdevError::NoSpaceWait));
        assert_eq!(pool.out_of_space_since().unwrap(), Some(10_000));
        // ... while writes into owned blocks and reads go on.
        v.write(2, &pattern(6, 4096), false).unwrap();
        let mut r = vec![0u8; 4096];
        v.read(2, &mut r).unwrap();
        assert_eq!(r, pattern(6, 4096));
        v.poll(10_900);
        assert_eq!(v.write(4 * 16, &block, false), Err(BdevError::NoSpaceWait));
        // The wait is over: writes needing space fail, still without a trace.
        v.poll(11_000);
        assert_eq!(v.write(4 * 16, &block, false), Err(BdevError::NoSpace));
        assert_eq!(v.write(5 * 16, &block, false), Err(BdevError::NoSpace));
        assert_eq!(pool.stats().unwrap().free_data_blocks, 0);
        // Growing ends it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&d)
            .unwrap()
            .set_len(8 * 65536)
            .unwrap();
        pool.grow_to_data_device().unwrap();
        assert_eq!(pool.out_of_space_since().unwrap(), None);
        v.write(4 * 16, &block, false).unwrap();
        v.read(4 * 16, &mut r).unwrap();
        assert_eq!(r, block[..4096]);
        v.flush().unwrap();
        drop((v, pool));
        let mut dev = FileDevice::open_read_only(&m).unwrap();
        assert!(check(&mut dev, &CheckOptions::default()).is_clean());
    }

    #[test]
    fn low_water_mark_fires_once_per_crossing_and_rearms_when_space_returns() {
        let (_t, m, d) = files("lowwater", 8);
        let pool = ThinPool::create(&m, &d, 128, 64).unwrap();
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        pool.set_low_water_mark(5).unwrap();
        let st = |p: &ThinPool| p.status().unwrap();
        let block = pattern(7, 65536);
        for i in 0..2 {
            v.write(i * 16, &block, false).unwrap();
        }
        assert!(!st(&pool).low_water_crossed, "6 free");
        // A rewrite in place allocates nothing; a new block brings free to 5.
        v.write(0, &block, false).unwrap();
        assert!(!st(&pool).low_water_crossed);
        v.write(2 * 16, &block, false).unwrap();
        assert!(st(&pool).low_water_crossed, "5 free: at the mark");
        v.write(3 * 16, &block, false).unwrap();
        assert!(st(&pool).low_water_crossed, "still below");
        // Two blocks come back at the commit: 6 free, re-armed.
        v.deallocate(0, 32).unwrap();
        assert!(st(&pool).low_water_crossed, "discards count at commit");
        v.flush().unwrap();
        let s = st(&pool);
        assert_eq!(s.stats.free_data_blocks, 6);
        assert!(!s.low_water_crossed);
        v.write(0, &block, false).unwrap();
        assert!(st(&pool).low_water_crossed, "crossed again");
        // Out of space: the mode follows.
        for i in [1, 4, 5, 6, 7] {
            v.write(i * 16, &block, false).unwrap();
        }
        assert_eq!(st(&pool).stats.free_data_blocks, 0);
        assert!(!st(&pool).out_of_data_space, "full is not out of space yet");
        // (The default policy holds the write while the pool may grow.)
        assert_eq!(v.write(8 * 16, &block, false), Err(BdevError::NoSpaceWait));
        assert!(st(&pool).out_of_data_space);
        pool.set_low_water_mark(0).unwrap();
        assert!(!st(&pool).low_water_crossed, "off");
    }

    /// A pool in RAM (64 KiB data blocks) with thin device 0, whose data device is a
    /// [`Spy`](crate::bdev::spy::Spy) over `blocks` blocks of `block_size` bytes.
    fn spied_pool(blocks: u64, block_size: u32) -> (ThinPool, crate::bdev::spy::Log) {
        use crate::bdev::malloc::Malloc;
        let (spy, log) =
            crate::bdev::spy::Spy::new(Malloc::new("d", blocks, block_size, [1; 16]).unwrap());
        let pool = ThinPool::create_on(
            PoolDevices {
                meta: Box::new(Malloc::new("m", 1024, 4096, [0; 16]).unwrap()),
                meta_region: Region::WHOLE,
                data: Some(Box::new(spy)),
                data_region: Region::WHOLE,
            },
            128,
            64,
        )
        .unwrap();
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        (pool, log)
    }

    #[test]
    fn only_new_mappings_trigger_the_periodic_commit() {
        let (pool, log) = spied_pool(64 * 16, 4096);
        let flushes = || log.get().flushes;
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        let before = flushes();
        v.write(0, &pattern(1, 4096), false).unwrap(); // provisions
        v.poll(2000);
        assert_eq!(flushes(), before + 1, "a new mapping is committed");
        v.write(1, &pattern(2, 4096), false).unwrap(); // same data block: in place
        v.poll(4000);
        assert_eq!(flushes(), before + 1, "no commit for an in-place write");
        v.flush().unwrap();
        assert_eq!(
            flushes(),
            before + 2,
            "the host's flush still reaches the data"
        );
    }

    #[test]
    fn a_pool_on_direct_io_files_reopens_buffered_with_its_data() {
        let (_t, m, d) = files("direct", 8);
        let pool =
            ThinPool::create_on(PoolDevices::files_with(&m, &d, true).unwrap(), 128, 64).unwrap();
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        v.write(3, &pattern(8, 3 * 4096), false).unwrap();
        v.flush().unwrap();
        drop((v, pool));
        let pool = ThinPool::open(&m, &d, 64).unwrap();
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        let mut r = vec![0u8; 3 * 4096];
        v.read(3, &mut r).unwrap();
        assert_eq!(r, pattern(8, 3 * 4096));
        drop((v, pool));
        let mut dev = FileDevice::open_read_only(&m).unwrap();
        assert!(check(&mut dev, &CheckOptions::default()).is_clean());
    }

    #[test]
    fn periodic_commit_makes_writes_durable_without_flush() {
        let (_t, m, d) = files("periodic", 8);
        let pool = ThinPool::create(&m, &d, 128, 64).unwrap();
        pool.with_pool(|p| p.create_thin(0)).unwrap();
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        v.write(0, &pattern(4, 4096), false).unwrap();
        v.poll(500); // too early
        v.poll(1500);
        drop((v, pool)); // no flush: a crash
        let pool = ThinPool::open(&m, &d, 64).unwrap();
        let mut v = pool.volume("v", 0, 1 << 20, 4096, [0; 16]).unwrap();
        let mut r = vec![0u8; 4096];
        v.read(0, &mut r).unwrap();
        assert_eq!(r, pattern(4, 4096));
    }

    #[test]
    fn a_read_hands_its_mapped_blocks_to_the_data_device_in_one_call() {
        let (pool, log) = spied_pool(64 * 128, 512);
        let mut v = pool.volume("v", 0, 64 * 65536, 4096, [0; 16]).unwrap();
        // Data blocks 0 and 2 (and 3's neighbour 4) mapped, 1 and 3 not.
        for vb in [0u64, 2, 4] {
            v.write(vb * 16, &pattern(vb as u8 + 1, 65536), false)
                .unwrap();
        }
        // (segments of each read_segments call, single reads) since the last look.
        let take = |log: &crate::bdev::spy::Log| {
            let l = log.take();
            (l.segment_calls, l.reads)
        };
        take(&log);
        // From 4 KiB into block 0 to 4 KiB into block 3: mapped, unmapped, mapped, unmapped.
        let mut r = vec![0xAAu8; 3 * 65536];
        v.read(1, &mut r).unwrap();
        assert_eq!(
            take(&log),
            (vec![2], 0),
            "one call with the two mapped pieces"
        );
        assert_eq!(&r[..61440], &pattern(1, 65536)[4096..]);
        assert!(
            r[61440..61440 + 65536].iter().all(|&x| x == 0),
            "unmapped: zeroes"
        );
        assert_eq!(&r[126976..126976 + 65536], &pattern(3, 65536)[..]);
        assert!(r[126976 + 65536..].iter().all(|&x| x == 0));
        // Nothing mapped: no data device call at all.
        v.read(16, &mut r[..65536]).unwrap();
        assert_eq!(take(&log), (vec![], 0));
        assert!(r[..65536].iter().all(|&x| x == 0));
        // More mapped pieces than one call takes: several calls, in order.
        let n = READ_SEGMENTS_MAX as u64 + 8;
        for vb in 8..8 + n {
            v.write(vb * 16, &pattern(vb as u8, 65536), false).unwrap();
        }
        take(&log);
        let mut big = vec![0xAAu8; n as usize * 65536];
        v.read(8 * 16, &mut big).unwrap();
        assert_eq!(take(&log), (vec![READ_SEGMENTS_MAX, 8], 0));
        for (i, chunk) in big.chunks(65536).enumerate() {
            assert_eq!(chunk, &pattern(8 + i as u8, 65536)[..], "block {}", 8 + i);
        }
    }

    #[test]
    fn thin_volumes_on_files_read_the_same_on_both_engines() {
        use crate::bdev::file::IoEngine;
        for engine in [IoEngine::Uring, IoEngine::Positional] {
            let (_t, m, d) = files(&format!("engine-{engine:?}"), 16);
            let open = |p: &Path, bs| {
                FileBdev::open_with_engine("f", p, bs, [0; 16], false, engine)
                    .unwrap_or_else(|e| panic!("{engine:?} refused (io_uring unavailable?): {e}"))
            };
            let (mf, df) = (open(&m, 4096), open(&d, 512));
            assert_eq!((mf.engine(), df.engine()), (engine, engine));
            let devs = PoolDevices {
                meta: Box::new(mf),
                meta_region: Region::WHOLE,
                data: Some(Box::new(df)),
                data_region: Region::WHOLE,
            };
            let pool = ThinPool::create_on(devs, 128, 64).unwrap();
            pool.with_pool(|p| p.create_thin(0)).unwrap();
            let mut v = pool.volume("v", 0, 16 * 65536, 512, [0; 16]).unwrap();
            // Mapped blocks 0, 1 (adjacent on the data device), 5; a partial one in 3.
            v.write(0, &pattern(1, 2 * 65536), false).unwrap();
            v.write(5 * 128, &pattern(2, 65536), false).unwrap();
            v.write(3 * 128 + 9, &pattern(3, 1024), true).unwrap();
            let mut want = vec![0u8; 16 * 65536];
            want[..2 * 65536].copy_from_slice(&pattern(1, 2 * 65536));
            want[5 * 65536..6 * 65536].copy_from_slice(&pattern(2, 65536));
            let at = 3 * 65536 + 9 * 512;
            want[at..at + 1024].copy_from_slice(&pattern(3, 1024));
            let mut r = vec![0xAAu8; 16 * 65536];
            v.read(0, &mut r).unwrap();
            assert!(r == want, "{engine:?}: whole volume");
            // An unaligned multi-block read.
            let mut r = vec![0xAAu8; 128 * 1024];
            v.read(100, &mut r).unwrap();
            assert!(
                r[..] == want[100 * 512..100 * 512 + 128 * 1024],
                "{engine:?}"
            );
        }
    }
}

//! The thin pool: thin devices, snapshots, provisioning and commit over dm-thin metadata.
//!
//! Invariants:
//! - the in-core superblock and dirty device details become durable only at [`Pool::commit`];
//!   a crash (drop without commit) leaves the last committed pool;
//! - snapshot creation is O(1): the snapshot shares the origin's mapping tree root, and nodes
//!   are copied later, on the first write through them;
//! - mapping-tree changes go top-down through both levels (the top-level path is made
//!   writable before the device's tree), so a tree reachable from a held metadata snapshot is
//!   never freed or written;
//! - a metadata operation that fails half-way leaves the in-core state unusable: the pool
//!   refuses further changes until [`Pool::abort`] reloads the committed state;
//! - the pool does no data I/O: [`Pool::prepare_write`] names the data block to write (and
//!   what to copy or zero first), [`Pool::complete_write`] records the mapping afterwards.

use crate::block::{BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::btree::{self, Refs};
use crate::pdata::sm::{SmRoot, MAX_METADATA_BLOCKS};
use crate::pdata::tm::{Tm, Which};
use crate::pdata::PdError;
use crate::thin::details::{
    BlockTime, DeviceDetails, DETAILS_SIZE, MAX_DATA_BLOCKS, MAX_DEV_ID, MAX_TIME,
};
use crate::thin::superblock::{
    self, Superblock, SuperblockError, DATA_BLOCK_SIZE_MAX, DATA_BLOCK_SIZE_MIN, NEEDS_CHECK,
    VERSION,
};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Mutating operations are refused when fewer free metadata blocks remain (room for the
/// operation in flight and a commit).
pub const METADATA_RESERVE_BLOCKS: u64 = 64;
/// Default metadata cache size in blocks (4 MiB).
pub const DEFAULT_CACHE_BLOCKS: usize = 1024;

/// Errors of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The metadata is damaged or the device failed.
    Metadata(PdError),
    /// The superblock is invalid.
    Superblock(SuperblockError),
    /// Block 0 is all zeroes: the device was never formatted.
    Unformatted,
    /// A device with this id exists.
    DeviceExists(u64),
    /// No device with this id.
    NoSuchDevice(u64),
    /// Device ids are 24-bit.
    BadDeviceId(u64),
    /// No free data block.
    NoDataSpace,
    /// Too few free metadata blocks.
    NoMetadataSpace,
    /// The pool is read-only (opened so, or NEEDS_CHECK is set).
    ReadOnly,
    /// An earlier metadata operation failed; call [`Pool::abort`] or reopen.
    Failed,
    /// A metadata snapshot is already held.
    MetadataSnapExists,
    /// No metadata snapshot is held.
    NoMetadataSnap,
    /// `set_transaction_id` was given the wrong current id.
    TransactionIdMismatch { expected: u64, actual: u64 },
    /// Data block size must be 128..=2097152 sectors and a multiple of 128.
    BadDataBlockSize(u32),
    /// Too many data blocks for the format (2^40).
    TooManyDataBlocks(u64),
    /// Devices cannot shrink.
    Shrink { current: u64, requested: u64 },
    /// The pool time would exceed 24 bits.
    TimeOverflow,
    /// The write plan does not belong to this device/block or was already completed.
    BadWritePlan,
}

impl From<PdError> for PoolError {
    fn from(e: PdError) -> Self {
        match e {
            PdError::NoDataSpace => PoolError::NoDataSpace,
            PdError::NoMetadataSpace => PoolError::NoMetadataSpace,
            e => PoolError::Metadata(e),
        }
    }
}

impl From<SuperblockError> for PoolError {
    fn from(e: SuperblockError) -> Self {
        PoolError::Superblock(e)
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Metadata(e) => write!(f, "{e}"),
            PoolError::Superblock(e) => write!(f, "{e}"),
            PoolError::Unformatted => write!(f, "metadata device is not formatted (block 0 is zero)"),
            PoolError::DeviceExists(id) => write!(f, "thin device {id} already exists"),
            PoolError::NoSuchDevice(id) => write!(f, "no thin device {id}"),
            PoolError::BadDeviceId(id) => write!(f, "thin device id {id} exceeds {MAX_DEV_ID}"),
            PoolError::NoDataSpace => write!(f, "out of data space"),
            PoolError::NoMetadataSpace => write!(f, "out of metadata space"),
            PoolError::ReadOnly => write!(f, "pool is read-only"),
            PoolError::Failed => write!(f, "an earlier metadata operation failed; abort or reopen the pool"),
            PoolError::MetadataSnapExists => write!(f, "a metadata snapshot is already held"),
            PoolError::NoMetadataSnap => write!(f, "no metadata snapshot is held"),
            PoolError::TransactionIdMismatch { expected, actual } => {
                write!(f, "transaction id is {actual}, not {expected}")
            }
            PoolError::BadDataBlockSize(s) => write!(
                f,
                "data block size {s} sectors is not a multiple of 128 in 128..={DATA_BLOCK_SIZE_MAX}"
            ),
            PoolError::TooManyDataBlocks(n) => write!(f, "{n} data blocks exceed the format's 2^40"),
            PoolError::Shrink { current, requested } => {
                write!(f, "cannot shrink from {current} to {requested} blocks")
            }
            PoolError::TimeOverflow => write!(f, "pool snapshot time would exceed 24 bits"),
            PoolError::BadWritePlan => write!(f, "write plan does not match the device state"),
        }
    }
}

/// Options for [`Pool::format`].
#[derive(Debug, Clone, Copy)]
pub struct FormatOptions {
    /// Data block size in 512-byte sectors.
    pub data_block_size: u32,
    /// Data blocks on the data device.
    pub nr_data_blocks: u64,
    /// Metadata cache capacity in blocks.
    pub cache_blocks: usize,
}

/// Options for [`Pool::open`].
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Metadata cache capacity in blocks.
    pub cache_blocks: usize,
    /// Refuse every change.
    pub read_only: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_blocks: DEFAULT_CACHE_BLOCKS,
            read_only: false,
        }
    }
}

/// A mapped block as a lookup sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Data block.
    pub data_block: u64,
    /// Pool time it was written at.
    pub time: u32,
    /// Whether another device may reference it (writing must copy).
    pub shared: bool,
}

/// What the caller must do for a write to a virtual block, then report with
/// [`Pool::complete_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePlan {
    /// Exclusively mapped: write `data_block` in place.
    InPlace { data_block: u64 },
    /// Unmapped: `data_block` is new; zero what the write does not cover, then write.
    Provision { data_block: u64 },
    /// Shared: copy `from` to `to` (what the write does not cover), then write `to`.
    BreakSharing { from: u64, to: u64 },
}

impl WritePlan {
    /// The data block the write goes to.
    pub fn target(&self) -> u64 {
        match *self {
            WritePlan::InPlace { data_block } | WritePlan::Provision { data_block } => data_block,
            WritePlan::BreakSharing { to, .. } => to,
        }
    }
}

/// Pool-wide figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
    pub free_data_blocks: u64,
    pub nr_metadata_blocks: u64,
    pub free_metadata_blocks: u64,
    pub transaction_id: u64,
    pub time: u32,
    pub held_root: u64,
    pub needs_check: bool,
    pub read_only: bool,
    pub nr_devices: u64,
}

/// A thin pool over a metadata device.
pub struct Pool<D> {
    pub(crate) tm: Tm<D>,
    /// In-core superblock: the next commit writes it.
    pub(crate) sb: Superblock,
    /// The superblock on disk.
    committed: Superblock,
    /// Device details changed since the last commit.
    pub(crate) details: BTreeMap<u64, DeviceDetails>,
    read_only: bool,
    failed: bool,
}

impl<D> fmt::Debug for Pool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("sb", &self.sb)
            .field("failed", &self.failed)
            .finish()
    }
}

fn check_id(id: u64) -> Result<(), PoolError> {
    if id > MAX_DEV_ID {
        Err(PoolError::BadDeviceId(id))
    } else {
        Ok(())
    }
}

impl<D: BlockDevice> Pool<D> {
    /// Formats `dev` as an empty pool and commits it. The whole device becomes metadata space
    /// (up to the format's limit of 4,161,600 blocks).
    pub fn format(dev: D, opts: FormatOptions) -> Result<Self, PoolError> {
        let dbs = opts.data_block_size;
        if !(DATA_BLOCK_SIZE_MIN..=DATA_BLOCK_SIZE_MAX).contains(&dbs) || !dbs.is_multiple_of(128) {
            return Err(PoolError::BadDataBlockSize(dbs));
        }
        if opts.nr_data_blocks >= MAX_DATA_BLOCKS {
            return Err(PoolError::TooManyDataBlocks(opts.nr_data_blocks));
        }
        let meta_blocks = dev.nr_blocks().min(MAX_METADATA_BLOCKS);
        let mut tm = Tm::format(dev, opts.cache_blocks, meta_blocks, opts.nr_data_blocks)?;
        let mapping_root = btree::empty(&mut tm, 8)?;
        let details_root = btree::empty(&mut tm, DETAILS_SIZE as u32)?;
        let sb = Superblock {
            flags: 0,
            blocknr: 0,
            uuid: [0; 16],
            version: VERSION,
            time: 0,
            trans_id: 0,
            held_root: 0,
            data_sm_root: SmRoot::default(),
            metadata_sm_root: SmRoot::default(),
            data_mapping_root: mapping_root,
            device_details_root: details_root,
            data_block_size: dbs,
            metadata_nr_blocks: meta_blocks,
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
        };
        let mut pool = Pool {
            tm,
            committed: sb.clone(),
            sb,
            details: BTreeMap::new(),
            read_only: false,
            failed: false,
        };
        pool.commit()?;
        Ok(pool)
    }

    /// Opens the pool on `dev`, validating the superblock. A pool with NEEDS_CHECK set opens
    /// read-only.
    pub fn open(mut dev: D, opts: OpenOptions) -> Result<Self, PoolError> {
        let sb = read_superblock(&mut dev)?;
        let tm = Tm::open(dev, opts.cache_blocks, sb.metadata_sm_root, sb.data_sm_root)?;
        let read_only = opts.read_only || sb.needs_check() || sb.compat_ro_flags != 0;
        Ok(Pool {
            tm,
            committed: sb.clone(),
            sb,
            details: BTreeMap::new(),
            read_only,
            failed: false,
        })
    }

    /// Gives the device back without committing (what a crash leaves behind).
    pub fn into_device(self) -> D {
        self.tm.into_device()
    }

    /// Commits and gives the device back.
    pub fn close(mut self) -> Result<D, PoolError> {
        if !self.read_only && !self.failed {
            self.commit()?;
        }
        Ok(self.into_device())
    }

    /// Throws away everything since the last commit and reloads the committed state.
    pub fn abort(&mut self) -> Result<(), PoolError> {
        let sb = read_superblock(self.tm.cache.dev_mut())?;
        self.tm.reopen(sb.metadata_sm_root, sb.data_sm_root)?;
        self.committed = sb.clone();
        self.sb = sb;
        self.details.clear();
        self.failed = false;
        Ok(())
    }

    /// The persistent-data layer, for walkers such as the checker and the tools.
    pub fn tm(&mut self) -> &mut Tm<D> {
        &mut self.tm
    }

    /// The in-core superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Whether NEEDS_CHECK is set.
    pub fn needs_check(&self) -> bool {
        self.sb.needs_check()
    }

    /// Runs a mutating operation: refused when read-only, failed or nearly out of metadata
    /// space; a metadata failure inside it marks the pool failed.
    pub(crate) fn mutate<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        if self.tm.meta_free() < METADATA_RESERVE_BLOCKS && !self.failed && !self.read_only {
            return Err(PoolError::NoMetadataSpace);
        }
        self.mutate_admitted(f)
    }

    /// [`Pool::mutate`] without the reserve check, for the second half of an operation the
    /// check already admitted (completing or giving back a prepared write): refusing it would
    /// leave the prepared data block allocated but unmapped. Such a step needs a bounded
    /// number of blocks, which the reserve holds.
    fn mutate_admitted<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, PoolError>,
    ) -> Result<R, PoolError> {
        if self.failed {
            return Err(PoolError::Failed);
        }
        if self.read_only {
            return Err(PoolError::ReadOnly);
        }
        let r = f(self);
        match &r {
            Err(PoolError::Metadata(_)) | Err(PoolError::NoMetadataSpace) => self.failed = true,
            Ok(_) => {
                if let Err(e) = self.tm.maybe_apply() {
                    self.failed = true;
                    return Err(e.into());
                }
            }
            _ => {}
        }
        r
    }

    fn dev_root(&mut self, id: u64) -> Result<u64, PoolError> {
        btree::lookup_u64(&mut self.tm.cache, self.sb.data_mapping_root, id)?
            .ok_or(PoolError::NoSuchDevice(id))
    }

    /// Whether device `id` exists.
    pub fn device_exists(&mut self, id: u64) -> Result<bool, PoolError> {
        Ok(btree::lookup_u64(&mut self.tm.cache, self.sb.data_mapping_root, id)?.is_some())
    }

    /// Details of device `id`.
    pub fn device_details(&mut self, id: u64) -> Result<DeviceDetails, PoolError> {
        if let Some(d) = self.details.get(&id) {
            return Ok(*d);
        }
        let mut v = [0u8; DETAILS_SIZE];
        if btree::lookup(&mut self.tm.cache, self.sb.device_details_root, id, &mut v)? {
            Ok(DeviceDetails::unpack(&v))
        } else if self.device_exists(id)? {
            Err(PoolError::Metadata(PdError::BadNode {
                block: self.sb.device_details_root,
                reason: "device in the mapping tree has no details",
            }))
        } else {
            Err(PoolError::NoSuchDevice(id))
        }
    }

    /// Ids of all thin devices, ascending.
    pub fn devices(&mut self) -> Result<Vec<u64>, PoolError> {
        let mut ids = Vec::new();
        btree::walk(&mut self.tm.cache, self.sb.data_mapping_root, 8, |k, _| {
            ids.push(k);
            true
        })?;
        Ok(ids)
    }

    /// Makes the top-level path to `id` writable, runs `f` on the device's tree root and
    /// stores the root it returns.
    fn with_subtree<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Tm<D>, u64) -> Result<(u64, R), PdError>,
    ) -> Result<R, PoolError> {
        let root = self.dev_root(id)?;
        let top = self.sb.data_mapping_root;
        let (top, _) = btree::insert_with(
            &mut self.tm,
            Refs::Subtree,
            top,
            id,
            &root.to_le_bytes(),
            false,
        )?;
        self.sb.data_mapping_root = top;
        let (new_root, r) = f(&mut self.tm, root)?;
        if new_root != root {
            let (top, _) = btree::insert_with(
                &mut self.tm,
                Refs::Subtree,
                top,
                id,
                &new_root.to_le_bytes(),
                false,
            )?;
            self.sb.data_mapping_root = top;
        }
        Ok(r)
    }

    /// Adds a new device `id` with tree `root` to the top-level tree (the tree's reference is
    /// handed over to the top-level entry).
    pub(crate) fn insert_device_root(&mut self, id: u64, root: u64) -> Result<(), PoolError> {
        let top = self.sb.data_mapping_root;
        let (top, _) = btree::insert(&mut self.tm, Refs::Subtree, top, id, &root.to_le_bytes())?;
        self.sb.data_mapping_root = top;
        Ok(())
    }

    /// Creates an empty thin device.
    pub fn create_thin(&mut self, id: u64) -> Result<(), PoolError> {
        check_id(id)?;
        self.mutate(|p| {
            if p.device_exists(id)? {
                return Err(PoolError::DeviceExists(id));
            }
            let root = btree::empty(&mut p.tm, 8)?;
            p.insert_device_root(id, root)?;
            let t = p.sb.time;
            p.details.insert(
                id,
                DeviceDetails {
                    mapped_blocks: 0,
                    transaction_id: p.sb.trans_id,
                    creation_time: t,
                    snapshotted_time: t,
                },
            );
            Ok(())
        })
    }

    /// Creates `id` as a snapshot of `origin` in O(1): both share the origin's tree.
    pub fn create_snap(&mut self, id: u64, origin: u64) -> Result<(), PoolError> {
        check_id(id)?;
        self.mutate(|p| {
            if p.device_exists(id)? {
                return Err(PoolError::DeviceExists(id));
            }
            let root = p.dev_root(origin)?;
            let mut od = p.device_details(origin)?;
            let time =
                p.sb.time
                    .checked_add(1)
                    .filter(|&t| t <= MAX_TIME)
                    .ok_or(PoolError::TimeOverflow)?;
            p.tm.inc(Which::Meta, root)?;
            p.insert_device_root(id, root)?;
            p.sb.time = time;
            od.snapshotted_time = time;
            p.details.insert(origin, od);
            p.details.insert(
                id,
                DeviceDetails {
                    mapped_blocks: od.mapped_blocks,
                    transaction_id: p.sb.trans_id,
                    creation_time: time,
                    snapshotted_time: time,
                },
            );
            Ok(())
        })
    }

    /// Deletes a device; blocks no other device uses return to the pool.
    pub fn delete(&mut self, id: u64) -> Result<(), PoolError> {
        self.mutate(|p| {
            if !p.device_exists(id)? {
                return Err(PoolError::NoSuchDevice(id));
            }
            p.details.remove(&id);
            let (dr, _) = btree::remove(&mut p.tm, Refs::None, p.sb.device_details_root, id)?;
            p.sb.device_details_root = dr;
            let (top, _) = btree::remove(&mut p.tm, Refs::Subtree, p.sb.data_mapping_root, id)?;
            p.sb.data_mapping_root = top;
            Ok(())
        })
    }

    /// Looks up virtual block `vblock` of device `id`.
    pub fn lookup(&mut self, id: u64, vblock: u64) -> Result<Option<Mapping>, PoolError> {
        let root = self.dev_root(id)?;
        let Some(v) = btree::lookup_u64(&mut self.tm.cache, root, vblock)? else {
            return Ok(None);
        };
        let bt = BlockTime::unpack(v);
        // Time says whether the block predates the device's last snapshot; if so, it is
        // shared unless every node on its path and the block itself have one referrer.
        let shared = self.device_details(id)?.snapshotted_time > bt.time && {
            let path_shared =
                btree::lookup_shared(&mut self.tm, root, vblock)?.is_some_and(|(_, s)| s);
            path_shared || self.tm.count(Which::Data, bt.block)? > 1
        };
        Ok(Some(Mapping {
            data_block: bt.block,
            time: bt.time,
            shared,
        }))
    }

    /// The mapping of `vblock` of `id`, without working out whether it is shared (the read
    /// path).
    pub fn lookup_data(&mut self, id: u64, vblock: u64) -> Result<Option<BlockTime>, PoolError> {
        let root = self.dev_root(id)?;
        Ok(btree::lookup_u64(&mut self.tm.cache, root, vblock)?.map(BlockTime::unpack))
    }

    /// First phase of a write to `vblock` of `id`: decides where the data goes and allocates
    /// a data block if needed.
    pub fn prepare_write(&mut self, id: u64, vblock: u64) -> Result<WritePlan, PoolError> {
        self.mutate(|p| {
            Ok(match p.lookup(id, vblock)? {
                Some(m) if !m.shared => WritePlan::InPlace {
                    data_block: m.data_block,
                },
                Some(m) => WritePlan::BreakSharing {
                    from: m.data_block,
                    to: p.tm.alloc(Which::Data)?,
                },
                None => WritePlan::Provision {
                    data_block: p.tm.alloc(Which::Data)?,
                },
            })
        })
    }

    /// Second phase: the data is on the data device; records the mapping.
    pub fn complete_write(
        &mut self,
        id: u64,
        vblock: u64,
        plan: WritePlan,
    ) -> Result<(), PoolError> {
        let b = match plan {
            WritePlan::InPlace { .. } => return Ok(()),
            WritePlan::Provision { data_block } => data_block,
            WritePlan::BreakSharing { to, .. } => to,
        };
        self.mutate_admitted(|p| {
            let mut d = p.device_details(id)?;
            let value = BlockTime {
                block: b,
                time: p.sb.time,
            }
            .pack();
            let new = p.with_subtree(id, |tm, root| {
                btree::insert(tm, Refs::DataBlock, root, vblock, &value.to_le_bytes())
            })?;
            if new {
                d.mapped_blocks += 1;
                p.details.insert(id, d);
            }
            Ok(())
        })
    }

    /// Gives back the block of a plan that will not be completed.
    pub fn abort_write(&mut self, plan: WritePlan) -> Result<(), PoolError> {
        match plan {
            WritePlan::InPlace { .. } => Ok(()),
            WritePlan::Provision { data_block: b } | WritePlan::BreakSharing { to: b, .. } => {
                self.mutate_admitted(|p| Ok(p.tm.dec(Which::Data, b)?))
            }
        }
    }

    /// Unmaps `[begin, end)` of device `id`; returns how many mappings were removed.
    pub fn discard(&mut self, id: u64, begin: u64, end: u64) -> Result<u64, PoolError> {
        self.mutate(|p| {
            let mut d = p.device_details(id)?;
            let n = p.with_subtree(id, |tm, root| {
                btree::remove_range(tm, Refs::DataBlock, root, begin, end)
            })?;
            if n > 0 {
                d.mapped_blocks = d.mapped_blocks.saturating_sub(n);
                p.details.insert(id, d);
            }
            Ok(n)
        })
    }

    /// Mappings of device `id` in `[begin, end)`, in order, as `(vblock, data block, time)`.
    pub fn mappings(
        &mut self,
        id: u64,
        begin: u64,
        end: u64,
    ) -> Result<Vec<(u64, BlockTime)>, PoolError> {
        let root = self.dev_root(id)?;
        let mut out = Vec::new();
        let mut k = begin;
        let mut v = [0u8; 8];
        while k < end {
            match btree::lookup_ge(&mut self.tm.cache, root, k, &mut v)? {
                Some(key) if key < k => {
                    return Err(PoolError::Metadata(PdError::BadNode {
                        block: root,
                        reason: "keys out of order",
                    }))
                }
                Some(key) if key < end => {
                    out.push((key, BlockTime::unpack(u64::from_le_bytes(v))));
                    k = key + 1;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Current transaction id.
    pub fn transaction_id(&self) -> u64 {
        self.sb.trans_id
    }

    /// Sets the transaction id if it is `old` (persisted at the next commit).
    pub fn set_transaction_id(&mut self, old: u64, new: u64) -> Result<(), PoolError> {
        self.mutate(|p| {
            if p.sb.trans_id != old {
                return Err(PoolError::TransactionIdMismatch {
                    expected: old,
                    actual: p.sb.trans_id,
                });
            }
            p.sb.trans_id = new;
            Ok(())
        })
    }

    /// Holds a metadata snapshot: a copy of the superblock whose trees stay readable until
    /// released. Commits before and after.
    pub fn reserve_metadata_snap(&mut self) -> Result<u64, PoolError> {
        if self.sb.held_root != 0 {
            return Err(PoolError::MetadataSnapExists);
        }
        self.commit()?;
        let s = self.mutate(|p| {
            let s = p.tm.new_block()?;
            let mut copy = p.sb.clone();
            copy.data_sm_root = SmRoot::default();
            copy.metadata_sm_root = SmRoot::default();
            copy.held_root = 0;
            let mut buf = Box::new([0u8; BLOCK_SIZE]);
            copy.emit(s, &mut buf);
            p.tm.cache.write(s, BlockKind::Superblock, &buf)?;
            p.tm.inc(Which::Meta, p.sb.data_mapping_root)?;
            p.tm.inc(Which::Meta, p.sb.device_details_root)?;
            p.sb.held_root = s;
            Ok(s)
        })?;
        self.commit()?;
        Ok(s)
    }

    /// Releases the held metadata snapshot.
    pub fn release_metadata_snap(&mut self) -> Result<(), PoolError> {
        let s = self.sb.held_root;
        if s == 0 {
            return Err(PoolError::NoMetadataSnap);
        }
        self.mutate(|p| {
            let mut buf = Box::new([0u8; BLOCK_SIZE]);
            p.tm.cache.read_into(s, BlockKind::Superblock, &mut buf)?;
            let held = Superblock::decode(&buf);
            btree::delete(&mut p.tm, Refs::Subtree, held.data_mapping_root)?;
            btree::delete(&mut p.tm, Refs::None, held.device_details_root)?;
            p.tm.dec(Which::Meta, s)?;
            p.tm.cache.forget(s);
            p.sb.held_root = 0;
            Ok(())
        })
    }

    /// Grows the data device to `nr_blocks`.
    pub fn grow_data(&mut self, nr_blocks: u64) -> Result<(), PoolError> {
        let current = self.tm.space_map(Which::Data).nr_blocks();
        if nr_blocks < current {
            return Err(PoolError::Shrink {
                current,
                requested: nr_blocks,
            });
        }
        if nr_blocks >= MAX_DATA_BLOCKS {
            return Err(PoolError::TooManyDataBlocks(nr_blocks));
        }
        self.mutate(|p| Ok(p.tm.grow_data(nr_blocks)?))
    }

    /// Grows the metadata space map to the device's size (or `nr_blocks` if smaller). Needs
    /// no free metadata block, so it works on a full pool.
    pub fn grow_metadata(&mut self, nr_blocks: u64) -> Result<(), PoolError> {
        let current = self.tm.space_map(Which::Meta).nr_blocks();
        if nr_blocks < current {
            return Err(PoolError::Shrink {
                current,
                requested: nr_blocks,
            });
        }
        if self.failed {
            return Err(PoolError::Failed);
        }
        if self.read_only {
            return Err(PoolError::ReadOnly);
        }
        self.tm.grow_metadata(nr_blocks).map_err(|e| {
            self.failed = true;
            PoolError::from(e)
        })
    }

    /// Pool statistics.
    pub fn stats(&mut self) -> Result<PoolStats, PoolError> {
        let nr_devices = self.devices()?.len() as u64;
        let d = self.tm.space_map(Which::Data);
        Ok(PoolStats {
            data_block_size: self.sb.data_block_size,
            nr_data_blocks: d.nr_blocks(),
            free_data_blocks: d.nr_free(),
            nr_metadata_blocks: self.tm.space_map(Which::Meta).nr_blocks(),
            free_metadata_blocks: self.tm.meta_free(),
            transaction_id: self.sb.trans_id,
            time: self.sb.time,
            held_root: self.sb.held_root,
            needs_check: self.sb.needs_check(),
            read_only: self.read_only,
            nr_devices,
        })
    }

    /// Makes every change durable: dirty blocks, flush, then the superblock alone, flush.
    pub fn commit(&mut self) -> Result<(), PoolError> {
        if self.failed {
            return Err(PoolError::Failed);
        }
        if self.read_only {
            return Ok(());
        }
        let r = self.commit_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn commit_inner(&mut self) -> Result<(), PoolError> {
        for (id, d) in core::mem::take(&mut self.details) {
            let (r, _) = btree::insert(
                &mut self.tm,
                Refs::None,
                self.sb.device_details_root,
                id,
                &d.pack(),
            )?;
            self.sb.device_details_root = r;
        }
        self.tm.pre_commit()?;
        self.sb.data_sm_root = self.tm.sm_root(Which::Data);
        self.sb.metadata_sm_root = self.tm.sm_root(Which::Meta);
        write_superblock(self.tm.cache.dev_mut(), &self.sb)?;
        self.tm.post_commit();
        self.committed = self.sb.clone();
        Ok(())
    }

    /// Sets or clears NEEDS_CHECK in the committed superblock, in place.
    pub fn set_needs_check(&mut self, on: bool) -> Result<(), PoolError> {
        let mut sb = self.committed.clone();
        sb.flags = if on {
            sb.flags | NEEDS_CHECK
        } else {
            sb.flags & !NEEDS_CHECK
        };
        write_superblock(self.tm.cache.dev_mut(), &sb)?;
        self.committed.flags = sb.flags;
        self.sb.flags = sb.flags;
        if on {
            self.read_only = true;
        }
        Ok(())
    }
}

/// Reads and validates the superblock of a metadata device.
pub fn read_superblock<D: BlockDevice + ?Sized>(dev: &mut D) -> Result<Superblock, PoolError> {
    let mut buf = Box::new([0u8; BLOCK_SIZE]);
    dev.read_block(0, &mut buf).map_err(PdError::from)?;
    if superblock::is_zeroed(&buf) {
        return Err(PoolError::Unformatted);
    }
    Ok(Superblock::parse(&buf, 0)?)
}

fn write_superblock<D: BlockDevice + ?Sized>(
    dev: &mut D,
    sb: &Superblock,
) -> Result<(), PoolError> {
    let mut buf = Box::new([0u8; BLOCK_SIZE]);
    sb.emit(0, &mut buf);
    dev.write_block(0, &buf).map_err(PdError::from)?;
    dev.flush().map_err(PdError::from)?;
    Ok(())
}

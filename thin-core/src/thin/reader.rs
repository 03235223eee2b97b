//! Read-only access to thin metadata for dumpers and other walkers: the live trees or those
//! of a held metadata snapshot. Needs no space maps (a metadata snapshot has none), so it
//! works on metadata too damaged for [`crate::thin::Pool::open`].

use crate::block::BlockDevice;
use crate::checksum::BlockKind;
use crate::pdata::btree;
use crate::pdata::cache::Cache;
use crate::pdata::PdError;
use crate::thin::details::{BlockTime, DeviceDetails, DETAILS_SIZE};
use crate::thin::pool::{read_superblock, PoolError};
use crate::thin::superblock::Superblock;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Which trees to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The live trees of block 0.
    Live,
    /// The held metadata snapshot (`None`: the one block 0 names).
    MetadataSnap(Option<u64>),
}

/// A read-only view of one set of thin trees.
pub struct Reader<D> {
    cache: Cache<D>,
    /// Block 0.
    live: Superblock,
    /// The superblock whose trees are read (block 0, or the snapshot copy).
    sb: Superblock,
}

impl<D> core::fmt::Debug for Reader<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader").field("sb", &self.sb).finish()
    }
}

impl<D: BlockDevice> Reader<D> {
    /// Validates block 0 (and the snapshot copy if asked for) and prepares to read.
    pub fn open(mut dev: D, cache_blocks: usize, source: Source) -> Result<Self, PoolError> {
        let live = read_superblock(&mut dev)?;
        Self::with_superblock(dev, cache_blocks, live, source)
    }

    /// Like [`Reader::open`] with a superblock supplied by the caller (for tools that
    /// override roots or repair a damaged block 0).
    pub fn with_superblock(
        dev: D,
        cache_blocks: usize,
        live: Superblock,
        source: Source,
    ) -> Result<Self, PoolError> {
        let mut cache = Cache::new(dev, cache_blocks);
        let sb = match source {
            Source::Live => live.clone(),
            Source::MetadataSnap(at) => {
                let s = at.unwrap_or(live.held_root);
                if s == 0 {
                    return Err(PoolError::NoMetadataSnap);
                }
                let mut buf = Box::new([0u8; crate::block::BLOCK_SIZE]);
                cache.read_into(s, BlockKind::Superblock, &mut buf)?;
                Superblock::decode(&buf)
            }
        };
        Ok(Reader { cache, live, sb })
    }

    /// Block 0's superblock.
    pub fn live_superblock(&self) -> &Superblock {
        &self.live
    }

    /// The superblock whose trees are read.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The cache, for walkers that read nodes themselves.
    pub fn cache(&mut self) -> &mut Cache<D> {
        &mut self.cache
    }

    /// Devices with their details, ascending; a device in one tree but not the other is an
    /// error.
    pub fn devices(&mut self) -> Result<Vec<(u64, DeviceDetails)>, PoolError> {
        let mut details = Vec::new();
        btree::walk(
            &mut self.cache,
            self.sb.device_details_root,
            DETAILS_SIZE,
            |k, v| {
                details.push((k, DeviceDetails::unpack(v)));
                true
            },
        )?;
        let mut ids = Vec::new();
        btree::walk(&mut self.cache, self.sb.data_mapping_root, 8, |k, _| {
            ids.push(k);
            true
        })?;
        if ids.len() != details.len() || ids.iter().zip(&details).any(|(a, (b, _))| a != b) {
            return Err(PoolError::Metadata(PdError::BadNode {
                block: self.sb.device_details_root,
                reason: "details tree and mapping tree list different devices",
            }));
        }
        Ok(details)
    }

    /// Root of device `id`'s mapping tree.
    pub fn device_root(&mut self, id: u64) -> Result<u64, PoolError> {
        btree::lookup_u64(&mut self.cache, self.sb.data_mapping_root, id)?
            .ok_or(PoolError::NoSuchDevice(id))
    }

    /// Visits the mappings of device `id` in ascending order; `f` returns `false` to stop.
    pub fn walk_mappings(
        &mut self,
        id: u64,
        mut f: impl FnMut(u64, BlockTime) -> bool,
    ) -> Result<(), PoolError> {
        let root = self.device_root(id)?;
        btree::walk(&mut self.cache, root, 8, |k, v| {
            f(
                k,
                BlockTime::unpack(u64::from_le_bytes([
                    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                ])),
            )
        })?;
        Ok(())
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.cache.into_device()
    }
}

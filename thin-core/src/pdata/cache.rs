//! A bounded write-back cache of metadata blocks.
//!
//! Invariants:
//! - the number of slots is fixed at creation; nothing grows afterwards;
//! - a block read from the device is validated (checksum, own location, node header) for the
//!   type it is read as before anyone sees it, and only once while it stays cached;
//! - dirty blocks are stamped (location + checksum) as they are written out, on eviction or
//!   flush. The transaction manager only dirties blocks the committed state does not reference,
//!   so writing them early is safe.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::{self, BlockKind};
use crate::pdata::node;
use crate::pdata::PdError;
use alloc::boxed::Box;
use alloc::vec::Vec;
use hashbrown::HashMap;

/// Smallest useful capacity: a B-tree operation pins nothing, but the transaction manager
/// keeps a handful of blocks in flight.
pub const MIN_CAPACITY: usize = 16;

const EMPTY: u64 = u64::MAX;

struct Slot {
    block: u64,
    data: Box<Block>,
    kind: Option<BlockKind>,
    dirty: bool,
    referenced: bool,
}

/// Counters for benchmarks and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub writes: u64,
}

/// The cache.
pub struct Cache<D> {
    dev: D,
    slots: Vec<Slot>,
    map: HashMap<u64, usize>,
    hand: usize,
    stats: CacheStats,
}

impl<D> core::fmt::Debug for Cache<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.slots.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Validates a block just read from `location` as `kind`.
pub fn validate(data: &Block, location: u64, kind: BlockKind) -> Result<(), PdError> {
    if !checksum::csum_ok(data, kind) {
        return Err(PdError::Checksum {
            block: location,
            kind,
        });
    }
    let found = checksum::stored_blocknr(data);
    if found != location {
        return Err(PdError::BlockNr {
            block: location,
            kind,
            found,
        });
    }
    if kind == BlockKind::Node {
        node::validate_header(data, location)?;
    }
    Ok(())
}

impl<D: BlockDevice> Cache<D> {
    /// A cache of `capacity` blocks (at least [`MIN_CAPACITY`]) over `dev`.
    pub fn new(dev: D, capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        let mut slots = Vec::with_capacity(capacity);
        for _ in 0..capacity {
            slots.push(Slot {
                block: EMPTY,
                data: Box::new([0u8; BLOCK_SIZE]),
                kind: None,
                dirty: false,
                referenced: false,
            });
        }
        Cache {
            dev,
            slots,
            map: HashMap::with_capacity(capacity),
            hand: 0,
            stats: CacheStats::default(),
        }
    }

    /// The device.
    pub fn dev(&self) -> &D {
        &self.dev
    }
    /// The device, mutably (bypasses the cache: callers must not touch cached blocks).
    pub fn dev_mut(&mut self) -> &mut D {
        &mut self.dev
    }
    /// Gives the device back, dropping every cached block (dirty ones are lost).
    pub fn into_device(self) -> D {
        self.dev
    }
    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
    /// Capacity in blocks.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn write_out(dev: &mut D, slot: &mut Slot, stats: &mut CacheStats) -> Result<(), PdError> {
        if slot.dirty {
            let kind = slot.kind.unwrap_or(BlockKind::Node);
            checksum::prepare_for_write(&mut slot.data, slot.block, kind);
            dev.write_block(slot.block, &slot.data)?;
            stats.writes += 1;
            slot.dirty = false;
        }
        Ok(())
    }

    /// Finds a slot to reuse (clock), writing it out if dirty.
    fn victim(&mut self) -> Result<usize, PdError> {
        let n = self.slots.len();
        for _ in 0..2 * n + 1 {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let s = &mut self.slots[i];
            if s.block == EMPTY {
                return Ok(i);
            }
            if s.referenced {
                s.referenced = false;
                continue;
            }
            Self::write_out(&mut self.dev, s, &mut self.stats)?;
            self.map.remove(&s.block);
            s.block = EMPTY;
            s.kind = None;
            return Ok(i);
        }
        // Every slot was referenced twice round: take the one under the hand.
        let i = self.hand;
        let s = &mut self.slots[i];
        Self::write_out(&mut self.dev, s, &mut self.stats)?;
        self.map.remove(&s.block);
        s.block = EMPTY;
        s.kind = None;
        Ok(i)
    }

    /// Returns the slot holding `block`, loading and validating it as `kind`.
    fn load(&mut self, block: u64, kind: BlockKind) -> Result<usize, PdError> {
        if let Some(&i) = self.map.get(&block) {
            self.stats.hits += 1;
            let s = &mut self.slots[i];
            s.referenced = true;
            match s.kind {
                Some(k) if k == kind => {}
                Some(held) if s.dirty => {
                    return Err(PdError::KindMismatch {
                        block,
                        wanted: kind,
                        held,
                    })
                }
                _ => {
                    validate(&s.data, block, kind)?;
                    s.kind = Some(kind);
                }
            }
            return Ok(i);
        }
        self.stats.misses += 1;
        let i = self.victim()?;
        let s = &mut self.slots[i];
        self.dev.read_block(block, &mut s.data)?;
        validate(&s.data, block, kind)?;
        s.block = block;
        s.kind = Some(kind);
        s.dirty = false;
        s.referenced = true;
        self.map.insert(block, i);
        Ok(i)
    }

    /// Runs `f` on block `block` read as `kind`.
    pub fn read<R>(
        &mut self,
        block: u64,
        kind: BlockKind,
        f: impl FnOnce(&Block) -> R,
    ) -> Result<R, PdError> {
        let i = self.load(block, kind)?;
        Ok(f(&self.slots[i].data))
    }

    /// Copies block `block` (read as `kind`) into `out`.
    pub fn read_into(
        &mut self,
        block: u64,
        kind: BlockKind,
        out: &mut Block,
    ) -> Result<(), PdError> {
        self.read(block, kind, |d| out.copy_from_slice(d))
    }

    /// Modifies a block in place (it must be writable in this transaction).
    pub fn modify<R>(
        &mut self,
        block: u64,
        kind: BlockKind,
        f: impl FnOnce(&mut Block) -> R,
    ) -> Result<R, PdError> {
        let i = self.load(block, kind)?;
        let s = &mut self.slots[i];
        s.dirty = true;
        Ok(f(&mut s.data))
    }

    /// Replaces the content of `block` without reading it.
    pub fn write(&mut self, block: u64, kind: BlockKind, data: &Block) -> Result<(), PdError> {
        crate::block::check_range(block, self.dev.nr_blocks())?;
        let i = match self.map.get(&block) {
            Some(&i) => i,
            None => {
                let i = self.victim()?;
                self.map.insert(block, i);
                i
            }
        };
        let s = &mut self.slots[i];
        s.block = block;
        s.data.copy_from_slice(data);
        s.kind = Some(kind);
        s.dirty = true;
        s.referenced = true;
        Ok(())
    }

    /// Writes every dirty block, in block order.
    pub fn write_dirty(&mut self) -> Result<(), PdError> {
        let mut dirty: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].dirty)
            .collect();
        dirty.sort_unstable_by_key(|&i| self.slots[i].block);
        for i in dirty {
            Self::write_out(&mut self.dev, &mut self.slots[i], &mut self.stats)?;
        }
        Ok(())
    }

    /// Forgets every cached block (used on abort: dirty blocks are dropped).
    pub fn invalidate(&mut self) {
        for s in &mut self.slots {
            s.block = EMPTY;
            s.kind = None;
            s.dirty = false;
            s.referenced = false;
        }
        self.map.clear();
    }

    /// Forgets one block if cached (dropping it even if dirty).
    pub fn forget(&mut self, block: u64) {
        if let Some(i) = self.map.remove(&block) {
            let s = &mut self.slots[i];
            s.block = EMPTY;
            s.kind = None;
            s.dirty = false;
        }
    }
}

//! Transaction manager: shadowing (copy-on-write) of metadata blocks, the metadata and data
//! space maps, and the commit protocol.
//!
//! Invariants:
//! - a block reachable from the committed superblock is never written: a block is writable only
//!   if it was allocated or shadowed in this transaction and its count is 1;
//! - a block (metadata or data) freed in this transaction is not handed out again before
//!   commit: allocation requires the block to be free both now and in the committed state
//!   (the committed state of a bitmap shadowed in this transaction is its old copy, which is
//!   itself not reused before commit);
//! - metadata reference-count changes are recorded in an in-memory overlay and applied to the
//!   bitmaps and the overflow tree outside of any other space-map operation (the overlay breaks
//!   the recursion "changing a bitmap needs a new block which changes a bitmap"); the overlay
//!   is applied whenever it grows past a bound and at commit, so its size is bounded;
//! - commit writes every dirty block, flushes, and only then may the caller write the
//!   superblock (last, alone) and flush again.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::btree::{self, Refs};
use crate::pdata::cache::Cache;
use crate::pdata::sm::{self, IndexEntry, SmRoot, ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS};
use crate::pdata::{node, PdError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use hashbrown::{HashMap, HashSet};

/// Which space map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The metadata space map (counts metadata blocks, including its own).
    Meta,
    /// The data space map (counts data-device blocks).
    Data,
}

/// The metadata overlay is applied once it holds this many entries.
const OVERLAY_APPLY_THRESHOLD: usize = 4096;

#[derive(Debug)]
enum IndexStore {
    /// Metadata: a single index block, kept in memory and written at commit.
    Block { loc: u64, entries: Vec<IndexEntry> },
    /// Data: an index btree; changed entries are kept here until commit.
    Tree {
        root: u64,
        dirty: BTreeMap<u64, IndexEntry>,
    },
}

/// In-core state of one disk space map.
#[derive(Debug)]
pub struct SpaceMap {
    nr_blocks: u64,
    nr_allocated: u64,
    ref_root: u64,
    index: IndexStore,
    /// Bitmaps shadowed in this transaction: index → committed location.
    prev_loc: HashMap<u64, u64>,
    cursor: u64,
}

impl SpaceMap {
    /// Blocks tracked.
    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    /// Blocks with a non-zero count.
    pub fn nr_allocated(&self) -> u64 {
        self.nr_allocated
    }
    /// Free blocks.
    pub fn nr_free(&self) -> u64 {
        self.nr_blocks - self.nr_allocated.min(self.nr_blocks)
    }
}

/// The transaction manager.
pub struct Tm<D> {
    /// The block cache.
    pub cache: Cache<D>,
    msm: SpaceMap,
    dsm: SpaceMap,
    overlay: BTreeMap<u64, u32>,
    applying: bool,
    /// Change in the number of allocated metadata blocks not yet applied from the overlay.
    pending_alloc: i64,
    /// Metadata blocks allocated in the committed state (start of this transaction).
    meta_committed_allocated: u64,
    /// Metadata blocks taken from free in this transaction. A block freed in this transaction
    /// stays unusable until commit, so what can still be allocated is
    /// `nr_blocks - meta_committed_allocated - meta_claimed` (as dm's metadata space map
    /// counts it), not `nr_blocks - nr_allocated`.
    meta_claimed: u64,
    shadowed: HashSet<u64>,
    scratch: Box<Block>,
}

impl<D> core::fmt::Debug for Tm<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tm")
            .field("msm", &self.msm)
            .field("dsm", &self.dsm)
            .finish()
    }
}

fn zero_block() -> Box<Block> {
    Box::new([0u8; BLOCK_SIZE])
}

/// In-core space-map state from committed roots (reads the metadata index block).
fn load_space_maps<D: BlockDevice>(
    cache: &mut Cache<D>,
    meta: SmRoot,
    data: SmRoot,
) -> Result<(SpaceMap, SpaceMap), PdError> {
    let nb = sm::nr_bitmaps(meta.nr_blocks);
    if nb as usize > MAX_METADATA_BITMAPS || meta.nr_blocks > cache.dev().nr_blocks() {
        return Err(PdError::SpaceMap {
            block: 0,
            reason: "metadata space map larger than the device",
        });
    }
    let mut entries = Vec::with_capacity(nb as usize);
    cache.read(meta.bitmap_root, BlockKind::Index, |b| {
        for i in 0..nb as usize {
            entries.push(sm::index_block_entry(b, i));
        }
    })?;
    let msm = SpaceMap {
        nr_blocks: meta.nr_blocks,
        nr_allocated: meta.nr_allocated,
        ref_root: meta.ref_count_root,
        index: IndexStore::Block {
            loc: meta.bitmap_root,
            entries,
        },
        prev_loc: HashMap::new(),
        cursor: 0,
    };
    let dsm = SpaceMap {
        nr_blocks: data.nr_blocks,
        nr_allocated: data.nr_allocated,
        ref_root: data.ref_count_root,
        index: IndexStore::Tree {
            root: data.bitmap_root,
            dirty: BTreeMap::new(),
        },
        prev_loc: HashMap::new(),
        cursor: 0,
    };
    Ok((msm, dsm))
}

impl<D: BlockDevice> Tm<D> {
    /// Formats fresh space maps on `dev`: `meta_blocks` metadata blocks (block 0 is reserved
    /// for the superblock) and `data_blocks` data blocks. Nothing is durable until commit.
    pub fn format(
        dev: D,
        cache_blocks: usize,
        meta_blocks: u64,
        data_blocks: u64,
    ) -> Result<Self, PdError> {
        let meta_blocks = meta_blocks.min(sm::MAX_METADATA_BLOCKS);
        let nb = sm::nr_bitmaps(meta_blocks);
        // Bootstrap layout: 0 superblock, 1 index, 2 overflow root, 3.. bitmaps.
        let first_free = 3 + nb;
        if meta_blocks < first_free + 8 || dev.nr_blocks() < meta_blocks {
            return Err(PdError::NoMetadataSpace);
        }
        let mut tm = Tm {
            cache: Cache::new(dev, cache_blocks),
            msm: SpaceMap {
                nr_blocks: meta_blocks,
                nr_allocated: first_free,
                ref_root: 2,
                index: IndexStore::Block {
                    loc: 1,
                    entries: Vec::new(),
                },
                prev_loc: HashMap::new(),
                cursor: first_free,
            },
            dsm: SpaceMap {
                nr_blocks: data_blocks,
                nr_allocated: 0,
                ref_root: 0,
                index: IndexStore::Tree {
                    root: 0,
                    dirty: BTreeMap::new(),
                },
                prev_loc: HashMap::new(),
                cursor: 0,
            },
            overlay: BTreeMap::new(),
            applying: false,
            pending_alloc: 0,
            meta_committed_allocated: first_free,
            meta_claimed: 0,
            shadowed: HashSet::new(),
            scratch: zero_block(),
        };
        let mut entries = Vec::new();
        let mut b = zero_block();
        for i in 0..nb {
            b.fill(0);
            let lo = i * ENTRIES_PER_BITMAP;
            let used = first_free.saturating_sub(lo).min(ENTRIES_PER_BITMAP);
            for e in 0..used {
                sm::bitmap_set(&mut b, e, 1);
            }
            tm.cache.write(3 + i, BlockKind::Bitmap, &b)?;
            tm.shadowed.insert(3 + i);
            entries.push(IndexEntry {
                blocknr: 3 + i,
                nr_free: (ENTRIES_PER_BITMAP - used) as u32,
                none_free_before: used as u32,
            });
        }
        tm.msm.index = IndexStore::Block { loc: 1, entries };
        tm.shadowed.insert(1);
        node::init(&mut b, true, 4);
        tm.cache.write(2, BlockKind::Node, &b)?;
        tm.shadowed.insert(2);
        // The data space map: an index tree, an overflow tree and zeroed bitmaps.
        tm.dsm.index = IndexStore::Tree {
            root: btree::empty(&mut tm, sm::INDEX_ENTRY_SIZE as u32)?,
            dirty: BTreeMap::new(),
        };
        tm.dsm.ref_root = btree::empty(&mut tm, 4)?;
        tm.extend_data_bitmaps(0, data_blocks)?;
        tm.apply_overlay()?;
        Ok(tm)
    }

    /// Opens space maps from their committed roots.
    pub fn open(dev: D, cache_blocks: usize, meta: SmRoot, data: SmRoot) -> Result<Self, PdError> {
        let mut cache = Cache::new(dev, cache_blocks);
        let (msm, dsm) = load_space_maps(&mut cache, meta, data)?;
        Ok(Tm {
            cache,
            meta_committed_allocated: msm.nr_allocated,
            meta_claimed: 0,
            msm,
            dsm,
            overlay: BTreeMap::new(),
            applying: false,
            pending_alloc: 0,
            shadowed: HashSet::new(),
            scratch: zero_block(),
        })
    }

    /// Throws away the transaction in progress and reloads the space maps from their committed
    /// roots (abort).
    pub fn reopen(&mut self, meta: SmRoot, data: SmRoot) -> Result<(), PdError> {
        self.cache.invalidate();
        let (msm, dsm) = load_space_maps(&mut self.cache, meta, data)?;
        self.msm = msm;
        self.dsm = dsm;
        self.overlay.clear();
        self.applying = false;
        self.pending_alloc = 0;
        self.meta_committed_allocated = self.msm.nr_allocated;
        self.meta_claimed = 0;
        self.shadowed.clear();
        Ok(())
    }

    /// Gives the device back without committing (what a crash would leave, minus the cache).
    pub fn into_device(self) -> D {
        self.cache.into_device()
    }

    /// A space map's in-core state.
    pub fn space_map(&self, which: Which) -> &SpaceMap {
        match which {
            Which::Meta => &self.msm,
            Which::Data => &self.dsm,
        }
    }

    fn sm_mut(&mut self, which: Which) -> &mut SpaceMap {
        match which {
            Which::Meta => &mut self.msm,
            Which::Data => &mut self.dsm,
        }
    }

    /// The packed root of a space map (meaningful right after [`Tm::pre_commit`]).
    pub fn sm_root(&self, which: Which) -> SmRoot {
        let s = self.space_map(which);
        SmRoot {
            nr_blocks: s.nr_blocks,
            nr_allocated: s.nr_allocated,
            bitmap_root: match &s.index {
                IndexStore::Block { loc, .. } => *loc,
                IndexStore::Tree { root, .. } => *root,
            },
            ref_count_root: s.ref_root,
        }
    }

    // ---- index entries ------------------------------------------------------------------

    fn index_entry(&mut self, which: Which, i: u64) -> Result<IndexEntry, PdError> {
        match &self.sm_mut(which).index {
            IndexStore::Block { entries, loc } => {
                entries.get(i as usize).copied().ok_or(PdError::SpaceMap {
                    block: *loc,
                    reason: "bitmap index out of range",
                })
            }
            IndexStore::Tree { root, dirty } => {
                if let Some(e) = dirty.get(&i) {
                    return Ok(*e);
                }
                let root = *root;
                let mut v = [0u8; sm::INDEX_ENTRY_SIZE];
                if btree::lookup(&mut self.cache, root, i, &mut v)? {
                    Ok(IndexEntry::unpack(&v))
                } else {
                    Err(PdError::SpaceMap {
                        block: root,
                        reason: "missing data space map index entry",
                    })
                }
            }
        }
    }

    fn set_index_entry(&mut self, which: Which, i: u64, e: IndexEntry) {
        match &mut self.sm_mut(which).index {
            IndexStore::Block { entries, .. } => entries[i as usize] = e,
            IndexStore::Tree { dirty, .. } => {
                dirty.insert(i, e);
            }
        }
    }

    // ---- counts -------------------------------------------------------------------------

    fn check_block(&self, which: Which, b: u64) -> Result<(), PdError> {
        let s = self.space_map(which);
        if b >= s.nr_blocks {
            return Err(PdError::RefCount {
                block: b,
                reason: "block beyond the end of the space map",
            });
        }
        Ok(())
    }

    /// The count stored in bitmaps and overflow tree (ignores the metadata overlay).
    fn stored_count(&mut self, which: Which, b: u64) -> Result<u32, PdError> {
        let i = b / ENTRIES_PER_BITMAP;
        let ie = self.index_entry(which, i)?;
        let v = self.cache.read(ie.blocknr, BlockKind::Bitmap, |d| {
            sm::bitmap_get(d, b % ENTRIES_PER_BITMAP)
        })?;
        if v < 3 {
            return Ok(v);
        }
        let root = self.space_map(which).ref_root;
        let mut val = [0u8; 4];
        if btree::lookup(&mut self.cache, root, b, &mut val)? {
            let c = u32::from_le_bytes(val);
            if c < 3 {
                return Err(PdError::RefCount {
                    block: b,
                    reason: "overflow count below 3",
                });
            }
            Ok(c)
        } else {
            Err(PdError::RefCount {
                block: b,
                reason: "bitmap says 3+ but no overflow entry",
            })
        }
    }

    /// The current reference count of block `b`.
    pub fn count(&mut self, which: Which, b: u64) -> Result<u32, PdError> {
        self.check_block(which, b)?;
        if which == Which::Meta {
            if let Some(&c) = self.overlay.get(&b) {
                return Ok(c);
            }
        }
        self.stored_count(which, b)
    }

    fn set_count(&mut self, which: Which, b: u64, old: u32, c: u32) -> Result<(), PdError> {
        match which {
            Which::Meta => {
                self.overlay.insert(b, c);
                self.pending_alloc += i64::from(c > 0) - i64::from(old > 0);
                if old == 0 && c > 0 {
                    self.meta_claimed += 1;
                }
                Ok(())
            }
            Which::Data => self.write_count(Which::Data, b, c),
        }
    }

    /// Increments the count of `b`.
    pub fn inc(&mut self, which: Which, b: u64) -> Result<(), PdError> {
        let c = self.count(which, b)?;
        if c == 0 {
            return Err(PdError::RefCount {
                block: b,
                reason: "increment of a free block",
            });
        }
        let n = c.checked_add(1).ok_or(PdError::RefCount {
            block: b,
            reason: "count overflow",
        })?;
        self.set_count(which, b, c, n)
    }

    /// Adds a reference to `b`, taking it if it is free (restore builds counts this way).
    pub fn inc_or_claim(&mut self, which: Which, b: u64) -> Result<(), PdError> {
        let c = self.count(which, b)?;
        let n = c.checked_add(1).ok_or(PdError::RefCount {
            block: b,
            reason: "count overflow",
        })?;
        self.set_count(which, b, c, n)
    }

    /// Decrements the count of `b`.
    pub fn dec(&mut self, which: Which, b: u64) -> Result<(), PdError> {
        let c = self.count(which, b)?;
        if c == 0 {
            return Err(PdError::RefCount {
                block: b,
                reason: "decrement of a free block",
            });
        }
        self.set_count(which, b, c, c - 1)
    }

    /// Writes a count into the bitmap (shadowing it first) and the overflow tree.
    fn write_count(&mut self, which: Which, b: u64, c: u32) -> Result<(), PdError> {
        let i = b / ENTRIES_PER_BITMAP;
        let e = b % ENTRIES_PER_BITMAP;
        let loc = self.writable_bitmap(which, i)?;
        let old = self.cache.modify(loc, BlockKind::Bitmap, |d| {
            let old = sm::bitmap_get(d, e);
            sm::bitmap_set(d, e, c.min(3));
            old
        })?;
        if c >= 3 {
            let root = self.space_map(which).ref_root;
            let (nr, _) = btree::insert(self, Refs::None, root, b, &c.to_le_bytes())?;
            self.sm_mut(which).ref_root = nr;
        } else if old == 3 {
            let root = self.space_map(which).ref_root;
            let (nr, _) = btree::remove(self, Refs::None, root, b)?;
            self.sm_mut(which).ref_root = nr;
        }
        let mut ie = self.index_entry(which, i)?;
        if old == 0 && c > 0 {
            ie.nr_free = ie.nr_free.saturating_sub(1);
            if u64::from(ie.none_free_before) == e {
                ie.none_free_before = e as u32 + 1;
            }
            self.sm_mut(which).nr_allocated += 1;
            if which == Which::Meta {
                self.pending_alloc -= 1;
            }
        } else if old > 0 && c == 0 {
            if which == Which::Meta {
                self.pending_alloc += 1;
            }
            ie.nr_free += 1;
            ie.none_free_before = ie.none_free_before.min(e as u32);
            let s = self.sm_mut(which);
            s.nr_allocated = s.nr_allocated.saturating_sub(1);
        }
        self.set_index_entry(which, i, ie);
        Ok(())
    }

    /// Location of bitmap `i`, shadowed for writing in this transaction.
    fn writable_bitmap(&mut self, which: Which, i: u64) -> Result<u64, PdError> {
        let mut ie = self.index_entry(which, i)?;
        if self.shadowed.contains(&ie.blocknr) {
            return Ok(ie.blocknr);
        }
        let old = ie.blocknr;
        let new = self.alloc(Which::Meta)?;
        self.cache
            .read_into(old, BlockKind::Bitmap, &mut self.scratch)?;
        self.cache.write(new, BlockKind::Bitmap, &self.scratch)?;
        self.shadowed.insert(new);
        self.dec(Which::Meta, old)?;
        self.sm_mut(which).prev_loc.entry(i).or_insert(old);
        ie.blocknr = new;
        self.set_index_entry(which, i, ie);
        Ok(new)
    }

    // ---- allocation ---------------------------------------------------------------------

    /// Whether entry `b` is free in the committed state.
    fn committed_free(&mut self, which: Which, b: u64) -> Result<bool, PdError> {
        let i = b / ENTRIES_PER_BITMAP;
        match self.space_map(which).prev_loc.get(&i) {
            None => Ok(true), // bitmap unchanged since commit: the caller saw a zero entry in it
            Some(&old) => Ok(self.cache.read(old, BlockKind::Bitmap, |d| {
                sm::bitmap_get(d, b % ENTRIES_PER_BITMAP)
            })? == 0),
        }
    }

    /// Searches `[lo, hi)` for a block free now and at the last commit.
    fn find_free_in(&mut self, which: Which, lo: u64, hi: u64) -> Result<Option<u64>, PdError> {
        if lo >= hi {
            return Ok(None);
        }
        let mut i = lo / ENTRIES_PER_BITMAP;
        while i * ENTRIES_PER_BITMAP < hi {
            let ie = self.index_entry(which, i)?;
            let base = i * ENTRIES_PER_BITMAP;
            let end = hi.min(base + ENTRIES_PER_BITMAP);
            if ie.nr_free > 0 {
                let mut pos = lo.max(base + u64::from(ie.none_free_before)).max(base);
                while pos < end {
                    let mut cands = [0u64; 32];
                    let mut n = 0;
                    let (mut e, lim) = (pos - base, end - base);
                    self.cache.read(ie.blocknr, BlockKind::Bitmap, |d| {
                        while e < lim && n < cands.len() {
                            if e % 32 == 0 && e + 32 <= lim {
                                let w = sm::bitmap_word(d, (e / 32) as usize);
                                if (w | (w >> 1)) & 0x5555_5555_5555_5555 == 0x5555_5555_5555_5555 {
                                    e += 32; // every entry of this word is in use
                                    continue;
                                }
                            }
                            if sm::bitmap_get(d, e) == 0 {
                                cands[n] = base + e;
                                n += 1;
                            }
                            e += 1;
                        }
                    })?;
                    for &b in &cands[..n] {
                        if which == Which::Meta && self.overlay.get(&b).is_some_and(|&c| c > 0) {
                            continue;
                        }
                        if self.committed_free(which, b)? {
                            return Ok(Some(b));
                        }
                    }
                    pos = base + e;
                }
            }
            i += 1;
        }
        Ok(None)
    }

    /// Allocates a block (count 1), searching from the cursor and wrapping once.
    pub fn alloc(&mut self, which: Which) -> Result<u64, PdError> {
        let s = self.space_map(which);
        let (nr, cursor) = (s.nr_blocks, s.cursor.min(s.nr_blocks));
        let found = match self.find_free_in(which, cursor, nr)? {
            Some(b) => Some(b),
            None => self.find_free_in(which, 0, cursor)?,
        };
        let b = found.ok_or(match which {
            Which::Meta => PdError::NoMetadataSpace,
            Which::Data => PdError::NoDataSpace,
        })?;
        self.sm_mut(which).cursor = b + 1;
        self.set_count(which, b, 0, 1)?;
        Ok(b)
    }

    // ---- the metadata overlay -----------------------------------------------------------

    /// Applies pending metadata count changes to the bitmaps and overflow tree.
    pub fn apply_overlay(&mut self) -> Result<(), PdError> {
        if self.applying {
            return Ok(());
        }
        self.applying = true;
        let r = self.apply_overlay_inner();
        self.applying = false;
        r
    }

    fn apply_overlay_inner(&mut self) -> Result<(), PdError> {
        while let Some((&b, &c)) = self.overlay.first_key_value() {
            self.write_count(Which::Meta, b, c)?;
            // Writing may have changed counts again (new bitmap or tree blocks); an entry is
            // done only when what was written is still its latest value.
            if self.overlay.get(&b) == Some(&c) {
                self.overlay.remove(&b);
            }
        }
        Ok(())
    }

    /// Applies the overlay if it has grown large (call between operations).
    pub fn maybe_apply(&mut self) -> Result<(), PdError> {
        if self.overlay.len() >= OVERLAY_APPLY_THRESHOLD {
            self.apply_overlay()?;
        }
        Ok(())
    }

    // ---- shadowing ----------------------------------------------------------------------

    /// Allocates a new metadata block that is writable in this transaction.
    pub fn new_block(&mut self) -> Result<u64, PdError> {
        let b = self.alloc(Which::Meta)?;
        self.shadowed.insert(b);
        Ok(b)
    }

    /// Whether `b` may be written in place.
    pub fn is_writable(&mut self, b: u64) -> Result<bool, PdError> {
        Ok(self.shadowed.contains(&b) && self.count(Which::Meta, b)? == 1)
    }

    /// Makes `b` writable: returns its location (itself, or a fresh copy) and whether the
    /// original was shared, in which case the caller must increment everything the copy
    /// references.
    pub fn shadow(&mut self, b: u64, kind: BlockKind) -> Result<(u64, bool), PdError> {
        let c = self.count(Which::Meta, b)?;
        if c == 0 {
            return Err(PdError::RefCount {
                block: b,
                reason: "shadowing a free block",
            });
        }
        if c == 1 && self.shadowed.contains(&b) {
            return Ok((b, false));
        }
        self.cache.read_into(b, kind, &mut self.scratch)?;
        let new = self.new_block()?;
        self.cache.write(new, kind, &self.scratch)?;
        self.dec(Which::Meta, b)?;
        Ok((new, c > 1))
    }

    // ---- growth -------------------------------------------------------------------------

    fn extend_data_bitmaps(&mut self, old: u64, new: u64) -> Result<(), PdError> {
        let zero = zero_block();
        for i in sm::nr_bitmaps(old)..sm::nr_bitmaps(new) {
            let b = self.new_block()?;
            self.cache.write(b, BlockKind::Bitmap, &zero)?;
            self.set_index_entry(
                Which::Data,
                i,
                IndexEntry {
                    blocknr: b,
                    nr_free: ENTRIES_PER_BITMAP as u32,
                    none_free_before: 0,
                },
            );
        }
        self.dsm.nr_blocks = new;
        Ok(())
    }

    /// Grows the data space map to `new` blocks (never shrinks).
    pub fn grow_data(&mut self, new: u64) -> Result<(), PdError> {
        let old = self.dsm.nr_blocks;
        if new <= old {
            return Ok(());
        }
        self.extend_data_bitmaps(old, new)
    }

    /// Grows the metadata space map to `new` blocks (never shrinks; the device must hold them).
    pub fn grow_metadata(&mut self, new: u64) -> Result<(), PdError> {
        let new = new
            .min(sm::MAX_METADATA_BLOCKS)
            .min(self.cache.dev().nr_blocks());
        let old = self.msm.nr_blocks;
        if new <= old {
            return Ok(());
        }
        let (old_nb, new_nb) = (sm::nr_bitmaps(old), sm::nr_bitmaps(new));
        let extra = new_nb - old_nb;
        if new - old < extra {
            return Err(PdError::NoMetadataSpace);
        }
        // New bitmaps live at the start of the added area, then get counted like any block.
        let zero = zero_block();
        for k in 0..extra {
            let b = old + k;
            self.cache.write(b, BlockKind::Bitmap, &zero)?;
            self.shadowed.insert(b);
            if let IndexStore::Block { entries, .. } = &mut self.msm.index {
                entries.push(IndexEntry {
                    blocknr: b,
                    nr_free: ENTRIES_PER_BITMAP as u32,
                    none_free_before: 0,
                });
            }
        }
        self.msm.nr_blocks = new;
        for k in 0..extra {
            self.overlay.insert(old + k, 1);
            self.pending_alloc += 1;
            self.meta_claimed += 1;
        }
        self.apply_overlay()
    }

    // ---- commit -------------------------------------------------------------------------

    /// Writes everything but the superblock and flushes. Afterwards [`Tm::sm_root`] gives the
    /// roots the superblock must carry; call [`Tm::post_commit`] once it is written.
    pub fn pre_commit(&mut self) -> Result<(), PdError> {
        // Data space map: write back changed index entries.
        let dirty = match &mut self.dsm.index {
            IndexStore::Tree { dirty, .. } => core::mem::take(dirty),
            IndexStore::Block { .. } => BTreeMap::new(),
        };
        let mut root = match &self.dsm.index {
            IndexStore::Tree { root, .. } => *root,
            IndexStore::Block { loc, .. } => *loc,
        };
        for (i, e) in dirty {
            root = btree::insert(self, Refs::None, root, i, &e.pack())?.0;
        }
        if let IndexStore::Tree { root: r, .. } = &mut self.dsm.index {
            *r = root;
        }
        self.apply_overlay()?;
        // Metadata space map: shadow the index block, settle, then write it.
        let loc = match &self.msm.index {
            IndexStore::Block { loc, .. } => *loc,
            IndexStore::Tree { root, .. } => *root,
        };
        if !self.shadowed.contains(&loc) {
            let new = self.new_block()?;
            self.dec(Which::Meta, loc)?;
            if let IndexStore::Block { loc, .. } = &mut self.msm.index {
                *loc = new;
            }
        }
        self.apply_overlay()?;
        // Counts must be settled before the superblock may point at them: refuse the
        // commit (the pool then fails and keeps its last committed state) rather than write
        // space maps that disagree with the trees.
        if !self.overlay.is_empty() || self.pending_alloc != 0 {
            return Err(PdError::SpaceMap {
                block: 0,
                reason: "metadata reference counts not settled at commit",
            });
        }
        if let IndexStore::Block { loc, entries } = &self.msm.index {
            sm::build_index_block(entries, &mut self.scratch);
            self.cache.write(*loc, BlockKind::Index, &self.scratch)?;
        }
        self.cache.write_dirty()?;
        self.cache.dev_mut().flush()?;
        Ok(())
    }

    /// Starts a new transaction after the superblock has been written.
    pub fn post_commit(&mut self) {
        // Checked by `pre_commit`, which refuses to commit otherwise.
        debug_assert!(
            self.overlay.is_empty() && self.pending_alloc == 0,
            "metadata counts not settled at commit"
        );
        self.meta_committed_allocated = self.msm.nr_allocated;
        self.meta_claimed = 0;
        self.shadowed.clear();
        self.msm.prev_loc.clear();
        self.dsm.prev_loc.clear();
    }

    /// Metadata blocks that can still be allocated in this transaction: free now (counting
    /// changes not yet applied) and free in the committed state. Blocks freed in this
    /// transaction are not counted: they cannot be reused before commit, so counting them
    /// would let the pool's reserve check pass while allocation fails half-way through an
    /// operation.
    pub fn meta_free(&self) -> u64 {
        let used = (self.msm.nr_allocated as i64 + self.pending_alloc).max(0) as u64;
        let free_now = self.msm.nr_blocks.saturating_sub(used);
        let usable = self
            .msm
            .nr_blocks
            .saturating_sub(self.meta_committed_allocated)
            .saturating_sub(self.meta_claimed);
        free_now.min(usable)
    }

    /// Metadata blocks changed in this transaction (shadowed or new).
    pub fn nr_shadowed(&self) -> usize {
        self.shadowed.len()
    }
}

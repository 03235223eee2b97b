//! Space-map on-disk formats: bitmap blocks, index entries, the metadata index block and the
//! packed space-map root stored in the superblock.
//!
//! ```text
//! bitmap:      0 csum | 4 not_used | 8 blocknr | 16.. 510 LE u64 words, 32 two-bit entries each
//! index entry: 0 blocknr u64 | 8 nr_free u32 | 12 none_free_before u32
//! index block: 0 csum | 4 padding | 8 blocknr | 16.. 255 index entries
//! sm root:     0 nr_blocks | 8 nr_allocated | 16 bitmap_root | 24 ref_count_root (u64 each)
//! ```
//! In each 2-bit entry the bit at the lower position is the *high* bit of the count.

use crate::block::{Block, BLOCK_SIZE};

/// Entries (tracked blocks) per bitmap block.
pub const ENTRIES_PER_BITMAP: u64 = ((BLOCK_SIZE - 16) * 4) as u64;
/// Index entries held by the metadata index block.
pub const MAX_METADATA_BITMAPS: usize = 255;
/// The largest metadata device the format can track, in blocks.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS as u64 * ENTRIES_PER_BITMAP;
/// Size of a packed index entry.
pub const INDEX_ENTRY_SIZE: usize = 16;
/// Size of the used part of a packed space-map root.
pub const SM_ROOT_SIZE: usize = 32;

const _: () = assert!(ENTRIES_PER_BITMAP == 16320);
const _: () = assert!(MAX_METADATA_BLOCKS == 4_161_600);
const _: () = assert!(16 + MAX_METADATA_BITMAPS * INDEX_ENTRY_SIZE == BLOCK_SIZE);

fn rd64(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}
fn rd32(b: &[u8], off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}

/// Number of bitmaps needed for `nr_blocks` blocks.
pub fn nr_bitmaps(nr_blocks: u64) -> u64 {
    nr_blocks.div_ceil(ENTRIES_PER_BITMAP)
}

/// Reads 2-bit entry `e` of a bitmap block.
pub fn bitmap_get(b: &Block, e: u64) -> u32 {
    assert!(e < ENTRIES_PER_BITMAP);
    let w = rd64(b, 16 + 8 * (e / 32) as usize);
    let p = 2 * (e % 32);
    let hi = (w >> p) & 1;
    let lo = (w >> (p + 1)) & 1;
    (2 * hi + lo) as u32
}

/// Writes 2-bit entry `e` (`v` ≤ 3).
pub fn bitmap_set(b: &mut Block, e: u64, v: u32) {
    assert!(e < ENTRIES_PER_BITMAP && v <= 3);
    let off = 16 + 8 * (e / 32) as usize;
    let mut w = rd64(b, off);
    let p = 2 * (e % 32);
    w &= !(3u64 << p);
    w |= (((v as u64) >> 1) & 1) << p;
    w |= ((v as u64) & 1) << (p + 1);
    b[off..off + 8].copy_from_slice(&w.to_le_bytes());
}

/// Raw word `w` (0..510) of a bitmap, for fast scans.
pub fn bitmap_word(b: &Block, w: usize) -> u64 {
    rd64(b, 16 + 8 * w)
}

/// Number of non-zero entries in `[0, limit)` of a bitmap.
pub fn bitmap_used(b: &Block, limit: u64) -> u64 {
    (0..limit).filter(|&e| bitmap_get(b, e) != 0).count() as u64
}

/// An index entry describing one bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexEntry {
    /// Location of the bitmap block.
    pub blocknr: u64,
    /// Zero entries in the bitmap (a hint).
    pub nr_free: u32,
    /// Every entry below this one is in use (a hint).
    pub none_free_before: u32,
}

impl IndexEntry {
    /// Decodes 16 bytes.
    pub fn unpack(b: &[u8]) -> IndexEntry {
        IndexEntry {
            blocknr: rd64(b, 0),
            nr_free: rd32(b, 8),
            none_free_before: rd32(b, 12),
        }
    }
    /// Encodes to 16 bytes.
    pub fn pack(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut o = [0u8; INDEX_ENTRY_SIZE];
        o[0..8].copy_from_slice(&self.blocknr.to_le_bytes());
        o[8..12].copy_from_slice(&self.nr_free.to_le_bytes());
        o[12..16].copy_from_slice(&self.none_free_before.to_le_bytes());
        o
    }
}

/// Index entry `i` of a metadata index block.
pub fn index_block_entry(b: &Block, i: usize) -> IndexEntry {
    assert!(i < MAX_METADATA_BITMAPS);
    IndexEntry::unpack(&b[16 + INDEX_ENTRY_SIZE * i..16 + INDEX_ENTRY_SIZE * (i + 1)])
}

/// Builds a metadata index block (unstamped) from its entries.
pub fn build_index_block(entries: &[IndexEntry], out: &mut Block) {
    assert!(entries.len() <= MAX_METADATA_BITMAPS);
    out.fill(0);
    for (i, e) in entries.iter().enumerate() {
        out[16 + INDEX_ENTRY_SIZE * i..16 + INDEX_ENTRY_SIZE * (i + 1)].copy_from_slice(&e.pack());
    }
}

/// The packed root of a space map, as stored in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmRoot {
    /// Blocks tracked.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Data: root of the index btree; metadata: the index block.
    pub bitmap_root: u64,
    /// Root of the overflow reference-count btree.
    pub ref_count_root: u64,
}

impl SmRoot {
    /// Decodes the first 32 bytes of a 128-byte root area.
    pub fn unpack(b: &[u8]) -> SmRoot {
        SmRoot {
            nr_blocks: rd64(b, 0),
            nr_allocated: rd64(b, 8),
            bitmap_root: rd64(b, 16),
            ref_count_root: rd64(b, 24),
        }
    }
    /// Encodes into a 128-byte root area (the rest is zero).
    pub fn pack_into(&self, out: &mut [u8]) {
        out.fill(0);
        out[0..8].copy_from_slice(&self.nr_blocks.to_le_bytes());
        out[8..16].copy_from_slice(&self.nr_allocated.to_le_bytes());
        out[16..24].copy_from_slice(&self.bitmap_root.to_le_bytes());
        out[24..32].copy_from_slice(&self.ref_count_root.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bit_order_matches_the_kernel() {
        // Spec 7.2: word 0x2403F = entries 0,1,2 -> 3, entry 7 -> 2, entry 8 -> 1.
        let mut b = [0u8; BLOCK_SIZE];
        for e in 0..3 {
            bitmap_set(&mut b, e, 3);
        }
        bitmap_set(&mut b, 7, 2);
        bitmap_set(&mut b, 8, 1);
        assert_eq!(bitmap_word(&b, 0), 0x2403F);
        assert_eq!(bitmap_get(&b, 7), 2);
        assert_eq!(bitmap_get(&b, 8), 1);
        assert_eq!(bitmap_used(&b, 100), 5);
        bitmap_set(&mut b, 16319, 1);
        assert_eq!(bitmap_get(&b, 16319), 1);
    }

    #[test]
    fn packing_round_trips() {
        let e = IndexEntry {
            blocknr: 9,
            nr_free: 1019,
            none_free_before: 3,
        };
        assert_eq!(IndexEntry::unpack(&e.pack()), e);
        let r = SmRoot {
            nr_blocks: 1024,
            nr_allocated: 5,
            bitmap_root: 4,
            ref_count_root: 5,
        };
        let mut area = [0xffu8; 128];
        r.pack_into(&mut area);
        assert_eq!(SmRoot::unpack(&area), r);
        assert!(area[32..].iter().all(|&x| x == 0));
    }
}

//! CRC-32C as dm-thin uses it, and the per-block-type XOR salts.
//!
//! dm-thin stores `crc32c_raw(block[4..4096]) ^ salt` in the first four bytes of each block,
//! where `crc32c_raw` starts from `!0` and is *not* inverted at the end. With the `std`
//! feature the `crc32c` crate (hardware accelerated) computes it; without it a slicing-by-8
//! table is used. A test keeps the two in agreement.

use crate::block::{Block, BLOCK_SIZE};

/// What a metadata block is; the salt of its checksum tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Thin superblock (also the metadata-snapshot copy).
    Superblock,
    /// B-tree node, internal or leaf.
    Node,
    /// Space-map bitmap.
    Bitmap,
    /// Metadata space-map index block.
    Index,
}

impl BlockKind {
    /// The XOR salt of this block type.
    pub const fn salt(self) -> u32 {
        match self {
            BlockKind::Superblock => 160_774,
            BlockKind::Node => 121_107,
            BlockKind::Bitmap => 240_779,
            BlockKind::Index => 160_478,
        }
    }

    /// Identifies a block type from a block's stored checksum, if any salt matches.
    pub fn identify(block: &Block) -> Option<BlockKind> {
        let stored = stored_csum(block);
        let raw = crc32c_raw(&block[4..]);
        [
            BlockKind::Superblock,
            BlockKind::Node,
            BlockKind::Bitmap,
            BlockKind::Index,
        ]
        .into_iter()
        .find(|k| raw ^ k.salt() == stored)
    }

    /// A short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            BlockKind::Superblock => "superblock",
            BlockKind::Node => "btree node",
            BlockKind::Bitmap => "space map bitmap",
            BlockKind::Index => "space map index",
        }
    }
}

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Software CRC-32C register update (slicing by 8), without initial or final inversion.
pub fn crc32c_update_soft(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xff) as usize]
            ^ TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}

/// dm-thin's CRC-32C: register seeded with `!0`, no final inversion.
pub fn crc32c_raw(data: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    {
        crc32c::crc32c(data) ^ 0xFFFF_FFFF
    }
    #[cfg(not(feature = "std"))]
    {
        crc32c_update_soft(0xFFFF_FFFF, data)
    }
}

/// The checksum stored in a block's first four bytes.
pub fn stored_csum(block: &Block) -> u32 {
    u32::from_le_bytes([block[0], block[1], block[2], block[3]])
}

/// The checksum a block of `kind` must carry.
pub fn compute_csum(block: &Block, kind: BlockKind) -> u32 {
    crc32c_raw(&block[4..BLOCK_SIZE]) ^ kind.salt()
}

/// Stamps a block before it is written: its own location at offset 8, then the checksum.
pub fn prepare_for_write(block: &mut Block, location: u64, kind: BlockKind) {
    block[8..16].copy_from_slice(&location.to_le_bytes());
    let c = compute_csum(block, kind);
    block[0..4].copy_from_slice(&c.to_le_bytes());
}

/// Whether the stored checksum is right for `kind`. Under `cfg(fuzzing)` every checksum
/// passes so that fuzzers reach the structure checks behind it.
pub fn csum_ok(block: &Block, kind: BlockKind) -> bool {
    cfg!(fuzzing) || stored_csum(block) == compute_csum(block, kind)
}

/// The `blocknr` field every metadata block carries at offset 8.
pub fn stored_blocknr(block: &Block) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&block[8..16]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_the_spec() {
        assert_eq!(crc32c_update_soft(!0, b"123456789"), 0x1CF9_6D7C);
        assert_eq!(crc32c_raw(b"123456789"), 0x1CF9_6D7C);
        assert_eq!(crc32c_raw(&[0u8; 4092]), 0x58CD_A791);
        // Empty leaf at block 8, value size 8 (spec 2.3 vector 3).
        let mut b = [0u8; BLOCK_SIZE];
        b[4] = 2;
        b[0x10..0x14].copy_from_slice(&0u32.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&252u32.to_le_bytes());
        b[0x18..0x1c].copy_from_slice(&8u32.to_le_bytes());
        prepare_for_write(&mut b, 8, BlockKind::Node);
        assert_eq!(&b[0..4], &[0x68, 0x30, 0x6f, 0xcb]);
        assert_eq!(BlockKind::identify(&b), Some(BlockKind::Node));
        assert!(csum_ok(&b, BlockKind::Node));
        assert!(!csum_ok(&b, BlockKind::Bitmap));
    }

    #[test]
    fn soft_and_crate_agree() {
        let mut data = [0u8; 5000];
        let mut x = 0x1234_5678u32;
        for d in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *d = x as u8;
        }
        for len in [0, 1, 7, 8, 9, 63, 4092, 5000] {
            let soft = crc32c_update_soft(!0, &data[..len]);
            assert_eq!(soft, crc32c::crc32c(&data[..len]) ^ !0, "len {len}");
            assert_eq!(soft, crc32c_raw(&data[..len]));
        }
    }
}

//! The bytes the workload writes: every written 512-byte sector names itself (magic, write tag,
//! sector, virtual block) and carries a stream derived from those, so a reader with no model
//! can tell a pattern sector from garbage and from a sector of another block.
//!
//! Shared, as source, by the firmware and by `cargo xtask firmware` on the host (which reads
//! the data image back); so it uses `core` only.

/// Sectors in one 64 KiB data block.
pub const SECTORS: usize = 128;
/// Bytes in a sector.
pub const SECTOR_BYTES: usize = 512;
/// First bytes of every pattern sector.
pub const MAGIC: [u8; 8] = *b"THINFW01";

fn seed(tag: u32, vblock: u64, sector: u32) -> u64 {
    (((u64::from(tag) << 32) | u64::from(sector)) ^ vblock.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Fills `out` (one sector) with the pattern of write `tag` at `sector` of virtual block
/// `vblock`; tag 0 means never written, i.e. zeroes.
pub fn fill_sector(tag: u32, vblock: u64, sector: u32, out: &mut [u8]) {
    assert_eq!(out.len(), SECTOR_BYTES);
    if tag == 0 {
        out.fill(0);
        return;
    }
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&tag.to_le_bytes());
    out[12..16].copy_from_slice(&sector.to_le_bytes());
    out[16..24].copy_from_slice(&vblock.to_le_bytes());
    let mut x = seed(tag, vblock, sector);
    for word in out[24..].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
}

/// What a sector read back holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectorKind {
    /// All zeroes.
    Zero,
    /// A well-formed pattern sector of this write tag.
    Pattern { tag: u32 },
    /// Neither, or a pattern of another virtual block or sector.
    Bad,
}

/// Classifies a sector read from virtual block `vblock` at `sector`.
pub fn classify(vblock: u64, sector: u32, data: &[u8]) -> SectorKind {
    if data.iter().all(|&b| b == 0) {
        return SectorKind::Zero;
    }
    if data.len() != SECTOR_BYTES || data[0..8] != MAGIC {
        return SectorKind::Bad;
    }
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&data[8..12]);
    let tag = u32::from_le_bytes(tag);
    let mut expected = [0u8; SECTOR_BYTES];
    fill_sector(tag, vblock, sector, &mut expected);
    if tag != 0 && expected[..] == data[..] {
        SectorKind::Pattern { tag }
    } else {
        SectorKind::Bad
    }
}

/// FNV-1a, 64-bit: the digest the firmware prints for each mapped block.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

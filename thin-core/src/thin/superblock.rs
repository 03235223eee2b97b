//! The thin superblock (block 0, and the metadata-snapshot copy).
//!
//! ```text
//! 0x000 csum u32 | 0x004 flags u32 | 0x008 blocknr u64 | 0x010 uuid [16]
//! 0x020 magic u64 | 0x028 version u32 | 0x02c time u32 | 0x030 trans_id u64
//! 0x038 held_root u64 | 0x040 data sm root [128] | 0x0c0 metadata sm root [128]
//! 0x140 data_mapping_root u64 | 0x148 device_details_root u64
//! 0x150 data_block_size u32 | 0x154 metadata_block_size u32 | 0x158 metadata_nr_blocks u64
//! 0x160 compat u32 | 0x164 compat_ro u32 | 0x168 incompat u32 | 0x16c end (rest zero)
//! ```

use crate::block::{Block, BLOCK_SECTORS, BLOCK_SIZE};
use crate::checksum::{self, BlockKind};
use crate::pdata::sm::SmRoot;
use core::fmt;

/// Superblock magic.
pub const MAGIC: u64 = 27_022_010;
/// Version written.
pub const VERSION: u32 = 2;
/// NEEDS_CHECK flag bit.
pub const NEEDS_CHECK: u32 = 1;
/// Used size of the structure.
pub const SUPERBLOCK_SIZE: usize = 0x16c;
/// Smallest and largest data block sizes, in sectors (multiples of 128).
pub const DATA_BLOCK_SIZE_MIN: u32 = 128;
/// See [`DATA_BLOCK_SIZE_MIN`].
pub const DATA_BLOCK_SIZE_MAX: u32 = 2_097_152;

const _: () = assert!(SUPERBLOCK_SIZE <= 512);

/// Why a superblock was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockError {
    /// Checksum mismatch.
    Checksum,
    /// `blocknr` is not the block's location.
    BlockNr { found: u64, expected: u64 },
    /// Wrong magic.
    Magic(u64),
    /// Unknown version.
    Version(u32),
    /// Incompatible features set.
    Incompat(u32),
    /// Metadata block size is not 8 sectors.
    MetadataBlockSize(u32),
}

impl fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperblockError::Checksum => write!(f, "bad checksum in superblock"),
            SuperblockError::BlockNr { found, expected } => {
                write!(f, "superblock at block {expected} says it is block {found}")
            }
            SuperblockError::Magic(m) => write!(f, "bad superblock magic {m}"),
            SuperblockError::Version(v) => write!(f, "unknown metadata version {v}"),
            SuperblockError::Incompat(x) => write!(f, "unsupported incompat features {x:#x}"),
            SuperblockError::MetadataBlockSize(x) => {
                write!(f, "metadata block size {x} is not 8 sectors")
            }
        }
    }
}

/// Parsed superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub flags: u32,
    pub blocknr: u64,
    pub uuid: [u8; 16],
    pub version: u32,
    pub time: u32,
    pub trans_id: u64,
    pub held_root: u64,
    pub data_sm_root: SmRoot,
    pub metadata_sm_root: SmRoot,
    pub data_mapping_root: u64,
    pub device_details_root: u64,
    pub data_block_size: u32,
    pub metadata_nr_blocks: u64,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
}

fn rd32(b: &Block, o: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(x)
}
fn rd64(b: &Block, o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

impl Superblock {
    /// Decodes without validating (for tools that want to see a damaged superblock).
    pub fn decode(b: &Block) -> Superblock {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x10..0x20]);
        Superblock {
            flags: rd32(b, 0x04),
            blocknr: rd64(b, 0x08),
            uuid,
            version: rd32(b, 0x28),
            time: rd32(b, 0x2c),
            trans_id: rd64(b, 0x30),
            held_root: rd64(b, 0x38),
            data_sm_root: SmRoot::unpack(&b[0x40..0xc0]),
            metadata_sm_root: SmRoot::unpack(&b[0xc0..0x140]),
            data_mapping_root: rd64(b, 0x140),
            device_details_root: rd64(b, 0x148),
            data_block_size: rd32(b, 0x150),
            metadata_nr_blocks: rd64(b, 0x158),
            compat_flags: rd32(b, 0x160),
            compat_ro_flags: rd32(b, 0x164),
            incompat_flags: rd32(b, 0x168),
        }
    }

    /// Validates (checksum, location, magic, version, features) and decodes the superblock
    /// read from block `location`.
    pub fn parse(b: &Block, location: u64) -> Result<Superblock, SuperblockError> {
        if !checksum::csum_ok(b, BlockKind::Superblock) {
            return Err(SuperblockError::Checksum);
        }
        let sb = Superblock::decode(b);
        if sb.blocknr != location {
            return Err(SuperblockError::BlockNr {
                found: sb.blocknr,
                expected: location,
            });
        }
        let magic = rd64(b, 0x20);
        if magic != MAGIC {
            return Err(SuperblockError::Magic(magic));
        }
        if !(1..=VERSION).contains(&sb.version) {
            return Err(SuperblockError::Version(sb.version));
        }
        if sb.incompat_flags != 0 {
            return Err(SuperblockError::Incompat(sb.incompat_flags));
        }
        let mbs = rd32(b, 0x154);
        if mbs != BLOCK_SECTORS {
            return Err(SuperblockError::MetadataBlockSize(mbs));
        }
        Ok(sb)
    }

    /// Encodes into a full, stamped block at `location`.
    pub fn emit(&self, location: u64, out: &mut Block) {
        out.fill(0);
        out[0x04..0x08].copy_from_slice(&self.flags.to_le_bytes());
        out[0x10..0x20].copy_from_slice(&self.uuid);
        out[0x20..0x28].copy_from_slice(&MAGIC.to_le_bytes());
        out[0x28..0x2c].copy_from_slice(&self.version.to_le_bytes());
        out[0x2c..0x30].copy_from_slice(&self.time.to_le_bytes());
        out[0x30..0x38].copy_from_slice(&self.trans_id.to_le_bytes());
        out[0x38..0x40].copy_from_slice(&self.held_root.to_le_bytes());
        self.data_sm_root.pack_into(&mut out[0x40..0xc0]);
        self.metadata_sm_root.pack_into(&mut out[0xc0..0x140]);
        out[0x140..0x148].copy_from_slice(&self.data_mapping_root.to_le_bytes());
        out[0x148..0x150].copy_from_slice(&self.device_details_root.to_le_bytes());
        out[0x150..0x154].copy_from_slice(&self.data_block_size.to_le_bytes());
        out[0x154..0x158].copy_from_slice(&BLOCK_SECTORS.to_le_bytes());
        out[0x158..0x160].copy_from_slice(&self.metadata_nr_blocks.to_le_bytes());
        out[0x160..0x164].copy_from_slice(&self.compat_flags.to_le_bytes());
        out[0x164..0x168].copy_from_slice(&self.compat_ro_flags.to_le_bytes());
        out[0x168..0x16c].copy_from_slice(&self.incompat_flags.to_le_bytes());
        checksum::prepare_for_write(out, location, BlockKind::Superblock);
    }

    /// Whether NEEDS_CHECK is set.
    pub fn needs_check(&self) -> bool {
        self.flags & NEEDS_CHECK != 0
    }
}

/// Whether a block is all zeroes (an unformatted metadata device).
pub fn is_zeroed(b: &Block) -> bool {
    b.iter().all(|&x| x == 0)
}

const _: () = assert!(BLOCK_SIZE == 4096);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_parse_round_trip_and_spec_checksum() {
        // The worked example of the spec (section 13): stored checksum 0xCC336C37.
        let sb = Superblock {
            flags: 0,
            blocknr: 0,
            uuid: [0; 16],
            version: 2,
            time: 2,
            trans_id: 7,
            held_root: 0,
            data_sm_root: SmRoot {
                nr_blocks: 1024,
                nr_allocated: 5,
                bitmap_root: 4,
                ref_count_root: 5,
            },
            metadata_sm_root: SmRoot {
                nr_blocks: 2048,
                nr_allocated: 13,
                bitmap_root: 1,
                ref_count_root: 2,
            },
            data_mapping_root: 7,
            device_details_root: 6,
            data_block_size: 128,
            metadata_nr_blocks: 2048,
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
        };
        let mut b = [0u8; BLOCK_SIZE];
        sb.emit(0, &mut b);
        assert_eq!(&b[0..4], &[0x37, 0x6c, 0x33, 0xcc]);
        assert_eq!(Superblock::parse(&b, 0).unwrap(), sb);
        assert_eq!(
            Superblock::parse(&b, 5),
            Err(SuperblockError::BlockNr {
                found: 0,
                expected: 5
            })
        );
        b[0x2c] ^= 1;
        assert_eq!(Superblock::parse(&b, 0), Err(SuperblockError::Checksum));
    }
}

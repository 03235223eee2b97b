//! The self-describing layout of an lvstore on one bdev:
//!
//! ```text
//! 0        1 MiB    2 MiB                     meta_offset + meta_bytes (rounded to 1 MiB)
//! | label A | label B | dm-thin metadata region | data region (clusters) ...  end of bdev
//! ```
//!
//! A label copy is a 64-byte header followed by the lvstore's side table (names, UUIDs,
//! sizes, read-only flags and parent links of its lvols, as JSON), all little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RTNLVS01` |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | crc32c of bytes 16 .. 64 + payload length |
//! | 16 | 8 | sequence number (the newest valid copy wins) |
//! | 24 | 8 | metadata region offset, bytes |
//! | 32 | 8 | metadata region length, bytes |
//! | 40 | 8 | data region offset, bytes |
//! | 48 | 8 | cluster (dm-thin data block) size, bytes |
//! | 56 | 4 | payload length |
//! | 60 | 4 | zero |
//!
//! An update writes the copy the older sequence number occupies, then flushes: a crash
//! part-way through leaves the other copy valid, so examining the bdev always finds the
//! last or the previous table. The metadata region is byte-for-byte dm-thin metadata; the
//! data region is the pool's data device.

use thiserror::Error;

use super::thin::Region;
use super::{Bdev, BdevError};

/// Label magic.
pub const MAGIC: [u8; 8] = *b"RTNLVS01";
/// Label format version.
pub const VERSION: u32 = 1;
/// Bytes of one label copy.
pub const SLOT_BYTES: u64 = 1 << 20;
/// Bytes before the metadata region (two label copies).
pub const LABEL_BYTES: u64 = 2 * SLOT_BYTES;
const HEADER: usize = 64;
/// Largest side table a label holds.
pub const MAX_TABLE: usize = SLOT_BYTES as usize - HEADER;
const ALIGN: u64 = 1 << 20;

/// Why a label could not be read or written.
#[derive(Debug, Error)]
pub enum LabelError {
    /// Neither copy carries the magic: no lvstore on this bdev.
    #[error("no lvstore label")]
    NotFound,
    /// A copy carries the magic but no copy passes its checksum and sanity checks.
    #[error("lvstore label damaged: {0}")]
    Corrupt(String),
    /// The side table does not fit in a label copy.
    #[error("lvstore side table of {0} bytes exceeds the label's {MAX_TABLE}")]
    TooLarge(usize),
    /// The bdev is too small for the layout.
    #[error("bdev too small for an lvstore: {0}")]
    TooSmall(String),
    #[error(transparent)]
    Io(#[from] BdevError),
}

/// Where the regions of an lvstore lie on its bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub meta_offset: u64,
    pub meta_bytes: u64,
    pub data_offset: u64,
    pub cluster_bytes: u64,
}

impl Layout {
    /// The layout for a bdev of `bdev_bytes` with `cluster_bytes` clusters and a metadata
    /// region of `meta_bytes` (a multiple of 4 KiB).
    pub fn new(bdev_bytes: u64, cluster_bytes: u64, meta_bytes: u64) -> Result<Self, LabelError> {
        let meta_offset = LABEL_BYTES;
        let data_offset = (meta_offset + meta_bytes).div_ceil(ALIGN) * ALIGN;
        if cluster_bytes == 0 || bdev_bytes < data_offset + cluster_bytes {
            return Err(LabelError::TooSmall(format!(
                "{bdev_bytes} bytes cannot hold labels, {meta_bytes} bytes of metadata and one \
                 {cluster_bytes}-byte cluster"
            )));
        }
        Ok(Self {
            meta_offset,
            meta_bytes,
            data_offset,
            cluster_bytes,
        })
    }

    /// The metadata region.
    pub fn meta_region(&self) -> Region {
        Region {
            start: self.meta_offset,
            len: Some(self.meta_bytes),
        }
    }

    /// The data region (to the end of the bdev, so that it grows with it).
    pub fn data_region(&self) -> Region {
        Region {
            start: self.data_offset,
            len: None,
        }
    }

    /// Clusters the data region holds on a bdev of `bdev_bytes`.
    pub fn data_clusters(&self, bdev_bytes: u64) -> u64 {
        bdev_bytes.saturating_sub(self.data_offset) / self.cluster_bytes
    }
}

/// One valid label copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub seq: u64,
    pub layout: Layout,
    pub table: Vec<u8>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Encodes a label copy, padded to a multiple of `block` bytes.
fn encode(label: &Label, block: usize) -> Result<Vec<u8>, LabelError> {
    if label.table.len() > MAX_TABLE {
        return Err(LabelError::TooLarge(label.table.len()));
    }
    let len = (HEADER + label.table.len()).div_ceil(block) * block;
    let mut b = vec![0u8; len];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&label.seq.to_le_bytes());
    b[24..32].copy_from_slice(&label.layout.meta_offset.to_le_bytes());
    b[32..40].copy_from_slice(&label.layout.meta_bytes.to_le_bytes());
    b[40..48].copy_from_slice(&label.layout.data_offset.to_le_bytes());
    b[48..56].copy_from_slice(&label.layout.cluster_bytes.to_le_bytes());
    b[56..60].copy_from_slice(&(label.table.len() as u32).to_le_bytes());
    b[HEADER..HEADER + label.table.len()].copy_from_slice(&label.table);
    let crc = crc32c::crc32c(&b[16..HEADER + label.table.len()]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(b)
}

/// What one slot holds.
enum Slot {
    Empty,
    Bad(String),
    Good(Label),
}

fn read_slot(dev: &mut dyn Bdev, slot: u64, dev_bytes: u64) -> Result<Slot, BdevError> {
    let bs = u64::from(dev.block_size());
    let at = slot * SLOT_BYTES;
    if at + SLOT_BYTES > dev_bytes {
        return Ok(Slot::Empty);
    }
    let mut head = vec![0u8; 4096];
    dev.read(at / bs, &mut head)?;
    if head[0..8] != MAGIC {
        return Ok(Slot::Empty);
    }
    let version = le32(&head, 8);
    if version != VERSION {
        return Ok(Slot::Bad(format!("copy {slot}: unknown version {version}")));
    }
    let plen = le32(&head, 56) as usize;
    if plen > MAX_TABLE {
        return Ok(Slot::Bad(format!(
            "copy {slot}: table length {plen} too large"
        )));
    }
    let total = (HEADER + plen).div_ceil(4096) * 4096;
    let mut b = head;
    if total > b.len() {
        b.resize(total, 0);
        dev.read((at + 4096) / bs, &mut b[4096..])?;
    }
    let want = le32(&b, 12);
    let got = crc32c::crc32c(&b[16..HEADER + plen]);
    if want != got {
        return Ok(Slot::Bad(format!(
            "copy {slot}: checksum {got:#010x}, expected {want:#010x}"
        )));
    }
    let layout = Layout {
        meta_offset: le64(&b, 24),
        meta_bytes: le64(&b, 32),
        data_offset: le64(&b, 40),
        cluster_bytes: le64(&b, 48),
    };
    let sane = layout.meta_offset >= LABEL_BYTES
        && layout.meta_offset.is_multiple_of(4096)
        && layout.meta_bytes.is_multiple_of(4096)
        && layout.meta_bytes > 0
        && layout.data_offset.is_multiple_of(4096)
        && layout.meta_offset.checked_add(layout.meta_bytes) <= Some(layout.data_offset)
        && layout.cluster_bytes >= 4096
        && layout.cluster_bytes.is_multiple_of(4096)
        && layout.data_offset < dev_bytes;
    if !sane {
        return Ok(Slot::Bad(format!(
            "copy {slot}: impossible layout {layout:?}"
        )));
    }
    Ok(Slot::Good(Label {
        seq: le64(&b, 16),
        layout,
        table: b[HEADER..HEADER + plen].to_vec(),
    }))
}

/// Reads the newest valid label copy of `dev`.
pub fn read(dev: &mut dyn Bdev) -> Result<Label, LabelError> {
    let dev_bytes = dev.num_blocks() * u64::from(dev.block_size());
    let mut best: Option<Label> = None;
    let mut damage = Vec::new();
    for slot in 0..2 {
        match read_slot(dev, slot, dev_bytes)? {
            Slot::Empty => {}
            Slot::Bad(why) => damage.push(why),
            Slot::Good(l) => {
                if best.as_ref().is_none_or(|b| l.seq > b.seq) {
                    best = Some(l);
                }
            }
        }
    }
    for d in &damage {
        if best.is_some() {
            log::warn!("{}: lvstore label {d} (the other copy is used)", dev.name());
        }
    }
    match best {
        Some(l) => Ok(l),
        None if damage.is_empty() => Err(LabelError::NotFound),
        None => Err(LabelError::Corrupt(damage.join("; "))),
    }
}

/// Writes `label` into the copy its sequence number selects (`seq % 2`), then flushes.
pub fn write(dev: &mut dyn Bdev, label: &Label) -> Result<(), LabelError> {
    let bs = dev.block_size() as usize;
    let b = encode(label, bs.max(4096))?;
    let at = (label.seq % 2) * SLOT_BYTES;
    dev.write(at / bs as u64, &b, false)?;
    dev.flush()?;
    Ok(())
}

/// Destroys both copies (the lvstore is deleted).
pub fn wipe(dev: &mut dyn Bdev) -> Result<(), LabelError> {
    let bs = u64::from(dev.block_size());
    let zero = vec![0u8; 4096];
    for slot in 0..2 {
        let at = slot * SLOT_BYTES;
        if at + 4096 <= dev.num_blocks() * bs {
            dev.write(at / bs, &zero, false)?;
        }
    }
    dev.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::malloc::Malloc;

    fn label(seq: u64, table: &[u8]) -> Label {
        Label {
            seq,
            layout: Layout::new(64 << 20, 1 << 20, 8 << 20).unwrap(),
            table: table.to_vec(),
        }
    }

    #[test]
    fn newest_valid_copy_wins_and_a_torn_copy_falls_back() {
        let mut m = Malloc::new("m", (64 << 20) / 512, 512, [0; 16]).unwrap();
        assert!(matches!(read(&mut m), Err(LabelError::NotFound)));
        write(&mut m, &label(1, b"one")).unwrap();
        assert_eq!(read(&mut m).unwrap().table, b"one");
        let big = vec![b'x'; 10_000];
        write(&mut m, &label(2, &big)).unwrap();
        assert!(read(&mut m).unwrap() == label(2, &big));
        write(&mut m, &label(3, b"three")).unwrap();
        assert_eq!(read(&mut m).unwrap().seq, 3);
        // Tear copy 1 (seq 3): copy 0 (seq 2) is used.
        let mut blk = vec![0u8; 512];
        m.read(SLOT_BYTES / 512, &mut blk).unwrap();
        blk[66] ^= 1;
        m.write(SLOT_BYTES / 512, &blk, false).unwrap();
        let l = read(&mut m).unwrap();
        assert!(l == label(2, &big), "fell back to seq {}", l.seq);
        // Tear copy 0 too: damaged, not "no label".
        m.read(0, &mut blk).unwrap();
        blk[20] ^= 1;
        m.write(0, &blk, false).unwrap();
        assert!(matches!(read(&mut m), Err(LabelError::Corrupt(_))));
        wipe(&mut m).unwrap();
        assert!(matches!(read(&mut m), Err(LabelError::NotFound)));
    }

    #[test]
    fn limits() {
        let mut m = Malloc::new("m", (64 << 20) / 4096, 4096, [0; 16]).unwrap();
        let huge = vec![b'x'; MAX_TABLE + 1];
        assert!(matches!(
            write(&mut m, &label(1, &huge)),
            Err(LabelError::TooLarge(_))
        ));
        let max = vec![b'y'; MAX_TABLE];
        write(&mut m, &label(1, &max)).unwrap();
        assert_eq!(read(&mut m).unwrap().table.len(), MAX_TABLE);
        assert!(Layout::new(10 << 20, 1 << 20, 8 << 20).is_err());
        let l = Layout::new(64 << 20, 1 << 20, 8 << 20).unwrap();
        assert_eq!(l.data_offset, 10 << 20);
        assert_eq!(l.data_clusters(64 << 20), 54);
    }
}

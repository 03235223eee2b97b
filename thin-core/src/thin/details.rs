//! Device details (24-byte values of the details tree) and mapping values.
//!
//! ```text
//! details: 0 mapped_blocks u64 | 8 transaction_id u64 | 16 creation_time u32 | 20 snapshotted_time u32
//! mapping: (data_block << 24) | time
//! ```

/// Size of a packed [`DeviceDetails`].
pub const DETAILS_SIZE: usize = 24;
/// Largest thin device id dm-thin accepts.
pub const MAX_DEV_ID: u64 = (1 << 24) - 1;
/// Largest mapping time.
pub const MAX_TIME: u32 = (1 << 24) - 1;
/// Data blocks must be below this (40 bits of the mapping value).
pub const MAX_DATA_BLOCKS: u64 = 1 << 40;

/// Per-device metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceDetails {
    /// Number of mappings.
    pub mapped_blocks: u64,
    /// Pool transaction id when the device was created.
    pub transaction_id: u64,
    /// Pool time when the device was created.
    pub creation_time: u32,
    /// Pool time when the device last took part in a snapshot.
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    /// Decodes 24 bytes.
    pub fn unpack(b: &[u8]) -> DeviceDetails {
        let r64 = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let r32 = |o: usize| {
            let mut x = [0u8; 4];
            x.copy_from_slice(&b[o..o + 4]);
            u32::from_le_bytes(x)
        };
        DeviceDetails {
            mapped_blocks: r64(0),
            transaction_id: r64(8),
            creation_time: r32(16),
            snapshotted_time: r32(20),
        }
    }
    /// Encodes to 24 bytes.
    pub fn pack(&self) -> [u8; DETAILS_SIZE] {
        let mut o = [0u8; DETAILS_SIZE];
        o[0..8].copy_from_slice(&self.mapped_blocks.to_le_bytes());
        o[8..16].copy_from_slice(&self.transaction_id.to_le_bytes());
        o[16..20].copy_from_slice(&self.creation_time.to_le_bytes());
        o[20..24].copy_from_slice(&self.snapshotted_time.to_le_bytes());
        o
    }
}

/// A mapping value: data block and the pool time it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTime {
    /// Data block.
    pub block: u64,
    /// Pool time of the write.
    pub time: u32,
}

impl BlockTime {
    /// Decodes a mapping value.
    pub fn unpack(v: u64) -> BlockTime {
        BlockTime {
            block: v >> 24,
            time: (v & 0xFF_FFFF) as u32,
        }
    }
    /// Encodes (`block < 2^40`, `time < 2^24`, checked by callers).
    pub fn pack(&self) -> u64 {
        debug_assert!(self.block < MAX_DATA_BLOCKS && self.time <= MAX_TIME);
        (self.block << 24) | u64::from(self.time & MAX_TIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let d = DeviceDetails {
            mapped_blocks: 4,
            transaction_id: 3,
            creation_time: 1,
            snapshotted_time: 1,
        };
        assert_eq!(DeviceDetails::unpack(&d.pack()), d);
        // Spec 6.1: bytes 01 00 00 08 00.. = data block 8, time 1.
        let bt = BlockTime::unpack(u64::from_le_bytes([1, 0, 0, 8, 0, 0, 0, 0]));
        assert_eq!(bt, BlockTime { block: 8, time: 1 });
        assert_eq!(bt.pack(), 0x0800_0001);
    }
}

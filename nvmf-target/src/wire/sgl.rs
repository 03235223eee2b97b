//! SGL descriptor (16 bytes), as carried in SQE DPTR (SGL1, SQE offset 24).
//!
//! ```text
//!  0        8        12      15  16
//!  | ADDRESS | LENGTH | rsvd | ID |      (data block / transport data block / segment)
//!  | ADDRESS | LEN 24b | KEY 32b | ID |   (keyed data block, RDMA only)
//! ```
//! Invariants: the identifier byte splits into type (bits 7:4) and subtype (bits 3:0); every
//! byte pattern decodes to some [`SglKind`] (unknown ones as `Other`).

use core::fmt;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{assert_layout, define_view, read_exact, view_accessors, write_prefix, WireError};

/// Zerocopy layout of an SGL descriptor.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SglRaw {
    pub address: U64,
    pub length: U32,
    pub reserved: [u8; 3],
    pub identifier: u8,
}
assert_layout!(SglRaw, 16; address @ 0, length @ 8, reserved @ 12, identifier @ 15);

/// Descriptor types (identifier bits 7:4).
pub mod sgl_type {
    pub const DATA_BLOCK: u8 = 0x0;
    pub const BIT_BUCKET: u8 = 0x1;
    pub const SEGMENT: u8 = 0x2;
    pub const LAST_SEGMENT: u8 = 0x3;
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// Descriptor subtypes (identifier bits 3:0).
pub mod sgl_subtype {
    pub const ADDRESS: u8 = 0x0;
    pub const OFFSET: u8 = 0x1;
    pub const TRANSPORT_SPECIFIC: u8 = 0xA;
}

/// Identifier of a Transport SGL Data Block with transport-specific subtype (R2T/C2HData path).
pub const ID_TRANSPORT_DATA_BLOCK: u8 = 0x5A;
/// Identifier of a Data Block with Offset subtype (in-capsule data).
pub const ID_DATA_BLOCK_OFFSET: u8 = 0x01;

/// What an SGL descriptor identifier means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglKind {
    /// 0x5A: data moves through R2T/H2CData or C2HData.
    TransportDataBlock,
    /// 0x01: in-capsule data at offset ADDRESS in the ICD area.
    InCapsule,
    /// 0x00: data block with a memory address (not used on TCP).
    DataBlockAddress,
    /// 0x4x: keyed data block (RDMA).
    Keyed { subtype: u8 },
    /// 0x2x / 0x3x: segment descriptors.
    Segment { last: bool, subtype: u8 },
    /// Anything else.
    Other { sgl_type: u8, subtype: u8 },
}

impl SglKind {
    pub fn from_identifier(id: u8) -> Self {
        let (t, s) = (id >> 4, id & 0xF);
        match (t, s) {
            (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT_SPECIFIC) => {
                Self::TransportDataBlock
            }
            (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => Self::InCapsule,
            (sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS) => Self::DataBlockAddress,
            (sgl_type::KEYED_DATA_BLOCK, subtype) => Self::Keyed { subtype },
            (sgl_type::SEGMENT, subtype) => Self::Segment {
                last: false,
                subtype,
            },
            (sgl_type::LAST_SEGMENT, subtype) => Self::Segment {
                last: true,
                subtype,
            },
            (sgl_type, subtype) => Self::Other { sgl_type, subtype },
        }
    }
}

define_view!(
    /// Zero-copy view of an SGL descriptor.
    SglView, SglRaw, "SGL descriptor"
);
view_accessors!(SglView;
    /// ADDRESS (for in-capsule data: the offset into the ICD area).
    address / set_address: u64;
    /// LENGTH in bytes (non-keyed descriptors).
    length / set_length: u32;
    /// Identifier: type in bits 7:4, subtype in bits 3:0.
    identifier / set_identifier: u8;
);

impl<T: AsRef<[u8]>> SglView<T> {
    /// Typed descriptor kind.
    pub fn kind(&self) -> SglKind {
        SglKind::from_identifier(self.identifier())
    }
}

/// Parsed SGL descriptor. Keyed descriptors keep their raw bytes in `length` + `reserved`
/// (see [`SglDescriptor::keyed_length`] and [`SglDescriptor::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SglDescriptor {
    pub address: u64,
    pub length: u32,
    pub reserved: [u8; 3],
    pub identifier: u8,
}

impl SglDescriptor {
    pub const LEN: usize = 16;

    /// A Transport SGL Data Block (0x5A) of `length` bytes; `length == 0` for no data.
    pub const fn transport(length: u32) -> Self {
        Self {
            address: 0,
            length,
            reserved: [0; 3],
            identifier: ID_TRANSPORT_DATA_BLOCK,
        }
    }

    /// An in-capsule Data Block (0x01) at offset 0 of `length` bytes.
    pub const fn in_capsule(length: u32) -> Self {
        Self {
            address: 0,
            length,
            reserved: [0; 3],
            identifier: ID_DATA_BLOCK_OFFSET,
        }
    }

    pub fn kind(&self) -> SglKind {
        SglKind::from_identifier(self.identifier)
    }

    /// Keyed data block: 24-bit length.
    pub fn keyed_length(&self) -> u32 {
        self.length & 0x00FF_FFFF
    }

    /// Keyed data block: 32-bit key (bytes 11..15).
    pub fn key(&self) -> u32 {
        let [_, _, _, b3] = self.length.to_le_bytes();
        let [r0, r1, r2] = self.reserved;
        u32::from_le_bytes([b3, r0, r1, r2])
    }

    pub fn from_raw(raw: &SglRaw) -> Self {
        Self {
            address: raw.address.get(),
            length: raw.length.get(),
            reserved: raw.reserved,
            identifier: raw.identifier,
        }
    }

    pub fn to_raw(&self) -> SglRaw {
        SglRaw {
            address: U64::new(self.address),
            length: U32::new(self.length),
            reserved: self.reserved,
            identifier: self.identifier,
        }
    }

    /// Parses exactly 16 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: SglRaw = read_exact("SGL descriptor", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    /// Writes the 16 bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("SGL descriptor", buf, self.to_raw().as_bytes())
    }
}

impl fmt::Display for SglDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            SglKind::TransportDataBlock => write!(f, "SGL transport len={}", self.length),
            SglKind::InCapsule => {
                write!(f, "SGL in-capsule off={} len={}", self.address, self.length)
            }
            SglKind::Keyed { subtype } => write!(
                f,
                "SGL keyed/{subtype:#x} addr={:#x} len={} key={:#x}",
                self.address,
                self.keyed_length(),
                self.key()
            ),
            kind => write!(
                f,
                "SGL id={:#04x} ({kind:?}) addr={:#x} len={}",
                self.identifier, self.address, self.length
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn layout_by_hand() {
        let mut b = [0u8; 16];
        put64(&mut b, 0, 0x1122_3344_5566_7788);
        put32(&mut b, 8, 1024);
        b[15] = 0x01;
        let d = SglDescriptor::parse(&b).unwrap();
        assert_eq!(
            d,
            SglDescriptor {
                address: 0x1122_3344_5566_7788,
                ..SglDescriptor::in_capsule(1024)
            }
        );
        assert_eq!(d.kind(), SglKind::InCapsule);
        let v = SglView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.address(), v.length(), v.identifier()),
            (0x1122_3344_5566_7788, 1024, 1)
        );
        let mut out = [0u8; 16];
        d.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert!(d.to_string().contains("in-capsule"));
    }

    #[test]
    fn kinds() {
        assert_eq!(SglKind::from_identifier(0x5A), SglKind::TransportDataBlock);
        assert_eq!(SglKind::from_identifier(0x00), SglKind::DataBlockAddress);
        assert_eq!(
            SglKind::from_identifier(0x40),
            SglKind::Keyed { subtype: 0 }
        );
        assert_eq!(
            SglKind::from_identifier(0x24),
            SglKind::Segment {
                last: false,
                subtype: 4
            }
        );
        assert_eq!(
            SglKind::from_identifier(0x30),
            SglKind::Segment {
                last: true,
                subtype: 0
            }
        );
        assert_eq!(
            SglKind::from_identifier(0x1F),
            SglKind::Other {
                sgl_type: 1,
                subtype: 0xF
            }
        );
        assert_eq!(
            SglKind::from_identifier(0x50),
            SglKind::Other {
                sgl_type: 5,
                subtype: 0
            }
        );
    }

    #[test]
    fn keyed_fields() {
        let mut b = [0u8; 16];
        b[8..11].copy_from_slice(&[0x00, 0x10, 0x00]); // length 4096 (24-bit)
        b[11..15].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        b[15] = 0x40;
        let d = SglDescriptor::parse(&b).unwrap();
        assert_eq!(d.keyed_length(), 4096);
        assert_eq!(d.key(), 0xDEAD_BEEF);
    }

    #[test]
    fn bad_lengths() {
        assert!(matches!(
            SglDescriptor::parse(&[0; 15]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            SglDescriptor::parse(&[0; 17]),
            Err(WireError::Oversized { .. })
        ));
        assert!(SglView::new_checked(&[0u8; 15][..]).is_err());
        assert!(SglDescriptor::transport(0).emit(&mut [0u8; 15]).is_err());
        let v = SglView::new_unchecked(&[1u8, 2][..]);
        assert_eq!(v.length(), 0);
    }
}

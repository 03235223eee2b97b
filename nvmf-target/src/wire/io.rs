//! NVM I/O commands: Read (0x02), Write (0x01), Flush (0x00), Write Zeroes (0x08), Dataset
//! Management (0x09) and its 16-byte range descriptors.
//!
//! ```text
//! Read/Write/Write Zeroes: CDW10-11 SLBA | CDW12 15:0 NLB (0-based), 25 DEAC (WZ),
//!                          26 PRINFO.., 30 FUA, 31 LR | CDW13 DSM hints
//! DSM: CDW10 7:0 NR (0-based) | CDW11 bit0 IDR, bit1 IDW, bit2 AD
//! DSM range: 0 context attributes | 4 length in LBAs (1-based) | 8 SLBA
//! ```
//! Invariants: block counts are computed in u32/u64 (NLB + 1 never overflows); range checks
//! use checked arithmetic so no SLBA/NLB value wraps.

use core::fmt;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::sgl::SglDescriptor;
use super::sqe::{Sqe, FLAGS_PSDT_SGL};
use super::{assert_layout, define_view, read_exact, view_accessors, write_prefix, WireError};

/// NVM I/O opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOpcode {
    Flush,
    Write,
    Read,
    WriteUncorrectable,
    Compare,
    WriteZeroes,
    DatasetManagement,
    Verify,
    Unknown(u8),
}

impl IoOpcode {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::Flush,
            0x01 => Self::Write,
            0x02 => Self::Read,
            0x04 => Self::WriteUncorrectable,
            0x05 => Self::Compare,
            0x08 => Self::WriteZeroes,
            0x09 => Self::DatasetManagement,
            0x0C => Self::Verify,
            other => Self::Unknown(other),
        }
    }
    pub fn code(self) -> u8 {
        match self {
            Self::Flush => 0x00,
            Self::Write => 0x01,
            Self::Read => 0x02,
            Self::WriteUncorrectable => 0x04,
            Self::Compare => 0x05,
            Self::WriteZeroes => 0x08,
            Self::DatasetManagement => 0x09,
            Self::Verify => 0x0C,
            Self::Unknown(v) => v,
        }
    }
}

/// CDW12 bits.
pub mod cdw12 {
    pub const DEAC: u32 = 1 << 25;
    pub const FUA: u32 = 1 << 30;
    pub const LR: u32 = 1 << 31;
    /// PRINFO, bits 29:26.
    pub const PRINFO_SHIFT: u32 = 26;
}

/// Read, Write, Write Zeroes (and Compare) fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwCommand {
    pub opcode: IoOpcode,
    pub cid: u16,
    pub nsid: u32,
    pub slba: u64,
    /// Number of logical blocks, 0-based.
    pub nlb: u16,
    pub fua: bool,
    pub limited_retry: bool,
    /// Write Zeroes only: deallocate.
    pub deac: bool,
    /// Protection information field (must be 0 without PI).
    pub prinfo: u8,
    /// Directive type (CDW12 bits 23:20, ignored).
    pub dtype: u8,
    /// CDW13 dataset management hints (ignored).
    pub dsm: u32,
    pub sgl: SglDescriptor,
}

impl RwCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            opcode: IoOpcode::from_u8(sqe.opcode),
            cid: sqe.cid,
            nsid: sqe.nsid,
            slba: u64::from(sqe.cdw10) | (u64::from(sqe.cdw11) << 32),
            nlb: sqe.cdw12 as u16,
            fua: sqe.cdw12 & cdw12::FUA != 0,
            limited_retry: sqe.cdw12 & cdw12::LR != 0,
            deac: sqe.cdw12 & cdw12::DEAC != 0,
            prinfo: ((sqe.cdw12 >> cdw12::PRINFO_SHIFT) & 0xF) as u8,
            dtype: ((sqe.cdw12 >> 20) & 0xF) as u8,
            dsm: sqe.cdw13,
            sgl: sqe.sgl,
        }
    }

    /// A Read, Write or Write Zeroes of `blocks` (1-based, 1..=65536) blocks.
    pub fn new(
        opcode: IoOpcode,
        cid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        sgl: SglDescriptor,
    ) -> Self {
        Self {
            opcode,
            cid,
            nsid,
            slba,
            nlb: blocks.saturating_sub(1).min(0xFFFF) as u16,
            fua: false,
            limited_retry: false,
            deac: false,
            prinfo: 0,
            dtype: 0,
            dsm: 0,
            sgl,
        }
    }

    pub fn to_sqe(&self) -> Sqe {
        let mut dw12 = u32::from(self.nlb)
            | (u32::from(self.prinfo & 0xF) << cdw12::PRINFO_SHIFT)
            | (u32::from(self.dtype & 0xF) << 20);
        if self.fua {
            dw12 |= cdw12::FUA;
        }
        if self.limited_retry {
            dw12 |= cdw12::LR;
        }
        if self.deac {
            dw12 |= cdw12::DEAC;
        }
        Sqe {
            opcode: self.opcode.code(),
            flags: FLAGS_PSDT_SGL,
            cid: self.cid,
            nsid: self.nsid,
            sgl: self.sgl,
            cdw10: self.slba as u32,
            cdw11: (self.slba >> 32) as u32,
            cdw12: dw12,
            cdw13: self.dsm,
            ..Sqe::default()
        }
    }

    /// Number of blocks (1..=65536).
    pub fn blocks(&self) -> u32 {
        u32::from(self.nlb) + 1
    }

    /// Data bytes for an LBA size of `2^lbads` (what the SGL length must equal for Read and
    /// Write); `None` if absurd.
    pub fn data_len(&self, lbads: u8) -> Option<u64> {
        u64::from(self.blocks())
            .checked_shl(u32::from(lbads))
            .filter(|_| lbads < 32)
    }

    /// Whether `[SLBA, SLBA + NLB]` lies within a namespace of `nsze` blocks.
    pub fn in_range(&self, nsze: u64) -> bool {
        self.slba
            .checked_add(u64::from(self.blocks()))
            .is_some_and(|end| end <= nsze)
    }
}

impl fmt::Display for RwCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cid={:#06x} nsid={} slba={} blocks={}{}{}",
            self.opcode,
            self.cid,
            self.nsid,
            self.slba,
            self.blocks(),
            if self.fua { " FUA" } else { "" },
            if self.deac { " DEAC" } else { "" }
        )
    }
}

/// Dataset Management attributes (CDW11).
pub mod dsm_attr {
    pub const IDR: u32 = 1 << 0;
    pub const IDW: u32 = 1 << 1;
    pub const AD: u32 = 1 << 2;
}

/// Dataset Management command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsmCommand {
    pub cid: u16,
    pub nsid: u32,
    /// Number of ranges, 0-based.
    pub nr: u8,
    /// CDW11 attributes.
    pub attributes: u32,
    pub sgl: SglDescriptor,
}

impl DsmCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            cid: sqe.cid,
            nsid: sqe.nsid,
            nr: sqe.cdw10 as u8,
            attributes: sqe.cdw11,
            sgl: sqe.sgl,
        }
    }

    pub fn to_sqe(&self) -> Sqe {
        Sqe {
            opcode: IoOpcode::DatasetManagement.code(),
            flags: FLAGS_PSDT_SGL,
            cid: self.cid,
            nsid: self.nsid,
            sgl: self.sgl,
            cdw10: u32::from(self.nr),
            cdw11: self.attributes,
            ..Sqe::default()
        }
    }

    /// Number of ranges (1..=256).
    pub fn ranges(&self) -> u32 {
        u32::from(self.nr) + 1
    }

    /// Bytes of range descriptors the command needs (the SGL may be longer: Linux sends 4096).
    pub fn needed_len(&self) -> u32 {
        self.ranges() * DsmRange::LEN as u32
    }

    pub fn deallocate(&self) -> bool {
        self.attributes & dsm_attr::AD != 0
    }

    /// Parses the NR+1 ranges from the transferred data (ignoring any excess). Data shorter
    /// than needed is an error.
    pub fn parse_ranges<'a>(
        &self,
        data: &'a [u8],
    ) -> Result<impl Iterator<Item = DsmRange> + 'a, WireError> {
        let need = self.needed_len() as usize;
        let Some(used) = data.get(..need) else {
            return Err(WireError::Truncated {
                structure: "DSM ranges",
                need: need as u64,
                got: data.len() as u64,
            });
        };
        Ok(used
            .chunks_exact(DsmRange::LEN)
            .map(|c| DsmRange::parse(c).unwrap_or_default()))
    }
}

impl fmt::Display for DsmCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DSM cid={:#06x} nsid={} ranges={} attr={:#x}",
            self.cid,
            self.nsid,
            self.ranges(),
            self.attributes
        )
    }
}

/// Zerocopy layout of a DSM range descriptor.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DsmRangeRaw {
    pub cattr: U32,
    pub nlb: U32,
    pub slba: U64,
}
assert_layout!(DsmRangeRaw, 16; cattr @ 0, nlb @ 4, slba @ 8);

define_view!(
    /// Zero-copy view of a DSM range descriptor.
    DsmRangeView, DsmRangeRaw, "DSM range"
);
view_accessors!(DsmRangeView;
    /// Context attributes.
    cattr / set_cattr: u32;
    /// Length in logical blocks (1-based).
    nlb / set_nlb: u32;
    /// Starting LBA.
    slba / set_slba: u64;
);

/// A parsed DSM range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsmRange {
    pub cattr: u32,
    /// Length in logical blocks — 1-based, unlike NLB in commands.
    pub nlb: u32,
    pub slba: u64,
}

impl DsmRange {
    pub const LEN: usize = 16;

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: DsmRangeRaw = read_exact("DSM range", bytes)?;
        Ok(Self {
            cattr: r.cattr.get(),
            nlb: r.nlb.get(),
            slba: r.slba.get(),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let r = DsmRangeRaw {
            cattr: U32::new(self.cattr),
            nlb: U32::new(self.nlb),
            slba: U64::new(self.slba),
        };
        write_prefix("DSM range", buf, r.as_bytes())
    }

    /// Whether the range lies within `nsze` blocks (an empty range is in range when SLBA is).
    pub fn in_range(&self, nsze: u64) -> bool {
        self.slba
            .checked_add(u64::from(self.nlb))
            .is_some_and(|end| end <= nsze)
    }
}

impl fmt::Display for DsmRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "range slba={} blocks={}", self.slba, self.nlb)
    }
}

/// Flush fields (no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushCommand {
    pub cid: u16,
    pub nsid: u32,
}

impl FlushCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            cid: sqe.cid,
            nsid: sqe.nsid,
        }
    }
    pub fn to_sqe(&self) -> Sqe {
        Sqe::new(IoOpcode::Flush.code(), self.cid, self.nsid)
    }
}

impl fmt::Display for FlushCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flush cid={:#06x} nsid={:#x}", self.cid, self.nsid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn rw_fields_by_hand() {
        let mut b = [0u8; 64];
        b[0] = 0x01;
        b[1] = 0x40;
        put16(&mut b, 2, 0x1001);
        put32(&mut b, 4, 1);
        put32(&mut b, 32, 8 * 512);
        b[39] = 0x01;
        put64(&mut b, 40, 0x1_0000_0010);
        put16(&mut b, 48, 7);
        put16(&mut b, 50, 1 << 14); // FUA = control bit 14
        let sqe = Sqe::parse(&b).unwrap();
        let c = RwCommand::from_sqe(&sqe);
        assert_eq!(c.opcode, IoOpcode::Write);
        assert_eq!(
            (c.cid, c.nsid, c.slba, c.nlb, c.blocks()),
            (0x1001, 1, 0x1_0000_0010, 7, 8)
        );
        assert!(c.fua && !c.deac && !c.limited_retry);
        assert_eq!(c.data_len(9), Some(4096));
        assert_eq!(c.sgl, SglDescriptor::in_capsule(4096));
        assert_eq!(c.to_sqe().to_bytes(), b);
        assert!(c.in_range(0x1_0000_0018));
        assert!(!c.in_range(0x1_0000_0017));
        assert!(c.to_string().contains("FUA"));
    }

    #[test]
    fn write_zeroes_deac_and_limits() {
        let mut s = Sqe::new(0x08, 1, 1);
        s.cdw10 = u32::MAX;
        s.cdw11 = u32::MAX;
        s.cdw12 = 0xFFFF | (1 << 25);
        let c = RwCommand::from_sqe(&s);
        assert_eq!(c.opcode, IoOpcode::WriteZeroes);
        assert!(c.deac);
        assert_eq!(c.blocks(), 65536);
        assert!(!c.in_range(u64::MAX)); // u64::MAX + 65536 overflows: out of range
        assert_eq!(c.data_len(40), None);
        assert_eq!(RwCommand::from_sqe(&c.to_sqe()), c);
        let n = RwCommand::new(
            IoOpcode::Read,
            2,
            1,
            0,
            65536,
            SglDescriptor::transport(65536 * 512),
        );
        assert_eq!(n.nlb, 0xFFFF);
        for v in 0..=255u8 {
            assert_eq!(IoOpcode::from_u8(v).code(), v);
        }
    }

    #[test]
    fn dsm_by_hand() {
        let mut s = Sqe::new(0x09, 4, 1);
        s.cdw10 = 1;
        s.cdw11 = dsm_attr::AD;
        s.sgl = SglDescriptor::transport(4096);
        let c = DsmCommand::from_sqe(&s);
        assert_eq!((c.ranges(), c.needed_len(), c.deallocate()), (2, 32, true));
        assert_eq!(DsmCommand::from_sqe(&c.to_sqe()), c);
        let mut data = vec![0u8; 4096];
        put32(&mut data, 4, 8);
        put64(&mut data, 8, 100);
        put32(&mut data, 16 + 4, 16);
        put64(&mut data, 16 + 8, 200);
        put32(&mut data, 32 + 4, 99); // third range: ignored (NR = 1)
        let r: Vec<DsmRange> = c.parse_ranges(&data).unwrap().collect();
        assert_eq!(
            r,
            vec![
                DsmRange {
                    cattr: 0,
                    nlb: 8,
                    slba: 100
                },
                DsmRange {
                    cattr: 0,
                    nlb: 16,
                    slba: 200
                }
            ]
        );
        assert!(r[0].in_range(108) && !r[0].in_range(107));
        assert!(!DsmRange {
            cattr: 0,
            nlb: 1,
            slba: u64::MAX
        }
        .in_range(u64::MAX));
        assert!(matches!(
            c.parse_ranges(&data[..31]),
            Err(WireError::Truncated { need: 32, .. })
        ));
        let mut out = [0u8; 16];
        r[1].emit(&mut out).unwrap();
        assert_eq!(&out, &data[16..32]);
        let v = DsmRangeView::new_checked(&data[16..32]).unwrap();
        assert_eq!((v.cattr(), v.nlb(), v.slba()), (0, 16, 200));
        assert!(DsmRange::parse(&data[..15]).is_err());
        assert!(c.to_string().contains("ranges=2"));
        assert_eq!(r[0].to_string(), "range slba=100 blocks=8");
    }

    #[test]
    fn flush() {
        let f = FlushCommand {
            cid: 3,
            nsid: 0xFFFF_FFFF,
        };
        assert_eq!(FlushCommand::from_sqe(&f.to_sqe()), f);
        assert!(f.to_string().contains("Flush"));
    }
}

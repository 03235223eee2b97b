//! Submission Queue Entry (64 bytes), the NVMe command carried by a CapsuleCmd PDU.
//!
//! ```text
//!  0    1     2    4     8      16     24         40                          64
//!  |OPC|FLAGS| CID |NSID |CDW2-3| MPTR | DPTR(SGL1) | CDW10 11 12 13 14 15      |
//! ```
//! Invariants: the layout is asserted at compile time; for Fabrics commands (OPC 0x7F) byte 4
//! is FCTYPE instead of the low NSID byte; the parsed form keeps every byte (round trip exact).

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::sgl::{SglDescriptor, SglRaw, SglView};
use super::{assert_layout, define_view, read_exact, view_accessors, write_prefix, WireError};

/// Opcode of every Fabrics command.
pub const OPC_FABRICS: u8 = 0x7F;
/// FLAGS value with PSDT = 01b (SGL for data, MPTR is an address): required on fabrics.
pub const FLAGS_PSDT_SGL: u8 = 0x40;

/// Zerocopy layout of a submission queue entry.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SqeRaw {
    pub opcode: u8,
    pub flags: u8,
    pub cid: U16,
    pub nsid: U32,
    pub cdw2: U32,
    pub cdw3: U32,
    pub mptr: U64,
    pub dptr: SglRaw,
    pub cdw10: U32,
    pub cdw11: U32,
    pub cdw12: U32,
    pub cdw13: U32,
    pub cdw14: U32,
    pub cdw15: U32,
}
assert_layout!(SqeRaw, 64;
    opcode @ 0, flags @ 1, cid @ 2, nsid @ 4, cdw2 @ 8, cdw3 @ 12, mptr @ 16, dptr @ 24,
    cdw10 @ 40, cdw11 @ 44, cdw12 @ 48, cdw13 @ 52, cdw14 @ 56, cdw15 @ 60);

/// Direction of a command's data transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    None,
    HostToController,
    ControllerToHost,
    Bidirectional,
}

impl DataDirection {
    /// From opcode bits 1:0 (or a Fabrics FCTYPE's bits 1:0).
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x3 {
            0 => Self::None,
            1 => Self::HostToController,
            2 => Self::ControllerToHost,
            _ => Self::Bidirectional,
        }
    }
}

define_view!(
    /// Zero-copy view of a submission queue entry.
    SqeView, SqeRaw, "SQE"
);
view_accessors!(SqeView;
    /// OPC.
    opcode / set_opcode: u8;
    /// FLAGS: bits 1:0 FUSE, bits 7:6 PSDT.
    flags / set_flags: u8;
    /// Command identifier (opaque, echoed in the CQE).
    cid / set_cid: u16;
    /// Namespace identifier (Fabrics: byte 4 is FCTYPE).
    nsid / set_nsid: u32;
    cdw2 / set_cdw2: u32;
    cdw3 / set_cdw3: u32;
    /// Metadata pointer (unused on TCP).
    mptr / set_mptr: u64;
    cdw10 / set_cdw10: u32;
    cdw11 / set_cdw11: u32;
    cdw12 / set_cdw12: u32;
    cdw13 / set_cdw13: u32;
    cdw14 / set_cdw14: u32;
    cdw15 / set_cdw15: u32;
);

impl<T: AsRef<[u8]>> SqeView<T> {
    /// FCTYPE (byte 4) of a Fabrics command.
    pub fn fctype(&self) -> u8 {
        self.nsid() as u8
    }

    /// SGL1 (bytes 24..40).
    pub fn sgl(&self) -> SglDescriptor {
        self.raw()
            .map_or_else(SglDescriptor::default, |r| SglDescriptor::from_raw(&r.dptr))
    }

    /// A view of SGL1.
    pub fn sgl_view(&self) -> SglView<&[u8]> {
        SglView::new_unchecked(self.as_bytes().get(24..40).unwrap_or_default())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SqeView<T> {
    /// Sets SGL1.
    pub fn set_sgl(&mut self, sgl: &SglDescriptor) {
        if let Some(r) = self.raw_mut() {
            r.dptr = sgl.to_raw();
        }
    }
}

/// A parsed submission queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub cid: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    pub sgl: SglDescriptor,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Sqe {
    pub const LEN: usize = 64;

    /// A command with PSDT = SGL (as the Linux host sends) and a no-data transport SGL.
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        Self {
            opcode,
            flags: FLAGS_PSDT_SGL,
            cid,
            nsid,
            sgl: SglDescriptor::transport(0),
            ..Self::default()
        }
    }

    /// FUSE (flags bits 1:0).
    pub fn fuse(&self) -> u8 {
        self.flags & 0x3
    }

    /// PSDT (flags bits 7:6); must be 01b on fabrics.
    pub fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    pub fn is_fabrics(&self) -> bool {
        self.opcode == OPC_FABRICS
    }

    /// FCTYPE (byte 4) of a Fabrics command.
    pub fn fctype(&self) -> u8 {
        self.nsid as u8
    }

    /// Data direction: opcode bits 1:0, or FCTYPE bits 1:0 for Fabrics commands.
    pub fn data_direction(&self) -> DataDirection {
        if self.is_fabrics() {
            DataDirection::from_bits(self.fctype())
        } else {
            DataDirection::from_bits(self.opcode)
        }
    }

    /// The 24 bytes of CDW10..CDW15 in wire order (fields of fabrics commands are byte-
    /// addressed inside them).
    pub fn cdw10_15_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        for (chunk, dw) in out.chunks_exact_mut(4).zip([
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]) {
            chunk.copy_from_slice(&dw.to_le_bytes());
        }
        out
    }

    pub fn from_raw(r: &SqeRaw) -> Self {
        Self {
            opcode: r.opcode,
            flags: r.flags,
            cid: r.cid.get(),
            nsid: r.nsid.get(),
            cdw2: r.cdw2.get(),
            cdw3: r.cdw3.get(),
            mptr: r.mptr.get(),
            sgl: SglDescriptor::from_raw(&r.dptr),
            cdw10: r.cdw10.get(),
            cdw11: r.cdw11.get(),
            cdw12: r.cdw12.get(),
            cdw13: r.cdw13.get(),
            cdw14: r.cdw14.get(),
            cdw15: r.cdw15.get(),
        }
    }

    pub fn to_raw(&self) -> SqeRaw {
        SqeRaw {
            opcode: self.opcode,
            flags: self.flags,
            cid: U16::new(self.cid),
            nsid: U32::new(self.nsid),
            cdw2: U32::new(self.cdw2),
            cdw3: U32::new(self.cdw3),
            mptr: U64::new(self.mptr),
            dptr: self.sgl.to_raw(),
            cdw10: U32::new(self.cdw10),
            cdw11: U32::new(self.cdw11),
            cdw12: U32::new(self.cdw12),
            cdw13: U32::new(self.cdw13),
            cdw14: U32::new(self.cdw14),
            cdw15: U32::new(self.cdw15),
        }
    }

    /// Parses exactly 64 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: SqeRaw = read_exact("SQE", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    /// Writes the 64 bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("SQE", buf, self.to_raw().as_bytes())
    }

    /// The 64 wire bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.to_raw().as_bytes());
        out
    }
}

impl fmt::Display for Sqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fabrics() {
            write!(
                f,
                "SQE fabrics fctype={:#04x} cid={:#06x}",
                self.fctype(),
                self.cid
            )?;
        } else {
            write!(
                f,
                "SQE opc={:#04x} cid={:#06x} nsid={}",
                self.opcode, self.cid, self.nsid
            )?;
        }
        write!(
            f,
            " flags={:#04x} {} cdw10..15=[{:#x} {:#x} {:#x} {:#x} {:#x} {:#x}]",
            self.flags,
            self.sgl,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    fn fixture() -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 0x02;
        b[1] = 0x40;
        put16(&mut b, 2, 0x1234);
        put32(&mut b, 4, 1);
        put32(&mut b, 8, 0xA);
        put32(&mut b, 12, 0xB);
        put64(&mut b, 16, 0xCC);
        put32(&mut b, 32, 4096);
        b[39] = 0x5A;
        for (i, off) in [40, 44, 48, 52, 56, 60].into_iter().enumerate() {
            put32(&mut b, off, 0x100 + i as u32);
        }
        b
    }

    #[test]
    fn layout_by_hand_and_round_trip() {
        let b = fixture();
        let s = Sqe::parse(&b).unwrap();
        assert_eq!(s.opcode, 2);
        assert_eq!(s.psdt(), 1);
        assert_eq!(s.fuse(), 0);
        assert_eq!(s.cid, 0x1234);
        assert_eq!(s.nsid, 1);
        assert_eq!((s.cdw2, s.cdw3, s.mptr), (0xA, 0xB, 0xCC));
        assert_eq!(s.sgl, SglDescriptor::transport(4096));
        assert_eq!(
            [s.cdw10, s.cdw11, s.cdw12, s.cdw13, s.cdw14, s.cdw15],
            [0x100, 0x101, 0x102, 0x103, 0x104, 0x105]
        );
        assert_eq!(s.data_direction(), DataDirection::ControllerToHost);
        assert_eq!(s.to_bytes(), b);
        assert_eq!(&s.cdw10_15_bytes()[..], &b[40..64]);
        let v = SqeView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.opcode(), v.cid(), v.nsid(), v.cdw15()),
            (2, 0x1234, 1, 0x105)
        );
        assert_eq!(v.sgl(), s.sgl);
        assert_eq!(v.sgl_view().length(), 4096);
        assert!(s.to_string().contains("opc=0x02"));
    }

    #[test]
    fn setters_match_emit() {
        let s = Sqe::parse(&fixture()).unwrap();
        let mut buf = [0u8; 64];
        let mut v = SqeView::new_checked(&mut buf[..]).unwrap();
        v.set_opcode(s.opcode);
        v.set_flags(s.flags);
        v.set_cid(s.cid);
        v.set_nsid(s.nsid);
        v.set_cdw2(s.cdw2);
        v.set_cdw3(s.cdw3);
        v.set_mptr(s.mptr);
        v.set_sgl(&s.sgl);
        v.set_cdw10(s.cdw10);
        v.set_cdw11(s.cdw11);
        v.set_cdw12(s.cdw12);
        v.set_cdw13(s.cdw13);
        v.set_cdw14(s.cdw14);
        v.set_cdw15(s.cdw15);
        assert_eq!(buf, fixture());
    }

    #[test]
    fn fabrics_direction() {
        let mut s = Sqe::new(OPC_FABRICS, 1, 0);
        s.nsid = 0x01; // Connect
        assert_eq!(s.data_direction(), DataDirection::HostToController);
        s.nsid = 0x04; // Property Get
        assert_eq!(s.data_direction(), DataDirection::None);
        assert!(s.to_string().contains("fabrics"));
    }

    #[test]
    fn bad_lengths() {
        assert!(matches!(
            Sqe::parse(&[0; 63]),
            Err(WireError::Truncated {
                need: 64,
                got: 63,
                ..
            })
        ));
        assert!(matches!(
            Sqe::parse(&[0; 65]),
            Err(WireError::Oversized { .. })
        ));
        assert!(Sqe::default().emit(&mut [0; 10]).is_err());
        let v = SqeView::new_unchecked(&[0xFFu8; 10][..]);
        assert!(v.check_len().is_err());
        assert_eq!(v.cdw15(), 0);
    }
}

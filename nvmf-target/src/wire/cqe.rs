//! Completion Queue Entry (16 bytes), carried by a CapsuleResp PDU.
//!
//! ```text
//!  0     4     8      10     12    14      16
//!  | DW0 | DW1 | SQHD | SQID | CID | STATUS |
//! ```
//! STATUS: bit 0 phase, bits 8:1 SC, 11:9 SCT, 13:12 CRD, 14 More, 15 DNR (see `status`).
//! Invariants: the layout is asserted at compile time; parse/emit is exact for all 16 bytes.

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::status::CompletionStatus;
use super::{assert_layout, define_view, read_exact, view_accessors, write_prefix, WireError};

/// SQHD value used when SQ flow control is disabled (and in the Connect response).
pub const SQHD_DISABLED: u16 = 0xFFFF;

/// Zerocopy layout of a completion queue entry.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CqeRaw {
    pub dw0: U32,
    pub dw1: U32,
    pub sqhd: U16,
    pub sqid: U16,
    pub cid: U16,
    pub status: U16,
}
assert_layout!(CqeRaw, 16; dw0 @ 0, dw1 @ 4, sqhd @ 8, sqid @ 10, cid @ 12, status @ 14);

define_view!(
    /// Zero-copy view of a completion queue entry.
    CqeView, CqeRaw, "CQE"
);
view_accessors!(CqeView;
    /// Command-specific result dword 0.
    dw0 / set_dw0: u32;
    /// Command-specific result dword 1.
    dw1 / set_dw1: u32;
    /// SQ head pointer.
    sqhd / set_sqhd: u16;
    /// SQ identifier.
    sqid / set_sqid: u16;
    /// Command identifier copied from the SQE.
    cid / set_cid: u16;
    /// Raw STATUS word including the phase tag.
    status / set_status: u16;
);

impl<T: AsRef<[u8]>> CqeView<T> {
    /// Decoded status (without phase).
    pub fn completion_status(&self) -> CompletionStatus {
        CompletionStatus::from_wire(self.status()).0
    }
}

/// A parsed completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    pub status: CompletionStatus,
    /// Phase tag (always 0 on TCP; kept for exact round trips).
    pub phase: bool,
}

impl Cqe {
    pub const LEN: usize = 16;

    /// A successful completion with DW0/DW1 = 0.
    pub fn success(cid: u16, sqid: u16, sqhd: u16) -> Self {
        Self {
            cid,
            sqid,
            sqhd,
            ..Self::default()
        }
    }

    /// A completion with the given status and DW0/DW1 = 0.
    pub fn with_status(cid: u16, sqid: u16, sqhd: u16, status: CompletionStatus) -> Self {
        Self {
            cid,
            sqid,
            sqhd,
            status,
            ..Self::default()
        }
    }

    pub fn from_raw(r: &CqeRaw) -> Self {
        let (status, phase) = CompletionStatus::from_wire(r.status.get());
        Self {
            dw0: r.dw0.get(),
            dw1: r.dw1.get(),
            sqhd: r.sqhd.get(),
            sqid: r.sqid.get(),
            cid: r.cid.get(),
            status,
            phase,
        }
    }

    pub fn to_raw(&self) -> CqeRaw {
        CqeRaw {
            dw0: U32::new(self.dw0),
            dw1: U32::new(self.dw1),
            sqhd: U16::new(self.sqhd),
            sqid: U16::new(self.sqid),
            cid: U16::new(self.cid),
            status: U16::new(self.status.to_wire(self.phase)),
        }
    }

    /// Parses exactly 16 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: CqeRaw = read_exact("CQE", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    /// Writes the 16 bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("CQE", buf, self.to_raw().as_bytes())
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(self.to_raw().as_bytes());
        out
    }
}

impl fmt::Display for Cqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CQE cid={:#06x} sqid={} sqhd={:#x} dw0={:#x} dw1={:#x} status={}",
            self.cid, self.sqid, self.sqhd, self.dw0, self.dw1, self.status
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status::Status;
    use crate::wire::testutil::*;

    #[test]
    fn layout_by_hand_and_round_trip() {
        let mut b = [0u8; 16];
        put32(&mut b, 0, 0x0001_0010);
        put32(&mut b, 4, 0xAABB);
        put16(&mut b, 8, 0xFFFF);
        put16(&mut b, 10, 3);
        put16(&mut b, 12, 0x701F);
        put16(&mut b, 14, 0x8304); // 0x182 + DNR
        let c = Cqe::parse(&b).unwrap();
        assert_eq!(
            (c.dw0, c.dw1, c.sqhd, c.sqid, c.cid),
            (0x0001_0010, 0xAABB, 0xFFFF, 3, 0x701F)
        );
        assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS.dnr());
        assert!(!c.phase);
        assert_eq!(c.to_bytes(), b);
        let v = CqeView::new_checked(&b[..]).unwrap();
        assert_eq!(v.completion_status(), c.status);
        assert_eq!(v.cid(), 0x701F);
        let mut out = [0u8; 16];
        let mut w = CqeView::new_checked(&mut out[..]).unwrap();
        w.set_dw0(c.dw0);
        w.set_dw1(c.dw1);
        w.set_sqhd(c.sqhd);
        w.set_sqid(c.sqid);
        w.set_cid(c.cid);
        w.set_status(0x8304);
        assert_eq!(out, b);
        assert!(c.to_string().contains("0x182"));
    }

    #[test]
    fn bad_lengths() {
        assert!(matches!(
            Cqe::parse(&[0; 15]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Cqe::parse(&[0; 17]),
            Err(WireError::Oversized { .. })
        ));
        assert!(Cqe::default().emit(&mut [0; 15]).is_err());
    }
}

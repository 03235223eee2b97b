//! R2T (type 0x09, controller → host): ready to transfer, HLEN 24, no data.
//!
//! ```text
//!  0    8       10     12     16     20         24
//!  | CH | CCCID | TTAG | R2TO | R2TL | reserved | [HDGST]
//! ```
//! Invariants: PLEN = 24 (+4 with header digest), PDO 0, R2TL > 0.

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ChRaw, FatalError, FatalReason, PduType, TxConfig, TxLayout};
use crate::wire::{assert_layout, define_view, read_prefix, view_accessors, WireError};

/// Zerocopy layout of an R2T PDU.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct R2tRaw {
    pub ch: ChRaw,
    pub cccid: U16,
    pub ttag: U16,
    pub r2to: U32,
    pub r2tl: U32,
    pub reserved: [u8; 4],
}
assert_layout!(R2tRaw, 24; ch @ 0, cccid @ 8, ttag @ 10, r2to @ 12, r2tl @ 16, reserved @ 20);

define_view!(
    /// Zero-copy view of an R2T PDU.
    R2tView, R2tRaw, "R2T"
);
view_accessors!(R2tView;
    /// Command identifier.
    cccid / set_cccid: u16;
    /// Transfer tag chosen by the controller.
    ttag / set_ttag: u16;
    /// Offset in the command's data.
    r2to / set_r2to: u32;
    /// Bytes requested.
    r2tl / set_r2tl: u32;
);

pub(super) fn check_fields(h: &[u8]) -> Result<(), FatalError> {
    if R2tView::new_unchecked(h).r2tl() == 0 {
        return Err(FatalError::header_field(
            PduType::R2T as u8,
            16,
            FatalReason::BadField {
                field: "R2TL",
                value: 0,
            },
        ));
    }
    Ok(())
}

/// A parsed R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct R2t {
    pub cccid: u16,
    pub ttag: u16,
    pub r2to: u32,
    pub r2tl: u32,
}

impl R2t {
    pub fn from_header(header: &[u8]) -> Result<Self, WireError> {
        let r: R2tRaw = read_prefix("R2T", header)?;
        Ok(Self {
            cccid: r.cccid.get(),
            ttag: r.ttag.get(),
            r2to: r.r2to.get(),
            r2tl: r.r2tl.get(),
        })
    }

    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        let l = TxLayout::new(PduType::R2T, 0, tx);
        let raw = R2tRaw {
            ch: l.common_header(0).to_raw(),
            cccid: U16::new(self.cccid),
            ttag: U16::new(self.ttag),
            r2to: U32::new(self.r2to),
            r2tl: U32::new(self.r2tl),
            reserved: [0; 4],
        };
        l.emit(buf, raw.as_bytes(), &[])
    }
}

impl fmt::Display for R2t {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "R2T cccid={:#06x} ttag={} r2to={} r2tl={}",
            self.cccid, self.ttag, self.r2to, self.r2tl
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pdu, PduError, RxConfig};
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn by_hand() {
        let mut b = [0u8; 24];
        b[0] = 9;
        b[2] = 24;
        put32(&mut b, 4, 24);
        put16(&mut b, 8, 0x3005);
        put16(&mut b, 10, 1);
        put32(&mut b, 12, 0);
        put32(&mut b, 16, 65536);
        let r = R2t {
            cccid: 0x3005,
            ttag: 1,
            r2to: 0,
            r2tl: 65536,
        };
        let mut out = [0u8; 24];
        assert_eq!(r.emit(&mut out, &TxConfig::default()).unwrap(), 24);
        assert_eq!(out, b);
        assert_eq!(Pdu::parse(&b, &RxConfig::host()).unwrap().0, Pdu::R2T(r));
        let v = R2tView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.cccid(), v.ttag(), v.r2to(), v.r2tl()),
            (0x3005, 1, 0, 65536)
        );
        put32(&mut b, 16, 0);
        assert!(
            matches!(Pdu::parse(&b, &RxConfig::host()), Err(PduError::Fatal(e)) if e.fei == 16)
        );
        assert_eq!(r.to_string(), "R2T cccid=0x3005 ttag=1 r2to=0 r2tl=65536");
    }
}

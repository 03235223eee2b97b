//! H2CTermReq (type 0x02) and C2HTermReq (type 0x03): fatal error notification.
//!
//! ```text
//!  0    8     10    14         24                    PLEN (24..=152)
//!  | CH | FES | FEI | reserved | offending header (<= 128 B) |
//! ```
//! Invariants: flags 0, HLEN 24, PDO 0 (the copied header sits right after the 24-byte
//! header), no digests ever, at most 128 header bytes.

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ChRaw, CommonHeader, FatalError, Fes, PduType, TERM_MAX_HEADER};
use crate::wire::{
    assert_layout, define_view, read_prefix, view_accessors, write_prefix, WireError,
};

/// Zerocopy layout of the 24-byte TermReq header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TermReqRaw {
    pub ch: ChRaw,
    pub fes: U16,
    pub fei: U32,
    pub reserved: [u8; 10],
}
assert_layout!(TermReqRaw, 24; ch @ 0, fes @ 8, fei @ 10, reserved @ 14);

define_view!(
    /// Zero-copy view of a TermReq header.
    TermReqView, TermReqRaw, "TermReq"
);
view_accessors!(TermReqView;
    /// Fatal Error Status.
    fes / set_fes: u16;
    /// Fatal Error Information.
    fei / set_fei: u32;
);

/// Direction of a TermReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermDir {
    /// H2CTermReq, sent by the host.
    H2C,
    /// C2HTermReq, sent by the controller.
    C2H,
}

impl TermDir {
    pub fn pdu_type(self) -> PduType {
        match self {
            Self::H2C => PduType::H2CTermReq,
            Self::C2H => PduType::C2HTermReq,
        }
    }
}

/// A parsed TermReq. `fes` is kept raw so unknown values survive; see [`TermReq::fes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq<'a> {
    pub dir: TermDir,
    pub fes: u16,
    pub fei: u32,
    /// The offending PDU header (at most 128 bytes).
    pub header: &'a [u8],
}

impl<'a> TermReq<'a> {
    /// The C2HTermReq reporting `err`, copying up to 128 bytes of the offending header.
    pub fn c2h_for(err: &FatalError, offending: &'a [u8]) -> Self {
        Self {
            dir: TermDir::C2H,
            fes: err.fes.code(),
            fei: err.fei,
            header: offending.get(..TERM_MAX_HEADER).unwrap_or(offending),
        }
    }

    /// Typed FES, if known.
    pub fn fes(&self) -> Option<Fes> {
        Fes::from_u16(self.fes)
    }

    /// Parses a whole TermReq (exactly PLEN bytes, CH already validated).
    pub fn parse(whole: &'a [u8]) -> Result<Self, WireError> {
        let r: TermReqRaw = read_prefix("TermReq", whole)?;
        let dir = if r.ch.pdu_type == PduType::H2CTermReq as u8 {
            TermDir::H2C
        } else {
            TermDir::C2H
        };
        let header = whole.get(24..).unwrap_or_default();
        if header.len() > TERM_MAX_HEADER {
            return Err(WireError::Oversized {
                structure: "TermReq",
                max: 24 + TERM_MAX_HEADER as u64,
                got: whole.len() as u64,
            });
        }
        Ok(Self {
            dir,
            fes: r.fes.get(),
            fei: r.fei.get(),
            header,
        })
    }

    /// Bytes [`TermReq::emit`] writes.
    pub fn wire_len(&self) -> usize {
        24 + self.header.len().min(TERM_MAX_HEADER)
    }

    /// Writes the PDU (header truncated to 128 bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let hdr = self.header.get(..TERM_MAX_HEADER).unwrap_or(self.header);
        let n = 24 + hdr.len();
        let raw = TermReqRaw {
            ch: CommonHeader {
                pdu_type: self.dir.pdu_type() as u8,
                flags: 0,
                hlen: 24,
                pdo: 0,
                plen: n as u32,
            }
            .to_raw(),
            fes: U16::new(self.fes),
            fei: U32::new(self.fei),
            reserved: [0; 10],
        };
        if buf.len() < n {
            return Err(WireError::Truncated {
                structure: "TermReq",
                need: n as u64,
                got: buf.len() as u64,
            });
        }
        write_prefix("TermReq", buf, raw.as_bytes())?;
        write_prefix("TermReq", buf.get_mut(24..).unwrap_or_default(), hdr)?;
        Ok(n)
    }
}

impl fmt::Display for TermReq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.dir.pdu_type())?;
        match self.fes() {
            Some(fes) => write!(f, "FES {fes}")?,
            None => write!(f, "FES {:#06x}", self.fes)?,
        }
        write!(f, " FEI {:#x} header {} bytes", self.fei, self.header.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FatalReason, Pdu, PduError, RxConfig};
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn by_hand_and_round_trip() {
        let mut b = vec![0u8; 24 + 8];
        b[0] = 0x02;
        b[2] = 24;
        put32(&mut b, 4, 32);
        put16(&mut b, 8, 0x0001);
        put32(&mut b, 10, 8);
        b[24..32].copy_from_slice(&[0, 0, 128, 0, 128, 0, 0, 0]);
        let (pdu, n) = Pdu::parse(&b, &RxConfig::controller()).unwrap();
        assert_eq!(n, 32);
        let Pdu::TermReq(t) = pdu else { panic!() };
        assert_eq!(
            (t.dir, t.fes(), t.fei, t.header),
            (TermDir::H2C, Some(Fes::InvalidHeaderField), 8, &b[24..])
        );
        let mut out = vec![0u8; t.wire_len()];
        assert_eq!(t.emit(&mut out).unwrap(), 32);
        assert_eq!(out, b);
        let v = TermReqView::new_checked(&b[..]).unwrap();
        assert_eq!((v.fes(), v.fei()), (1, 8));
        assert!(t.to_string().starts_with("H2CTermReq FES 0x01"));
    }

    #[test]
    fn c2h_for_error_truncates_header() {
        let err = FatalError {
            fes: Fes::HeaderDigestError,
            fei: 0,
            reason: FatalReason::BadPlen,
            pdu_type: 4,
        };
        let hdr = [7u8; 200];
        let t = TermReq::c2h_for(&err, &hdr);
        assert_eq!(t.header.len(), 128);
        let mut out = vec![0u8; 152];
        assert_eq!(t.emit(&mut out).unwrap(), 152);
        let (p, _) = Pdu::parse(&out, &RxConfig::host()).unwrap();
        assert_eq!(p, Pdu::TermReq(t));
        assert!(t.emit(&mut [0u8; 100]).is_err());
    }

    #[test]
    fn flags_and_plen() {
        let mut b = [0u8; 24];
        b[0] = 0x02;
        b[1] = 0x01;
        b[2] = 24;
        put32(&mut b, 4, 24);
        assert!(
            matches!(Pdu::parse(&b, &RxConfig::controller()), Err(PduError::Fatal(e)) if e.fei == 1)
        );
        b[1] = 0;
        assert!(Pdu::parse(&b, &RxConfig::controller()).is_ok());
        put32(&mut b, 4, 23);
        assert!(
            matches!(Pdu::parse(&b, &RxConfig::controller()), Err(PduError::Fatal(e)) if e.fei == 4)
        );
    }
}

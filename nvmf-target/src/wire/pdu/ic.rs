//! ICReq (type 0x00, host → controller) and ICResp (type 0x01, controller → host): 128 bytes.
//!
//! ```text
//!  0    8     10          11    12                16          128
//!  | CH | PFV | HPDA/CPDA | DGST | MAXR2T/MAXH2CDATA | reserved |
//! ```
//! Invariants: CH is type 0/1, flags 0, HLEN 128, PDO 0, PLEN 128; PFV must be 0; the PDA
//! is at most 31; ICResp MAXH2CDATA is a multiple of 4 and at least 4096.

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ChRaw, CommonHeader, Digests, FatalError, FatalReason, PduType};
use crate::wire::{
    assert_layout, define_view, read_prefix, view_accessors, write_prefix, WireError,
};

/// Smallest MAXH2CDATA a Linux host accepts.
pub const MIN_MAXH2CDATA: u32 = 4096;
/// Largest PDA value (0-based dwords).
pub const MAX_PDA: u8 = 31;

/// Zerocopy layout of ICReq.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IcReqRaw {
    pub ch: ChRaw,
    pub pfv: U16,
    pub hpda: u8,
    pub dgst: u8,
    pub maxr2t: U32,
    pub reserved: [u8; 112],
}
assert_layout!(IcReqRaw, 128; ch @ 0, pfv @ 8, hpda @ 10, dgst @ 11, maxr2t @ 12, reserved @ 16);

/// Zerocopy layout of ICResp.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IcRespRaw {
    pub ch: ChRaw,
    pub pfv: U16,
    pub cpda: u8,
    pub dgst: u8,
    pub maxh2cdata: U32,
    pub reserved: [u8; 112],
}
assert_layout!(IcRespRaw, 128; ch @ 0, pfv @ 8, cpda @ 10, dgst @ 11, maxh2cdata @ 12, reserved @ 16);

define_view!(
    /// Zero-copy view of an ICReq PDU.
    IcReqView, IcReqRaw, "ICReq"
);
view_accessors!(IcReqView;
    /// PDU format version (0 = 1.0).
    pfv / set_pfv: u16;
    /// Host PDU data alignment, 0-based dwords.
    hpda / set_hpda: u8;
    /// Digest bits: 0 header, 1 data.
    dgst / set_dgst: u8;
    /// Max outstanding R2Ts per command, 0-based.
    maxr2t / set_maxr2t: u32;
);

define_view!(
    /// Zero-copy view of an ICResp PDU.
    IcRespView, IcRespRaw, "ICResp"
);
view_accessors!(IcRespView;
    /// PDU format version (0 = 1.0).
    pfv / set_pfv: u16;
    /// Controller PDU data alignment, 0-based dwords.
    cpda / set_cpda: u8;
    /// Digest bits: 0 header, 1 data.
    dgst / set_dgst: u8;
    /// Max data bytes per H2CData PDU.
    maxh2cdata / set_maxh2cdata: u32;
);

fn ch_for(t: PduType) -> ChRaw {
    CommonHeader {
        pdu_type: t as u8,
        flags: 0,
        hlen: 128,
        pdo: 0,
        plen: 128,
    }
    .to_raw()
}

fn field_err(t: PduType, fei: u32, field: &'static str, value: u32) -> FatalError {
    FatalError::header_field(t as u8, fei, FatalReason::BadField { field, value })
}

pub(super) fn check_icreq_fields(h: &[u8]) -> Result<(), FatalError> {
    let v = IcReqView::new_unchecked(h);
    if v.pfv() != 0 {
        return Err(field_err(PduType::IcReq, 8, "PFV", v.pfv().into()));
    }
    if v.hpda() > MAX_PDA {
        return Err(field_err(PduType::IcReq, 10, "HPDA", v.hpda().into()));
    }
    Ok(())
}

pub(super) fn check_icresp_fields(h: &[u8]) -> Result<(), FatalError> {
    let v = IcRespView::new_unchecked(h);
    if v.pfv() != 0 {
        return Err(field_err(PduType::IcResp, 8, "PFV", v.pfv().into()));
    }
    if v.cpda() > MAX_PDA {
        return Err(field_err(PduType::IcResp, 10, "CPDA", v.cpda().into()));
    }
    let m = v.maxh2cdata();
    if m < MIN_MAXH2CDATA || m & 3 != 0 {
        return Err(field_err(PduType::IcResp, 12, "MAXH2CDATA", m));
    }
    Ok(())
}

/// Parsed ICReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcReq {
    pub pfv: u16,
    pub hpda: u8,
    pub digests: Digests,
    /// Max outstanding R2Ts per command, 0-based (0 = one).
    pub maxr2t: u32,
}

impl IcReq {
    /// Decodes the PSH fields from at least 128 bytes (CH checks are the caller's:
    /// see [`super::Pdu::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: IcReqRaw = read_prefix("ICReq", bytes)?;
        Ok(Self {
            pfv: r.pfv.get(),
            hpda: r.hpda,
            digests: Digests::from_bits(r.dgst),
            maxr2t: r.maxr2t.get(),
        })
    }

    /// Writes the 128-byte PDU.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let raw = IcReqRaw {
            ch: ch_for(PduType::IcReq),
            pfv: U16::new(self.pfv),
            hpda: self.hpda,
            dgst: self.digests.bits(),
            maxr2t: U32::new(self.maxr2t),
            reserved: [0; 112],
        };
        write_prefix("ICReq", buf, raw.as_bytes())?;
        Ok(128)
    }
}

impl fmt::Display for IcReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ICReq pfv={} hpda={} hdgst={} ddgst={} maxr2t={}",
            self.pfv, self.hpda, self.digests.header, self.digests.data, self.maxr2t
        )
    }
}

/// Parsed ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcResp {
    pub pfv: u16,
    pub cpda: u8,
    pub digests: Digests,
    pub maxh2cdata: u32,
}

impl IcResp {
    /// The answer a controller gives: PFV 0, CPDA 0, echoed digests.
    pub fn answer(req: &IcReq, maxh2cdata: u32) -> Self {
        Self {
            pfv: 0,
            cpda: 0,
            digests: req.digests,
            maxh2cdata,
        }
    }

    /// Decodes the PSH fields from at least 128 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: IcRespRaw = read_prefix("ICResp", bytes)?;
        Ok(Self {
            pfv: r.pfv.get(),
            cpda: r.cpda,
            digests: Digests::from_bits(r.dgst),
            maxh2cdata: r.maxh2cdata.get(),
        })
    }

    /// Writes the 128-byte PDU.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let raw = IcRespRaw {
            ch: ch_for(PduType::IcResp),
            pfv: U16::new(self.pfv),
            cpda: self.cpda,
            dgst: self.digests.bits(),
            maxh2cdata: U32::new(self.maxh2cdata),
            reserved: [0; 112],
        };
        write_prefix("ICResp", buf, raw.as_bytes())?;
        Ok(128)
    }
}

impl fmt::Display for IcResp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ICResp pfv={} cpda={} hdgst={} ddgst={} maxh2cdata={}",
            self.pfv, self.cpda, self.digests.header, self.digests.data, self.maxh2cdata
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fes, Pdu, PduError, RxConfig};
    use super::*;
    use crate::wire::testutil::*;

    fn icreq_bytes(pfv: u16, hpda: u8, dgst: u8) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0] = 0x00;
        b[2] = 128;
        put32(&mut b, 4, 128);
        put16(&mut b, 8, pfv);
        b[10] = hpda;
        b[11] = dgst;
        put32(&mut b, 12, 0);
        b
    }

    #[test]
    fn icreq_by_hand() {
        let b = icreq_bytes(0, 0, 3);
        let (pdu, n) = Pdu::parse(&b, &RxConfig::controller()).unwrap();
        assert_eq!(n, 128);
        let want = IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::BOTH,
            maxr2t: 0,
        };
        assert_eq!(pdu, Pdu::IcReq(want));
        let mut out = [0xEEu8; 128];
        assert_eq!(want.emit(&mut out).unwrap(), 128);
        assert_eq!(out, b);
        let v = IcReqView::new_checked(&b[..]).unwrap();
        assert_eq!((v.pfv(), v.hpda(), v.dgst(), v.maxr2t()), (0, 0, 3, 0));
        assert_eq!(
            want.to_string(),
            "ICReq pfv=0 hpda=0 hdgst=true ddgst=true maxr2t=0"
        );
    }

    #[test]
    fn icreq_invalid_fields() {
        let c = RxConfig::controller();
        for (b, fei) in [(icreq_bytes(1, 0, 0), 8), (icreq_bytes(0, 32, 0), 10)] {
            match Pdu::parse(&b, &c) {
                Err(PduError::Fatal(e)) => {
                    assert_eq!((e.fes, e.fei), (Fes::InvalidHeaderField, fei))
                }
                other => panic!("{other:?}"),
            }
        }
        let mut b = icreq_bytes(0, 0, 0);
        b[3] = 4; // PDO
        assert!(matches!(Pdu::parse(&b, &c), Err(PduError::Fatal(e)) if e.fei == 3));
        assert!(IcReq::parse(&b[..127]).is_err());
    }

    #[test]
    fn icresp_by_hand() {
        let mut b = [0u8; 128];
        b[0] = 0x01;
        b[2] = 128;
        put32(&mut b, 4, 128);
        b[11] = 1;
        put32(&mut b, 12, 0x40_0000);
        let req = IcReq {
            digests: Digests::from_bits(1),
            ..IcReq::default()
        };
        let resp = IcResp::answer(&req, 0x40_0000);
        let mut out = [0u8; 128];
        resp.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let (pdu, _) = Pdu::parse(&b, &RxConfig::host()).unwrap();
        assert_eq!(pdu, Pdu::IcResp(resp));
        let v = IcRespView::new_checked(&b[..]).unwrap();
        assert_eq!((v.cpda(), v.dgst(), v.maxh2cdata()), (0, 1, 0x40_0000));
        // MAXH2CDATA below 4096 or not a dword multiple.
        for bad in [4092u32, 4098] {
            put32(&mut b, 12, bad);
            assert!(
                matches!(Pdu::parse(&b, &RxConfig::host()), Err(PduError::Fatal(e)) if e.fei == 12)
            );
        }
        // A controller does not receive ICResp.
        assert!(
            matches!(Pdu::parse(&out, &RxConfig::controller()), Err(PduError::Fatal(e)) if e.fei == 0)
        );
    }
}

//! CapsuleCmd (type 0x04) and CapsuleResp (type 0x05).
//!
//! ```text
//! CapsuleCmd:  | CH | SQE (64) | [HDGST] | [PAD] | [in-capsule data] | [DDGST] |   HLEN 72
//! CapsuleResp: | CH | CQE (16) | [HDGST] |                                        HLEN 24
//! ```
//! Invariants: PDO is 0 without in-capsule data; CapsuleResp never carries data. Whether the
//! in-capsule data length matches the SGL is a command-level check (`ctrlr/`), not framing.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ChRaw, PduType, TxConfig, TxLayout};
use crate::wire::cqe::{Cqe, CqeRaw};
use crate::wire::sgl::SglKind;
use crate::wire::sqe::{Sqe, SqeRaw};
use crate::wire::{assert_layout, define_view, read_prefix, WireError};

/// Zerocopy layout of the CapsuleCmd header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CapsuleCmdRaw {
    pub ch: ChRaw,
    pub sqe: SqeRaw,
}
assert_layout!(CapsuleCmdRaw, 72; ch @ 0, sqe @ 8);

/// Zerocopy layout of the CapsuleResp header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CapsuleRespRaw {
    pub ch: ChRaw,
    pub cqe: CqeRaw,
}
assert_layout!(CapsuleRespRaw, 24; ch @ 0, cqe @ 8);

define_view!(
    /// Zero-copy view of a CapsuleCmd header.
    CapsuleCmdView, CapsuleCmdRaw, "CapsuleCmd"
);

impl<T: AsRef<[u8]>> CapsuleCmdView<T> {
    /// The SQE bytes (8..72).
    pub fn sqe_bytes(&self) -> &[u8] {
        self.as_bytes().get(8..72).unwrap_or_default()
    }
}

define_view!(
    /// Zero-copy view of a CapsuleResp header.
    CapsuleRespView, CapsuleRespRaw, "CapsuleResp"
);

impl<T: AsRef<[u8]>> CapsuleRespView<T> {
    /// The CQE bytes (8..24).
    pub fn cqe_bytes(&self) -> &[u8] {
        self.as_bytes().get(8..24).unwrap_or_default()
    }
}

/// A parsed command capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleCmd<'a> {
    pub sqe: Sqe,
    /// In-capsule data (empty when none).
    pub data: &'a [u8],
}

impl<'a> CapsuleCmd<'a> {
    /// Builds from the 72-byte header and the already located data.
    pub fn from_header(header: &[u8], data: &'a [u8]) -> Result<Self, WireError> {
        let r: CapsuleCmdRaw = read_prefix("CapsuleCmd", header)?;
        Ok(Self {
            sqe: Sqe::from_raw(&r.sqe),
            data,
        })
    }

    fn layout(&self, tx: &TxConfig) -> TxLayout {
        TxLayout::new(
            PduType::CapsuleCmd,
            u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            tx,
        )
    }

    pub fn wire_len(&self, tx: &TxConfig) -> usize {
        self.layout(tx).plen as usize
    }

    /// Writes the whole PDU.
    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        let l = self.layout(tx);
        let raw = CapsuleCmdRaw {
            ch: l.common_header(0).to_raw(),
            sqe: self.sqe.to_raw(),
        };
        l.emit(buf, raw.as_bytes(), self.data)
    }
}

/// How a command capsule's SGL1 relates to the data that came with it (spec §2.6, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglDataCheck {
    /// Transport SGL (0x5A) of `len` bytes, no in-capsule data: data moves by R2T/C2HData
    /// (`len == 0`: no data at all).
    Transport { len: u32 },
    /// In-capsule SGL (0x01) whose length equals the in-capsule data.
    InCapsule { len: u32 },
    /// In-capsule SGL with a non-zero offset (ICDOFF is 0): SGL Offset Invalid.
    InCapsuleOffset { offset: u64 },
    /// In-capsule SGL length differs from the data carried.
    LengthMismatch { sgl_len: u32, icd_len: u32 },
    /// In-capsule data arrived but the SGL is not an in-capsule descriptor.
    UnexpectedData { icd_len: u32 },
    /// Any other descriptor type: SGL Descriptor Type Invalid.
    UnsupportedType { identifier: u8 },
}

impl CapsuleCmd<'_> {
    /// Classifies SGL1 against the in-capsule data. Which status (or fatal error) each
    /// mismatch earns is the controller's policy.
    pub fn sgl_data_check(&self) -> SglDataCheck {
        let sgl = &self.sqe.sgl;
        let icd_len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        match sgl.kind() {
            SglKind::TransportDataBlock if icd_len == 0 => {
                SglDataCheck::Transport { len: sgl.length }
            }
            SglKind::TransportDataBlock => SglDataCheck::UnexpectedData { icd_len },
            SglKind::InCapsule if sgl.address != 0 => SglDataCheck::InCapsuleOffset {
                offset: sgl.address,
            },
            SglKind::InCapsule if sgl.length != icd_len => SglDataCheck::LengthMismatch {
                sgl_len: sgl.length,
                icd_len,
            },
            SglKind::InCapsule => SglDataCheck::InCapsule { len: icd_len },
            _ if icd_len != 0 => SglDataCheck::UnexpectedData { icd_len },
            _ => SglDataCheck::UnsupportedType {
                identifier: sgl.identifier,
            },
        }
    }
}

impl fmt::Display for CapsuleCmd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapsuleCmd {} icd={}", self.sqe, self.data.len())
    }
}

/// A parsed response capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapsuleResp {
    pub cqe: Cqe,
}

impl CapsuleResp {
    /// Builds from the 24-byte header.
    pub fn from_header(header: &[u8]) -> Result<Self, WireError> {
        let r: CapsuleRespRaw = read_prefix("CapsuleResp", header)?;
        Ok(Self {
            cqe: Cqe::from_raw(&r.cqe),
        })
    }

    /// Writes the whole PDU (24 bytes, 28 with header digest).
    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        let l = TxLayout::new(PduType::CapsuleResp, 0, tx);
        let raw = CapsuleRespRaw {
            ch: l.common_header(0).to_raw(),
            cqe: self.cqe.to_raw(),
        };
        l.emit(buf, raw.as_bytes(), &[])
    }
}

impl fmt::Display for CapsuleResp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapsuleResp {}", self.cqe)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{digest, Digests, Pdu, PduError, RxConfig};
    use super::*;
    use crate::wire::sgl::SglDescriptor;
    use crate::wire::status::Status;
    use crate::wire::testutil::*;

    fn connect_sqe() -> Sqe {
        let mut s = Sqe::new(0x7F, 0x2001, 0x01);
        s.sgl = SglDescriptor::in_capsule(16);
        s
    }

    #[test]
    fn cmd_with_icd_and_digests_by_hand() {
        let data = [0xABu8; 16];
        let sqe = connect_sqe();
        let mut b = vec![0u8; 72 + 4 + 16 + 4];
        b[0] = 4;
        b[1] = 3;
        b[2] = 72;
        b[3] = 76;
        put32(&mut b, 4, 96);
        sqe.emit(&mut b[8..72]).unwrap();
        let hd = digest(&b[..72]);
        put32(&mut b, 72, hd);
        b[76..92].copy_from_slice(&data);
        put32(&mut b, 92, digest(&data));

        let tx = TxConfig {
            digests: Digests::BOTH,
            pda: 0,
        };
        let cmd = CapsuleCmd { sqe, data: &data };
        let mut out = vec![0u8; cmd.wire_len(&tx)];
        assert_eq!(cmd.emit(&mut out, &tx).unwrap(), 96);
        assert_eq!(out, b);
        let rx = RxConfig {
            digests: Digests::BOTH,
            ..RxConfig::controller()
        };
        assert_eq!(Pdu::parse(&b, &rx).unwrap(), (Pdu::CapsuleCmd(cmd), 96));
        let v = CapsuleCmdView::new_checked(&b[..]).unwrap();
        assert_eq!(v.sqe_bytes(), &b[8..72]);

        // Data digest mismatch: non-fatal, carries the CID.
        b[80] ^= 0xFF;
        match Pdu::parse(&b, &rx) {
            Err(PduError::DataDigest(e)) => assert_eq!(e.cccid, 0x2001),
            other => panic!("{other:?}"),
        }
        assert!(cmd.to_string().contains("icd=16"));
    }

    #[test]
    fn sgl_data_checks() {
        let data = [0u8; 16];
        let mut c = CapsuleCmd {
            sqe: connect_sqe(),
            data: &data,
        };
        assert_eq!(c.sgl_data_check(), SglDataCheck::InCapsule { len: 16 });
        c.sqe.sgl.length = 32;
        assert_eq!(
            c.sgl_data_check(),
            SglDataCheck::LengthMismatch {
                sgl_len: 32,
                icd_len: 16
            }
        );
        c.sqe.sgl.address = 8;
        assert_eq!(
            c.sgl_data_check(),
            SglDataCheck::InCapsuleOffset { offset: 8 }
        );
        c.sqe.sgl = SglDescriptor::transport(4096);
        assert_eq!(
            c.sgl_data_check(),
            SglDataCheck::UnexpectedData { icd_len: 16 }
        );
        c.data = &[];
        assert_eq!(c.sgl_data_check(), SglDataCheck::Transport { len: 4096 });
        c.sqe.sgl.identifier = 0x40;
        assert_eq!(
            c.sgl_data_check(),
            SglDataCheck::UnsupportedType { identifier: 0x40 }
        );
    }

    #[test]
    fn cmd_without_data() {
        let tx = TxConfig::default();
        let cmd = CapsuleCmd {
            sqe: Sqe::new(0x06, 1, 0),
            data: &[],
        };
        let mut out = [0u8; 72];
        assert_eq!(cmd.emit(&mut out, &tx).unwrap(), 72);
        assert_eq!(&out[..8], &[4, 0, 72, 0, 72, 0, 0, 0]);
        assert_eq!(
            Pdu::parse(&out, &RxConfig::controller()).unwrap().0,
            Pdu::CapsuleCmd(cmd)
        );
        assert!(cmd.emit(&mut [0u8; 71], &tx).is_err());
    }

    #[test]
    fn resp_by_hand() {
        let mut b = [0u8; 28];
        b[0] = 5;
        b[1] = 1;
        b[2] = 24;
        put32(&mut b, 4, 28);
        put16(&mut b, 8 + 12, 0x1234);
        put16(&mut b, 8 + 14, 0x8004);
        let d = digest(&b[..24]);
        put32(&mut b, 24, d);
        let resp = CapsuleResp {
            cqe: Cqe::with_status(0x1234, 0, 0, Status::INVALID_FIELD.dnr()),
        };
        let tx = TxConfig {
            digests: Digests::BOTH,
            pda: 0,
        };
        let mut out = [0u8; 28];
        assert_eq!(resp.emit(&mut out, &tx).unwrap(), 28);
        assert_eq!(out, b);
        let rx = RxConfig {
            digests: Digests::BOTH,
            ..RxConfig::host()
        };
        assert_eq!(Pdu::parse(&b, &rx).unwrap().0, Pdu::CapsuleResp(resp));
        assert_eq!(
            CapsuleRespView::new_checked(&b[..]).unwrap().cqe_bytes(),
            &b[8..24]
        );
        // PLEN other than 24+4 is invalid for a response.
        put32(&mut b, 4, 32);
        assert!(matches!(Pdu::parse(&b, &rx), Err(PduError::Fatal(e)) if e.fei == 4));
    }
}

//! H2CData (type 0x06) and C2HData (type 0x07): data transfer PDUs, HLEN 24.
//!
//! ```text
//!  0    8       10          12      16      20         24
//!  | CH | CCCID | TTAG/rsvd | DATAO | DATAL | reserved | [HDGST] [PAD] DATA [DDGST]
//! ```
//! Invariants: data is always present (DATAL > 0) and DATAL equals `PLEN - PDO - ddgst`;
//! SUCCESS (C2HData only) implies LAST_PDU. Range checks against the R2T window and the
//! command's buffer are the connection's job (they need state).

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{flags, ChRaw, FatalError, FatalReason, Frame, PduType, TxConfig, TxLayout};
use crate::wire::{assert_layout, define_view, read_prefix, view_accessors, WireError};

/// Zerocopy layout of the H2CData header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct H2CDataRaw {
    pub ch: ChRaw,
    pub cccid: U16,
    pub ttag: U16,
    pub datao: U32,
    pub datal: U32,
    pub reserved: [u8; 4],
}
assert_layout!(H2CDataRaw, 24; ch @ 0, cccid @ 8, ttag @ 10, datao @ 12, datal @ 16, reserved @ 20);

/// Zerocopy layout of the C2HData header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct C2HDataRaw {
    pub ch: ChRaw,
    pub cccid: U16,
    pub reserved0: [u8; 2],
    pub datao: U32,
    pub datal: U32,
    pub reserved: [u8; 4],
}
assert_layout!(C2HDataRaw, 24; ch @ 0, cccid @ 8, reserved0 @ 10, datao @ 12, datal @ 16, reserved @ 20);

define_view!(
    /// Zero-copy view of an H2CData header.
    H2CDataView, H2CDataRaw, "H2CData"
);
view_accessors!(H2CDataView;
    /// Command identifier.
    cccid / set_cccid: u16;
    /// Transfer tag from the R2T.
    ttag / set_ttag: u16;
    /// Offset of this chunk in the command's data.
    datao / set_datao: u32;
    /// Data bytes in this PDU.
    datal / set_datal: u32;
);

define_view!(
    /// Zero-copy view of a C2HData header.
    C2HDataView, C2HDataRaw, "C2HData"
);
view_accessors!(C2HDataView;
    /// Command identifier.
    cccid / set_cccid: u16;
    /// Offset of this chunk in the command's data.
    datao / set_datao: u32;
    /// Data bytes in this PDU.
    datal / set_datal: u32;
);

/// DATAL (offset 16) must equal the data actually carried.
pub(super) fn check_fields(frame: &Frame, h: &[u8]) -> Result<(), FatalError> {
    let datal = H2CDataView::new_unchecked(h).datal();
    if datal != frame.data_len() {
        return Err(FatalError::header_field(
            frame.pdu_type as u8,
            16,
            FatalReason::BadField {
                field: "DATAL",
                value: datal,
            },
        ));
    }
    Ok(())
}

fn data_len_u32(data: &[u8]) -> u32 {
    u32::try_from(data.len()).unwrap_or(u32::MAX)
}

/// A parsed H2CData PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2CData<'a> {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    /// LAST_PDU: last PDU of the R2T window.
    pub last: bool,
    pub data: &'a [u8],
}

impl<'a> H2CData<'a> {
    pub fn from_header(frame: &Frame, header: &[u8], data: &'a [u8]) -> Result<Self, WireError> {
        let r: H2CDataRaw = read_prefix("H2CData", header)?;
        Ok(Self {
            cccid: r.cccid.get(),
            ttag: r.ttag.get(),
            datao: r.datao.get(),
            last: frame.flags & flags::LAST_PDU != 0,
            data,
        })
    }

    fn layout(&self, tx: &TxConfig) -> TxLayout {
        TxLayout::new(PduType::H2CData, data_len_u32(self.data), tx)
    }

    pub fn wire_len(&self, tx: &TxConfig) -> usize {
        self.layout(tx).plen as usize
    }

    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        let l = self.layout(tx);
        let raw = H2CDataRaw {
            ch: l
                .common_header(if self.last { flags::LAST_PDU } else { 0 })
                .to_raw(),
            cccid: U16::new(self.cccid),
            ttag: U16::new(self.ttag),
            datao: U32::new(self.datao),
            datal: U32::new(l.data_len),
            reserved: [0; 4],
        };
        l.emit(buf, raw.as_bytes(), self.data)
    }
}

impl fmt::Display for H2CData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "H2CData cccid={:#06x} ttag={} datao={} datal={}{}",
            self.cccid,
            self.ttag,
            self.datao,
            self.data.len(),
            if self.last { " LAST" } else { "" }
        )
    }
}

/// A parsed C2HData PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct C2HData<'a> {
    pub cccid: u16,
    pub datao: u32,
    /// LAST_PDU: last data PDU of the command.
    pub last: bool,
    /// SUCCESS: no CapsuleResp follows (requires `last`).
    pub success: bool,
    pub data: &'a [u8],
}

impl<'a> C2HData<'a> {
    pub fn from_header(frame: &Frame, header: &[u8], data: &'a [u8]) -> Result<Self, WireError> {
        let r: C2HDataRaw = read_prefix("C2HData", header)?;
        Ok(Self {
            cccid: r.cccid.get(),
            datao: r.datao.get(),
            last: frame.flags & flags::LAST_PDU != 0,
            success: frame.flags & flags::SUCCESS != 0,
            data,
        })
    }

    fn layout(&self, tx: &TxConfig) -> TxLayout {
        TxLayout::new(PduType::C2HData, data_len_u32(self.data), tx)
    }

    pub fn wire_len(&self, tx: &TxConfig) -> usize {
        self.layout(tx).plen as usize
    }

    /// The header (with digest and padding) for a C2HData of `data_len` bytes, for senders
    /// that write the data from their own buffer (then [`TxLayout::data_digest`]).
    pub fn emit_prefix(
        &self,
        buf: &mut [u8],
        tx: &TxConfig,
    ) -> Result<(TxLayout, usize), WireError> {
        let l = self.layout(tx);
        let n = l.emit_prefix(buf, self.header_raw(&l)?.as_bytes())?;
        Ok((l, n))
    }

    fn header_raw(&self, l: &TxLayout) -> Result<C2HDataRaw, WireError> {
        if self.success && !self.last {
            return Err(WireError::InvalidField {
                structure: "C2HData",
                field: "FLAGS (SUCCESS without LAST_PDU)",
                offset: 1,
                value: u64::from(flags::SUCCESS),
            });
        }
        let extra = (if self.last { flags::LAST_PDU } else { 0 })
            | (if self.success { flags::SUCCESS } else { 0 });
        Ok(C2HDataRaw {
            ch: l.common_header(extra).to_raw(),
            cccid: U16::new(self.cccid),
            reserved0: [0; 2],
            datao: U32::new(self.datao),
            datal: U32::new(l.data_len),
            reserved: [0; 4],
        })
    }

    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        let l = self.layout(tx);
        l.emit(buf, self.header_raw(&l)?.as_bytes(), self.data)
    }
}

impl fmt::Display for C2HData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "C2HData cccid={:#06x} datao={} datal={}{}{}",
            self.cccid,
            self.datao,
            self.data.len(),
            if self.last { " LAST" } else { "" },
            if self.success { " SUCCESS" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{digest, Digests, Pdu, PduError, RxConfig};
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn h2c_by_hand() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut b = vec![0u8; 24 + 8];
        b[0] = 6;
        b[1] = flags::LAST_PDU;
        b[2] = 24;
        b[3] = 24;
        put32(&mut b, 4, 32);
        put16(&mut b, 8, 0x1003);
        put16(&mut b, 10, 7);
        put32(&mut b, 12, 4096);
        put32(&mut b, 16, 8);
        b[24..].copy_from_slice(&data);
        let want = H2CData {
            cccid: 0x1003,
            ttag: 7,
            datao: 4096,
            last: true,
            data: &data,
        };
        let rx = RxConfig::controller();
        assert_eq!(Pdu::parse(&b, &rx).unwrap(), (Pdu::H2CData(want), 32));
        let mut out = vec![0u8; want.wire_len(&TxConfig::default())];
        want.emit(&mut out, &TxConfig::default()).unwrap();
        assert_eq!(out, b);
        let v = H2CDataView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.cccid(), v.ttag(), v.datao(), v.datal()),
            (0x1003, 7, 4096, 8)
        );
        // DATAL disagreeing with PLEN is fatal (FEI 16).
        put32(&mut b, 16, 9);
        assert!(matches!(Pdu::parse(&b, &rx), Err(PduError::Fatal(e)) if e.fei == 16));
        // DATAL beyond MAXH2CDATA: FES 0x05.
        let small = RxConfig {
            max_data_len: 4,
            ..rx
        };
        put32(&mut b, 16, 8);
        assert!(matches!(
            Pdu::parse(&b, &small),
            Err(PduError::Fatal(e)) if e.fes == super::super::Fes::LimitExceeded
        ));
        assert!(want.to_string().contains("LAST"));
    }

    #[test]
    fn c2h_with_digests_and_success() {
        let data = [9u8; 12];
        let tx = TxConfig {
            digests: Digests::BOTH,
            pda: 0,
        };
        let p = C2HData {
            cccid: 5,
            datao: 0,
            last: true,
            success: true,
            data: &data,
        };
        let mut out = vec![0u8; p.wire_len(&tx)];
        assert_eq!(out.len(), 24 + 4 + 12 + 4);
        p.emit(&mut out, &tx).unwrap();
        assert_eq!(&out[..4], &[7, 0x0F, 24, 28]);
        assert_eq!(
            u32::from_le_bytes(out[24..28].try_into().unwrap()),
            digest(&out[..24])
        );
        assert_eq!(&out[28..40], &data);
        assert_eq!(
            u32::from_le_bytes(out[40..44].try_into().unwrap()),
            digest(&data)
        );
        let rx = RxConfig {
            digests: Digests::BOTH,
            ..RxConfig::host()
        };
        assert_eq!(Pdu::parse(&out, &rx).unwrap().0, Pdu::C2HData(p));
        // Prefix-only emission matches the start of the whole PDU.
        let mut pre = [0u8; 64];
        let (l, n) = p.emit_prefix(&mut pre, &tx).unwrap();
        assert_eq!((n, l.ddgst), (28, true));
        assert_eq!(&pre[..n], &out[..n]);
        assert_eq!(TxLayout::data_digest(&data), out[40..44]);
        // SUCCESS without LAST_PDU cannot be emitted.
        let bad = C2HData { last: false, ..p };
        assert!(bad.emit(&mut out, &tx).is_err());
        let v = C2HDataView::new_checked(&out[..]).unwrap();
        assert_eq!((v.cccid(), v.datao(), v.datal()), (5, 0, 12));
    }
}

//! NVMe/TCP PDUs: common header, per-type PDUs, digests, validation and framing.
//!
//! ```text
//! | CH (8 B) | PSH (HLEN-8 B) | [HDGST 4 B] | [PAD] | [DATA] | [DDGST 4 B] |
//!  <------------- HLEN ----------->
//!  <---------------------------------- PLEN ------------------------------->
//! ```
//! CH: `PDU-TYPE(1) FLAGS(1) HLEN(1) PDO(1) PLEN(4, LE)`.
//!
//! Receive-side checks run in a fixed order (spec §2.13) and stop at the first failure:
//! 1. type known and sent in our receive direction (FES 0x01, FEI 0);
//! 2. HLEN equals the fixed value of the type (FEI 2);
//! 3. PLEN consistent with the type and within the configured limits (FEI 4; data beyond
//!    the limit: FES 0x05);
//! 4. HDGSTF / DDGSTF presence as negotiated, TermReq/IC flags zero (FEI 1);
//! 5. header digest (FES 0x03);
//! 6. PDO within `[HLEN+hdgst, PLEN)` and aligned to the negotiated PDA (FEI 3);
//! 7. PDU-specific header fields (PFV, HPDA, DATAL, SUCCESS without LAST_PDU, R2TL...);
//! 8. data digest — the only non-fatal failure ([`PduError::DataDigest`]): the stream stays
//!    in sync and the command can be completed with Transient Transport Error.
//!
//! Checks 1–4 need only the 8-byte common header, so a streaming receiver refuses an
//! oversized PDU before buffering any of it (bounded memory).
//!
//! Invariants: no input makes these functions panic; every fatal error carries the FES and
//! FEI a C2HTermReq must report.

pub mod capsule;
pub mod data;
pub mod decoder;
pub mod ic;
pub mod r2t;
pub mod term;

use core::fmt;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{assert_layout, define_view, view_accessors, write_prefix, WireError};

pub use capsule::{CapsuleCmd, CapsuleResp, SglDataCheck};
pub use data::{C2HData, H2CData};
pub use decoder::PduDecoder;
pub use ic::{IcReq, IcResp};
pub use r2t::R2t;
pub use term::{TermDir, TermReq};

/// Length of the common header.
pub const CH_LEN: usize = 8;
/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// Most bytes of an offending header a TermReq carries.
pub const TERM_MAX_HEADER: usize = 128;

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    IcReq = 0x00,
    IcResp = 0x01,
    H2CTermReq = 0x02,
    C2HTermReq = 0x03,
    CapsuleCmd = 0x04,
    CapsuleResp = 0x05,
    H2CData = 0x06,
    C2HData = 0x07,
    R2T = 0x09,
}

impl PduType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2CTermReq,
            0x03 => Self::C2HTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2CData,
            0x07 => Self::C2HData,
            0x09 => Self::R2T,
            _ => return None,
        })
    }

    /// The fixed HLEN of the type.
    pub const fn hlen(self) -> u8 {
        match self {
            Self::IcReq | Self::IcResp => 128,
            Self::CapsuleCmd => 72,
            _ => 24,
        }
    }

    /// Whether the type carries a header digest when header digests are negotiated.
    pub const fn digest_capable(self) -> bool {
        matches!(
            self,
            Self::CapsuleCmd | Self::CapsuleResp | Self::H2CData | Self::C2HData | Self::R2T
        )
    }

    /// Whether the type may carry data (after the header).
    pub const fn carries_data(self) -> bool {
        matches!(
            self,
            Self::H2CTermReq | Self::C2HTermReq | Self::CapsuleCmd | Self::H2CData | Self::C2HData
        )
    }

    /// Whether the host sends this type (otherwise the controller does).
    pub const fn host_to_controller(self) -> bool {
        matches!(
            self,
            Self::IcReq | Self::H2CTermReq | Self::CapsuleCmd | Self::H2CData
        )
    }
}

impl fmt::Display for PduType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IcReq => "ICReq",
            Self::IcResp => "ICResp",
            Self::H2CTermReq => "H2CTermReq",
            Self::C2HTermReq => "C2HTermReq",
            Self::CapsuleCmd => "CapsuleCmd",
            Self::CapsuleResp => "CapsuleResp",
            Self::H2CData => "H2CData",
            Self::C2HData => "C2HData",
            Self::R2T => "R2T",
        })
    }
}

/// CH FLAGS bits.
pub mod flags {
    /// A header digest follows the header.
    pub const HDGSTF: u8 = 1 << 0;
    /// A data digest follows the data.
    pub const DDGSTF: u8 = 1 << 1;
    /// Last data PDU of the transfer (H2C: of the R2T window; C2H: of the command).
    pub const LAST_PDU: u8 = 1 << 2;
    /// C2HData only: command succeeded, no CapsuleResp follows.
    pub const SUCCESS: u8 = 1 << 3;
}

/// Zerocopy layout of the common header.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ChRaw {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: U32,
}
assert_layout!(ChRaw, 8; pdu_type @ 0, flags @ 1, hlen @ 2, pdo @ 3, plen @ 4);

define_view!(
    /// Zero-copy view of a PDU common header.
    ChView, ChRaw, "PDU common header"
);
view_accessors!(ChView;
    /// PDU-TYPE.
    pdu_type / set_pdu_type: u8;
    /// FLAGS.
    flags / set_flags: u8;
    /// HLEN: CH + PSH length.
    hlen / set_hlen: u8;
    /// PDO: offset of the data from the start of the PDU.
    pdo / set_pdo: u8;
    /// PLEN: total PDU length.
    plen / set_plen: u32;
);

/// A parsed common header (no validation beyond length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    /// Parses the first 8 bytes of `bytes` (a PDU may follow).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: ChRaw = super::read_prefix("PDU common header", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    pub fn from_raw(r: &ChRaw) -> Self {
        Self {
            pdu_type: r.pdu_type,
            flags: r.flags,
            hlen: r.hlen,
            pdo: r.pdo,
            plen: r.plen.get(),
        }
    }

    pub fn to_raw(&self) -> ChRaw {
        ChRaw {
            pdu_type: self.pdu_type,
            flags: self.flags,
            hlen: self.hlen,
            pdo: self.pdo,
            plen: U32::new(self.plen),
        }
    }

    /// Writes the 8 bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("PDU common header", buf, self.to_raw().as_bytes())
    }
}

impl fmt::Display for CommonHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match PduType::from_u8(self.pdu_type) {
            Some(t) => write!(f, "{t}")?,
            None => write!(f, "type {:#04x}", self.pdu_type)?,
        }
        write!(
            f,
            " flags={:#04x} hlen={} pdo={} plen={}",
            self.flags, self.hlen, self.pdo, self.plen
        )
    }
}

/// Negotiated digests (ICReq/ICResp DGST byte: bit 0 header, bit 1 data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

impl Digests {
    pub const NONE: Self = Self {
        header: false,
        data: false,
    };
    pub const BOTH: Self = Self {
        header: true,
        data: true,
    };

    /// From the DGST byte (reserved bits ignored).
    pub const fn from_bits(b: u8) -> Self {
        Self {
            header: b & 1 != 0,
            data: b & 2 != 0,
        }
    }

    /// The DGST byte.
    pub const fn bits(self) -> u8 {
        (self.header as u8) | ((self.data as u8) << 1)
    }
}

/// CRC-32C (Castagnoli, reflected, init and final XOR 0xFFFFFFFF), used for both digests.
pub fn digest(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Fatal Error Status of a TermReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Fes {
    InvalidHeaderField = 0x01,
    PduSequenceError = 0x02,
    HeaderDigestError = 0x03,
    DataOutOfRange = 0x04,
    /// R2T Limit Exceeded (C→H) / Data Transfer Limit Exceeded (H→C).
    LimitExceeded = 0x05,
    UnsupportedParameter = 0x06,
}

impl Fes {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x01 => Self::InvalidHeaderField,
            0x02 => Self::PduSequenceError,
            0x03 => Self::HeaderDigestError,
            0x04 => Self::DataOutOfRange,
            0x05 => Self::LimitExceeded,
            0x06 => Self::UnsupportedParameter,
            _ => return None,
        })
    }

    pub const fn code(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for Fes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::InvalidHeaderField => "Invalid PDU Header Field",
            Self::PduSequenceError => "PDU Sequence Error",
            Self::HeaderDigestError => "Header Digest Error",
            Self::DataOutOfRange => "Data Transfer Out of Range",
            Self::LimitExceeded => "Data Transfer Limit Exceeded",
            Self::UnsupportedParameter => "Unsupported Parameter",
        };
        write!(f, "{:#04x} {name}", self.code())
    }
}

/// Why a received PDU is fatal to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FatalReason {
    UnknownType,
    /// A known type that only the other side may send.
    WrongDirection,
    /// A valid PDU not allowed in the connection's current state (e.g. no ICReq yet).
    OutOfSequence,
    BadHlen {
        expected: u8,
    },
    BadPlen,
    BadFlags,
    HeaderDigest {
        expected: u32,
        actual: u32,
    },
    BadPdo,
    /// A PDU-specific header field (named) is invalid.
    BadField {
        field: &'static str,
        value: u32,
    },
    /// The data would exceed the configured limit.
    DataTooLong {
        len: u64,
        max: u64,
    },
}

/// A fatal receive error: the connection must send a C2HTermReq (or close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fatal NVMe/TCP error FES {fes}, FEI {fei}: {reason:?} in PDU type {pdu_type:#04x}")]
pub struct FatalError {
    pub fes: Fes,
    /// Fatal Error Information: for FES 0x01/0x06 the byte offset of the bad field.
    pub fei: u32,
    pub reason: FatalReason,
    /// PDU-TYPE byte of the offending PDU.
    pub pdu_type: u8,
}

impl FatalError {
    fn header_field(pdu_type: u8, fei: u32, reason: FatalReason) -> Self {
        Self {
            fes: Fes::InvalidHeaderField,
            fei,
            reason,
            pdu_type,
        }
    }
}

/// A data digest mismatch; the PDU was consumed and the stream is still in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data digest mismatch in {pdu_type} cccid={cccid:#06x}: expected {expected:#010x}, got {actual:#010x}")]
pub struct DataDigestError {
    pub pdu_type: PduType,
    /// Command identifier of the affected command.
    pub cccid: u16,
    /// H2CData: transfer tag; otherwise 0.
    pub ttag: u16,
    /// H2CData: the PDU's data offset and length (the stream stays in sync, so the
    /// receiver can account for the bytes); otherwise 0.
    pub datao: u32,
    pub datal: u32,
    pub expected: u32,
    pub actual: u32,
}

/// Errors from receiving a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The buffer does not yet hold the whole PDU (whole-buffer parsing only).
    #[error("incomplete PDU: need {need} bytes")]
    Incomplete { need: u64 },
    #[error(transparent)]
    Fatal(#[from] FatalError),
    #[error(transparent)]
    DataDigest(#[from] DataDigestError),
}

impl PduError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }
}

/// Which side of the connection is receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives host-to-controller PDUs (ICReq, H2CTermReq, CapsuleCmd, H2CData).
    Controller,
    /// Receives controller-to-host PDUs (ICResp, C2HTermReq, CapsuleResp, C2HData, R2T).
    Host,
}

/// Receive parameters of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxConfig {
    pub role: Role,
    pub digests: Digests,
    /// PDU data alignment we require of the peer (CPDA we sent, or the host's HPDA), 0-based
    /// dwords: PDO must be a multiple of `(pda + 1) * 4`.
    pub pda: u8,
    /// Largest in-capsule data accepted in a CapsuleCmd.
    pub max_icd_len: u32,
    /// Largest data in one H2CData (MAXH2CDATA) or C2HData PDU.
    pub max_data_len: u32,
}

impl RxConfig {
    /// Controller defaults before ICReq: no digests, CPDA 0, 8 KiB ICD, 128 KiB H2C data.
    pub const fn controller() -> Self {
        Self {
            role: Role::Controller,
            digests: Digests::NONE,
            pda: 0,
            max_icd_len: 8192,
            max_data_len: 128 * 1024,
        }
    }

    /// Host defaults before ICResp.
    pub const fn host() -> Self {
        Self {
            role: Role::Host,
            digests: Digests::NONE,
            pda: 0,
            max_icd_len: 0,
            max_data_len: 1024 * 1024,
        }
    }

    fn alignment(&self) -> u32 {
        (u32::from(self.pda.min(31)) + 1) * 4
    }

    fn max_data_for(&self, t: PduType) -> u32 {
        match t {
            PduType::H2CTermReq | PduType::C2HTermReq => TERM_MAX_HEADER as u32,
            PduType::CapsuleCmd => self.max_icd_len,
            PduType::H2CData | PduType::C2HData => self.max_data_len,
            _ => 0,
        }
    }

    /// Largest PLEN this configuration can accept (bounds a decoder's buffer).
    pub fn max_plen(&self) -> u64 {
        let types: &[PduType] = match self.role {
            Role::Controller => &[
                PduType::IcReq,
                PduType::H2CTermReq,
                PduType::CapsuleCmd,
                PduType::H2CData,
            ],
            Role::Host => &[
                PduType::IcResp,
                PduType::C2HTermReq,
                PduType::CapsuleResp,
                PduType::C2HData,
                PduType::R2T,
            ],
        };
        types
            .iter()
            .map(|&t| self.max_plen_for(t))
            .max()
            .unwrap_or(0)
    }

    fn max_plen_for(&self, t: PduType) -> u64 {
        match t {
            PduType::IcReq | PduType::IcResp => 128,
            PduType::H2CTermReq | PduType::C2HTermReq => 24 + TERM_MAX_HEADER as u64,
            _ => {
                let hd = if self.digests.header { 4 } else { 0 };
                let max_data = u64::from(self.max_data_for(t));
                if max_data == 0 {
                    return u64::from(t.hlen()) + hd;
                }
                let dd = if self.digests.data { 4 } else { 0 };
                let pdo = align_up(u64::from(t.hlen()) + hd, u64::from(self.alignment()));
                pdo + max_data + dd
            }
        }
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a.max(1)) * a.max(1)
}

/// What the common header says about the rest of the PDU (result of the CH checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub pdu_type: PduType,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
    /// A header digest follows the header.
    pub hdgst: bool,
    /// A data digest follows the data.
    pub ddgst: bool,
    /// The PDU carries data.
    pub has_data: bool,
}

impl Frame {
    /// HLEN plus the header digest: bytes to read before the header can be checked.
    pub fn header_len(&self) -> u32 {
        u32::from(self.hlen) + if self.hdgst { 4 } else { 0 }
    }

    /// Offset of the data (TermReq: right after the header, whatever PDO says).
    pub fn data_offset(&self) -> u32 {
        match self.pdu_type {
            PduType::H2CTermReq | PduType::C2HTermReq => u32::from(self.hlen),
            _ if self.has_data => u32::from(self.pdo),
            _ => self.header_len(),
        }
    }

    /// Data length (0 without data); valid after [`check_header`].
    pub fn data_len(&self) -> u32 {
        if !self.has_data {
            return 0;
        }
        let dd = if self.ddgst { 4 } else { 0 };
        self.plen
            .saturating_sub(self.data_offset())
            .saturating_sub(dd)
    }
}

/// Step 1–4: checks a common header against the receive configuration.
pub fn check_common_header(ch: &CommonHeader, cfg: &RxConfig) -> Result<Frame, FatalError> {
    let raw_type = ch.pdu_type;
    let Some(t) = PduType::from_u8(raw_type) else {
        return Err(FatalError::header_field(
            raw_type,
            0,
            FatalReason::UnknownType,
        ));
    };
    let ours = match cfg.role {
        Role::Controller => t.host_to_controller(),
        Role::Host => !t.host_to_controller(),
    };
    if !ours {
        return Err(FatalError::header_field(
            raw_type,
            0,
            FatalReason::WrongDirection,
        ));
    }
    if ch.hlen != t.hlen() {
        return Err(FatalError::header_field(
            raw_type,
            2,
            FatalReason::BadHlen { expected: t.hlen() },
        ));
    }
    let hd = t.digest_capable() && cfg.digests.header;
    let header_len = u64::from(t.hlen()) + if hd { 4 } else { 0 };
    let plen = u64::from(ch.plen);
    let bad_plen = FatalError::header_field(raw_type, 4, FatalReason::BadPlen);
    let has_data = match t {
        PduType::IcReq | PduType::IcResp => {
            if plen != 128 {
                return Err(bad_plen);
            }
            false
        }
        PduType::H2CTermReq | PduType::C2HTermReq => {
            if !(24..=24 + TERM_MAX_HEADER as u64).contains(&plen) {
                return Err(bad_plen);
            }
            plen > 24
        }
        PduType::CapsuleResp | PduType::R2T => {
            if plen != header_len {
                return Err(bad_plen);
            }
            false
        }
        PduType::CapsuleCmd => {
            if plen < header_len {
                return Err(bad_plen);
            }
            plen > header_len
        }
        PduType::H2CData | PduType::C2HData => {
            if plen <= header_len {
                return Err(bad_plen);
            }
            true
        }
    };
    let dd = has_data && t.digest_capable() && cfg.digests.data;
    if has_data && !matches!(t, PduType::H2CTermReq | PduType::C2HTermReq) {
        // Cheapest possible data: PDO right after the header, no padding.
        let min_overhead = header_len + if dd { 4 } else { 0 };
        if plen <= min_overhead {
            return Err(bad_plen);
        }
        let max = cfg.max_plen_for(t);
        if plen > max {
            let max_data = u64::from(cfg.max_data_for(t));
            return Err(FatalError {
                fes: Fes::LimitExceeded,
                fei: 0,
                reason: FatalReason::DataTooLong {
                    len: plen - min_overhead,
                    max: max_data,
                },
                pdu_type: raw_type,
            });
        }
    }
    let bad_flags = FatalError::header_field(raw_type, 1, FatalReason::BadFlags);
    if t.digest_capable() {
        if (ch.flags & flags::HDGSTF != 0) != hd || (ch.flags & flags::DDGSTF != 0) != dd {
            return Err(bad_flags);
        }
    } else if ch.flags != 0 {
        return Err(bad_flags);
    }
    if t == PduType::C2HData && ch.flags & flags::SUCCESS != 0 && ch.flags & flags::LAST_PDU == 0 {
        return Err(bad_flags);
    }
    Ok(Frame {
        pdu_type: t,
        flags: ch.flags,
        hlen: ch.hlen,
        pdo: ch.pdo,
        plen: ch.plen,
        hdgst: hd,
        ddgst: dd,
        has_data,
    })
}

/// Steps 5–7: checks the header digest, PDO and the PDU-specific header fields.
/// `header` holds at least `frame.header_len()` bytes of the PDU.
pub fn check_header(frame: &Frame, header: &[u8], cfg: &RxConfig) -> Result<(), FatalError> {
    let raw_type = frame.pdu_type as u8;
    let hlen = usize::from(frame.hlen);
    let Some(h) = header.get(..hlen) else {
        return Err(FatalError::header_field(raw_type, 4, FatalReason::BadPlen));
    };
    if frame.hdgst {
        let expected = digest(h);
        let actual = header
            .get(hlen..hlen + 4)
            .and_then(|d| d.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        if expected != actual {
            return Err(FatalError {
                fes: Fes::HeaderDigestError,
                fei: 0,
                reason: FatalReason::HeaderDigest { expected, actual },
                pdu_type: raw_type,
            });
        }
    }
    let t = frame.pdu_type;
    if frame.has_data && !matches!(t, PduType::H2CTermReq | PduType::C2HTermReq) {
        let pdo = u32::from(frame.pdo);
        let dd = if frame.ddgst { 4 } else { 0 };
        if pdo < frame.header_len()
            || pdo % cfg.alignment() != 0
            || u64::from(pdo) + dd >= u64::from(frame.plen)
        {
            return Err(FatalError::header_field(raw_type, 3, FatalReason::BadPdo));
        }
        let len = frame.data_len();
        let max = cfg.max_data_for(t);
        if len > max {
            return Err(FatalError {
                fes: Fes::LimitExceeded,
                fei: 0,
                reason: FatalReason::DataTooLong {
                    len: u64::from(len),
                    max: u64::from(max),
                },
                pdu_type: raw_type,
            });
        }
    } else if (t == PduType::IcReq || t == PduType::IcResp) && frame.pdo != 0 {
        return Err(FatalError::header_field(raw_type, 3, FatalReason::BadPdo));
    }
    match t {
        PduType::IcReq => ic::check_icreq_fields(h),
        PduType::IcResp => ic::check_icresp_fields(h),
        PduType::H2CData | PduType::C2HData => data::check_fields(frame, h),
        PduType::R2T => r2t::check_fields(h),
        _ => Ok(()),
    }
}

/// A parsed PDU. Data-bearing variants borrow their data from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu<'a> {
    IcReq(IcReq),
    IcResp(IcResp),
    TermReq(TermReq<'a>),
    CapsuleCmd(CapsuleCmd<'a>),
    CapsuleResp(CapsuleResp),
    H2CData(H2CData<'a>),
    C2HData(C2HData<'a>),
    R2T(R2t),
}

impl<'a> Pdu<'a> {
    pub fn pdu_type(&self) -> PduType {
        match self {
            Self::IcReq(_) => PduType::IcReq,
            Self::IcResp(_) => PduType::IcResp,
            Self::TermReq(t) => t.dir.pdu_type(),
            Self::CapsuleCmd(_) => PduType::CapsuleCmd,
            Self::CapsuleResp(_) => PduType::CapsuleResp,
            Self::H2CData(_) => PduType::H2CData,
            Self::C2HData(_) => PduType::C2HData,
            Self::R2T(_) => PduType::R2T,
        }
    }

    /// Parses one complete PDU from the start of `bytes`, returning it and its length
    /// (PLEN). Bytes after PLEN are ignored.
    pub fn parse(bytes: &'a [u8], cfg: &RxConfig) -> Result<(Self, u32), PduError> {
        let ch = CommonHeader::parse(bytes).map_err(|_| PduError::Incomplete {
            need: CH_LEN as u64,
        })?;
        let frame = check_common_header(&ch, cfg)?;
        let need = frame.header_len() as usize;
        if bytes.len() < need {
            return Err(PduError::Incomplete { need: need as u64 });
        }
        check_header(&frame, bytes, cfg)?;
        let plen = frame.plen as usize;
        let Some(whole) = bytes.get(..plen) else {
            return Err(PduError::Incomplete { need: plen as u64 });
        };
        Ok((Self::build(&frame, whole)?, frame.plen))
    }

    /// Builds a PDU from `whole` (exactly PLEN bytes) whose header passed
    /// [`check_common_header`] and [`check_header`]; verifies the data digest.
    pub fn build(frame: &Frame, whole: &'a [u8]) -> Result<Self, PduError> {
        let off = frame.data_offset() as usize;
        let len = frame.data_len() as usize;
        let data = whole.get(off..off + len).unwrap_or_default();
        let header = whole.get(..usize::from(frame.hlen)).unwrap_or_default();
        let trunc = |_| PduError::Incomplete {
            need: u64::from(frame.plen),
        };
        let pdu = match frame.pdu_type {
            PduType::IcReq => Self::IcReq(IcReq::parse(header).map_err(trunc)?),
            PduType::IcResp => Self::IcResp(IcResp::parse(header).map_err(trunc)?),
            PduType::H2CTermReq | PduType::C2HTermReq => {
                Self::TermReq(TermReq::parse(whole).map_err(trunc)?)
            }
            PduType::CapsuleCmd => {
                Self::CapsuleCmd(CapsuleCmd::from_header(header, data).map_err(trunc)?)
            }
            PduType::CapsuleResp => {
                Self::CapsuleResp(CapsuleResp::from_header(header).map_err(trunc)?)
            }
            PduType::H2CData => {
                Self::H2CData(H2CData::from_header(frame, header, data).map_err(trunc)?)
            }
            PduType::C2HData => {
                Self::C2HData(C2HData::from_header(frame, header, data).map_err(trunc)?)
            }
            PduType::R2T => Self::R2T(R2t::from_header(header).map_err(trunc)?),
        };
        if frame.ddgst {
            let expected = digest(data);
            let actual = whole
                .get(off + len..off + len + 4)
                .and_then(|d| d.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            if expected != actual {
                let (cccid, ttag, datao, datal) = match &pdu {
                    Self::CapsuleCmd(c) => (c.sqe.cid, 0, 0, 0),
                    Self::H2CData(d) => (d.cccid, d.ttag, d.datao, d.data.len() as u32),
                    Self::C2HData(d) => (d.cccid, 0, 0, 0),
                    _ => (0, 0, 0, 0),
                };
                return Err(PduError::DataDigest(DataDigestError {
                    pdu_type: frame.pdu_type,
                    cccid,
                    ttag,
                    datao,
                    datal,
                    expected,
                    actual,
                }));
            }
        }
        Ok(pdu)
    }

    /// Bytes [`Pdu::emit`] writes.
    pub fn wire_len(&self, tx: &TxConfig) -> usize {
        match self {
            Self::IcReq(_) | Self::IcResp(_) => 128,
            Self::TermReq(t) => t.wire_len(),
            Self::CapsuleCmd(c) => c.wire_len(tx),
            Self::CapsuleResp(_) => TxLayout::new(PduType::CapsuleResp, 0, tx).plen as usize,
            Self::H2CData(d) => d.wire_len(tx),
            Self::C2HData(d) => d.wire_len(tx),
            Self::R2T(_) => TxLayout::new(PduType::R2T, 0, tx).plen as usize,
        }
    }

    /// Writes the whole PDU (header, digests, padding, data) at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8], tx: &TxConfig) -> Result<usize, WireError> {
        match self {
            Self::IcReq(p) => p.emit(buf),
            Self::IcResp(p) => p.emit(buf),
            Self::TermReq(p) => p.emit(buf),
            Self::CapsuleCmd(p) => p.emit(buf, tx),
            Self::CapsuleResp(p) => p.emit(buf, tx),
            Self::H2CData(p) => p.emit(buf, tx),
            Self::C2HData(p) => p.emit(buf, tx),
            Self::R2T(p) => p.emit(buf, tx),
        }
    }
}

impl fmt::Display for Pdu<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IcReq(p) => p.fmt(f),
            Self::IcResp(p) => p.fmt(f),
            Self::TermReq(p) => p.fmt(f),
            Self::CapsuleCmd(p) => p.fmt(f),
            Self::CapsuleResp(p) => p.fmt(f),
            Self::H2CData(p) => p.fmt(f),
            Self::C2HData(p) => p.fmt(f),
            Self::R2T(p) => p.fmt(f),
        }
    }
}

/// Send parameters of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxConfig {
    pub digests: Digests,
    /// Data alignment the peer asked for (HPDA when the controller sends, CPDA when the host
    /// sends), 0-based dwords.
    pub pda: u8,
}

/// Where everything goes in a PDU being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLayout {
    pub pdu_type: PduType,
    /// HDGSTF/DDGSTF bits for the CH.
    pub digest_flags: u8,
    pub hlen: u8,
    /// PDO for the CH (0 without data).
    pub pdo: u8,
    pub plen: u32,
    /// Offset of the data (equals `pdo` when there is data).
    pub data_offset: u32,
    pub data_len: u32,
    pub hdgst: bool,
    pub ddgst: bool,
}

impl TxLayout {
    /// Layout of a digest-capable PDU with `data_len` bytes of data. Saturates PLEN at
    /// `u32::MAX` for absurd lengths (emit then fails on the buffer size).
    pub fn new(pdu_type: PduType, data_len: u32, tx: &TxConfig) -> Self {
        let hlen = pdu_type.hlen();
        let hdgst = pdu_type.digest_capable() && tx.digests.header;
        let ddgst = pdu_type.digest_capable() && tx.digests.data && data_len > 0;
        let header_len = u32::from(hlen) + if hdgst { 4 } else { 0 };
        let align = (u32::from(tx.pda.min(31)) + 1) * 4;
        let data_offset = if data_len > 0 {
            header_len.div_ceil(align) * align
        } else {
            header_len
        };
        let plen = u64::from(data_offset) + u64::from(data_len) + if ddgst { 4 } else { 0 };
        Self {
            pdu_type,
            digest_flags: (if hdgst { flags::HDGSTF } else { 0 })
                | (if ddgst { flags::DDGSTF } else { 0 }),
            hlen,
            pdo: if data_len > 0 {
                u8::try_from(data_offset).unwrap_or(u8::MAX)
            } else {
                0
            },
            plen: u32::try_from(plen).unwrap_or(u32::MAX),
            data_offset,
            data_len,
            hdgst,
            ddgst,
        }
    }

    /// The common header for this layout with extra flag bits.
    pub fn common_header(&self, extra_flags: u8) -> CommonHeader {
        CommonHeader {
            pdu_type: self.pdu_type as u8,
            flags: self.digest_flags | extra_flags,
            hlen: self.hlen,
            pdo: self.pdo,
            plen: self.plen,
        }
    }

    /// Bytes before the data: header, header digest and padding.
    pub fn prefix_len(&self) -> usize {
        if self.data_len > 0 {
            self.data_offset as usize
        } else {
            self.plen as usize
        }
    }

    /// Writes the header (whose CH must already be filled in, `header.len() == hlen`), the
    /// header digest and the padding. The caller sends the data and then
    /// [`TxLayout::data_digest`] if `ddgst`. Returns the bytes written.
    pub fn emit_prefix(&self, buf: &mut [u8], header: &[u8]) -> Result<usize, WireError> {
        let n = self.prefix_len();
        let Some(out) = buf.get_mut(..n) else {
            return Err(WireError::Truncated {
                structure: "PDU",
                need: n as u64,
                got: buf.len() as u64,
            });
        };
        out.fill(0);
        write_prefix("PDU", out, header)?;
        if self.hdgst {
            let h = usize::from(self.hlen);
            let d = digest(header).to_le_bytes();
            write_prefix("PDU", out.get_mut(h..).unwrap_or_default(), &d)?;
        }
        Ok(n)
    }

    /// The data digest bytes for `data` (send after the data when `ddgst`).
    pub fn data_digest(data: &[u8]) -> [u8; 4] {
        digest(data).to_le_bytes()
    }

    /// Writes the whole PDU: header, digest, padding, `data` and its digest.
    pub fn emit(&self, buf: &mut [u8], header: &[u8], data: &[u8]) -> Result<usize, WireError> {
        if data.len() != self.data_len as usize {
            return Err(WireError::InvalidField {
                structure: "PDU",
                field: "data length",
                offset: 0,
                value: data.len() as u64,
            });
        }
        let total = self.plen as usize;
        if buf.len() < total {
            return Err(WireError::Truncated {
                structure: "PDU",
                need: total as u64,
                got: buf.len() as u64,
            });
        }
        let mut at = self.emit_prefix(buf, header)?;
        if !data.is_empty() {
            write_prefix("PDU", buf.get_mut(at..).unwrap_or_default(), data)?;
            at += data.len();
            if self.ddgst {
                write_prefix(
                    "PDU",
                    buf.get_mut(at..).unwrap_or_default(),
                    &Self::data_digest(data),
                )?;
                at += 4;
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sqe::Sqe;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(digest(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn common_header_layout() {
        let b = [0x04, 0x03, 72, 76, 0x10, 0x01, 0, 0];
        let ch = CommonHeader::parse(&b).unwrap();
        assert_eq!(
            ch,
            CommonHeader {
                pdu_type: 4,
                flags: 3,
                hlen: 72,
                pdo: 76,
                plen: 0x110
            }
        );
        let mut out = [0u8; 8];
        ch.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let v = ChView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.pdu_type(), v.flags(), v.hlen(), v.pdo(), v.plen()),
            (4, 3, 72, 76, 0x110)
        );
        assert_eq!(
            ch.to_string(),
            "CapsuleCmd flags=0x03 hlen=72 pdo=76 plen=272"
        );
        assert!(CommonHeader::parse(&b[..7]).is_err());
    }

    #[test]
    fn type_table() {
        for (v, hlen, dc) in [
            (0u8, 128u8, false),
            (1, 128, false),
            (2, 24, false),
            (3, 24, false),
            (4, 72, true),
            (5, 24, true),
            (6, 24, true),
            (7, 24, true),
            (9, 24, true),
        ] {
            let t = PduType::from_u8(v).unwrap();
            assert_eq!(t as u8, v);
            assert_eq!(t.hlen(), hlen);
            assert_eq!(t.digest_capable(), dc);
        }
        assert_eq!(PduType::from_u8(8), None);
        assert_eq!(PduType::from_u8(0xFF), None);
    }

    fn ch(t: u8, fl: u8, hlen: u8, pdo: u8, plen: u32) -> CommonHeader {
        CommonHeader {
            pdu_type: t,
            flags: fl,
            hlen,
            pdo,
            plen,
        }
    }

    fn fei(r: Result<Frame, FatalError>) -> (Fes, u32) {
        let e = r.unwrap_err();
        (e.fes, e.fei)
    }

    #[test]
    fn common_header_checks_in_order() {
        let c = RxConfig::controller();
        assert_eq!(
            fei(check_common_header(&ch(8, 0, 24, 0, 24), &c)),
            (Fes::InvalidHeaderField, 0)
        );
        assert_eq!(
            fei(check_common_header(&ch(5, 0, 24, 0, 24), &c)),
            (Fes::InvalidHeaderField, 0)
        );
        assert_eq!(
            fei(check_common_header(&ch(4, 0, 24, 0, 72), &c)),
            (Fes::InvalidHeaderField, 2)
        );
        assert_eq!(
            fei(check_common_header(&ch(0, 0, 128, 0, 127), &c)),
            (Fes::InvalidHeaderField, 4)
        );
        assert_eq!(
            fei(check_common_header(&ch(4, 0, 72, 0, 71), &c)),
            (Fes::InvalidHeaderField, 4)
        );
        assert_eq!(
            fei(check_common_header(&ch(6, 0, 24, 24, 24), &c)),
            (Fes::InvalidHeaderField, 4)
        );
        assert_eq!(
            fei(check_common_header(&ch(2, 0, 24, 0, 153), &c)),
            (Fes::InvalidHeaderField, 4)
        );
        // Digest flag without negotiated digest.
        assert_eq!(
            fei(check_common_header(&ch(4, 1, 72, 0, 72), &c)),
            (Fes::InvalidHeaderField, 1)
        );
        assert_eq!(
            fei(check_common_header(&ch(0, 4, 128, 0, 128), &c)),
            (Fes::InvalidHeaderField, 1)
        );
        // ICD beyond 8 KiB.
        assert_eq!(
            fei(check_common_header(&ch(4, 0, 72, 72, 72 + 8193), &c)),
            (Fes::LimitExceeded, 0)
        );
        let f = check_common_header(&ch(4, 0, 72, 72, 72 + 8192), &c).unwrap();
        assert!(f.has_data);
        assert_eq!(f.data_len(), 8192);
        let mut dg = c;
        dg.digests = Digests::BOTH;
        // Digests negotiated: flags must be set.
        assert_eq!(
            fei(check_common_header(&ch(4, 0, 72, 0, 76), &dg)),
            (Fes::InvalidHeaderField, 1)
        );
        // No data: DDGSTF must be clear.
        assert_eq!(
            fei(check_common_header(&ch(4, 3, 72, 0, 76), &dg)),
            (Fes::InvalidHeaderField, 1)
        );
        assert!(check_common_header(&ch(4, 1, 72, 0, 76), &dg).is_ok());
        // Data digest but no room for data.
        assert_eq!(
            fei(check_common_header(&ch(6, 3, 24, 28, 32), &dg)),
            (Fes::InvalidHeaderField, 4)
        );
        let h = RxConfig::host();
        assert_eq!(
            fei(check_common_header(&ch(7, 8, 24, 24, 28), &h)),
            (Fes::InvalidHeaderField, 1)
        );
        assert!(check_common_header(&ch(7, 12, 24, 24, 28), &h).is_ok());
    }

    #[test]
    fn header_checks() {
        let c = RxConfig::controller();
        let mut b = vec![0u8; 72 + 8];
        ch(4, 0, 72, 76, 80).emit(&mut b).unwrap();
        let f = check_common_header(&CommonHeader::parse(&b).unwrap(), &c).unwrap();
        // PDO 76 is aligned; PDO 74 is not; PDO 70 is inside the header.
        assert!(check_header(&f, &b, &c).is_ok());
        for bad in [74u8, 70, 80, 0] {
            let f2 = Frame { pdo: bad, ..f };
            assert_eq!(check_header(&f2, &b, &c).unwrap_err().fei, 3, "pdo {bad}");
        }
        // Header digest.
        let mut dg = c;
        dg.digests = Digests::BOTH;
        let sqe = Sqe::new(0x06, 7, 1);
        let cmd = Pdu::CapsuleCmd(CapsuleCmd { sqe, data: &[] });
        let tx = TxConfig {
            digests: Digests::BOTH,
            pda: 0,
        };
        let mut w = vec![0u8; cmd.wire_len(&tx)];
        cmd.emit(&mut w, &tx).unwrap();
        assert_eq!(w.len(), 76);
        assert_eq!(Pdu::parse(&w, &dg).unwrap(), (cmd, 76));
        w[10] ^= 1;
        match Pdu::parse(&w, &dg) {
            Err(PduError::Fatal(e)) => assert_eq!((e.fes, e.fei), (Fes::HeaderDigestError, 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tx_layout_padding() {
        let tx = TxConfig {
            digests: Digests::BOTH,
            pda: 3,
        };
        let l = TxLayout::new(PduType::C2HData, 10, &tx);
        assert_eq!((l.pdo, l.data_offset, l.plen), (32, 32, 32 + 10 + 4));
        assert_eq!(l.digest_flags, 3);
        let l0 = TxLayout::new(PduType::CapsuleResp, 0, &tx);
        assert_eq!((l0.pdo, l0.plen, l0.digest_flags), (0, 28, 1));
        let big = TxLayout::new(PduType::C2HData, u32::MAX, &tx);
        assert_eq!(big.plen, u32::MAX);
    }

    #[test]
    fn incomplete() {
        let c = RxConfig::controller();
        assert_eq!(
            Pdu::parse(&[0u8; 5], &c),
            Err(PduError::Incomplete { need: 8 })
        );
        let mut b = [0u8; 128];
        ch(0, 0, 128, 0, 128).emit(&mut b).unwrap();
        assert_eq!(
            Pdu::parse(&b[..100], &c),
            Err(PduError::Incomplete { need: 128 })
        );
        assert!(Pdu::parse(&b, &c).is_ok());
    }

    #[test]
    fn max_plen() {
        let c = RxConfig::controller();
        assert_eq!(c.max_plen(), 128 * 1024 + 24);
        let h = RxConfig {
            max_data_len: 16,
            ..RxConfig::host()
        };
        assert_eq!(h.max_plen(), 152);
    }
}

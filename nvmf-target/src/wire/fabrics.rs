//! Fabrics commands (opcode 0x7F): Connect (+ 1024-byte Connect data and its response),
//! Property Get/Set, and the FCTYPE values.
//!
//! ```text
//! Connect SQE:  0 OPC | 1 FLAGS | 2 CID | 4 FCTYPE | 24 SGL1 | 40 RECFMT | 42 QID |
//!               44 SQSIZE | 46 CATTR | 48 KATO | 52..64 reserved
//! Connect data: 0 HOSTID(16) | 16 CNTLID | 256 SUBNQN(256) | 512 HOSTNQN(256) | 768 rsvd
//! Property SQE: 40 ATTRIB (bits 2:0 size) | 44 OFST | 48 VALUE (Set)
//! ```
//! Invariants: NQNs are read with forced NUL termination (at most 255 bytes) and must be
//! UTF-8; errors carry the byte offset the Connect response reports as IPO.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::cqe::Cqe;
use super::sgl::{SglDescriptor, SglRaw};
use super::sqe::{Sqe, FLAGS_PSDT_SGL, OPC_FABRICS};
use super::status::{CompletionStatus, Status};
use super::{
    assert_layout, define_view, nul_padded, nul_terminated, read_exact, view_accessors,
    write_prefix, WireError,
};

/// Fabrics command types (FCTYPE, SQE byte 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FabricsCommandType {
    PropertySet,
    Connect,
    PropertyGet,
    AuthSend,
    AuthReceive,
    Disconnect,
    Unknown(u8),
}

impl FabricsCommandType {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::PropertySet,
            0x01 => Self::Connect,
            0x04 => Self::PropertyGet,
            0x05 => Self::AuthSend,
            0x06 => Self::AuthReceive,
            0x08 => Self::Disconnect,
            other => Self::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::PropertySet => 0x00,
            Self::Connect => 0x01,
            Self::PropertyGet => 0x04,
            Self::AuthSend => 0x05,
            Self::AuthReceive => 0x06,
            Self::Disconnect => 0x08,
            Self::Unknown(v) => v,
        }
    }
}

impl fmt::Display for FabricsCommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(v) => write!(f, "FCTYPE {v:#04x}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Well-known NQN of the discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// CNTLID requesting the dynamic controller model.
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// CNTLID of the static controller model.
pub const CNTLID_STATIC: u16 = 0xFFFE;
/// Highest allocatable CNTLID.
pub const CNTLID_MAX: u16 = 0xFFEF;
/// Size of the Connect data.
pub const CONNECT_DATA_LEN: usize = 1024;
/// CATTR bit 2: the host disables SQ flow control.
pub const CATTR_DISABLE_SQ_FLOW: u8 = 1 << 2;

/// Zerocopy layout of a Connect SQE.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectCmdRaw {
    pub opcode: u8,
    pub flags: u8,
    pub cid: U16,
    pub fctype: u8,
    pub reserved1: [u8; 19],
    pub sgl: SglRaw,
    pub recfmt: U16,
    pub qid: U16,
    pub sqsize: U16,
    pub cattr: u8,
    pub reserved2: u8,
    pub kato: U32,
    pub reserved3: [u8; 12],
}
assert_layout!(ConnectCmdRaw, 64;
    opcode @ 0, flags @ 1, cid @ 2, fctype @ 4, sgl @ 24, recfmt @ 40, qid @ 42, sqsize @ 44,
    cattr @ 46, kato @ 48, reserved3 @ 52);

define_view!(
    /// Zero-copy view of a Connect SQE.
    ConnectCmdView, ConnectCmdRaw, "Connect command"
);
view_accessors!(ConnectCmdView;
    cid / set_cid: u16;
    fctype / set_fctype: u8;
    /// Record format, must be 0.
    recfmt / set_recfmt: u16;
    /// Queue id: 0 admin, 1..N I/O.
    qid / set_qid: u16;
    /// SQ size, 0-based.
    sqsize / set_sqsize: u16;
    /// Connect attributes (bit 2: disable SQ flow control).
    cattr / set_cattr: u8;
    /// Keep-alive timeout in milliseconds.
    kato / set_kato: u32;
);

/// Byte offsets reported as IPO in a Connect Invalid Parameters response.
pub mod ipo {
    /// In the SQE (IATTR 0).
    pub const RECFMT: u16 = 40;
    pub const QID: u16 = 42;
    pub const SQSIZE: u16 = 44;
    pub const CATTR: u16 = 46;
    pub const KATO: u16 = 48;
    /// In the Connect data (IATTR 1).
    pub const HOSTID: u16 = 0;
    pub const CNTLID: u16 = 16;
    pub const SUBNQN: u16 = 256;
    pub const HOSTNQN: u16 = 512;
}

/// A parsed Connect command (the SQE part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCommand {
    pub cid: u16,
    pub sgl: SglDescriptor,
    pub recfmt: u16,
    pub qid: u16,
    /// 0-based.
    pub sqsize: u16,
    pub cattr: u8,
    pub kato_ms: u32,
}

impl ConnectCommand {
    /// The Connect data length the SGL must describe.
    pub const DATA_LEN: u32 = CONNECT_DATA_LEN as u32;

    /// SQ flow control disabled by the host (CATTR bit 2).
    pub fn sq_flow_disabled(&self) -> bool {
        self.cattr & CATTR_DISABLE_SQ_FLOW != 0
    }

    /// Parses a 64-byte SQE that must be a Fabrics Connect.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: ConnectCmdRaw = read_exact("Connect command", bytes)?;
        if r.opcode != OPC_FABRICS {
            return Err(WireError::InvalidField {
                structure: "Connect command",
                field: "OPC",
                offset: 0,
                value: r.opcode.into(),
            });
        }
        if r.fctype != FabricsCommandType::Connect.code() {
            return Err(WireError::InvalidField {
                structure: "Connect command",
                field: "FCTYPE",
                offset: 4,
                value: r.fctype.into(),
            });
        }
        Ok(Self {
            cid: r.cid.get(),
            sgl: SglDescriptor::from_raw(&r.sgl),
            recfmt: r.recfmt.get(),
            qid: r.qid.get(),
            sqsize: r.sqsize.get(),
            cattr: r.cattr,
            kato_ms: r.kato.get(),
        })
    }

    /// Parses from an already parsed SQE.
    pub fn from_sqe(sqe: &Sqe) -> Result<Self, WireError> {
        Self::parse(&sqe.to_bytes())
    }

    fn to_raw(self) -> ConnectCmdRaw {
        ConnectCmdRaw {
            opcode: OPC_FABRICS,
            flags: FLAGS_PSDT_SGL,
            cid: U16::new(self.cid),
            fctype: FabricsCommandType::Connect.code(),
            reserved1: [0; 19],
            sgl: self.sgl.to_raw(),
            recfmt: U16::new(self.recfmt),
            qid: U16::new(self.qid),
            sqsize: U16::new(self.sqsize),
            cattr: self.cattr,
            reserved2: 0,
            kato: U32::new(self.kato_ms),
            reserved3: [0; 12],
        }
    }

    /// Writes the 64-byte SQE.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("Connect command", buf, self.to_raw().as_bytes())
    }

    /// As a generic SQE.
    pub fn to_sqe(&self) -> Sqe {
        sqe_from(self.to_raw().as_bytes())
    }
}

/// Re-reads a 64-byte fabrics layout as a generic SQE (same size: cannot fail).
fn sqe_from(bytes: &[u8]) -> Sqe {
    Sqe::parse(bytes).unwrap_or_default()
}

impl fmt::Display for ConnectCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Connect cid={:#06x} qid={} sqsize={} cattr={:#04x} kato={}ms recfmt={} {}",
            self.cid, self.qid, self.sqsize, self.cattr, self.kato_ms, self.recfmt, self.sgl
        )
    }
}

/// Zerocopy layout of the Connect data.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectDataRaw {
    pub hostid: [u8; 16],
    pub cntlid: U16,
    pub reserved1: [u8; 238],
    pub subnqn: [u8; 256],
    pub hostnqn: [u8; 256],
    pub reserved2: [u8; 256],
}
assert_layout!(ConnectDataRaw, 1024; hostid @ 0, cntlid @ 16, reserved1 @ 18, subnqn @ 256, hostnqn @ 512, reserved2 @ 768);

define_view!(
    /// Zero-copy view of the Connect data.
    ConnectDataView, ConnectDataRaw, "Connect data"
);
view_accessors!(ConnectDataView;
    /// 0xFFFF on the admin Connect; the allocated CNTLID on I/O Connects.
    cntlid / set_cntlid: u16;
);

impl<T: AsRef<[u8]>> ConnectDataView<T> {
    /// 128-bit host identifier.
    pub fn hostid(&self) -> &[u8] {
        self.raw().map_or(&[][..], |r| &r.hostid[..])
    }
    /// SUBNQN bytes up to the (forced) NUL terminator.
    pub fn subnqn(&self) -> &[u8] {
        self.raw().map_or(&[][..], |r| nul_terminated(&r.subnqn))
    }
    /// HOSTNQN bytes up to the (forced) NUL terminator.
    pub fn hostnqn(&self) -> &[u8] {
        self.raw().map_or(&[][..], |r| nul_terminated(&r.hostnqn))
    }
}

/// An NVMe Qualified Name (at most 255 bytes of UTF-8 on the wire, NUL excluded).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    /// Largest NQN that fits a 256-byte field with its NUL.
    pub const MAX_LEN: usize = 255;

    /// Validates a name: at most 255 bytes, no NUL.
    pub fn new(s: &str) -> Result<Self, WireError> {
        if s.len() > Self::MAX_LEN || s.contains('\0') {
            return Err(WireError::InvalidField {
                structure: "NQN",
                field: "NQN",
                offset: 0,
                value: s.len() as u64,
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// Reads a 256-byte NUL-terminated field; `offset` is where the field sits (for errors).
    pub fn from_field(field: &[u8], offset: u32) -> Result<Self, WireError> {
        let bytes = nul_terminated(field);
        match core::str::from_utf8(bytes) {
            Ok(s) => Ok(Self(s.to_owned())),
            Err(_) => Err(WireError::InvalidField {
                structure: "Connect data",
                field: "NQN (not UTF-8)",
                offset,
                value: bytes.len() as u64,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the well-known discovery NQN.
    pub fn is_discovery(&self) -> bool {
        self.0 == DISCOVERY_NQN
    }

    /// The 256-byte NUL-padded field.
    pub fn to_field(&self) -> [u8; 256] {
        nul_padded(&self.0)
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parsed Connect data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    pub hostid: [u8; 16],
    pub cntlid: u16,
    pub subnqn: Nqn,
    pub hostnqn: Nqn,
}

impl ConnectData {
    /// Parses exactly 1024 bytes (any other length is the caller's `0x00F` error).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: ConnectDataRaw = read_exact("Connect data", bytes)?;
        Ok(Self {
            hostid: r.hostid,
            cntlid: r.cntlid.get(),
            subnqn: Nqn::from_field(&r.subnqn, ipo::SUBNQN.into())?,
            hostnqn: Nqn::from_field(&r.hostnqn, ipo::HOSTNQN.into())?,
        })
    }

    /// Writes the 1024 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let raw = ConnectDataRaw {
            hostid: self.hostid,
            cntlid: U16::new(self.cntlid),
            reserved1: [0; 238],
            subnqn: self.subnqn.to_field(),
            hostnqn: self.hostnqn.to_field(),
            reserved2: [0; 256],
        };
        write_prefix("Connect data", buf, raw.as_bytes())
    }
}

impl fmt::Display for ConnectData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Connect data cntlid={:#06x} subnqn={} hostnqn={} hostid=",
            self.cntlid, self.subnqn, self.hostnqn
        )?;
        for b in self.hostid {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Where an invalid Connect parameter is: IATTR 0 = SQE, 1 = Connect data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidParam {
    pub in_data: bool,
    /// Byte offset of the offending field (IPO).
    pub ipo: u16,
}

impl InvalidParam {
    pub const fn sqe(ipo: u16) -> Self {
        Self {
            in_data: false,
            ipo,
        }
    }
    pub const fn data(ipo: u16) -> Self {
        Self { in_data: true, ipo }
    }
    /// CQE DW0: bits 15:0 IPO, bits 23:16 IATTR.
    pub const fn dw0(self) -> u32 {
        self.ipo as u32 | ((self.in_data as u32) << 16)
    }
    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            in_data: (dw0 >> 16) & 0xFF == 1,
            ipo: dw0 as u16,
        }
    }
}

/// The outcome of a Connect, as carried in its CQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResponse {
    Success {
        cntlid: u16,
        /// Authentication required (DW0 bit 17).
        atr: bool,
        /// Secure channel concatenation (DW0 bit 18).
        ascr: bool,
    },
    Failure {
        status: CompletionStatus,
        /// For Connect Invalid Parameters (0x182) and Invalid Host (0x184): IATTR/IPO.
        param: Option<InvalidParam>,
    },
}

impl ConnectResponse {
    pub const fn success(cntlid: u16) -> Self {
        Self::Success {
            cntlid,
            atr: false,
            ascr: false,
        }
    }

    /// Connect Invalid Parameters + DNR at `param`.
    pub const fn invalid_param(param: InvalidParam) -> Self {
        Self::Failure {
            status: Status::CONNECT_INVALID_PARAMETERS.dnr(),
            param: Some(param),
        }
    }

    /// Connect Invalid Host + DNR (IATTR 1, IPO 512).
    pub const fn invalid_host() -> Self {
        Self::Failure {
            status: Status::CONNECT_INVALID_HOST.dnr(),
            param: Some(InvalidParam::data(ipo::HOSTNQN)),
        }
    }

    /// The CQE (SQHD 0xFFFF is customary for Connect responses on TCP).
    pub fn to_cqe(&self, cid: u16, sqid: u16, sqhd: u16) -> Cqe {
        match *self {
            Self::Success { cntlid, atr, ascr } => Cqe {
                dw0: u32::from(cntlid) | (u32::from(atr) << 17) | (u32::from(ascr) << 18),
                ..Cqe::success(cid, sqid, sqhd)
            },
            Self::Failure { status, param } => Cqe {
                dw0: param.map_or(0, InvalidParam::dw0),
                ..Cqe::with_status(cid, sqid, sqhd, status)
            },
        }
    }

    /// Interprets a Connect CQE.
    pub fn from_cqe(cqe: &Cqe) -> Self {
        if cqe.status.is_success() {
            return Self::Success {
                cntlid: cqe.dw0 as u16,
                atr: cqe.dw0 & (1 << 17) != 0,
                ascr: cqe.dw0 & (1 << 18) != 0,
            };
        }
        let s = cqe.status.status;
        let param = (s == Status::CONNECT_INVALID_PARAMETERS || s == Status::CONNECT_INVALID_HOST)
            .then(|| InvalidParam::from_dw0(cqe.dw0));
        Self::Failure {
            status: cqe.status,
            param,
        }
    }
}

impl fmt::Display for ConnectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success { cntlid, atr, ascr } => {
                write!(
                    f,
                    "Connect ok cntlid={cntlid:#06x} atr={} ascr={}",
                    *atr as u8, *ascr as u8
                )
            }
            Self::Failure {
                status,
                param: None,
            } => write!(f, "Connect failed: {status}"),
            Self::Failure {
                status,
                param: Some(p),
            } => write!(
                f,
                "Connect failed: {status} ({} offset {})",
                if p.in_data { "data" } else { "SQE" },
                p.ipo
            ),
        }
    }
}

/// Property size from ATTRIB bits 2:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertySize {
    Four,
    Eight,
}

impl PropertySize {
    pub fn bytes(self) -> u8 {
        match self {
            Self::Four => 4,
            Self::Eight => 8,
        }
    }
    fn attrib(self) -> u8 {
        match self {
            Self::Four => 0,
            Self::Eight => 1,
        }
    }
}

/// Zerocopy layout of a Property Get/Set SQE.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PropertyCmdRaw {
    pub opcode: u8,
    pub flags: u8,
    pub cid: U16,
    pub fctype: u8,
    pub reserved1: [u8; 19],
    pub sgl: SglRaw,
    pub attrib: u8,
    pub reserved2: [u8; 3],
    pub ofst: U32,
    pub value: U64,
    pub reserved3: [u8; 8],
}
assert_layout!(PropertyCmdRaw, 64; fctype @ 4, sgl @ 24, attrib @ 40, ofst @ 44, value @ 48, reserved3 @ 56);

define_view!(
    /// Zero-copy view of a Property Get/Set SQE.
    PropertyCmdView, PropertyCmdRaw, "Property command"
);
view_accessors!(PropertyCmdView;
    cid / set_cid: u16;
    fctype / set_fctype: u8;
    /// Bits 2:0: size (0 = 4 bytes, 1 = 8 bytes).
    attrib / set_attrib: u8;
    /// Property offset.
    ofst / set_ofst: u32;
    /// Value (Property Set).
    value / set_value: u64;
);

/// A parsed Property Get (`value == None`) or Property Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyCommand {
    pub cid: u16,
    pub size: PropertySize,
    pub offset: u32,
    /// `Some` for Property Set.
    pub value: Option<u64>,
}

impl PropertyCommand {
    /// Parses a 64-byte Property Get or Set SQE.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: PropertyCmdRaw = read_exact("Property command", bytes)?;
        let err = |field, offset, value: u64| WireError::InvalidField {
            structure: "Property command",
            field,
            offset,
            value,
        };
        if r.opcode != OPC_FABRICS {
            return Err(err("OPC", 0, r.opcode.into()));
        }
        let set = match FabricsCommandType::from_u8(r.fctype) {
            FabricsCommandType::PropertyGet => false,
            FabricsCommandType::PropertySet => true,
            _ => return Err(err("FCTYPE", 4, r.fctype.into())),
        };
        let size = match r.attrib & 0x7 {
            0 => PropertySize::Four,
            1 => PropertySize::Eight,
            other => return Err(err("ATTRIB", 40, other.into())),
        };
        Ok(Self {
            cid: r.cid.get(),
            size,
            offset: r.ofst.get(),
            value: set.then(|| r.value.get()),
        })
    }

    pub fn from_sqe(sqe: &Sqe) -> Result<Self, WireError> {
        Self::parse(&sqe.to_bytes())
    }

    fn to_raw(self) -> PropertyCmdRaw {
        PropertyCmdRaw {
            opcode: OPC_FABRICS,
            flags: FLAGS_PSDT_SGL,
            cid: U16::new(self.cid),
            fctype: if self.value.is_some() {
                FabricsCommandType::PropertySet.code()
            } else {
                FabricsCommandType::PropertyGet.code()
            },
            reserved1: [0; 19],
            sgl: SglDescriptor::transport(0).to_raw(),
            attrib: self.size.attrib(),
            reserved2: [0; 3],
            ofst: U32::new(self.offset),
            value: U64::new(self.value.unwrap_or(0)),
            reserved3: [0; 8],
        }
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("Property command", buf, self.to_raw().as_bytes())
    }

    pub fn to_sqe(&self) -> Sqe {
        sqe_from(self.to_raw().as_bytes())
    }

    /// The value to store for a Set, truncated to the property size.
    pub fn set_value(&self) -> Option<u64> {
        self.value.map(|v| match self.size {
            PropertySize::Four => v & 0xFFFF_FFFF,
            PropertySize::Eight => v,
        })
    }

    /// CQE DW0/DW1 of a Property Get returning `value`.
    pub fn get_result(value: u64) -> (u32, u32) {
        (value as u32, (value >> 32) as u32)
    }
}

impl fmt::Display for PropertyCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            None => write!(
                f,
                "Property Get cid={:#06x} ofst={:#x} size={}",
                self.cid,
                self.offset,
                self.size.bytes()
            ),
            Some(v) => write!(
                f,
                "Property Set cid={:#06x} ofst={:#x} size={} value={v:#x}",
                self.cid,
                self.offset,
                self.size.bytes()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    fn connect_sqe_bytes() -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 0x7F;
        b[1] = 0x40;
        put16(&mut b, 2, 0x0001);
        b[4] = 0x01;
        put32(&mut b, 32, 1024);
        b[39] = 0x01;
        put16(&mut b, 40, 0);
        put16(&mut b, 42, 0);
        put16(&mut b, 44, 31);
        b[46] = 0x04;
        put32(&mut b, 48, 5000);
        b
    }

    #[test]
    fn connect_command_by_hand() {
        let b = connect_sqe_bytes();
        let c = ConnectCommand::parse(&b).unwrap();
        assert_eq!(
            c,
            ConnectCommand {
                cid: 1,
                sgl: SglDescriptor::in_capsule(1024),
                recfmt: 0,
                qid: 0,
                sqsize: 31,
                cattr: 4,
                kato_ms: 5000
            }
        );
        assert!(c.sq_flow_disabled());
        let mut out = [0u8; 64];
        c.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert_eq!(c.to_sqe().to_bytes(), b);
        assert_eq!(
            ConnectCommand::from_sqe(&Sqe::parse(&b).unwrap()).unwrap(),
            c
        );
        let v = ConnectCmdView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.qid(), v.sqsize(), v.cattr(), v.kato(), v.recfmt()),
            (0, 31, 4, 5000, 0)
        );
        assert!(c.to_string().contains("sqsize=31"));

        let mut bad = b;
        bad[4] = 0x04;
        assert!(matches!(
            ConnectCommand::parse(&bad),
            Err(WireError::InvalidField { offset: 4, .. })
        ));
        bad[0] = 0x06;
        assert!(matches!(
            ConnectCommand::parse(&bad),
            Err(WireError::InvalidField { offset: 0, .. })
        ));
        assert!(ConnectCommand::parse(&b[..63]).is_err());
    }

    #[test]
    fn connect_data_by_hand() {
        let mut b = vec![0u8; 1024];
        for (i, x) in b[..16].iter_mut().enumerate() {
            *x = i as u8;
        }
        put16(&mut b, 16, 0xFFFF);
        put(&mut b, 256, b"nqn.2024-01.io.example:vol1");
        put(&mut b, 512, b"nqn.2014-08.org.nvmexpress:uuid:1234");
        let d = ConnectData::parse(&b).unwrap();
        assert_eq!(d.cntlid, CNTLID_DYNAMIC);
        assert_eq!(d.subnqn.as_str(), "nqn.2024-01.io.example:vol1");
        assert_eq!(d.hostnqn.as_str(), "nqn.2014-08.org.nvmexpress:uuid:1234");
        assert_eq!(d.hostid[15], 15);
        let mut out = vec![0u8; 1024];
        d.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let v = ConnectDataView::new_checked(&b[..]).unwrap();
        assert_eq!(v.subnqn(), b"nqn.2024-01.io.example:vol1");
        assert_eq!(v.cntlid(), 0xFFFF);
        assert_eq!(v.hostid().len(), 16);
        assert!(d.to_string().contains("vol1"));

        // Forced NUL termination: a 256-byte unterminated NQN reads as 255 bytes.
        put(&mut b, 256, &[b'a'; 256]);
        assert_eq!(ConnectData::parse(&b).unwrap().subnqn.as_str().len(), 255);
        // Not UTF-8: error at the field's offset.
        b[512] = 0xFF;
        assert!(matches!(
            ConnectData::parse(&b),
            Err(WireError::InvalidField { offset: 512, .. })
        ));
        assert!(matches!(
            ConnectData::parse(&b[..1000]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            ConnectData::parse(&[0; 1025]),
            Err(WireError::Oversized { .. })
        ));
    }

    #[test]
    fn nqn() {
        assert!(Nqn::new(DISCOVERY_NQN).unwrap().is_discovery());
        assert!(Nqn::new(&"x".repeat(256)).is_err());
        assert!(Nqn::new("a\0b").is_err());
        let f = Nqn::new("abc").unwrap().to_field();
        assert_eq!(&f[..4], b"abc\0");
    }

    #[test]
    fn connect_responses() {
        let ok = ConnectResponse::success(0x10).to_cqe(7, 0, 0xFFFF);
        assert_eq!(
            (ok.dw0, ok.cid, ok.sqhd, ok.status.to_wire(false)),
            (0x10, 7, 0xFFFF, 0)
        );
        assert_eq!(
            ConnectResponse::from_cqe(&ok),
            ConnectResponse::success(0x10)
        );
        let bad =
            ConnectResponse::invalid_param(InvalidParam::data(ipo::SUBNQN)).to_cqe(7, 0, 0xFFFF);
        assert_eq!(bad.dw0, 0x0001_0100);
        assert_eq!(bad.status.to_wire(false), 0x8304);
        assert_eq!(
            ConnectResponse::from_cqe(&bad),
            ConnectResponse::invalid_param(InvalidParam::data(256))
        );
        let sq = ConnectResponse::invalid_param(InvalidParam::sqe(ipo::SQSIZE)).to_cqe(1, 0, 0);
        assert_eq!(sq.dw0, 44);
        let host = ConnectResponse::invalid_host().to_cqe(1, 0, 0);
        assert_eq!(
            (host.dw0, host.status.to_wire(false)),
            (0x0001_0200, 0x8308)
        );
        let busy = Cqe::with_status(1, 0, 0, Status::CONNECT_CONTROLLER_BUSY.retryable());
        assert!(matches!(
            ConnectResponse::from_cqe(&busy),
            ConnectResponse::Failure { param: None, .. }
        ));
        assert!(ConnectResponse::from_cqe(&host)
            .to_string()
            .contains("data offset 512"));
    }

    #[test]
    fn property_commands_by_hand() {
        let mut b = [0u8; 64];
        b[0] = 0x7F;
        b[1] = 0x40;
        put16(&mut b, 2, 9);
        b[4] = 0x04;
        b[39] = 0x5A;
        b[40] = 1;
        put32(&mut b, 44, 0);
        let get = PropertyCommand::parse(&b).unwrap();
        assert_eq!(
            get,
            PropertyCommand {
                cid: 9,
                size: PropertySize::Eight,
                offset: 0,
                value: None
            }
        );
        assert_eq!(get.to_sqe().to_bytes(), b);

        let mut s = [0u8; 64];
        s[0] = 0x7F;
        s[1] = 0x40;
        put16(&mut s, 2, 10);
        s[4] = 0x00;
        s[39] = 0x5A;
        put32(&mut s, 44, 0x14);
        put64(&mut s, 48, 0x0046_0001);
        let set = PropertyCommand::parse(&s).unwrap();
        assert_eq!(
            (set.offset, set.size, set.set_value()),
            (0x14, PropertySize::Four, Some(0x0046_0001))
        );
        let mut out = [0u8; 64];
        set.emit(&mut out).unwrap();
        assert_eq!(out, s);
        let v = PropertyCmdView::new_checked(&s[..]).unwrap();
        assert_eq!(
            (v.fctype(), v.ofst(), v.value(), v.attrib()),
            (0, 0x14, 0x0046_0001, 0)
        );
        assert_eq!(
            PropertyCommand::get_result(0x0000_0020_0F01_007F),
            (0x0F01_007F, 0x20)
        );
        assert!(set.to_string().starts_with("Property Set"));

        s[40] = 2;
        assert!(matches!(
            PropertyCommand::parse(&s),
            Err(WireError::InvalidField { offset: 40, .. })
        ));
        s[40] = 0;
        s[4] = 0x01;
        assert!(matches!(
            PropertyCommand::parse(&s),
            Err(WireError::InvalidField { offset: 4, .. })
        ));
    }

    #[test]
    fn fctype_codes() {
        for v in 0..=255u8 {
            assert_eq!(FabricsCommandType::from_u8(v).code(), v);
        }
        assert_eq!(FabricsCommandType::from_u8(1), FabricsCommandType::Connect);
        assert_eq!(FabricsCommandType::from_u8(0x7).to_string(), "FCTYPE 0x07");
    }
}

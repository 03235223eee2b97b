//! NVMe completion status: Status Code Type + Status Code, and the completion status word.
//!
//! Invariants:
//! * [`Status`] holds a 12-bit `SCT << 8 | SC` value (SCT is 3 bits); constructors mask.
//! * [`CompletionStatus::to_wire`] and [`CompletionStatus::from_wire`] are inverse for every
//!   16-bit value with phase = 0 (the phase bit is carried separately).

use core::fmt;

/// Status Code Type (CQE status bits 11:9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusCodeType {
    Generic,
    CommandSpecific,
    MediaError,
    PathRelated,
    Reserved(u8),
    VendorSpecific,
}

impl StatusCodeType {
    /// Decodes the 3-bit SCT.
    pub fn from_bits(sct: u8) -> Self {
        match sct & 0x7 {
            0 => Self::Generic,
            1 => Self::CommandSpecific,
            2 => Self::MediaError,
            3 => Self::PathRelated,
            7 => Self::VendorSpecific,
            other => Self::Reserved(other),
        }
    }

    /// The 3-bit SCT value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Generic => 0,
            Self::CommandSpecific => 1,
            Self::MediaError => 2,
            Self::PathRelated => 3,
            Self::VendorSpecific => 7,
            Self::Reserved(v) => v & 0x7,
        }
    }
}

/// A status code: `SCT << 8 | SC` (12 bits), as written in the spec (e.g. `0x182`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(u16);

impl Status {
    pub const SUCCESS: Self = Self(0x000);
    pub const INVALID_OPCODE: Self = Self(0x001);
    pub const INVALID_FIELD: Self = Self(0x002);
    pub const CID_CONFLICT: Self = Self(0x003);
    pub const DATA_TRANSFER_ERROR: Self = Self(0x004);
    pub const INTERNAL_ERROR: Self = Self(0x006);
    pub const ABORT_REQUESTED: Self = Self(0x007);
    pub const INVALID_NS_OR_FORMAT: Self = Self(0x00B);
    pub const COMMAND_SEQUENCE_ERROR: Self = Self(0x00C);
    pub const DATA_SGL_LENGTH_INVALID: Self = Self(0x00F);
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Self = Self(0x011);
    pub const SGL_OFFSET_INVALID: Self = Self(0x016);
    pub const KEEP_ALIVE_EXPIRED: Self = Self(0x019);
    pub const KEEP_ALIVE_INVALID: Self = Self(0x01A);
    pub const NS_WRITE_PROTECTED: Self = Self(0x020);
    pub const TRANSIENT_TRANSPORT_ERROR: Self = Self(0x022);
    pub const LBA_OUT_OF_RANGE: Self = Self(0x080);
    pub const CAPACITY_EXCEEDED: Self = Self(0x081);
    pub const NS_NOT_READY: Self = Self(0x082);
    /// Command specific: Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT_EXCEEDED: Self = Self(0x105);
    /// Command specific: Invalid Log Page.
    pub const INVALID_LOG_PAGE: Self = Self(0x109);
    /// Command specific: Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: Self = Self(0x10D);
    /// Fabrics Connect: Incompatible Format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Self = Self(0x180);
    /// Fabrics Connect: Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Self = Self(0x181);
    /// Fabrics Connect: Invalid Parameters (DW0 carries IATTR/IPO).
    pub const CONNECT_INVALID_PARAMETERS: Self = Self(0x182);
    /// Fabrics Connect: Restart Discovery. Shares its value with [`Self::ONCS_NOT_SUPPORTED`];
    /// which one is meant depends on the command (fabrics vs NVM I/O).
    pub const CONNECT_RESTART_DISCOVERY: Self = Self(0x183);
    /// Fabrics Connect: Invalid Host.
    pub const CONNECT_INVALID_HOST: Self = Self(0x184);
    /// NVM command set (I/O commands): ONCS Not Supported.
    pub const ONCS_NOT_SUPPORTED: Self = Self(0x183);
    pub const AUTH_REQUIRED: Self = Self(0x191);
    pub const WRITE_FAULT: Self = Self(0x280);
    pub const UNRECOVERED_READ_ERROR: Self = Self(0x281);
    pub const COMPARE_FAILURE: Self = Self(0x285);
    pub const ACCESS_DENIED: Self = Self(0x286);
    pub const INTERNAL_PATH_ERROR: Self = Self(0x300);
    pub const ANA_INACCESSIBLE: Self = Self(0x302);
    pub const ANA_TRANSITION: Self = Self(0x303);

    /// Builds a status from its type and code.
    pub const fn new(sct: u8, sc: u8) -> Self {
        Self(((sct as u16 & 0x7) << 8) | sc as u16)
    }

    /// Builds a status from the 12-bit `SCT << 8 | SC` value (higher bits are dropped).
    pub const fn from_code(code: u16) -> Self {
        Self(code & 0x7FF)
    }

    /// The 12-bit `SCT << 8 | SC` value.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// Status Code Type (3 bits).
    pub const fn sct(self) -> u8 {
        (self.0 >> 8) as u8 & 0x7
    }

    /// Status Code (8 bits).
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }

    /// Typed status code type.
    pub fn code_type(self) -> StatusCodeType {
        StatusCodeType::from_bits(self.sct())
    }

    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// A completion status with DNR set (permanent error: the host does not retry).
    pub const fn dnr(self) -> CompletionStatus {
        CompletionStatus {
            status: self,
            crd: 0,
            more: false,
            dnr: true,
        }
    }

    /// A completion status with DNR clear (the host may retry).
    pub const fn retryable(self) -> CompletionStatus {
        CompletionStatus {
            status: self,
            crd: 0,
            more: false,
            dnr: false,
        }
    }

    /// A short name for logs; `None` for codes this module does not name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x000 => "Success",
            0x001 => "Invalid Command Opcode",
            0x002 => "Invalid Field in Command",
            0x003 => "Command ID Conflict",
            0x004 => "Data Transfer Error",
            0x006 => "Internal Error",
            0x007 => "Command Abort Requested",
            0x00B => "Invalid Namespace or Format",
            0x00C => "Command Sequence Error",
            0x00F => "Data SGL Length Invalid",
            0x011 => "SGL Descriptor Type Invalid",
            0x016 => "SGL Offset Invalid",
            0x019 => "Keep Alive Timer Expired",
            0x01A => "Keep Alive Timeout Invalid",
            0x020 => "Namespace is Write Protected",
            0x022 => "Transient Transport Error",
            0x080 => "LBA Out of Range",
            0x081 => "Capacity Exceeded",
            0x082 => "Namespace Not Ready",
            0x105 => "Asynchronous Event Request Limit Exceeded",
            0x109 => "Invalid Log Page",
            0x10D => "Feature Identifier Not Saveable",
            0x180 => "Connect Incompatible Format",
            0x181 => "Connect Controller Busy",
            0x182 => "Connect Invalid Parameters",
            0x183 => "Connect Restart Discovery / ONCS Not Supported",
            0x184 => "Connect Invalid Host",
            0x191 => "Authentication Required",
            0x280 => "Write Fault",
            0x281 => "Unrecovered Read Error",
            0x285 => "Compare Failure",
            0x286 => "Access Denied",
            0x300 => "Internal Path Error",
            0x302 => "ANA Inaccessible",
            0x303 => "ANA Transition",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{:#05x} {n}", self.0),
            None => write!(f, "{:#05x}", self.0),
        }
    }
}

/// The CQE status word without the phase tag: status, CRD, More, DNR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompletionStatus {
    pub status: Status,
    /// Command Retry Delay index (2 bits); 0 unless Identify Controller CRDT is set.
    pub crd: u8,
    /// More information in the Error Information log.
    pub more: bool,
    /// Do Not Retry.
    pub dnr: bool,
}

impl CompletionStatus {
    pub const SUCCESS: Self = Self {
        status: Status::SUCCESS,
        crd: 0,
        more: false,
        dnr: false,
    };

    /// The 16-bit CQE STATUS field (bits 15:1 of it; `phase` goes in bit 0).
    pub const fn to_wire(self, phase: bool) -> u16 {
        (phase as u16)
            | ((self.status.sc() as u16) << 1)
            | ((self.status.sct() as u16) << 9)
            | (((self.crd & 0x3) as u16) << 12)
            | ((self.more as u16) << 14)
            | ((self.dnr as u16) << 15)
    }

    /// Decodes a CQE STATUS field; returns the status and the phase tag.
    pub const fn from_wire(word: u16) -> (Self, bool) {
        let status = Status::new(((word >> 9) & 0x7) as u8, (word >> 1) as u8);
        (
            Self {
                status,
                crd: ((word >> 12) & 0x3) as u8,
                more: word & (1 << 14) != 0,
                dnr: word & (1 << 15) != 0,
            },
            word & 1 != 0,
        )
    }

    pub const fn is_success(self) -> bool {
        self.status.is_success()
    }
}

impl From<Status> for CompletionStatus {
    fn from(status: Status) -> Self {
        status.retryable()
    }
}

impl fmt::Display for CompletionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if self.dnr {
            f.write_str(" +DNR")?;
        }
        if self.more {
            f.write_str(" +M")?;
        }
        if self.crd != 0 {
            write!(f, " CRD={}", self.crd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        // §3.3: Invalid Field+DNR = 0x8004, Connect Invalid Host+DNR = 0x8308,
        // LBA Out of Range+DNR = 0x8100, Capacity Exceeded+DNR = 0x8102.
        assert_eq!(Status::INVALID_FIELD.dnr().to_wire(false), 0x8004);
        assert_eq!(Status::CONNECT_INVALID_HOST.dnr().to_wire(false), 0x8308);
        assert_eq!(Status::LBA_OUT_OF_RANGE.dnr().to_wire(false), 0x8100);
        assert_eq!(Status::CAPACITY_EXCEEDED.dnr().to_wire(false), 0x8102);
        assert_eq!(CompletionStatus::SUCCESS.to_wire(false), 0);
        assert_eq!(CompletionStatus::SUCCESS.to_wire(true), 1);
    }

    #[test]
    fn fields() {
        let s = Status::CONNECT_INVALID_PARAMETERS;
        assert_eq!((s.sct(), s.sc()), (1, 0x82));
        assert_eq!(s.code_type(), StatusCodeType::CommandSpecific);
        assert_eq!(Status::new(1, 0x82), s);
        assert_eq!(Status::from_code(0xF182), s);
        assert_eq!(s.to_string(), "0x182 Connect Invalid Parameters");
        assert_eq!(s.dnr().to_string(), "0x182 Connect Invalid Parameters +DNR");
        assert_eq!(
            Status::new(7, 0xC0).code_type(),
            StatusCodeType::VendorSpecific
        );
    }

    #[test]
    fn wire_round_trip_all_words() {
        for word in 0..=u16::MAX {
            let (cs, phase) = CompletionStatus::from_wire(word);
            assert_eq!(cs.to_wire(phase), word);
        }
    }
}

//! Admin command set: opcodes, Asynchronous Event completion encoding, Abort result.
//!
//! The per-command structures live in `identify`, `log` and `features`; this module holds
//! what is shared by the admin dispatch.
//!
//! Invariants: `AdminOpcode::from_u8(v).code() == v` for every byte; AEN DW0 encode/decode
//! are inverse on the fields they define.

use core::fmt;

/// Admin opcodes the target knows about (others are `Unknown` → Invalid Opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminOpcode {
    DeleteIoSq,
    CreateIoSq,
    GetLogPage,
    DeleteIoCq,
    CreateIoCq,
    Identify,
    Abort,
    SetFeatures,
    GetFeatures,
    AsyncEventRequest,
    NsManagement,
    FirmwareCommit,
    FirmwareDownload,
    NsAttachment,
    KeepAlive,
    FormatNvm,
    SecuritySend,
    SecurityReceive,
    Sanitize,
    Fabrics,
    Unknown(u8),
}

impl AdminOpcode {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::DeleteIoSq,
            0x01 => Self::CreateIoSq,
            0x02 => Self::GetLogPage,
            0x04 => Self::DeleteIoCq,
            0x05 => Self::CreateIoCq,
            0x06 => Self::Identify,
            0x08 => Self::Abort,
            0x09 => Self::SetFeatures,
            0x0A => Self::GetFeatures,
            0x0C => Self::AsyncEventRequest,
            0x0D => Self::NsManagement,
            0x10 => Self::FirmwareCommit,
            0x11 => Self::FirmwareDownload,
            0x15 => Self::NsAttachment,
            0x18 => Self::KeepAlive,
            0x80 => Self::FormatNvm,
            0x81 => Self::SecuritySend,
            0x82 => Self::SecurityReceive,
            0x84 => Self::Sanitize,
            0x7F => Self::Fabrics,
            other => Self::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::DeleteIoSq => 0x00,
            Self::CreateIoSq => 0x01,
            Self::GetLogPage => 0x02,
            Self::DeleteIoCq => 0x04,
            Self::CreateIoCq => 0x05,
            Self::Identify => 0x06,
            Self::Abort => 0x08,
            Self::SetFeatures => 0x09,
            Self::GetFeatures => 0x0A,
            Self::AsyncEventRequest => 0x0C,
            Self::NsManagement => 0x0D,
            Self::FirmwareCommit => 0x10,
            Self::FirmwareDownload => 0x11,
            Self::NsAttachment => 0x15,
            Self::KeepAlive => 0x18,
            Self::FormatNvm => 0x80,
            Self::SecuritySend => 0x81,
            Self::SecurityReceive => 0x82,
            Self::Sanitize => 0x84,
            Self::Fabrics => 0x7F,
            Self::Unknown(v) => v,
        }
    }
}

impl fmt::Display for AdminOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(v) => write!(f, "admin opcode {v:#04x}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Asynchronous event types (AER completion DW0 bits 2:0).
pub mod event_type {
    pub const ERROR: u8 = 0;
    pub const SMART: u8 = 1;
    pub const NOTICE: u8 = 2;
    pub const IO_COMMAND_SET: u8 = 6;
    pub const VENDOR: u8 = 7;
}

/// An Asynchronous Event Request completion (CQE DW0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AsyncEvent {
    /// Bits 2:0.
    pub event_type: u8,
    /// Bits 15:8.
    pub info: u8,
    /// Bits 23:16: log page to read.
    pub log_page: u8,
}

impl AsyncEvent {
    /// Namespace attribute changed: `0x00040002`.
    pub const NS_ATTR_CHANGED: Self = Self {
        event_type: event_type::NOTICE,
        info: 0x00,
        log_page: 0x04,
    };
    /// Firmware activation starting: `0x00030102`.
    pub const FW_ACTIVATION: Self = Self {
        event_type: event_type::NOTICE,
        info: 0x01,
        log_page: 0x03,
    };
    /// ANA change: `0x000C0302`.
    pub const ANA_CHANGE: Self = Self {
        event_type: event_type::NOTICE,
        info: 0x03,
        log_page: 0x0C,
    };
    /// Discovery log page change: `0x0070F002`.
    pub const DISCOVERY_CHANGE: Self = Self {
        event_type: event_type::NOTICE,
        info: 0xF0,
        log_page: 0x70,
    };

    pub const fn dw0(self) -> u32 {
        (self.event_type as u32 & 0x7) | ((self.info as u32) << 8) | ((self.log_page as u32) << 16)
    }

    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            event_type: (dw0 & 0x7) as u8,
            info: (dw0 >> 8) as u8,
            log_page: (dw0 >> 16) as u8,
        }
    }
}

impl fmt::Display for AsyncEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AEN {:#010x} type={} info={:#04x} lid={:#04x}",
            self.dw0(),
            self.event_type,
            self.info,
            self.log_page
        )
    }
}

/// Abort command fields (CDW10: SQID bits 15:0, CID bits 31:16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortCommand {
    pub sqid: u16,
    pub cid: u16,
}

impl AbortCommand {
    pub const fn from_cdw10(cdw10: u32) -> Self {
        Self {
            sqid: cdw10 as u16,
            cid: (cdw10 >> 16) as u16,
        }
    }
    pub const fn cdw10(self) -> u32 {
        self.sqid as u32 | ((self.cid as u32) << 16)
    }
    /// CQE DW0 bit 0 = 1: the command was not aborted (the minimal Abort).
    pub const NOT_ABORTED_DW0: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes() {
        for v in 0..=255u8 {
            assert_eq!(AdminOpcode::from_u8(v).code(), v);
        }
        assert_eq!(AdminOpcode::from_u8(0x06), AdminOpcode::Identify);
        assert_eq!(AdminOpcode::from_u8(0x18), AdminOpcode::KeepAlive);
        assert_eq!(AdminOpcode::from_u8(0x7F), AdminOpcode::Fabrics);
        assert_eq!(AdminOpcode::from_u8(0x03).to_string(), "admin opcode 0x03");
    }

    #[test]
    fn aen_values_from_spec() {
        assert_eq!(AsyncEvent::NS_ATTR_CHANGED.dw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::ANA_CHANGE.dw0(), 0x000C_0302);
        assert_eq!(AsyncEvent::DISCOVERY_CHANGE.dw0(), 0x0070_F002);
        assert_eq!(AsyncEvent::FW_ACTIVATION.dw0(), 0x0003_0102);
        assert_eq!(
            AsyncEvent::from_dw0(0x0070_F002),
            AsyncEvent::DISCOVERY_CHANGE
        );
        assert!(AsyncEvent::NS_ATTR_CHANGED
            .to_string()
            .contains("0x00040002"));
    }

    #[test]
    fn abort() {
        let a = AbortCommand::from_cdw10(0x001F_0000);
        assert_eq!((a.sqid, a.cid), (0, 31));
        assert_eq!(a.cdw10(), 0x001F_0000);
    }
}

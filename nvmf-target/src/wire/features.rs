//! Set Features (admin 0x09) / Get Features (admin 0x0A): command fields and the dword
//! encodings of the features a fabrics target handles (Number of Queues, Asynchronous Event
//! Configuration, Keep Alive Timer, Volatile Write Cache, Temperature Threshold, Host
//! Identifier).
//!
//! Invariants: every encoder has a decoder and they are inverse on the bits they define.

use core::fmt;

use super::sgl::SglDescriptor;
use super::sqe::{Sqe, FLAGS_PSDT_SGL};

/// Feature identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureId {
    Arbitration,
    PowerManagement,
    TemperatureThreshold,
    ErrorRecovery,
    VolatileWriteCache,
    NumberOfQueues,
    InterruptCoalescing,
    InterruptVectorConfig,
    WriteAtomicity,
    AsyncEventConfig,
    AutonomousPowerState,
    Timestamp,
    KeepAliveTimer,
    HostBehavior,
    HostIdentifier,
    Unknown(u8),
}

impl FeatureId {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x01 => Self::Arbitration,
            0x02 => Self::PowerManagement,
            0x04 => Self::TemperatureThreshold,
            0x05 => Self::ErrorRecovery,
            0x06 => Self::VolatileWriteCache,
            0x07 => Self::NumberOfQueues,
            0x08 => Self::InterruptCoalescing,
            0x09 => Self::InterruptVectorConfig,
            0x0A => Self::WriteAtomicity,
            0x0B => Self::AsyncEventConfig,
            0x0C => Self::AutonomousPowerState,
            0x0E => Self::Timestamp,
            0x0F => Self::KeepAliveTimer,
            0x16 => Self::HostBehavior,
            0x81 => Self::HostIdentifier,
            other => Self::Unknown(other),
        }
    }
    pub fn code(self) -> u8 {
        match self {
            Self::Arbitration => 0x01,
            Self::PowerManagement => 0x02,
            Self::TemperatureThreshold => 0x04,
            Self::ErrorRecovery => 0x05,
            Self::VolatileWriteCache => 0x06,
            Self::NumberOfQueues => 0x07,
            Self::InterruptCoalescing => 0x08,
            Self::InterruptVectorConfig => 0x09,
            Self::WriteAtomicity => 0x0A,
            Self::AsyncEventConfig => 0x0B,
            Self::AutonomousPowerState => 0x0C,
            Self::Timestamp => 0x0E,
            Self::KeepAliveTimer => 0x0F,
            Self::HostBehavior => 0x16,
            Self::HostIdentifier => 0x81,
            Self::Unknown(v) => v,
        }
    }
}

/// Get Features SEL values (CDW10 bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Current,
    Default,
    Saved,
    SupportedCapabilities,
    Reserved(u8),
}

impl Select {
    pub fn from_bits(v: u8) -> Self {
        match v & 0x7 {
            0 => Self::Current,
            1 => Self::Default,
            2 => Self::Saved,
            3 => Self::SupportedCapabilities,
            other => Self::Reserved(other),
        }
    }
    pub fn bits(self) -> u8 {
        match self {
            Self::Current => 0,
            Self::Default => 1,
            Self::Saved => 2,
            Self::SupportedCapabilities => 3,
            Self::Reserved(v) => v & 0x7,
        }
    }
}

/// Set Features command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetFeaturesCommand {
    pub nsid: u32,
    pub fid: FeatureId,
    /// Save (CDW10 bit 31).
    pub sv: bool,
    /// Feature-specific value.
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    /// In-capsule data length (Timestamp, Host Behavior).
    pub data_len: u32,
}

impl SetFeaturesCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            fid: FeatureId::from_u8(sqe.cdw10 as u8),
            sv: sqe.cdw10 & (1 << 31) != 0,
            cdw11: sqe.cdw11,
            cdw12: sqe.cdw12,
            cdw13: sqe.cdw13,
            data_len: sqe.sgl.length,
        }
    }

    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            opcode: 0x09,
            flags: FLAGS_PSDT_SGL,
            cid,
            nsid: self.nsid,
            sgl: if self.data_len > 0 {
                SglDescriptor::in_capsule(self.data_len)
            } else {
                SglDescriptor::transport(0)
            },
            cdw10: u32::from(self.fid.code()) | (u32::from(self.sv) << 31),
            cdw11: self.cdw11,
            cdw12: self.cdw12,
            cdw13: self.cdw13,
            ..Sqe::default()
        }
    }
}

impl fmt::Display for SetFeaturesCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Set Features fid={:#04x} cdw11={:#x} sv={}",
            self.fid.code(),
            self.cdw11,
            self.sv as u8
        )
    }
}

/// Get Features command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetFeaturesCommand {
    pub nsid: u32,
    pub fid: FeatureId,
    pub sel: Select,
    pub cdw11: u32,
    pub data_len: u32,
}

impl GetFeaturesCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            fid: FeatureId::from_u8(sqe.cdw10 as u8),
            sel: Select::from_bits((sqe.cdw10 >> 8) as u8),
            cdw11: sqe.cdw11,
            data_len: sqe.sgl.length,
        }
    }

    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            opcode: 0x0A,
            flags: FLAGS_PSDT_SGL,
            cid,
            nsid: self.nsid,
            sgl: SglDescriptor::transport(self.data_len),
            cdw10: u32::from(self.fid.code()) | (u32::from(self.sel.bits()) << 8),
            cdw11: self.cdw11,
            ..Sqe::default()
        }
    }
}

impl fmt::Display for GetFeaturesCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Get Features fid={:#04x} sel={:?} cdw11={:#x}",
            self.fid.code(),
            self.sel,
            self.cdw11
        )
    }
}

/// Number of Queues (FID 0x07): requested (CDW11) or allocated (DW0), both 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberOfQueues {
    /// Submission queues, 0-based (bits 15:0).
    pub nsq: u16,
    /// Completion queues, 0-based (bits 31:16).
    pub ncq: u16,
}

impl NumberOfQueues {
    pub const fn from_dword(v: u32) -> Self {
        Self {
            nsq: v as u16,
            ncq: (v >> 16) as u16,
        }
    }
    pub const fn dword(self) -> u32 {
        self.nsq as u32 | ((self.ncq as u32) << 16)
    }
    /// 0xFFFF in either count is invalid (Invalid Field).
    pub const fn is_valid_request(self) -> bool {
        self.nsq != 0xFFFF && self.ncq != 0xFFFF
    }
    /// The allocation for a request given the target's maximum number of I/O queues
    /// (1-based): each count clamped to `max - 1`.
    pub fn grant(self, max_io_queues: u16) -> Self {
        let cap = max_io_queues.saturating_sub(1);
        Self {
            nsq: self.nsq.min(cap),
            ncq: self.ncq.min(cap),
        }
    }
}

impl fmt::Display for NumberOfQueues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queues nsq={} ncq={} (0-based)", self.nsq, self.ncq)
    }
}

/// Asynchronous Event Configuration (FID 0x0B) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsyncEventConfig(pub u32);

impl AsyncEventConfig {
    /// Bits 7:0: SMART / health critical warnings.
    pub const SMART_MASK: u32 = 0xFF;
    pub const NS_ATTR: u32 = 1 << 8;
    pub const FW_ACTIVATION: u32 = 1 << 9;
    pub const TELEMETRY: u32 = 1 << 10;
    pub const ANA_CHANGE: u32 = 1 << 11;
    pub const DISCOVERY_CHANGE: u32 = 1 << 31;

    pub const fn ns_attr(self) -> bool {
        self.0 & Self::NS_ATTR != 0
    }
    pub const fn ana_change(self) -> bool {
        self.0 & Self::ANA_CHANGE != 0
    }
    pub const fn discovery_change(self) -> bool {
        self.0 & Self::DISCOVERY_CHANGE != 0
    }
    /// Bits set outside `supported` (the SMART bits 7:0 are always accepted).
    pub const fn unsupported_bits(self, supported: u32) -> u32 {
        self.0 & !(supported | Self::SMART_MASK)
    }
}

/// Keep Alive Timer (FID 0x0F): KATO in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAliveTimer {
    pub kato_ms: u32,
}

impl KeepAliveTimer {
    pub const fn from_dword(v: u32) -> Self {
        Self { kato_ms: v }
    }
    pub const fn dword(self) -> u32 {
        self.kato_ms
    }
    /// KATO rounded up to whole seconds (0 = disabled).
    pub const fn seconds(self) -> u32 {
        self.kato_ms.div_ceil(1000)
    }
}

/// Volatile Write Cache (FID 0x06): bit 0 WCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolatileWriteCache {
    pub enabled: bool,
}

impl VolatileWriteCache {
    pub const fn from_dword(v: u32) -> Self {
        Self {
            enabled: v & 1 != 0,
        }
    }
    pub const fn dword(self) -> u32 {
        self.enabled as u32
    }
}

/// Temperature Threshold (FID 0x04): TMPTH bits 15:0 (Kelvin), TMPSEL bits 19:16, THSEL
/// bits 21:20 (0 over, 1 under).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TemperatureThreshold {
    pub tmpth: u16,
    pub tmpsel: u8,
    pub thsel: u8,
}

impl TemperatureThreshold {
    pub const fn from_dword(v: u32) -> Self {
        Self {
            tmpth: v as u16,
            tmpsel: ((v >> 16) & 0xF) as u8,
            thsel: ((v >> 20) & 0x3) as u8,
        }
    }
    pub const fn dword(self) -> u32 {
        self.tmpth as u32
            | (((self.tmpsel & 0xF) as u32) << 16)
            | (((self.thsel & 0x3) as u32) << 20)
    }
}

/// Host Identifier (FID 0x81): CDW11 bit 0 EXHID = 128-bit identifier.
pub const HOST_ID_EXHID: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_commands() {
        for v in 0..=255u8 {
            assert_eq!(FeatureId::from_u8(v).code(), v);
        }
        for v in 0..8u8 {
            assert_eq!(Select::from_bits(v).bits(), v);
        }
        let mut s = Sqe::new(0x09, 5, 0);
        s.cdw10 = 0x8000_0007;
        s.cdw11 = 0x0003_0003;
        let c = SetFeaturesCommand::from_sqe(&s);
        assert_eq!(
            (c.fid, c.sv, c.cdw11),
            (FeatureId::NumberOfQueues, true, 0x0003_0003)
        );
        assert_eq!(SetFeaturesCommand::from_sqe(&c.to_sqe(5)), c);
        let mut g = Sqe::new(0x0A, 6, 0);
        g.cdw10 = 0x0000_0306;
        let gc = GetFeaturesCommand::from_sqe(&g);
        assert_eq!(
            (gc.fid, gc.sel),
            (FeatureId::VolatileWriteCache, Select::SupportedCapabilities)
        );
        assert_eq!(GetFeaturesCommand::from_sqe(&gc.to_sqe(6)), gc);
        assert!(c.to_string().contains("fid=0x07"));
        assert!(gc.to_string().contains("fid=0x06"));
        let ts = SetFeaturesCommand {
            fid: FeatureId::Timestamp,
            data_len: 8,
            ..c
        };
        assert_eq!(ts.to_sqe(1).sgl, SglDescriptor::in_capsule(8));
    }

    #[test]
    fn number_of_queues() {
        let req = NumberOfQueues::from_dword(0x0007_0007);
        assert_eq!((req.nsq, req.ncq), (7, 7));
        assert!(req.is_valid_request());
        let g = req.grant(4);
        assert_eq!(g.dword(), 0x0003_0003);
        assert!(!NumberOfQueues::from_dword(0x0000_FFFF).is_valid_request());
        assert_eq!(NumberOfQueues { nsq: 1, ncq: 2 }.dword(), 0x0002_0001);
    }

    #[test]
    fn other_features() {
        let a = AsyncEventConfig(0x8000_0000);
        assert!(a.discovery_change() && !a.ns_attr());
        assert_eq!(
            AsyncEventConfig(0x0000_01FF).unsupported_bits(AsyncEventConfig::NS_ATTR),
            0
        );
        assert_eq!(
            AsyncEventConfig(0x0000_0200).unsupported_bits(AsyncEventConfig::NS_ATTR),
            0x200
        );
        assert!(AsyncEventConfig(1 << 11).ana_change());
        assert_eq!(KeepAliveTimer::from_dword(5000).seconds(), 5);
        assert_eq!(KeepAliveTimer::from_dword(5001).seconds(), 6);
        assert_eq!(KeepAliveTimer::from_dword(0).seconds(), 0);
        assert_eq!(KeepAliveTimer { kato_ms: 7 }.dword(), 7);
        assert!(VolatileWriteCache::from_dword(1).enabled);
        assert_eq!(VolatileWriteCache { enabled: true }.dword(), 1);
        let t = TemperatureThreshold::from_dword(0x0013_0157);
        assert_eq!((t.tmpth, t.tmpsel, t.thsel), (0x157, 3, 1));
        assert_eq!(t.dword(), 0x0013_0157);
    }
}

//! Controller properties (registers) reached through Fabrics Property Get/Set: CAP, VS, CC,
//! CSTS, NSSR, CRTO, with typed field accessors.
//!
//! Invariants: each register type is a transparent newtype over its wire value, so
//! `from(raw).raw() == raw` for every value; setters only touch their own bits.

use core::fmt;

/// Property offsets.
pub mod offset {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const INTMS: u32 = 0x0C;
    pub const INTMC: u32 = 0x10;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const NSSR: u32 = 0x20;
    pub const CRTO: u32 = 0x68;
}

/// Size in bytes of the property at `offset` (8 for CAP, 4 for the others this target
/// implements), or `None` if the target does not implement it.
pub fn property_size(off: u32) -> Option<u8> {
    match off {
        offset::CAP => Some(8),
        offset::VS | offset::CC | offset::CSTS | offset::NSSR | offset::CRTO => Some(4),
        _ => None,
    }
}

const fn bits64(v: u64, lo: u32, width: u32) -> u64 {
    (v >> lo) & ((1u64 << width) - 1)
}

const fn with_bits64(v: u64, lo: u32, width: u32, field: u64) -> u64 {
    let mask = ((1u64 << width) - 1) << lo;
    (v & !mask) | ((field << lo) & mask)
}

const fn bits32(v: u32, lo: u32, width: u32) -> u32 {
    bits64(v as u64, lo, width) as u32
}

const fn with_bits32(v: u32, lo: u32, width: u32, field: u32) -> u32 {
    with_bits64(v as u64, lo, width, field as u64) as u32
}

/// Controller Capabilities (offset 0x00, 8 bytes, read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cap(pub u64);

impl Cap {
    /// CSS bit for the NVM command set (CAP bit 37).
    pub const CSS_NVM: u8 = 1 << 0;
    /// CSS bit "I/O command sets via CSI" (CAP bit 43).
    pub const CSS_CSI: u8 = 1 << 6;

    /// A CAP suitable for a fabrics I/O controller: given MQES (0-based) and TO (500 ms
    /// units), CQR = 1, CSS = NVM only, MPSMIN = MPSMAX = 0.
    pub const fn new(mqes: u16, to: u8) -> Self {
        Self(0)
            .with_mqes(mqes)
            .with_cqr(true)
            .with_to(to)
            .with_css(Self::CSS_NVM)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Maximum queue entries supported, 0-based (bits 15:0).
    pub const fn mqes(self) -> u16 {
        bits64(self.0, 0, 16) as u16
    }
    /// Contiguous queues required (bit 16).
    pub const fn cqr(self) -> bool {
        bits64(self.0, 16, 1) != 0
    }
    /// Arbitration mechanisms supported (bits 18:17).
    pub const fn ams(self) -> u8 {
        bits64(self.0, 17, 2) as u8
    }
    /// Ready timeout in 500 ms units (bits 31:24).
    pub const fn to(self) -> u8 {
        bits64(self.0, 24, 8) as u8
    }
    /// Doorbell stride (bits 35:32).
    pub const fn dstrd(self) -> u8 {
        bits64(self.0, 32, 4) as u8
    }
    /// NVM subsystem reset supported (bit 36).
    pub const fn nssrs(self) -> bool {
        bits64(self.0, 36, 1) != 0
    }
    /// Command sets supported (bits 44:37).
    pub const fn css(self) -> u8 {
        bits64(self.0, 37, 8) as u8
    }
    /// Memory page size minimum, 2^(12+MPSMIN) (bits 51:48).
    pub const fn mpsmin(self) -> u8 {
        bits64(self.0, 48, 4) as u8
    }
    /// Memory page size maximum (bits 55:52).
    pub const fn mpsmax(self) -> u8 {
        bits64(self.0, 52, 4) as u8
    }
    /// Controller ready modes supported (bits 60:59).
    pub const fn crms(self) -> u8 {
        bits64(self.0, 59, 2) as u8
    }

    pub const fn with_mqes(self, v: u16) -> Self {
        Self(with_bits64(self.0, 0, 16, v as u64))
    }
    pub const fn with_cqr(self, v: bool) -> Self {
        Self(with_bits64(self.0, 16, 1, v as u64))
    }
    pub const fn with_to(self, v: u8) -> Self {
        Self(with_bits64(self.0, 24, 8, v as u64))
    }
    pub const fn with_nssrs(self, v: bool) -> Self {
        Self(with_bits64(self.0, 36, 1, v as u64))
    }
    pub const fn with_css(self, v: u8) -> Self {
        Self(with_bits64(self.0, 37, 8, v as u64))
    }
    pub const fn with_mpsmin(self, v: u8) -> Self {
        Self(with_bits64(self.0, 48, 4, v as u64))
    }
    pub const fn with_mpsmax(self, v: u8) -> Self {
        Self(with_bits64(self.0, 52, 4, v as u64))
    }
    pub const fn with_crms(self, v: u8) -> Self {
        Self(with_bits64(self.0, 59, 2, v as u64))
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CAP {:#018x} mqes={} cqr={} to={} css={:#x} mpsmin={} mpsmax={}",
            self.0,
            self.mqes(),
            self.cqr() as u8,
            self.to(),
            self.css(),
            self.mpsmin(),
            self.mpsmax()
        )
    }
}

/// Version (offset 0x08): `major << 16 | minor << 8 | tertiary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Vs(pub u32);

impl Vs {
    pub const V1_3: Self = Self::new(1, 3, 0);
    pub const V1_4: Self = Self::new(1, 4, 0);
    pub const V2_0: Self = Self::new(2, 0, 0);

    pub const fn new(major: u16, minor: u8, tertiary: u8) -> Self {
        Self(((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32)
    }
    pub const fn raw(self) -> u32 {
        self.0
    }
    pub const fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub const fn minor(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn tertiary(self) -> u8 {
        self.0 as u8
    }
}

impl fmt::Display for Vs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.tertiary())
    }
}

/// CC.SHN / CSTS.SHST shutdown values.
pub mod shutdown {
    pub const NONE: u8 = 0b00;
    /// CC.SHN: normal shutdown. CSTS.SHST: processing.
    pub const NORMAL_OR_PROCESSING: u8 = 0b01;
    /// CC.SHN: abrupt shutdown. CSTS.SHST: complete.
    pub const ABRUPT_OR_COMPLETE: u8 = 0b10;
}

/// Controller Configuration (offset 0x14, read-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cc(pub u32);

impl Cc {
    /// CC.CSS value for the NVM command set.
    pub const CSS_NVM: u8 = 0;
    /// CC.CSS value "all supported I/O command sets" (with CAP.CSS bit 43).
    pub const CSS_ALL: u8 = 6;

    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Enable (bit 0).
    pub const fn en(self) -> bool {
        bits32(self.0, 0, 1) != 0
    }
    /// I/O command set selected (bits 6:4).
    pub const fn css(self) -> u8 {
        bits32(self.0, 4, 3) as u8
    }
    /// Memory page size, 2^(12+MPS) (bits 10:7).
    pub const fn mps(self) -> u8 {
        bits32(self.0, 7, 4) as u8
    }
    /// Arbitration mechanism (bits 13:11).
    pub const fn ams(self) -> u8 {
        bits32(self.0, 11, 3) as u8
    }
    /// Shutdown notification (bits 15:14).
    pub const fn shn(self) -> u8 {
        bits32(self.0, 14, 2) as u8
    }
    /// I/O SQ entry size, log2 (bits 19:16).
    pub const fn iosqes(self) -> u8 {
        bits32(self.0, 16, 4) as u8
    }
    /// I/O CQ entry size, log2 (bits 23:20).
    pub const fn iocqes(self) -> u8 {
        bits32(self.0, 20, 4) as u8
    }
    /// Controller ready independent of media enable (bit 24).
    pub const fn crime(self) -> bool {
        bits32(self.0, 24, 1) != 0
    }

    pub const fn with_en(self, v: bool) -> Self {
        Self(with_bits32(self.0, 0, 1, v as u32))
    }
    pub const fn with_css(self, v: u8) -> Self {
        Self(with_bits32(self.0, 4, 3, v as u32))
    }
    pub const fn with_mps(self, v: u8) -> Self {
        Self(with_bits32(self.0, 7, 4, v as u32))
    }
    pub const fn with_ams(self, v: u8) -> Self {
        Self(with_bits32(self.0, 11, 3, v as u32))
    }
    pub const fn with_shn(self, v: u8) -> Self {
        Self(with_bits32(self.0, 14, 2, v as u32))
    }
    pub const fn with_iosqes(self, v: u8) -> Self {
        Self(with_bits32(self.0, 16, 4, v as u32))
    }
    pub const fn with_iocqes(self, v: u8) -> Self {
        Self(with_bits32(self.0, 20, 4, v as u32))
    }
    pub const fn with_crime(self, v: bool) -> Self {
        Self(with_bits32(self.0, 24, 1, v as u32))
    }
}

impl fmt::Display for Cc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CC {:#010x} en={} css={} mps={} ams={} shn={} iosqes={} iocqes={}",
            self.0,
            self.en() as u8,
            self.css(),
            self.mps(),
            self.ams(),
            self.shn(),
            self.iosqes(),
            self.iocqes()
        )
    }
}

/// Controller Status (offset 0x1C, read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Csts(pub u32);

impl Csts {
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Ready (bit 0).
    pub const fn rdy(self) -> bool {
        bits32(self.0, 0, 1) != 0
    }
    /// Controller fatal status (bit 1).
    pub const fn cfs(self) -> bool {
        bits32(self.0, 1, 1) != 0
    }
    /// Shutdown status (bits 3:2).
    pub const fn shst(self) -> u8 {
        bits32(self.0, 2, 2) as u8
    }
    /// NVM subsystem reset occurred (bit 4).
    pub const fn nssro(self) -> bool {
        bits32(self.0, 4, 1) != 0
    }
    /// Processing paused (bit 5).
    pub const fn pp(self) -> bool {
        bits32(self.0, 5, 1) != 0
    }

    pub const fn with_rdy(self, v: bool) -> Self {
        Self(with_bits32(self.0, 0, 1, v as u32))
    }
    pub const fn with_cfs(self, v: bool) -> Self {
        Self(with_bits32(self.0, 1, 1, v as u32))
    }
    pub const fn with_shst(self, v: u8) -> Self {
        Self(with_bits32(self.0, 2, 2, v as u32))
    }
    pub const fn with_nssro(self, v: bool) -> Self {
        Self(with_bits32(self.0, 4, 1, v as u32))
    }
    pub const fn with_pp(self, v: bool) -> Self {
        Self(with_bits32(self.0, 5, 1, v as u32))
    }
}

impl fmt::Display for Csts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CSTS {:#010x} rdy={} cfs={} shst={}",
            self.0,
            self.rdy() as u8,
            self.cfs() as u8,
            self.shst()
        )
    }
}

/// Controller Ready Timeouts (offset 0x68): CRWMT bits 15:0, CRIMT bits 31:16 (500 ms units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Crto(pub u32);

impl Crto {
    pub const fn crwmt(self) -> u16 {
        self.0 as u16
    }
    pub const fn crimt(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_spec_examples() {
        // §4.3: MQES=127, CQR=1, TO=15, CSS=NVM -> 0x0000_0020_0F01_007F.
        let c = Cap::new(127, 15);
        assert_eq!(c.raw(), 0x0000_0020_0F01_007F);
        assert_eq!(
            (c.mqes(), c.cqr(), c.to(), c.css(), c.mpsmin()),
            (127, true, 15, 1, 0)
        );
        // Linux target: MQES 1023, TO 15, CSS NVM + CSI (bits 37 and 43), CQR clear.
        let l = Cap(0x0000_0820_0F00_03FF);
        assert_eq!(
            (l.mqes(), l.cqr(), l.to(), l.css()),
            (1023, false, 15, Cap::CSS_NVM | Cap::CSS_CSI)
        );
        assert_eq!(l.raw() >> 43 & 1, 1);
        let all = Cap(0)
            .with_nssrs(true)
            .with_mpsmin(2)
            .with_mpsmax(3)
            .with_crms(3);
        assert_eq!(
            (all.nssrs(), all.mpsmin(), all.mpsmax(), all.crms()),
            (true, 2, 3, 3)
        );
        assert_eq!(all.raw(), (1 << 36) | (2 << 48) | (3 << 52) | (3 << 59));
        assert_eq!(Cap(u64::MAX).with_mqes(0).mqes(), 0);
        assert_eq!(Cap(u64::MAX).with_mqes(0).raw(), !0xFFFF);
        assert!(c.to_string().contains("mqes=127"));
    }

    #[test]
    fn cc_values_linux_writes() {
        let cfg = Cc(0x0046_0000);
        assert_eq!(
            (
                cfg.en(),
                cfg.iosqes(),
                cfg.iocqes(),
                cfg.mps(),
                cfg.css(),
                cfg.shn()
            ),
            (false, 6, 4, 0, 0, 0)
        );
        assert_eq!(Cc(0x0046_0060).css(), Cc::CSS_ALL);
        assert!(Cc(0x0046_0001).en());
        let shut = Cc(0x0046_4001);
        assert_eq!(
            (shut.en(), shut.shn()),
            (true, shutdown::NORMAL_OR_PROCESSING)
        );
        let built = Cc(0)
            .with_iosqes(6)
            .with_iocqes(4)
            .with_en(true)
            .with_shn(1);
        assert_eq!(built, shut);
        assert_eq!(
            Cc(0).with_ams(7).with_crime(true).raw(),
            (7 << 11) | (1 << 24)
        );
        assert_eq!(Cc(0).with_mps(0xF).mps(), 0xF);
    }

    #[test]
    fn csts_and_vs() {
        let s = Csts(0)
            .with_rdy(true)
            .with_shst(shutdown::ABRUPT_OR_COMPLETE);
        assert_eq!(s.raw(), 0x9);
        assert_eq!(s.raw() & 0x0C, 0x08);
        assert_eq!(
            Csts(0).with_cfs(true).with_nssro(true).with_pp(true).raw(),
            0x32
        );
        assert!(Csts(0x32).cfs() && Csts(0x32).nssro() && Csts(0x32).pp());
        assert_eq!(Vs::V1_3.raw(), 0x0001_0300);
        assert_eq!(Vs(0x0002_0100).to_string(), "2.1.0");
        assert!(Vs::V2_0 > Vs::V1_4);
        assert_eq!(Crto(0x0010_0020).crimt(), 0x10);
        assert_eq!(Crto(0x0010_0020).crwmt(), 0x20);
        assert_eq!(property_size(offset::CAP), Some(8));
        assert_eq!(property_size(offset::CC), Some(4));
        assert_eq!(property_size(0x04), None);
    }
}

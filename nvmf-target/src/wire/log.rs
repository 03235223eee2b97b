//! Get Log Page (admin opcode 0x02): command fields (NUMDL/NUMDU, LPOL/LPOU, LID, LSP, RAE),
//! windowing of a log into the requested `[LPO, LPO + len)` range, and the log pages:
//! Error Information (0x01), SMART / Health (0x02), Firmware Slot (0x03), Changed Namespace
//! List (0x04, see [`crate::wire::identify::NsList`]), Commands Supported and Effects (0x05),
//! Discovery (0x70: 1024-byte header + 1024-byte entries).
//!
//! Invariants: transfer lengths are computed in u64 (`(NUMD + 1) * 4` never overflows);
//! [`log_window`] never reads or writes out of bounds and zero-fills past the log's end.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::sgl::SglDescriptor;
use super::sqe::{Sqe, FLAGS_PSDT_SGL};
use super::{
    assert_layout, define_view, nul_padded, nul_terminated, read_exact, trim_padded,
    view_accessors, view_bytes, write_prefix, WireError,
};

/// Log page identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogPageId {
    SupportedLogPages,
    ErrorInformation,
    SmartHealth,
    FirmwareSlot,
    ChangedNsList,
    CommandEffects,
    Ana,
    Discovery,
    Unknown(u8),
}

impl LogPageId {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::SupportedLogPages,
            0x01 => Self::ErrorInformation,
            0x02 => Self::SmartHealth,
            0x03 => Self::FirmwareSlot,
            0x04 => Self::ChangedNsList,
            0x05 => Self::CommandEffects,
            0x0C => Self::Ana,
            0x70 => Self::Discovery,
            other => Self::Unknown(other),
        }
    }
    pub fn code(self) -> u8 {
        match self {
            Self::SupportedLogPages => 0x00,
            Self::ErrorInformation => 0x01,
            Self::SmartHealth => 0x02,
            Self::FirmwareSlot => 0x03,
            Self::ChangedNsList => 0x04,
            Self::CommandEffects => 0x05,
            Self::Ana => 0x0C,
            Self::Discovery => 0x70,
            Self::Unknown(v) => v,
        }
    }
}

/// Get Log Page command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPageCommand {
    pub nsid: u32,
    pub lid: LogPageId,
    /// Log specific parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain asynchronous event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords, 0-based: `NUMDU << 16 | NUMDL`.
    pub numd: u32,
    /// Log specific identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Log page offset in bytes (`LPOU << 32 | LPOL`).
    pub lpo: u64,
    /// CDW14 bits 6:0.
    pub uuid_index: u8,
    /// CDW14 bits 31:24.
    pub csi: u8,
    /// SGL length the host gave.
    pub data_len: u32,
}

impl GetLogPageCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            lid: LogPageId::from_u8(sqe.cdw10 as u8),
            lsp: ((sqe.cdw10 >> 8) & 0x7F) as u8,
            rae: sqe.cdw10 & (1 << 15) != 0,
            numd: (sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16),
            lsi: (sqe.cdw11 >> 16) as u16,
            lpo: u64::from(sqe.cdw12) | (u64::from(sqe.cdw13) << 32),
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            csi: (sqe.cdw14 >> 24) as u8,
            data_len: sqe.sgl.length,
        }
    }

    /// A command reading `len` bytes (a positive multiple of 4) at `lpo`.
    pub fn new(lid: LogPageId, nsid: u32, lpo: u64, len: u32) -> Self {
        Self {
            nsid,
            lid,
            lsp: 0,
            rae: false,
            numd: (len / 4).saturating_sub(1),
            lsi: 0,
            lpo,
            uuid_index: 0,
            csi: 0,
            data_len: len,
        }
    }

    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            opcode: 0x02,
            flags: FLAGS_PSDT_SGL,
            cid,
            nsid: self.nsid,
            sgl: SglDescriptor::transport(self.data_len),
            cdw10: u32::from(self.lid.code())
                | (u32::from(self.lsp & 0x7F) << 8)
                | (u32::from(self.rae) << 15)
                | ((self.numd & 0xFFFF) << 16),
            cdw11: (self.numd >> 16) | (u32::from(self.lsi) << 16),
            cdw12: self.lpo as u32,
            cdw13: (self.lpo >> 32) as u32,
            cdw14: u32::from(self.uuid_index & 0x7F) | (u32::from(self.csi) << 24),
            ..Sqe::default()
        }
    }

    /// Bytes to transfer: `(NUMD + 1) * 4`.
    pub fn transfer_len(&self) -> u64 {
        (u64::from(self.numd) + 1) * 4
    }

    /// Checks what the command itself can be blamed for: LPO dword aligned and the SGL
    /// length equal to the NUMD length. (LPO beyond the end of a log is checked by
    /// [`log_window`], which knows the log size.)
    pub fn validate(&self) -> Result<(), WireError> {
        if self.lpo & 3 != 0 {
            return Err(WireError::InvalidField {
                structure: "Get Log Page",
                field: "LPOL",
                offset: 48,
                value: self.lpo,
            });
        }
        if u64::from(self.data_len) != self.transfer_len() {
            return Err(WireError::InvalidField {
                structure: "Get Log Page",
                field: "SGL length",
                offset: 32,
                value: self.data_len.into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for GetLogPageCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Get Log Page lid={:#04x} nsid={:#x} lpo={} len={} lsp={:#x} rae={}",
            self.lid.code(),
            self.nsid,
            self.lpo,
            self.transfer_len(),
            self.lsp,
            self.rae as u8
        )
    }
}

/// Copies `log[lpo..]` into `out`, zero-filling past the end of the log. An offset beyond
/// the end of the log is an error (Invalid Field). `lpo == log.len()` with a non-empty
/// `out` is also past the end.
pub fn log_window(log: &[u8], lpo: u64, out: &mut [u8]) -> Result<(), WireError> {
    let start = usize::try_from(lpo)
        .ok()
        .filter(|&s| s < log.len() || (s == 0 && log.is_empty()));
    let Some(start) = start else {
        return Err(WireError::InvalidField {
            structure: "Get Log Page",
            field: "LPO beyond the log",
            offset: 48,
            value: lpo,
        });
    };
    let src = log.get(start..).unwrap_or_default();
    let n = src.len().min(out.len());
    let (head, tail) = out.split_at_mut(n);
    head.copy_from_slice(src.get(..n).unwrap_or_default());
    tail.fill(0);
    Ok(())
}

/// Zerocopy layout of one Error Information log entry (64 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ErrorLogEntryRaw {
    pub error_count: U64,
    pub sqid: U16,
    pub cid: U16,
    pub status: U16,
    pub param_error_location: U16,
    pub lba: U64,
    pub nsid: U32,
    pub vendor_info: u8,
    pub trtype: u8,
    pub reserved30: [u8; 2],
    pub command_specific: U64,
    pub reserved40: [u8; 24],
}
assert_layout!(ErrorLogEntryRaw, 64;
    error_count @ 0, sqid @ 8, cid @ 10, status @ 12, param_error_location @ 14, lba @ 16,
    nsid @ 24, vendor_info @ 28, trtype @ 29, command_specific @ 32, reserved40 @ 40);

/// A parsed Error Information log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorLogEntry {
    /// 0 = empty entry.
    pub error_count: u64,
    pub sqid: u16,
    pub cid: u16,
    /// CQE status bits 15:1 as written (phase 0).
    pub status: u16,
    /// Byte offset in the SQE (0xFFFF = n/a).
    pub param_error_location: u16,
    pub lba: u64,
    pub nsid: u32,
    pub vendor_info: u8,
    pub trtype: u8,
    pub command_specific: u64,
}

impl ErrorLogEntry {
    pub const LEN: usize = 64;

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: ErrorLogEntryRaw = read_exact("Error log entry", bytes)?;
        Ok(Self {
            error_count: r.error_count.get(),
            sqid: r.sqid.get(),
            cid: r.cid.get(),
            status: r.status.get(),
            param_error_location: r.param_error_location.get(),
            lba: r.lba.get(),
            nsid: r.nsid.get(),
            vendor_info: r.vendor_info,
            trtype: r.trtype,
            command_specific: r.command_specific.get(),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut r = ErrorLogEntryRaw::new_zeroed();
        r.error_count.set(self.error_count);
        r.sqid.set(self.sqid);
        r.cid.set(self.cid);
        r.status.set(self.status);
        r.param_error_location.set(self.param_error_location);
        r.lba.set(self.lba);
        r.nsid.set(self.nsid);
        r.vendor_info = self.vendor_info;
        r.trtype = self.trtype;
        r.command_specific.set(self.command_specific);
        write_prefix("Error log entry", buf, r.as_bytes())
    }
}

impl fmt::Display for ErrorLogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Error #{} sqid={} cid={:#06x} status={:#06x} loc={:#x} nsid={} lba={}",
            self.error_count,
            self.sqid,
            self.cid,
            self.status,
            self.param_error_location,
            self.nsid,
            self.lba
        )
    }
}

/// Zerocopy layout of the SMART / Health log (512 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SmartLogRaw {
    pub critical_warning: u8,
    pub temperature: U16,
    pub avail_spare: u8,
    pub spare_thresh: u8,
    pub percent_used: u8,
    pub endu_grp_crit_warn: u8,
    pub reserved7: [u8; 25],
    pub data_units_read: [u8; 16],
    pub data_units_written: [u8; 16],
    pub host_reads: [u8; 16],
    pub host_writes: [u8; 16],
    pub ctrl_busy_time: [u8; 16],
    pub power_cycles: [u8; 16],
    pub power_on_hours: [u8; 16],
    pub unsafe_shutdowns: [u8; 16],
    pub media_errors: [u8; 16],
    pub num_err_log_entries: [u8; 16],
    pub warning_temp_time: U32,
    pub critical_comp_time: U32,
    pub temp_sensor: [U16; 8],
    pub reserved216: [u8; 296],
}
assert_layout!(SmartLogRaw, 512;
    critical_warning @ 0, temperature @ 1, avail_spare @ 3, spare_thresh @ 4, percent_used @ 5,
    endu_grp_crit_warn @ 6, data_units_read @ 32, data_units_written @ 48, host_reads @ 64,
    host_writes @ 80, ctrl_busy_time @ 96, power_cycles @ 112, power_on_hours @ 128,
    unsafe_shutdowns @ 144, media_errors @ 160, num_err_log_entries @ 176,
    warning_temp_time @ 192, critical_comp_time @ 196, temp_sensor @ 200, reserved216 @ 216);

/// Parsed SMART / Health log. 128-bit counters as `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmartLog {
    pub critical_warning: u8,
    /// Composite temperature in Kelvin.
    pub temperature: u16,
    pub avail_spare: u8,
    pub spare_thresh: u8,
    pub percent_used: u8,
    pub endu_grp_crit_warn: u8,
    /// In units of 1000 × 512 bytes, rounded up.
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub host_reads: u128,
    pub host_writes: u128,
    pub ctrl_busy_time: u128,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub num_err_log_entries: u128,
    pub warning_temp_time: u32,
    pub critical_comp_time: u32,
    pub temp_sensor: [u16; 8],
}

impl SmartLog {
    pub const LEN: usize = 512;

    /// Data units (1000 × 512 bytes, rounded up) for a byte count.
    pub fn data_units(bytes: u64) -> u128 {
        u128::from(bytes).div_ceil(512_000)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: SmartLogRaw = read_exact("SMART log", bytes)?;
        let mut temp_sensor = [0u16; 8];
        for (d, s) in temp_sensor.iter_mut().zip(r.temp_sensor.iter()) {
            *d = s.get();
        }
        Ok(Self {
            critical_warning: r.critical_warning,
            temperature: r.temperature.get(),
            avail_spare: r.avail_spare,
            spare_thresh: r.spare_thresh,
            percent_used: r.percent_used,
            endu_grp_crit_warn: r.endu_grp_crit_warn,
            data_units_read: u128::from_le_bytes(r.data_units_read),
            data_units_written: u128::from_le_bytes(r.data_units_written),
            host_reads: u128::from_le_bytes(r.host_reads),
            host_writes: u128::from_le_bytes(r.host_writes),
            ctrl_busy_time: u128::from_le_bytes(r.ctrl_busy_time),
            power_cycles: u128::from_le_bytes(r.power_cycles),
            power_on_hours: u128::from_le_bytes(r.power_on_hours),
            unsafe_shutdowns: u128::from_le_bytes(r.unsafe_shutdowns),
            media_errors: u128::from_le_bytes(r.media_errors),
            num_err_log_entries: u128::from_le_bytes(r.num_err_log_entries),
            warning_temp_time: r.warning_temp_time.get(),
            critical_comp_time: r.critical_comp_time.get(),
            temp_sensor,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut r = SmartLogRaw::new_zeroed();
        r.critical_warning = self.critical_warning;
        r.temperature.set(self.temperature);
        r.avail_spare = self.avail_spare;
        r.spare_thresh = self.spare_thresh;
        r.percent_used = self.percent_used;
        r.endu_grp_crit_warn = self.endu_grp_crit_warn;
        r.data_units_read = self.data_units_read.to_le_bytes();
        r.data_units_written = self.data_units_written.to_le_bytes();
        r.host_reads = self.host_reads.to_le_bytes();
        r.host_writes = self.host_writes.to_le_bytes();
        r.ctrl_busy_time = self.ctrl_busy_time.to_le_bytes();
        r.power_cycles = self.power_cycles.to_le_bytes();
        r.power_on_hours = self.power_on_hours.to_le_bytes();
        r.unsafe_shutdowns = self.unsafe_shutdowns.to_le_bytes();
        r.media_errors = self.media_errors.to_le_bytes();
        r.num_err_log_entries = self.num_err_log_entries.to_le_bytes();
        r.warning_temp_time.set(self.warning_temp_time);
        r.critical_comp_time.set(self.critical_comp_time);
        for (d, s) in r.temp_sensor.iter_mut().zip(self.temp_sensor.iter()) {
            d.set(*s);
        }
        write_prefix("SMART log", buf, r.as_bytes())
    }
}

impl fmt::Display for SmartLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SMART temp={}K spare={}% used={}% units r/w={}/{} cmds r/w={}/{}",
            self.temperature,
            self.avail_spare,
            self.percent_used,
            self.data_units_read,
            self.data_units_written,
            self.host_reads,
            self.host_writes
        )
    }
}

/// Firmware Slot Information log (512 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirmwareSlotLog {
    /// Active firmware info: bits 2:0 active slot, bits 6:4 slot active after reset.
    pub afi: u8,
    /// FRS1..FRS7.
    pub frs: [[u8; 8]; 7],
}

impl FirmwareSlotLog {
    pub const LEN: usize = 512;

    /// AFI = 1 and FRS1 = `fr`.
    pub fn single(fr: [u8; 8]) -> Self {
        let mut frs = [[0u8; 8]; 7];
        frs[0] = fr;
        Self { afi: 1, frs }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        super::check_exact_len("Firmware slot log", bytes, Self::LEN)?;
        let mut frs = [[0u8; 8]; 7];
        for (i, slot) in frs.iter_mut().enumerate() {
            if let Some(s) = bytes.get(8 + i * 8..16 + i * 8) {
                slot.copy_from_slice(s);
            }
        }
        Ok(Self {
            afi: bytes.first().copied().unwrap_or(0),
            frs,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut out = [0u8; Self::LEN];
        out[0] = self.afi;
        for (chunk, s) in out[8..64].chunks_exact_mut(8).zip(self.frs.iter()) {
            chunk.copy_from_slice(s);
        }
        write_prefix("Firmware slot log", buf, &out)
    }
}

impl fmt::Display for FirmwareSlotLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Firmware slots afi={:#x} frs1='{}'",
            self.afi,
            trim_padded(&self.frs[0])
        )
    }
}

/// Commands Supported and Effects entry bits.
pub mod effects {
    pub const CSUPP: u32 = 1 << 0;
    pub const LBCC: u32 = 1 << 1;
    pub const NCC: u32 = 1 << 2;
    pub const NIC: u32 = 1 << 3;
    pub const CCC: u32 = 1 << 4;
}

/// Commands Supported and Effects log (4096 bytes): ACS[256] then IOCS[256].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEffectsLog {
    pub admin: [u32; 256],
    pub io: [u32; 256],
}

impl CommandEffectsLog {
    pub const LEN: usize = 4096;

    pub fn empty() -> Self {
        Self {
            admin: [0; 256],
            io: [0; 256],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        super::check_exact_len("Commands effects log", bytes, Self::LEN)?;
        let mut l = Self::empty();
        let words = bytes
            .chunks_exact(4)
            .map(|c| c.try_into().map_or(0, u32::from_le_bytes));
        for (d, w) in l.admin.iter_mut().chain(l.io.iter_mut()).zip(words) {
            *d = w;
        }
        Ok(l)
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let Some(out) = buf.get_mut(..Self::LEN) else {
            return Err(WireError::Truncated {
                structure: "Commands effects log",
                need: Self::LEN as u64,
                got: buf.len() as u64,
            });
        };
        out.fill(0);
        for (chunk, w) in out
            .chunks_exact_mut(4)
            .zip(self.admin.iter().chain(self.io.iter()))
        {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        Ok(())
    }
}

impl fmt::Display for CommandEffectsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self
            .admin
            .iter()
            .filter(|&&w| w & effects::CSUPP != 0)
            .count();
        let i = self.io.iter().filter(|&&w| w & effects::CSUPP != 0).count();
        write!(f, "Commands effects: {a} admin, {i} I/O supported")
    }
}

/// Discovery log transport types (TRTYPE).
pub mod trtype {
    pub const RDMA: u8 = 1;
    pub const FC: u8 = 2;
    pub const TCP: u8 = 3;
    pub const LOOP: u8 = 254;
}
/// Address families (ADRFAM).
pub mod adrfam {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
}
/// Subsystem types (SUBTYPE).
pub mod subtype {
    pub const REFERRAL: u8 = 1;
    pub const NVM: u8 = 2;
    pub const CURRENT_DISCOVERY: u8 = 3;
}
/// TREQ bits.
pub mod treq {
    pub const SECURE_CHANNEL_REQUIRED: u8 = 1;
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    pub const DISABLE_SQFLOW_SUPPORTED: u8 = 1 << 2;
}

/// Zerocopy layout of the Discovery log header (1024 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogHeaderRaw {
    pub genctr: U64,
    pub numrec: U64,
    pub recfmt: U16,
    pub reserved18: [u8; 1006],
}
assert_layout!(DiscoveryLogHeaderRaw, 1024; genctr @ 0, numrec @ 8, recfmt @ 16, reserved18 @ 18);

define_view!(
    /// Zero-copy view of the Discovery log header.
    DiscoveryLogHeaderView, DiscoveryLogHeaderRaw, "Discovery log header"
);
view_accessors!(DiscoveryLogHeaderView;
    /// Generation counter.
    genctr / set_genctr: u64;
    /// Number of records.
    numrec / set_numrec: u64;
    /// Record format (0).
    recfmt / set_recfmt: u16;
);

/// Parsed Discovery log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscoveryLogHeader {
    pub genctr: u64,
    pub numrec: u64,
    pub recfmt: u16,
}

impl DiscoveryLogHeader {
    pub const LEN: usize = 1024;

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: DiscoveryLogHeaderRaw = read_exact("Discovery log header", bytes)?;
        Ok(Self {
            genctr: r.genctr.get(),
            numrec: r.numrec.get(),
            recfmt: r.recfmt.get(),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut r = DiscoveryLogHeaderRaw::new_zeroed();
        r.genctr.set(self.genctr);
        r.numrec.set(self.numrec);
        r.recfmt.set(self.recfmt);
        write_prefix("Discovery log header", buf, r.as_bytes())
    }
}

impl fmt::Display for DiscoveryLogHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Discovery log genctr={} numrec={} recfmt={}",
            self.genctr, self.numrec, self.recfmt
        )
    }
}

/// Zerocopy layout of one Discovery log entry (1024 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogEntryRaw {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    pub portid: U16,
    pub cntlid: U16,
    pub asqsz: U16,
    pub eflags: U16,
    pub reserved12: [u8; 20],
    pub trsvcid: [u8; 32],
    pub reserved64: [u8; 192],
    pub subnqn: [u8; 256],
    pub traddr: [u8; 256],
    pub tsas: [u8; 256],
}
assert_layout!(DiscoveryLogEntryRaw, 1024;
    trtype @ 0, adrfam @ 1, subtype @ 2, treq @ 3, portid @ 4, cntlid @ 6, asqsz @ 8,
    eflags @ 10, reserved12 @ 12, trsvcid @ 32, reserved64 @ 64, subnqn @ 256, traddr @ 512,
    tsas @ 768);

define_view!(
    /// Zero-copy view of a Discovery log entry.
    DiscoveryLogEntryView, DiscoveryLogEntryRaw, "Discovery log entry"
);
view_accessors!(DiscoveryLogEntryView;
    trtype / set_trtype: u8;
    adrfam / set_adrfam: u8;
    subtype / set_subtype: u8;
    treq / set_treq: u8;
    portid / set_portid: u16;
    cntlid / set_cntlid: u16;
    asqsz / set_asqsz: u16;
    eflags / set_eflags: u16;
);
view_bytes!(DiscoveryLogEntryView;
    /// Transport service id (port), ASCII.
    trsvcid / set_trsvcid;
    /// Subsystem NQN, NUL terminated.
    subnqn / set_subnqn;
    /// Transport address, ASCII.
    traddr / set_traddr;
    /// Transport specific address subtype (TCP: byte 0 SECTYPE).
    tsas / set_tsas;
);

/// Parsed Discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLogEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    pub portid: u16,
    pub cntlid: u16,
    pub asqsz: u16,
    pub eflags: u16,
    pub trsvcid: String,
    pub subnqn: String,
    pub traddr: String,
    /// TCP: SECTYPE (TSAS byte 0).
    pub sectype: u8,
}

impl DiscoveryLogEntry {
    pub const LEN: usize = 1024;

    /// An NVMe/TCP entry with CNTLID 0xFFFF and ASQSZ 32.
    pub fn tcp(
        subtype: u8,
        adrfam: u8,
        portid: u16,
        traddr: &str,
        trsvcid: &str,
        subnqn: &str,
    ) -> Self {
        Self {
            trtype: trtype::TCP,
            adrfam,
            subtype,
            treq: treq::SECURE_CHANNEL_NOT_REQUIRED,
            portid,
            cntlid: 0xFFFF,
            asqsz: 32,
            eflags: 0,
            trsvcid: trsvcid.to_owned(),
            subnqn: subnqn.to_owned(),
            traddr: traddr.to_owned(),
            sectype: 0,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: DiscoveryLogEntryRaw = read_exact("Discovery log entry", bytes)?;
        let text = |field: &[u8]| trim_padded(nul_terminated(field)).into_owned();
        Ok(Self {
            trtype: r.trtype,
            adrfam: r.adrfam,
            subtype: r.subtype,
            treq: r.treq,
            portid: r.portid.get(),
            cntlid: r.cntlid.get(),
            asqsz: r.asqsz.get(),
            eflags: r.eflags.get(),
            trsvcid: text(&r.trsvcid),
            subnqn: text(&r.subnqn),
            traddr: text(&r.traddr),
            sectype: r.tsas[0],
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut r = DiscoveryLogEntryRaw::new_zeroed();
        r.trtype = self.trtype;
        r.adrfam = self.adrfam;
        r.subtype = self.subtype;
        r.treq = self.treq;
        r.portid.set(self.portid);
        r.cntlid.set(self.cntlid);
        r.asqsz.set(self.asqsz);
        r.eflags.set(self.eflags);
        r.trsvcid = nul_padded(&self.trsvcid);
        r.subnqn = nul_padded(&self.subnqn);
        r.traddr = nul_padded(&self.traddr);
        r.tsas[0] = self.sectype;
        write_prefix("Discovery log entry", buf, r.as_bytes())
    }
}

impl fmt::Display for DiscoveryLogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Discovery entry trtype={} subtype={} treq={:#x} portid={} {}:{} {}",
            self.trtype,
            self.subtype,
            self.treq,
            self.portid,
            self.traddr,
            self.trsvcid,
            self.subnqn
        )
    }
}

/// Builds a whole Discovery log (header + entries) as one buffer, to be windowed with
/// [`log_window`] (a consistent snapshot per request).
pub fn build_discovery_log(
    genctr: u64,
    entries: &[DiscoveryLogEntry],
) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; DiscoveryLogHeader::LEN + entries.len() * DiscoveryLogEntry::LEN];
    DiscoveryLogHeader {
        genctr,
        numrec: entries.len() as u64,
        recfmt: 0,
    }
    .emit(&mut out)?;
    for (chunk, e) in out
        .get_mut(DiscoveryLogHeader::LEN..)
        .unwrap_or_default()
        .chunks_exact_mut(DiscoveryLogEntry::LEN)
        .zip(entries)
    {
        e.emit(chunk)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn command_fields() {
        let mut s = Sqe::new(0x02, 1, 0xFFFF_FFFF);
        // LID 0x70, LSP 1, RAE, NUMDL 0xFFFF; NUMDU 1; LSI 5; LPO 0x1_0000_0400.
        s.cdw10 = 0x70 | (1 << 8) | (1 << 15) | (0xFFFF << 16);
        s.cdw11 = 1 | (5 << 16);
        s.cdw12 = 0x400;
        s.cdw13 = 1;
        s.cdw14 = 0x0300_0002;
        s.sgl = SglDescriptor::transport(0x8_0000);
        let c = GetLogPageCommand::from_sqe(&s);
        assert_eq!(c.lid, LogPageId::Discovery);
        assert_eq!((c.lsp, c.rae, c.numd, c.lsi), (1, true, 0x1_FFFF, 5));
        assert_eq!((c.lpo, c.uuid_index, c.csi), (0x1_0000_0400, 2, 3));
        assert_eq!(c.transfer_len(), 0x8_0000);
        assert!(c.validate().is_ok());
        assert_eq!(GetLogPageCommand::from_sqe(&c.to_sqe(1)), c);
        // Maximum NUMD does not overflow.
        let max = GetLogPageCommand {
            numd: u32::MAX,
            ..c
        };
        assert_eq!(max.transfer_len(), 1 << 34);
        assert!(max.validate().is_err());
        let unaligned = GetLogPageCommand { lpo: 2, ..c };
        assert!(matches!(
            unaligned.validate(),
            Err(WireError::InvalidField { offset: 48, .. })
        ));
        // libnvme's first discovery read: 20 bytes = NUMD 4.
        let hdr = GetLogPageCommand::new(LogPageId::Discovery, 0, 0, 20);
        assert_eq!((hdr.numd, hdr.transfer_len()), (4, 20));
        for v in 0..=255u8 {
            assert_eq!(LogPageId::from_u8(v).code(), v);
        }
        assert!(c.to_string().contains("lid=0x70"));
    }

    #[test]
    fn windowing() {
        let log: Vec<u8> = (0..100u8).collect();
        let mut out = [0xFFu8; 8];
        log_window(&log, 96, &mut out).unwrap();
        assert_eq!(out, [96, 97, 98, 99, 0, 0, 0, 0]);
        log_window(&log, 0, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(log_window(&log, 100, &mut out).is_err());
        assert!(log_window(&log, u64::MAX, &mut out).is_err());
        let mut big = [0xFFu8; 512];
        log_window(&[], 0, &mut big).unwrap();
        assert!(big.iter().all(|&b| b == 0));
    }

    #[test]
    fn error_entry_by_hand() {
        let mut b = [0u8; 64];
        put64(&mut b, 0, 3);
        put16(&mut b, 8, 1);
        put16(&mut b, 10, 0x1002);
        put16(&mut b, 12, 0x4004);
        put16(&mut b, 14, 0xFFFF);
        put64(&mut b, 16, 77);
        put32(&mut b, 24, 1);
        b[29] = 3;
        put64(&mut b, 32, 9);
        let e = ErrorLogEntry::parse(&b).unwrap();
        assert_eq!(
            (e.error_count, e.sqid, e.cid, e.status),
            (3, 1, 0x1002, 0x4004)
        );
        assert_eq!(
            (
                e.param_error_location,
                e.lba,
                e.nsid,
                e.trtype,
                e.command_specific
            ),
            (0xFFFF, 77, 1, 3, 9)
        );
        let mut out = [0u8; 64];
        e.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert!(ErrorLogEntry::parse(&b[..63]).is_err());
        assert!(e.to_string().contains("Error #3"));
    }

    #[test]
    fn smart_by_hand() {
        let mut b = [0u8; 512];
        put16(&mut b, 1, 300);
        b[3] = 100;
        b[4] = 10;
        put64(&mut b, 32, 5);
        put64(&mut b, 48, 6);
        put64(&mut b, 64, 7);
        put64(&mut b, 80, 8);
        put64(&mut b, 112, 1);
        put64(&mut b, 176, 2);
        put32(&mut b, 192, 11);
        put16(&mut b, 200, 301);
        put16(&mut b, 214, 302);
        let s = SmartLog::parse(&b).unwrap();
        assert_eq!(
            (s.temperature, s.avail_spare, s.spare_thresh),
            (300, 100, 10)
        );
        assert_eq!(
            (
                s.data_units_read,
                s.data_units_written,
                s.host_reads,
                s.host_writes
            ),
            (5, 6, 7, 8)
        );
        assert_eq!(
            (s.power_cycles, s.num_err_log_entries, s.warning_temp_time),
            (1, 2, 11)
        );
        assert_eq!((s.temp_sensor[0], s.temp_sensor[7]), (301, 302));
        let mut out = [0u8; 512];
        s.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert_eq!(SmartLog::data_units(0), 0);
        assert_eq!(SmartLog::data_units(1), 1);
        assert_eq!(SmartLog::data_units(512_000), 1);
        assert_eq!(SmartLog::data_units(512_001), 2);
        assert!(SmartLog::parse(&[0; 513]).is_err());
        assert!(s.to_string().contains("temp=300K"));
    }

    #[test]
    fn firmware_slots() {
        let l = FirmwareSlotLog::single(*b"0.1     ");
        let mut b = [0u8; 512];
        l.emit(&mut b).unwrap();
        assert_eq!(b[0], 1);
        assert_eq!(&b[8..16], b"0.1     ");
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(FirmwareSlotLog::parse(&b).unwrap(), l);
        assert!(l.to_string().contains("frs1='0.1'"));
    }

    #[test]
    fn command_effects() {
        let mut l = CommandEffectsLog::empty();
        l.admin[0x06] = effects::CSUPP;
        l.io[0x01] = effects::CSUPP | effects::LBCC;
        let mut b = vec![0u8; 4096];
        l.emit(&mut b).unwrap();
        assert_eq!(&b[0x06 * 4..0x06 * 4 + 4], &[1, 0, 0, 0]);
        assert_eq!(&b[1024 + 4..1024 + 8], &[3, 0, 0, 0]);
        assert_eq!(CommandEffectsLog::parse(&b).unwrap(), l);
        assert_eq!(l.to_string(), "Commands effects: 1 admin, 1 I/O supported");
    }

    #[test]
    fn discovery_by_hand() {
        let mut e = vec![0u8; 1024];
        e[0] = 3;
        e[1] = 1;
        e[2] = 2;
        e[3] = 2;
        put16(&mut e, 4, 1);
        put16(&mut e, 6, 0xFFFF);
        put16(&mut e, 8, 32);
        put(&mut e, 32, b"4420");
        put(&mut e, 256, b"nqn.2024-01.io.example:pool");
        put(&mut e, 512, b"127.0.0.1");
        let want = DiscoveryLogEntry::tcp(
            subtype::NVM,
            adrfam::IPV4,
            1,
            "127.0.0.1",
            "4420",
            "nqn.2024-01.io.example:pool",
        );
        assert_eq!(DiscoveryLogEntry::parse(&e).unwrap(), want);
        let mut out = vec![0u8; 1024];
        want.emit(&mut out).unwrap();
        assert_eq!(out, e);
        let v = DiscoveryLogEntryView::new_checked(&e[..]).unwrap();
        assert_eq!(
            (v.trtype(), v.subtype(), v.portid(), v.cntlid(), v.asqsz()),
            (3, 2, 1, 0xFFFF, 32)
        );
        assert_eq!(&v.trsvcid()[..4], b"4420");
        // Space-padded TRSVCID (libnvme trims).
        put(&mut e, 32, b"4420                            ");
        assert_eq!(DiscoveryLogEntry::parse(&e).unwrap().trsvcid, "4420");
        assert!(want.to_string().contains("127.0.0.1:4420"));

        let log = build_discovery_log(7, &[want.clone(), want.clone()]).unwrap();
        assert_eq!(log.len(), 1024 * 3);
        let h = DiscoveryLogHeader::parse(&log[..1024]).unwrap();
        assert_eq!((h.genctr, h.numrec, h.recfmt), (7, 2, 0));
        assert_eq!(&log[..8], &7u64.to_le_bytes());
        assert_eq!(&log[8..16], &2u64.to_le_bytes());
        let hv = DiscoveryLogHeaderView::new_checked(&log[..]).unwrap();
        assert_eq!((hv.genctr(), hv.numrec()), (7, 2));
        // The libnvme sequence: 20-byte header read, then entries at LPO 1024.
        let mut first = [0u8; 20];
        log_window(&log, 0, &mut first).unwrap();
        assert_eq!(&first[8..16], &2u64.to_le_bytes());
        let mut entries = vec![0u8; 2048];
        log_window(&log, 1024, &mut entries).unwrap();
        assert_eq!(DiscoveryLogEntry::parse(&entries[1024..]).unwrap(), want);
        assert!(h.to_string().contains("numrec=2"));
    }
}

//! Identify (admin opcode 0x06): command fields, CNS values and the 4096-byte data
//! structures: Identify Controller (CNS 0x01), Identify Namespace (CNS 0x00), Active
//! Namespace ID list (CNS 0x02), Namespace Identification Descriptor list (CNS 0x03) and the
//! I/O-command-set-independent Identify Namespace (CNS 0x08).
//!
//! Invariants: every structure is exactly 4096 bytes with offsets asserted at compile time;
//! parsed forms keep the fields the Linux host reads (reserved and unmodelled bytes read as
//! zero when emitted); list parsers bound every length by the 4096-byte buffer.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::sgl::SglDescriptor;
use super::sqe::{Sqe, FLAGS_PSDT_SGL};
use super::{
    assert_layout, define_view, nul_padded, read_exact, space_padded, trim_padded, view_accessors,
    view_bytes, write_prefix, WireError,
};

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_LEN: usize = 4096;

/// Identify CNS values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cns {
    Namespace,
    Controller,
    ActiveNsList,
    NsIdDescriptors,
    CsiNamespace,
    CsiController,
    CsiActiveNsList,
    IndependentNamespace,
    Unknown(u8),
}

impl Cns {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x00 => Self::Namespace,
            0x01 => Self::Controller,
            0x02 => Self::ActiveNsList,
            0x03 => Self::NsIdDescriptors,
            0x05 => Self::CsiNamespace,
            0x06 => Self::CsiController,
            0x07 => Self::CsiActiveNsList,
            0x08 => Self::IndependentNamespace,
            other => Self::Unknown(other),
        }
    }
    pub fn code(self) -> u8 {
        match self {
            Self::Namespace => 0x00,
            Self::Controller => 0x01,
            Self::ActiveNsList => 0x02,
            Self::NsIdDescriptors => 0x03,
            Self::CsiNamespace => 0x05,
            Self::CsiController => 0x06,
            Self::CsiActiveNsList => 0x07,
            Self::IndependentNamespace => 0x08,
            Self::Unknown(v) => v,
        }
    }
}

/// Identify command fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyCommand {
    pub nsid: u32,
    /// CDW10 bits 7:0.
    pub cns: Cns,
    /// CDW10 bits 31:16.
    pub cntid: u16,
    /// CDW11 bits 15:0.
    pub cnssid: u16,
    /// CDW11 bits 31:24.
    pub csi: u8,
    /// CDW14 bits 6:0.
    pub uuid_index: u8,
    /// SGL length the host gave (must be 4096).
    pub data_len: u32,
}

impl IdentifyCommand {
    pub fn from_sqe(sqe: &Sqe) -> Self {
        Self {
            nsid: sqe.nsid,
            cns: Cns::from_u8(sqe.cdw10 as u8),
            cntid: (sqe.cdw10 >> 16) as u16,
            cnssid: sqe.cdw11 as u16,
            csi: (sqe.cdw11 >> 24) as u8,
            uuid_index: (sqe.cdw14 & 0x7F) as u8,
            data_len: sqe.sgl.length,
        }
    }

    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            opcode: 0x06,
            flags: FLAGS_PSDT_SGL,
            cid,
            nsid: self.nsid,
            sgl: SglDescriptor::transport(self.data_len),
            cdw10: u32::from(self.cns.code()) | (u32::from(self.cntid) << 16),
            cdw11: u32::from(self.cnssid) | (u32::from(self.csi) << 24),
            cdw14: u32::from(self.uuid_index & 0x7F),
            ..Sqe::default()
        }
    }
}

impl fmt::Display for IdentifyCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identify cns={:#04x} nsid={:#x} cntid={} csi={} len={}",
            self.cns.code(),
            self.nsid,
            self.cntid,
            self.csi,
            self.data_len
        )
    }
}

/// CMIC bits.
pub mod cmic {
    pub const MULTI_PORT: u8 = 1 << 0;
    pub const MULTI_CONTROLLER: u8 = 1 << 1;
    pub const ANA: u8 = 1 << 3;
}
/// OAES bits.
pub mod oaes {
    pub const NS_ATTR: u32 = 1 << 8;
    pub const FW_ACTIVATION: u32 = 1 << 9;
    pub const ANA_CHANGE: u32 = 1 << 11;
    pub const DISCOVERY_CHANGE: u32 = 1 << 31;
}
/// CTRATT bits.
pub mod ctratt {
    pub const HOST_ID_128: u32 = 1 << 0;
    pub const TBKAS: u32 = 1 << 6;
    pub const ELBAS: u32 = 1 << 15;
}
/// LPA bits.
pub mod lpa {
    pub const SMART_PER_NS: u8 = 1 << 0;
    pub const CMD_EFFECTS: u8 = 1 << 1;
    pub const EXTENDED: u8 = 1 << 2;
}
/// ONCS bits.
pub mod oncs {
    pub const COMPARE: u16 = 1 << 0;
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    pub const DSM: u16 = 1 << 2;
    pub const WRITE_ZEROES: u16 = 1 << 3;
    pub const SAVE_SELECT: u16 = 1 << 4;
    pub const RESERVATIONS: u16 = 1 << 5;
    pub const TIMESTAMP: u16 = 1 << 6;
}
/// VWC bits.
pub mod vwc {
    pub const PRESENT: u8 = 1 << 0;
    /// Bits 2:1 = 10b: Flush with NSID 0xFFFFFFFF not supported.
    pub const FLUSH_ALL_UNSUPPORTED: u8 = 0b10 << 1;
    /// Bits 2:1 = 11b: Flush with NSID 0xFFFFFFFF supported.
    pub const FLUSH_ALL_SUPPORTED: u8 = 0b11 << 1;
}
/// SGLS bits.
pub mod sgls {
    /// Bits 1:0 = 01b: SGLs supported, no alignment requirement.
    pub const SUPPORTED: u32 = 0b01;
    pub const KEYED: u32 = 1 << 2;
    /// Bit 20: SGL offset (in-capsule data) supported.
    pub const OFFSET: u32 = 1 << 20;
}
/// CNTRLTYPE values.
pub mod cntrltype {
    pub const IO: u8 = 1;
    pub const DISCOVERY: u8 = 2;
    pub const ADMIN: u8 = 3;
}

/// Zerocopy layout of Identify Controller.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyControllerRaw {
    pub vid: U16,
    pub ssvid: U16,
    pub sn: [u8; 20],
    pub mn: [u8; 40],
    pub fr: [u8; 8],
    pub rab: u8,
    pub ieee: [u8; 3],
    pub cmic: u8,
    pub mdts: u8,
    pub cntlid: U16,
    pub ver: U32,
    pub rtd3r: U32,
    pub rtd3e: U32,
    pub oaes: U32,
    pub ctratt: U32,
    pub rrls: U16,
    pub reserved102: [u8; 9],
    pub cntrltype: u8,
    pub fguid: [u8; 16],
    pub crdt1: U16,
    pub crdt2: U16,
    pub crdt3: U16,
    pub reserved134: [u8; 122],
    pub oacs: U16,
    pub acl: u8,
    pub aerl: u8,
    pub frmw: u8,
    pub lpa: u8,
    pub elpe: u8,
    pub npss: u8,
    pub avscc: u8,
    pub apsta: u8,
    pub wctemp: U16,
    pub cctemp: U16,
    pub reserved270: [u8; 50],
    pub kas: U16,
    pub reserved322: [u8; 20],
    pub anatt: u8,
    pub anacap: u8,
    pub anagrpmax: U32,
    pub nanagrpid: U32,
    pub reserved352: [u8; 160],
    pub sqes: u8,
    pub cqes: u8,
    pub maxcmd: U16,
    pub nn: U32,
    pub oncs: U16,
    pub fuses: U16,
    pub fna: u8,
    pub vwc: u8,
    pub awun: U16,
    pub awupf: U16,
    pub nvscc: u8,
    pub nwpc: u8,
    pub acwu: U16,
    pub reserved534: [u8; 2],
    pub sgls: U32,
    pub mnan: U32,
    pub reserved544: [u8; 224],
    pub subnqn: [u8; 256],
    pub reserved1024: [u8; 768],
    pub ioccsz: U32,
    pub iorcsz: U32,
    pub icdoff: U16,
    pub fcatt: u8,
    pub msdbd: u8,
    pub ofcs: U16,
    pub dctype: u8,
    pub reserved1807: [u8; 241],
    pub psd: [u8; 1024],
    pub vendor: [u8; 1024],
}
assert_layout!(IdentifyControllerRaw, 4096;
    vid @ 0, ssvid @ 2, sn @ 4, mn @ 24, fr @ 64, rab @ 72, ieee @ 73, cmic @ 76, mdts @ 77,
    cntlid @ 78, ver @ 80, rtd3r @ 84, rtd3e @ 88, oaes @ 92, ctratt @ 96, cntrltype @ 111,
    fguid @ 112, crdt1 @ 128, crdt2 @ 130, crdt3 @ 132, oacs @ 256, acl @ 258, aerl @ 259,
    frmw @ 260, lpa @ 261, elpe @ 262, npss @ 263, avscc @ 264, apsta @ 265, wctemp @ 266,
    cctemp @ 268, kas @ 320, anatt @ 342, anacap @ 343, anagrpmax @ 344, nanagrpid @ 348,
    sqes @ 512, cqes @ 513, maxcmd @ 514, nn @ 516, oncs @ 520, fuses @ 522, fna @ 524,
    vwc @ 525, awun @ 526, awupf @ 528, nvscc @ 530, nwpc @ 531, acwu @ 532, sgls @ 536,
    mnan @ 540, subnqn @ 768, ioccsz @ 1792, iorcsz @ 1796, icdoff @ 1800, fcatt @ 1802,
    msdbd @ 1803, ofcs @ 1804, dctype @ 1806, psd @ 2048, vendor @ 3072);

define_view!(
    /// Zero-copy view of Identify Controller data.
    IdentifyControllerView, IdentifyControllerRaw, "Identify Controller"
);
view_accessors!(IdentifyControllerView;
    vid / set_vid: u16;
    cmic / set_cmic: u8;
    mdts / set_mdts: u8;
    cntlid / set_cntlid: u16;
    ver / set_ver: u32;
    oaes / set_oaes: u32;
    ctratt / set_ctratt: u32;
    cntrltype / set_cntrltype: u8;
    lpa / set_lpa: u8;
    kas / set_kas: u16;
    sqes / set_sqes: u8;
    cqes / set_cqes: u8;
    maxcmd / set_maxcmd: u16;
    nn / set_nn: u32;
    oncs / set_oncs: u16;
    vwc / set_vwc: u8;
    sgls / set_sgls: u32;
    ioccsz / set_ioccsz: u32;
    iorcsz / set_iorcsz: u32;
    icdoff / set_icdoff: u16;
    fcatt / set_fcatt: u8;
    msdbd / set_msdbd: u8;
);
view_bytes!(IdentifyControllerView;
    /// Serial number (ASCII, space padded).
    sn / set_sn;
    /// Model number (ASCII, space padded).
    mn / set_mn;
    /// Firmware revision (ASCII, space padded).
    fr / set_fr;
    /// Subsystem NQN (NUL terminated).
    subnqn / set_subnqn;
);

/// Parsed Identify Controller (the fields a fabrics target fills in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    pub vid: u16,
    pub ssvid: u16,
    pub sn: [u8; 20],
    pub mn: [u8; 40],
    pub fr: [u8; 8],
    pub rab: u8,
    pub ieee: [u8; 3],
    pub cmic: u8,
    pub mdts: u8,
    pub cntlid: u16,
    pub ver: u32,
    pub rtd3r: u32,
    pub rtd3e: u32,
    pub oaes: u32,
    pub ctratt: u32,
    pub cntrltype: u8,
    pub fguid: [u8; 16],
    pub crdt: [u16; 3],
    pub oacs: u16,
    pub acl: u8,
    pub aerl: u8,
    pub frmw: u8,
    pub lpa: u8,
    pub elpe: u8,
    pub npss: u8,
    pub avscc: u8,
    pub apsta: u8,
    pub wctemp: u16,
    pub cctemp: u16,
    pub kas: u16,
    pub anatt: u8,
    pub anacap: u8,
    pub anagrpmax: u32,
    pub nanagrpid: u32,
    pub sqes: u8,
    pub cqes: u8,
    pub maxcmd: u16,
    pub nn: u32,
    pub oncs: u16,
    pub fuses: u16,
    pub fna: u8,
    pub vwc: u8,
    pub awun: u16,
    pub awupf: u16,
    pub nvscc: u8,
    pub nwpc: u8,
    pub acwu: u16,
    pub sgls: u32,
    pub mnan: u32,
    pub subnqn: [u8; 256],
    pub ioccsz: u32,
    pub iorcsz: u32,
    pub icdoff: u16,
    pub fcatt: u8,
    pub msdbd: u8,
    pub ofcs: u16,
    pub dctype: u8,
    /// Power state descriptor 0.
    pub psd0: [u8; 32],
}

impl IdentifyController {
    /// All fields zero.
    pub fn zeroed() -> Self {
        Self::from_raw(&IdentifyControllerRaw::new_zeroed())
    }

    /// An I/O controller with the values spec §6.2.1 recommends for a Linux host; the
    /// caller sets identity (SN/MN/FR/SUBNQN), CNTLID, MDTS, NN, ONCS, VWC and IOCCSZ.
    pub fn io_controller_defaults() -> Self {
        Self {
            rab: 6,
            cmic: cmic::MULTI_PORT | cmic::MULTI_CONTROLLER,
            ctratt: ctratt::HOST_ID_128,
            cntrltype: cntrltype::IO,
            acl: 3,
            aerl: 3,
            frmw: 0x03,
            lpa: lpa::EXTENDED,
            kas: 10,
            sqes: 0x66,
            cqes: 0x44,
            sgls: sgls::SUPPORTED | sgls::OFFSET,
            iorcsz: 1,
            msdbd: 1,
            ..Self::zeroed()
        }
    }

    /// The Identify Controller checks of the Linux host that fail a connect (spec §6.2.1,
    /// §9.5), given the CNTLID returned by Connect. Empty when the host would accept it.
    pub fn linux_host_problems(&self, connect_cntlid: u16) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.cntlid != connect_cntlid {
            p.push("CNTLID differs from the Connect response");
        }
        if self.icdoff != 0 {
            p.push("ICDOFF is not 0");
        }
        if self.sgls & 0b11 == 0 {
            p.push("SGLS bits 1:0 are 0");
        }
        if self.cntrltype == cntrltype::IO {
            if self.kas == 0 {
                p.push("KAS is 0");
            }
            if self.ioccsz < 4 {
                p.push("IOCCSZ < 4");
            }
            if self.iorcsz < 1 {
                p.push("IORCSZ < 1");
            }
            if self.cmic & cmic::MULTI_CONTROLLER == 0 {
                p.push("CMIC bit 1 (multi-controller) clear");
            }
            if self.cmic & cmic::ANA != 0 && (self.mnan == 0 || self.mnan > self.nn) {
                p.push("CMIC.ANA with MNAN outside 1..=NN");
            }
        }
        p
    }

    pub fn set_sn(&mut self, s: &str) {
        self.sn = space_padded(s);
    }
    pub fn set_mn(&mut self, s: &str) {
        self.mn = space_padded(s);
    }
    pub fn set_fr(&mut self, s: &str) {
        self.fr = space_padded(s);
    }
    pub fn set_subnqn(&mut self, s: &str) {
        self.subnqn = nul_padded(s);
    }

    pub fn from_raw(r: &IdentifyControllerRaw) -> Self {
        let mut psd0 = [0u8; 32];
        psd0.copy_from_slice(r.psd.get(..32).unwrap_or(&[0; 32]));
        Self {
            vid: r.vid.get(),
            ssvid: r.ssvid.get(),
            sn: r.sn,
            mn: r.mn,
            fr: r.fr,
            rab: r.rab,
            ieee: r.ieee,
            cmic: r.cmic,
            mdts: r.mdts,
            cntlid: r.cntlid.get(),
            ver: r.ver.get(),
            rtd3r: r.rtd3r.get(),
            rtd3e: r.rtd3e.get(),
            oaes: r.oaes.get(),
            ctratt: r.ctratt.get(),
            cntrltype: r.cntrltype,
            fguid: r.fguid,
            crdt: [r.crdt1.get(), r.crdt2.get(), r.crdt3.get()],
            oacs: r.oacs.get(),
            acl: r.acl,
            aerl: r.aerl,
            frmw: r.frmw,
            lpa: r.lpa,
            elpe: r.elpe,
            npss: r.npss,
            avscc: r.avscc,
            apsta: r.apsta,
            wctemp: r.wctemp.get(),
            cctemp: r.cctemp.get(),
            kas: r.kas.get(),
            anatt: r.anatt,
            anacap: r.anacap,
            anagrpmax: r.anagrpmax.get(),
            nanagrpid: r.nanagrpid.get(),
            sqes: r.sqes,
            cqes: r.cqes,
            maxcmd: r.maxcmd.get(),
            nn: r.nn.get(),
            oncs: r.oncs.get(),
            fuses: r.fuses.get(),
            fna: r.fna,
            vwc: r.vwc,
            awun: r.awun.get(),
            awupf: r.awupf.get(),
            nvscc: r.nvscc,
            nwpc: r.nwpc,
            acwu: r.acwu.get(),
            sgls: r.sgls.get(),
            mnan: r.mnan.get(),
            subnqn: r.subnqn,
            ioccsz: r.ioccsz.get(),
            iorcsz: r.iorcsz.get(),
            icdoff: r.icdoff.get(),
            fcatt: r.fcatt,
            msdbd: r.msdbd,
            ofcs: r.ofcs.get(),
            dctype: r.dctype,
            psd0,
        }
    }

    pub fn to_raw(&self) -> IdentifyControllerRaw {
        let mut r = IdentifyControllerRaw::new_zeroed();
        r.vid.set(self.vid);
        r.ssvid.set(self.ssvid);
        r.sn = self.sn;
        r.mn = self.mn;
        r.fr = self.fr;
        r.rab = self.rab;
        r.ieee = self.ieee;
        r.cmic = self.cmic;
        r.mdts = self.mdts;
        r.cntlid.set(self.cntlid);
        r.ver.set(self.ver);
        r.rtd3r.set(self.rtd3r);
        r.rtd3e.set(self.rtd3e);
        r.oaes.set(self.oaes);
        r.ctratt.set(self.ctratt);
        r.cntrltype = self.cntrltype;
        r.fguid = self.fguid;
        r.crdt1.set(self.crdt[0]);
        r.crdt2.set(self.crdt[1]);
        r.crdt3.set(self.crdt[2]);
        r.oacs.set(self.oacs);
        r.acl = self.acl;
        r.aerl = self.aerl;
        r.frmw = self.frmw;
        r.lpa = self.lpa;
        r.elpe = self.elpe;
        r.npss = self.npss;
        r.avscc = self.avscc;
        r.apsta = self.apsta;
        r.wctemp.set(self.wctemp);
        r.cctemp.set(self.cctemp);
        r.kas.set(self.kas);
        r.anatt = self.anatt;
        r.anacap = self.anacap;
        r.anagrpmax.set(self.anagrpmax);
        r.nanagrpid.set(self.nanagrpid);
        r.sqes = self.sqes;
        r.cqes = self.cqes;
        r.maxcmd.set(self.maxcmd);
        r.nn.set(self.nn);
        r.oncs.set(self.oncs);
        r.fuses.set(self.fuses);
        r.fna = self.fna;
        r.vwc = self.vwc;
        r.awun.set(self.awun);
        r.awupf.set(self.awupf);
        r.nvscc = self.nvscc;
        r.nwpc = self.nwpc;
        r.acwu.set(self.acwu);
        r.sgls.set(self.sgls);
        r.mnan.set(self.mnan);
        r.subnqn = self.subnqn;
        r.ioccsz.set(self.ioccsz);
        r.iorcsz.set(self.iorcsz);
        r.icdoff.set(self.icdoff);
        r.fcatt = self.fcatt;
        r.msdbd = self.msdbd;
        r.ofcs.set(self.ofcs);
        r.dctype = self.dctype;
        if let Some(p) = r.psd.get_mut(..32) {
            p.copy_from_slice(&self.psd0);
        }
        r
    }

    /// Parses exactly 4096 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: IdentifyControllerRaw = read_exact("Identify Controller", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    /// Writes the 4096 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("Identify Controller", buf, self.to_raw().as_bytes())
    }
}

impl fmt::Display for IdentifyController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identify Controller cntlid={} type={} sn='{}' mn='{}' fr='{}' subnqn={} ver={:#x} mdts={} nn={} oncs={:#x} vwc={:#x} ioccsz={} kas={}",
            self.cntlid,
            self.cntrltype,
            trim_padded(&self.sn),
            trim_padded(&self.mn),
            trim_padded(&self.fr),
            trim_padded(super::nul_terminated(&self.subnqn)),
            self.ver,
            self.mdts,
            self.nn,
            self.oncs,
            self.vwc,
            self.ioccsz,
            self.kas
        )
    }
}

/// NSFEAT bits.
pub mod nsfeat {
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    pub const NSABP: u8 = 1 << 1;
    pub const DAE: u8 = 1 << 2;
    pub const UIDREUSE: u8 = 1 << 3;
    pub const OPTPERF: u8 = 1 << 4;
}
/// DLFEAT values.
pub mod dlfeat {
    /// Bits 2:0 = 001b: deallocated blocks read as zeroes.
    pub const READ_ZEROES: u8 = 0b001;
    /// Bit 3: Write Zeroes supports DEAC.
    pub const WRITE_ZEROES_DEAC: u8 = 1 << 3;
    /// What a thin target advertises (0x09).
    pub const THIN: u8 = READ_ZEROES | WRITE_ZEROES_DEAC;
}

/// One LBA format (4 bytes).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct LbaFormatRaw {
    pub ms: U16,
    pub lbads: u8,
    pub rp: u8,
}
assert_layout!(LbaFormatRaw, 4; ms @ 0, lbads @ 2, rp @ 3);

/// A parsed LBA format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbaFormat {
    /// Metadata size per block (must be 0 for Linux without PI).
    pub ms: u16,
    /// log2 of the LBA size (9 or 12).
    pub lbads: u8,
    /// Relative performance (bits 1:0).
    pub rp: u8,
}

impl LbaFormat {
    pub const fn new(lbads: u8) -> Self {
        Self {
            ms: 0,
            lbads,
            rp: 0,
        }
    }
    /// LBA size in bytes, `None` if LBADS is out of range.
    pub fn lba_size(&self) -> Option<u64> {
        1u64.checked_shl(u32::from(self.lbads))
            .filter(|_| self.lbads < 64)
    }
}

/// Zerocopy layout of Identify Namespace.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyNamespaceRaw {
    pub nsze: U64,
    pub ncap: U64,
    pub nuse: U64,
    pub nsfeat: u8,
    pub nlbaf: u8,
    pub flbas: u8,
    pub mc: u8,
    pub dpc: u8,
    pub dps: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub dlfeat: u8,
    pub nawun: U16,
    pub nawupf: U16,
    pub nacwu: U16,
    pub nabsn: U16,
    pub nabo: U16,
    pub nabspf: U16,
    pub noiob: U16,
    pub nvmcap: [u8; 16],
    pub npwg: U16,
    pub npwa: U16,
    pub npdg: U16,
    pub npda: U16,
    pub nows: U16,
    pub reserved74: [u8; 18],
    pub anagrpid: U32,
    pub reserved96: [u8; 3],
    pub nsattr: u8,
    pub nvmsetid: U16,
    pub endgid: U16,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub lbaf: [LbaFormatRaw; 64],
    pub reserved384: [u8; 3712],
}
assert_layout!(IdentifyNamespaceRaw, 4096;
    nsze @ 0, ncap @ 8, nuse @ 16, nsfeat @ 24, nlbaf @ 25, flbas @ 26, mc @ 27, dpc @ 28,
    dps @ 29, nmic @ 30, rescap @ 31, fpi @ 32, dlfeat @ 33, nawun @ 34, nawupf @ 36,
    nacwu @ 38, nabsn @ 40, nabo @ 42, nabspf @ 44, noiob @ 46, nvmcap @ 48, npwg @ 64,
    npwa @ 66, npdg @ 68, npda @ 70, nows @ 72, anagrpid @ 92, nsattr @ 99, nvmsetid @ 100,
    endgid @ 102, nguid @ 104, eui64 @ 120, lbaf @ 128, reserved384 @ 384);

define_view!(
    /// Zero-copy view of Identify Namespace data.
    IdentifyNamespaceView, IdentifyNamespaceRaw, "Identify Namespace"
);
view_accessors!(IdentifyNamespaceView;
    nsze / set_nsze: u64;
    ncap / set_ncap: u64;
    nuse / set_nuse: u64;
    nsfeat / set_nsfeat: u8;
    nlbaf / set_nlbaf: u8;
    flbas / set_flbas: u8;
    nmic / set_nmic: u8;
    dlfeat / set_dlfeat: u8;
    nsattr / set_nsattr: u8;
);
view_bytes!(IdentifyNamespaceView;
    /// Namespace globally unique identifier.
    nguid / set_nguid;
    /// IEEE extended unique identifier.
    eui64 / set_eui64;
);

/// Parsed Identify Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyNamespace {
    pub nsze: u64,
    pub ncap: u64,
    pub nuse: u64,
    pub nsfeat: u8,
    /// Number of LBA formats, 0-based.
    pub nlbaf: u8,
    pub flbas: u8,
    pub mc: u8,
    pub dpc: u8,
    pub dps: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub dlfeat: u8,
    pub nawun: u16,
    pub nawupf: u16,
    pub nacwu: u16,
    pub nabsn: u16,
    pub nabo: u16,
    pub nabspf: u16,
    pub noiob: u16,
    pub nvmcap: u128,
    pub npwg: u16,
    pub npwa: u16,
    pub npdg: u16,
    pub npda: u16,
    pub nows: u16,
    pub anagrpid: u32,
    pub nsattr: u8,
    pub nvmsetid: u16,
    pub endgid: u16,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub lbaf: [LbaFormat; 64],
}

impl IdentifyNamespace {
    /// All zero: the answer for an allocated but inactive NSID.
    pub fn zeroed() -> Self {
        Self::from_raw(&IdentifyNamespaceRaw::new_zeroed())
    }

    /// A namespace with one LBA format of `2^lbads` bytes; `thin` sets NSFEAT.THINP and
    /// DLFEAT 0x09. NMIC bit 0 (shared) is set for multipath.
    pub fn new(nsze: u64, nuse: u64, lbads: u8, thin: bool, nguid: [u8; 16]) -> Self {
        let mut lbaf = [LbaFormat::default(); 64];
        lbaf[0] = LbaFormat::new(lbads);
        Self {
            nsze,
            ncap: nsze,
            nuse,
            nsfeat: if thin { nsfeat::THIN_PROVISIONING } else { 0 },
            nmic: 1,
            dlfeat: if thin { dlfeat::THIN } else { 0 },
            nguid,
            lbaf,
            ..Self::zeroed()
        }
    }

    /// The LBA format in use (FLBAS bits 3:0, plus bits 6:5 as the high bits).
    pub fn current_format(&self) -> Option<LbaFormat> {
        let idx = usize::from(self.flbas & 0xF) | (usize::from((self.flbas >> 5) & 0x3) << 4);
        self.lbaf.get(idx).copied()
    }

    /// The LBA size in bytes of the format in use.
    pub fn lba_size(&self) -> Option<u64> {
        self.current_format().and_then(|f| f.lba_size())
    }

    pub fn from_raw(r: &IdentifyNamespaceRaw) -> Self {
        let mut lbaf = [LbaFormat::default(); 64];
        for (dst, src) in lbaf.iter_mut().zip(r.lbaf.iter()) {
            *dst = LbaFormat {
                ms: src.ms.get(),
                lbads: src.lbads,
                rp: src.rp,
            };
        }
        Self {
            nsze: r.nsze.get(),
            ncap: r.ncap.get(),
            nuse: r.nuse.get(),
            nsfeat: r.nsfeat,
            nlbaf: r.nlbaf,
            flbas: r.flbas,
            mc: r.mc,
            dpc: r.dpc,
            dps: r.dps,
            nmic: r.nmic,
            rescap: r.rescap,
            fpi: r.fpi,
            dlfeat: r.dlfeat,
            nawun: r.nawun.get(),
            nawupf: r.nawupf.get(),
            nacwu: r.nacwu.get(),
            nabsn: r.nabsn.get(),
            nabo: r.nabo.get(),
            nabspf: r.nabspf.get(),
            noiob: r.noiob.get(),
            nvmcap: u128::from_le_bytes(r.nvmcap),
            npwg: r.npwg.get(),
            npwa: r.npwa.get(),
            npdg: r.npdg.get(),
            npda: r.npda.get(),
            nows: r.nows.get(),
            anagrpid: r.anagrpid.get(),
            nsattr: r.nsattr,
            nvmsetid: r.nvmsetid.get(),
            endgid: r.endgid.get(),
            nguid: r.nguid,
            eui64: r.eui64,
            lbaf,
        }
    }

    pub fn to_raw(&self) -> IdentifyNamespaceRaw {
        let mut r = IdentifyNamespaceRaw::new_zeroed();
        r.nsze.set(self.nsze);
        r.ncap.set(self.ncap);
        r.nuse.set(self.nuse);
        r.nsfeat = self.nsfeat;
        r.nlbaf = self.nlbaf;
        r.flbas = self.flbas;
        r.mc = self.mc;
        r.dpc = self.dpc;
        r.dps = self.dps;
        r.nmic = self.nmic;
        r.rescap = self.rescap;
        r.fpi = self.fpi;
        r.dlfeat = self.dlfeat;
        r.nawun.set(self.nawun);
        r.nawupf.set(self.nawupf);
        r.nacwu.set(self.nacwu);
        r.nabsn.set(self.nabsn);
        r.nabo.set(self.nabo);
        r.nabspf.set(self.nabspf);
        r.noiob.set(self.noiob);
        r.nvmcap = self.nvmcap.to_le_bytes();
        r.npwg.set(self.npwg);
        r.npwa.set(self.npwa);
        r.npdg.set(self.npdg);
        r.npda.set(self.npda);
        r.nows.set(self.nows);
        r.anagrpid.set(self.anagrpid);
        r.nsattr = self.nsattr;
        r.nvmsetid.set(self.nvmsetid);
        r.endgid.set(self.endgid);
        r.nguid = self.nguid;
        r.eui64 = self.eui64;
        for (dst, src) in r.lbaf.iter_mut().zip(self.lbaf.iter()) {
            *dst = LbaFormatRaw {
                ms: U16::new(src.ms),
                lbads: src.lbads,
                rp: src.rp,
            };
        }
        r
    }

    /// Parses exactly 4096 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let raw: IdentifyNamespaceRaw = read_exact("Identify Namespace", bytes)?;
        Ok(Self::from_raw(&raw))
    }

    /// Writes the 4096 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        write_prefix("Identify Namespace", buf, self.to_raw().as_bytes())
    }
}

impl fmt::Display for IdentifyNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identify Namespace nsze={} ncap={} nuse={} nsfeat={:#x} dlfeat={:#x} lba={} nguid=",
            self.nsze,
            self.ncap,
            self.nuse,
            self.nsfeat,
            self.dlfeat,
            self.lba_size().unwrap_or(0)
        )?;
        for b in self.nguid {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Most NSIDs in one Active Namespace ID list.
pub const NS_LIST_MAX: usize = 1024;

/// Active Namespace ID list (CNS 0x02) or Changed Namespace List (log 0x04): up to 1024
/// ascending NSIDs, zero-terminated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsList {
    pub nsids: Vec<u32>,
}

impl NsList {
    /// Active NSIDs strictly greater than `after`, from an ascending iterator, at most 1024.
    pub fn active_after(after: u32, nsids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            nsids: nsids
                .into_iter()
                .filter(|&n| n > after && n != 0)
                .take(NS_LIST_MAX)
                .collect(),
        }
    }

    /// Parses 4096 bytes: NSIDs up to the first zero.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        super::check_exact_len("Namespace list", bytes, IDENTIFY_DATA_LEN)?;
        let nsids = bytes
            .chunks_exact(4)
            .map(|c| c.try_into().map_or(0, u32::from_le_bytes))
            .take_while(|&n| n != 0)
            .collect();
        Ok(Self { nsids })
    }

    /// Writes 4096 bytes (zero-filled after the last NSID). More than 1024 NSIDs is an error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if self.nsids.len() > NS_LIST_MAX {
            return Err(WireError::Oversized {
                structure: "Namespace list",
                max: NS_LIST_MAX as u64,
                got: self.nsids.len() as u64,
            });
        }
        let Some(out) = buf.get_mut(..IDENTIFY_DATA_LEN) else {
            return Err(WireError::Truncated {
                structure: "Namespace list",
                need: IDENTIFY_DATA_LEN as u64,
                got: buf.len() as u64,
            });
        };
        out.fill(0);
        for (chunk, n) in out.chunks_exact_mut(4).zip(&self.nsids) {
            chunk.copy_from_slice(&n.to_le_bytes());
        }
        Ok(())
    }
}

impl fmt::Display for NsList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NS list {:?}", self.nsids)
    }
}

/// Namespace Identification Descriptor types (NIDT).
pub mod nidt {
    pub const EUI64: u8 = 0x01;
    pub const NGUID: u8 = 0x02;
    pub const UUID: u8 = 0x03;
    pub const CSI: u8 = 0x04;
}

/// One Namespace Identification Descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsIdDescriptor {
    Eui64([u8; 8]),
    Nguid([u8; 16]),
    Uuid([u8; 16]),
    /// Command Set Identifier (0 = NVM).
    Csi(u8),
}

impl NsIdDescriptor {
    pub fn nidt(&self) -> u8 {
        match self {
            Self::Eui64(_) => nidt::EUI64,
            Self::Nguid(_) => nidt::NGUID,
            Self::Uuid(_) => nidt::UUID,
            Self::Csi(_) => nidt::CSI,
        }
    }

    fn id(&self) -> &[u8] {
        match self {
            Self::Eui64(v) => v,
            Self::Nguid(v) | Self::Uuid(v) => v,
            Self::Csi(v) => core::slice::from_ref(v),
        }
    }

    /// The exact NIDL of each type.
    pub fn nidl_for(nidt: u8) -> Option<u8> {
        match nidt {
            nidt::EUI64 => Some(8),
            nidt::NGUID | nidt::UUID => Some(16),
            nidt::CSI => Some(1),
            _ => None,
        }
    }
}

/// Namespace Identification Descriptor list (CNS 0x03).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsIdDescriptorList {
    pub descriptors: Vec<NsIdDescriptor>,
}

impl NsIdDescriptorList {
    /// Parses 4096 bytes; stops at NIDL = 0. Unknown NIDT or a wrong NIDL is an error (the
    /// host would stop parsing there too).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        super::check_exact_len("NS descriptor list", bytes, IDENTIFY_DATA_LEN)?;
        let mut descriptors = Vec::new();
        let mut off = 0usize;
        while let (Some(&t), Some(&l)) = (bytes.get(off), bytes.get(off + 1)) {
            if l == 0 {
                break;
            }
            let bad = |field, offset: usize, value: u8| WireError::InvalidField {
                structure: "NS descriptor list",
                field,
                offset: offset as u32,
                value: value.into(),
            };
            match NsIdDescriptor::nidl_for(t) {
                None => return Err(bad("NIDT", off, t)),
                Some(want) if want != l => return Err(bad("NIDL", off + 1, l)),
                Some(_) => {}
            }
            let Some(id) = bytes.get(off + 4..off + 4 + usize::from(l)) else {
                return Err(bad("NIDL", off + 1, l));
            };
            let d = match t {
                nidt::EUI64 => {
                    NsIdDescriptor::Eui64(id.try_into().map_err(|_| bad("NIDL", off + 1, l))?)
                }
                nidt::NGUID => {
                    NsIdDescriptor::Nguid(id.try_into().map_err(|_| bad("NIDL", off + 1, l))?)
                }
                nidt::UUID => {
                    NsIdDescriptor::Uuid(id.try_into().map_err(|_| bad("NIDL", off + 1, l))?)
                }
                _ => NsIdDescriptor::Csi(id.first().copied().unwrap_or(0)),
            };
            descriptors.push(d);
            off += 4 + usize::from(l);
        }
        Ok(Self { descriptors })
    }

    /// Writes 4096 bytes: the descriptors then zeroes (the NIDL = 0 terminator).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let Some(out) = buf.get_mut(..IDENTIFY_DATA_LEN) else {
            return Err(WireError::Truncated {
                structure: "NS descriptor list",
                need: IDENTIFY_DATA_LEN as u64,
                got: buf.len() as u64,
            });
        };
        out.fill(0);
        let mut off = 0usize;
        for d in &self.descriptors {
            let id = d.id();
            let end = off + 4 + id.len();
            // Keep room for a 4-byte terminator.
            let Some(slot) = out
                .get_mut(off..end)
                .filter(|_| end + 4 <= IDENTIFY_DATA_LEN)
            else {
                return Err(WireError::Oversized {
                    structure: "NS descriptor list",
                    max: IDENTIFY_DATA_LEN as u64,
                    got: end as u64,
                });
            };
            slot[0] = d.nidt();
            slot[1] = id.len() as u8;
            slot[4..].copy_from_slice(id);
            off = end;
        }
        Ok(())
    }
}

impl fmt::Display for NsIdDescriptorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NS descriptors {:?}", self.descriptors)
    }
}

/// Zerocopy layout of the I/O-command-set-independent Identify Namespace (CNS 0x08).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndependentNamespaceRaw {
    pub nsfeat: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub anagrpid: U32,
    pub nsattr: u8,
    pub reserved9: u8,
    pub nvmsetid: U16,
    pub endgid: U16,
    pub nstat: u8,
    pub reserved15: [u8; 4081],
}
assert_layout!(IndependentNamespaceRaw, 4096;
    nsfeat @ 0, nmic @ 1, rescap @ 2, fpi @ 3, anagrpid @ 4, nsattr @ 8, nvmsetid @ 10,
    endgid @ 12, nstat @ 14);

/// Parsed CNS 0x08 structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndependentNamespace {
    pub nsfeat: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub anagrpid: u32,
    pub nsattr: u8,
    pub nvmsetid: u16,
    pub endgid: u16,
    /// Bit 0 NRDY: must be 1 or the host ignores the namespace.
    pub nstat: u8,
}

impl IndependentNamespace {
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let r: IndependentNamespaceRaw = read_exact("Independent Identify Namespace", bytes)?;
        Ok(Self {
            nsfeat: r.nsfeat,
            nmic: r.nmic,
            rescap: r.rescap,
            fpi: r.fpi,
            anagrpid: r.anagrpid.get(),
            nsattr: r.nsattr,
            nvmsetid: r.nvmsetid.get(),
            endgid: r.endgid.get(),
            nstat: r.nstat,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut r = IndependentNamespaceRaw::new_zeroed();
        r.nsfeat = self.nsfeat;
        r.nmic = self.nmic;
        r.rescap = self.rescap;
        r.fpi = self.fpi;
        r.anagrpid.set(self.anagrpid);
        r.nsattr = self.nsattr;
        r.nvmsetid.set(self.nvmsetid);
        r.endgid.set(self.endgid);
        r.nstat = self.nstat;
        write_prefix("Independent Identify Namespace", buf, r.as_bytes())
    }
}

impl fmt::Display for IndependentNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Independent Identify Namespace nmic={} nstat={:#x}",
            self.nmic, self.nstat
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::*;

    #[test]
    fn identify_command_fields() {
        let mut s = Sqe::new(0x06, 3, 0xFFFF_FFFF);
        s.cdw10 = 0x0012_0003;
        s.cdw11 = 0x0200_0005;
        s.cdw14 = 0xFF;
        s.sgl = SglDescriptor::transport(4096);
        let c = IdentifyCommand::from_sqe(&s);
        assert_eq!(c.cns, Cns::NsIdDescriptors);
        assert_eq!(
            (c.cntid, c.cnssid, c.csi, c.uuid_index, c.data_len),
            (0x12, 5, 2, 0x7F, 4096)
        );
        let back = c.to_sqe(3);
        assert_eq!(IdentifyCommand::from_sqe(&back), c);
        for v in 0..=255u8 {
            assert_eq!(Cns::from_u8(v).code(), v);
        }
        assert!(c.to_string().contains("cns=0x03"));
    }

    fn controller_fixture() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        put16(&mut b, 0, 0x1B36);
        put(&mut b, 4, b"SN0001              ");
        put(&mut b, 24, b"thin nvmf target                        ");
        put(&mut b, 64, b"0.1     ");
        b[72] = 6;
        b[76] = 3;
        b[77] = 5;
        put16(&mut b, 78, 0x21);
        put32(&mut b, 80, 0x0001_0400);
        put32(&mut b, 92, 1 << 8);
        put32(&mut b, 96, 1);
        b[111] = 1;
        b[258] = 3;
        b[259] = 3;
        b[260] = 3;
        b[261] = 4;
        put16(&mut b, 320, 10);
        b[512] = 0x66;
        b[513] = 0x44;
        put16(&mut b, 514, 128);
        put32(&mut b, 516, 1024);
        put16(&mut b, 520, 0x0C);
        b[525] = 0x05;
        put32(&mut b, 536, 0x0010_0001);
        put(&mut b, 768, b"nqn.2024-01.io.example:pool");
        put32(&mut b, 1792, 260);
        put32(&mut b, 1796, 1);
        b[1803] = 1;
        b
    }

    #[test]
    fn identify_controller_by_hand() {
        let b = controller_fixture();
        let c = IdentifyController::parse(&b).unwrap();
        assert_eq!(
            (c.vid, c.cmic, c.mdts, c.cntlid, c.ver),
            (0x1B36, 3, 5, 0x21, 0x0001_0400)
        );
        assert_eq!(
            (c.oaes, c.ctratt, c.cntrltype, c.kas),
            (oaes::NS_ATTR, ctratt::HOST_ID_128, 1, 10)
        );
        assert_eq!((c.sqes, c.cqes, c.maxcmd, c.nn), (0x66, 0x44, 128, 1024));
        assert_eq!(c.oncs, oncs::DSM | oncs::WRITE_ZEROES);
        assert_eq!(c.vwc, vwc::PRESENT | vwc::FLUSH_ALL_UNSUPPORTED);
        assert_eq!(c.sgls, sgls::SUPPORTED | sgls::OFFSET);
        assert_eq!((c.ioccsz, c.iorcsz, c.icdoff, c.msdbd), (260, 1, 0, 1));
        let mut out = vec![0u8; 4096];
        c.emit(&mut out).unwrap();
        assert_eq!(out, b);

        // Building the same from defaults and setters.
        let mut d = IdentifyController::io_controller_defaults();
        d.vid = 0x1B36;
        d.set_sn("SN0001");
        d.set_mn("thin nvmf target");
        d.set_fr("0.1");
        d.mdts = 5;
        d.cntlid = 0x21;
        d.ver = 0x0001_0400;
        d.oaes = oaes::NS_ATTR;
        d.sgls = sgls::SUPPORTED | sgls::OFFSET;
        d.maxcmd = 128;
        d.nn = 1024;
        d.oncs = oncs::DSM | oncs::WRITE_ZEROES;
        d.vwc = vwc::PRESENT | vwc::FLUSH_ALL_UNSUPPORTED;
        d.set_subnqn("nqn.2024-01.io.example:pool");
        d.ioccsz = 260;
        d.lpa = lpa::EXTENDED;
        d.cmic = cmic::MULTI_PORT | cmic::MULTI_CONTROLLER;
        assert_eq!(d, c);
        assert!(c.to_string().contains("sn='SN0001'"));
        assert!(c.linux_host_problems(0x21).is_empty());
        assert_eq!(c.linux_host_problems(0x22).len(), 1);
        assert_eq!(IdentifyController::zeroed().linux_host_problems(0).len(), 1);
        let io0 = IdentifyController {
            cntrltype: cntrltype::IO,
            cmic: cmic::ANA,
            ..IdentifyController::zeroed()
        };
        assert_eq!(io0.linux_host_problems(0).len(), 6);

        let v = IdentifyControllerView::new_checked(&b[..]).unwrap();
        assert_eq!(v.sn(), b"SN0001              ");
        assert_eq!(&v.subnqn()[..4], b"nqn.");
        assert_eq!((v.kas(), v.ioccsz(), v.nn()), (10, 260, 1024));
        let mut w = vec![0u8; 4096];
        let mut wv = IdentifyControllerView::new_checked(&mut w[..]).unwrap();
        wv.set_sn(b"SN0001              ");
        wv.set_cntlid(0x21);
        wv.set_subnqn(b"abc");
        assert_eq!(&w[4..24], &b[4..24]);
        assert_eq!(&w[78..80], &[0x21, 0]);
        assert_eq!(&w[768..772], b"abc\0");

        assert!(IdentifyController::parse(&b[..4095]).is_err());
        assert!(IdentifyController::zeroed().emit(&mut [0u8; 100]).is_err());
    }

    #[test]
    fn identify_namespace_by_hand() {
        let mut b = vec![0u8; 4096];
        put64(&mut b, 0, 2048);
        put64(&mut b, 8, 2048);
        put64(&mut b, 16, 100);
        b[24] = 1;
        b[30] = 1;
        b[33] = 0x09;
        for (i, x) in b[104..120].iter_mut().enumerate() {
            *x = 0xA0 + i as u8;
        }
        b[128 + 2] = 12;
        let want = IdentifyNamespace::new(
            2048,
            100,
            12,
            true,
            core::array::from_fn(|i| 0xA0 + i as u8),
        );
        let p = IdentifyNamespace::parse(&b).unwrap();
        assert_eq!(p, want);
        assert_eq!(p.lba_size(), Some(4096));
        let mut out = vec![0u8; 4096];
        want.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let v = IdentifyNamespaceView::new_checked(&b[..]).unwrap();
        assert_eq!(
            (v.nsze(), v.ncap(), v.nuse(), v.nsfeat(), v.dlfeat()),
            (2048, 2048, 100, 1, 9)
        );
        assert_eq!(v.nguid()[0], 0xA0);
        // Fields at their offsets.
        let mut all = IdentifyNamespace::zeroed();
        all.nawupf = 0x0102;
        all.noiob = 0x0304;
        all.nvmcap = 0x0506;
        all.npwg = 7;
        all.nows = 8;
        all.anagrpid = 9;
        all.nsattr = 1;
        all.endgid = 0x0A;
        all.eui64 = [0xEE; 8];
        let mut o = vec![0u8; 4096];
        all.emit(&mut o).unwrap();
        assert_eq!(&o[36..38], &[2, 1]);
        assert_eq!(&o[46..48], &[4, 3]);
        assert_eq!(&o[48..50], &[6, 5]);
        assert_eq!((o[64], o[72], o[92], o[99], o[102]), (7, 8, 9, 1, 0x0A));
        assert_eq!(&o[120..128], &[0xEE; 8]);
        assert_eq!(IdentifyNamespace::parse(&o).unwrap(), all);
        assert!(IdentifyNamespace::zeroed().to_string().contains("nsze=0"));
        assert_eq!(LbaFormat::new(70).lba_size(), None);
    }

    #[test]
    fn ns_list() {
        let l = NsList::active_after(1, [1, 2, 5, 9]);
        assert_eq!(l.nsids, vec![2, 5, 9]);
        let mut b = vec![0xFFu8; 4096];
        l.emit(&mut b).unwrap();
        assert_eq!(&b[..12], &[2, 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0]);
        assert!(b[12..].iter().all(|&x| x == 0));
        assert_eq!(NsList::parse(&b).unwrap(), l);
        let full = NsList::active_after(0, 1..=2000);
        assert_eq!(full.nsids.len(), 1024);
        full.emit(&mut b).unwrap();
        assert_eq!(NsList::parse(&b).unwrap().nsids.len(), 1024);
        let too_many = NsList {
            nsids: (1..=1025).collect(),
        };
        assert!(too_many.emit(&mut b).is_err());
        assert!(NsList::parse(&b[..100]).is_err());
        assert!(l.emit(&mut [0u8; 10]).is_err());
    }

    #[test]
    fn ns_descriptors_by_hand() {
        let mut b = vec![0u8; 4096];
        b[0] = 3;
        b[1] = 16;
        put(&mut b, 4, &[0x11; 16]);
        b[20] = 2;
        b[21] = 16;
        put(&mut b, 24, &[0x22; 16]);
        b[40] = 4;
        b[41] = 1;
        b[44] = 0;
        let l = NsIdDescriptorList {
            descriptors: vec![
                NsIdDescriptor::Uuid([0x11; 16]),
                NsIdDescriptor::Nguid([0x22; 16]),
                NsIdDescriptor::Csi(0),
            ],
        };
        assert_eq!(NsIdDescriptorList::parse(&b).unwrap(), l);
        let mut out = vec![0xAAu8; 4096];
        l.emit(&mut out).unwrap();
        assert_eq!(out, b);
        // Wrong NIDL and unknown NIDT.
        b[1] = 15;
        assert!(matches!(
            NsIdDescriptorList::parse(&b),
            Err(WireError::InvalidField { offset: 1, .. })
        ));
        b[1] = 16;
        b[40] = 9;
        assert!(matches!(
            NsIdDescriptorList::parse(&b),
            Err(WireError::InvalidField { offset: 40, .. })
        ));
        // A descriptor running off the end.
        let mut e = vec![0u8; 4096];
        e[4092] = 1;
        e[4093] = 8;
        for i in 0..(4092 / 12) {
            e[i * 12] = 1;
            e[i * 12 + 1] = 8;
        }
        assert!(NsIdDescriptorList::parse(&e).is_err());
        let huge = NsIdDescriptorList {
            descriptors: vec![NsIdDescriptor::Uuid([1; 16]); 300],
        };
        assert!(huge.emit(&mut out).is_err());
        assert_eq!(NsIdDescriptor::Eui64([0; 8]).nidt(), 1);
    }

    #[test]
    fn independent_namespace() {
        let n = IndependentNamespace {
            nmic: 1,
            anagrpid: 7,
            nstat: 1,
            endgid: 3,
            ..Default::default()
        };
        let mut b = vec![0u8; 4096];
        n.emit(&mut b).unwrap();
        assert_eq!((b[1], b[4], b[12], b[14]), (1, 7, 3, 1));
        assert_eq!(IndependentNamespace::parse(&b).unwrap(), n);
        assert!(n.to_string().contains("nstat=0x1"));
    }
}

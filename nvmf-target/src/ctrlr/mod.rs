//! Controller logic, sans I/O: subsystems, the discovery service, controllers and their queues,
//! fed parsed commands and returning completions. The transport moves the bytes.
//!
//! How a transport drives it, per command capsule received on a queue:
//! 1. [`TargetState::prepare`] classifies the command's data: none, in-capsule (already
//!    here), to fetch from the host (R2T/H2CData, `len` bytes) or to send to the host
//!    (C2HData, `len` bytes). A command that cannot succeed fails here, before any R2T.
//! 2. Once any host data has arrived, [`TargetState::execute`] runs the command with the data
//!    in and a buffer of exactly `len` bytes for the data out, and returns
//!    [`Outcome::Complete`] (a CQE; send the data first if the status is success) or
//!    [`Outcome::Held`] (an Asynchronous Event Request: its completion comes later through
//!    [`TargetState::take_async_completions`]).
//! 3. [`TargetState::poll`] with a monotonic `now_ms` expires keep-alive timers and returns
//!    the controllers whose connections must be closed; [`TargetState::queue_closed`] tells
//!    the controller a connection went away.
//!
//! Invariants:
//! * nothing here panics on command input; every malformed field yields an NVMe status;
//! * a queue runs no command but Connect until Connect succeeded on it, and one Connect only;
//! * controller IDs are unique among live controllers of the whole target (1..=0xFFEF);
//! * an admin queue holds at most `AERL + 1` Asynchronous Event Requests.

#![forbid(unsafe_code)]

mod admin;
mod io;
pub mod subsystem;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use log::{debug, info, warn};

use crate::bdev::stat::ResetMode;
use crate::bdev::{Bdev, BdevError, IoStat};
use crate::wire::admin::AsyncEvent;
use crate::wire::cqe::{Cqe, SQHD_DISABLED};
use crate::wire::fabrics::{
    self, ipo, ConnectCommand, ConnectData, ConnectResponse, FabricsCommandType, InvalidParam,
    PropertyCommand, PropertySize, CNTLID_DYNAMIC, CNTLID_MAX,
};
use crate::wire::io::IoOpcode;
use crate::wire::log::ErrorLogEntry;
use crate::wire::pdu::SglDataCheck;
use crate::wire::registers::{offset, property_size, shutdown, Cap, Cc, Csts, Vs};
use crate::wire::sqe::{DataDirection, Sqe};
use crate::wire::status::{CompletionStatus, Status};

pub use subsystem::{Listener, Namespace, Subsystem, SubsystemConfig};

/// Fixed limits and identity shared by every controller of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrlrConfig {
    /// CAP.MQES: largest I/O queue size, 0-based (127 = 128 entries).
    pub mqes: u16,
    /// Most I/O queues a controller grants (Set Features Number of Queues).
    pub max_io_queues: u16,
    /// MDTS: largest transfer is `2^mdts × 4 KiB`.
    pub mdts: u8,
    /// In-capsule data accepted on I/O queues (IOCCSZ = (64 + this) / 16).
    pub in_capsule_data_size: u32,
    /// Firmware revision (Identify Controller FR).
    pub firmware_revision: String,
}

impl Default for CtrlrConfig {
    fn default() -> Self {
        Self {
            mqes: 127,
            max_io_queues: 64,
            mdts: 8,
            in_capsule_data_size: 8192,
            firmware_revision: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl CtrlrConfig {
    /// The largest data transfer of one command, in bytes.
    pub fn max_transfer(&self) -> u32 {
        4096u32 << self.mdts.min(18)
    }
}

/// Version reported in VS and Identify Controller VER: 1.3 keeps the host off CNS 0x08 and
/// CRTO while still requiring namespace descriptors (spec §4.3).
pub const VERSION: Vs = Vs::V1_3;
/// AERL + 1: Asynchronous Event Requests held per controller.
pub const MAX_AERS: usize = 4;
/// KATO substituted for discovery controllers connected with KATO 0 (reaps stale sessions).
pub const DISCOVERY_KATO_MS: u32 = 120_000;
/// CAP.TO in 500 ms units.
const CAP_TO: u8 = 15;
/// Most NSIDs the changed namespace log lists before it reports an overflow.
const CHANGED_NS_MAX: usize = 1024;

/// State of one queue (one TCP connection), owned by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCtx {
    /// Queue ID once connected (0 = admin).
    pub qid: u16,
    /// The controller once Connect succeeded.
    pub cntlid: Option<u16>,
    /// SQSIZE from Connect, 0-based.
    pub sqsize: u16,
    /// SQ head pointer reported in CQEs.
    pub sqhd: u16,
    /// The host disabled SQ flow control (CATTR bit 2).
    pub sq_flow_disabled: bool,
    /// Local address of the connection (discovery log entries for wildcard listeners).
    pub local_addr: Option<SocketAddr>,
    /// The host's address (`nvmf_subsystem_get_qpairs`).
    pub peer_addr: Option<SocketAddr>,
    /// The reactor (SPDK's poll group) serving the connection.
    pub poll_group: u16,
}

impl QueueCtx {
    pub fn new(local_addr: Option<SocketAddr>) -> Self {
        Self {
            qid: 0,
            cntlid: None,
            sqsize: 0,
            sqhd: 0,
            sq_flow_disabled: false,
            local_addr,
            peer_addr: None,
            poll_group: 0,
        }
    }

    /// Records the poll group (reactor) serving the queue.
    pub fn on_poll_group(mut self, group: u16) -> Self {
        self.poll_group = group;
        self
    }

    /// Records the host's address.
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer_addr = peer;
        self
    }

    /// Whether a Connect succeeded on this queue.
    pub fn is_connected(&self) -> bool {
        self.cntlid.is_some()
    }

    /// Most commands the host may have outstanding on this queue.
    pub fn depth(&self) -> u32 {
        u32::from(self.sqsize) + 1
    }

    fn next_sqhd(&mut self) -> u16 {
        if self.sq_flow_disabled {
            return SQHD_DISABLED;
        }
        let size = u32::from(self.sqsize) + 1;
        self.sqhd = ((u32::from(self.sqhd) + 1) % size.max(1)) as u16;
        self.sqhd
    }

    /// A CQE for `cid` on this queue (advances SQHD).
    pub fn cqe(&mut self, cid: u16, status: CompletionStatus, dw0: u32, dw1: u32) -> Cqe {
        let sqhd = self.next_sqhd();
        Cqe {
            dw0,
            dw1,
            ..Cqe::with_status(cid, self.qid, sqhd, status)
        }
    }
}

/// How a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataXfer {
    /// No data.
    None,
    /// The data came in the capsule.
    InCapsule,
    /// Fetch `len` bytes from the host (R2T + H2CData) before executing.
    FromHost(u32),
    /// Execute with an output buffer of `len` bytes; send them (C2HData) on success.
    ToHost(u32),
}

/// The result of executing a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send this completion (after the data, when the command returns data and succeeded).
    Complete(Cqe),
    /// The command stays outstanding (an AER); its completion comes later.
    Held,
    /// The bdev cannot run the command now (a thin pool out of data space, waiting to
    /// be grown): the transport keeps it, with its data, and executes it again later
    /// (every tick); the bdev ends the wait by succeeding or by failing it.
    Retry,
}

/// A completion produced outside of a command's execution (AER completions), for the admin
/// queue of controller `cntlid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncCompletion {
    pub cntlid: u16,
    pub cqe: Cqe,
}

/// Errors of the management API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CtrlrError {
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    #[error("no subsystem {0}")]
    NoSubsystem(String),
    #[error("NSID {nsid} is invalid (1..={max})")]
    InvalidNsid { nsid: u32, max: u32 },
    #[error("NSID {0} is already in use")]
    NsidInUse(u32),
    #[error("no namespace {0}")]
    NoNamespace(u32),
    #[error("bdev block size {0} is not 512 or 4096")]
    BlockSize(u32),
    #[error("invalid NQN {0:?}")]
    InvalidNqn(String),
}

/// Error Information log entries kept per controller (ELPE + 1); older ones drop off.
pub const ERROR_LOG_ENTRIES: usize = 64;

/// Addresses of one connected queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueAddrs {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// The poll group (reactor) serving the queue.
    pub poll_group: u16,
}

/// A live controller as management sees it (`nvmf_subsystem_get_controllers`/`_qpairs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub cntlid: u16,
    pub subnqn: String,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub discovery: bool,
    /// Connected queues by QID (0 = admin), with their addresses.
    pub queues: Vec<(u16, QueueAddrs)>,
}

/// Queue-pair and command counters of the reactor (SPDK's poll group statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollGroupStat {
    /// Admin queues connected since start.
    pub admin_qpairs: u64,
    /// I/O queues connected since start.
    pub io_qpairs: u64,
    /// Admin queues connected now.
    pub current_admin_qpairs: u64,
    /// I/O queues connected now.
    pub current_io_qpairs: u64,
    /// Connections open that are no live controller's queue (no Connect yet).
    pub current_unassociated_qpairs: u64,
    /// NVMe commands completed on I/O queues (success or not; fabrics commands excluded).
    pub completed_nvme_io: u64,
}

/// Per-controller counters for the SMART log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    host_reads: u64,
    host_writes: u64,
    bytes_read: u64,
    bytes_written: u64,
}

/// One controller (an association: admin queue + I/O queues).
#[derive(Debug)]
struct Controller {
    cntlid: u16,
    subnqn: String,
    hostnqn: String,
    hostid: [u8; 16],
    discovery: bool,
    cc: Cc,
    csts: Csts,
    kato_ms: u32,
    /// Keep-alive deadline base (last Keep Alive / command), ms.
    last_ka_ms: u64,
    /// I/O queues granted (1-based count); 0 until Set Features Number of Queues.
    io_queues: u16,
    /// Connected queues (0 = admin) and their addresses.
    queues: BTreeMap<u16, QueueAddrs>,
    aec: u32,
    aers: Vec<u16>,
    pending_events: VecDeque<AsyncEvent>,
    /// A namespace-attribute notice was sent and the changed-NS log not yet read.
    ns_notice_masked: bool,
    changed_ns: BTreeSet<u32>,
    changed_ns_overflow: bool,
    vwc_enabled: bool,
    counters: Counters,
    /// Error Information log, newest last, at most [`ERROR_LOG_ENTRIES`].
    errors: VecDeque<ErrorLogEntry>,
    /// Errors recorded over the controller's life (the last entry's Error Count).
    error_count: u64,
}

impl Controller {
    fn ready(&self) -> bool {
        self.cc.en() && self.csts.rdy() && !self.csts.cfs()
    }

    fn touch(&mut self, now_ms: u64) {
        self.last_ka_ms = now_ms;
    }
}

/// The whole sans-I/O target: subsystems, listeners, controllers.
#[derive(Debug)]
pub struct TargetState {
    config: CtrlrConfig,
    subsystems: BTreeMap<String, Subsystem>,
    listeners: Vec<Listener>,
    controllers: BTreeMap<u16, Controller>,
    next_cntlid: u16,
    discovery_genctr: u64,
    async_completions: Vec<AsyncCompletion>,
    /// Latest `now_ms` seen (timestamps for controllers created by Connect).
    now_ms: u64,
    /// Set by an I/O whose bdev asked for it to run again later.
    retry_wanted: bool,
    /// Per poll group (reactor): cumulative queue and command counts, and transport
    /// connections open (connected to a controller or not).
    groups: Vec<GroupTotals>,
}

#[derive(Debug, Clone, Copy, Default)]
struct GroupTotals {
    stat: PollGroupStat,
    open: u64,
}

/// A failed command: its status and the DW0 that goes with it (Connect: IATTR/IPO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fail {
    status: CompletionStatus,
    dw0: u32,
}

impl From<CompletionStatus> for Fail {
    fn from(status: CompletionStatus) -> Self {
        Self { status, dw0: 0 }
    }
}

/// DW0 and DW1 of a successful command, or why it failed.
type CmdResult = Result<(u32, u32), Fail>;

/// A command of the NVM command set on a connected I/O queue (what SPDK counts as
/// `completed_nvme_io`, and what the Error Information log records).
fn is_io_command(q: &QueueCtx, sqe: &Sqe) -> bool {
    q.is_connected() && q.qid != 0 && !sqe.is_fabrics()
}

/// A permanent (DNR) failure.
fn dnr(s: Status) -> Fail {
    s.dnr().into()
}

/// NVMe status for a bdev error (spec §3.4, §8.2).
pub fn bdev_status(e: &BdevError) -> CompletionStatus {
    match e {
        BdevError::NoSpace => Status::CAPACITY_EXCEEDED.dnr(),
        // Only reaches a host if a transport cannot hold the command: it may retry.
        BdevError::NoSpaceWait => Status::CAPACITY_EXCEEDED.retryable(),
        BdevError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE.dnr(),
        BdevError::ReadOnly => Status::NS_WRITE_PROTECTED.dnr(),
        _ => Status::INTERNAL_ERROR.dnr(),
    }
}

impl TargetState {
    pub fn new(config: CtrlrConfig) -> Self {
        Self {
            config,
            subsystems: BTreeMap::new(),
            listeners: Vec::new(),
            controllers: BTreeMap::new(),
            next_cntlid: 1,
            discovery_genctr: 1,
            async_completions: Vec::new(),
            now_ms: 0,
            retry_wanted: false,
            groups: vec![GroupTotals::default()],
        }
    }

    pub fn config(&self) -> &CtrlrConfig {
        &self.config
    }

    // ----- management API (daemon, RPCs) -----

    /// Adds an NVM subsystem.
    pub fn add_subsystem(&mut self, config: SubsystemConfig) -> Result<(), CtrlrError> {
        if fabrics::Nqn::new(&config.nqn).is_err() || config.nqn == fabrics::DISCOVERY_NQN {
            return Err(CtrlrError::InvalidNqn(config.nqn));
        }
        if self.subsystems.contains_key(&config.nqn) {
            return Err(CtrlrError::SubsystemExists(config.nqn));
        }
        info!("subsystem {} added", config.nqn);
        self.subsystems
            .insert(config.nqn.clone(), Subsystem::new(config));
        self.discovery_changed();
        Ok(())
    }

    /// Removes a subsystem (its controllers die: their connections are returned by the next
    /// [`TargetState::poll`]) and returns its bdevs.
    pub fn remove_subsystem(&mut self, nqn: &str) -> Result<Vec<Box<dyn Bdev>>, CtrlrError> {
        let sub = self
            .subsystems
            .remove(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        for c in self.controllers.values_mut().filter(|c| c.subnqn == nqn) {
            c.csts = c.csts.with_cfs(true);
        }
        self.discovery_changed();
        Ok(sub.namespaces.into_values().map(|n| n.bdev).collect())
    }

    pub fn subsystem(&self, nqn: &str) -> Option<&Subsystem> {
        self.subsystems.get(nqn)
    }

    pub fn subsystems(&self) -> impl Iterator<Item = &Subsystem> {
        self.subsystems.values()
    }

    /// Adds namespace `nsid` backed by `bdev`; connected hosts get a Namespace Attribute
    /// Changed event.
    pub fn add_namespace(
        &mut self,
        nqn: &str,
        nsid: u32,
        bdev: Box<dyn Bdev>,
    ) -> Result<(), CtrlrError> {
        let sub = self
            .subsystems
            .get_mut(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        let max = sub.config.max_namespaces;
        if nsid == 0 || nsid > max {
            return Err(CtrlrError::InvalidNsid { nsid, max });
        }
        if sub.namespaces.contains_key(&nsid) {
            return Err(CtrlrError::NsidInUse(nsid));
        }
        let bs = bdev.block_size();
        if bs != 512 && bs != 4096 {
            return Err(CtrlrError::BlockSize(bs));
        }
        info!(
            "subsystem {nqn}: namespace {nsid} = bdev {} ({} × {bs} B)",
            bdev.name(),
            bdev.num_blocks()
        );
        sub.namespaces.insert(nsid, Namespace::new(nsid, bdev));
        self.namespace_changed(nqn, nsid);
        Ok(())
    }

    /// Removes namespace `nsid` and returns its bdev; connected hosts get an event.
    pub fn remove_namespace(&mut self, nqn: &str, nsid: u32) -> Result<Box<dyn Bdev>, CtrlrError> {
        let sub = self
            .subsystems
            .get_mut(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        let ns = sub
            .namespaces
            .remove(&nsid)
            .ok_or(CtrlrError::NoNamespace(nsid))?;
        info!("subsystem {nqn}: namespace {nsid} removed");
        self.namespace_changed(nqn, nsid);
        Ok(ns.bdev)
    }

    /// Tells connected hosts that namespace `nsid` changed (e.g. a volume was resized).
    pub fn namespace_changed(&mut self, nqn: &str, nsid: u32) {
        let cntlids: Vec<u16> = self
            .controllers
            .values()
            .filter(|c| c.subnqn == nqn && !c.discovery)
            .map(|c| c.cntlid)
            .collect();
        for id in cntlids {
            let Some(c) = self.controllers.get_mut(&id) else {
                continue;
            };
            if c.changed_ns.len() >= CHANGED_NS_MAX {
                c.changed_ns_overflow = true;
            } else {
                c.changed_ns.insert(nsid);
            }
            if c.aec & crate::wire::features::AsyncEventConfig::NS_ATTR != 0 && !c.ns_notice_masked
            {
                c.ns_notice_masked = true;
                self.raise_event(id, AsyncEvent::NS_ATTR_CHANGED);
            }
        }
    }

    /// The bdev behind a namespace (for management and tests).
    pub fn namespace_bdev_mut(&mut self, nqn: &str, nsid: u32) -> Option<&mut (dyn Bdev + '_)> {
        let ns = self.subsystems.get_mut(nqn)?.namespaces.get_mut(&nsid)?;
        Some(ns.bdev.as_mut())
    }

    /// Allows `hostnqn` on subsystem `nqn`.
    pub fn add_host(&mut self, nqn: &str, hostnqn: &str) -> Result<(), CtrlrError> {
        let sub = self
            .subsystems
            .get_mut(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        sub.hosts.insert(hostnqn.to_owned());
        self.discovery_changed();
        Ok(())
    }

    /// Disallows `hostnqn` (live controllers of that host stay until they disconnect).
    pub fn remove_host(&mut self, nqn: &str, hostnqn: &str) -> Result<(), CtrlrError> {
        let sub = self
            .subsystems
            .get_mut(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        sub.hosts.remove(hostnqn);
        self.discovery_changed();
        Ok(())
    }

    /// Sets whether any host may connect to `nqn`.
    pub fn set_allow_any_host(&mut self, nqn: &str, allow: bool) -> Result<(), CtrlrError> {
        let sub = self
            .subsystems
            .get_mut(nqn)
            .ok_or_else(|| CtrlrError::NoSubsystem(nqn.to_owned()))?;
        sub.config.allow_any_host = allow;
        self.discovery_changed();
        Ok(())
    }

    /// Announces a listen address in the discovery log (the transport opens the socket).
    pub fn add_listener(&mut self, addr: SocketAddr) {
        if self.listeners.iter().any(|l| l.addr == addr) {
            return;
        }
        let portid = u16::try_from(self.listeners.len() + 1).unwrap_or(u16::MAX);
        self.listeners.push(Listener { addr, portid });
        self.discovery_changed();
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn discovery_changed(&mut self) {
        self.discovery_genctr = self.discovery_genctr.wrapping_add(1);
    }

    /// Flushes every namespace (final commit at shutdown). Returns the first error.
    pub fn flush_all(&mut self) -> Result<(), BdevError> {
        let mut first = Ok(());
        for ns in self
            .subsystems
            .values_mut()
            .flat_map(|s| s.namespaces.values_mut())
        {
            if let Err(e) = ns.bdev.flush() {
                warn!("flush of bdev {} failed: {e}", ns.bdev.name());
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Number of live controllers.
    pub fn controller_count(&self) -> usize {
        self.controllers.len()
    }

    /// Every live controller with its connected queues, by CNTLID.
    pub fn controllers_info(&self) -> Vec<ControllerInfo> {
        self.controllers
            .values()
            .map(|c| ControllerInfo {
                cntlid: c.cntlid,
                subnqn: c.subnqn.clone(),
                hostnqn: c.hostnqn.clone(),
                hostid: c.hostid,
                discovery: c.discovery,
                queues: c.queues.iter().map(|(q, a)| (*q, *a)).collect(),
            })
            .collect()
    }

    /// Queue and command counts (one reactor = one SPDK poll group).
    pub fn poll_group_stat(&self) -> PollGroupStat {
        self.poll_group_stats()
            .into_iter()
            .fold(PollGroupStat::default(), |a, g| PollGroupStat {
                admin_qpairs: a.admin_qpairs + g.admin_qpairs,
                io_qpairs: a.io_qpairs + g.io_qpairs,
                current_admin_qpairs: a.current_admin_qpairs + g.current_admin_qpairs,
                current_io_qpairs: a.current_io_qpairs + g.current_io_qpairs,
                current_unassociated_qpairs: a.current_unassociated_qpairs
                    + g.current_unassociated_qpairs,
                completed_nvme_io: a.completed_nvme_io + g.completed_nvme_io,
            })
    }

    /// Statistics of each poll group (reactor), by index.
    pub fn poll_group_stats(&self) -> Vec<PollGroupStat> {
        let mut admin = vec![0u64; self.groups.len()];
        let mut io = vec![0u64; self.groups.len()];
        for (qid, a) in self.controllers.values().flat_map(|c| c.queues.iter()) {
            let n = if *qid == 0 { &mut admin } else { &mut io };
            if let Some(x) = n.get_mut(usize::from(a.poll_group)) {
                *x += 1;
            }
        }
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (a, q) = (admin.get(i).copied(), io.get(i).copied());
                let (a, q) = (a.unwrap_or(0), q.unwrap_or(0));
                PollGroupStat {
                    current_admin_qpairs: a,
                    current_io_qpairs: q,
                    current_unassociated_qpairs: g.open.saturating_sub(a + q),
                    ..g.stat
                }
            })
            .collect()
    }

    /// Declares `n` poll groups (one per reactor; at least one).
    pub fn set_poll_groups(&mut self, n: usize) {
        self.groups.resize(n.max(1), GroupTotals::default());
    }

    /// The counters of poll group `g` (grown on demand).
    fn group(&mut self, g: u16) -> &mut GroupTotals {
        let i = usize::from(g);
        if i >= self.groups.len() {
            self.groups.resize(i + 1, GroupTotals::default());
        }
        &mut self.groups[i]
    }

    /// The I/O counters of every namespace bdev that keeps them and whose name `want`
    /// accepts, by bdev name; then resets them as `reset` says.
    pub fn bdev_io_stats(
        &mut self,
        want: impl Fn(&str) -> bool,
        reset: ResetMode,
    ) -> Vec<(String, IoStat)> {
        let mut out = Vec::new();
        for ns in self
            .subsystems
            .values_mut()
            .flat_map(|s| s.namespaces.values_mut())
        {
            if !want(ns.bdev.name()) {
                continue;
            }
            let name = ns.bdev.name().to_owned();
            if let Some(st) = ns.bdev.io_stat_mut() {
                out.push((name, *st));
                st.reset(reset);
            }
        }
        out
    }

    // ----- time -----

    /// Advances time: polls the bdevs and expires keep-alive timers. Returns the controllers
    /// that died (keep-alive expiry, subsystem removed): close all their connections.
    pub fn poll(&mut self, now_ms: u64) -> Vec<u16> {
        self.now_ms = now_ms;
        for ns in self
            .subsystems
            .values_mut()
            .flat_map(|s| s.namespaces.values_mut())
        {
            ns.bdev.poll(now_ms);
        }
        let dead: Vec<u16> = self
            .controllers
            .values()
            .filter(|c| {
                let shut = c.cc.shn() != shutdown::NONE;
                let expired = c.kato_ms != 0
                    && !shut
                    && now_ms.saturating_sub(c.last_ka_ms)
                        > u64::from(c.kato_ms.div_ceil(1000)) * 1000;
                if expired {
                    warn!(
                        "controller {} ({}): keep-alive timeout ({} ms)",
                        c.cntlid, c.hostnqn, c.kato_ms
                    );
                }
                expired || c.csts.cfs()
            })
            .map(|c| c.cntlid)
            .collect();
        for id in &dead {
            self.controllers.remove(id);
        }
        dead
    }

    /// Completions produced outside command execution (AERs), to send on the admin queue of
    /// the named controller.
    pub fn take_async_completions(&mut self) -> Vec<AsyncCompletion> {
        std::mem::take(&mut self.async_completions)
    }

    /// Whether async completions are waiting.
    pub fn has_async_completions(&self) -> bool {
        !self.async_completions.is_empty()
    }

    /// A transport connection was accepted (for [`PollGroupStat`]); every connection ends
    /// with one [`TargetState::queue_closed`].
    pub fn connection_opened(&mut self) {
        self.connection_opened_on(0);
    }

    /// A transport connection was accepted for poll group (reactor) `group`.
    pub fn connection_opened_on(&mut self, group: u16) {
        self.group(group).open += 1;
    }

    /// A connection went away. Closing the admin queue ends the controller.
    pub fn queue_closed(&mut self, q: &QueueCtx) {
        let g = self.group(q.poll_group);
        g.open = g.open.saturating_sub(1);
        let Some(id) = q.cntlid else { return };
        let Some(c) = self.controllers.get_mut(&id) else {
            return;
        };
        if q.qid == 0 {
            info!("controller {id} ({}): admin queue closed", c.hostnqn);
            self.controllers.remove(&id);
        } else {
            c.queues.remove(&q.qid);
        }
    }

    fn raise_event(&mut self, cntlid: u16, ev: AsyncEvent) {
        let Some(c) = self.controllers.get_mut(&cntlid) else {
            return;
        };
        if let Some(cid) = c.aers.pop() {
            debug!("controller {cntlid}: AER {cid:#x} completes with {ev}");
            self.async_completions.push(AsyncCompletion {
                cntlid,
                cqe: Cqe {
                    dw0: ev.dw0(),
                    ..Cqe::success(cid, 0, SQHD_DISABLED)
                },
            });
        } else {
            c.pending_events.push_back(ev);
        }
    }

    // ----- command path -----

    /// Step 1: classifies a command's data transfer; an error status fails the command
    /// without any data transfer (the in-capsule data, if any, was consumed already).
    pub fn prepare(
        &mut self,
        q: &QueueCtx,
        sqe: &Sqe,
        check: SglDataCheck,
    ) -> Result<DataXfer, CompletionStatus> {
        let r = self.classify(q, sqe, check).map_err(|f| f.status);
        if let Err(status) = r {
            if is_io_command(q, sqe) {
                self.record_error(q, sqe, status);
                self.group(q.poll_group).stat.completed_nvme_io += 1;
            }
        }
        r
    }

    fn classify(&self, q: &QueueCtx, sqe: &Sqe, check: SglDataCheck) -> Result<DataXfer, Fail> {
        if sqe.psdt() != 1 || sqe.fuse() != 0 {
            return Err(dnr(Status::INVALID_FIELD));
        }
        let dir = sqe.data_direction();
        let max = if q.qid == 0 || sqe.is_fabrics() {
            // Admin data is at most a log page window or an identify page; allow MDTS too.
            self.config.max_transfer().max(8192)
        } else {
            self.config.max_transfer()
        };
        let xfer = match check {
            SglDataCheck::Transport { len: 0 } => DataXfer::None,
            SglDataCheck::Transport { len } => {
                if len > max {
                    return Err(dnr(Status::INVALID_FIELD));
                }
                match dir {
                    DataDirection::HostToController => DataXfer::FromHost(len),
                    DataDirection::ControllerToHost => DataXfer::ToHost(len),
                    _ => return Err(dnr(Status::INVALID_FIELD)),
                }
            }
            SglDataCheck::InCapsule { .. } => {
                if dir != DataDirection::HostToController {
                    return Err(dnr(Status::INVALID_FIELD));
                }
                DataXfer::InCapsule
            }
            SglDataCheck::InCapsuleOffset { .. } => return Err(dnr(Status::SGL_OFFSET_INVALID)),
            SglDataCheck::LengthMismatch { .. } => {
                return Err(dnr(Status::DATA_SGL_LENGTH_INVALID))
            }
            SglDataCheck::UnexpectedData { .. } => return Err(dnr(Status::INVALID_FIELD)),
            SglDataCheck::UnsupportedType { .. } => {
                return Err(dnr(Status::SGL_DESCRIPTOR_TYPE_INVALID))
            }
        };
        // Writes fail before the R2T when they cannot succeed.
        if let DataXfer::FromHost(len) = xfer {
            if q.qid != 0 && !sqe.is_fabrics() {
                self.precheck_io(q, sqe, len)?;
            }
        }
        Ok(xfer)
    }

    /// Step 2: executes a command. `data_in` is the in-capsule or fetched data, `data_out`
    /// the buffer for data to the host (exactly the [`DataXfer::ToHost`] length).
    pub fn execute(
        &mut self,
        q: &mut QueueCtx,
        sqe: &Sqe,
        data_in: &[u8],
        data_out: &mut [u8],
        now_ms: u64,
    ) -> Outcome {
        self.now_ms = now_ms;
        let io_command = is_io_command(q, sqe);
        let result = if sqe.is_fabrics() {
            self.fabrics(q, sqe, data_in, now_ms)
        } else if !q.is_connected() {
            debug!("command {sqe} before Connect");
            Err(dnr(Status::COMMAND_SEQUENCE_ERROR))
        } else {
            if let Some(c) = q.cntlid.and_then(|id| self.controllers.get_mut(&id)) {
                c.touch(now_ms);
            }
            if q.qid == 0 {
                match self.admin(q, sqe, data_in, data_out, now_ms) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => return Outcome::Held,
                    Err(e) => Err(e),
                }
            } else {
                let r = self.io(q, sqe, data_in, data_out);
                if std::mem::take(&mut self.retry_wanted) {
                    return Outcome::Retry;
                }
                r
            }
        };
        let cqe = match result {
            Ok((dw0, dw1)) => q.cqe(sqe.cid, CompletionStatus::SUCCESS, dw0, dw1),
            Err(Fail { status, dw0 }) => {
                debug!("qid {} cid {:#x}: {status} for {sqe}", q.qid, sqe.cid);
                if io_command {
                    self.record_error(q, sqe, status);
                }
                q.cqe(sqe.cid, status, dw0, 0)
            }
        };
        if io_command {
            self.group(q.poll_group).stat.completed_nvme_io += 1;
        }
        Outcome::Complete(cqe)
    }

    /// Adds an Error Information log entry for a command of `q` that failed with `status`.
    fn record_error(&mut self, q: &QueueCtx, sqe: &Sqe, status: CompletionStatus) {
        let Some(c) = q.cntlid.and_then(|id| self.controllers.get_mut(&id)) else {
            return;
        };
        c.error_count = c.error_count.wrapping_add(1).max(1);
        let lba = match IoOpcode::from_u8(sqe.opcode) {
            IoOpcode::Read | IoOpcode::Write | IoOpcode::WriteZeroes | IoOpcode::Compare => {
                u64::from(sqe.cdw10) | (u64::from(sqe.cdw11) << 32)
            }
            _ => 0,
        };
        if c.errors.len() >= ERROR_LOG_ENTRIES {
            c.errors.pop_front();
        }
        c.errors.push_back(ErrorLogEntry {
            error_count: c.error_count,
            sqid: q.qid,
            cid: sqe.cid,
            status: status.to_wire(false),
            param_error_location: 0xFFFF,
            lba,
            nsid: sqe.nsid,
            vendor_info: 0,
            trtype: crate::wire::log::trtype::TCP,
            command_specific: 0,
        });
    }

    fn controller_mut(&mut self, q: &QueueCtx) -> Result<&mut Controller, Fail> {
        q.cntlid
            .and_then(|id| self.controllers.get_mut(&id))
            .ok_or(dnr(Status::COMMAND_SEQUENCE_ERROR))
    }

    fn controller(&self, q: &QueueCtx) -> Result<&Controller, Fail> {
        q.cntlid
            .and_then(|id| self.controllers.get(&id))
            .ok_or(dnr(Status::COMMAND_SEQUENCE_ERROR))
    }

    // ----- fabrics -----

    fn fabrics(&mut self, q: &mut QueueCtx, sqe: &Sqe, data: &[u8], now_ms: u64) -> CmdResult {
        match FabricsCommandType::from_u8(sqe.fctype()) {
            FabricsCommandType::Connect => {
                if q.is_connected() {
                    return Err(dnr(Status::COMMAND_SEQUENCE_ERROR));
                }
                match self.connect(q, sqe, data, now_ms) {
                    ConnectResponse::Success { cntlid, .. } => Ok((u32::from(cntlid), 0)),
                    ConnectResponse::Failure { status, param } => Err(Fail {
                        status,
                        dw0: param.map_or(0, InvalidParam::dw0),
                    }),
                }
            }
            _ if !q.is_connected() => Err(dnr(Status::COMMAND_SEQUENCE_ERROR)),
            FabricsCommandType::PropertyGet | FabricsCommandType::PropertySet if q.qid == 0 => {
                self.property(q, sqe)
            }
            _ => Err(dnr(Status::INVALID_OPCODE)),
        }
    }

    fn connect(
        &mut self,
        q: &mut QueueCtx,
        sqe: &Sqe,
        data: &[u8],
        now_ms: u64,
    ) -> ConnectResponse {
        let fail = |s: Status| ConnectResponse::Failure {
            status: s.dnr(),
            param: None,
        };
        let Ok(cmd) = ConnectCommand::from_sqe(sqe) else {
            return fail(Status::INVALID_FIELD);
        };
        if data.len() != fabrics::CONNECT_DATA_LEN {
            return fail(Status::DATA_SGL_LENGTH_INVALID);
        }
        if cmd.recfmt != 0 {
            return fail(Status::CONNECT_INCOMPATIBLE_FORMAT);
        }
        let cd = match ConnectData::parse(data) {
            Ok(cd) => cd,
            Err(crate::wire::WireError::InvalidField { offset, .. }) => {
                return ConnectResponse::invalid_param(InvalidParam::data(
                    u16::try_from(offset).unwrap_or(ipo::SUBNQN),
                ))
            }
            Err(_) => return fail(Status::DATA_SGL_LENGTH_INVALID),
        };
        let subnqn = cd.subnqn.as_str().to_owned();
        let hostnqn = cd.hostnqn.as_str().to_owned();
        if cmd.qid == 0 {
            self.admin_connect(q, &cmd, &cd, subnqn, hostnqn, now_ms)
        } else {
            self.io_connect(q, &cmd, &cd, &subnqn, &hostnqn)
        }
    }

    fn admin_connect(
        &mut self,
        q: &mut QueueCtx,
        cmd: &ConnectCommand,
        cd: &ConnectData,
        subnqn: String,
        hostnqn: String,
        now_ms: u64,
    ) -> ConnectResponse {
        if cd.cntlid != CNTLID_DYNAMIC {
            return ConnectResponse::invalid_param(InvalidParam::data(ipo::CNTLID));
        }
        let discovery = subnqn == fabrics::DISCOVERY_NQN;
        if !discovery {
            let Some(sub) = self.subsystems.get(&subnqn) else {
                info!("Connect from {hostnqn} to unknown subsystem {subnqn}");
                return ConnectResponse::invalid_param(InvalidParam::data(ipo::SUBNQN));
            };
            if !sub.host_allowed(&hostnqn) {
                warn!("Connect from {hostnqn} to {subnqn}: host not allowed");
                return ConnectResponse::invalid_host();
            }
        }
        if cmd.sqsize == 0 {
            return ConnectResponse::invalid_param(InvalidParam::sqe(ipo::SQSIZE));
        }
        let Some(cntlid) = self.alloc_cntlid() else {
            return ConnectResponse::Failure {
                status: Status::CONNECT_CONTROLLER_BUSY.dnr(),
                param: None,
            };
        };
        let kato_ms = if discovery && cmd.kato_ms == 0 {
            DISCOVERY_KATO_MS
        } else {
            cmd.kato_ms
        };
        let addrs = QueueAddrs {
            local: q.local_addr,
            peer: q.peer_addr,
            poll_group: q.poll_group,
        };
        info!(
            "controller {cntlid}: {} connected to {subnqn} (kato {kato_ms} ms)",
            hostnqn
        );
        self.controllers.insert(
            cntlid,
            Controller {
                cntlid,
                subnqn,
                hostnqn,
                hostid: cd.hostid,
                discovery,
                cc: Cc(0),
                csts: Csts(0),
                kato_ms,
                last_ka_ms: now_ms,
                io_queues: 0,
                queues: BTreeMap::from([(0, addrs)]),
                aec: 0,
                aers: Vec::new(),
                pending_events: VecDeque::new(),
                ns_notice_masked: false,
                changed_ns: BTreeSet::new(),
                changed_ns_overflow: false,
                vwc_enabled: true,
                counters: Counters::default(),
                errors: VecDeque::new(),
                error_count: 0,
            },
        );
        self.group(q.poll_group).stat.admin_qpairs += 1;
        q.qid = 0;
        q.cntlid = Some(cntlid);
        q.sqsize = cmd.sqsize;
        q.sq_flow_disabled = cmd.sq_flow_disabled();
        ConnectResponse::success(cntlid)
    }

    fn io_connect(
        &mut self,
        q: &mut QueueCtx,
        cmd: &ConnectCommand,
        cd: &ConnectData,
        subnqn: &str,
        hostnqn: &str,
    ) -> ConnectResponse {
        let mqes = self.config.mqes;
        let Some(c) = self.controllers.get_mut(&cd.cntlid) else {
            return ConnectResponse::invalid_param(InvalidParam::data(ipo::CNTLID));
        };
        if c.subnqn != subnqn || c.hostnqn != hostnqn || c.discovery {
            return ConnectResponse::invalid_param(InvalidParam::data(ipo::CNTLID));
        }
        if !c.ready() {
            return ConnectResponse::Failure {
                status: Status::COMMAND_SEQUENCE_ERROR.dnr(),
                param: None,
            };
        }
        if cmd.qid > c.io_queues {
            return ConnectResponse::invalid_param(InvalidParam::sqe(ipo::QID));
        }
        if cmd.sqsize == 0 || cmd.sqsize > mqes {
            return ConnectResponse::invalid_param(InvalidParam::sqe(ipo::SQSIZE));
        }
        if c.queues.contains_key(&cmd.qid) {
            return ConnectResponse::Failure {
                status: Status::COMMAND_SEQUENCE_ERROR.dnr(),
                param: None,
            };
        }
        c.queues.insert(
            cmd.qid,
            QueueAddrs {
                local: q.local_addr,
                peer: q.peer_addr,
                poll_group: q.poll_group,
            },
        );
        debug!("controller {}: I/O queue {} connected", c.cntlid, cmd.qid);
        let cntlid = c.cntlid;
        q.qid = cmd.qid;
        q.cntlid = Some(cntlid);
        q.sqsize = cmd.sqsize;
        q.sq_flow_disabled = cmd.sq_flow_disabled();
        self.group(q.poll_group).stat.io_qpairs += 1;
        ConnectResponse::success(cntlid)
    }

    fn alloc_cntlid(&mut self) -> Option<u16> {
        for _ in 0..CNTLID_MAX {
            let id = self.next_cntlid;
            self.next_cntlid = if id >= CNTLID_MAX { 1 } else { id + 1 };
            if !self.controllers.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn cap(&self) -> Cap {
        Cap::new(self.config.mqes, CAP_TO)
    }

    fn property(&mut self, q: &QueueCtx, sqe: &Sqe) -> CmdResult {
        let cmd = PropertyCommand::from_sqe(sqe).map_err(|_| dnr(Status::INVALID_FIELD))?;
        let cap = self.cap();
        let flush_needed;
        {
            let c = self.controller_mut(q)?;
            let Some(size) = property_size(cmd.offset) else {
                return Err(dnr(Status::INVALID_FIELD));
            };
            match cmd.set_value() {
                None => {
                    let v: u64 = match cmd.offset {
                        offset::CAP => cap.raw(),
                        offset::VS => u64::from(VERSION.raw()),
                        offset::CC => u64::from(c.cc.raw()),
                        offset::CSTS => u64::from(c.csts.raw()),
                        _ => 0,
                    };
                    let v = match cmd.size {
                        PropertySize::Four => v & 0xFFFF_FFFF,
                        PropertySize::Eight => v,
                    };
                    let _ = size;
                    return Ok(PropertyCommand::get_result(v));
                }
                Some(v) => {
                    if cmd.offset != offset::CC {
                        return Err(dnr(Status::INVALID_FIELD));
                    }
                    flush_needed = Self::set_cc(c, Cc(v as u32));
                }
            }
        }
        if flush_needed {
            self.flush_subsystem(q);
        }
        Ok((0, 0))
    }

    /// Applies a CC write (spec §4.4). Returns whether a shutdown asks for a flush.
    fn set_cc(c: &mut Controller, new: Cc) -> bool {
        let old = c.cc;
        let mut flush = false;
        if new.en() && !old.en() {
            let ok = if c.discovery {
                (new.iosqes() == 0 || new.iosqes() == 6) && (new.iocqes() == 0 || new.iocqes() == 4)
            } else {
                new.iosqes() == 6 && new.iocqes() == 4
            } && new.mps() == 0
                && new.ams() == 0
                && new.css() == Cc::CSS_NVM;
            if ok {
                c.csts = c.csts.with_rdy(true);
                debug!("controller {}: enabled", c.cntlid);
            } else {
                warn!("controller {}: bad CC {new}", c.cntlid);
                c.csts = c.csts.with_cfs(true);
            }
        } else if !new.en() && old.en() {
            debug!("controller {}: disabled", c.cntlid);
            c.csts = Csts(0);
        }
        if new.shn() != shutdown::NONE && old.shn() == shutdown::NONE {
            info!("controller {}: shutdown", c.cntlid);
            flush = !c.discovery;
            c.csts = c.csts.with_shst(shutdown::ABRUPT_OR_COMPLETE);
        } else if new.shn() == shutdown::NONE && old.shn() != shutdown::NONE {
            c.csts = c.csts.with_shst(0);
        }
        c.cc = new;
        flush
    }

    fn flush_subsystem(&mut self, q: &QueueCtx) {
        let Ok(nqn) = self.controller(q).map(|c| c.subnqn.clone()) else {
            return;
        };
        if let Some(sub) = self.subsystems.get_mut(&nqn) {
            for ns in sub.namespaces.values_mut() {
                if let Err(e) = ns.bdev.flush() {
                    warn!("flush of {} at shutdown failed: {e}", ns.bdev.name());
                }
            }
        }
    }
}

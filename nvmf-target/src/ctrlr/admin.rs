//! Admin commands of I/O and discovery controllers: Identify, Get Log Page, Set/Get
//! Features, Asynchronous Event Request, Keep Alive, Abort (spec §6, §7).

use ::log::debug;

use super::{
    dnr, AsyncCompletion, CmdResult, Controller, Fail, QueueCtx, TargetState, ERROR_LOG_ENTRIES,
    MAX_AERS, VERSION,
};
use crate::wire::admin::{AbortCommand, AdminOpcode};
use crate::wire::cqe::{Cqe, SQHD_DISABLED};
use crate::wire::fabrics::DISCOVERY_NQN;
use crate::wire::features::{
    AsyncEventConfig, FeatureId, GetFeaturesCommand, KeepAliveTimer, NumberOfQueues, Select,
    SetFeaturesCommand, VolatileWriteCache, HOST_ID_EXHID,
};
use crate::wire::identify::{
    self, cntrltype, dlfeat, nsfeat, oaes, oncs, Cns, IdentifyCommand, IdentifyController,
    IdentifyNamespace, NsIdDescriptor, NsIdDescriptorList, NsList, IDENTIFY_DATA_LEN,
};
use crate::wire::log::{
    self, adrfam, build_discovery_log, log_window, subtype, treq, DiscoveryLogEntry,
    FirmwareSlotLog, GetLogPageCommand, LogPageId, SmartLog,
};
use crate::wire::sqe::Sqe;
use crate::wire::status::Status;

/// NSID meaning "all namespaces".
const NSID_ALL: u32 = 0xFFFF_FFFF;

impl TargetState {
    /// Runs an admin command; `Ok(None)` = held (AER).
    pub(super) fn admin(
        &mut self,
        q: &mut QueueCtx,
        sqe: &Sqe,
        data_in: &[u8],
        data_out: &mut [u8],
        now_ms: u64,
    ) -> Result<Option<(u32, u32)>, Fail> {
        let (discovery, ready) = {
            let c = self.controller(q)?;
            (c.discovery, c.ready())
        };
        if !ready {
            return Err(dnr(if discovery {
                Status::INVALID_OPCODE
            } else {
                Status::COMMAND_SEQUENCE_ERROR
            }));
        }
        let op = AdminOpcode::from_u8(sqe.opcode);
        let r = match op {
            AdminOpcode::Identify => self.identify(q, sqe, data_out),
            AdminOpcode::GetLogPage => self.get_log_page(q, sqe, data_out),
            AdminOpcode::SetFeatures => self.set_features(q, sqe, data_in, now_ms),
            AdminOpcode::GetFeatures => self.get_features(q, sqe, data_out),
            AdminOpcode::AsyncEventRequest => return self.aer(q, sqe),
            AdminOpcode::KeepAlive => {
                self.controller_mut(q)?.touch(now_ms);
                Ok((0, 0))
            }
            AdminOpcode::Abort if !discovery => self.abort(q, sqe),
            _ => Err(dnr(Status::INVALID_OPCODE)),
        };
        r.map(Some)
    }

    // ----- Identify -----

    fn identify(&mut self, q: &QueueCtx, sqe: &Sqe, out: &mut [u8]) -> CmdResult {
        let cmd = IdentifyCommand::from_sqe(sqe);
        if out.len() != IDENTIFY_DATA_LEN {
            return Err(dnr(Status::DATA_SGL_LENGTH_INVALID));
        }
        let c = self.controller(q)?;
        if c.discovery && cmd.cns != Cns::Controller {
            return Err(dnr(Status::INVALID_FIELD));
        }
        let emitted = match cmd.cns {
            Cns::Controller => self.identify_controller(c).emit(out),
            Cns::Namespace => {
                let ns = self.identify_namespace(c, cmd.nsid)?;
                ns.emit(out)
            }
            Cns::ActiveNsList => {
                if cmd.nsid >= 0xFFFF_FFFE {
                    return Err(dnr(Status::INVALID_NS_OR_FORMAT));
                }
                let sub = self.subsystems.get(&c.subnqn);
                let nsids = sub.into_iter().flat_map(|s| s.namespaces.keys().copied());
                NsList::active_after(cmd.nsid, nsids).emit(out)
            }
            Cns::NsIdDescriptors => {
                let ns = self
                    .subsystems
                    .get(&c.subnqn)
                    .and_then(|s| s.namespaces.get(&cmd.nsid))
                    .ok_or(dnr(Status::INVALID_NS_OR_FORMAT))?;
                NsIdDescriptorList {
                    descriptors: vec![
                        NsIdDescriptor::Uuid(ns.uuid),
                        NsIdDescriptor::Nguid(ns.nguid),
                        NsIdDescriptor::Csi(0),
                    ],
                }
                .emit(out)
            }
            // Zeroes are a valid NVM command-set controller structure (no limits reported).
            Cns::CsiController if cmd.csi == 0 => {
                out.fill(0);
                Ok(())
            }
            _ => return Err(dnr(Status::INVALID_FIELD)),
        };
        emitted.map_err(|_| dnr(Status::INTERNAL_ERROR))?;
        Ok((0, 0))
    }

    fn identify_controller(&self, c: &Controller) -> IdentifyController {
        let mut id = IdentifyController::io_controller_defaults();
        id.cntlid = c.cntlid;
        id.ver = VERSION.raw();
        id.set_fr(&self.config.firmware_revision);
        id.maxcmd = self.config.mqes.saturating_add(1);
        if c.discovery {
            id.set_sn("discovery");
            id.set_mn("Rust NVMe-oF discovery");
            id.set_subnqn(DISCOVERY_NQN);
            id.cntrltype = cntrltype::DISCOVERY;
            id.mdts = 0;
            id.ioccsz = 0;
            id.iorcsz = 0;
            id.oaes = 0;
            return id;
        }
        if let Some(sub) = self.subsystems.get(&c.subnqn) {
            id.set_sn(&sub.config.serial);
            id.set_mn(&sub.config.model);
            id.nn = sub.config.max_namespaces;
        }
        id.set_subnqn(&c.subnqn);
        id.mdts = self.config.mdts;
        id.oaes = oaes::NS_ATTR;
        id.oncs = oncs::DSM | oncs::WRITE_ZEROES;
        // 0's based: the Error Information log holds ERROR_LOG_ENTRIES entries.
        id.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
        id.vwc = identify::vwc::PRESENT | identify::vwc::FLUSH_ALL_UNSUPPORTED;
        id.ioccsz = (64 + self.config.in_capsule_data_size) / 16;
        id.wctemp = 0x157;
        id.cctemp = 0x175;
        id
    }

    fn identify_namespace(&self, c: &Controller, nsid: u32) -> Result<IdentifyNamespace, Fail> {
        let sub = self.subsystems.get(&c.subnqn);
        let max = sub.map_or(0, |s| s.config.max_namespaces);
        if nsid == 0 || nsid == NSID_ALL || nsid > max {
            return Err(dnr(Status::INVALID_NS_OR_FORMAT));
        }
        let Some(ns) = sub.and_then(|s| s.namespaces.get(&nsid)) else {
            // Allocated but inactive: all zero (NCAP 0 = not attached).
            return Ok(IdentifyNamespace::zeroed());
        };
        let nsze = ns.nsze();
        let thin = ns.bdev.thin_info();
        let nuse = thin.map_or(nsze, |t| t.allocated_lbas.min(nsze));
        let mut id = IdentifyNamespace::new(nsze, nuse, ns.lbads, thin.is_some(), ns.nguid);
        // Every bdev reads deallocated blocks as zeroes (the Bdev contract).
        id.dlfeat = dlfeat::THIN;
        if thin.is_none() {
            id.nsfeat &= !nsfeat::THIN_PROVISIONING;
        }
        Ok(id)
    }

    // ----- Get Log Page -----

    fn get_log_page(&mut self, q: &QueueCtx, sqe: &Sqe, out: &mut [u8]) -> CmdResult {
        let cmd = GetLogPageCommand::from_sqe(sqe);
        cmd.validate().map_err(|_| dnr(Status::INVALID_FIELD))?;
        if out.len() as u64 != cmd.transfer_len() {
            return Err(dnr(Status::DATA_SGL_LENGTH_INVALID));
        }
        let discovery = self.controller(q)?.discovery;
        let log: Vec<u8> = match cmd.lid {
            LogPageId::Discovery if discovery => self.discovery_log(q)?,
            _ if discovery => return Err(dnr(Status::INVALID_FIELD)),
            LogPageId::ErrorInformation => self.error_log(q)?,
            LogPageId::SmartHealth => self.smart_log(q)?,
            LogPageId::FirmwareSlot => {
                let mut fr = [b' '; 8];
                let rev = self.config.firmware_revision.as_bytes();
                for (d, s) in fr.iter_mut().zip(rev) {
                    *d = *s;
                }
                let mut b = vec![0u8; FirmwareSlotLog::LEN];
                FirmwareSlotLog::single(fr)
                    .emit(&mut b)
                    .map_err(|_| dnr(Status::INTERNAL_ERROR))?;
                b
            }
            LogPageId::ChangedNsList => {
                let c = self.controller_mut(q)?;
                let list = if c.changed_ns_overflow {
                    NsList {
                        nsids: vec![NSID_ALL],
                    }
                } else {
                    NsList {
                        nsids: c.changed_ns.iter().copied().collect(),
                    }
                };
                if !cmd.rae {
                    c.changed_ns.clear();
                    c.changed_ns_overflow = false;
                    c.ns_notice_masked = false;
                }
                let mut b = vec![0u8; IDENTIFY_DATA_LEN];
                list.emit(&mut b).map_err(|_| dnr(Status::INTERNAL_ERROR))?;
                b
            }
            _ => return Err(dnr(Status::INVALID_FIELD)),
        };
        log_window(&log, cmd.lpo, out).map_err(|_| dnr(Status::INVALID_FIELD))?;
        Ok((0, 0))
    }

    fn smart_log(&self, q: &QueueCtx) -> Result<Vec<u8>, Fail> {
        let c = self.controller(q)?;
        let s = SmartLog {
            critical_warning: 0,
            temperature: 300,
            avail_spare: 100,
            spare_thresh: 10,
            percent_used: 0,
            endu_grp_crit_warn: 0,
            data_units_read: SmartLog::data_units(c.counters.bytes_read),
            data_units_written: SmartLog::data_units(c.counters.bytes_written),
            host_reads: u128::from(c.counters.host_reads),
            host_writes: u128::from(c.counters.host_writes),
            ctrl_busy_time: 0,
            power_cycles: 1,
            power_on_hours: u128::from(self.now_ms / 3_600_000),
            unsafe_shutdowns: 0,
            media_errors: 0,
            num_err_log_entries: u128::from(c.error_count),
            warning_temp_time: 0,
            critical_comp_time: 0,
            temp_sensor: [0; 8],
        };
        let mut b = vec![0u8; SmartLog::LEN];
        s.emit(&mut b).map_err(|_| dnr(Status::INTERNAL_ERROR))?;
        Ok(b)
    }

    /// The Error Information log: [`ERROR_LOG_ENTRIES`] slots, newest first, unused ones
    /// zero (Error Count 0 = empty).
    fn error_log(&self, q: &QueueCtx) -> Result<Vec<u8>, Fail> {
        let c = self.controller(q)?;
        let len = log::ErrorLogEntry::LEN;
        let mut b = vec![0u8; ERROR_LOG_ENTRIES * len];
        for (e, slot) in c.errors.iter().rev().zip(b.chunks_exact_mut(len)) {
            e.emit(slot).map_err(|_| dnr(Status::INTERNAL_ERROR))?;
        }
        Ok(b)
    }

    /// The discovery log as `q`'s host sees it: this discovery service on every listener,
    /// then every subsystem the host may access on every listener.
    fn discovery_log(&self, q: &QueueCtx) -> Result<Vec<u8>, Fail> {
        let c = self.controller(q)?;
        let mut entries = Vec::new();
        let addr_of = |l: &super::Listener| {
            let ip = if l.addr.ip().is_unspecified() {
                q.local_addr.map_or(l.addr.ip(), |a| a.ip())
            } else {
                l.addr.ip()
            };
            let fam = if ip.is_ipv4() {
                adrfam::IPV4
            } else {
                adrfam::IPV6
            };
            (ip.to_string(), l.addr.port().to_string(), fam)
        };
        for l in &self.listeners {
            let (ip, port, fam) = addr_of(l);
            entries.push(DiscoveryLogEntry::tcp(
                subtype::CURRENT_DISCOVERY,
                fam,
                l.portid,
                &ip,
                &port,
                DISCOVERY_NQN,
            ));
        }
        for sub in self
            .subsystems
            .values()
            .filter(|s| s.host_allowed(&c.hostnqn))
        {
            for l in &self.listeners {
                let (ip, port, fam) = addr_of(l);
                let mut e =
                    DiscoveryLogEntry::tcp(subtype::NVM, fam, l.portid, &ip, &port, sub.nqn());
                // "Not specified" + SQ flow control disable supported, as the Linux target.
                e.treq = treq::DISABLE_SQFLOW_SUPPORTED;
                entries.push(e);
            }
        }
        build_discovery_log(self.discovery_genctr, &entries)
            .map_err(|_| dnr(Status::INTERNAL_ERROR))
    }

    // ----- Features -----

    fn set_features(&mut self, q: &QueueCtx, sqe: &Sqe, _data: &[u8], now_ms: u64) -> CmdResult {
        let cmd = SetFeaturesCommand::from_sqe(sqe);
        if cmd.sv {
            return Err(dnr(Status::FEATURE_NOT_SAVEABLE));
        }
        let max_io_queues = self.config.max_io_queues;
        let c = self.controller_mut(q)?;
        match cmd.fid {
            FeatureId::NumberOfQueues if !c.discovery => {
                let req = NumberOfQueues::from_dword(cmd.cdw11);
                if !req.is_valid_request() {
                    return Err(dnr(Status::INVALID_FIELD));
                }
                let grant = req.grant(max_io_queues);
                c.io_queues = grant.nsq.min(grant.ncq) + 1;
                debug!("controller {}: {grant} granted", c.cntlid);
                Ok((grant.dword(), 0))
            }
            FeatureId::AsyncEventConfig => {
                let supported = if c.discovery {
                    AsyncEventConfig::DISCOVERY_CHANGE
                } else {
                    AsyncEventConfig::SMART_MASK | AsyncEventConfig::NS_ATTR
                };
                if AsyncEventConfig(cmd.cdw11).unsupported_bits(supported) != 0 {
                    return Err(dnr(Status::INVALID_FIELD));
                }
                c.aec = cmd.cdw11;
                Ok((cmd.cdw11, 0))
            }
            FeatureId::KeepAliveTimer => {
                c.kato_ms = KeepAliveTimer::from_dword(cmd.cdw11).kato_ms;
                c.touch(now_ms);
                Ok((0, 0))
            }
            FeatureId::VolatileWriteCache if !c.discovery => {
                c.vwc_enabled = VolatileWriteCache::from_dword(cmd.cdw11).enabled;
                Ok((0, 0))
            }
            _ => Err(dnr(Status::INVALID_FIELD)),
        }
    }

    fn get_features(&mut self, q: &QueueCtx, sqe: &Sqe, out: &mut [u8]) -> CmdResult {
        let cmd = GetFeaturesCommand::from_sqe(sqe);
        let max_io_queues = self.config.max_io_queues;
        let c = self.controller(q)?;
        if matches!(cmd.sel, Select::Reserved(_)) {
            return Err(dnr(Status::INVALID_FIELD));
        }
        if cmd.sel == Select::SupportedCapabilities {
            // Nothing is saveable or namespace-specific; every listed feature is changeable.
            return Ok((0b100, 0));
        }
        let default = cmd.sel == Select::Default;
        let dw0 = match cmd.fid {
            FeatureId::NumberOfQueues if !c.discovery => {
                let n = if default || c.io_queues == 0 {
                    max_io_queues
                } else {
                    c.io_queues
                };
                let v = n.saturating_sub(1);
                NumberOfQueues { nsq: v, ncq: v }.dword()
            }
            FeatureId::AsyncEventConfig => {
                if default {
                    0
                } else {
                    c.aec
                }
            }
            FeatureId::KeepAliveTimer => {
                if default {
                    0
                } else {
                    c.kato_ms
                }
            }
            FeatureId::VolatileWriteCache if !c.discovery => VolatileWriteCache {
                enabled: default || c.vwc_enabled,
            }
            .dword(),
            FeatureId::HostIdentifier if cmd.cdw11 & HOST_ID_EXHID != 0 => {
                let Some(dst) = out.get_mut(..16) else {
                    return Err(dnr(Status::DATA_SGL_LENGTH_INVALID));
                };
                dst.copy_from_slice(&c.hostid);
                0
            }
            _ => return Err(dnr(Status::INVALID_FIELD)),
        };
        Ok((dw0, 0))
    }

    // ----- Asynchronous events -----

    /// Abort: I/O runs to completion as it arrives (nothing waits in a queue of ours but
    /// writes whose data is still in flight and commands parked by a full pool, which the
    /// host cannot tell apart from running ones), so only an outstanding Asynchronous
    /// Event Request can be aborted: it completes with Command Abort Requested. Anything
    /// else answers "not aborted" (DW0 bit 0), which the specification allows.
    fn abort(&mut self, q: &QueueCtx, sqe: &Sqe) -> CmdResult {
        let a = AbortCommand::from_cdw10(sqe.cdw10);
        let c = self.controller_mut(q)?;
        let cntlid = c.cntlid;
        if a.sqid == 0 {
            if let Some(i) = c.aers.iter().position(|&cid| cid == a.cid) {
                c.aers.remove(i);
                debug!("Abort: AER {:#x} of controller {cntlid} aborted", a.cid);
                self.async_completions.push(AsyncCompletion {
                    cntlid,
                    cqe: Cqe::with_status(
                        a.cid,
                        0,
                        SQHD_DISABLED,
                        Status::ABORT_REQUESTED.retryable(),
                    ),
                });
                return Ok((0, 0));
            }
        }
        debug!("Abort sqid {} cid {:#x}: not aborted", a.sqid, a.cid);
        Ok((AbortCommand::NOT_ABORTED_DW0, 0))
    }

    fn aer(&mut self, q: &QueueCtx, sqe: &Sqe) -> Result<Option<(u32, u32)>, Fail> {
        let c = self.controller_mut(q)?;
        if c.aers.len() >= MAX_AERS {
            return Err(dnr(Status::AER_LIMIT_EXCEEDED));
        }
        if let Some(ev) = c.pending_events.pop_front() {
            return Ok(Some((ev.dw0(), 0)));
        }
        c.aers.push(sqe.cid);
        Ok(None)
    }
}

//! NVM I/O commands on I/O queues: Read, Write, Flush, Write Zeroes, Dataset Management
//! (spec §8), executed synchronously on the namespace's bdev.

use super::{bdev_status, dnr, CmdResult, Fail, Namespace, QueueCtx, TargetState};
use crate::bdev::BdevError;
use crate::wire::io::{DsmCommand, IoOpcode, RwCommand};
use crate::wire::sqe::Sqe;
use crate::wire::status::Status;

impl TargetState {
    fn io_namespace(&self, q: &QueueCtx, nsid: u32) -> Result<&Namespace, Fail> {
        let c = self.controller(q)?;
        if !c.ready() {
            return Err(dnr(Status::COMMAND_SEQUENCE_ERROR));
        }
        self.subsystems
            .get(&c.subnqn)
            .and_then(|s| s.namespaces.get(&nsid))
            .ok_or(dnr(Status::INVALID_NS_OR_FORMAT))
    }

    /// Checks a Read/Write's fields against its namespace; returns the data length.
    fn check_rw(&self, ns: &Namespace, cmd: &RwCommand, sgl_len: u32) -> Result<u32, Fail> {
        if cmd.prinfo != 0 {
            return Err(dnr(Status::INVALID_FIELD));
        }
        if !cmd.in_range(ns.nsze()) {
            return Err(dnr(Status::LBA_OUT_OF_RANGE));
        }
        let len = cmd.data_len(ns.lbads).unwrap_or(u64::MAX);
        if len > u64::from(self.config.max_transfer()) {
            return Err(dnr(Status::INVALID_FIELD));
        }
        if len != u64::from(sgl_len) {
            return Err(dnr(Status::DATA_SGL_LENGTH_INVALID));
        }
        Ok(sgl_len)
    }

    /// Validation of a host-to-controller I/O command before its data is fetched (no R2T
    /// for a command that will fail).
    pub(super) fn precheck_io(&self, q: &QueueCtx, sqe: &Sqe, len: u32) -> Result<(), Fail> {
        let ns = self.io_namespace(q, sqe.nsid)?;
        match IoOpcode::from_u8(sqe.opcode) {
            IoOpcode::Write => self.check_rw(ns, &RwCommand::from_sqe(sqe), len).map(drop),
            IoOpcode::DatasetManagement => {
                if len < DsmCommand::from_sqe(sqe).needed_len() {
                    return Err(dnr(Status::DATA_SGL_LENGTH_INVALID));
                }
                Ok(())
            }
            _ => Err(dnr(Status::INVALID_OPCODE)),
        }
    }

    pub(super) fn io(
        &mut self,
        q: &QueueCtx,
        sqe: &Sqe,
        data_in: &[u8],
        data_out: &mut [u8],
    ) -> CmdResult {
        let opcode = IoOpcode::from_u8(sqe.opcode);
        let nsid = sqe.nsid;
        // Validation needs `&self`, execution `&mut` the bdev: look the namespace up twice.
        let mut bytes = 0u64;
        match opcode {
            IoOpcode::Read | IoOpcode::Write => {
                let cmd = RwCommand::from_sqe(sqe);
                let ns = self.io_namespace(q, nsid)?;
                let len = self.check_rw(ns, &cmd, sqe.sgl.length)?;
                let (cntlid, ns) = self.ns_mut(q, nsid)?;
                let r = if opcode == IoOpcode::Read {
                    match data_out.get_mut(..len as usize) {
                        Some(buf) => ns.bdev.read(cmd.slba, buf),
                        None => return Err(dnr(Status::DATA_SGL_LENGTH_INVALID)),
                    }
                } else {
                    match data_in.get(..len as usize) {
                        Some(buf) if data_in.len() == len as usize => {
                            ns.bdev.write(cmd.slba, buf, cmd.fua)
                        }
                        _ => return Err(dnr(Status::DATA_SGL_LENGTH_INVALID)),
                    }
                };
                r.map_err(|e| self.bdev_fail(&e))?;
                bytes = u64::from(len);
                if let Some(c) = self.controllers.get_mut(&cntlid) {
                    if opcode == IoOpcode::Read {
                        c.counters.host_reads += 1;
                        c.counters.bytes_read += bytes;
                    } else {
                        c.counters.host_writes += 1;
                        c.counters.bytes_written += bytes;
                    }
                }
            }
            IoOpcode::Flush => {
                self.io_namespace(q, nsid)?;
                let (_, ns) = self.ns_mut(q, nsid)?;
                ns.bdev.flush().map_err(|e| Fail::from(bdev_status(&e)))?;
            }
            IoOpcode::WriteZeroes => {
                let cmd = RwCommand::from_sqe(sqe);
                let ns = self.io_namespace(q, nsid)?;
                if !cmd.in_range(ns.nsze()) {
                    return Err(dnr(Status::LBA_OUT_OF_RANGE));
                }
                let (_, ns) = self.ns_mut(q, nsid)?;
                let count = u64::from(cmd.blocks());
                let r = if cmd.deac {
                    ns.bdev.deallocate(cmd.slba, count)
                } else {
                    ns.bdev.write_zeroes(cmd.slba, count)
                }
                .and_then(|()| if cmd.fua { ns.bdev.flush() } else { Ok(()) });
                r.map_err(|e| self.bdev_fail(&e))?;
            }
            IoOpcode::DatasetManagement => {
                let cmd = DsmCommand::from_sqe(sqe);
                let ns = self.io_namespace(q, nsid)?;
                let nsze = ns.nsze();
                let ranges: Vec<_> = cmd
                    .parse_ranges(data_in)
                    .map_err(|_| dnr(Status::DATA_SGL_LENGTH_INVALID))?
                    .collect();
                if !cmd.deallocate() {
                    return Ok((0, 0));
                }
                if ranges.iter().any(|r| !r.in_range(nsze)) {
                    return Err(dnr(Status::LBA_OUT_OF_RANGE));
                }
                let (_, ns) = self.ns_mut(q, nsid)?;
                let mut res = Ok(());
                for r in ranges.iter().filter(|r| r.nlb > 0) {
                    res = ns.bdev.deallocate(r.slba, u64::from(r.nlb));
                    if res.is_err() {
                        break;
                    }
                }
                res.map_err(|e| self.bdev_fail(&e))?;
            }
            _ => return Err(dnr(Status::INVALID_OPCODE)),
        }
        let _ = bytes;
        Ok((0, 0))
    }

    /// The failure for a bdev error; an out-of-space wait asks the transport to retry.
    fn bdev_fail(&mut self, e: &BdevError) -> Fail {
        if *e == BdevError::NoSpaceWait {
            self.retry_wanted = true;
        }
        Fail::from(bdev_status(e))
    }

    /// The queue's controller id and namespace `nsid` of its subsystem, for execution
    /// (borrows the controller map and the subsystem map apart: no copy of the NQN).
    fn ns_mut(&mut self, q: &QueueCtx, nsid: u32) -> Result<(u16, &mut Namespace), Fail> {
        let c = q
            .cntlid
            .and_then(|id| self.controllers.get(&id))
            .ok_or(dnr(Status::COMMAND_SEQUENCE_ERROR))?;
        let ns = self
            .subsystems
            .get_mut(c.subnqn.as_str())
            .and_then(|s| s.namespaces.get_mut(&nsid))
            .ok_or(dnr(Status::INVALID_NS_OR_FORMAT))?;
        Ok((c.cntlid, ns))
    }
}

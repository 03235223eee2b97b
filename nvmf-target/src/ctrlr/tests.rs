//! Unit tests of the controller state machine, without sockets.

use super::*;
use crate::bdev::malloc::Malloc;
use crate::bdev::ThinInfo;
use crate::wire::fabrics::Nqn;
use crate::wire::identify::{Cns, IdentifyCommand, IdentifyNamespace};
use crate::wire::io::{IoOpcode, RwCommand};
use crate::wire::log::{GetLogPageCommand, LogPageId};
use crate::wire::sgl::SglDescriptor;

const NQN: &str = "nqn.2016-06.io.spdk:unit";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:unit-host";

fn malloc(blocks: u64) -> Box<dyn Bdev> {
    Box::new(Malloc::new("m", blocks, 512, [3; 16]).unwrap())
}

fn target() -> TargetState {
    let mut t = TargetState::new(CtrlrConfig::default());
    t.add_subsystem(SubsystemConfig::new(NQN).allow_any_host(false).host(HOST))
        .unwrap();
    t.add_namespace(NQN, 1, malloc(2048)).unwrap();
    t
}

fn run(
    t: &mut TargetState,
    q: &mut QueueCtx,
    sqe: Sqe,
    data: &[u8],
    out_len: usize,
) -> (Cqe, Vec<u8>) {
    run_at(t, q, sqe, data, out_len, 0)
}

fn run_at(
    t: &mut TargetState,
    q: &mut QueueCtx,
    sqe: Sqe,
    data: &[u8],
    out_len: usize,
    now: u64,
) -> (Cqe, Vec<u8>) {
    let mut out = vec![0u8; out_len];
    match t.execute(q, &sqe, data, &mut out, now) {
        Outcome::Complete(c) => (c, out),
        Outcome::Held => panic!("held"),
        Outcome::Retry => panic!("retry"),
    }
}

fn connect_sqe(qid: u16, kato_ms: u32) -> Sqe {
    ConnectCommand {
        cid: 1,
        sgl: SglDescriptor::in_capsule(1024),
        recfmt: 0,
        qid,
        sqsize: 31,
        cattr: 0,
        kato_ms,
    }
    .to_sqe()
}

fn connect_data(cntlid: u16, subnqn: &str, hostnqn: &str) -> Vec<u8> {
    let mut d = vec![0u8; 1024];
    ConnectData {
        hostid: [7; 16],
        cntlid,
        subnqn: Nqn::new(subnqn).unwrap(),
        hostnqn: Nqn::new(hostnqn).unwrap(),
    }
    .emit(&mut d)
    .unwrap();
    d
}

fn prop_set(t: &mut TargetState, q: &mut QueueCtx, v: u32) -> Cqe {
    let p = PropertyCommand {
        cid: 2,
        size: PropertySize::Four,
        offset: offset::CC,
        value: Some(u64::from(v)),
    };
    run(t, q, p.to_sqe(), &[], 0).0
}

fn prop_get(t: &mut TargetState, q: &mut QueueCtx, off: u32) -> u32 {
    let p = PropertyCommand {
        cid: 3,
        size: PropertySize::Four,
        offset: off,
        value: None,
    };
    let c = run(t, q, p.to_sqe(), &[], 0).0;
    assert!(c.status.is_success());
    c.dw0
}

/// Admin queue connected and enabled.
fn admin(t: &mut TargetState, kato_ms: u32) -> (QueueCtx, u16) {
    let mut q = QueueCtx::new(None);
    let (c, _) = run(
        t,
        &mut q,
        connect_sqe(0, kato_ms),
        &connect_data(0xFFFF, NQN, HOST),
        0,
    );
    assert!(c.status.is_success(), "{c}");
    assert_eq!(prop_get(t, &mut q, offset::CSTS) & 1, 0);
    assert!(prop_set(t, &mut q, 0x0046_0001).status.is_success());
    assert_eq!(prop_get(t, &mut q, offset::CSTS) & 1, 1);
    (q, c.dw0 as u16)
}

fn io_queue(t: &mut TargetState, cntlid: u16, a: &mut QueueCtx) -> QueueCtx {
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x07;
    sf.cdw11 = 0x0003_0003;
    let (c, _) = run(t, a, sf, &[], 0);
    assert!(c.status.is_success());
    assert_eq!(c.dw0, 0x0003_0003);
    let mut q = QueueCtx::new(None);
    let (c, _) = run(
        t,
        &mut q,
        connect_sqe(1, 0),
        &connect_data(cntlid, NQN, HOST),
        0,
    );
    assert!(c.status.is_success(), "{c}");
    q
}

#[test]
fn connect_property_identify_and_io_on_malloc() {
    let mut t = target();
    let (mut a, cntlid) = admin(&mut t, 5000);
    assert_eq!(prop_get(&mut t, &mut a, offset::VS), 0x0001_0300);

    let id = IdentifyCommand {
        nsid: 0,
        cns: Cns::Controller,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    let (c, data) = run(&mut t, &mut a, id.to_sqe(4), &[], 4096);
    assert!(c.status.is_success());
    let idc = crate::wire::identify::IdentifyController::parse(&data).unwrap();
    assert!(idc.linux_host_problems(cntlid).is_empty());
    assert_eq!(crate::wire::trim_padded(&idc.sn), "RNVMF0000000000001");

    let idns = IdentifyCommand {
        nsid: 1,
        cns: Cns::Namespace,
        ..id
    };
    let (c, data) = run(&mut t, &mut a, idns.to_sqe(5), &[], 4096);
    assert!(c.status.is_success());
    let ns = IdentifyNamespace::parse(&data).unwrap();
    assert_eq!(
        (ns.nsze, ns.ncap, ns.nuse, ns.dlfeat),
        (2048, 2048, 2048, 9)
    );
    assert_eq!(ns.nsfeat & 1, 0, "malloc is not thin");

    let mut q = io_queue(&mut t, cntlid, &mut a);
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let w = RwCommand::new(
        IoOpcode::Write,
        9,
        1,
        10,
        8,
        SglDescriptor::in_capsule(4096),
    );
    let (c, _) = run(&mut t, &mut q, w.to_sqe(), &data, 0);
    assert!(c.status.is_success(), "{c}");
    let r = RwCommand::new(IoOpcode::Read, 10, 1, 10, 8, SglDescriptor::transport(4096));
    assert_eq!(
        t.prepare(&q, &r.to_sqe(), SglDataCheck::Transport { len: 4096 }),
        Ok(DataXfer::ToHost(4096))
    );
    let (c, back) = run(&mut t, &mut q, r.to_sqe(), &[], 4096);
    assert!(c.status.is_success());
    assert_eq!(back, data);

    // Deallocate reads back zeroes.
    let mut dsm = Sqe::new(0x09, 11, 1);
    dsm.cdw11 = 4;
    dsm.sgl = SglDescriptor::in_capsule(16);
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&4u32.to_le_bytes());
    range[8..16].copy_from_slice(&10u64.to_le_bytes());
    assert!(run(&mut t, &mut q, dsm, &range, 0).0.status.is_success());
    let (_, back) = run(&mut t, &mut q, r.to_sqe(), &[], 4096);
    assert!(back[..2048].iter().all(|&b| b == 0));
    assert_eq!(back[2048..], data[2048..]);

    // Out of range and bad SGL length.
    let oob = RwCommand::new(
        IoOpcode::Read,
        12,
        1,
        2047,
        2,
        SglDescriptor::transport(1024),
    );
    let (c, _) = run(&mut t, &mut q, oob.to_sqe(), &[], 1024);
    assert_eq!(
        (c.status.status, c.status.dnr),
        (Status::LBA_OUT_OF_RANGE, true)
    );
    let short = RwCommand::new(IoOpcode::Read, 13, 1, 0, 2, SglDescriptor::transport(512));
    let (c, _) = run(&mut t, &mut q, short.to_sqe(), &[], 512);
    assert_eq!(c.status.status, Status::DATA_SGL_LENGTH_INVALID);
    // Unknown namespace.
    let r9 = RwCommand::new(IoOpcode::Read, 14, 9, 0, 1, SglDescriptor::transport(512));
    let (c, _) = run(&mut t, &mut q, r9.to_sqe(), &[], 512);
    assert_eq!(c.status.status, Status::INVALID_NS_OR_FORMAT);

    // Shutdown then close.
    assert!(prop_set(&mut t, &mut a, 0x0046_4001).status.is_success());
    assert_eq!(prop_get(&mut t, &mut a, offset::CSTS) & 0xC, 0x8);
    t.queue_closed(&q);
    t.queue_closed(&a);
    assert_eq!(t.controller_count(), 0);
}

#[test]
fn host_nqn_and_connect_parameters_are_checked() {
    let mut t = target();
    let mut q = QueueCtx::new(None);
    let (c, _) = run(
        &mut t,
        &mut q,
        connect_sqe(0, 0),
        &connect_data(0xFFFF, NQN, "nqn.x:intruder"),
        0,
    );
    assert_eq!(c.status.status, Status::CONNECT_INVALID_HOST);
    assert_eq!(c.dw0, (1 << 16) | 512);
    assert!(!q.is_connected());
    let (c, _) = run(
        &mut t,
        &mut q,
        connect_sqe(0, 0),
        &connect_data(5, NQN, HOST),
        0,
    );
    assert_eq!(
        (c.status.status, c.dw0),
        (Status::CONNECT_INVALID_PARAMETERS, (1 << 16) | 16)
    );
    let (c, _) = run(&mut t, &mut q, connect_sqe(0, 0), &[0u8; 512], 0);
    assert_eq!(c.status.status, Status::DATA_SGL_LENGTH_INVALID);
    // Anything but Connect first.
    let (c, _) = run(&mut t, &mut q, Sqe::new(0x18, 4, 0), &[], 0);
    assert_eq!(c.status.status, Status::COMMAND_SEQUENCE_ERROR);
    // I/O Connect naming an unknown controller.
    let (c, _) = run(
        &mut t,
        &mut q,
        connect_sqe(1, 0),
        &connect_data(77, NQN, HOST),
        0,
    );
    assert_eq!(c.status.status, Status::CONNECT_INVALID_PARAMETERS);
    // Allowing the host at runtime lets it in.
    t.add_host(NQN, "nqn.x:intruder").unwrap();
    let (c, _) = run(
        &mut t,
        &mut q,
        connect_sqe(0, 0),
        &connect_data(0xFFFF, NQN, "nqn.x:intruder"),
        0,
    );
    assert!(c.status.is_success());
}

#[test]
fn bad_capsules_get_proper_statuses() {
    let mut t = target();
    let (mut a, _) = admin(&mut t, 0);
    // Unknown admin opcode.
    let (c, _) = run(&mut t, &mut a, Sqe::new(0x80, 7, 0), &[], 0);
    assert_eq!(
        (c.status.status, c.status.dnr),
        (Status::INVALID_OPCODE, true)
    );
    // Keyed SGL (RDMA) is refused in prepare.
    let mut s = Sqe::new(0x06, 8, 0);
    s.sgl.identifier = 0x40;
    assert_eq!(
        t.prepare(&a, &s, SglDataCheck::UnsupportedType { identifier: 0x40 }),
        Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr())
    );
    // PSDT must be SGL.
    let mut s = Sqe::new(0x06, 9, 0);
    s.flags = 0;
    assert_eq!(
        t.prepare(&a, &s, SglDataCheck::Transport { len: 4096 }),
        Err(Status::INVALID_FIELD.dnr())
    );
    // Identify with a wrong length.
    let (c, _) = run(&mut t, &mut a, Sqe::new(0x06, 10, 0), &[], 512);
    assert_eq!(c.status.status, Status::DATA_SGL_LENGTH_INVALID);
    // Unknown log page, misaligned offset.
    let g = GetLogPageCommand::new(LogPageId::Unknown(0x42), 0, 0, 512);
    assert_eq!(
        run(&mut t, &mut a, g.to_sqe(11), &[], 512).0.status.status,
        Status::INVALID_FIELD
    );
    let g = GetLogPageCommand::new(LogPageId::SmartHealth, 0xFFFF_FFFF, 2, 512);
    assert_eq!(
        run(&mut t, &mut a, g.to_sqe(12), &[], 512).0.status.status,
        Status::INVALID_FIELD
    );
    let g = GetLogPageCommand::new(LogPageId::SmartHealth, 0xFFFF_FFFF, 0, 512);
    assert!(run(&mut t, &mut a, g.to_sqe(13), &[], 512)
        .0
        .status
        .is_success());
    // Property Set of a read-only register.
    let p = PropertyCommand {
        cid: 14,
        size: PropertySize::Four,
        offset: offset::CSTS,
        value: Some(1),
    };
    assert_eq!(
        run(&mut t, &mut a, p.to_sqe(), &[], 0).0.status.status,
        Status::INVALID_FIELD
    );
}

#[test]
fn keep_alive_expiry_kills_the_controller() {
    let mut t = target();
    let (mut a, cntlid) = admin(&mut t, 2000);
    assert!(t.poll(1500).is_empty());
    let (c, _) = run_at(&mut t, &mut a, Sqe::new(0x18, 4, 0), &[], 0, 1900);
    assert!(c.status.is_success());
    assert!(
        t.poll(3800).is_empty(),
        "keep alive at 1900 holds until 3900"
    );
    assert_eq!(t.poll(4000), vec![cntlid]);
    assert_eq!(t.controller_count(), 0);
}

#[test]
fn namespace_added_completes_the_aer_and_lists_in_changed_log() {
    let mut t = target();
    let (mut a, _) = admin(&mut t, 0);
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x0B;
    sf.cdw11 = 1 << 8;
    assert!(run(&mut t, &mut a, sf, &[], 0).0.status.is_success());
    let aer = Sqe::new(0x0C, 31, 0);
    assert_eq!(t.execute(&mut a, &aer, &[], &mut [], 0), Outcome::Held);
    t.add_namespace(NQN, 2, malloc(64)).unwrap();
    let done = t.take_async_completions();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].cqe.cid, done[0].cqe.dw0), (31, 0x0004_0002));
    let g = GetLogPageCommand::new(LogPageId::ChangedNsList, 0xFFFF_FFFF, 0, 4096);
    let (c, log) = run(&mut t, &mut a, g.to_sqe(6), &[], 4096);
    assert!(c.status.is_success());
    assert_eq!(&log[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
    // Removing it again queues an event until the next AER.
    t.remove_namespace(NQN, 2).unwrap();
    assert!(t.take_async_completions().is_empty());
    let (c, _) = run(&mut t, &mut a, aer, &[], 0);
    assert_eq!(c.dw0, 0x0004_0002);
}

#[test]
fn abort_completes_an_outstanding_aer_and_nothing_else() {
    let mut t = target();
    let (mut a, _) = admin(&mut t, 0);
    let aer = Sqe::new(0x0C, 40, 0);
    assert_eq!(t.execute(&mut a, &aer, &[], &mut [], 0), Outcome::Held);
    // Abort of a command that is not outstanding: "not aborted".
    let mut ab = Sqe::new(0x08, 41, 0);
    ab.cdw10 = 99 << 16; // CID 99 on SQ 0
    let (c, _) = run(&mut t, &mut a, ab, &[], 0);
    assert!(c.status.is_success());
    assert_eq!(c.dw0 & 1, 1, "not aborted");
    assert!(t.take_async_completions().is_empty());
    // Abort of the AER: aborted, and the AER completes with Abort Requested.
    ab.cid = 42;
    ab.cdw10 = 40 << 16;
    let (c, _) = run(&mut t, &mut a, ab, &[], 0);
    assert!(c.status.is_success());
    assert_eq!(c.dw0 & 1, 0, "aborted");
    let done = t.take_async_completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].cqe.cid, 40);
    assert_eq!(done[0].cqe.status.status, Status::ABORT_REQUESTED);
    // An event now has no AER to complete: it waits for the next one.
    t.add_namespace(NQN, 2, malloc(64)).unwrap();
    assert!(t.take_async_completions().is_empty());
}

struct Thin(Malloc);

impl Bdev for Thin {
    fn name(&self) -> &str {
        "thin"
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.0.num_blocks()
    }
    fn uuid(&self) -> [u8; 16] {
        [4; 16]
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        self.0.read(lba, buf)
    }
    fn write(&mut self, _: u64, _: &[u8], _: bool) -> Result<(), BdevError> {
        Err(BdevError::NoSpace)
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        Ok(())
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.0.write_zeroes(lba, count)
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.0.deallocate(lba, count)
    }
    fn thin_info(&self) -> Option<ThinInfo> {
        Some(ThinInfo { allocated_lbas: 16 })
    }
}

#[test]
fn thin_namespace_fields_and_out_of_space() {
    let mut t = target();
    let thin = Thin(Malloc::new("t", 1024, 512, [4; 16]).unwrap());
    t.add_namespace(NQN, 3, Box::new(thin)).unwrap();
    let (mut a, cntlid) = admin(&mut t, 0);
    let id = IdentifyCommand {
        nsid: 3,
        cns: Cns::Namespace,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    let (_, data) = run(&mut t, &mut a, id.to_sqe(4), &[], 4096);
    let ns = IdentifyNamespace::parse(&data).unwrap();
    assert_eq!(
        (ns.nsze, ns.nuse, ns.nsfeat & 1, ns.dlfeat),
        (1024, 16, 1, 9)
    );
    let mut q = io_queue(&mut t, cntlid, &mut a);
    let w = RwCommand::new(IoOpcode::Write, 9, 3, 0, 1, SglDescriptor::in_capsule(512));
    let (c, _) = run(&mut t, &mut q, w.to_sqe(), &[0u8; 512], 0);
    assert_eq!(
        (c.status.status, c.status.dnr),
        (Status::CAPACITY_EXCEEDED, true)
    );
}

fn get_log(t: &mut TargetState, a: &mut QueueCtx, lid: LogPageId, len: u32) -> Vec<u8> {
    let g = GetLogPageCommand::new(lid, 0xFFFF_FFFF, 0, len);
    let (c, data) = run(t, a, g.to_sqe(0x40), &[], len as usize);
    assert!(c.status.is_success(), "{c}");
    data
}

fn error_entries(t: &mut TargetState, a: &mut QueueCtx) -> Vec<crate::wire::log::ErrorLogEntry> {
    let len = crate::wire::log::ErrorLogEntry::LEN;
    let data = get_log(
        t,
        a,
        LogPageId::ErrorInformation,
        (ERROR_LOG_ENTRIES * len) as u32,
    );
    data.chunks_exact(len)
        .map(|c| crate::wire::log::ErrorLogEntry::parse(c).unwrap())
        .collect()
}

#[test]
fn io_errors_fill_the_error_log_and_smart_count() {
    let mut t = target();
    let (mut a, cntlid) = admin(&mut t, 0);
    let id = IdentifyCommand {
        nsid: 0,
        cns: Cns::Controller,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    let (_, data) = run(&mut t, &mut a, id.to_sqe(4), &[], 4096);
    let idc = crate::wire::identify::IdentifyController::parse(&data).unwrap();
    assert_eq!(usize::from(idc.elpe) + 1, ERROR_LOG_ENTRIES);
    assert!(error_entries(&mut t, &mut a)
        .iter()
        .all(|e| e.error_count == 0));

    let mut q = io_queue(&mut t, cntlid, &mut a);
    // A good read: no entry.
    let ok = RwCommand::new(IoOpcode::Read, 20, 1, 0, 1, SglDescriptor::transport(512));
    assert!(run(&mut t, &mut q, ok.to_sqe(), &[], 512)
        .0
        .status
        .is_success());
    // 1: LBA out of range.
    let oob = RwCommand::new(
        IoOpcode::Read,
        21,
        1,
        2047,
        2,
        SglDescriptor::transport(1024),
    );
    let (c1, _) = run(&mut t, &mut q, oob.to_sqe(), &[], 1024);
    assert_eq!(c1.status.status, Status::LBA_OUT_OF_RANGE);
    // 2: unknown namespace.
    let bad_ns = RwCommand::new(IoOpcode::Read, 22, 9, 5, 1, SglDescriptor::transport(512));
    let (c2, _) = run(&mut t, &mut q, bad_ns.to_sqe(), &[], 512);
    assert_eq!(c2.status.status, Status::INVALID_NS_OR_FORMAT);
    // 3: a write refused before its data is fetched (wrong SGL length).
    let w = RwCommand::new(
        IoOpcode::Write,
        23,
        1,
        100,
        2,
        SglDescriptor::transport(512),
    );
    let st = t
        .prepare(&q, &w.to_sqe(), SglDataCheck::Transport { len: 512 })
        .unwrap_err();
    // Admin errors are not logged.
    let g = GetLogPageCommand::new(LogPageId::Unknown(0x42), 0, 0, 512);
    assert!(!run(&mut t, &mut a, g.to_sqe(11), &[], 512)
        .0
        .status
        .is_success());

    let e = error_entries(&mut t, &mut a);
    assert_eq!(e[0].error_count, 3, "newest first");
    assert_eq!((e[0].sqid, e[0].cid, e[0].lba, e[0].nsid), (1, 23, 100, 1));
    assert_eq!(e[0].status, st.to_wire(false));
    assert_eq!(
        (e[1].error_count, e[1].cid, e[1].nsid, e[1].lba),
        (2, 22, 9, 5)
    );
    assert_eq!(e[1].status, c2.status.to_wire(false));
    assert_eq!((e[2].error_count, e[2].cid, e[2].lba), (1, 21, 2047));
    assert_eq!(e[2].status, c1.status.to_wire(false));
    assert_eq!(
        (e[2].param_error_location, e[2].trtype),
        (0xFFFF, crate::wire::log::trtype::TCP)
    );
    assert!(e[3..].iter().all(|x| x.error_count == 0));
    let smart = get_log(&mut t, &mut a, LogPageId::SmartHealth, 512);
    let s = crate::wire::log::SmartLog::parse(&smart).unwrap();
    assert_eq!(s.num_err_log_entries, 3);

    // The ring keeps the newest ERROR_LOG_ENTRIES.
    for i in 0..70u16 {
        let r = RwCommand::new(
            IoOpcode::Read,
            100 + i,
            1,
            4096,
            1,
            SglDescriptor::transport(512),
        );
        run(&mut t, &mut q, r.to_sqe(), &[], 512);
    }
    let e = error_entries(&mut t, &mut a);
    assert_eq!(e[0].error_count, 73);
    assert_eq!(e[0].cid, 169);
    assert_eq!(
        e[ERROR_LOG_ENTRIES - 1].error_count,
        73 - ERROR_LOG_ENTRIES as u64 + 1
    );
    let smart = get_log(&mut t, &mut a, LogPageId::SmartHealth, 512);
    assert_eq!(
        crate::wire::log::SmartLog::parse(&smart)
            .unwrap()
            .num_err_log_entries,
        73
    );

    // Statistics: 1 admin + 1 I/O queue; 1 + 3 + 70 I/O commands completed.
    let st = t.poll_group_stat();
    assert_eq!(
        (
            st.admin_qpairs,
            st.io_qpairs,
            st.current_admin_qpairs,
            st.current_io_qpairs
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(st.completed_nvme_io, 74);
    let info = t.controllers_info();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].cntlid, info[0].hostnqn.as_str()), (cntlid, HOST));
    assert_eq!(info[0].hostid, [7; 16]);
    let qids: Vec<u16> = info[0].queues.iter().map(|(q, _)| *q).collect();
    assert_eq!(qids, [0, 1]);
    t.queue_closed(&q);
    assert_eq!(t.poll_group_stat().current_io_qpairs, 0);
    t.queue_closed(&a);
    let st = t.poll_group_stat();
    assert_eq!(
        (st.current_admin_qpairs, st.admin_qpairs, st.io_qpairs),
        (0, 1, 1)
    );
    assert!(t.controllers_info().is_empty());
}

#[test]
fn namespace_bdev_io_stats_are_read_and_reset() {
    use crate::bdev::stat::ResetMode;
    let mut t = TargetState::new(CtrlrConfig::default());
    t.add_subsystem(SubsystemConfig::new(NQN).allow_any_host(false).host(HOST))
        .unwrap();
    t.add_namespace(NQN, 1, Box::new(crate::bdev::StatBdev::new(malloc(2048))))
        .unwrap();
    let (mut a, cntlid) = admin(&mut t, 0);
    let mut q = io_queue(&mut t, cntlid, &mut a);
    let w = RwCommand::new(
        IoOpcode::Write,
        9,
        1,
        10,
        8,
        SglDescriptor::in_capsule(4096),
    );
    assert!(run(&mut t, &mut q, w.to_sqe(), &[1u8; 4096], 0)
        .0
        .status
        .is_success());
    let r = RwCommand::new(IoOpcode::Read, 10, 1, 10, 2, SglDescriptor::transport(1024));
    assert!(run(&mut t, &mut q, r.to_sqe(), &[], 1024)
        .0
        .status
        .is_success());
    let s = t.bdev_io_stats(|n| n == "m", ResetMode::All);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, "m");
    assert_eq!((s[0].1.write.ops, s[0].1.write.bytes), (1, 4096));
    assert_eq!((s[0].1.read.ops, s[0].1.read.bytes), (1, 1024));
    let s = t.bdev_io_stats(|_| true, ResetMode::None);
    assert_eq!(
        s[0].1,
        crate::bdev::IoStat::default(),
        "reset after reading"
    );
    assert!(t
        .bdev_io_stats(|n| n == "other", ResetMode::None)
        .is_empty());
}

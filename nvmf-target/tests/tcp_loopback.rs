//! Socket-level tests: a small in-test NVMe/TCP initiator (built from the `wire` module) talks
//! to a target served on 127.0.0.1: ICReq with digests, admin Connect, enable, Identify, an
//! I/O queue, a write large enough for R2T + several H2CData, read back, errors, and a
//! malformed PDU that kills only its own connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::wire::cqe::Cqe;
use nvmf_target::wire::fabrics::{ConnectCommand, ConnectData, Nqn, PropertyCommand, PropertySize};
use nvmf_target::wire::identify::{Cns, IdentifyCommand, IdentifyController};
use nvmf_target::wire::io::{IoOpcode, RwCommand};
use nvmf_target::wire::pdu::{
    CapsuleCmd, Digests, H2CData, IcReq, IcResp, Pdu, PduDecoder, R2t, RxConfig, TxConfig,
};
use nvmf_target::wire::registers::offset;
use nvmf_target::wire::sgl::SglDescriptor;
use nvmf_target::wire::sqe::Sqe;
use nvmf_target::wire::status::Status;
use nvmf_target::{SubsystemConfig, Target, TargetConfig, TargetHandle};

#[macro_use]
mod common;
use common::config;

/// `read`, again after EINTR (a socket with a receive timeout returns it when the process
/// was stopped and continued, even without signal handlers).
fn read_again<R: Read>(r: &mut R, b: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

const NQN: &str = "nqn.2016-06.io.spdk:loop";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
const BLOCKS: u64 = 8192; // 4 MiB of 512-byte blocks

/// What the host receives, owned.
#[derive(Debug)]
enum Rx {
    IcResp(IcResp),
    Resp(Cqe),
    Data {
        cccid: u16,
        datao: u32,
        data: Vec<u8>,
    },
    R2t(R2t),
    Term {
        fes: u16,
    },
}

struct Host {
    s: TcpStream,
    dec: PduDecoder,
    tx: TxConfig,
    buf: Vec<u8>,
    filled: usize,
    pos: usize,
}

impl Host {
    fn connect(addr: SocketAddr, digests: Digests) -> (Self, IcResp) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = Host {
            s,
            dec: PduDecoder::new(RxConfig::host()),
            tx: TxConfig::default(),
            buf: vec![0; 1 << 16],
            filled: 0,
            pos: 0,
        };
        h.send(&Pdu::IcReq(IcReq {
            digests,
            ..IcReq::default()
        }));
        let Rx::IcResp(r) = h.recv() else {
            panic!("no ICResp")
        };
        assert_eq!(r.digests, digests);
        assert_eq!(r.cpda, 0);
        assert!(r.maxh2cdata >= 4096 && r.maxh2cdata % 4 == 0);
        h.tx = TxConfig { digests, pda: 0 };
        (h, r)
    }

    fn send(&mut self, p: &Pdu<'_>) {
        let mut v = vec![0u8; p.wire_len(&self.tx)];
        p.emit(&mut v, &self.tx).unwrap();
        self.s.write_all(&v).unwrap();
    }

    fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn recv(&mut self) -> Rx {
        loop {
            let used = self.dec.push(&self.buf[self.pos..self.filled]);
            self.pos += used;
            match self.dec.poll() {
                Ok(Some(p)) => {
                    return match p {
                        Pdu::IcResp(r) => Rx::IcResp(r),
                        Pdu::CapsuleResp(r) => Rx::Resp(r.cqe),
                        Pdu::C2HData(d) => Rx::Data {
                            cccid: d.cccid,
                            datao: d.datao,
                            data: d.data.to_vec(),
                        },
                        Pdu::R2T(r) => Rx::R2t(r),
                        Pdu::TermReq(t) => Rx::Term { fes: t.fes },
                        other => panic!("unexpected {other}"),
                    }
                }
                Ok(None) => {}
                Err(e) => panic!("host decode error: {e}"),
            }
            if self.pos == self.filled {
                self.pos = 0;
                self.filled = 0;
                let n = read_again(&mut self.s, &mut self.buf).unwrap();
                assert!(n > 0, "target closed the connection");
                self.filled = n;
            }
        }
    }

    fn resp(&mut self) -> Cqe {
        match self.recv() {
            Rx::Resp(c) => c,
            other => panic!("expected CapsuleResp, got {other:?}"),
        }
    }

    /// A write whose data goes after the target's R2T, in one H2CData PDU.
    fn write_r2t(&mut self, sqe: Sqe, data: &[u8]) -> Cqe {
        self.send(&Pdu::CapsuleCmd(CapsuleCmd { sqe, data: &[] }));
        let Rx::R2t(r2t) = self.recv() else {
            panic!("no R2T")
        };
        assert_eq!(r2t.r2tl as usize, data.len());
        self.send(&Pdu::H2CData(H2CData {
            cccid: sqe.cid,
            ttag: r2t.ttag,
            datao: 0,
            last: true,
            data,
        }));
        self.resp()
    }

    fn cmd(&mut self, sqe: Sqe, data: &[u8]) -> Cqe {
        self.send(&Pdu::CapsuleCmd(CapsuleCmd { sqe, data }));
        self.resp()
    }

    /// A command returning `len` bytes: C2HData then the CQE.
    fn cmd_read(&mut self, sqe: Sqe) -> (Vec<u8>, Cqe) {
        self.send(&Pdu::CapsuleCmd(CapsuleCmd { sqe, data: &[] }));
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Rx::Data { cccid, datao, data } => {
                    assert_eq!(cccid, sqe.cid);
                    assert_eq!(datao as usize, out.len());
                    out.extend_from_slice(&data);
                }
                Rx::Resp(c) => return (out, c),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn fabric_connect(&mut self, qid: u16, cntlid: u16, subnqn: &str, hostnqn: &str) -> Cqe {
        let cmd = ConnectCommand {
            cid: 1,
            sgl: SglDescriptor::in_capsule(1024),
            recfmt: 0,
            qid,
            sqsize: if qid == 0 { 31 } else { 127 },
            cattr: 0,
            kato_ms: 5000,
        };
        let mut data = [0u8; 1024];
        ConnectData {
            hostid: [1; 16],
            cntlid,
            subnqn: Nqn::new(subnqn).unwrap(),
            hostnqn: Nqn::new(hostnqn).unwrap(),
        }
        .emit(&mut data)
        .unwrap();
        self.cmd(cmd.to_sqe(), &data)
    }

    fn prop_set(&mut self, off: u32, v: u64) -> Cqe {
        let p = PropertyCommand {
            cid: 2,
            size: PropertySize::Four,
            offset: off,
            value: Some(v),
        };
        self.cmd(p.to_sqe(), &[])
    }

    fn prop_get(&mut self, off: u32, size: PropertySize) -> u64 {
        let p = PropertyCommand {
            cid: 3,
            size,
            offset: off,
            value: None,
        };
        let c = self.cmd(p.to_sqe(), &[]);
        assert!(c.status.is_success());
        u64::from(c.dw0) | (u64::from(c.dw1) << 32)
    }
}

fn start(mask: u64) -> (TargetHandle, SocketAddr) {
    start_with(config(mask))
}

fn start_with(cfg: TargetConfig) -> (TargetHandle, SocketAddr) {
    let mut t = Target::new(cfg);
    t.add_subsystem(
        SubsystemConfig::new(NQN)
            .allow_any_host(false)
            .host(HOSTNQN),
    )
    .unwrap();
    t.add_namespace(
        NQN,
        1,
        Box::new(Malloc::new("m0", BLOCKS, 512, [9; 16]).unwrap()),
    )
    .unwrap();
    let addr = t.listen("127.0.0.1:0").unwrap();
    (t.spawn().unwrap(), addr)
}

/// An enabled controller with one I/O queue (QID 1): (admin queue, CNTLID, I/O queue).
fn admin_and_io(addr: SocketAddr, digests: Digests) -> (Host, u16, Host) {
    let (mut a, cntlid) = admin(addr, digests);
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x07; // Set Features: Number of Queues (one)
    assert!(a.cmd(sf, &[]).status.is_success());
    let (mut q, _) = Host::connect(addr, digests);
    let c = q.fabric_connect(1, cntlid, NQN, HOSTNQN);
    assert!(c.status.is_success(), "{c}");
    (a, cntlid, q)
}

/// Admin queue up to enabled; returns the host and CNTLID.
fn admin(addr: SocketAddr, digests: Digests) -> (Host, u16) {
    let (mut h, _) = Host::connect(addr, digests);
    let c = h.fabric_connect(0, 0xFFFF, NQN, HOSTNQN);
    assert!(c.status.is_success(), "{c}");
    let cntlid = c.dw0 as u16;
    let cap = h.prop_get(offset::CAP, PropertySize::Eight);
    assert_eq!(cap & 0xFFFF, 127, "MQES");
    assert!(h.prop_set(offset::CC, 0x0046_0000).status.is_success());
    assert!(h.prop_set(offset::CC, 0x0046_0001).status.is_success());
    assert_eq!(h.prop_get(offset::CSTS, PropertySize::Four) & 1, 1, "RDY");
    (h, cntlid)
}

fn connect_identify_write_with_r2t_read_back_digests_on(mask: u64) {
    let (target, addr) = start(mask);
    let (mut a, cntlid) = admin(addr, Digests::BOTH);

    let id = IdentifyCommand {
        nsid: 0,
        cns: Cns::Controller,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    let (data, c) = a.cmd_read(id.to_sqe(4));
    assert!(c.status.is_success());
    let idc = IdentifyController::parse(&data).unwrap();
    assert!(
        idc.linux_host_problems(cntlid).is_empty(),
        "{:?}",
        idc.linux_host_problems(cntlid)
    );

    // Number of queues: one I/O queue.
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x07;
    let c = a.cmd(sf, &[]);
    assert!(c.status.is_success());

    let (mut q, ic) = Host::connect(addr, Digests::BOTH);
    let c = q.fabric_connect(1, cntlid, NQN, HOSTNQN);
    assert!(c.status.is_success(), "{c}");

    // A 512 KiB write: R2T for all of it, sent as several H2CData PDUs.
    let len = 512 * 1024usize;
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 512) as u8).collect();
    let w = RwCommand::new(
        IoOpcode::Write,
        0x10,
        1,
        100,
        (len / 512) as u32,
        SglDescriptor::transport(len as u32),
    );
    q.send(&Pdu::CapsuleCmd(CapsuleCmd {
        sqe: w.to_sqe(),
        data: &[],
    }));
    let Rx::R2t(r2t) = q.recv() else {
        panic!("no R2T")
    };
    assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (0x10, 0, len as u32));
    let chunk = ic.maxh2cdata as usize;
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        q.send(&Pdu::H2CData(H2CData {
            cccid: 0x10,
            ttag: r2t.ttag,
            datao: off as u32,
            last: off + n == len,
            data: &payload[off..off + n],
        }));
        off += n;
    }
    let c = q.resp();
    assert!(c.status.is_success(), "{c}");

    // A small in-capsule write.
    let small = [0xA5u8; 1024];
    let w2 = RwCommand::new(
        IoOpcode::Write,
        0x11,
        1,
        4000,
        2,
        SglDescriptor::in_capsule(1024),
    );
    assert!(q.cmd(w2.to_sqe(), &small).status.is_success());

    // Read back.
    let r = RwCommand::new(
        IoOpcode::Read,
        0x12,
        1,
        100,
        (len / 512) as u32,
        SglDescriptor::transport(len as u32),
    );
    let (back, c) = q.cmd_read(r.to_sqe());
    assert!(c.status.is_success());
    assert!(back == payload, "read back differs");
    let r = RwCommand::new(
        IoOpcode::Read,
        0x13,
        1,
        4000,
        2,
        SglDescriptor::transport(1024),
    );
    let (back, _) = q.cmd_read(r.to_sqe());
    assert_eq!(back, small);

    // A write beyond the namespace fails before any R2T.
    let bad = RwCommand::new(
        IoOpcode::Write,
        0x14,
        1,
        BLOCKS - 1,
        8,
        SglDescriptor::transport(4096),
    );
    let c = q.cmd(bad.to_sqe(), &[]);
    assert_eq!(c.status.status, Status::LBA_OUT_OF_RANGE);
    assert!(c.status.dnr);

    // A malformed PDU on a third connection kills only that one.
    let (mut evil, _) = Host::connect(addr, Digests::NONE);
    evil.send_raw(&[0x04, 0, 72, 0, 0xFF, 0xFF, 0xFF, 0x7F]); // CapsuleCmd with absurd PLEN
    match evil.recv() {
        Rx::Term { fes } => assert_eq!(fes, 0x05, "Data Transfer Limit Exceeded"),
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    let r = RwCommand::new(
        IoOpcode::Read,
        0x15,
        1,
        4000,
        2,
        SglDescriptor::transport(1024),
    );
    let (back, c) = q.cmd_read(r.to_sqe());
    assert!(c.status.is_success());
    assert_eq!(back, small);

    // What the target holds.
    let held = target
        .with_state(|s| {
            let mut b = vec![0u8; 512 * 1024];
            s.namespace_bdev_mut(NQN, 1)
                .unwrap()
                .read(100, &mut b)
                .unwrap();
            b
        })
        .unwrap();
    assert!(held == payload);
    drop(q);
    drop(a);
    target.stop().unwrap();
}

fn host_not_allowed_and_unknown_subsystem_are_refused(mask: u64) {
    let (_target, addr) = start(mask);
    let (mut h, _) = Host::connect(addr, Digests::NONE);
    let c = h.fabric_connect(0, 0xFFFF, NQN, "nqn.2014-08.org.nvmexpress:uuid:intruder");
    assert_eq!(c.status.status, Status::CONNECT_INVALID_HOST);
    assert!(c.status.dnr);
    assert_eq!(c.dw0, (1 << 16) | 512, "IATTR 1, IPO 512");
    let (mut h, _) = Host::connect(addr, Digests::NONE);
    let c = h.fabric_connect(0, 0xFFFF, "nqn.2016-06.io.spdk:nope", HOSTNQN);
    assert_eq!(c.status.status, Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(c.dw0, (1 << 16) | 256);
}

fn queue_depth_128_of_outstanding_writes(mask: u64) {
    let (_target, addr) = start(mask);
    let (_a, _, mut q) = admin_and_io(addr, Digests::NONE);
    // 127 writes (SQSIZE) outstanding at once, each waiting for its R2T.
    for cid in 0..127u16 {
        let w = RwCommand::new(
            IoOpcode::Write,
            cid,
            1,
            u64::from(cid) * 16,
            16,
            SglDescriptor::transport(8192),
        );
        q.send(&Pdu::CapsuleCmd(CapsuleCmd {
            sqe: w.to_sqe(),
            data: &[],
        }));
    }
    let mut r2ts = Vec::new();
    for _ in 0..127 {
        let Rx::R2t(r) = q.recv() else {
            panic!("no R2T")
        };
        r2ts.push(r);
    }
    for r in r2ts.iter().rev() {
        let data = vec![r.cccid as u8; 8192];
        q.send(&Pdu::H2CData(H2CData {
            cccid: r.cccid,
            ttag: r.ttag,
            datao: 0,
            last: true,
            data: &data,
        }));
    }
    for _ in 0..127 {
        assert!(q.resp().status.is_success());
    }
}

/// Hostile peers: an unknown PDU type, a corrupted header digest, a PDU that is not ICReq
/// first, and a connection dropped mid-command each end only their own connection (with a
/// C2HTermReq where the spec asks for one); a well-behaved host keeps working throughout.
fn hostile_pdus_kill_only_their_own_connection(mask: u64) {
    let (target, addr) = start(mask);
    let (mut good, _) = admin(addr, Digests::NONE);
    let identify = IdentifyCommand {
        nsid: 0,
        cns: Cns::Controller,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    let identify_ok = |h: &mut Host| {
        let (data, c) = h.cmd_read(identify.to_sqe(77));
        assert!(c.status.is_success(), "{c}");
        assert_eq!(data.len(), 4096);
    };
    identify_ok(&mut good);

    // Unknown PDU type after a proper ICReq.
    let (mut evil, _) = Host::connect(addr, Digests::NONE);
    evil.send_raw(&[0x7e, 0, 8, 0, 8, 0, 0, 0]);
    match evil.recv() {
        Rx::Term { fes } => assert_eq!(fes, 0x01, "Invalid Header Field"),
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    identify_ok(&mut good);

    // A header digest that does not match (digests negotiated on).
    let (mut evil, _) = Host::connect(addr, Digests::BOTH);
    let sqe = identify.to_sqe(5);
    let mut v = vec![0u8; Pdu::CapsuleCmd(CapsuleCmd { sqe, data: &[] }).wire_len(&evil.tx)];
    Pdu::CapsuleCmd(CapsuleCmd { sqe, data: &[] })
        .emit(&mut v, &evil.tx)
        .unwrap();
    v[72] ^= 0xff; // first byte of the header digest
    evil.send_raw(&v);
    match evil.recv() {
        Rx::Term { fes } => assert_eq!(fes, 0x03, "Header Digest Error"),
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    identify_ok(&mut good);

    // A capsule before ICReq.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0x04, 0, 72, 0, 0, 0, 0, 0]).unwrap();
    raw.write_all(&[0, 0, 0, 0, 72, 0, 0, 0]).unwrap();
    let mut sink = [0u8; 256];
    let mut got = 0;
    while let Ok(n) = read_again(&mut raw, &mut sink[got..]) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(
        got == 0 || sink[0] == 0x03,
        "answer to a capsule before ICReq is a C2HTermReq or nothing"
    );
    identify_ok(&mut good);

    // Dropped mid-command: a write capsule announcing data that never comes.
    let (mut gone, _) = Host::connect(addr, Digests::NONE);
    gone.send_raw(&[0x04, 0, 72, 72, 0, 0x10, 0, 0]); // CapsuleCmd promising 4 KiB of data
    drop(gone);
    identify_ok(&mut good);
    drop(good);
    target.stop().unwrap();
}

/// Many hosts at once: every connection gets its own controller, all stay served.
fn many_concurrent_connections_are_held_and_served(mask: u64) {
    let (target, addr) = start(mask);
    const N: usize = 200;
    let mut hosts: Vec<Host> = (0..N).map(|_| admin(addr, Digests::NONE).0).collect();
    let id = IdentifyCommand {
        nsid: 0,
        cns: Cns::Controller,
        cntid: 0,
        cnssid: 0,
        csi: 0,
        uuid_index: 0,
        data_len: 4096,
    };
    for (i, h) in hosts.iter_mut().enumerate() {
        let (data, c) = h.cmd_read(id.to_sqe(i as u16));
        assert!(c.status.is_success(), "host {i}: {c}");
        assert_eq!(data.len(), 4096);
    }
    let held = target.with_state(|s| s.controller_count()).unwrap();
    assert_eq!(held, N, "controllers held");
    eprintln!("concurrent connections held and served: {held}");
    drop(hosts);
    target.stop().unwrap();
}

/// A target serving one thin volume (NSID 1, 512-byte sectors, 128 sectors per data block)
/// from a pool on files of `data_blocks` data blocks in a fresh folder, with the pool's
/// out-of-space wait (0 = `error_if_no_space`).
struct ThinTarget {
    target: TargetHandle,
    addr: SocketAddr,
    pool: nvmf_target::bdev::thin::ThinPool,
    dir: std::path::PathBuf,
    meta: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn thin_target(mask: u64, tag: &str, data_blocks: u64, no_space_wait_ms: u64) -> ThinTarget {
    use nvmf_target::bdev::thin::ThinPool;
    let dir = std::env::temp_dir().join(format!("{tag}-{}-{mask:x}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (meta, data) = (dir.join("meta"), dir.join("data"));
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    std::fs::File::create(&data)
        .unwrap()
        .set_len(data_blocks * 65536)
        .unwrap();
    let pool = ThinPool::create(&meta, &data, 128, 64).unwrap();
    pool.set_no_space_timeout_ms(no_space_wait_ms).unwrap();
    pool.with_pool(|p| p.create_thin(1)).unwrap();
    let vol = pool.volume("thin1", 1, 1 << 30, 512, [7; 16]).unwrap();
    let mut t = Target::new(config(mask));
    t.add_subsystem(SubsystemConfig::new(NQN).allow_any_host(true))
        .unwrap();
    t.add_namespace(NQN, 1, Box::new(vol)).unwrap();
    let addr = t.listen("127.0.0.1:0").unwrap();
    ThinTarget {
        target: t.spawn().unwrap(),
        addr,
        pool,
        dir,
        meta,
        data,
    }
}

/// A thin namespace runs out of data space: writes fail with Capacity Exceeded and DNR (the
/// host sees ENOSPC), reads keep working, and after the pool grows writes succeed again.
fn out_of_space_through_the_target_then_growing_recovers(mask: u64) {
    // error_if_no_space
    let ThinTarget {
        target,
        addr,
        pool,
        dir,
        meta: m,
        data: d,
    } = thin_target(mask, "oos", 8, 0);
    let (_a, _, mut q) = admin_and_io(addr, Digests::NONE);
    let data = [0x5Au8; 1024];
    let write = |q: &mut Host, cid: u16, lba: u64| {
        let w = RwCommand::new(
            IoOpcode::Write,
            cid,
            1,
            lba,
            2,
            SglDescriptor::in_capsule(1024),
        );
        q.cmd(w.to_sqe(), &data)
    };
    // Eight data blocks of 128 sectors: one write into each fills the pool.
    for i in 0..8u64 {
        let c = write(&mut q, i as u16, i * 128);
        assert!(c.status.is_success(), "write {i}: {c}");
    }
    let c = write(&mut q, 8, 8 * 128);
    assert_eq!(c.status.status, Status::CAPACITY_EXCEEDED, "{c}");
    assert!(c.status.dnr, "Do Not Retry");
    let r = RwCommand::new(
        IoOpcode::Read,
        9,
        1,
        3 * 128,
        2,
        SglDescriptor::transport(1024),
    );
    let (back, c) = q.cmd_read(r.to_sqe());
    assert!(c.status.is_success());
    assert_eq!(back, data);
    // Grow the data device and the pool: writes go on.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(16 * 65536)
        .unwrap();
    assert_eq!(pool.grow_to_data_device().unwrap(), 16);
    let c = write(&mut q, 10, 8 * 128);
    assert!(c.status.is_success(), "after growing: {c}");
    drop(q);
    target.stop().unwrap();
    drop(pool);
    let mut dev = thin_core::file::FileDevice::open_read_only(&m).unwrap();
    let rep = thin_core::thin::check::check(&mut dev, &Default::default());
    assert!(rep.is_clean(), "{:?}", rep.issues);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// dm-thin's default policy through the target: a write that needs a block of a full pool
/// is held (no completion) while the pool may still grow; growing completes it with
/// success. With a short wait and no growth, the held write then fails with Capacity
/// Exceeded and DNR. Reads go on meanwhile.
fn out_of_space_queue_policy_holds_writes_until_the_pool_grows(mask: u64) {
    use std::sync::mpsc;
    let ThinTarget {
        target,
        addr,
        pool,
        dir,
        meta: m,
        data: d,
    } = thin_target(mask, "oos-queue", 4, 60_000);
    let (mut a, cntlid) = admin(addr, Digests::NONE);
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x07; // Number of Queues
    sf.cdw11 = 0x0007_0007; // 8 SQs and CQs
    assert!(a.cmd(sf, &[]).status.is_success());
    let connect = |qid: u16| {
        let (mut q, _) = Host::connect(addr, Digests::NONE);
        let c = q.fabric_connect(qid, cntlid, NQN, HOSTNQN);
        assert!(c.status.is_success(), "connect qid {qid}: {c}");
        q
    };
    let data = [0x3Cu8; 1024];
    let write = move |q: &mut Host, cid: u16, lba: u64| {
        let w = RwCommand::new(
            IoOpcode::Write,
            cid,
            1,
            lba,
            2,
            SglDescriptor::in_capsule(1024),
        );
        q.cmd(w.to_sqe(), &data)
    };
    let mut q = connect(1);
    for i in 0..4u64 {
        assert!(write(&mut q, i as u16, i * 128).status.is_success());
    }
    // The fifth block: held.
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let c = write(&mut q, 4, 4 * 128);
        tx.send(c).unwrap();
        q
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "the write completed although the pool is full"
    );
    // Reads on another queue are served meanwhile.
    let mut r = connect(2);
    let rd = RwCommand::new(IoOpcode::Read, 1, 1, 128, 2, SglDescriptor::transport(1024));
    let (back, c) = r.cmd_read(rd.to_sqe());
    assert!(c.status.is_success());
    assert_eq!(back, data);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(8 * 65536)
        .unwrap();
    pool.grow_to_data_device().unwrap();
    let c = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the held write completes once the pool grew");
    assert!(c.status.is_success(), "{c}");
    let mut q = writer.join().unwrap();
    let rd = RwCommand::new(
        IoOpcode::Read,
        5,
        1,
        4 * 128,
        2,
        SglDescriptor::transport(1024),
    );
    let (back, c) = q.cmd_read(rd.to_sqe());
    assert!(c.status.is_success());
    assert_eq!(back, data);
    // Full again, with a short wait: the held write fails once it expires.
    for i in 5..8u64 {
        assert!(write(&mut q, i as u16, i * 128).status.is_success());
    }
    pool.set_no_space_timeout_ms(300).unwrap();
    let started = std::time::Instant::now();
    let c = write(&mut q, 9, 8 * 128);
    assert_eq!(c.status.status, Status::CAPACITY_EXCEEDED, "{c}");
    assert!(c.status.dnr);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "failed before the wait"
    );
    drop((q, r, a));
    target.stop().unwrap();
    drop(pool);
    let mut dev = thin_core::file::FileDevice::open_read_only(&m).unwrap();
    let rep = thin_core::thin::check::check(&mut dev, &Default::default());
    assert!(rep.is_clean(), "{:?}", rep.issues);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A H2CData PDU with a bad data digest: as SPDK does, the write takes in the rest of its
/// data and completes with Transient Transport Error (no DNR: the host retries); the
/// connection lives on, the data was not written, and the retried write succeeds.
fn h2c_data_digest_error_fails_the_write_not_the_connection(mask: u64) {
    let (target, addr) = start(mask);
    let (mut a, cntlid) = admin(addr, Digests::BOTH);
    let mut sf = Sqe::new(0x09, 5, 0);
    sf.cdw10 = 0x07;
    assert!(a.cmd(sf, &[]).status.is_success());
    let (mut q, ic) = Host::connect(addr, Digests::BOTH);
    assert!(q
        .fabric_connect(1, cntlid, NQN, HOSTNQN)
        .status
        .is_success());
    let len = 3 * ic.maxh2cdata as usize;
    let payload: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4096) as u8).collect();
    let write = |q: &mut Host, cid: u16, corrupt: Option<usize>| {
        let w = RwCommand::new(
            IoOpcode::Write,
            cid,
            1,
            64,
            (len / 512) as u32,
            SglDescriptor::transport(len as u32),
        );
        q.send(&Pdu::CapsuleCmd(CapsuleCmd {
            sqe: w.to_sqe(),
            data: &[],
        }));
        let Rx::R2t(r2t) = q.recv() else {
            panic!("no R2T")
        };
        let chunk = ic.maxh2cdata as usize;
        for (k, off) in (0..len).step_by(chunk).enumerate() {
            let p = Pdu::H2CData(H2CData {
                cccid: cid,
                ttag: r2t.ttag,
                datao: off as u32,
                last: off + chunk >= len,
                data: &payload[off..(off + chunk).min(len)],
            });
            let mut v = vec![0u8; p.wire_len(&q.tx)];
            p.emit(&mut v, &q.tx).unwrap();
            if corrupt == Some(k) {
                let n = v.len();
                v[n - 1] ^= 0x40; // the data digest is the PDU's last 4 bytes
            }
            q.send_raw(&v);
        }
        q.resp()
    };
    let c = write(&mut q, 0x20, Some(1));
    assert_eq!(c.status.status, Status::TRANSIENT_TRANSPORT_ERROR, "{c}");
    assert!(!c.status.dnr, "retryable");
    // Nothing of it was written.
    let r = RwCommand::new(
        IoOpcode::Read,
        0x21,
        1,
        64,
        (len / 512) as u32,
        SglDescriptor::transport(len as u32),
    );
    let (back, c) = q.cmd_read(r.to_sqe());
    assert!(c.status.is_success());
    assert!(back.iter().all(|&b| b == 0), "a failed write left data");
    // The same connection retries and succeeds.
    let c = write(&mut q, 0x22, None);
    assert!(c.status.is_success(), "{c}");
    let (back, c) = q.cmd_read(r.to_sqe());
    assert!(c.status.is_success());
    assert!(back == payload, "read back after the retry");
    drop((q, a));
    target.stop().unwrap();
}

/// Events and deaths cross reactors: with two reactors the admin queue below is served by
/// reactor 1 while the controller state lives on reactor 0, and the I/O queue by reactor 0.
/// A namespace added while connected completes the held AER on the admin queue; closing
/// the admin queue ends the controller and closes its I/O queue wherever it is served.
fn aer_and_controller_death_reach_queues_on_any_reactor(mask: u64) {
    let (target, addr) = start(mask);
    // Connections go to the reactors in turn: this idle one takes reactor 0.
    let (_idle, _) = Host::connect(addr, Digests::NONE);
    let (mut a, _, mut q) = admin_and_io(addr, Digests::NONE);
    let mut aec = Sqe::new(0x09, 6, 0);
    aec.cdw10 = 0x0B; // Asynchronous Event Configuration
    aec.cdw11 = 0x100; // Namespace Attribute Notices
    assert!(a.cmd(aec, &[]).status.is_success());
    let rd = RwCommand::new(IoOpcode::Read, 9, 1, 0, 1, SglDescriptor::transport(512));
    let (data, c) = q.cmd_read(rd.to_sqe());
    assert!(c.status.is_success() && data.len() == 512, "{c}");
    let groups = target.with_state(|s| s.poll_group_stats()).unwrap();
    let placed: Vec<(u64, u64)> = groups
        .iter()
        .map(|g| (g.current_admin_qpairs, g.current_io_qpairs))
        .collect();
    if mask == 0x3 {
        assert_eq!(placed, [(0, 1), (1, 0)], "admin on reactor 1, I/O on 0");
    } else {
        assert_eq!(placed, [(1, 1)]);
    }

    // An AER stays outstanding until something happens.
    a.send(&Pdu::CapsuleCmd(CapsuleCmd {
        sqe: Sqe::new(0x0C, 0x77, 0),
        data: &[],
    }));
    std::thread::sleep(Duration::from_millis(100));
    target
        .with_state(|s| {
            s.add_namespace(
                NQN,
                2,
                Box::new(Malloc::new("m2", 1024, 512, [5; 16]).expect("malloc")),
            )
        })
        .unwrap()
        .unwrap();
    let c = a.resp();
    assert_eq!(c.cid, 0x77);
    assert!(c.status.is_success(), "{c}");
    // Notice (2), Namespace Attribute Changed (0), log page 0x04.
    assert_eq!(c.dw0, 0x0004_0002, "{c}");
    // Both queues still work after the event.
    let (data, c) = q.cmd_read(rd.to_sqe());
    assert!(c.status.is_success() && data.len() == 512, "{c}");

    drop(a);
    let mut b = [0u8; 64];
    match read_again(&mut q.s, &mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the I/O queue of a dead controller stays open: {other:?}"),
    }
    assert_eq!(target.with_state(|s| s.controller_count()).unwrap(), 0);
    target.stop().unwrap();
}

/// Liveness of the adaptive mode: with a 60 s timer, a command that waited for the timer
/// instead of a wake-up (a socket, or a message between reactors) would hit the host's
/// 10 s read timeout. Each command arrives after the reactors fell asleep (they spin
/// 0.2 ms after work), on an admin queue and an I/O queue that, with two reactors, are
/// both forwarded to the owner or served by it.
fn idle_reactors_wake_for_every_command(mask: u64) {
    let (target, addr) = start_with(TargetConfig {
        tick_ms: 60_000,
        ..config(mask)
    });
    let (_idle, _) = Host::connect(addr, Digests::NONE);
    let (mut a, _, mut q) = admin_and_io(addr, Digests::NONE);
    let data = [0xA5u8; 4096];
    for i in 0..40u16 {
        std::thread::sleep(Duration::from_millis(2));
        // In-capsule write, R2T write, read, admin Keep Alive.
        let w = RwCommand::new(IoOpcode::Write, i, 1, 0, 2, SglDescriptor::in_capsule(1024));
        assert!(q.cmd(w.to_sqe(), &data[..1024]).status.is_success());
        std::thread::sleep(Duration::from_millis(2));
        let w = RwCommand::new(IoOpcode::Write, i, 1, 8, 8, SglDescriptor::transport(4096));
        assert!(q.write_r2t(w.to_sqe(), &data).status.is_success());
        std::thread::sleep(Duration::from_millis(2));
        let r = RwCommand::new(IoOpcode::Read, i, 1, 8, 8, SglDescriptor::transport(4096));
        let (back, c) = q.cmd_read(r.to_sqe());
        assert!(c.status.is_success());
        assert_eq!(back, data);
        std::thread::sleep(Duration::from_millis(2));
        assert!(a.cmd(Sqe::new(0x18, i, 0), &[]).status.is_success());
    }
    target.stop().unwrap();
}

on_reactors!(
    connect_identify_write_with_r2t_read_back_digests_on,
    host_not_allowed_and_unknown_subsystem_are_refused,
    queue_depth_128_of_outstanding_writes,
    hostile_pdus_kill_only_their_own_connection,
    many_concurrent_connections_are_held_and_served,
    out_of_space_through_the_target_then_growing_recovers,
    out_of_space_queue_policy_holds_writes_until_the_pool_grows,
    h2c_data_digest_error_fails_the_write_not_the_connection,
    aer_and_controller_death_reach_queues_on_any_reactor,
    idle_reactors_wake_for_every_command
);

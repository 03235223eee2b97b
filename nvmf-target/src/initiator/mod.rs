//! A userspace NVMe/TCP host built from [`crate::wire`]: connection set-up (ICReq/ICResp),
//! fabrics Connect for the admin and I/O queues, controller enable, Identify, and framed
//! send/receive buffers a benchmark can drive without allocating per command.
//!
//! * [`Conn`]: one TCP connection (one queue) with its receive and send buffers.
//! * [`Controller`]: an admin queue brought up to enabled, with what the benchmark needs to
//!   know of the controller (in-capsule data size, MAXH2CDATA) and a way to add I/O queues.
//! * [`perf`]: the `nvmf-perf` workload engine; [`echo`]: the loopback baseline;
//!   [`histogram`]: the latency histogram.
//!
//! Everything read from the socket goes through the wire parsers: bad input is an error
//! ([`HostError::Protocol`]), never a panic.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::wire::cqe::Cqe;
use crate::wire::fabrics::{ConnectCommand, ConnectData, Nqn, PropertyCommand, PropertySize};
use crate::wire::identify::{Cns, IdentifyCommand, IdentifyController, IdentifyNamespace};
use crate::wire::pdu::{CapsuleCmd, Digests, IcReq, Pdu, PduError, RxConfig, TxConfig};
use crate::wire::registers::offset;
use crate::wire::sgl::SglDescriptor;
use crate::wire::sqe::Sqe;

pub mod echo;
pub mod histogram;
pub mod perf;

/// The host NQN the benchmark uses unless told otherwise.
pub const DEFAULT_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:6e766d66-7065-7266-0000-000000000001";

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The controller sent something this host cannot accept.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A command completed with an error status.
    #[error("{what} failed: {status}")]
    Command { what: &'static str, status: String },
    /// The data read back differs from what was written (verify mode).
    #[error("verify: {0}")]
    Verify(String),
}

fn protocol(msg: impl Into<String>) -> HostError {
    HostError::Protocol(msg.into())
}

/// Receive side of a connection: a buffer parsed in place (no copy into a decoder).
#[derive(Debug)]
pub struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    cfg: RxConfig,
}

impl RxBuf {
    fn new(cfg: RxConfig, capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            cfg,
        }
    }

    /// Reads once from `s` (returns 0 on `WouldBlock` for non-blocking sockets).
    fn fill(&mut self, s: &mut TcpStream) -> Result<usize, HostError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 4096 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let dst = self.buf.get_mut(self.end..).unwrap_or_default();
        match s.read(dst) {
            Ok(0) => Err(protocol("the controller closed the connection")),
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Calls `f` on every complete PDU buffered. Makes room for an incomplete PDU's remaining
    /// bytes (the buffer grows only when one PDU is larger than it, i.e. once).
    fn drain<F>(&mut self, mut f: F) -> Result<(), HostError>
    where
        F: FnMut(Pdu<'_>) -> Result<(), HostError>,
    {
        loop {
            let avail = self.buf.get(self.start..self.end).unwrap_or_default();
            if avail.is_empty() {
                return Ok(());
            }
            match Pdu::parse(avail, &self.cfg) {
                Ok((pdu, plen)) => {
                    f(pdu)?;
                    self.start += plen as usize;
                }
                Err(PduError::Incomplete { need }) => {
                    let need = usize::try_from(need).unwrap_or(usize::MAX);
                    if need > self.buf.len() {
                        let max = usize::try_from(self.cfg.max_plen()).unwrap_or(usize::MAX);
                        if need > max {
                            return Err(protocol(format!("PDU of {need} bytes")));
                        }
                        let mut bigger = vec![0u8; need.max(self.buf.len() * 2)];
                        let live = self.end - self.start;
                        if let (Some(d), Some(s)) =
                            (bigger.get_mut(..live), self.buf.get(self.start..self.end))
                        {
                            d.copy_from_slice(s);
                        }
                        self.buf = bigger;
                        self.start = 0;
                        self.end = live;
                    } else if self.start + need > self.buf.len() {
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                    }
                    return Ok(());
                }
                Err(e) => return Err(protocol(e.to_string())),
            }
        }
    }
}

/// Send side of a connection: PDUs are emitted into one buffer and written in batches.
#[derive(Debug)]
pub struct TxBuf {
    buf: Vec<u8>,
    sent: usize,
    cfg: TxConfig,
}

impl TxBuf {
    /// Appends a PDU.
    pub fn push(&mut self, pdu: &Pdu<'_>) -> Result<(), HostError> {
        let at = self.buf.len();
        let len = pdu.wire_len(&self.cfg);
        self.buf.resize(at + len, 0);
        let dst = self.buf.get_mut(at..).unwrap_or_default();
        pdu.emit(dst, &self.cfg)
            .map_err(|e| protocol(format!("emitting {}: {e}", pdu.pdu_type() as u8)))?;
        Ok(())
    }

    /// Bytes waiting to be sent.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Writes what it can; true when everything went out.
    fn flush(&mut self, s: &mut TcpStream) -> Result<bool, HostError> {
        while self.sent < self.buf.len() {
            match s.write(self.buf.get(self.sent..).unwrap_or_default()) {
                Ok(0) => return Err(protocol("the controller closed the connection")),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(true)
    }
}

/// One NVMe/TCP connection (one queue).
#[derive(Debug)]
pub struct Conn {
    s: TcpStream,
    pub rx: RxBuf,
    pub tx: TxBuf,
    /// MAXH2CDATA from ICResp.
    pub maxh2cdata: u32,
}

impl Conn {
    /// Connects and exchanges ICReq/ICResp.
    pub fn connect(addr: SocketAddr, digests: Digests) -> Result<Self, HostError> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Conn {
            s,
            rx: RxBuf::new(RxConfig::host(), 1 << 20),
            tx: TxBuf {
                buf: Vec::with_capacity(1 << 20),
                sent: 0,
                cfg: TxConfig::default(),
            },
            maxh2cdata: 0,
        };
        c.tx.push(&Pdu::IcReq(IcReq {
            digests,
            ..IcReq::default()
        }))?;
        c.flush_all()?;
        let mut resp = None;
        while resp.is_none() {
            c.rx.fill(&mut c.s)?;
            c.rx.drain(|p| match p {
                Pdu::IcResp(r) if resp.is_none() => {
                    resp = Some(r);
                    Ok(())
                }
                other => Err(protocol(format!("expected ICResp, got {other}"))),
            })?;
        }
        let Some(r) = resp else {
            return Err(protocol("no ICResp"));
        };
        if r.digests != digests {
            return Err(protocol("the controller changed the digest choice"));
        }
        c.maxh2cdata = r.maxh2cdata;
        c.tx.cfg = TxConfig {
            digests,
            pda: r.cpda,
        };
        c.rx.cfg.digests = digests;
        Ok(c)
    }

    /// Blocking (or busy non-blocking) mode for the hot loop.
    pub fn set_nonblocking(&mut self, nb: bool) -> Result<(), HostError> {
        self.s.set_nonblocking(nb)?;
        Ok(())
    }

    /// Sets the read timeout of blocking mode (None = wait forever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), HostError> {
        self.s.set_read_timeout(t)?;
        Ok(())
    }

    /// Writes everything queued, whatever the socket mode.
    pub fn flush_all(&mut self) -> Result<(), HostError> {
        while !self.tx.flush(&mut self.s)? {
            std::hint::spin_loop();
        }
        Ok(())
    }

    /// Writes what the socket takes now; true when nothing is left.
    pub fn flush(&mut self) -> Result<bool, HostError> {
        self.tx.flush(&mut self.s)
    }

    /// Reads once, then hands every complete PDU to `f` together with the send buffer
    /// (for answers such as H2CData). Returns the bytes read.
    pub fn poll<F>(&mut self, mut f: F) -> Result<usize, HostError>
    where
        F: FnMut(Pdu<'_>, &mut TxBuf) -> Result<(), HostError>,
    {
        let n = self.rx.fill(&mut self.s)?;
        let tx = &mut self.tx;
        self.rx.drain(|p| f(p, tx))?;
        Ok(n)
    }

    /// One command at a time (set-up path): sends `sqe` with in-capsule `data` and waits
    /// for its completion, collecting C2HData into a vector.
    pub fn command(&mut self, sqe: Sqe, data: &[u8]) -> Result<(Cqe, Vec<u8>), HostError> {
        self.tx.push(&Pdu::CapsuleCmd(CapsuleCmd { sqe, data }))?;
        self.flush_all()?;
        let mut out = Vec::new();
        let mut done: Option<Cqe> = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.is_none() {
            if Instant::now() > deadline {
                return Err(protocol(format!("command {:#x} timed out", sqe.opcode)));
            }
            self.poll(|p, _| {
                match p {
                    Pdu::CapsuleResp(r) if r.cqe.cid == sqe.cid => done = Some(r.cqe),
                    Pdu::C2HData(d) if d.cccid == sqe.cid => {
                        let at = d.datao as usize;
                        if at != out.len() {
                            return Err(protocol("C2HData out of order"));
                        }
                        out.extend_from_slice(d.data);
                        if d.success {
                            done = Some(Cqe::success(sqe.cid, 0, 0));
                        }
                    }
                    Pdu::TermReq(t) => {
                        return Err(protocol(format!("terminated by the controller: {t}")))
                    }
                    other => return Err(protocol(format!("unexpected {other}"))),
                }
                Ok(())
            })?;
        }
        let cqe = done.ok_or_else(|| protocol("no completion"))?;
        Ok((cqe, out))
    }

    /// A command that must succeed.
    pub fn command_ok(
        &mut self,
        what: &'static str,
        sqe: Sqe,
        data: &[u8],
    ) -> Result<(Cqe, Vec<u8>), HostError> {
        let (c, d) = self.command(sqe, data)?;
        if !c.status.is_success() {
            return Err(HostError::Command {
                what,
                status: c.status.to_string(),
            });
        }
        Ok((c, d))
    }

    /// Fabrics Connect for queue `qid`, returning the CNTLID.
    pub fn fabric_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
    ) -> Result<u16, HostError> {
        let cmd = ConnectCommand {
            cid: 0x7FF0,
            sgl: SglDescriptor::in_capsule(1024),
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato_ms: 0,
        };
        let mut data = [0u8; 1024];
        ConnectData {
            hostid: *b"nvmf-perf-host-0",
            cntlid,
            subnqn: Nqn::new(subnqn).map_err(|e| protocol(format!("subsystem NQN: {e}")))?,
            hostnqn: Nqn::new(hostnqn).map_err(|e| protocol(format!("host NQN: {e}")))?,
        }
        .emit(&mut data)
        .map_err(|e| protocol(e.to_string()))?;
        let (c, _) = self.command_ok("Connect", cmd.to_sqe(), &data)?;
        Ok(c.dw0 as u16)
    }

    fn prop_get(&mut self, off: u32, size: PropertySize) -> Result<u64, HostError> {
        let p = PropertyCommand {
            cid: 0x7FF1,
            size,
            offset: off,
            value: None,
        };
        let (c, _) = self.command_ok("Property Get", p.to_sqe(), &[])?;
        Ok(u64::from(c.dw0) | (u64::from(c.dw1) << 32))
    }

    fn prop_set(&mut self, off: u32, v: u64) -> Result<(), HostError> {
        let p = PropertyCommand {
            cid: 0x7FF2,
            size: PropertySize::Four,
            offset: off,
            value: Some(v),
        };
        self.command_ok("Property Set", p.to_sqe(), &[])?;
        Ok(())
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub addr: SocketAddr,
    pub subnqn: String,
    pub hostnqn: String,
    pub digests: Digests,
}

/// An enabled controller reached through its admin queue.
#[derive(Debug)]
pub struct Controller {
    pub cfg: HostConfig,
    pub admin: Conn,
    pub cntlid: u16,
    /// MQES + 1: the largest I/O queue.
    pub max_queue_entries: u32,
    /// In-capsule data the I/O queues accept (IOCCSZ × 16 − 64).
    pub icd_bytes: u32,
    /// MAXH2CDATA (from the admin queue's ICResp).
    pub maxh2cdata: u32,
}

impl Controller {
    /// Connects the admin queue, enables the controller, identifies it and asks for
    /// `io_queues` I/O queues.
    pub fn connect(cfg: HostConfig, io_queues: u16) -> Result<Self, HostError> {
        let mut admin = Conn::connect(cfg.addr, cfg.digests)?;
        let cntlid = admin.fabric_connect(0, 31, 0xFFFF, &cfg.subnqn, &cfg.hostnqn)?;
        let cap = admin.prop_get(offset::CAP, PropertySize::Eight)?;
        let max_queue_entries = (cap & 0xFFFF) as u32 + 1;
        admin.prop_set(offset::CC, 0x0046_0000)?;
        admin.prop_set(offset::CC, 0x0046_0001)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while admin.prop_get(offset::CSTS, PropertySize::Four)? & 1 == 0 {
            if Instant::now() > deadline {
                return Err(protocol("controller never became ready"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let id = IdentifyCommand {
            nsid: 0,
            cns: Cns::Controller,
            cntid: 0,
            cnssid: 0,
            csi: 0,
            uuid_index: 0,
            data_len: 4096,
        };
        let (_, data) = admin.command_ok("Identify Controller", id.to_sqe(0x7FF3), &[])?;
        let idc = IdentifyController::parse(&data).map_err(|e| protocol(e.to_string()))?;
        let icd_bytes = (idc.ioccsz.saturating_mul(16)).saturating_sub(64);
        let mut sf = Sqe::new(0x09, 0x7FF4, 0);
        let n = u32::from(io_queues.max(1) - 1);
        sf.cdw10 = 0x07;
        sf.cdw11 = n | (n << 16);
        admin.command_ok("Set Features (Number of Queues)", sf, &[])?;
        let maxh2cdata = admin.maxh2cdata;
        Ok(Self {
            cfg,
            admin,
            cntlid,
            max_queue_entries,
            icd_bytes,
            maxh2cdata,
        })
    }

    /// Identify Namespace.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace, HostError> {
        let id = IdentifyCommand {
            nsid,
            cns: Cns::Namespace,
            cntid: 0,
            cnssid: 0,
            csi: 0,
            uuid_index: 0,
            data_len: 4096,
        };
        let (_, data) = self
            .admin
            .command_ok("Identify Namespace", id.to_sqe(0x7FF5), &[])?;
        let ns = IdentifyNamespace::parse(&data).map_err(|e| protocol(e.to_string()))?;
        if ns.nsze == 0 {
            return Err(protocol(format!("namespace {nsid} is not active")));
        }
        Ok(ns)
    }

    /// Connects I/O queue `qid` with `entries` entries.
    pub fn connect_io(&self, qid: u16, entries: u16) -> Result<Conn, HostError> {
        let mut c = Conn::connect(self.cfg.addr, self.cfg.digests)?;
        c.fabric_connect(
            qid,
            entries.saturating_sub(1),
            self.cntlid,
            &self.cfg.subnqn,
            &self.cfg.hostnqn,
        )?;
        Ok(c)
    }
}

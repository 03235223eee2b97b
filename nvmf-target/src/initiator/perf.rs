//! The `nvmf-perf` workload engine: per connection (one I/O queue each, one thread each),
//! keeps `queue_depth` commands outstanding for a duration and records latencies.
//!
//! Hot loop: commands are emitted into the connection's send buffer and written in one
//! batch per poll; PDUs are parsed in place in the receive buffer; write data comes from
//! buffers allocated up front; latencies go to a fixed histogram. Nothing is allocated per
//! I/O (the send buffer stops growing after the first batches).
//!
//! Writes carry their data in the capsule when it fits the controller's in-capsule data size
//! (IOCCSZ), else they wait for R2T and answer with H2CData PDUs of at most MAXH2CDATA.
//!
//! Verify mode writes, for every logical block, a pattern that depends only on the LBA and a
//! seed (so concurrent writes of the same block agree) and checks every byte read. When the
//! workload reads, the range is first written sequentially once (not timed).

use std::str::FromStr;
use std::time::{Duration, Instant};

use super::histogram::Histogram;
use super::{Conn, Controller, HostConfig, HostError, TxBuf};
use crate::wire::io::{IoOpcode, RwCommand};
use crate::wire::pdu::{CapsuleCmd, H2CData, Pdu, PduType, TxConfig, TxLayout};
use crate::wire::sgl::SglDescriptor;

/// Access pattern (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Read,
    Write,
    RandRead,
    RandWrite,
    /// Sequential mix, `-M` percent reads.
    Rw,
    /// Random mix, `-M` percent reads.
    RandRw,
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "read" => Self::Read,
            "write" => Self::Write,
            "randread" => Self::RandRead,
            "randwrite" => Self::RandWrite,
            "rw" => Self::Rw,
            "randrw" => Self::RandRw,
            _ => {
                return Err(format!(
                    "unknown workload {s:?} (read, write, randread, randwrite, rw, randrw)"
                ))
            }
        })
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::RandRead => "randread",
            Self::RandWrite => "randwrite",
            Self::Rw => "rw",
            Self::RandRw => "randrw",
        })
    }
}

impl Workload {
    pub fn random(self) -> bool {
        matches!(self, Self::RandRead | Self::RandWrite | Self::RandRw)
    }

    /// Percentage of reads, given `-M`.
    pub fn read_pct(self, mix: u8) -> u8 {
        match self {
            Self::Read | Self::RandRead => 100,
            Self::Write | Self::RandWrite => 0,
            Self::Rw | Self::RandRw => mix.min(100),
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct PerfConfig {
    pub host: HostConfig,
    pub nsid: u32,
    pub queue_depth: u32,
    pub io_size: u32,
    pub workload: Workload,
    /// `-M`: read percentage of `rw`/`randrw`.
    pub read_pct: u8,
    pub duration: Duration,
    /// Connections, each with its own I/O queue and thread.
    pub connections: u16,
    /// Write a pattern and check every byte read.
    pub verify: bool,
    /// Non-blocking sockets polled in a loop instead of blocking reads.
    pub busy_poll: bool,
    /// Restrict I/O to the first `range_bytes` of the namespace.
    pub range_bytes: Option<u64>,
    /// Seed of the random offsets and of the verify pattern.
    pub seed: u64,
    /// Stop after this many I/Os per connection (e.g. one sequential pass) instead of at
    /// the end of `duration`.
    pub io_limit: Option<u64>,
}

impl PerfConfig {
    /// Defaults like `spdk_nvme_perf`'s common use: qd 32, 4 KiB random reads, 1 s.
    pub fn new(host: HostConfig) -> Self {
        Self {
            host,
            nsid: 1,
            queue_depth: 32,
            io_size: 4096,
            workload: Workload::RandRead,
            read_pct: 50,
            duration: Duration::from_secs(1),
            connections: 1,
            verify: false,
            busy_poll: false,
            range_bytes: None,
            seed: 0x6e76_6d66_7065_7266,
            io_limit: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct PerfResult {
    pub reads: u64,
    pub writes: u64,
    /// Data bytes moved (I/O size × I/Os).
    pub bytes: u64,
    pub elapsed: Duration,
    pub hist: Histogram,
    /// Bytes checked against the pattern (verify mode).
    pub verified_bytes: u64,
    /// Namespace size in logical blocks and the LBA size.
    pub ns_blocks: u64,
    pub lba_size: u32,
    /// Writes sent in the capsule / through R2T.
    pub icd_writes: u64,
    pub r2t_writes: u64,
}

impl PerfResult {
    pub fn ios(&self) -> u64 {
        self.reads + self.writes
    }

    pub fn iops(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ios() as f64 / s
        } else {
            0.0
        }
    }

    pub fn mib_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s / (1024.0 * 1024.0)
        } else {
            0.0
        }
    }

    pub fn mean_us(&self) -> f64 {
        self.hist.mean_ns() / 1000.0
    }

    pub fn p99_us(&self) -> f64 {
        self.hist.percentile_ns(99.0) as f64 / 1000.0
    }

    fn merge(&mut self, o: &PerfResult) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.bytes += o.bytes;
        self.elapsed = self.elapsed.max(o.elapsed);
        self.hist.merge(&o.hist);
        self.verified_bytes += o.verified_bytes;
        self.icd_writes += o.icd_writes;
        self.r2t_writes += o.r2t_writes;
    }
}

impl std::fmt::Display for PerfResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>10.0} IOPS {:>9.1} MiB/s  mean {:>8.1} us  p99 {:>8.1} us  min {:>7.1} us  max {:>8.1} us  ({} reads, {} writes in {:.2} s)",
            self.iops(),
            self.mib_per_s(),
            self.mean_us(),
            self.p99_us(),
            self.hist.min_ns() as f64 / 1000.0,
            self.hist.max_ns() as f64 / 1000.0,
            self.reads,
            self.writes,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Bytes on the wire per I/O without digests: (host → controller, controller → host). A
/// write larger than the in-capsule limit counts one H2CData and one R2T.
pub fn wire_bytes(read: bool, io_size: u32, icd_bytes: u32) -> (usize, usize) {
    let tx = TxConfig::default();
    let cmd = TxLayout::new(PduType::CapsuleCmd, 0, &tx).plen as usize;
    let resp = TxLayout::new(PduType::CapsuleResp, 0, &tx).plen as usize;
    if read {
        let c2h = TxLayout::new(PduType::C2HData, io_size, &tx).plen as usize;
        (cmd, c2h + resp)
    } else if io_size <= icd_bytes {
        let c = TxLayout::new(PduType::CapsuleCmd, io_size, &tx).plen as usize;
        (c, resp)
    } else {
        let h2c = TxLayout::new(PduType::H2CData, io_size, &tx).plen as usize;
        let r2t = TxLayout::new(PduType::R2T, 0, &tx).plen as usize;
        (cmd + h2c, r2t + resp)
    }
}

/// The verify pattern's 64-bit word `i` of logical block `lba`.
#[inline]
fn pattern_word(seed: u64, lba: u64, i: u64) -> u64 {
    (lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).wrapping_add(i.wrapping_mul(0x0100_0000_01B3))
}

fn fill_pattern(buf: &mut [u8], first_lba: u64, lba_size: usize, seed: u64) {
    for (b, block) in buf.chunks_mut(lba_size).enumerate() {
        let lba = first_lba + b as u64;
        for (i, w) in block.chunks_mut(8).enumerate() {
            let v = pattern_word(seed, lba, i as u64).to_le_bytes();
            let n = w.len();
            w.copy_from_slice(v.get(..n).unwrap_or_default());
        }
    }
}

/// Checks `data`, found at byte `off` of an I/O starting at `first_lba`; returns the first
/// differing byte offset within the I/O.
fn check_pattern(
    data: &[u8],
    off: usize,
    first_lba: u64,
    lba_size: usize,
    seed: u64,
) -> Result<(), usize> {
    let mut word = [0u8; 8];
    let mut word_at = usize::MAX;
    for (k, &b) in data.iter().enumerate() {
        let p = off + k;
        let (blk, in_blk) = (p / lba_size, p % lba_size);
        let w = p / 8;
        if w != word_at {
            word = pattern_word(seed, first_lba + blk as u64, (in_blk / 8) as u64).to_le_bytes();
            word_at = w;
        }
        if word.get(p % 8).copied() != Some(b) {
            return Err(p);
        }
    }
    Ok(())
}

/// What every connection's loop needs to know.
#[derive(Debug, Clone, Copy)]
struct Job {
    nsid: u32,
    qd: u32,
    io_size: u32,
    io_blocks: u32,
    lba_size: u32,
    units: u64,
    read_pct: u8,
    random: bool,
    verify: bool,
    seed: u64,
    icd_bytes: u32,
    maxh2cdata: u32,
    busy_poll: bool,
    duration: Option<Duration>,
    io_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    active: bool,
    read: bool,
    lba: u64,
    start: Instant,
    received: u32,
}

struct QueueState {
    job: Job,
    slots: Vec<Slot>,
    bufs: Vec<Vec<u8>>,
    rng: u64,
    next_unit: u64,
    submitted: u64,
    outstanding: u32,
    deadline: Option<Instant>,
    stopping: bool,
    res: PerfResult,
}

impl QueueState {
    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn submit(&mut self, i: usize, tx: &mut TxBuf, now: Instant) -> Result<(), HostError> {
        let j = self.job;
        let read = match j.read_pct {
            100 => true,
            0 => false,
            p => (self.rand() % 100) < u64::from(p),
        };
        let unit = if j.random {
            self.rand() % j.units
        } else {
            let u = self.next_unit;
            self.next_unit = (u + 1) % j.units;
            u
        };
        let lba = unit * u64::from(j.io_blocks);
        let cid = i as u16;
        let buf_idx = if j.verify { i } else { 0 };
        if read {
            let c = RwCommand::new(
                IoOpcode::Read,
                cid,
                j.nsid,
                lba,
                j.io_blocks,
                SglDescriptor::transport(j.io_size),
            );
            tx.push(&Pdu::CapsuleCmd(CapsuleCmd {
                sqe: c.to_sqe(),
                data: &[],
            }))?;
        } else {
            let buf = self
                .bufs
                .get_mut(buf_idx)
                .ok_or_else(|| super::protocol("no write buffer"))?;
            if j.verify {
                fill_pattern(buf, lba, j.lba_size as usize, j.seed);
            }
            let icd = j.io_size <= j.icd_bytes;
            let sgl = if icd {
                SglDescriptor::in_capsule(j.io_size)
            } else {
                SglDescriptor::transport(j.io_size)
            };
            let c = RwCommand::new(IoOpcode::Write, cid, j.nsid, lba, j.io_blocks, sgl);
            tx.push(&Pdu::CapsuleCmd(CapsuleCmd {
                sqe: c.to_sqe(),
                data: if icd { &buf[..] } else { &[] },
            }))?;
            if icd {
                self.res.icd_writes += 1;
            } else {
                self.res.r2t_writes += 1;
            }
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                active: true,
                read,
                lba,
                start: now,
                received: 0,
            };
        }
        self.submitted += 1;
        Ok(())
    }

    fn may_submit(&mut self, now: Instant) -> bool {
        if self.stopping {
            return false;
        }
        let over_time = self.deadline.is_some_and(|d| now >= d);
        let over_count = self.job.io_limit.is_some_and(|l| self.submitted >= l);
        if over_time || over_count {
            self.stopping = true;
        }
        !self.stopping
    }

    fn complete(&mut self, i: usize, tx: &mut TxBuf) -> Result<(), HostError> {
        let now = Instant::now();
        let Some(s) = self.slots.get_mut(i).filter(|s| s.active) else {
            return Err(super::protocol(format!("completion for idle command {i}")));
        };
        s.active = false;
        let (read, start) = (s.read, s.start);
        let counted = self.deadline.is_none_or(|d| now <= d);
        if counted {
            self.res
                .hist
                .record(now.saturating_duration_since(start).as_nanos() as u64);
            if read {
                self.res.reads += 1;
            } else {
                self.res.writes += 1;
            }
            self.res.bytes += u64::from(self.job.io_size);
        }
        if self.may_submit(now) {
            self.submit(i, tx, now)
        } else {
            self.outstanding -= 1;
            Ok(())
        }
    }

    fn on_pdu(&mut self, p: Pdu<'_>, tx: &mut TxBuf) -> Result<(), HostError> {
        match p {
            Pdu::CapsuleResp(r) => {
                if !r.cqe.status.is_success() {
                    return Err(HostError::Command {
                        what: "I/O",
                        status: format!("{} (cid {})", r.cqe.status, r.cqe.cid),
                    });
                }
                self.complete(usize::from(r.cqe.cid), tx)
            }
            Pdu::C2HData(d) => {
                let i = usize::from(d.cccid);
                let j = self.job;
                let Some(s) = self.slots.get_mut(i).filter(|s| s.active && s.read) else {
                    return Err(super::protocol(format!("C2HData for cid {i}")));
                };
                let end = u64::from(d.datao) + d.data.len() as u64;
                if end > u64::from(j.io_size) {
                    return Err(super::protocol("C2HData beyond the transfer"));
                }
                s.received += d.data.len() as u32;
                let (lba, received) = (s.lba, s.received);
                if j.verify {
                    check_pattern(d.data, d.datao as usize, lba, j.lba_size as usize, j.seed)
                        .map_err(|at| {
                            HostError::Verify(format!(
                                "read of LBA {lba}: byte {at} differs from the pattern"
                            ))
                        })?;
                    self.res.verified_bytes += d.data.len() as u64;
                }
                if d.success {
                    if received != j.io_size {
                        return Err(super::protocol("SUCCESS before all data"));
                    }
                    self.complete(i, tx)?;
                }
                Ok(())
            }
            Pdu::R2T(r) => {
                let i = usize::from(r.cccid);
                let j = self.job;
                if !self.slots.get(i).is_some_and(|s| s.active && !s.read) {
                    return Err(super::protocol(format!("R2T for cid {i}")));
                }
                let buf = self
                    .bufs
                    .get(if j.verify { i } else { 0 })
                    .ok_or_else(|| super::protocol("no write buffer"))?;
                let (o, l) = (r.r2to as usize, r.r2tl as usize);
                let data = buf
                    .get(o..o.saturating_add(l))
                    .filter(|_| l > 0)
                    .ok_or_else(|| super::protocol("R2T beyond the transfer"))?;
                let chunk = (j.maxh2cdata as usize).max(4096);
                let mut off = 0usize;
                while off < data.len() {
                    let n = chunk.min(data.len() - off);
                    tx.push(&Pdu::H2CData(H2CData {
                        cccid: r.cccid,
                        ttag: r.ttag,
                        datao: (o + off) as u32,
                        last: off + n == data.len(),
                        data: data.get(off..off + n).unwrap_or_default(),
                    }))?;
                    off += n;
                }
                Ok(())
            }
            Pdu::TermReq(t) => Err(super::protocol(format!(
                "terminated by the controller: {t}"
            ))),
            other => Err(super::protocol(format!("unexpected {other}"))),
        }
    }
}

fn run_queue(
    conn: &mut Conn,
    job: Job,
    idx: u16,
    connections: u16,
) -> Result<PerfResult, HostError> {
    let qd = job.qd as usize;
    let nbufs = if job.verify { qd } else { 1 };
    let mut bufs = vec![vec![0u8; job.io_size as usize]; nbufs];
    if !job.verify {
        for (k, b) in bufs.iter_mut().flat_map(|b| b.iter_mut()).enumerate() {
            *b = (k as u8) ^ 0x5A;
        }
    }
    let now = Instant::now();
    let mut st = QueueState {
        job,
        slots: vec![
            Slot {
                active: false,
                read: false,
                lba: 0,
                start: now,
                received: 0,
            };
            qd
        ],
        bufs,
        rng: job.seed ^ (u64::from(idx) + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1,
        next_unit: job.units * u64::from(idx) / u64::from(connections.max(1)),
        submitted: 0,
        outstanding: 0,
        deadline: job.duration.map(|d| now + d),
        stopping: false,
        res: PerfResult::default(),
    };
    if job.busy_poll {
        conn.set_nonblocking(true)?;
    } else {
        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    }
    for i in 0..qd {
        if !st.may_submit(now) {
            break;
        }
        st.submit(i, &mut conn.tx, now)?;
        st.outstanding += 1;
    }
    let mut last_progress = Instant::now();
    while st.outstanding > 0 {
        if job.busy_poll {
            conn.flush()?;
        } else {
            conn.flush_all()?;
        }
        let n = conn.poll(|p, tx| st.on_pdu(p, tx))?;
        if n > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(10) {
            return Err(super::protocol(format!(
                "no progress for 10 s with {} commands outstanding",
                st.outstanding
            )));
        }
    }
    conn.flush_all()?;
    st.res.elapsed = match st.deadline {
        Some(_) => job.duration.unwrap_or_default(),
        None => now.elapsed(),
    };
    Ok(st.res)
}

/// Runs the benchmark described by `cfg`.
pub fn run(cfg: &PerfConfig) -> Result<PerfResult, HostError> {
    let conns = cfg.connections.max(1);
    let mut ctrlr = Controller::connect(cfg.host.clone(), conns)?;
    let ns = ctrlr.identify_namespace(cfg.nsid)?;
    let lba_size = ns
        .lba_size()
        .and_then(|s| u32::try_from(s).ok())
        .filter(|&s| s >= 512)
        .ok_or_else(|| super::protocol("namespace without a usable LBA format"))?;
    if cfg.io_size == 0 || !cfg.io_size.is_multiple_of(lba_size) {
        return Err(super::protocol(format!(
            "I/O size {} is not a multiple of the LBA size {lba_size}",
            cfg.io_size
        )));
    }
    let io_blocks = cfg.io_size / lba_size;
    if io_blocks > 65536 {
        return Err(super::protocol("I/O size above 65536 blocks"));
    }
    let range_blocks = cfg
        .range_bytes
        .map_or(ns.nsze, |b| (b / u64::from(lba_size)).min(ns.nsze));
    let units = range_blocks / u64::from(io_blocks);
    if units == 0 {
        return Err(super::protocol("the namespace is smaller than one I/O"));
    }
    let max_qd = ctrlr.max_queue_entries.saturating_sub(1).max(1);
    let qd = cfg.queue_depth.clamp(1, max_qd);
    let job = Job {
        nsid: cfg.nsid,
        qd,
        io_size: cfg.io_size,
        io_blocks,
        lba_size,
        units,
        read_pct: cfg.workload.read_pct(cfg.read_pct),
        random: cfg.workload.random(),
        verify: cfg.verify,
        seed: cfg.seed,
        icd_bytes: ctrlr.icd_bytes,
        maxh2cdata: ctrlr.maxh2cdata,
        busy_poll: cfg.busy_poll,
        duration: if cfg.io_limit.is_some() {
            None
        } else {
            Some(cfg.duration)
        },
        io_limit: cfg.io_limit,
    };
    let entries = u16::try_from(qd + 1).unwrap_or(u16::MAX);
    let mut queues = Vec::with_capacity(usize::from(conns));
    for q in 0..conns {
        queues.push(ctrlr.connect_io(q + 1, entries)?);
    }
    if cfg.verify && job.read_pct > 0 {
        // One untimed sequential pass so that every block read holds the pattern.
        let prefill = Job {
            read_pct: 0,
            random: false,
            duration: None,
            io_limit: Some(units),
            ..job
        };
        // On the first queue, which then runs the measured job too: closing it and
        // connecting QID 1 again would race with the target's handling of the close.
        if let Some(q) = queues.first_mut() {
            run_queue(q, prefill, 0, 1)?;
        }
    }
    let results: Vec<Result<PerfResult, HostError>> = std::thread::scope(|s| {
        let handles: Vec<_> = queues
            .iter_mut()
            .enumerate()
            .map(|(i, q)| s.spawn(move || run_queue(q, job, i as u16, conns)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(super::protocol("a queue thread panicked")))
            })
            .collect()
    });
    let mut total = PerfResult {
        ns_blocks: ns.nsze,
        lba_size,
        ..PerfResult::default()
    };
    for r in results {
        total.merge(&r?);
    }
    drop(ctrlr);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trip() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b, 77, 512, 5);
        assert!(check_pattern(&b, 0, 77, 512, 5).is_ok());
        assert!(check_pattern(&b[1000..1500], 1000, 77, 512, 5).is_ok());
        assert_eq!(check_pattern(&b[1000..1500], 1000, 78, 512, 5), Err(1000));
        b[3000] ^= 1;
        assert_eq!(check_pattern(&b, 0, 77, 512, 5), Err(3000));
    }

    #[test]
    fn workloads_parse() {
        for w in ["read", "write", "randread", "randwrite", "rw", "randrw"] {
            assert_eq!(w.parse::<Workload>().unwrap().to_string(), w);
        }
        assert!("bogus".parse::<Workload>().is_err());
        assert_eq!(Workload::Rw.read_pct(70), 70);
        assert_eq!(Workload::RandWrite.read_pct(70), 0);
    }

    #[test]
    fn wire_byte_counts() {
        assert_eq!(wire_bytes(true, 4096, 8192), (72, 24 + 4096 + 24));
        assert_eq!(wire_bytes(false, 4096, 8192), (72 + 4096, 24));
        assert_eq!(wire_bytes(false, 16384, 8192), (72 + 24 + 16384, 24 + 24));
    }
}

//! One NVMe/TCP connection (one queue): PDU framing in, commands to the controller logic,
//! PDUs out. No sockets here beyond `Read`/`Write` on whatever stream the reactor passes, so
//! the same code runs over a `mio` socket or an in-memory pipe.
//!
//! Per command: CapsuleCmd → [R2T → H2CData…] → execute → [C2HData] → CapsuleResp.
//! "Execute" is a call into the controller state on the reactor that owns it
//! ([`Backend::Local`]), or, on the other reactors, a request to the owner whose answer
//! comes back later through [`Connection::on_resp`] ([`Backend::Remote`]; the R2T is then
//! sent once the owner has accepted the write).
//!
//! Invariants:
//! * PDUs are appended whole to the send buffer; bytes of two PDUs never interleave;
//! * at most `depth` writes wait for data (one R2T each, covering all their data, as Linux's
//!   MAXR2T = 0 requires); a host exceeding the queue depth is a fatal error;
//! * a fatal receive error queues a C2HTermReq and stops reading: only this connection dies;
//! * memory: the decoder holds one PDU (≤ ICD or MAXH2CDATA), write buffers are at most
//!   `depth × MDTS` and are recycled, and the send buffer stops the reader when it grows past
//!   [`TX_HIGH_WATER`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use log::{debug, info, warn};

use super::mesh::{ConnId, Req, Resp};
use crate::ctrlr::{DataXfer, Outcome, QueueCtx, TargetState, MAX_AERS};
use crate::wire::cqe::Cqe;
use crate::wire::io::IoOpcode;
use crate::wire::pdu::{
    C2HData, CapsuleCmd, CapsuleResp, Digests, H2CData, IcReq, IcResp, Pdu, PduDecoder, PduError,
    PduType, R2t, RxConfig, TermReq, TxConfig, TxLayout,
};
use crate::wire::pdu::{FatalError, FatalReason, Fes};
use crate::wire::sqe::Sqe;
use crate::wire::status::{CompletionStatus, Status};

/// Data buffers a connection keeps for reuse.
const FREE_BUFS: usize = 16;

/// Stop reading from a connection while this many bytes wait to be sent.
pub const TX_HIGH_WATER: usize = 8 << 20;

/// Transport limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// MAXH2CDATA announced in ICResp.
    pub maxh2cdata: u32,
    /// In-capsule data accepted (admin and fabrics: at least 8192).
    pub max_icd: u32,
}

/// Where a connection's commands run.
pub(crate) enum Backend<'a> {
    /// On this reactor, against the controller state it owns.
    Local(&'a mut TargetState),
    /// On the owner reactor: each command leaves as a [`Req`] gathered in `reqs`; its
    /// answer comes back through [`Connection::on_resp`].
    Remote { id: ConnId, reqs: &'a mut Vec<Req> },
}

/// A write waiting for its data.
#[derive(Debug)]
struct PendingWrite {
    sqe: Sqe,
    buf: Vec<u8>,
    received: u32,
    /// A data PDU of this write failed its data digest: the rest of the data is taken in,
    /// then the command completes with Transient Transport Error without running.
    digest_failed: bool,
}

/// The send buffer: PDUs appended whole, sent from `pos`. Its memory is reused without
/// being zeroed again (only memory it grows into is), so each appender says whether its
/// room must be zeroed.
#[derive(Debug, Default)]
struct OutBuf {
    buf: Vec<u8>,
    len: usize,
    pos: usize,
}

impl OutBuf {
    fn pending(&self) -> usize {
        self.len - self.pos
    }

    fn unsent(&self) -> &[u8] {
        self.buf.get(self.pos..self.len).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }

    /// Appends `n` bytes of room (zeroed if `zero`); returns where it starts.
    fn grow(&mut self, n: usize, zero: bool) -> usize {
        let start = self.len;
        let end = start + n;
        let old = self.buf.len();
        if zero && start < old {
            // The reused part; memory beyond `old` is zeroed by the resize.
            self.buf[start..old.min(end)].fill(0);
        }
        if old < end {
            self.buf.resize(end, 0);
        }
        self.len = end;
        start
    }

    /// The room from `start` to the end.
    fn room_mut(&mut self, start: usize) -> &mut [u8] {
        self.buf.get_mut(start..self.len).unwrap_or_default()
    }

    /// Gives back everything from `start` (a PDU that failed to build).
    fn truncate(&mut self, start: usize) {
        self.len = self.len.min(start).max(self.pos);
    }

    /// After sending: restart at 0 when all is sent, or move a large sent prefix out.
    fn compact(&mut self) {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.pos > (1 << 20) {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
    }
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    decoder: PduDecoder,
    st: ConnState,
}

#[derive(Debug)]
struct ConnState {
    q: QueueCtx,
    limits: ConnLimits,
    tx: TxConfig,
    ic_done: bool,
    out: OutBuf,
    /// Writes waiting for H2CData, indexed by TTAG.
    pending: Vec<Option<PendingWrite>>,
    free_bufs: Vec<Vec<u8>>,
    /// Commands received and not completed (pending writes, parked commands, held AERs).
    outstanding: u32,
    /// Commands the bdev asked to run again later ([`Outcome::Retry`]: a thin pool out of
    /// data space), with their data, oldest first.
    parked: VecDeque<(Sqe, Vec<u8>)>,
    /// Set after a fatal error or a H2CTermReq: flush what is queued, then close.
    closing: bool,
}

/// What the reactor should do after feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnStatus {
    Open,
    /// Flush the send buffer, then close.
    Closing,
}

impl Connection {
    pub fn new(peer: SocketAddr, local: Option<SocketAddr>, limits: ConnLimits) -> Self {
        let rx = RxConfig {
            max_icd_len: limits.max_icd.max(8192),
            max_data_len: limits.maxh2cdata,
            ..RxConfig::controller()
        };
        Self {
            peer,
            decoder: PduDecoder::new(rx),
            st: ConnState {
                q: QueueCtx::new(local).with_peer(Some(peer)),
                limits,
                tx: TxConfig::default(),
                ic_done: false,
                out: OutBuf::default(),
                pending: Vec::new(),
                free_bufs: Vec::new(),
                outstanding: 0,
                parked: VecDeque::new(),
                closing: false,
            },
        }
    }

    pub fn queue(&self) -> &QueueCtx {
        &self.st.q
    }

    pub fn status(&self) -> ConnStatus {
        if self.st.closing {
            ConnStatus::Closing
        } else {
            ConnStatus::Open
        }
    }

    /// Bytes queued for sending.
    pub fn tx_pending(&self) -> usize {
        self.st.out.pending()
    }

    /// Whether the reader should pause (send buffer full or closing).
    pub fn rx_blocked(&self) -> bool {
        self.st.closing || self.tx_pending() > TX_HIGH_WATER
    }

    /// Feeds received bytes: decodes and handles every complete PDU.
    pub(crate) fn feed(&mut self, mut input: &[u8], be: &mut Backend<'_>, now_ms: u64) {
        while !self.st.closing {
            let used = self.decoder.push(input);
            input = input.get(used..).unwrap_or_default();
            match self.decoder.poll() {
                Ok(Some(pdu)) => self.st.handle(pdu, be, now_ms),
                Ok(None) => break,
                Err(PduError::Fatal(e)) => {
                    warn!("{}: fatal PDU error: {e}", self.peer);
                    if let Some(t) = self.decoder.term_req() {
                        self.st.push_term(&t);
                    }
                    self.st.closing = true;
                }
                Err(PduError::DataDigest(e)) => self.st.data_digest_error(&e, be),
                Err(PduError::Incomplete { .. }) => break,
            }
        }
    }

    /// Sends an asynchronous completion (AER) on this (admin) queue.
    pub fn push_async(&mut self, cqe: Cqe) {
        self.st.outstanding = self.st.outstanding.saturating_sub(1);
        self.st.push_resp(cqe);
    }

    /// Whether commands wait for a retry.
    pub fn has_parked(&self) -> bool {
        !self.st.parked.is_empty()
    }

    /// Runs parked commands again, oldest first, until one asks to wait again. Returns
    /// how many completed.
    pub fn retry_parked(&mut self, target: &mut TargetState, now_ms: u64) -> usize {
        let mut done = 0;
        while !self.st.closing {
            let Some((sqe, data)) = self.st.parked.pop_front() else {
                break;
            };
            match target.execute(&mut self.st.q, &sqe, &data, &mut [], now_ms) {
                Outcome::Retry => {
                    self.st.parked.push_front((sqe, data));
                    break;
                }
                outcome => {
                    self.st.outstanding = self.st.outstanding.saturating_sub(1);
                    self.st.complete(outcome);
                    self.st.recycle(data);
                    done += 1;
                }
            }
        }
        done
    }

    /// Writes queued bytes until the socket would block. Returns bytes written.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while self.st.out.pending() > 0 {
            match w.write(self.st.out.unsent()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.st.out.consume(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.st.out.compact();
        Ok(total)
    }

    /// Reads from `r` into `scratch` and feeds the bytes, at most `budget` bytes. Returns
    /// `Ok(true)` if the socket may have more (budget hit), `Ok(false)` on WouldBlock.
    pub(crate) fn read_from<R: Read>(
        &mut self,
        r: &mut R,
        scratch: &mut [u8],
        budget: usize,
        be: &mut Backend<'_>,
        now_ms: u64,
    ) -> io::Result<bool> {
        let mut got = 0;
        while got < budget && !self.rx_blocked() {
            match r.read(scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    got += n;
                    self.feed(scratch.get(..n).unwrap_or_default(), be, now_ms);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Connection {
    /// Takes the owner's answer to a command this connection forwarded
    /// ([`Backend::Remote`]). Returns a spent data buffer this connection has no room to
    /// keep (for the owner's next reads).
    pub(crate) fn on_resp(&mut self, r: Resp) -> Option<Vec<u8>> {
        let st = &mut self.st;
        match r {
            Resp::Complete { cqe, q, .. } => {
                if let Some(q) = q {
                    st.q = q;
                }
                st.outstanding = st.outstanding.saturating_sub(1);
                st.push_resp(cqe);
            }
            Resp::Data { cqe, data, .. } => {
                st.outstanding = st.outstanding.saturating_sub(1);
                st.push_data(cqe, &data);
                if st.free_bufs.len() < FREE_BUFS {
                    st.free_bufs.push(data);
                } else {
                    return Some(data);
                }
            }
            Resp::R2t { sqe, len, .. } => {
                st.outstanding = st.outstanding.saturating_sub(1);
                st.start_r2t(sqe, len);
            }
            // The reactor closes the connection.
            Resp::Kill { .. } => {}
        }
        None
    }
}

impl ConnState {
    fn handle(&mut self, pdu: Pdu<'_>, be: &mut Backend<'_>, now_ms: u64) {
        match pdu {
            Pdu::IcReq(req) => self.icreq(&req),
            Pdu::TermReq(t) => {
                info!("H2CTermReq received: {t}");
                self.closing = true;
            }
            Pdu::CapsuleCmd(cmd) => self.capsule(&cmd, be, now_ms),
            Pdu::H2CData(d) => self.h2c_data(&d, be, now_ms),
            other => {
                // The decoder only delivers host-to-controller types.
                warn!("unexpected {} PDU", other.pdu_type());
                self.fatal(Fes::InvalidHeaderField, 0, other.pdu_type() as u8);
            }
        }
    }

    fn icreq(&mut self, req: &IcReq) {
        let resp = IcResp::answer(req, self.limits.maxh2cdata);
        debug!("{req} -> {resp}");
        self.ic_done = true;
        self.tx = TxConfig {
            digests: Digests {
                header: req.digests.header,
                data: req.digests.data,
            },
            pda: req.hpda,
        };
        let start = self.out.grow(128, true);
        if resp.emit(self.out.room_mut(start)).is_err() {
            self.out.truncate(start);
        }
    }

    fn fatal(&mut self, fes: Fes, fei: u32, pdu_type: u8) {
        let e = FatalError {
            fes,
            fei,
            reason: FatalReason::OutOfSequence,
            pdu_type,
        };
        let t = TermReq::c2h_for(&e, &[]);
        self.push_term(&t);
        self.closing = true;
    }

    fn push_term(&mut self, t: &TermReq<'_>) {
        let start = self.out.grow(t.wire_len(), true);
        if t.emit(self.out.room_mut(start)).is_err() {
            self.out.truncate(start);
        }
    }

    fn push_resp(&mut self, cqe: Cqe) {
        let resp = CapsuleResp { cqe };
        let n = TxLayout::new(PduType::CapsuleResp, 0, &self.tx).plen as usize;
        let start = self.out.grow(n, true);
        if resp.emit(self.out.room_mut(start), &self.tx).is_err() {
            self.out.truncate(start);
        }
    }

    fn depth_limit(&self) -> u32 {
        if self.q.is_connected() {
            self.q.depth() + if self.q.qid == 0 { MAX_AERS as u32 } else { 0 }
        } else {
            1
        }
    }

    /// Fails command `cid` for a transport reason (the owner builds the CQE when the
    /// queue is served remotely: SQHD advances in one place).
    fn fail_cmd(&mut self, be: &mut Backend<'_>, cid: u16, status: CompletionStatus) {
        match be {
            Backend::Local(_) => {
                let cqe = self.q.cqe(cid, status, 0, 0);
                self.push_resp(cqe);
            }
            Backend::Remote { id, reqs } => {
                self.outstanding += 1;
                reqs.push(Req::Fail {
                    id: *id,
                    cid,
                    status,
                });
            }
        }
    }

    fn capsule(&mut self, cmd: &CapsuleCmd<'_>, be: &mut Backend<'_>, now_ms: u64) {
        let sqe = cmd.sqe;
        if self.outstanding >= self.depth_limit() {
            warn!(
                "qid {}: host exceeded the queue depth ({})",
                self.q.qid,
                self.depth_limit()
            );
            self.fatal(Fes::PduSequenceError, 0, PduType::CapsuleCmd as u8);
            return;
        }
        let target = match be {
            Backend::Local(t) => &mut **t,
            Backend::Remote { id, reqs } => {
                self.outstanding += 1;
                let data = if cmd.data.is_empty() {
                    Vec::new()
                } else {
                    let mut b = self.free_bufs.pop().unwrap_or_default();
                    b.clear();
                    b.extend_from_slice(cmd.data);
                    b
                };
                reqs.push(Req::Capsule {
                    id: *id,
                    sqe,
                    data,
                    check: cmd.sgl_data_check(),
                });
                return;
            }
        };
        let xfer = match target.prepare(&self.q, &sqe, cmd.sgl_data_check()) {
            Ok(x) => x,
            Err(status) => {
                debug!("qid {}: {sqe} rejected: {status}", self.q.qid);
                let cqe = self.q.cqe(sqe.cid, status, 0, 0);
                self.push_resp(cqe);
                return;
            }
        };
        match xfer {
            DataXfer::None | DataXfer::InCapsule => {
                match target.execute(&mut self.q, &sqe, cmd.data, &mut [], now_ms) {
                    Outcome::Retry => self.park(sqe, cmd.data.to_vec()),
                    outcome => self.complete(outcome),
                }
            }
            DataXfer::ToHost(len) => self.execute_to_host(&sqe, len, target, now_ms),
            DataXfer::FromHost(len) => self.start_r2t(sqe, len),
        }
    }

    fn complete(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Complete(cqe) => self.push_resp(cqe),
            Outcome::Held => self.outstanding += 1,
            // Callers park these themselves (they hold the data).
            Outcome::Retry => {}
        }
    }

    /// Keeps a command for [`Connection::retry_parked`].
    fn park(&mut self, sqe: Sqe, data: Vec<u8>) {
        if self.parked.is_empty() {
            debug!(
                "qid {}: parking {sqe} until the bdev can take it",
                self.q.qid
            );
        }
        self.outstanding += 1;
        self.parked.push_back((sqe, data));
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.free_bufs.len() < FREE_BUFS && buf.capacity() > 0 {
            self.free_bufs.push(buf);
        }
    }

    /// Executes a command returning data straight into the send buffer, behind room for
    /// the C2HData header; on failure the room is given back and only the CQE goes out.
    fn execute_to_host(&mut self, sqe: &Sqe, len: u32, target: &mut TargetState, now_ms: u64) {
        let layout = TxLayout::new(PduType::C2HData, len, &self.tx);
        let prefix = layout.prefix_len();
        // An I/O Read fills its whole buffer when it succeeds (and its bytes are never sent
        // when it fails), so the data room may hold stale bytes: no memset of up to MDTS
        // per read. Everything else gets zeroed room.
        let fills_all = self.q.qid != 0 && IoOpcode::from_u8(sqe.opcode) == IoOpcode::Read;
        let start = self.out.grow(layout.plen as usize, !fills_all);
        let (head, tail) = self
            .out
            .room_mut(start)
            .split_at_mut(prefix.min(layout.plen as usize));
        head.fill(0);
        let (data, ddgst) = tail.split_at_mut((len as usize).min(tail.len()));
        ddgst.fill(0);
        let outcome = target.execute(&mut self.q, sqe, &[], data, now_ms);
        let cqe = match outcome {
            Outcome::Complete(cqe) => cqe,
            // Commands returning data are never held nor retried; should one be, it
            // fails rather than staying outstanding for ever.
            Outcome::Held | Outcome::Retry => {
                self.out.truncate(start);
                let cqe = self
                    .q
                    .cqe(sqe.cid, Status::INTERNAL_ERROR.retryable(), 0, 0);
                self.push_resp(cqe);
                return;
            }
        };
        if !cqe.status.is_success() {
            self.out.truncate(start);
            self.push_resp(cqe);
            return;
        }
        self.finish_c2h(start, &layout, sqe.cid, cqe);
    }

    /// Sends data that came back from the owner: C2HData (copied into the send buffer),
    /// then the completion unless the C2HData's SUCCESS flag stands for it.
    fn push_data(&mut self, cqe: Cqe, data: &[u8]) {
        let Ok(len) = u32::try_from(data.len()) else {
            let cqe = Cqe {
                status: Status::INTERNAL_ERROR.dnr(),
                ..cqe
            };
            self.push_resp(cqe);
            return;
        };
        let layout = TxLayout::new(PduType::C2HData, len, &self.tx);
        let prefix = layout.prefix_len();
        let start = self.out.grow(layout.plen as usize, false);
        let room = self.out.room_mut(start);
        let (head, tail) = room.split_at_mut(prefix.min(room.len()));
        head.fill(0);
        let (dst, ddgst) = tail.split_at_mut(data.len().min(tail.len()));
        dst.copy_from_slice(data.get(..dst.len()).unwrap_or_default());
        ddgst.fill(0);
        self.finish_c2h(start, &layout, cqe.cid, cqe);
    }

    /// Completes a C2HData PDU whose data sits in the send buffer at `start` behind room
    /// for its header: header, data digest, and the CapsuleResp when one is needed.
    fn finish_c2h(&mut self, start: usize, layout: &TxLayout, cid: u16, cqe: Cqe) {
        let prefix = layout.prefix_len();
        let len = layout.data_len as usize;
        let success = self.q.sq_flow_disabled && cqe.dw0 == 0 && cqe.dw1 == 0;
        let room = self.out.room_mut(start);
        let (head, tail) = room.split_at_mut(prefix.min(room.len()));
        let (data, ddgst) = tail.split_at_mut(len.min(tail.len()));
        let pdu = C2HData {
            cccid: cid,
            datao: 0,
            last: true,
            success,
            data,
        };
        if pdu.emit_prefix(head, &self.tx).is_err() {
            self.out.truncate(start);
            let cqe = Cqe {
                status: Status::INTERNAL_ERROR.dnr(),
                ..cqe
            };
            self.push_resp(cqe);
            return;
        }
        if layout.ddgst {
            let d = TxLayout::data_digest(data);
            if let Some(dst) = ddgst.get_mut(..4) {
                dst.copy_from_slice(&d);
            }
        }
        if !success {
            self.push_resp(cqe);
        }
    }

    fn start_r2t(&mut self, sqe: Sqe, len: u32) {
        let slot = match self.pending.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.pending.push(None);
                self.pending.len() - 1
            }
        };
        let Ok(ttag) = u16::try_from(slot) else {
            self.fatal(Fes::PduSequenceError, 0, PduType::CapsuleCmd as u8);
            return;
        };
        let mut buf = self.free_bufs.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len as usize, 0);
        if let Some(p) = self.pending.get_mut(slot) {
            *p = Some(PendingWrite {
                sqe,
                buf,
                received: 0,
                digest_failed: false,
            });
        }
        self.outstanding += 1;
        let r2t = R2t {
            cccid: sqe.cid,
            ttag,
            r2to: 0,
            r2tl: len,
        };
        let n = TxLayout::new(PduType::R2T, 0, &self.tx).plen as usize;
        let start = self.out.grow(n, true);
        if r2t.emit(self.out.room_mut(start), &self.tx).is_err() {
            self.out.truncate(start);
        }
    }

    fn h2c_data(&mut self, d: &H2CData<'_>, be: &mut Backend<'_>, now_ms: u64) {
        let slot = usize::from(d.ttag);
        let datal = d.data.len();
        let off = d.datao as usize;
        let accepted = match self.pending.get_mut(slot) {
            Some(Some(p)) if p.sqe.cid == d.cccid => {
                if d.datao != p.received || off + datal > p.buf.len() || datal == 0 {
                    warn!(
                        "H2CData out of range: datao {} datal {datal}, expected {} of {}",
                        d.datao,
                        p.received,
                        p.buf.len()
                    );
                    Err(Fes::DataOutOfRange)
                } else {
                    if let Some(dst) = p.buf.get_mut(off..off + datal) {
                        dst.copy_from_slice(d.data);
                    }
                    p.received += datal as u32;
                    Ok(p.received as usize == p.buf.len())
                }
            }
            _ => {
                warn!(
                    "H2CData with unknown TTAG {:#x} / CCCID {:#x}",
                    d.ttag, d.cccid
                );
                Err(Fes::PduSequenceError)
            }
        };
        match accepted {
            Err(fes) => {
                self.fatal(fes, 0, PduType::H2CData as u8);
                return;
            }
            Ok(false) => return,
            Ok(true) => {}
        }
        let Some(Some(p)) = self.pending.get_mut(slot).map(Option::take) else {
            return;
        };
        self.outstanding = self.outstanding.saturating_sub(1);
        if p.digest_failed {
            self.fail_cmd(be, p.sqe.cid, Status::TRANSIENT_TRANSPORT_ERROR.retryable());
            self.recycle(p.buf);
            return;
        }
        let target = match be {
            Backend::Local(t) => &mut **t,
            Backend::Remote { id, reqs } => {
                self.outstanding += 1;
                reqs.push(Req::Write {
                    id: *id,
                    sqe: p.sqe,
                    data: p.buf,
                });
                return;
            }
        };
        match target.execute(&mut self.q, &p.sqe, &p.buf, &mut [], now_ms) {
            Outcome::Retry => self.park(p.sqe, p.buf),
            outcome => {
                self.complete(outcome);
                self.recycle(p.buf);
            }
        }
    }

    fn data_digest_error(&mut self, e: &crate::wire::pdu::DataDigestError, be: &mut Backend<'_>) {
        warn!("data digest error: {e}");
        match e.pdu_type {
            PduType::CapsuleCmd => {
                self.fail_cmd(be, e.cccid, Status::TRANSIENT_TRANSPORT_ERROR.retryable());
            }
            // SPDK's answer: the bytes are accounted for (the stream is in sync), and the
            // write completes with Transient Transport Error once all its data is in, so
            // the host retries it; the connection lives on. A PDU that does not fit its
            // write is a sequence error, as it would be with a good digest.
            PduType::H2CData => {
                let slot = usize::from(e.ttag);
                let done = match self.pending.get_mut(slot) {
                    Some(Some(p))
                        if p.sqe.cid == e.cccid
                            && e.datao == p.received
                            && e.datal > 0
                            && (e.datao as usize + e.datal as usize) <= p.buf.len() =>
                    {
                        p.digest_failed = true;
                        p.received += e.datal;
                        p.received as usize == p.buf.len()
                    }
                    _ => {
                        self.fatal(Fes::PduSequenceError, 0, e.pdu_type as u8);
                        return;
                    }
                };
                if done {
                    if let Some(Some(p)) = self.pending.get_mut(slot).map(Option::take) {
                        self.outstanding = self.outstanding.saturating_sub(1);
                        self.fail_cmd(be, p.sqe.cid, Status::TRANSIENT_TRANSPORT_ERROR.retryable());
                        self.recycle(p.buf);
                    }
                }
            }
            _ => self.fatal(Fes::PduSequenceError, 0, e.pdu_type as u8),
        }
    }
}

#[cfg(test)]
mod out_buf_tests {
    use super::OutBuf;

    #[test]
    fn reused_room_is_zeroed_only_when_asked_and_sending_compacts() {
        let mut o = OutBuf::default();
        let a = o.grow(8, true);
        o.room_mut(a).copy_from_slice(&[7; 8]);
        assert_eq!(o.unsent(), &[7; 8]);
        o.consume(8);
        o.compact();
        assert_eq!(o.pending(), 0);
        // Reused memory: zeroed room is zero, unzeroed room keeps what was there.
        let b = o.grow(4, true);
        assert_eq!(o.room_mut(b), &[0; 4]);
        let c = o.grow(4, false);
        assert_eq!(o.room_mut(c), &[7; 4]);
        o.truncate(c);
        assert_eq!(o.unsent(), &[0; 4]);
        // Growing past the old size zeroes the new memory.
        let d = o.grow(16, false);
        assert_eq!(&o.room_mut(d)[4..], &[0; 12]);
        // Zeroed room that straddles the old end is zero throughout.
        o.room_mut(d).fill(9);
        o.truncate(d);
        let e = o.grow(40, true);
        assert_eq!(o.room_mut(e), &[0; 40]);
        o.truncate(d);
        o.grow(16, false);
        o.consume(3);
        assert_eq!(o.pending(), 17);
        o.truncate(0); // never below what was sent
        assert_eq!(o.pending(), 0);
    }
}

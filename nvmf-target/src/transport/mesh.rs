//! Messages between reactors.
//!
//! Reactor 0, the *owner*, holds the [`TargetState`]: subsystems, controllers, every bdev and
//! so every pool's metadata. The other reactors own connections only: sockets, PDU framing,
//! digests, R2T/H2CData reassembly and C2HData emission (the per-byte work). A command on
//! such a connection travels to the owner as a [`Req`] (its SQE and its data buffer, moved,
//! not copied) and comes back as a [`Resp`] (the CQE, and read data in a moved buffer).
//! Nothing is shared between reactors but these queues, so no lock guards the I/O path.
//!
//! The owner keeps each remote queue's [`QueueCtx`] (the controller binding and SQHD), so
//! every CQE of a queue is built in one place, in order; commands a bdev asks to retry
//! (a thin pool out of space) wait on the owner; AER completions and controller deaths
//! (keep-alive expiry, admin queue closed) reach the connection's reactor as messages.
//!
//! Batches: a reactor gathers what it sends during one pass and sends one batch per
//! destination; it wakes the destination only when that one is asleep (adaptive mode).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use log::debug;

use crate::ctrlr::{DataXfer, Outcome, QueueCtx, TargetState};
use crate::wire::cqe::Cqe;
use crate::wire::pdu::SglDataCheck;
use crate::wire::sqe::Sqe;
use crate::wire::status::{CompletionStatus, Status};

use super::reactor::Msg;

/// A connection: the reactor serving it and its token (unique across reactors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    pub reactor: usize,
    pub token: usize,
}

/// From a connection's reactor to the owner.
#[derive(Debug)]
pub(crate) enum Req {
    /// A command capsule with its in-capsule data (empty if none).
    Capsule {
        id: ConnId,
        sqe: Sqe,
        data: Vec<u8>,
        check: SglDataCheck,
    },
    /// A write whose data the host sent after our R2T.
    Write { id: ConnId, sqe: Sqe, data: Vec<u8> },
    /// The transport failed command `cid` (a data digest error): complete it with `status`.
    Fail {
        id: ConnId,
        cid: u16,
        status: CompletionStatus,
    },
    /// The connection is gone.
    Closed { id: ConnId },
    /// Buffers of read data already sent, for the owner's next reads.
    Spares(Vec<Vec<u8>>),
}

/// From the owner to a connection's reactor.
#[derive(Debug)]
pub(crate) enum Resp {
    /// Send this completion; `q` is the queue's new state after a fabrics command.
    Complete {
        token: usize,
        cqe: Cqe,
        q: Option<QueueCtx>,
    },
    /// A successful command returning `data`: C2HData, then the completion.
    Data {
        token: usize,
        cqe: Cqe,
        data: Vec<u8>,
    },
    /// Fetch `len` bytes of data for this write (R2T), then send [`Req::Write`].
    R2t { token: usize, sqe: Sqe, len: u32 },
    /// The connection's controller died: close it.
    Kill { token: usize },
}

/// How to reach a reactor from another thread.
#[derive(Clone)]
pub(crate) struct Link {
    pub tx: Sender<Msg>,
    pub waker: Arc<mio::Waker>,
    /// Set while the reactor blocks in the kernel (adaptive mode, idle).
    pub sleeping: Arc<AtomicBool>,
    /// Its busy and idle time.
    pub stats: Arc<super::reactor::ReactorStats>,
    /// The core it runs on.
    pub core: usize,
}

impl Link {
    /// Sends `m`; wakes the reactor if it sleeps. Returns false if it has stopped.
    pub fn send(&self, m: Msg) -> bool {
        if self.tx.send(m).is_err() {
            return false;
        }
        // Pairs with the fence after the receiver sets `sleeping`: either it sees our
        // message when it looks again, or we see it asleep and wake it.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _ = self.waker.wake();
        }
        true
    }

    /// Wakes the reactor unconditionally (stop, management calls).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// What the owner keeps of a queue served by another reactor.
struct RemoteQueue {
    q: QueueCtx,
    /// Commands the bdev asked to run again later, with their data, oldest first.
    parked: VecDeque<(Sqe, Vec<u8>)>,
}

/// The owner's side of the connections other reactors serve.
#[derive(Default)]
pub(crate) struct RemoteQueues {
    queues: HashMap<ConnId, RemoteQueue>,
    /// Responses gathered during this pass, per destination reactor.
    out: HashMap<usize, Vec<Resp>>,
    /// Data buffers to reuse (writes executed, reads returned): no allocation per I/O.
    free: Vec<Vec<u8>>,
}

/// Most buffers the owner keeps for reuse.
const FREE_BUFS: usize = 256;

impl RemoteQueues {
    /// A connection handed to another reactor.
    pub fn opened(&mut self, id: ConnId, q: QueueCtx) {
        self.queues.insert(
            id,
            RemoteQueue {
                q,
                parked: VecDeque::new(),
            },
        );
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > 0 && self.free.len() < FREE_BUFS {
            self.free.push(buf);
        }
    }

    fn push(&mut self, reactor: usize, r: Resp) {
        self.out.entry(reactor).or_default().push(r);
    }

    /// Sends `cqe` to connection `id`.
    fn complete(&mut self, id: ConnId, cqe: Cqe) {
        self.push(
            id.reactor,
            Resp::Complete {
                token: id.token,
                cqe,
                q: None,
            },
        );
    }

    /// Runs a batch of requests from another reactor. Returns the controllers whose admin
    /// queue closed (their other queues, wherever they are, must close).
    pub fn handle(&mut self, state: &mut TargetState, reqs: Vec<Req>, now_ms: u64) -> Vec<u16> {
        let mut dead = Vec::new();
        for r in reqs {
            match r {
                Req::Capsule {
                    id,
                    sqe,
                    data,
                    check,
                } => self.capsule(state, id, sqe, data, check, now_ms),
                Req::Write { id, sqe, data } => self.run(state, id, sqe, data, now_ms),
                Req::Fail { id, cid, status } => {
                    if let Some(rq) = self.queues.get_mut(&id) {
                        let cqe = rq.q.cqe(cid, status, 0, 0);
                        self.complete(id, cqe);
                    }
                }
                Req::Spares(bufs) => {
                    for b in bufs {
                        self.recycle(b);
                    }
                }
                Req::Closed { id } => {
                    if let Some(rq) = self.queues.remove(&id) {
                        state.queue_closed(&rq.q);
                        if rq.q.qid == 0 {
                            dead.extend(rq.q.cntlid);
                        }
                    }
                }
            }
        }
        dead
    }

    fn capsule(
        &mut self,
        state: &mut TargetState,
        id: ConnId,
        sqe: Sqe,
        data: Vec<u8>,
        check: SglDataCheck,
        now_ms: u64,
    ) {
        let Some(rq) = self.queues.get_mut(&id) else {
            return;
        };
        let token = id.token;
        let resp = match state.prepare(&rq.q, &sqe, check) {
            Err(status) => Resp::Complete {
                token,
                cqe: rq.q.cqe(sqe.cid, status, 0, 0),
                q: None,
            },
            Ok(DataXfer::None | DataXfer::InCapsule) => {
                return self.run(state, id, sqe, data, now_ms);
            }
            Ok(DataXfer::FromHost(len)) => Resp::R2t { token, sqe, len },
            Ok(DataXfer::ToHost(len)) => {
                let mut buf = self.free.pop().unwrap_or(data);
                buf.clear();
                buf.resize(len as usize, 0);
                let cqe = match state.execute(&mut rq.q, &sqe, &[], &mut buf, now_ms) {
                    Outcome::Complete(cqe) if cqe.status.is_success() => {
                        return self.push(
                            id.reactor,
                            Resp::Data {
                                token,
                                cqe,
                                data: buf,
                            },
                        );
                    }
                    Outcome::Complete(cqe) => cqe,
                    // Commands returning data are never held nor retried; should one be,
                    // it fails rather than staying outstanding for ever.
                    Outcome::Held | Outcome::Retry => {
                        rq.q.cqe(sqe.cid, Status::INTERNAL_ERROR.retryable(), 0, 0)
                    }
                };
                self.recycle(buf);
                Resp::Complete {
                    token,
                    cqe,
                    q: None,
                }
            }
        };
        self.push(id.reactor, resp);
    }

    /// Executes a command whose data (if any) is in: completes it, holds it (AER) or
    /// parks it (retry later).
    fn run(&mut self, state: &mut TargetState, id: ConnId, sqe: Sqe, data: Vec<u8>, now_ms: u64) {
        let Some(rq) = self.queues.get_mut(&id) else {
            return;
        };
        match state.execute(&mut rq.q, &sqe, &data, &mut [], now_ms) {
            Outcome::Complete(cqe) => {
                let q = sqe.is_fabrics().then(|| rq.q.clone());
                self.push(
                    id.reactor,
                    Resp::Complete {
                        token: id.token,
                        cqe,
                        q,
                    },
                );
                self.recycle(data);
            }
            Outcome::Held => self.recycle(data),
            Outcome::Retry => {
                debug!("qid {}: parking {sqe} until the bdev can take it", rq.q.qid);
                rq.parked.push_back((sqe, data));
            }
        }
    }

    /// Runs parked commands again (every tick). Returns how many completed.
    pub fn retry_parked(&mut self, state: &mut TargetState, now_ms: u64) -> usize {
        let mut done = 0;
        let mut out = Vec::new();
        for (id, rq) in self.queues.iter_mut() {
            while let Some((sqe, data)) = rq.parked.pop_front() {
                match state.execute(&mut rq.q, &sqe, &data, &mut [], now_ms) {
                    Outcome::Retry => {
                        rq.parked.push_front((sqe, data));
                        break;
                    }
                    Outcome::Held => done += 1,
                    Outcome::Complete(cqe) => {
                        done += 1;
                        out.push((*id, cqe));
                    }
                }
            }
        }
        for (id, cqe) in out {
            self.complete(id, cqe);
        }
        done
    }

    /// Whether any remote command waits for a retry.
    pub fn has_parked(&self) -> bool {
        self.queues.values().any(|rq| !rq.parked.is_empty())
    }

    /// Sends an AER completion to controller `cntlid`'s admin queue if another reactor
    /// serves it. Returns false if no remote queue matched.
    pub fn push_async(&mut self, cntlid: u16, cqe: Cqe) -> bool {
        let hit = self
            .queues
            .iter()
            .find(|(_, rq)| rq.q.qid == 0 && rq.q.cntlid == Some(cntlid))
            .map(|(id, _)| *id);
        match hit {
            Some(id) => {
                self.complete(id, cqe);
                true
            }
            None => false,
        }
    }

    /// Tells the reactors serving queues of the `dead` controllers to close them.
    pub fn kill(&mut self, dead: &[u16]) {
        let ids: Vec<ConnId> = self
            .queues
            .iter()
            .filter(|(_, rq)| rq.q.cntlid.is_some_and(|c| dead.contains(&c)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.push(id.reactor, Resp::Kill { token: id.token });
        }
    }

    /// Sends what this pass gathered.
    pub fn send(&mut self, links: &[Link]) {
        for (reactor, batch) in self.out.iter_mut() {
            if batch.is_empty() {
                continue;
            }
            if let Some(l) = links.get(*reactor) {
                l.send(Msg::Resp(std::mem::take(batch)));
            } else {
                batch.clear();
            }
        }
    }

    /// At shutdown: every remote queue is closed.
    pub fn close_all(&mut self, state: &mut TargetState) {
        for (_, rq) in self.queues.drain() {
            state.queue_closed(&rq.q);
        }
    }
}

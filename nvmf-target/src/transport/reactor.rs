//! Poll-mode reactors: one thread per core of the cpumask, each owning its connections.
//! Reactor 0 (the *owner*) also owns the controller state and every bdev behind it
//! (so each pool's metadata has exactly one owner); the others forward their connections'
//! commands to it through queues ([`super::mesh`]). Nothing is shared, so the I/O path
//! takes no lock.
//!
//! Loop: run messages (management calls, handed-over connections, forwarded commands and
//! their answers) → poll sockets (`mio`, edge-triggered; zero timeout while busy) → accept
//! (owner; connections go to the reactors in turn, as SPDK's round-robin poll-group
//! choice does) → read and process each readable connection (bounded budget per pass) →
//! route asynchronous completions → flush send buffers → every [`TICK_MS`] advance the
//! controllers' clock (keep-alive expiry, bdev timers, parked commands) → close what died
//! → send this pass's batches to the other reactors.
//!
//! Modes ([`PollMode`]): `Busy` never blocks in the kernel (lowest latency, one core at
//! 100 %); `Adaptive` (default) spins for [`SPIN_US`] after the last piece of work, then
//! blocks in `epoll_wait` until a socket, a message (through a `mio::Waker`, rung only
//! while the reactor sleeps) or the next tick wakes it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::mesh::{ConnId, Link, RemoteQueues, Req, Resp};
use super::tcp::{Backend, ConnLimits, ConnStatus, Connection};
use crate::ctrlr::{QueueCtx, TargetState};

/// Default timer period: keep-alive checks, bdev polls, parked commands; an idle
/// adaptive reactor sleeps at most this long.
pub const TICK_MS: u64 = 50;
/// Adaptive mode spins this long after the last work before blocking.
pub const SPIN_US: u64 = 200;
/// Bytes read from one connection per pass before others get a turn.
const READ_BUDGET: usize = 1 << 20;
const WAKER: Token = Token(0);
const FIRST_LISTENER: usize = 1;
const FIRST_CONN: usize = 1 << 16;

/// How the reactor waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Never sleep.
    Busy,
    /// Spin briefly after work, then sleep in the kernel until woken.
    #[default]
    Adaptive,
}

/// Time a reactor spent working and idle (spinning or asleep), written by the reactor once
/// per pass and read by management without stopping it (SPDK's `framework_get_reactors`).
#[derive(Debug, Default)]
pub struct ReactorStats {
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    tid: AtomicU32,
}

/// A reactor as management sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorInfo {
    /// Index (0 owns the controllers and bdevs; = poll group number).
    pub index: usize,
    /// The core of the mask it runs on.
    pub core: usize,
    /// Its thread's kernel ID (0 before it started).
    pub tid: u32,
    /// Nanoseconds spent in passes that did work.
    pub busy_ns: u64,
    /// Nanoseconds spent in passes that found nothing to do (spinning or asleep).
    pub idle_ns: u64,
}

impl ReactorStats {
    pub(crate) fn info(&self, index: usize, core: usize) -> ReactorInfo {
        ReactorInfo {
            index,
            core,
            tid: self.tid.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            idle_ns: self.idle_ns.load(Ordering::Relaxed),
        }
    }
}

/// Work sent to a reactor from other threads.
pub(crate) enum Msg {
    /// Run a closure on the controller state (owner: management, RPCs, tests).
    Call(Box<dyn FnOnce(&mut TargetState) + Send>),
    /// Start accepting on a bound listener (owner).
    Listen(std::net::TcpListener),
    /// Serve this accepted connection under `token` (owner → other reactor).
    Adopt {
        stream: TcpStream,
        peer: SocketAddr,
        token: usize,
    },
    /// Commands of connections another reactor serves (→ owner).
    Req(Vec<Req>),
    /// Answers to forwarded commands (owner → the connection's reactor).
    Resp(Vec<Resp>),
}

struct Conn {
    stream: TcpStream,
    conn: Connection,
    /// Edge-triggered readiness not yet consumed.
    readable: bool,
    dead: bool,
}

pub(crate) struct Reactor {
    /// Position in the reactor list; 0 is the owner.
    idx: usize,
    poll: Poll,
    mode: PollMode,
    limits: ConnLimits,
    listeners: Vec<TcpListener>,
    conns: HashMap<usize, Conn>,
    /// Next connection token (the owner hands them out for every reactor).
    next_conn: usize,
    scratch: Vec<u8>,
    start: Instant,
    /// Every reactor, by index (empty until [`Reactor::set_links`]: one reactor alone).
    links: Vec<Link>,
    /// Set while blocked in the kernel, so that senders know to wake us.
    sleeping: Arc<AtomicBool>,
    /// A message taken while deciding to sleep.
    stash: VecDeque<Msg>,
    /// Owner: the queues other reactors serve.
    remote: RemoteQueues,
    /// Others: commands gathered this pass for the owner.
    reqs: Vec<Req>,
    /// Owner: the reactor the next accepted connection goes to.
    next_reactor: usize,
    /// Timer period in milliseconds.
    tick_ms: u64,
    /// Busy and idle time, for management.
    stats: Arc<ReactorStats>,
}

impl Reactor {
    pub(crate) fn new(idx: usize, mode: PollMode, limits: ConnLimits) -> io::Result<Self> {
        Ok(Self {
            idx,
            poll: Poll::new()?,
            mode,
            limits,
            listeners: Vec::new(),
            conns: HashMap::new(),
            next_conn: FIRST_CONN,
            scratch: vec![0u8; 256 * 1024],
            start: Instant::now(),
            links: Vec::new(),
            sleeping: Arc::new(AtomicBool::new(false)),
            stash: VecDeque::new(),
            remote: RemoteQueues::default(),
            reqs: Vec::new(),
            next_reactor: 0,
            tick_ms: TICK_MS,
            stats: Arc::new(ReactorStats::default()),
        })
    }

    /// Sets the timer period (at least 1 ms).
    pub(crate) fn set_tick_ms(&mut self, ms: u64) {
        self.tick_ms = ms.max(1);
    }

    /// How other threads reach this reactor (on `core`) through `tx`.
    pub(crate) fn link(&self, tx: std::sync::mpsc::Sender<Msg>, core: usize) -> io::Result<Link> {
        Ok(Link {
            tx,
            waker: Arc::new(mio::Waker::new(self.poll.registry(), WAKER)?),
            sleeping: Arc::clone(&self.sleeping),
            stats: Arc::clone(&self.stats),
            core,
        })
    }

    /// Tells the reactor about all reactors (itself included), by index.
    pub(crate) fn set_links(&mut self, links: Vec<Link>) {
        self.links = links;
    }

    /// Every reactor's link (after [`Reactor::set_links`]).
    pub(crate) fn links_clone(&self) -> Vec<Link> {
        self.links.clone()
    }

    pub(crate) fn add_listener(&mut self, l: std::net::TcpListener) -> io::Result<()> {
        l.set_nonblocking(true)?;
        let mut l = TcpListener::from_std(l);
        let token = Token(FIRST_LISTENER + self.listeners.len());
        self.poll
            .registry()
            .register(&mut l, token, Interest::READABLE)?;
        info!("listening on {}", l.local_addr()?);
        self.listeners.push(l);
        Ok(())
    }

    fn now_ms(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs until `stop` is set. The owner passes the controller state; the other
    /// reactors pass `None`.
    pub(crate) fn run(
        &mut self,
        mut state: Option<&mut TargetState>,
        stop: &AtomicBool,
        msgs: &Receiver<Msg>,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_work = Instant::now();
        let mut last_tick = 0u64;
        self.stats.tid.store(
            rustix::thread::gettid()
                .as_raw_nonzero()
                .get()
                .unsigned_abs(),
            Ordering::Relaxed,
        );
        // Time accounting: each stretch between two clock reads counts as busy when the
        // pass before it or the messages and events at its start gave work.
        let mut mark = Instant::now();
        let mut prev_worked = false;
        while !stop.load(Ordering::Relaxed) {
            let mut worked = false;
            let now = self.now_ms(Instant::now());
            while let Some(m) = self.stash.pop_front().or_else(|| msgs.try_recv().ok()) {
                worked = true;
                self.on_msg(m, state.as_deref_mut(), now);
            }
            // Messages just run may have queued bytes and answers that go out at the end
            // of this pass: no sleeping before that.
            let pending = self.conns.values().any(|c| {
                (c.readable && !c.conn.rx_blocked()) || c.conn.status() == ConnStatus::Closing
            });
            let spinning = worked
                || pending
                || self.mode == PollMode::Busy
                || last_work.elapsed() < Duration::from_micros(SPIN_US);
            let mut timeout = if spinning {
                Duration::ZERO
            } else {
                Duration::from_millis(self.tick_ms)
            };
            if !timeout.is_zero() {
                // About to sleep: say so, then look at the queue once more (pairs with
                // the fence in `Link::send`).
                self.sleeping.store(true, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                if let Ok(m) = msgs.try_recv() {
                    self.stash.push_back(m);
                    timeout = Duration::ZERO;
                }
            }
            if timeout.is_zero() && !worked && !pending && self.mode == PollMode::Adaptive {
                // Spinning with nothing to do: let other threads of this core run.
                std::thread::yield_now();
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.sleeping.store(false, Ordering::Relaxed);
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                worked = true;
                let t = ev.token().0;
                if t == WAKER.0 {
                    continue;
                }
                if t < FIRST_CONN {
                    if let Some(s) = state.as_deref_mut() {
                        self.accept(t - FIRST_LISTENER, s)?;
                    }
                } else if let Some(c) = self.conns.get_mut(&t) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.readable = true;
                    }
                }
            }
            // One clock read per pass: it stamps the work below and the spin window.
            let t = Instant::now();
            let span = u64::try_from(t.duration_since(mark).as_nanos()).unwrap_or(u64::MAX);
            mark = t;
            let counter = if prev_worked || worked {
                &self.stats.busy_ns
            } else {
                &self.stats.idle_ns
            };
            counter.fetch_add(span, Ordering::Relaxed);
            let now = self.now_ms(t);
            worked |= self.service(state.as_deref_mut(), now);
            if now.saturating_sub(last_tick) >= self.tick_ms {
                last_tick = now;
                if let Some(s) = state.as_deref_mut() {
                    worked |= self.tick(s, now);
                }
            }
            self.reap(state.as_deref_mut());
            self.send_batches();
            if worked {
                last_work = t;
            }
            prev_worked = worked;
        }
        info!(
            "reactor {} stopping: {} connections",
            self.idx,
            self.conns.len()
        );
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if let Some(s) = state.as_deref_mut() {
                s.queue_closed(c.conn.queue());
            }
        }
        if let Some(s) = state {
            self.remote.close_all(s);
        }
        Ok(())
    }

    fn on_msg(&mut self, m: Msg, state: Option<&mut TargetState>, now: u64) {
        match (m, state) {
            (Msg::Call(f), Some(s)) => f(s),
            (Msg::Listen(l), Some(_)) => {
                if let Err(e) = self.add_listener(l) {
                    warn!("listener: {e}");
                }
            }
            (Msg::Req(batch), Some(s)) => {
                let dead = self.remote.handle(s, batch, now);
                self.kill(&dead);
            }
            (
                Msg::Adopt {
                    stream,
                    peer,
                    token,
                },
                None,
            ) => {
                if let Err(e) = self.adopt(stream, peer, token) {
                    warn!("reactor {}: taking connection {token}: {e}", self.idx);
                    // The owner learns that it is gone.
                    self.reqs.push(Req::Closed {
                        id: ConnId {
                            reactor: self.idx,
                            token,
                        },
                    });
                }
            }
            (Msg::Resp(batch), None) => {
                let mut spares = Vec::new();
                for r in batch {
                    let token = match &r {
                        Resp::Complete { token, .. }
                        | Resp::Data { token, .. }
                        | Resp::R2t { token, .. }
                        | Resp::Kill { token } => *token,
                    };
                    let Some(c) = self.conns.get_mut(&token) else {
                        continue; // closed meanwhile
                    };
                    if matches!(r, Resp::Kill { .. }) {
                        c.dead = true;
                    } else if let Some(b) = c.conn.on_resp(r) {
                        spares.push(b);
                    }
                }
                if !spares.is_empty() {
                    self.reqs.push(Req::Spares(spares));
                }
            }
            (_, _) => warn!("reactor {}: message for another reactor's role", self.idx),
        }
    }

    /// Registers a connection another reactor accepted.
    fn adopt(&mut self, mut stream: TcpStream, peer: SocketAddr, token: usize) -> io::Result<()> {
        self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        debug!("reactor {}: connection {token} from {peer}", self.idx);
        let local = stream.local_addr().ok();
        self.conns.insert(
            token,
            Conn {
                stream,
                conn: Connection::new(peer, local, self.limits),
                readable: true,
                dead: false,
            },
        );
        Ok(())
    }

    /// Owner: closes every queue of the `dead` controllers, here and on other reactors.
    fn kill(&mut self, dead: &[u16]) {
        if dead.is_empty() {
            return;
        }
        for c in self.conns.values_mut() {
            if c.conn.queue().cntlid.is_some_and(|id| dead.contains(&id)) {
                c.dead = true;
            }
        }
        self.remote.kill(dead);
    }

    /// Owner, every tick: parked commands, bdev timers, keep-alive expiry.
    fn tick(&mut self, state: &mut TargetState, now: u64) -> bool {
        let mut worked = false;
        // Commands parked by an out-of-space pool: try them again.
        for c in self.conns.values_mut() {
            if !c.dead && c.conn.has_parked() {
                worked |= c.conn.retry_parked(state, now) > 0;
            }
        }
        if self.remote.has_parked() {
            worked |= self.remote.retry_parked(state, now) > 0;
        }
        let dead = state.poll(now);
        self.kill(&dead);
        worked
    }

    /// Sends what this pass gathered for other reactors.
    fn send_batches(&mut self) {
        if !self.reqs.is_empty() {
            let batch = std::mem::take(&mut self.reqs);
            if let Some(owner) = self.links.first() {
                owner.send(Msg::Req(batch));
            }
        }
        self.remote.send(&self.links);
    }

    fn accept(&mut self, idx: usize, state: &mut TargetState) -> io::Result<()> {
        loop {
            let Some(l) = self.listeners.get(idx) else {
                return Ok(());
            };
            match l.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let token = self.next_conn;
                    self.next_conn += 1;
                    let n = self.links.len().max(1);
                    let to = self.next_reactor % n;
                    self.next_reactor = (to + 1) % n;
                    let group = u16::try_from(to).unwrap_or(u16::MAX);
                    state.connection_opened_on(group);
                    if to == self.idx {
                        if let Err(e) = self.adopt(stream, peer, token) {
                            warn!("connection from {peer}: {e}");
                            state.queue_closed(&QueueCtx::new(None));
                        }
                        continue;
                    }
                    let local = stream.local_addr().ok();
                    let id = ConnId { reactor: to, token };
                    let q = QueueCtx::new(local)
                        .with_peer(Some(peer))
                        .on_poll_group(group);
                    self.remote.opened(id, q);
                    let sent = self.links.get(to).is_some_and(|l| {
                        l.send(Msg::Adopt {
                            stream,
                            peer,
                            token,
                        })
                    });
                    if !sent {
                        warn!("reactor {to} has stopped: connection from {peer} dropped");
                        self.remote.handle(state, vec![Req::Closed { id }], 0);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: keep serving existing ones.
                    warn!("accept: {e}");
                    return Ok(());
                }
            }
        }
    }

    /// Reads, processes and flushes every connection. Returns whether anything happened.
    fn service(&mut self, mut state: Option<&mut TargetState>, now: u64) -> bool {
        let mut worked = false;
        for (&token, c) in self.conns.iter_mut() {
            if c.dead {
                continue;
            }
            if c.readable && !c.conn.rx_blocked() {
                let mut be = match state.as_deref_mut() {
                    Some(s) => Backend::Local(s),
                    None => Backend::Remote {
                        id: ConnId {
                            reactor: self.idx,
                            token,
                        },
                        reqs: &mut self.reqs,
                    },
                };
                match c
                    .conn
                    .read_from(&mut c.stream, &mut self.scratch, READ_BUDGET, &mut be, now)
                {
                    Ok(more) => c.readable = more,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::UnexpectedEof {
                            debug!("{}: read: {e}", c.conn.peer);
                        }
                        c.dead = true;
                    }
                }
                worked = true;
            }
        }
        if let Some(s) = state {
            if s.has_async_completions() {
                for ac in s.take_async_completions() {
                    let admin = self.conns.values_mut().find(|c| {
                        !c.dead
                            && c.conn.queue().qid == 0
                            && c.conn.queue().cntlid == Some(ac.cntlid)
                    });
                    match admin {
                        Some(c) => c.conn.push_async(ac.cqe),
                        None => {
                            if !self.remote.push_async(ac.cntlid, ac.cqe) {
                                debug!("no admin queue for controller {}", ac.cntlid);
                            }
                        }
                    }
                }
            }
        }
        for c in self.conns.values_mut() {
            if c.dead || c.conn.tx_pending() == 0 {
                continue;
            }
            match c.conn.flush(&mut c.stream) {
                Ok(n) => worked |= n > 0,
                Err(e) => {
                    debug!("{}: write: {e}", c.conn.peer);
                    c.dead = true;
                }
            }
        }
        for c in self.conns.values_mut() {
            if c.conn.status() == ConnStatus::Closing && c.conn.tx_pending() == 0 {
                c.dead = true;
            }
        }
        worked
    }

    /// Closes dead connections; closing an admin queue closes its controller's I/O queues
    /// (on every reactor).
    fn reap(&mut self, mut state: Option<&mut TargetState>) {
        if !self.conns.values().any(|c| c.dead) {
            return;
        }
        let dead: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(t, _)| *t)
            .collect();
        let mut dead_ctrls = Vec::new();
        for t in dead {
            if let Some(mut c) = self.conns.remove(&t) {
                let q = c.conn.queue();
                debug!(
                    "reactor {}: closing connection {t} ({}), qid {}",
                    self.idx, c.conn.peer, q.qid
                );
                match state.as_deref_mut() {
                    Some(s) => {
                        if q.qid == 0 {
                            dead_ctrls.extend(q.cntlid);
                        }
                        s.queue_closed(q);
                    }
                    None => self.reqs.push(Req::Closed {
                        id: ConnId {
                            reactor: self.idx,
                            token: t,
                        },
                    }),
                }
                let _ = self.poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        self.kill(&dead_ctrls);
    }
}

//! The poll-mode reactor: one thread owning listeners, connections, the controller state and
//! every bdev behind it. Nothing it owns is shared, so the I/O path takes no lock.
//!
//! Loop: run management messages → poll sockets (`mio`, edge-triggered; zero timeout while
//! busy) → accept → read and process each readable connection (bounded budget per pass) →
//! route asynchronous completions → flush send buffers → every [`TICK_MS`] advance the
//! controllers' clock (keep-alive expiry, bdev timers) → close what died.
//!
//! Modes ([`PollMode`]): `Busy` never blocks in the kernel (lowest latency, one core at
//! 100 %); `Adaptive` (default) spins for [`SPIN_US`] after the last piece of work, then
//! blocks in `epoll_wait` until a socket, a message (through a `mio::Waker`) or the next
//! tick wakes it.
//!
//! Multi-reactor is the next step: an acceptor hands each connection to a reactor chosen by
//! the namespace owner, and admin work reaches the controller's reactor through queues.
//! Today every connection and every bdev live on one reactor (cpumask 0x1).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::tcp::{ConnLimits, ConnStatus, Connection};
use crate::ctrlr::TargetState;

/// Timer period: keep-alive checks and bdev polls.
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

/// Work sent to the reactor from other threads.
pub enum Msg {
    /// Run a closure on the controller state (management, RPCs, tests).
    Call(Box<dyn FnOnce(&mut TargetState) + Send>),
    /// Start accepting on a bound listener.
    Listen(std::net::TcpListener),
}

struct Conn {
    stream: TcpStream,
    conn: Connection,
    /// Edge-triggered readiness not yet consumed.
    readable: bool,
    dead: bool,
}

pub(crate) struct Reactor {
    poll: Poll,
    mode: PollMode,
    limits: ConnLimits,
    listeners: Vec<TcpListener>,
    conns: HashMap<usize, Conn>,
    next_conn: usize,
    scratch: Vec<u8>,
    start: Instant,
}

impl Reactor {
    pub(crate) fn new(mode: PollMode, limits: ConnLimits) -> io::Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            mode,
            limits,
            listeners: Vec::new(),
            conns: HashMap::new(),
            next_conn: FIRST_CONN,
            scratch: vec![0u8; 256 * 1024],
            start: Instant::now(),
        })
    }

    pub(crate) fn waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.registry(), WAKER)
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

    /// Runs until `stop` is set.
    pub(crate) fn run(
        &mut self,
        state: &mut TargetState,
        stop: &AtomicBool,
        msgs: &Receiver<Msg>,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_work = Instant::now();
        let mut last_tick = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut worked = false;
            while let Ok(m) = msgs.try_recv() {
                worked = true;
                match m {
                    Msg::Call(f) => f(state),
                    Msg::Listen(l) => {
                        if let Err(e) = self.add_listener(l) {
                            warn!("listener: {e}");
                        }
                    }
                }
            }
            let spinning = self.mode == PollMode::Busy
                || last_work.elapsed() < Duration::from_micros(SPIN_US)
                || self.conns.values().any(|c| {
                    (c.readable && !c.conn.rx_blocked()) || c.conn.status() == ConnStatus::Closing
                });
            let timeout = if spinning {
                Duration::ZERO
            } else {
                Duration::from_millis(TICK_MS)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
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
                    self.accept(t - FIRST_LISTENER, state)?;
                } else if let Some(c) = self.conns.get_mut(&t) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.readable = true;
                    }
                }
            }
            // One clock read per pass: it stamps the work below and the spin window.
            let t = Instant::now();
            let now = u64::try_from(t.duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
            worked |= self.service(state, now);
            if now.saturating_sub(last_tick) >= TICK_MS {
                last_tick = now;
                // Commands parked by an out-of-space pool: try them again.
                for c in self.conns.values_mut() {
                    if !c.dead && c.conn.has_parked() {
                        worked |= c.conn.retry_parked(state, now) > 0;
                    }
                }
                let dead = state.poll(now);
                if !dead.is_empty() {
                    for c in self.conns.values_mut() {
                        if c.conn.queue().cntlid.is_some_and(|id| dead.contains(&id)) {
                            c.dead = true;
                        }
                    }
                }
            }
            self.reap(state);
            if worked {
                last_work = t;
            }
        }
        info!("reactor stopping: {} connections", self.conns.len());
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            state.queue_closed(c.conn.queue());
        }
        Ok(())
    }

    fn accept(&mut self, idx: usize, state: &mut TargetState) -> io::Result<()> {
        let Some(l) = self.listeners.get(idx) else {
            return Ok(());
        };
        loop {
            match l.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let token = self.next_conn;
                    self.next_conn += 1;
                    self.poll.registry().register(
                        &mut stream,
                        Token(token),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    debug!("connection {token} from {peer}");
                    let local = stream.local_addr().ok();
                    state.connection_opened();
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            conn: Connection::new(peer, local, self.limits),
                            readable: true,
                            dead: false,
                        },
                    );
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
    fn service(&mut self, state: &mut TargetState, now: u64) -> bool {
        let mut worked = false;
        for c in self.conns.values_mut() {
            if c.dead {
                continue;
            }
            if c.readable && !c.conn.rx_blocked() {
                match c
                    .conn
                    .read_from(&mut c.stream, &mut self.scratch, READ_BUDGET, state, now)
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
        if state.has_async_completions() {
            for ac in state.take_async_completions() {
                let admin = self.conns.values_mut().find(|c| {
                    !c.dead && c.conn.queue().qid == 0 && c.conn.queue().cntlid == Some(ac.cntlid)
                });
                match admin {
                    Some(c) => c.conn.push_async(ac.cqe),
                    None => debug!("no admin queue for controller {}", ac.cntlid),
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
            if c.conn.status() == ConnStatus::Closing && c.conn.tx_pending() == 0 {
                c.dead = true;
            }
        }
        for c in self.conns.values_mut() {
            if c.conn.status() == ConnStatus::Closing && c.conn.tx_pending() == 0 {
                c.dead = true;
            }
        }
        worked
    }

    /// Closes dead connections; closing an admin queue closes its controller's I/O queues.
    fn reap(&mut self, state: &mut TargetState) {
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
                if q.qid == 0 {
                    if let Some(id) = q.cntlid {
                        dead_ctrls.push(id);
                    }
                }
                debug!("closing connection {t} ({}), qid {}", c.conn.peer, q.qid);
                state.queue_closed(q);
                let _ = self.poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        if !dead_ctrls.is_empty() {
            for c in self.conns.values_mut() {
                if c.conn
                    .queue()
                    .cntlid
                    .is_some_and(|id| dead_ctrls.contains(&id))
                {
                    c.dead = true;
                }
            }
        }
    }
}

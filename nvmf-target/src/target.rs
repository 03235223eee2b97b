//! The target as a whole: configuration, subsystems and namespaces, listeners, and the
//! reactor that serves them. This is what the daemon calls.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use nvmf_target::{Target, TargetConfig, SubsystemConfig};
//! use nvmf_target::bdev::malloc::Malloc;
//!
//! static STOP: AtomicBool = AtomicBool::new(false); // set from SIGINT/SIGTERM
//! let nqn = "nqn.2016-06.io.spdk:cnode1";
//! let mut t = Target::new(TargetConfig::default());
//! t.add_subsystem(SubsystemConfig::new(nqn).serial("SN0001"))?;
//! t.add_namespace(nqn, 1, Box::new(Malloc::new("m0", 131072, 512, [7; 16])?))?;
//! t.listen("127.0.0.1:4420")?;
//! let state = t.run_until(&STOP)?; // blocks; flushes every namespace before returning
//! # drop(state);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Or on a thread of its own, with a handle for management while it runs:
//! [`Target::spawn`] → [`TargetHandle::with_state`] / [`TargetHandle::listen`] /
//! [`TargetHandle::stop`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{info, warn};

use crate::bdev::Bdev;
use crate::ctrlr::{CtrlrConfig, CtrlrError, SubsystemConfig, TargetState};
use crate::transport::mesh::Link;
use crate::transport::reactor::{Msg, PollMode, Reactor, ReactorInfo};
use crate::transport::tcp::ConnLimits;

/// Target-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Cores to run reactors on (bit n = core n), SPDK's `-m`: one reactor per bit. The
    /// reactor of the lowest core owns the controllers and bdevs; connections are spread
    /// over all reactors in turn.
    pub cpumask: u64,
    /// Pin each reactor thread to its core (the daemon does; tests that run many targets
    /// side by side do not).
    pub pin_reactors: bool,
    /// Busy polling or adaptive (default).
    pub poll_mode: PollMode,
    /// Controller limits and identity.
    pub ctrlr: CtrlrConfig,
    /// MAXH2CDATA announced in ICResp (≥ 4096, multiple of 4).
    pub maxh2cdata: u32,
    /// Reactor timer period in milliseconds: keep-alive checks, bdev polls (periodic
    /// commit), retries of parked commands; an idle adaptive reactor sleeps at most this
    /// long. Nothing else waits for it: messages and sockets wake a sleeping reactor.
    pub tick_ms: u64,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            cpumask: 0x1,
            pin_reactors: false,
            poll_mode: PollMode::Adaptive,
            ctrlr: CtrlrConfig::default(),
            maxh2cdata: 128 * 1024,
            tick_ms: crate::transport::reactor::TICK_MS,
        }
    }
}

impl TargetConfig {
    /// Checks the settings: MAXH2CDATA, and a cpumask naming cores this process may run
    /// on (when reactors are pinned).
    pub fn check(&self) -> Result<(), TargetError> {
        let m = self.maxh2cdata;
        if m < 4096 || !m.is_multiple_of(4) {
            return Err(TargetError::Config(format!(
                "MAXH2CDATA {m} must be >= 4096 and a multiple of 4"
            )));
        }
        if self.cpumask == 0 {
            return Err(TargetError::Config("empty cpumask".into()));
        }
        if self.pin_reactors {
            // As SPDK refuses a mask naming cores it may not run on: reactors sharing a
            // core would take turns, and a busy one would starve the other.
            if let Ok(allowed) = rustix::thread::sched_getaffinity(None) {
                let missing: Vec<usize> = self
                    .cores()
                    .into_iter()
                    .filter(|&c| c >= rustix::thread::CpuSet::MAX_CPU || !allowed.is_set(c))
                    .collect();
                if !missing.is_empty() {
                    let usable: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
                        .filter(|&c| allowed.is_set(c))
                        .collect();
                    return Err(TargetError::Config(format!(
                        "cpumask {:#x} names cores {missing:?} this process may not use \
                         (usable cores: {usable:?})",
                        self.cpumask
                    )));
                }
            }
        }
        Ok(())
    }

    /// The cores of the mask, lowest first: one reactor each.
    pub fn cores(&self) -> Vec<usize> {
        (0..64)
            .filter(|c| self.cpumask & (1u64 << c) != 0)
            .collect()
    }
}

/// Errors of the target API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error(transparent)]
    Ctrlr(#[from] CtrlrError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the reactor has stopped")]
    Stopped,
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TargetError {
    let context = context.into();
    move |source| TargetError::Io { context, source }
}

/// A target being configured; [`Target::run_until`] or [`Target::spawn`] serves it.
pub struct Target {
    config: TargetConfig,
    state: TargetState,
    listeners: Vec<std::net::TcpListener>,
}

impl Target {
    pub fn new(config: TargetConfig) -> Self {
        let state = TargetState::new(config.ctrlr.clone());
        Self {
            config,
            state,
            listeners: Vec::new(),
        }
    }

    /// Adds an NVM subsystem.
    pub fn add_subsystem(&mut self, config: SubsystemConfig) -> Result<&mut Self, TargetError> {
        self.state.add_subsystem(config)?;
        Ok(self)
    }

    /// Adds namespace `nsid` of subsystem `nqn`, backed by `bdev`.
    pub fn add_namespace(
        &mut self,
        nqn: &str,
        nsid: u32,
        bdev: Box<dyn Bdev>,
    ) -> Result<&mut Self, TargetError> {
        self.state.add_namespace(nqn, nsid, bdev)?;
        Ok(self)
    }

    /// Binds a TCP listener now (port 0 picks a free port) and returns its address. Every
    /// listener serves the discovery subsystem and every NVM subsystem.
    pub fn listen(&mut self, addr: impl ToSocketAddrs) -> Result<SocketAddr, TargetError> {
        let l = std::net::TcpListener::bind(addr).map_err(io_err("binding listener"))?;
        let local = l.local_addr().map_err(io_err("listener address"))?;
        self.state.add_listener(local);
        self.listeners.push(l);
        Ok(local)
    }

    /// The controller state (subsystems, namespaces, hosts) for further configuration.
    pub fn state_mut(&mut self) -> &mut TargetState {
        &mut self.state
    }

    fn check(&self) -> Result<(), TargetError> {
        self.config.check()
    }

    /// The cores of the mask, lowest first: one reactor each.
    fn cores(&self) -> Vec<usize> {
        self.config.cores()
    }

    /// Builds one reactor per core, linked to each other; the first gets the listeners.
    fn reactors(&mut self) -> Result<Vec<ReactorSlot>, TargetError> {
        self.check()?;
        let limits = ConnLimits {
            maxh2cdata: self.config.maxh2cdata,
            max_icd: self.config.ctrlr.in_capsule_data_size,
        };
        let mut slots = Vec::new();
        let mut links = Vec::new();
        for (idx, core) in self.cores().into_iter().enumerate() {
            let mut r =
                Reactor::new(idx, self.config.poll_mode, limits).map_err(io_err("epoll"))?;
            r.set_tick_ms(self.config.tick_ms);
            let (tx, rx) = mpsc::channel();
            links.push(r.link(tx, core).map_err(io_err("waker"))?);
            slots.push(ReactorSlot {
                reactor: r,
                rx,
                core,
            });
        }
        for s in &mut slots {
            s.reactor.set_links(links.clone());
        }
        self.state.set_poll_groups(slots.len());
        if let Some(owner) = slots.first_mut() {
            for l in self.listeners.drain(..) {
                owner.reactor.add_listener(l).map_err(io_err("listener"))?;
            }
        }
        if slots.len() > 1 {
            info!(
                "{} reactors on cores {:?}; the one on core {} owns the controllers and bdevs",
                slots.len(),
                slots.iter().map(|s| s.core).collect::<Vec<_>>(),
                slots.first().map_or(0, |s| s.core)
            );
        }
        Ok(slots)
    }

    /// Builds the reactors and starts all but the first (the owner) on threads of their
    /// own; returns the owner, not yet running.
    fn start_reactors(&mut self) -> Result<(ReactorSlot, Others), TargetError> {
        let mut slots = self.reactors()?.into_iter();
        let owner = slots
            .next()
            .ok_or_else(|| TargetError::Config("empty cpumask".into()))?;
        let links = owner.reactor.links_clone();
        let stop = Arc::new(AtomicBool::new(false));
        let pin = self.config.pin_reactors;
        let mut threads = Vec::new();
        for mut slot in slots {
            let stop = Arc::clone(&stop);
            let t = std::thread::Builder::new()
                .name(format!("reactor_{}", slot.core))
                .spawn(move || {
                    if pin {
                        pin_to_core(slot.core);
                    }
                    let r = slot.reactor.run(None, &stop, &slot.rx);
                    if let Err(e) = &r {
                        warn!("reactor on core {}: {e}", slot.core);
                    }
                    r
                })
                .map_err(io_err("spawning a reactor"))?;
            threads.push(t);
        }
        Ok((
            owner,
            Others {
                stop,
                links,
                threads,
            },
        ))
    }

    /// Serves on the calling thread (the owner reactor; the others on threads of their
    /// own) until `stop` becomes true (checked at least every 50 ms), then closes every
    /// connection, flushes every namespace (final commit) and returns the state with its
    /// bdevs.
    pub fn run_until(mut self, stop: &AtomicBool) -> Result<TargetState, TargetError> {
        let (mut owner, others) = self.start_reactors()?;
        let r = Self::serve(&mut owner.reactor, &mut self.state, stop, &owner.rx);
        others.stop();
        r?;
        Ok(self.state)
    }

    fn serve(
        reactor: &mut Reactor,
        state: &mut TargetState,
        stop: &AtomicBool,
        rx: &Receiver<Msg>,
    ) -> Result<(), TargetError> {
        info!("target running");
        let r = reactor
            .run(Some(state), stop, rx)
            .map_err(io_err("reactor"));
        if let Err(e) = state.flush_all() {
            warn!("final flush: {e}");
        }
        info!("target stopped");
        r
    }

    /// Serves on new threads (one per reactor); the handle manages and stops them.
    pub fn spawn(mut self) -> Result<TargetHandle, TargetError> {
        let (mut owner, others) = self.start_reactors()?;
        let links = others.links.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let pin = self.config.pin_reactors;
        let mut state = self.state;
        let thread = std::thread::Builder::new()
            .name(format!("reactor_{}", owner.core))
            .spawn(move || {
                if pin {
                    pin_to_core(owner.core);
                }
                let r = Self::serve(&mut owner.reactor, &mut state, &stop2, &owner.rx);
                others.stop();
                r?;
                Ok(state)
            })
            .map_err(io_err("spawning the reactor"))?;
        Ok(TargetHandle {
            links,
            poll_mode: self.config.poll_mode,
            stop,
            thread: Some(thread),
        })
    }
}

/// The reactors after the first, running on threads of their own.
struct Others {
    stop: Arc<AtomicBool>,
    /// Every reactor's link (the owner's first).
    links: Vec<Link>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Others {
    /// Stops them (once the owner has closed its connections) and waits for them.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.links.iter().skip(1) {
            l.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A reactor before it runs, with its queue and core.
struct ReactorSlot {
    reactor: Reactor,
    rx: Receiver<Msg>,
    core: usize,
}

/// Pins the calling thread to `core`; a core the process may not use (a container's
/// cpuset, a mask beyond the machine) leaves it unpinned, with a warning.
fn pin_to_core(core: usize) {
    let mut set = rustix::thread::CpuSet::new();
    if core >= rustix::thread::CpuSet::MAX_CPU {
        warn!("core {core} is beyond the CPU set size: reactor not pinned");
        return;
    }
    set.set(core);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => info!("reactor pinned to core {core}"),
        Err(e) => warn!("pinning the reactor to core {core}: {e}; running unpinned"),
    }
}

/// A running target (from [`Target::spawn`]).
pub struct TargetHandle {
    /// Every reactor; the first owns the controller state.
    links: Vec<Link>,
    poll_mode: PollMode,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<TargetState, TargetError>>>,
}

impl TargetHandle {
    fn send(&self, m: Msg) -> Result<(), TargetError> {
        let owner = self.links.first().ok_or(TargetError::Stopped)?;
        owner.tx.send(m).map_err(|_| TargetError::Stopped)?;
        owner.wake();
        Ok(())
    }

    fn wake_owner(&self) {
        if let Some(l) = self.links.first() {
            l.wake();
        }
    }

    /// Runs `f` on the reactor, between polls, and returns its result: namespace and host
    /// management (hosts see namespace changes through AENs), inspection, statistics.
    pub fn with_state<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut TargetState) -> R + Send + 'static,
    ) -> Result<R, TargetError> {
        let (rtx, rrx) = mpsc::channel();
        self.send(Msg::Call(Box::new(move |s| {
            let _ = rtx.send(f(s));
        })))?;
        rrx.recv().map_err(|_| TargetError::Stopped)
    }

    /// Every reactor: its core, thread, busy and idle time (read without stopping them).
    pub fn reactors(&self) -> Vec<ReactorInfo> {
        self.links
            .iter()
            .enumerate()
            .map(|(i, l)| l.stats.info(i, l.core))
            .collect()
    }

    /// How the reactors wait for work.
    pub fn poll_mode(&self) -> PollMode {
        self.poll_mode
    }

    /// Binds and starts serving another listen address.
    pub fn listen(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr, TargetError> {
        let l = std::net::TcpListener::bind(addr).map_err(io_err("binding listener"))?;
        let local = l.local_addr().map_err(io_err("listener address"))?;
        self.with_state(move |s| s.add_listener(local))?;
        self.send(Msg::Listen(l))?;
        Ok(local)
    }

    /// Stops the reactor (connections closed, namespaces flushed) and returns the state.
    pub fn stop(mut self) -> Result<TargetState, TargetError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wake_owner();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(TargetError::Stopped),
        }
    }
}

impl Drop for TargetHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake_owner();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod pin_tests {
    use super::pin_to_core;

    #[test]
    fn pinning_restricts_the_thread_to_its_core() {
        let t = std::thread::spawn(|| {
            let before = rustix::thread::sched_getaffinity(None).expect("affinity");
            let Some(core) = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| before.is_set(c))
            else {
                panic!("no usable core");
            };
            pin_to_core(core);
            let after = rustix::thread::sched_getaffinity(None).expect("affinity");
            (core, after.count())
        });
        let (core, n) = t.join().expect("thread");
        assert_eq!(n, 1, "pinned to core {core} only");
    }
}

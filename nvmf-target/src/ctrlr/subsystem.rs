//! Subsystems, namespaces and listeners: the configuration the controllers serve.
//!
//! Invariants:
//! * NSIDs are in `1..=max_namespaces`; each NSID maps to exactly one bdev;
//! * a namespace's NGUID and UUID are fixed when it is added (derived from the bdev's UUID)
//!   and never change while it exists: the Linux host drops a namespace whose identifiers
//!   change across a reconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::bdev::Bdev;

/// How a subsystem is created (the daemon and the RPCs fill this in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsystemConfig {
    /// The subsystem NQN (`nqn.2016-06.io.spdk:cnode1` style).
    pub nqn: String,
    /// Serial number (Identify Controller SN, at most 20 ASCII characters).
    pub serial: String,
    /// Model number (Identify Controller MN, at most 40 ASCII characters).
    pub model: String,
    /// Accept any host NQN.
    pub allow_any_host: bool,
    /// Host NQNs allowed when `allow_any_host` is false.
    pub hosts: Vec<String>,
    /// Highest NSID (Identify Controller NN).
    pub max_namespaces: u32,
}

impl SubsystemConfig {
    /// A subsystem that accepts any host, with a default serial and model.
    pub fn new(nqn: &str) -> Self {
        Self {
            nqn: nqn.to_owned(),
            serial: "RNVMF0000000000001".to_owned(),
            model: "Rust NVMe-oF thin target".to_owned(),
            allow_any_host: true,
            hosts: Vec::new(),
            max_namespaces: 1024,
        }
    }

    pub fn serial(mut self, serial: &str) -> Self {
        serial.clone_into(&mut self.serial);
        self
    }

    pub fn model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.model);
        self
    }

    pub fn allow_any_host(mut self, allow: bool) -> Self {
        self.allow_any_host = allow;
        self
    }

    /// Adds an allowed host NQN (only consulted when `allow_any_host` is false).
    pub fn host(mut self, hostnqn: &str) -> Self {
        self.hosts.push(hostnqn.to_owned());
        self
    }
}

/// A namespace: an NSID bound to a bdev.
pub struct Namespace {
    pub nsid: u32,
    pub bdev: Box<dyn Bdev>,
    pub nguid: [u8; 16],
    pub uuid: [u8; 16],
    /// log2 of the block size.
    pub lbads: u8,
}

impl core::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("bdev", &self.bdev.name())
            .field("num_blocks", &self.bdev.num_blocks())
            .field("block_size", &self.bdev.block_size())
            .finish()
    }
}

impl Namespace {
    pub fn new(nsid: u32, bdev: Box<dyn Bdev>) -> Self {
        let uuid = bdev.uuid();
        // NGUID: the UUID bytes with the NSID folded into the last four, so two namespaces
        // over bdevs that (wrongly) share a UUID still get distinct NGUIDs.
        let mut nguid = uuid;
        for (b, n) in nguid[12..].iter_mut().zip(nsid.to_be_bytes()) {
            *b ^= n;
        }
        let lbads = bdev.block_size().trailing_zeros() as u8;
        Self {
            nsid,
            bdev,
            nguid,
            uuid,
            lbads,
        }
    }

    /// Size in logical blocks (NSZE).
    pub fn nsze(&self) -> u64 {
        self.bdev.num_blocks()
    }
}

/// An NVM subsystem.
#[derive(Debug)]
pub struct Subsystem {
    pub config: SubsystemConfig,
    pub hosts: BTreeSet<String>,
    pub namespaces: BTreeMap<u32, Namespace>,
}

impl Subsystem {
    pub fn new(config: SubsystemConfig) -> Self {
        Self {
            hosts: config.hosts.iter().cloned().collect(),
            config,
            namespaces: BTreeMap::new(),
        }
    }

    pub fn nqn(&self) -> &str {
        &self.config.nqn
    }

    /// Whether `hostnqn` may connect (spec §11.1).
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.config.allow_any_host || self.hosts.contains(hostnqn)
    }
}

/// A TCP listen address announced in the discovery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// PORTID in discovery log entries.
    pub portid: u16,
}

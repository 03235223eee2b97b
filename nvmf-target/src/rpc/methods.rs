//! The methods: app, bdev (malloc, aio), lvol (on thin pools) and NVMe-oF, with SPDK's
//! names, parameters, result shapes and errors (spec §3–§6).
//!
//! The registry owns every bdev that is not exported. Exporting a bdev as a namespace moves
//! it into the running target (SPDK's exclusive claim); removing the namespace or the
//! subsystem moves it back. An lvstore is a dm-thin pool; its lvols are thin devices whose
//! names, UUIDs, sizes, parent links and read-only flags live in the side table here.
//!
//! An lvstore is self-describing (`bdev::lvs`): its base bdev holds two label copies with
//! the side table, then the dm-thin metadata region, then the data clusters. Creating a
//! base bdev examines it, as SPDK does, so an lvstore comes back with its bdev.
//!
//! Deviations from SPDK (documented in `docs/rpc.md`): every listener serves every
//! subsystem; removing a host does not disconnect its live controllers.
//!
//! Statistics: every malloc/aio bdev and exported lvol is a [`StatBdev`]; its counters are
//! read where the bdev lives (registry, or the reactor through `with_state`), and an lvol's
//! counters are kept in its row while it is not exported.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log::{info, warn};
use serde_json::{json, Value};

use super::config;
use super::params::{format_uuid, random_uuid, Params};
use super::server::Handler;
use super::{Errno, RpcError};
use crate::bdev::file::FileBdev;
use crate::bdev::lvs::{self, Label, LabelError, Layout};
use crate::bdev::malloc::Malloc;
use crate::bdev::stat::{now_ticks, ResetMode, TICK_RATE};
use crate::bdev::thin::{PoolDevices, ThinPool, ThinVolume, DEFAULT_CACHE_BLOCKS};
use crate::bdev::{Bdev, BdevError, IoStat, StatBdev, ThinInfo};
use crate::ctrlr::{ControllerInfo, SubsystemConfig};
use crate::TargetHandle;

#[path = "thin_methods.rs"]
mod thin_methods;

/// Product name and version in `spdk_get_version` (SPDK's shape, our identity).
pub const PRODUCT: &str = "rust-thin-nvmf";
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
const MAX_NAME: usize = 63;
const MAX_THIN_DEV_ID: u64 = (1 << 24) - 1;

/// Every method served (for `rpc_get_methods`).
pub const METHODS: &[&str] = &[
    "spdk_get_version",
    "rpc_get_methods",
    "framework_wait_init",
    "spdk_kill_instance",
    "bdev_get_bdevs",
    "bdev_malloc_create",
    "bdev_malloc_delete",
    "bdev_aio_create",
    "bdev_aio_delete",
    "bdev_lvol_create_lvstore",
    "bdev_lvol_get_lvstores",
    "bdev_lvol_delete_lvstore",
    "bdev_lvol_create",
    "bdev_lvol_snapshot",
    "bdev_lvol_clone",
    "bdev_lvol_set_read_only",
    "bdev_lvol_resize",
    "bdev_lvol_delete",
    "bdev_lvol_get_lvols",
    "nvmf_create_transport",
    "nvmf_get_transports",
    "nvmf_create_subsystem",
    "nvmf_delete_subsystem",
    "nvmf_get_subsystems",
    "nvmf_subsystem_add_listener",
    "nvmf_subsystem_add_ns",
    "nvmf_subsystem_remove_ns",
    "nvmf_subsystem_add_host",
    "nvmf_subsystem_remove_host",
    "nvmf_subsystem_allow_any_host",
    "bdev_lvol_rename",
    "bdev_lvol_rename_lvstore",
    "bdev_lvol_grow_lvstore",
    "bdev_lvol_inflate",
    "bdev_lvol_decouple_parent",
    "nvmf_subsystem_remove_listener",
    "nvmf_subsystem_get_listeners",
    "framework_get_subsystems",
    "framework_get_config",
    "bdev_wait_for_examine",
    "bdev_get_iostat",
    "nvmf_subsystem_get_controllers",
    "nvmf_subsystem_get_qpairs",
    "nvmf_get_stats",
    "framework_get_reactors",
    "framework_get_reconcile_report",
    // dm-thin extras (`thin_methods`, the `spdk-rpc --plugin` module).
    "thin_pool_create",
    "thin_pool_status",
    "thin_pool_reserve_metadata_snap",
    "thin_pool_release_metadata_snap",
    "thin_pool_set_transaction_id",
    "thin_pool_set_low_water_mark",
    "thin_delta",
];

/// User and system CPU time of thread `tid` of this process, in clock ticks (fields 14
/// and 15 of `/proc/self/task/TID/stat`).
fn thread_cpu_ticks(tid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace().skip(11);
    let usr = f.next()?.parse().ok()?;
    let sys = f.next()?.parse().ok()?;
    Some((usr, sys))
}

/// The name of poll group (reactor) `i`, SPDK's `nvmf_tgt_poll_group_NNN`.
fn poll_group_name(i: impl std::fmt::Display) -> String {
    format!("nvmf_tgt_poll_group_{i:0>3}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BaseKind {
    Malloc,
    Aio {
        filename: String,
        block_size_given: bool,
        readonly: bool,
        fallocate: bool,
        nowait: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    None,
    Lvstore,
    Nvmf,
}

/// A malloc or aio bdev.
struct Base {
    name: String,
    uuid: [u8; 16],
    block_size: u32,
    num_blocks: u64,
    kind: BaseKind,
    /// `None` while exported (the target holds it).
    dev: Option<Box<dyn Bdev>>,
    claim: Claim,
}

struct Lvol {
    uuid: [u8; 16],
    name: String,
    dev_id: u64,
    size_bytes: u64,
    thin: bool,
    read_only: Arc<AtomicBool>,
    /// Parent snapshot (an lvol of the same lvstore).
    parent: Option<[u8; 16]>,
    /// Created as a snapshot or used as a clone source.
    snapshot: bool,
    exported: bool,
    /// I/O counters while not exported (an export carries them in its [`StatBdev`]).
    stat: IoStat,
}

struct Lvstore {
    uuid: [u8; 16],
    name: String,
    base: String,
    pool: ThinPool,
    cluster_bytes: u64,
    block_size: u32,
    lvols: Vec<Lvol>,
    layout: Layout,
    /// Sequence number and side table of the newest label written.
    label_seq: u64,
    label_table: Vec<u8>,
    /// A pool on separate metadata and data bdevs (`thin_pool_create`): no label.
    two_dev: Option<thin_methods::TwoDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenAddr {
    adrfam: String,
    traddr: String,
    trsvcid: String,
}

struct Sub {
    nqn: String,
    serial: String,
    model: String,
    max_namespaces: u32,
    allow_any_host: bool,
    hosts: Vec<String>,
    listeners: Vec<ListenAddr>,
    /// NSID → (bdev primary name, bdev UUID).
    namespaces: BTreeMap<u32, (String, [u8; 16])>,
    min_cntlid: u16,
    max_cntlid: u16,
    dmrsl: u32,
    wzsl: u8,
}

#[derive(Clone, Copy)]
enum Found {
    Base(usize),
    Lvol(usize, usize),
}

struct State {
    target: Option<TargetHandle>,
    bases: Vec<Base>,
    lvstores: Vec<Lvstore>,
    next_malloc: u32,
    transport: Option<Value>,
    subs: Vec<Sub>,
    bound: Vec<SocketAddr>,
    /// Side-table rows dropped at load (no thin device), for the reconcile report.
    dropped: Vec<(String, config::LvolRow)>,
}

/// The RPC method registry and dispatcher.
pub struct Rpc {
    state: Mutex<State>,
    stop: Arc<AtomicBool>,
    /// Where the configuration is persisted after changes (none until enabled).
    persist: Mutex<Option<config::Persist>>,
    /// The start-up reconcile report (`framework_get_reconcile_report`).
    report: Mutex<config::Report>,
}

/// A thin volume as an lvol bdev: read-only lvols refuse writes.
struct LvolBdev {
    vol: ThinVolume,
    read_only: Arc<AtomicBool>,
}

impl LvolBdev {
    fn check(&self) -> Result<(), BdevError> {
        if self.read_only.load(Ordering::Relaxed) {
            Err(BdevError::ReadOnly)
        } else {
            Ok(())
        }
    }
}

impl Bdev for LvolBdev {
    fn name(&self) -> &str {
        self.vol.name()
    }
    fn block_size(&self) -> u32 {
        self.vol.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.vol.num_blocks()
    }
    fn uuid(&self) -> [u8; 16] {
        self.vol.uuid()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        self.vol.read(lba, buf)
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        self.check()?;
        self.vol.write(lba, data, fua)
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        self.vol.flush()
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.check()?;
        self.vol.write_zeroes(lba, count)
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.check()?;
        self.vol.deallocate(lba, count)
    }
    fn thin_info(&self) -> Option<ThinInfo> {
        self.vol.thin_info()
    }
    fn poll(&mut self, now_ms: u64) {
        self.vol.poll(now_ms)
    }
}

fn name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NAME
}

fn bdev_decode() -> RpcError {
    RpcError::decode_failed()
}

fn nvmf_decode() -> RpcError {
    RpcError::invalid_params()
}

fn sub_not_found(nqn: &str) -> RpcError {
    RpcError::new(-32602, format!("Subsystem with NQN '{nqn}' not found"))
}

fn lvstore_io(e: &BdevError) -> RpcError {
    match e {
        BdevError::NoSpace => RpcError::params_errno(Errno::NoSpc),
        _ => RpcError::new(-32602, e.to_string()),
    }
}

fn nguid_hex(uuid: &[u8; 16], nsid: u32) -> String {
    // The NGUID our controller presents (see `ctrlr::subsystem::Namespace::new`).
    let mut g = *uuid;
    for (b, n) in g[12..].iter_mut().zip(nsid.to_be_bytes()) {
        *b ^= n;
    }
    g.iter().map(|b| format!("{b:02X}")).collect()
}

/// dm-thin metadata blocks for a pool of `nr_blocks` data blocks: the estimate
/// (1 + 2·blocks/252 + thins) with room for 1000 thin devices, at least 4 MiB.
fn metadata_blocks(nr_blocks: u64) -> u64 {
    (1 + 2 * nr_blocks / 252 + 1000).max(1024) * 2
}

const TABLE_MAGIC: &str = "rust-thin-nvmf lvstore side table v1";

fn label_err(e: &LabelError) -> String {
    e.to_string()
}

impl State {
    fn find(&self, name: &str) -> Option<Found> {
        for (i, b) in self.bases.iter().enumerate() {
            if b.name == name || format_uuid(&b.uuid) == name {
                return Some(Found::Base(i));
            }
        }
        for (i, s) in self.lvstores.iter().enumerate() {
            for (j, l) in s.lvols.iter().enumerate() {
                if format_uuid(&l.uuid) == name
                    || name
                        .strip_prefix(s.name.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        == Some(l.name.as_str())
                {
                    return Some(Found::Lvol(i, j));
                }
            }
        }
        None
    }

    fn target(&self) -> Result<&TargetHandle, RpcError> {
        self.target.as_ref().ok_or_else(RpcError::internal)
    }

    fn lvs_select(
        &self,
        uuid: Option<String>,
        name: Option<String>,
    ) -> Result<Option<usize>, RpcError> {
        let i = match (uuid, name) {
            (Some(u), None) => self
                .lvstores
                .iter()
                .position(|s| format_uuid(&s.uuid) == u.to_ascii_lowercase()),
            (None, Some(n)) => self.lvstores.iter().position(|s| s.name == n),
            _ => return Err(RpcError::errno(Errno::Inval)),
        };
        i.map(Some).ok_or_else(|| RpcError::errno(Errno::NoDev))
    }

    fn find_lvol(&self, name: &str) -> Result<(usize, usize), RpcError> {
        match self.find(name) {
            Some(Found::Lvol(i, j)) => Ok((i, j)),
            _ => Err(RpcError::errno(Errno::NoDev)),
        }
    }

    fn next_dev_id(s: &Lvstore) -> Result<u64, RpcError> {
        let id = s.lvols.iter().map(|l| l.dev_id + 1).max().unwrap_or(1);
        if id > MAX_THIN_DEV_ID {
            return Err(RpcError::params_errno(Errno::NoSpc));
        }
        Ok(id)
    }

    fn lvol_volume(s: &Lvstore, l: &Lvol) -> Result<LvolBdev, BdevError> {
        let vol = s.pool.volume(
            &format_uuid(&l.uuid),
            l.dev_id,
            l.size_bytes,
            s.block_size,
            l.uuid,
        )?;
        Ok(LvolBdev {
            vol,
            read_only: l.read_only.clone(),
        })
    }

    /// Removes every namespace on bdev `primary` from the target (SPDK's hot-remove).
    fn unexport(&mut self, primary: &str) -> Result<Vec<Box<dyn Bdev>>, RpcError> {
        let mut out = Vec::new();
        let targets: Vec<(String, u32)> = self
            .subs
            .iter()
            .flat_map(|s| {
                s.namespaces
                    .iter()
                    .filter(|(_, (b, _))| b == primary)
                    .map(|(n, _)| (s.nqn.clone(), *n))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (nqn, nsid) in targets {
            let n2 = nqn.clone();
            let b = self
                .target()?
                .with_state(move |st| st.remove_namespace(&n2, nsid))
                .map_err(|_| RpcError::internal())?
                .map_err(|_| RpcError::internal())?;
            out.push(b);
            if let Some(s) = self.subs.iter_mut().find(|s| s.nqn == nqn) {
                s.namespaces.remove(&nsid);
            }
        }
        Ok(out)
    }

    /// Gives bdevs that come back from the target to their registry entries.
    fn give_back(&mut self, bdevs: Vec<Box<dyn Bdev>>) {
        for b in bdevs {
            let name = b.name().to_owned();
            if let Some(base) = self.bases.iter_mut().find(|x| x.name == name) {
                base.dev = Some(b);
                base.claim = Claim::None;
                continue;
            }
            for s in &mut self.lvstores {
                if let Some(l) = s.lvols.iter_mut().find(|l| format_uuid(&l.uuid) == name) {
                    l.exported = false;
                    l.stat = b.io_stat().copied().unwrap_or_default();
                }
            }
        }
    }

    // ----- app -----

    fn spdk_get_version(&self, p: Option<Value>) -> Result<Value, RpcError> {
        if p.is_some() {
            return Err(RpcError::new(
                -32602,
                "spdk_get_version method requires no parameters",
            ));
        }
        let v = env!("CARGO_PKG_VERSION");
        let mut it = v.split('.').map(|x| x.parse::<u64>().unwrap_or(0));
        let (major, minor, patch) = (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        );
        let suffix = "";
        let mut version = format!("{PRODUCT} v{major}.{minor:02}");
        if patch != 0 {
            version.push_str(&format!(".{patch}"));
        }
        Ok(json!({"version": version,
                  "fields": {"major": major, "minor": minor, "patch": patch, "suffix": suffix}}))
    }

    fn rpc_get_methods(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, RpcError::invalid_params())?;
        p.bool("current")?;
        p.bool("include_aliases")?;
        p.finish()?;
        Ok(json!(METHODS))
    }

    fn spdk_kill_instance(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, RpcError::invalid_params())?;
        let sig = p.str("sig_name")?;
        let sig = p.req(sig)?;
        p.finish()?;
        if !matches!(
            sig.as_str(),
            "SIGINT" | "SIGTERM" | "SIGQUIT" | "SIGHUP" | "SIGKILL" | "SIGUSR1"
        ) {
            return Err(RpcError::invalid_params());
        }
        info!("spdk_kill_instance {sig}: shutting down");
        Ok(json!(true))
    }

    // ----- bdev -----

    fn bdev_json(&self, f: Found) -> Value {
        let all_io = |rw: bool, unmap: bool| {
            json!({"read": true, "write": rw, "unmap": unmap, "flush": true, "reset": true,
               "nvme_admin": false, "nvme_io": false, "nvme_io_md": false,
               "write_zeroes": rw, "zcopy": false, "get_zone_info": false,
               "zone_management": false, "zone_append": false, "compare": false,
               "compare_and_write": false, "abort": false, "seek_hole": false,
               "seek_data": false, "copy": false, "nvme_iov_md": false, "nvme_nssr": false,
               "write_uncorrectable": false})
        };
        let limits = json!({"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                            "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0});
        match f {
            Found::Base(i) => {
                let b = &self.bases[i];
                let (product, driver, ro) = match &b.kind {
                    BaseKind::Malloc => ("Malloc disk", json!({}), false),
                    BaseKind::Aio {
                        filename,
                        block_size_given,
                        readonly,
                        fallocate,
                        nowait,
                    } => (
                        "AIO disk",
                        json!({"aio": {"filename": filename,
                                       "block_size_override": block_size_given,
                                       "readonly": readonly, "fallocate": fallocate,
                                       "nowait": nowait}}),
                        *readonly,
                    ),
                };
                let mut v = json!({
                    "name": b.name, "aliases": [format_uuid(&b.uuid)],
                    "product_name": product, "block_size": b.block_size,
                    "num_blocks": b.num_blocks,
                    "preferred_write_alignment": 0, "preferred_write_granularity": 0,
                    "optimal_write_size": 0, "preferred_unmap_alignment": 0,
                    "preferred_unmap_granularity": 0,
                    "uuid": format_uuid(&b.uuid), "numa_id": -1,
                    "assigned_rate_limits": limits,
                    "claimed": b.claim != Claim::None,
                });
                if b.claim != Claim::None {
                    v["claim_type"] = json!("exclusive_write");
                }
                v["zoned"] = json!(false);
                v["supported_io_types"] = all_io(!ro, !ro);
                v["driver_specific"] = driver;
                v
            }
            Found::Lvol(i, j) => {
                let s = &self.lvstores[i];
                let l = &s.lvols[j];
                let ro = l.read_only.load(Ordering::Relaxed);
                let mapped = mapped_blocks(s, l);
                let mut io = all_io(!ro, !ro);
                io["flush"] = json!(false);
                io["seek_hole"] = json!(true);
                io["seek_data"] = json!(true);
                let mut lv = json!({
                    "lvol_store_uuid": format_uuid(&s.uuid), "base_bdev": s.base,
                    "thin_provision": l.thin, "num_allocated_clusters": mapped,
                    "snapshot": is_snapshot(s, l), "clone": l.parent.is_some(),
                });
                if let Some(p) = l.parent.and_then(|p| s.lvols.iter().find(|x| x.uuid == p)) {
                    lv["base_snapshot"] = json!(p.name);
                }
                let clones: Vec<&str> = s
                    .lvols
                    .iter()
                    .filter(|c| c.parent == Some(l.uuid))
                    .map(|c| c.name.as_str())
                    .collect();
                if !clones.is_empty() {
                    lv["clones"] = json!(clones);
                }
                lv["esnap_clone"] = json!(false);
                let mut v = json!({
                    "name": format_uuid(&l.uuid), "aliases": [format!("{}/{}", s.name, l.name)],
                    "product_name": "Logical Volume", "block_size": s.block_size,
                    "num_blocks": l.size_bytes / u64::from(s.block_size),
                    "preferred_write_alignment": 0, "preferred_write_granularity": 0,
                    "optimal_write_size": 0, "preferred_unmap_alignment": 0,
                    "preferred_unmap_granularity": 0,
                    "uuid": format_uuid(&l.uuid), "numa_id": -1,
                    "assigned_rate_limits": limits,
                    "claimed": l.exported,
                });
                if l.exported {
                    v["claim_type"] = json!("exclusive_write");
                }
                v["zoned"] = json!(false);
                v["supported_io_types"] = io;
                v["driver_specific"] = json!({"lvol": lv});
                v
            }
        }
    }

    fn bdev_get_bdevs(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        p.u64("timeout")?;
        p.finish()?;
        if let Some(n) = name {
            let f = self.find(&n).ok_or_else(|| RpcError::errno(Errno::NoDev))?;
            return Ok(json!([self.bdev_json(f)]));
        }
        let mut out: Vec<Value> = (0..self.bases.len())
            .map(|i| self.bdev_json(Found::Base(i)))
            .collect();
        for (i, s) in self.lvstores.iter().enumerate() {
            for j in 0..s.lvols.len() {
                out.push(self.bdev_json(Found::Lvol(i, j)));
            }
        }
        Ok(Value::Array(out))
    }

    fn check_new_bdev(&self, name: &str, uuid: &[u8; 16]) -> Result<(), RpcError> {
        if self.find(name).is_some() || self.find(&format_uuid(uuid)).is_some() {
            return Err(RpcError::errno(Errno::Exist));
        }
        Ok(())
    }

    fn bdev_malloc_create(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let num_blocks = p.u64("num_blocks")?;
        let num_blocks = p.req(num_blocks)?;
        let block_size = p.u32("block_size")?;
        let block_size = p.req(block_size)?;
        let name = p.str("name")?;
        let uuid = p.uuid("uuid")?.unwrap_or_else(random_uuid);
        let phys = p.u32("physical_block_size")?.unwrap_or(0);
        p.u32("optimal_io_boundary")?;
        let md_size = p.u32("md_size")?.unwrap_or(0);
        p.bool("md_interleave")?;
        let dif_type = p.i32("dif_type")?.unwrap_or(0);
        p.bool("dif_is_head_of_md")?;
        p.u32("dif_pi_format")?;
        p.i32("numa_id")?;
        p.finish()?;
        if num_blocks == 0
            || (block_size != 512 && block_size != 4096)
            || (phys != 0 && (phys % 512 != 0 || phys < block_size))
        {
            return Err(RpcError::errno(Errno::Inval));
        }
        if md_size != 0 || dif_type != 0 {
            return Err(RpcError::errno(Errno::NotSup));
        }
        let name = match name {
            Some(n) => n,
            None => {
                let n = format!("Malloc{}", self.next_malloc);
                self.next_malloc += 1;
                n
            }
        };
        self.check_new_bdev(&name, &uuid)?;
        let dev = Malloc::new(&name, num_blocks, block_size, uuid)
            .map_err(|_| RpcError::errno(Errno::NoMem))?;
        info!("bdev {name}: malloc, {num_blocks} × {block_size} B");
        self.bases.push(Base {
            name: name.clone(),
            uuid,
            block_size,
            num_blocks,
            kind: BaseKind::Malloc,
            dev: Some(Box::new(StatBdev::new(Box::new(dev)))),
            claim: Claim::None,
        });
        // No examine: a new malloc bdev is all zeroes, it cannot hold a label.
        Ok(json!(name))
    }

    fn bdev_aio_create(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        let filename = p.str("filename")?;
        let filename = p.req(filename)?;
        let bs = p.u32("block_size")?.unwrap_or(0);
        let readonly = p.bool("readonly")?.unwrap_or(false);
        let fallocate = p.bool("fallocate")?.unwrap_or(false);
        let nowait = p.bool("nowait")?.unwrap_or(false);
        let uuid = p.uuid("uuid")?.unwrap_or_else(random_uuid);
        p.finish()?;
        self.check_new_bdev(&name, &uuid)?;
        let meta = std::fs::metadata(&filename).map_err(|e| RpcError::io(&e))?;
        if bs == 0 || (bs != 512 && bs != 4096) || meta.len() % u64::from(bs) != 0 {
            // A regular file cannot tell its block size; we serve 512 and 4096 only.
            return Err(RpcError::errno(Errno::Inval));
        }
        if readonly {
            return Err(RpcError::errno(Errno::NotSup));
        }
        let dev = FileBdev::open(&name, Path::new(&filename), bs, uuid).map_err(|e| match e {
            BdevError::Io(_) => RpcError::errno(Errno::Inval),
            _ => RpcError::internal(),
        })?;
        let num_blocks = dev.num_blocks();
        info!("bdev {name}: aio on {filename}, {num_blocks} × {bs} B");
        self.bases.push(Base {
            name: name.clone(),
            uuid,
            block_size: bs,
            num_blocks,
            kind: BaseKind::Aio {
                filename,
                block_size_given: true,
                readonly,
                fallocate,
                nowait,
            },
            dev: Some(Box::new(StatBdev::new(Box::new(dev)))),
            claim: Claim::None,
        });
        self.examine(self.bases.len() - 1);
        Ok(json!(name))
    }

    /// SPDK's examine: an lvstore on base bdev `base` comes back before the creating call
    /// answers. A bdev without a label is left alone; a damaged label is reported.
    fn examine(&mut self, base: usize) {
        let name = self.bases[base].name.clone();
        match self.load_lvstore(base) {
            Ok(()) => {}
            Err(LabelError::NotFound) => {}
            Err(e) => warn!("bdev {name}: lvstore not loaded: {e}"),
        }
    }

    /// Loads the lvstore on base bdev `base` from its label, reconciling the side table with
    /// the pool metadata: rows without a thin device are dropped and devices without a row
    /// are reported (both logged, nothing deleted from the pool).
    fn load_lvstore(&mut self, base: usize) -> Result<(), LabelError> {
        let corrupt = |m: &str| LabelError::Corrupt(m.to_owned());
        let Some(dev) = self.bases[base].dev.as_mut() else {
            return Err(LabelError::NotFound);
        };
        let label = lvs::read(dev.as_mut())?;
        let t: Value = serde_json::from_slice(&label.table)
            .map_err(|e| LabelError::Corrupt(format!("side table: {e}")))?;
        if t["magic"] != TABLE_MAGIC {
            return Err(corrupt("side table magic"));
        }
        let get_u = |v: &Value| v.as_str().and_then(super::params::parse_uuid);
        let uuid = get_u(&t["uuid"]).ok_or_else(|| corrupt("lvstore uuid"))?;
        let name = t["name"]
            .as_str()
            .ok_or_else(|| corrupt("lvstore name"))?
            .to_owned();
        if self
            .lvstores
            .iter()
            .any(|x| x.uuid == uuid || x.name == name)
        {
            return Err(LabelError::Corrupt(format!(
                "an lvstore named {name} or with its UUID is already loaded"
            )));
        }
        let Some(dev) = self.bases[base].dev.take() else {
            return Err(LabelError::NotFound);
        };
        let devs = PoolDevices {
            meta: dev,
            meta_region: label.layout.meta_region(),
            data: None,
            data_region: label.layout.data_region(),
        };
        let pool = match ThinPool::open_on(devs, DEFAULT_CACHE_BLOCKS) {
            Ok(p) => p,
            Err(e) => {
                // The pool would not open: the bdev stays a plain bdev, reopened (only aio
                // bdevs can carry a label at creation; a new malloc bdev is all zeroes).
                let b = &mut self.bases[base];
                if let BaseKind::Aio { filename, .. } = &b.kind {
                    match FileBdev::open(&b.name, Path::new(filename), b.block_size, b.uuid) {
                        Ok(f) => b.dev = Some(Box::new(f)),
                        Err(e2) => warn!("bdev {}: reopening {filename}: {e2}", b.name),
                    }
                }
                return Err(LabelError::Corrupt(format!("dm-thin metadata: {e}")));
            }
        };
        let _ = pool.set_no_space_timeout_ms(0);
        let mut lvols = Vec::new();
        for l in t["lvols"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (Some(u), Some(n), Some(id), Some(size)) = (
                get_u(&l["uuid"]),
                l["name"].as_str(),
                l["dev_id"].as_u64(),
                l["size_bytes"].as_u64(),
            ) else {
                warn!("lvstore {name}: skipping a malformed lvol row {l}");
                continue;
            };
            if !pool.with_pool(|p| p.device_exists(id)).unwrap_or(false) {
                warn!("lvstore {name}: lvol {n} has no thin device {id}; dropped");
                self.dropped.push((
                    name.clone(),
                    config::LvolRow {
                        name: n.to_owned(),
                        uuid: format_uuid(&u),
                        dev_id: id,
                        size_bytes: size,
                        mapped_beyond_end: None,
                    },
                ));
                continue;
            }
            lvols.push(Lvol {
                uuid: u,
                name: n.to_owned(),
                dev_id: id,
                size_bytes: size,
                thin: l["thin"].as_bool().unwrap_or(true),
                read_only: Arc::new(AtomicBool::new(l["read_only"].as_bool().unwrap_or(false))),
                parent: get_u(&l["parent"]),
                snapshot: l["snapshot"].as_bool().unwrap_or(false),
                exported: false,
                stat: IoStat::default(),
            });
        }
        if let Ok(devs) = pool.with_pool(|p| p.devices()) {
            for d in devs {
                if !lvols.iter().any(|l| l.dev_id == d) {
                    warn!("lvstore {name}: thin device {d} has no lvol row (kept, not shown)");
                }
            }
        }
        let b = &mut self.bases[base];
        b.claim = Claim::Lvstore;
        info!(
            "lvstore {name} loaded from {} ({} lvols, label copy {})",
            b.name,
            lvols.len(),
            label.seq % 2
        );
        self.lvstores.push(Lvstore {
            uuid,
            name,
            base: b.name.clone(),
            pool,
            cluster_bytes: label.layout.cluster_bytes,
            block_size: b.block_size,
            lvols,
            layout: label.layout,
            label_seq: label.seq,
            label_table: label.table,
            two_dev: None,
        });
        Ok(())
    }

    /// The side table of lvstore `s`, as stored in its label.
    fn side_table(s: &Lvstore) -> Vec<u8> {
        let lvols: Vec<Value> = s
            .lvols
            .iter()
            .map(|l| {
                json!({"uuid": format_uuid(&l.uuid), "name": l.name, "dev_id": l.dev_id,
                       "size_bytes": l.size_bytes, "thin": l.thin,
                       "read_only": l.read_only.load(Ordering::Relaxed),
                       "parent": l.parent.map(|p| format_uuid(&p)),
                       "snapshot": l.snapshot})
            })
            .collect();
        let t = json!({"magic": TABLE_MAGIC, "uuid": format_uuid(&s.uuid), "name": s.name,
                       "cluster_bytes": s.cluster_bytes, "block_size": s.block_size,
                       "lvols": lvols});
        serde_json::to_vec(&t).unwrap_or_default()
    }

    /// Writes the label of every lvstore whose side table changed (the other copy than the
    /// newest, then a flush: a crash leaves the previous table valid).
    fn save_side_tables(&mut self) -> Result<(), RpcError> {
        let mut failed = None;
        for s in &mut self.lvstores {
            let table = Self::side_table(s);
            if table == s.label_table || s.two_dev.is_some() {
                continue;
            }
            let label = Label {
                seq: s.label_seq + 1,
                layout: s.layout,
                table,
            };
            match s.pool.with_meta_bdev(|b| lvs::write(b, &label)) {
                Ok(Ok(())) => {
                    s.label_seq = label.seq;
                    s.label_table = label.table;
                }
                Ok(Err(e)) => {
                    warn!("lvstore {}: writing its label: {e}", s.name);
                    failed = Some(label_err(&e));
                }
                Err(e) => {
                    warn!("lvstore {}: writing its label: {e}", s.name);
                    failed = Some(e.to_string());
                }
            }
        }
        match failed {
            None => Ok(()),
            // -EIO, as SPDK reports a failed metadata write.
            Some(m) => Err(RpcError::new(-5, m)),
        }
    }

    fn bdev_base_delete(&mut self, p: Option<Value>, malloc: bool) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.finish()?;
        let i = match self.find(&name) {
            Some(Found::Base(i)) if (self.bases[i].kind == BaseKind::Malloc) == malloc => i,
            _ => return Err(RpcError::errno(Errno::NoDev)),
        };
        let primary = self.bases[i].name.clone();
        // Hot-remove: consumers let go (namespaces removed, lvstore unloaded).
        let back = self.unexport(&primary)?;
        drop(back);
        if let Some(k) = self.lvstores.iter().position(|s| {
            s.base == primary || s.two_dev.as_ref().is_some_and(|t| t.data_base == primary)
        }) {
            let s = self.lvstores.remove(k);
            let uuids: Vec<String> = s.lvols.iter().map(|l| format_uuid(&l.uuid)).collect();
            for u in uuids {
                drop(self.unexport(&u)?);
            }
            if s.two_dev.is_some() {
                self.thin_release(s);
            } else if let Err(e) = s.pool.commit() {
                warn!("lvstore {}: final commit: {e}", s.name);
            }
        }
        if let Some(i) = self.bases.iter().position(|b| b.name == primary) {
            self.bases.remove(i);
        }
        info!("bdev {primary} deleted");
        Ok(json!(true))
    }

    // ----- lvol -----

    fn lvs_json(s: &Lvstore) -> Value {
        let st = s.pool.stats().ok();
        let total = st.as_ref().map_or(0, |x| x.nr_data_blocks);
        let free = st.as_ref().map_or(0, |x| x.free_data_blocks);
        json!({"uuid": format_uuid(&s.uuid), "name": s.name, "base_bdev": s.base,
               "total_data_clusters": total, "free_clusters": free,
               "block_size": s.block_size, "cluster_size": s.cluster_bytes,
               "max_growable_size": total * s.cluster_bytes})
    }

    fn bdev_lvol_create_lvstore(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let bdev = p.str("bdev_name")?;
        let bdev = p.req(bdev)?;
        let lvs_name = p.str("lvs_name")?;
        let lvs_name = p.req(lvs_name)?;
        let cluster = match p.u32("cluster_sz")? {
            None | Some(0) => 4 << 20,
            Some(c) => u64::from(c),
        };
        let clear = p.str("clear_method")?;
        p.u32("num_md_pages_per_cluster_ratio")?;
        let md_page = p.u32("md_page_size")?.unwrap_or(0);
        p.finish()?;
        if let Some(c) = clear {
            if !matches!(c.as_str(), "none" | "unmap" | "write_zeroes") {
                return Err(bdev_decode());
            }
        }
        let i = match self.find(&bdev) {
            Some(Found::Base(i)) => i,
            Some(Found::Lvol(..)) => return Err(RpcError::errno(Errno::NotSup)),
            None => return Err(RpcError::errno(Errno::NoDev)),
        };
        if self.bases[i].claim != Claim::None {
            return Err(RpcError::errno(Errno::Perm));
        }
        // dm-thin data blocks: 64 KiB .. 1 GiB in multiples of 64 KiB.
        if !name_ok(&lvs_name)
            || cluster % (64 << 10) != 0
            || cluster > (1 << 30)
            || (md_page != 0 && md_page != 4096)
        {
            return Err(RpcError::errno(Errno::Inval));
        }
        if self.lvstores.iter().any(|s| s.name == lvs_name) {
            return Err(RpcError::errno(Errno::Exist));
        }
        let base = &self.bases[i];
        let bytes = base.num_blocks * u64::from(base.block_size);
        if bytes < cluster {
            return Err(RpcError::params_errno(Errno::NoSpc));
        }
        let meta_bytes = metadata_blocks(bytes / cluster) * 4096;
        let layout = Layout::new(bytes, cluster, meta_bytes)
            .map_err(|_| RpcError::params_errno(Errno::NoSpc))?;
        let sectors = u32::try_from(cluster / 512).map_err(|_| RpcError::errno(Errno::Inval))?;
        let uuid = random_uuid();
        let base_name = base.name.clone();
        let block_size = base.block_size;
        let Some(dev) = self.bases[i].dev.take() else {
            return Err(RpcError::errno(Errno::Perm));
        };
        let devs = PoolDevices {
            meta: dev,
            meta_region: layout.meta_region(),
            data: None,
            data_region: layout.data_region(),
        };
        // Format the metadata region first, then write the label: a crash in between
        // leaves a bdev without a label (nothing to examine), never a label without a pool.
        let pool = match ThinPool::create_on(devs, sectors, DEFAULT_CACHE_BLOCKS) {
            Ok(p) => p,
            Err(e) => {
                warn!("lvstore {lvs_name} on {base_name}: {e}");
                let b = &mut self.bases[i];
                if let BaseKind::Aio { filename, .. } = &b.kind {
                    if let Ok(f) =
                        FileBdev::open(&b.name, Path::new(filename), b.block_size, b.uuid)
                    {
                        b.dev = Some(Box::new(f));
                    }
                }
                return Err(lvstore_io(&e));
            }
        };
        // SPDK's lvol answers ENOSPC at once; so do lvstores (dm-thin's error_if_no_space).
        let _ = pool.set_no_space_timeout_ms(0);
        let mut s = Lvstore {
            uuid,
            name: lvs_name,
            base: base_name,
            pool,
            cluster_bytes: cluster,
            block_size,
            lvols: Vec::new(),
            layout,
            label_seq: 0,
            label_table: Vec::new(),
            two_dev: None,
        };
        let label = Label {
            seq: 1,
            layout,
            table: Self::side_table(&s),
        };
        if let Err(e) = s
            .pool
            .with_meta_bdev(|b| lvs::write(b, &label))
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| label_err(&e)))
        {
            warn!("lvstore {} on {}: label: {e}", s.name, s.base);
            if let Ok((dev, _)) = s.pool.into_bdevs() {
                self.bases[i].dev = Some(dev);
            }
            return Err(RpcError::new(-5, e));
        }
        s.label_seq = label.seq;
        s.label_table = label.table;
        self.bases[i].claim = Claim::Lvstore;
        info!(
            "lvstore {} on {}: {cluster} B clusters, {} clusters, metadata {} KiB",
            s.name,
            s.base,
            layout.data_clusters(bytes),
            meta_bytes / 1024
        );
        self.lvstores.push(s);
        Ok(json!(format_uuid(&uuid)))
    }

    fn bdev_lvol_get_lvstores(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let present = p.present();
        let uuid = p.str("uuid")?;
        let name = p.str("lvs_name")?;
        p.finish()?;
        if !present {
            return Ok(Value::Array(
                self.lvstores.iter().map(Self::lvs_json).collect(),
            ));
        }
        let i = self
            .lvs_select(uuid, name)?
            .ok_or_else(RpcError::internal)?;
        Ok(json!([Self::lvs_json(&self.lvstores[i])]))
    }

    fn bdev_lvol_delete_lvstore(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let uuid = p.str("uuid")?;
        let name = p.str("lvs_name")?;
        p.finish()?;
        let i = self
            .lvs_select(uuid, name)?
            .ok_or_else(RpcError::internal)?;
        let uuids: Vec<String> = self.lvstores[i]
            .lvols
            .iter()
            .map(|l| format_uuid(&l.uuid))
            .collect();
        for u in uuids {
            drop(self.unexport(&u)?);
        }
        if self.lvstores[i].pool.in_use() {
            return Err(RpcError::errno(Errno::Busy));
        }
        if self.lvstores[i].two_dev.is_some() {
            return self.thin_pool_destroy(i);
        }
        let s = self.lvstores.remove(i);
        let name = s.name.clone();
        let base = s.base.clone();
        match s.pool.into_bdevs() {
            Ok((mut dev, _)) => {
                if let Err(e) = lvs::wipe(dev.as_mut()) {
                    warn!("lvstore {name}: wiping the label on {base}: {e}");
                }
                if let Some(b) = self.bases.iter_mut().find(|b| b.name == base) {
                    b.claim = Claim::None;
                    b.dev = Some(dev);
                }
            }
            // Checked above: nothing else holds the pool.
            Err(_) => warn!("lvstore {name}: still referenced; its bdev stays claimed"),
        }
        info!("lvstore {name} deleted");
        Ok(json!(true))
    }

    fn bdev_lvol_create(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("lvol_name")?;
        let name = p.req(name)?;
        let mib = p.u64("size_in_mib")?;
        let mib = p.req(mib)?;
        let thin = p.bool("thin_provision")?.unwrap_or(false);
        let uuid = p.str("uuid")?;
        let lvs_name = p.str("lvs_name")?;
        let clear = p.str("clear_method")?;
        p.finish()?;
        if let Some(c) = clear {
            if !matches!(c.as_str(), "default" | "none" | "unmap" | "write_zeroes") {
                return Err(bdev_decode());
            }
        }
        let i = self
            .lvs_select(uuid, lvs_name)?
            .ok_or_else(RpcError::internal)?;
        if !name_ok(&name) {
            return Err(RpcError::errno(Errno::Inval));
        }
        let s = &mut self.lvstores[i];
        if s.lvols.iter().any(|l| l.name == name) {
            return Err(RpcError::errno(Errno::Exist));
        }
        let size = mib
            .checked_mul(1 << 20)
            .and_then(|b| b.checked_next_multiple_of(s.cluster_bytes))
            .ok_or_else(|| RpcError::params_errno(Errno::NoSpc))?;
        let clusters = size / s.cluster_bytes;
        let dev_id = Self::next_dev_id(s)?;
        if !thin {
            let free = s.pool.stats().map_err(|e| lvstore_io(&e))?.free_data_blocks;
            if clusters > free {
                return Err(RpcError::params_errno(Errno::NoSpc));
            }
        }
        s.pool
            .with_pool(|pool| pool.create_thin(dev_id))
            .map_err(|e| lvstore_io(&e))?;
        let lvol = Lvol {
            uuid: random_uuid(),
            name: name.clone(),
            dev_id,
            size_bytes: size,
            thin,
            read_only: Arc::new(AtomicBool::new(false)),
            parent: None,
            snapshot: false,
            exported: false,
            stat: IoStat::default(),
        };
        if !thin {
            // Thick: provision every cluster now (zero-filled).
            let r = (|| -> Result<(), BdevError> {
                let mut v = Self::lvol_volume(s, &lvol)?;
                let zeros = vec![0u8; s.cluster_bytes as usize];
                let per = s.cluster_bytes / u64::from(s.block_size);
                for c in 0..clusters {
                    v.write(c * per, &zeros, false)?;
                }
                v.flush()
            })();
            if let Err(e) = r {
                let _ = s.pool.with_pool(|pool| pool.delete(dev_id));
                return Err(lvstore_io(&e));
            }
        }
        let u = format_uuid(&lvol.uuid);
        info!("lvol {}/{name} ({u}): {size} B, thin {thin}", s.name);
        s.lvols.push(lvol);
        Ok(json!(u))
    }

    fn bdev_lvol_snapshot(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let origin = p.str("lvol_name")?;
        let origin = p.req(origin)?;
        let snap = p.str("snapshot_name")?;
        let snap = p.req(snap)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&origin)?;
        let s = &mut self.lvstores[i];
        if !name_ok(&snap) || s.lvols[j].read_only.load(Ordering::Relaxed) {
            return Err(RpcError::params_errno(Errno::Inval));
        }
        if s.lvols.iter().any(|l| l.name == snap) {
            return Err(RpcError::params_errno(Errno::Exist));
        }
        let id = Self::next_dev_id(s)?;
        let origin_id = s.lvols[j].dev_id;
        s.pool
            .with_pool(|pool| pool.create_snap(id, origin_id))
            .map_err(|e| lvstore_io(&e))?;
        let o = &s.lvols[j];
        let sl = Lvol {
            uuid: random_uuid(),
            name: snap.clone(),
            dev_id: id,
            size_bytes: o.size_bytes,
            thin: o.thin,
            read_only: Arc::new(AtomicBool::new(true)),
            parent: o.parent,
            snapshot: true,
            exported: false,
            stat: IoStat::default(),
        };
        let su = sl.uuid;
        let o = &mut s.lvols[j];
        o.parent = Some(su);
        o.thin = true;
        info!("snapshot {}/{snap} of {}", s.name, o.name);
        s.lvols.push(sl);
        Ok(json!(format_uuid(&su)))
    }

    fn bdev_lvol_clone(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let src = p.str("snapshot_name")?;
        let src = p.req(src)?;
        let clone = p.str("clone_name")?;
        let clone = p.req(clone)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&src)?;
        let s = &mut self.lvstores[i];
        if !s.lvols[j].read_only.load(Ordering::Relaxed) || !name_ok(&clone) {
            return Err(RpcError::params_errno(Errno::Inval));
        }
        if s.lvols.iter().any(|l| l.name == clone) {
            return Err(RpcError::params_errno(Errno::Exist));
        }
        let id = Self::next_dev_id(s)?;
        let origin_id = s.lvols[j].dev_id;
        s.pool
            .with_pool(|pool| pool.create_snap(id, origin_id))
            .map_err(|e| lvstore_io(&e))?;
        s.lvols[j].snapshot = true;
        let c = Lvol {
            uuid: random_uuid(),
            name: clone.clone(),
            dev_id: id,
            size_bytes: s.lvols[j].size_bytes,
            thin: true,
            read_only: Arc::new(AtomicBool::new(false)),
            parent: Some(s.lvols[j].uuid),
            snapshot: false,
            exported: false,
            stat: IoStat::default(),
        };
        let cu = c.uuid;
        info!("clone {}/{clone} of {}", s.name, s.lvols[j].name);
        s.lvols.push(c);
        Ok(json!(format_uuid(&cu)))
    }

    fn bdev_lvol_set_read_only(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&name)?;
        self.lvstores[i].lvols[j]
            .read_only
            .store(true, Ordering::Relaxed);
        Ok(json!(true))
    }

    fn bdev_lvol_resize(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        let mib = p.u64("size_in_mib")?;
        let mib = p.req(mib)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&name)?;
        let s = &self.lvstores[i];
        let l = &s.lvols[j];
        if l.read_only.load(Ordering::Relaxed) {
            return Err(RpcError::params_errno(Errno::Perm));
        }
        let size = mib
            .checked_mul(1 << 20)
            .and_then(|b| b.checked_next_multiple_of(s.cluster_bytes))
            .ok_or_else(|| RpcError::params_errno(Errno::NoSpc))?;
        let total = s.pool.stats().map_err(|e| lvstore_io(&e))?.nr_data_blocks;
        if size / s.cluster_bytes > total.saturating_mul(1024) {
            return Err(RpcError::params_errno(Errno::NoSpc));
        }
        if !l.thin && size > l.size_bytes {
            // Thick growth is not provisioned up front in this version.
            return Err(RpcError::params_errno(Errno::NotSup));
        }
        if size < l.size_bytes {
            let (from, to, id) = (
                size / s.cluster_bytes,
                l.size_bytes / s.cluster_bytes,
                l.dev_id,
            );
            s.pool
                .with_pool(|pool| pool.discard(id, from, to))
                .map_err(|e| lvstore_io(&e))?;
        }
        let primary = format_uuid(&l.uuid);
        self.lvstores[i].lvols[j].size_bytes = size;
        // An exported lvol: swap the namespace's bdev for one of the new size (same NSID and
        // identifiers; hosts get a namespace-changed event).
        let places: Vec<(String, u32)> = self
            .subs
            .iter()
            .flat_map(|sub| {
                sub.namespaces
                    .iter()
                    .filter(|(_, (b, _))| *b == primary)
                    .map(|(n, _)| (sub.nqn.clone(), *n))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (nqn, nsid) in places {
            let s = &self.lvstores[i];
            let v = Self::lvol_volume(s, &s.lvols[j]).map_err(|e| lvstore_io(&e))?;
            self.target()?
                .with_state(move |st| {
                    let old = st.remove_namespace(&nqn, nsid)?;
                    let stat = old.io_stat().copied().unwrap_or_default();
                    drop(old);
                    st.add_namespace(&nqn, nsid, Box::new(StatBdev::with_stat(Box::new(v), stat)))
                })
                .map_err(|_| RpcError::internal())?
                .map_err(|_| RpcError::internal())?;
        }
        Ok(json!(true))
    }

    fn bdev_lvol_delete(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&name)?;
        let primary = format_uuid(&self.lvstores[i].lvols[j].uuid);
        drop(self.unexport(&primary)?);
        let s = &mut self.lvstores[i];
        let l = s.lvols.remove(j);
        // dm-thin needs no merge: clones simply inherit the deleted snapshot's parent.
        for c in s.lvols.iter_mut().filter(|c| c.parent == Some(l.uuid)) {
            c.parent = l.parent;
        }
        let id = l.dev_id;
        s.pool
            .with_pool(|pool| pool.delete(id))
            .map_err(|_| RpcError::internal_errno(Errno::Busy))?;
        info!("lvol {}/{} deleted", s.name, l.name);
        Ok(json!(true))
    }

    fn bdev_lvol_get_lvols(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let present = p.present();
        let uuid = p.str("lvs_uuid")?;
        let name = p.str("lvs_name")?;
        p.finish()?;
        let only = if present {
            self.lvs_select(uuid, name)?
        } else {
            None
        };
        let mut out = Vec::new();
        for (i, s) in self.lvstores.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            for l in &s.lvols {
                out.push(json!({
                    "alias": format!("{}/{}", s.name, l.name), "uuid": format_uuid(&l.uuid),
                    "name": l.name, "is_thin_provisioned": l.thin,
                    "is_snapshot": is_snapshot(s, l), "is_clone": l.parent.is_some(),
                    "is_esnap_clone": false, "is_degraded": false,
                    "num_allocated_clusters": mapped_blocks(s, l),
                    "lvs": {"name": s.name, "uuid": format_uuid(&s.uuid)},
                }));
            }
        }
        Ok(Value::Array(out))
    }

    // ----- nvmf -----

    fn check_tgt(p: &mut Params, err: &str) -> Result<(), RpcError> {
        match p.str("tgt_name")? {
            None => Ok(()),
            Some(t) if t == "nvmf_tgt" => Ok(()),
            Some(t) => Err(RpcError::new(
                if err.is_empty() { -32602 } else { -32603 },
                if err.is_empty() {
                    format!("NVMf target '{t}' not found")
                } else {
                    err.replace("{}", &t)
                },
            )),
        }
    }

    fn sub_index(&self, nqn: &str) -> Result<usize, RpcError> {
        self.subs
            .iter()
            .position(|s| s.nqn == nqn)
            .ok_or_else(|| sub_not_found(nqn))
    }

    fn nvmf_create_transport(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        Self::check_tgt(&mut p, "Unable to find a target.")?;
        let tr = p.str("trtype")?;
        let tr = p.req(tr)?;
        if !tr.eq_ignore_ascii_case("tcp") {
            return Err(RpcError::new(
                -32602,
                format!("Invalid transport type '{tr}'"),
            ));
        }
        let qd = p.u16("max_queue_depth")?.unwrap_or(128);
        let qp = p.u64("max_io_qpairs_per_ctrlr")?.unwrap_or(127);
        if qp > 65534 {
            return Err(RpcError::new(-32602, "max_io_qpairs_per_ctrlr too large"));
        }
        let icd = p.u32("in_capsule_data_size")?.unwrap_or(4096);
        let mio = p.u32("max_io_size")?.unwrap_or(131072);
        let aq = p.u32("max_aq_depth")?.unwrap_or(128);
        let small = p.u32("iobuf_small_cache_size")?.unwrap_or(u32::MAX);
        let large = p.u32("iobuf_large_cache_size")?.unwrap_or(u32::MAX);
        let c2h = p.bool("c2h_success")?.unwrap_or(true);
        let prio = p.u32("sock_priority")?.unwrap_or(0);
        let abort = p.u32("abort_timeout_sec")?.unwrap_or(1);
        let kas = p.u16("kas")?.unwrap_or(100);
        let min_kato = p.u32("min_kato")?.unwrap_or(10000);
        let passthru = p.bool("disable_command_passthru")?.unwrap_or(false);
        p.off(&["zcopy", "dif_insert_or_strip"])?;
        // Relaxed decoding: other members (RDMA/VFIO-user options) are ignored.
        if self.transport.is_some() {
            return Err(RpcError::new(-32603, "Transport type 'TCP' already exists"));
        }
        self.transport = Some(json!({
            "trtype": "TCP", "max_queue_depth": qd, "max_io_qpairs_per_ctrlr": qp,
            "in_capsule_data_size": icd, "max_io_size": mio, "max_aq_depth": aq,
            "iobuf_small_cache_size": small, "iobuf_large_cache_size": large,
            "dif_insert_or_strip": false, "zcopy": false, "c2h_success": c2h,
            "sock_priority": prio, "abort_timeout_sec": abort, "ack_timeout": 0,
            "data_wr_pool_size": 0, "disable_command_passthru": passthru, "kas": kas,
            "min_kato": min_kato,
        }));
        Ok(json!(true))
    }

    fn nvmf_get_transports(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        Self::check_tgt(&mut p, "Unable to find a target.")?;
        let tr = p.str("trtype")?;
        p.finish()?;
        match (&self.transport, tr) {
            (Some(t), None) => Ok(json!([t])),
            (Some(t), Some(x)) if x.eq_ignore_ascii_case("tcp") => Ok(json!([t])),
            (None, None) => Ok(json!([])),
            _ => Err(RpcError::errno(Errno::NoDev)),
        }
    }

    fn nvmf_create_subsystem(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "Unable to find target {}")?;
        let serial = p
            .str("serial_number")?
            .unwrap_or_else(|| "00000000000000000000".into());
        let model = p
            .str("model_number")?
            .unwrap_or_else(|| "SPDK bdev Controller".into());
        let label = p.str("admin_label")?;
        let max_ns = match p.u32("max_namespaces")? {
            None | Some(0) => 32,
            Some(n) => n,
        };
        let allow_any = p.bool("allow_any_host")?.unwrap_or(false);
        p.bool("ana_reporting")?;
        let min = p.u16("min_cntlid")?.unwrap_or(1);
        let max = p.u16("max_cntlid")?.unwrap_or(65519);
        let dmrsl = p.u32("dmrsl")?.unwrap_or(2097152);
        let wzsl = p.u64("wzsl")?.unwrap_or(12);
        p.off(&["passthrough", "enable_nssr"])?;
        p.finish()?;
        let printable = |s: &str, n: usize| {
            !s.is_empty() && s.len() <= n && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        };
        let wzsl = u8::try_from(wzsl).map_err(|_| RpcError::invalid_params())?;
        if !printable(&serial, 20) || !printable(&model, 40) {
            return Err(RpcError::invalid_params());
        }
        if label.is_some() {
            return Err(RpcError::new(-32602, "Invalid admin_label"));
        }
        if min == 0 || min > max || max > 65519 {
            return Err(RpcError::new(
                -32602,
                format!("Invalid cntlid range [{min}-{max}]"),
            ));
        }
        let fail = || RpcError::new(-32603, format!("Unable to create subsystem {nqn}"));
        if self.subs.iter().any(|s| s.nqn == nqn) || nqn == DISCOVERY_NQN {
            return Err(fail());
        }
        let mut cfg = SubsystemConfig::new(&nqn)
            .serial(&serial)
            .model(&model)
            .allow_any_host(allow_any);
        cfg.max_namespaces = max_ns;
        self.target()?
            .with_state(move |st| st.add_subsystem(cfg))
            .map_err(|_| fail())?
            .map_err(|_| fail())?;
        self.subs.push(Sub {
            nqn,
            serial,
            model,
            max_namespaces: max_ns,
            allow_any_host: allow_any,
            hosts: Vec::new(),
            listeners: Vec::new(),
            namespaces: BTreeMap::new(),
            min_cntlid: min,
            max_cntlid: max,
            dmrsl,
            wzsl,
        });
        Ok(json!(true))
    }

    fn nvmf_delete_subsystem(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let i = self.sub_index(&nqn)?;
        let n2 = nqn.clone();
        let bdevs = self
            .target()?
            .with_state(move |st| st.remove_subsystem(&n2))
            .map_err(|_| RpcError::internal())?
            .map_err(|_| sub_not_found(&nqn))?;
        self.subs.remove(i);
        self.give_back(bdevs);
        Ok(json!(true))
    }

    fn listen_json(a: &ListenAddr) -> Value {
        json!({"trtype": "TCP", "adrfam": a.adrfam, "traddr": a.traddr, "trsvcid": a.trsvcid})
    }

    fn sub_json(s: &Sub) -> Value {
        let ns: Vec<Value> = s
            .namespaces
            .iter()
            .map(|(nsid, (b, u))| {
                json!({"nsid": nsid, "bdev_name": b, "name": b,
                       "nguid": nguid_hex(u, *nsid), "uuid": format_uuid(u)})
            })
            .collect();
        json!({
            "nqn": s.nqn, "subtype": "NVMe",
            "listen_addresses": s.listeners.iter().map(Self::listen_json).collect::<Vec<_>>(),
            "allow_any_host": s.allow_any_host,
            "hosts": s.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
            "serial_number": s.serial, "model_number": s.model,
            "max_namespaces": s.max_namespaces, "passthrough": false,
            "min_cntlid": s.min_cntlid, "max_cntlid": s.max_cntlid,
            "dmrsl": s.dmrsl, "wzsl": s.wzsl, "namespaces": ns,
        })
    }

    fn nvmf_get_subsystems(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let disc = json!({"nqn": DISCOVERY_NQN, "subtype": "Discovery",
                          "listen_addresses": [], "allow_any_host": true, "hosts": []});
        match nqn {
            Some(n) if n == DISCOVERY_NQN => Ok(json!([disc])),
            Some(n) => Ok(json!([Self::sub_json(&self.subs[self.sub_index(&n)?])])),
            None => {
                let mut v = vec![disc];
                v.extend(self.subs.iter().map(Self::sub_json));
                Ok(Value::Array(v))
            }
        }
    }

    fn nvmf_subsystem_add_listener(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        let la = p.object("listen_address")?;
        let mut la = p.req(la)?;
        let secure = p.bool("secure_channel")?.unwrap_or(false);
        p.str("ana_state")?;
        p.str("sock_impl")?;
        // Relaxed: other members are ignored.
        let tr = la.str("trtype")?;
        let tr = la.req(tr)?;
        let fam = la.str("adrfam")?.unwrap_or_else(|| "ipv4".into());
        let traddr = la.str("traddr")?;
        let traddr = la.req(traddr)?;
        let svc = la.str("trsvcid")?;
        let svc = la.req(svc)?;
        la.finish()?;
        let i = self.sub_index(&nqn)?;
        if secure {
            return Err(if self.subs[i].allow_any_host {
                RpcError::new(
                    -32603,
                    "Cannot establish secure channel, when 'allow_any_host' is set",
                )
            } else {
                RpcError::invalid_params()
            });
        }
        let adrfam = match fam.to_ascii_lowercase().as_str() {
            "ipv4" => "IPv4",
            "ipv6" => "IPv6",
            _ => return Err(RpcError::invalid_params()),
        };
        if !tr.eq_ignore_ascii_case("tcp") || self.transport.is_none() {
            return Err(RpcError::invalid_params());
        }
        let ip: IpAddr = traddr.parse().map_err(|_| RpcError::invalid_params())?;
        if ip.is_ipv4() != (adrfam == "IPv4") {
            return Err(RpcError::invalid_params());
        }
        let port: u16 = svc.parse().map_err(|_| RpcError::invalid_params())?;
        let addr = SocketAddr::new(ip, port);
        let la = ListenAddr {
            adrfam: adrfam.into(),
            traddr,
            trsvcid: svc,
        };
        if self.subs[i].listeners.contains(&la) {
            return Err(RpcError::invalid_params());
        }
        if !self.bound.contains(&addr) {
            let local = self
                .target()?
                .listen(addr)
                .map_err(|_| RpcError::invalid_params())?;
            self.bound.push(local);
        }
        self.subs[i].listeners.push(la);
        Ok(json!(true))
    }

    fn nvmf_subsystem_add_ns(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        let ns = p.object("namespace")?;
        let mut ns = p.req(ns)?;
        let bdev = ns.str("bdev_name")?;
        let bdev = ns.req(bdev)?;
        let nsid = ns.u32("nsid")?.unwrap_or(0);
        let nguid = ns.str("nguid")?;
        let eui = ns.str("eui64")?;
        let uuid = ns.uuid("uuid")?;
        ns.off(&["no_auto_visible", "hide_metadata"])?;
        let ptpl = ns.str("ptpl_file")?;
        ns.u32("anagrpid")?;
        ns.finish()?;
        let si = self.sub_index(&nqn)?;
        if nguid.is_some() {
            return Err(RpcError::new(-32602, "Invalid nguid"));
        }
        if eui.is_some() {
            return Err(RpcError::new(-32602, "Invalid eui64"));
        }
        if ptpl.is_some() {
            return Err(RpcError::invalid_params());
        }
        let f = self.find(&bdev).ok_or_else(RpcError::invalid_params)?;
        let sub = &self.subs[si];
        let nsid = if nsid == 0 {
            (1..=sub.max_namespaces)
                .find(|n| !sub.namespaces.contains_key(n))
                .ok_or_else(RpcError::invalid_params)?
        } else {
            nsid
        };
        if nsid > sub.max_namespaces || sub.namespaces.contains_key(&nsid) {
            return Err(RpcError::invalid_params());
        }
        let (dev, primary, bu): (Box<dyn Bdev>, String, [u8; 16]) = match f {
            Found::Base(i) => {
                let b = &mut self.bases[i];
                if b.claim != Claim::None {
                    return Err(RpcError::invalid_params());
                }
                let d = b.dev.take().ok_or_else(RpcError::invalid_params)?;
                (d, b.name.clone(), b.uuid)
            }
            Found::Lvol(i, j) => {
                let s = &self.lvstores[i];
                let l = &s.lvols[j];
                if l.exported {
                    return Err(RpcError::invalid_params());
                }
                let v = Self::lvol_volume(s, l).map_err(|_| RpcError::invalid_params())?;
                let counted = StatBdev::with_stat(Box::new(v), l.stat);
                (Box::new(counted), format_uuid(&l.uuid), l.uuid)
            }
        };
        if uuid.is_some_and(|u| u != bu) {
            // Our namespaces take the bdev's UUID; another one is not supported yet.
            self.give_back(vec![dev]);
            return Err(RpcError::invalid_params());
        }
        let n2 = nqn.clone();
        let r = self
            .target()?
            .with_state(move |st| match st.add_namespace(&n2, nsid, dev) {
                Ok(()) => Ok(()),
                Err(e) => Err(e),
            })
            .map_err(|_| RpcError::internal())?;
        if r.is_err() {
            // The bdev was consumed by the failed call only if it was an lvol volume.
            return Err(RpcError::invalid_params());
        }
        match f {
            Found::Base(i) => self.bases[i].claim = Claim::Nvmf,
            Found::Lvol(i, j) => self.lvstores[i].lvols[j].exported = true,
        }
        self.subs[si].namespaces.insert(nsid, (primary, bu));
        Ok(json!(nsid))
    }

    fn nvmf_subsystem_remove_ns(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        let nsid = p.u32("nsid")?;
        let nsid = p.req(nsid)?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let si = self.sub_index(&nqn)?;
        if !self.subs[si].namespaces.contains_key(&nsid) {
            return Err(RpcError::invalid_params());
        }
        let b = self
            .target()?
            .with_state(move |st| st.remove_namespace(&nqn, nsid))
            .map_err(|_| RpcError::internal())?
            .map_err(|_| RpcError::invalid_params())?;
        self.subs[si].namespaces.remove(&nsid);
        self.give_back(vec![b]);
        Ok(json!(true))
    }

    fn host_params(&mut self, p: Option<Value>, add: bool) -> Result<(usize, String), RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        let host = p.str("host")?;
        let host = p.req(host)?;
        Self::check_tgt(&mut p, "")?;
        if add {
            // Relaxed decoding; keys need TLS / DH-HMAC-CHAP, which we do not have yet.
            for k in ["psk", "dhchap_key", "dhchap_ctrlr_key"] {
                if p.value(k).is_some() {
                    return Err(RpcError::invalid_params());
                }
            }
        } else {
            p.u64("timeout_ms")?;
            p.finish()?;
        }
        Ok((self.sub_index(&nqn)?, host))
    }

    fn nvmf_subsystem_add_host(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let (i, host) = self.host_params(p, true)?;
        if self.subs[i].hosts.contains(&host) || crate::wire::fabrics::Nqn::new(&host).is_err() {
            return Err(RpcError::internal());
        }
        let (nqn, h2) = (self.subs[i].nqn.clone(), host.clone());
        self.target()?
            .with_state(move |st| st.add_host(&nqn, &h2))
            .map_err(|_| RpcError::internal())?
            .map_err(|_| RpcError::internal())?;
        self.subs[i].hosts.push(host);
        Ok(json!(true))
    }

    fn nvmf_subsystem_remove_host(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let (i, host) = self.host_params(p, false)?;
        let k = self.subs[i]
            .hosts
            .iter()
            .position(|h| *h == host)
            .ok_or_else(RpcError::internal)?;
        let (nqn, h2) = (self.subs[i].nqn.clone(), host.clone());
        self.target()?
            .with_state(move |st| st.remove_host(&nqn, &h2))
            .map_err(|_| RpcError::internal())?
            .map_err(|_| RpcError::internal())?;
        self.subs[i].hosts.remove(k);
        Ok(json!(true))
    }

    fn nvmf_subsystem_allow_any_host(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        let allow = p.bool("allow_any_host")?;
        let allow = p.req(allow)?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let i = self.sub_index(&nqn)?;
        self.target()?
            .with_state(move |st| st.set_allow_any_host(&nqn, allow))
            .map_err(|_| RpcError::internal())?
            .map_err(|_| RpcError::internal())?;
        self.subs[i].allow_any_host = allow;
        Ok(json!(true))
    }

    fn bdev_lvol_rename(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let old = p.str("old_name")?;
        let old = p.req(old)?;
        let new = p.str("new_name")?;
        let new = p.req(new)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&old)?;
        let s = &self.lvstores[i];
        if s.lvols[j].name == new {
            return Ok(json!(true));
        }
        if !name_ok(&new) {
            return Err(RpcError::params_errno(Errno::Inval));
        }
        if s.lvols.iter().any(|l| l.name == new)
            || self.find(&format!("{}/{new}", s.name)).is_some()
        {
            return Err(RpcError::params_errno(Errno::Exist));
        }
        self.lvstores[i].lvols[j].name = new;
        Ok(json!(true))
    }

    fn bdev_lvol_rename_lvstore(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let old = p.str("old_name")?;
        let old = p.req(old)?;
        let new = p.str("new_name")?;
        let new = p.req(new)?;
        p.finish()?;
        let i = self
            .lvstores
            .iter()
            .position(|s| s.name == old)
            .ok_or_else(|| RpcError::new(-2, format!("Lvol store {old} not found")))?;
        if old == new {
            return Ok(json!(true));
        }
        if !name_ok(&new) {
            return Err(RpcError::params_errno(Errno::Inval));
        }
        if self.lvstores.iter().any(|s| s.name == new) {
            return Err(RpcError::params_errno(Errno::Exist));
        }
        self.lvstores[i].name = new;
        Ok(json!(true))
    }

    fn bdev_lvol_grow_lvstore(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let uuid = p.str("uuid")?;
        let name = p.str("lvs_name")?;
        p.finish()?;
        let i = self
            .lvs_select(uuid, name)?
            .ok_or_else(RpcError::internal)?;
        let s = &self.lvstores[i];
        let before = s.pool.stats().map_err(|e| lvstore_io(&e))?.nr_data_blocks;
        let now = s.pool.grow_to_data_device().map_err(|e| lvstore_io(&e))?;
        if now != before {
            info!("lvstore {}: {before} → {now} clusters", s.name);
        }
        let blocks = s.pool.with_meta_bdev(|b| b.num_blocks()).ok();
        let base = s.base.clone();
        if let (Some(n), Some(b)) = (blocks, self.bases.iter_mut().find(|b| b.name == base)) {
            b.num_blocks = n;
        }
        Ok(json!(true))
    }

    /// Rewrites every cluster of lvol (i, j) through the pool: shared blocks get their own
    /// copy, unmapped ones are provisioned (zeroes: in dm-thin a clone's unmapped block is
    /// unmapped in its snapshot too).
    fn own_every_cluster(&self, i: usize, j: usize) -> Result<(), RpcError> {
        let s = &self.lvstores[i];
        let l = &s.lvols[j];
        let mut v = s
            .pool
            .volume("inflate", l.dev_id, l.size_bytes, s.block_size, l.uuid)
            .map_err(|e| lvstore_io(&e))?;
        let mut buf = vec![0u8; s.cluster_bytes as usize];
        let per = s.cluster_bytes / u64::from(s.block_size);
        for c in 0..l.size_bytes / s.cluster_bytes {
            v.read(c * per, &mut buf).map_err(|e| lvstore_io(&e))?;
            v.write(c * per, &buf, false).map_err(|e| lvstore_io(&e))?;
        }
        v.flush().map_err(|e| lvstore_io(&e))
    }

    fn bdev_lvol_inflate(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&name)?;
        let l = &self.lvstores[i].lvols[j];
        if l.read_only.load(Ordering::Relaxed) {
            return Err(RpcError::params_errno(Errno::Perm));
        }
        self.own_every_cluster(i, j)?;
        let l = &mut self.lvstores[i].lvols[j];
        l.parent = None;
        l.thin = false;
        Ok(json!(true))
    }

    fn bdev_lvol_decouple_parent(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.finish()?;
        let (i, j) = self.find_lvol(&name)?;
        let s = &mut self.lvstores[i];
        let Some(parent) = s.lvols[j].parent else {
            return Err(RpcError::params_errno(Errno::Inval));
        };
        // dm-thin shares blocks by reference count, so dropping one level of the SPDK parent
        // chain needs no copy: the data stays correct and stays thin.
        let grand = s
            .lvols
            .iter()
            .find(|l| l.uuid == parent)
            .and_then(|l| l.parent);
        s.lvols[j].parent = grand;
        Ok(json!(true))
    }

    fn nvmf_subsystem_remove_listener(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        let la = p.object("listen_address")?;
        let mut la = p.req(la)?;
        p.finish()?;
        let tr = la.str("trtype")?;
        let tr = la.req(tr)?;
        let fam = la.str("adrfam")?.unwrap_or_else(|| "ipv4".into());
        let traddr = la.str("traddr")?;
        let traddr = la.req(traddr)?;
        let svc = la.str("trsvcid")?.unwrap_or_default();
        la.finish()?;
        let i = self.sub_index(&nqn)?;
        if !tr.eq_ignore_ascii_case("tcp") || self.transport.is_none() {
            return Err(RpcError::invalid_params());
        }
        let k = self.subs[i]
            .listeners
            .iter()
            .position(|l| {
                l.adrfam.eq_ignore_ascii_case(&fam) && l.traddr == traddr && l.trsvcid == svc
            })
            .ok_or_else(RpcError::invalid_params)?;
        self.subs[i].listeners.remove(k);
        Ok(json!(true))
    }

    fn nvmf_subsystem_get_listeners(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let s = &self.subs[self.sub_index(&nqn)?];
        Ok(Value::Array(
            s.listeners
                .iter()
                .map(|l| json!({"address": Self::listen_json(l)}))
                .collect(),
        ))
    }

    fn framework_get_subsystems(&self, p: Option<Value>) -> Result<Value, RpcError> {
        if p.is_some() {
            return Err(RpcError::new(
                -32602,
                "'framework_get_subsystems' requires no arguments",
            ));
        }
        Ok(json!([{"subsystem": "bdev", "depends_on": []},
                  {"subsystem": "nvmf", "depends_on": ["bdev"]}]))
    }

    fn framework_get_config(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, RpcError::new(-32602, "Invalid arguments"))?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        p.bool("with_batches")?;
        p.finish()?;
        let mut out = Vec::new();
        match name.as_str() {
            "bdev" => {
                for b in &self.bases {
                    let u = format_uuid(&b.uuid);
                    out.push(match &b.kind {
                        BaseKind::Malloc => json!({"method": "bdev_malloc_create", "params": {
                            "name": b.name, "num_blocks": b.num_blocks,
                            "block_size": b.block_size, "physical_block_size": b.block_size,
                            "uuid": u, "optimal_io_boundary": 0, "md_size": 0, "dif_type": 0,
                            "dif_is_head_of_md": false, "dif_pi_format": 0, "numa_id": -1}}),
                        BaseKind::Aio {
                            filename,
                            readonly,
                            fallocate,
                            nowait,
                            ..
                        } => json!({"method": "bdev_aio_create", "params": {
                            "name": b.name, "block_size": b.block_size, "filename": filename,
                            "readonly": readonly, "fallocate": fallocate, "uuid": u,
                            "nowait": nowait}}),
                    });
                }
                out.extend(self.thin_config());
                out.push(json!({"method": "bdev_wait_for_examine"}));
            }
            "nvmf" => {
                if let Some(t) = &self.transport {
                    out.push(json!({"method": "nvmf_create_transport", "params": t}));
                }
                for s in &self.subs {
                    out.push(json!({"method": "nvmf_create_subsystem", "params": {
                        "nqn": s.nqn, "allow_any_host": s.allow_any_host,
                        "serial_number": s.serial, "model_number": s.model,
                        "max_namespaces": s.max_namespaces, "min_cntlid": s.min_cntlid,
                        "max_cntlid": s.max_cntlid, "ana_reporting": false,
                        "dmrsl": s.dmrsl, "wzsl": s.wzsl, "passthrough": false,
                        "enable_nssr": false}}));
                    for h in &s.hosts {
                        out.push(json!({"method": "nvmf_subsystem_add_host",
                                        "params": {"nqn": s.nqn, "host": h}}));
                    }
                    for (nsid, (b, u)) in &s.namespaces {
                        out.push(json!({"method": "nvmf_subsystem_add_ns", "params": {
                            "nqn": s.nqn, "namespace": {"nsid": nsid, "bdev_name": b,
                            "uuid": format_uuid(u), "no_auto_visible": false}}}));
                    }
                    for l in &s.listeners {
                        out.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                            "nqn": s.nqn, "listen_address": Self::listen_json(l),
                            "secure_channel": false}}));
                    }
                }
            }
            _ => {
                return Err(RpcError::new(
                    -32602,
                    format!("Subsystem '{name}' not found"),
                ))
            }
        }
        Ok(Value::Array(out))
    }

    // ----- statistics -----

    fn primary_name(&self, f: Found) -> String {
        match f {
            Found::Base(i) => self.bases[i].name.clone(),
            Found::Lvol(i, j) => format_uuid(&self.lvstores[i].lvols[j].uuid),
        }
    }

    fn is_exported(&self, f: Found) -> bool {
        match f {
            // Without its bdev in the registry: exported, or inside an lvstore's pool.
            Found::Base(i) => self.bases[i].dev.is_none() && self.bases[i].claim == Claim::Nvmf,
            Found::Lvol(i, j) => self.lvstores[i].lvols[j].exported,
        }
    }

    /// Every bdev, in `bdev_get_bdevs` order.
    fn all_bdevs(&self) -> Vec<Found> {
        let mut v: Vec<Found> = (0..self.bases.len()).map(Found::Base).collect();
        for (i, s) in self.lvstores.iter().enumerate() {
            v.extend((0..s.lvols.len()).map(|j| Found::Lvol(i, j)));
        }
        v
    }

    /// The counters of a bdev the registry holds, reset afterwards as `reset` says.
    fn registry_stat(&mut self, f: Found, reset: ResetMode) -> IoStat {
        // A base bdev claimed by an lvstore lives inside its pool, which does all its I/O
        // (data, dm-thin metadata, labels) through it, as SPDK's blobstore does.
        if let Found::Base(i) = f {
            let name = &self.bases[i].name;
            if let Some(s) = self.lvstores.iter().find(|s| &s.base == name) {
                return s
                    .pool
                    .with_meta_bdev(|b| {
                        b.io_stat_mut().map(|st| {
                            let v = *st;
                            st.reset(reset);
                            v
                        })
                    })
                    .ok()
                    .flatten()
                    .unwrap_or_default();
            }
        }
        let st = match f {
            Found::Base(i) => self.bases[i].dev.as_mut().and_then(|d| d.io_stat_mut()),
            Found::Lvol(i, j) => Some(&mut self.lvstores[i].lvols[j].stat),
        };
        match st {
            Some(st) => {
                let v = *st;
                st.reset(reset);
                v
            }
            None => IoStat::default(),
        }
    }

    fn iostat_json(name: &str, s: &IoStat) -> Value {
        let min = |o: &crate::bdev::stat::OpStat| if o.ops == 0 { 0 } else { o.min_latency_ticks };
        json!({
            "name": name,
            "bytes_read": s.read.bytes, "num_read_ops": s.read.ops,
            "bytes_written": s.write.bytes, "num_write_ops": s.write.ops,
            "bytes_unmapped": s.unmap.bytes, "num_unmap_ops": s.unmap.ops,
            "bytes_copied": s.copy.bytes, "num_copy_ops": s.copy.ops,
            "read_latency_ticks": s.read.latency_ticks,
            "max_read_latency_ticks": s.read.max_latency_ticks,
            "min_read_latency_ticks": min(&s.read),
            "write_latency_ticks": s.write.latency_ticks,
            "max_write_latency_ticks": s.write.max_latency_ticks,
            "min_write_latency_ticks": min(&s.write),
            "unmap_latency_ticks": s.unmap.latency_ticks,
            "max_unmap_latency_ticks": s.unmap.max_latency_ticks,
            "min_unmap_latency_ticks": min(&s.unmap),
            "copy_latency_ticks": s.copy.latency_ticks,
            "max_copy_latency_ticks": s.copy.max_latency_ticks,
            "min_copy_latency_ticks": min(&s.copy),
        })
    }

    fn bdev_get_iostat(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        // 26.x clients send `names`; older ones sent one `name`.
        let name = p.str("name")?;
        let names = p.value("names");
        let per_channel = p.bool("per_channel")?.unwrap_or(false);
        let reset = p.str("reset_mode")?;
        p.finish()?;
        let reset = match reset.as_deref() {
            None | Some("none") => ResetMode::None,
            Some("all") => ResetMode::All,
            Some("maxmin") => ResetMode::MaxMin,
            Some("error") => ResetMode::Error,
            Some(_) => return Err(bdev_decode()),
        };
        let mut wanted: Vec<String> = name.into_iter().collect();
        match names {
            None => {}
            Some(Value::Array(v)) if v.len() <= 1024 => {
                for n in v {
                    match n {
                        Value::String(n) => wanted.push(n),
                        _ => return Err(bdev_decode()),
                    }
                }
            }
            Some(_) => return Err(bdev_decode()),
        }
        let all = wanted.is_empty();
        if per_channel && wanted.len() != 1 {
            return Err(RpcError::errno(Errno::Inval));
        }
        let found: Vec<Found> = if all {
            self.all_bdevs()
        } else {
            wanted
                .iter()
                .map(|n| self.find(n).ok_or_else(|| RpcError::errno(Errno::NoDev)))
                .collect::<Result<_, _>>()?
        };
        let exported: Vec<String> = found
            .iter()
            .filter(|f| self.is_exported(**f))
            .map(|f| self.primary_name(*f))
            .collect();
        let mut live: BTreeMap<String, IoStat> = BTreeMap::new();
        if !exported.is_empty() {
            live = self
                .target()?
                .with_state(move |st| st.bdev_io_stats(|n| exported.iter().any(|e| e == n), reset))
                .map_err(|_| RpcError::internal())?
                .into_iter()
                .collect();
        }
        let ticks = now_ticks();
        let mut out = Vec::new();
        for f in found {
            let name = self.primary_name(f);
            let st = if self.is_exported(f) {
                live.get(&name).copied().unwrap_or_default()
            } else {
                self.registry_stat(f, reset)
            };
            out.push((name, st));
        }
        if per_channel {
            // One reactor: one channel (SPDK's thread ids start at 1).
            let (name, st) = out.first().cloned().unwrap_or_default();
            let mut ch = Self::iostat_json(&name, &st);
            if let Some(o) = ch.as_object_mut() {
                o.shift_remove("name");
                o.shift_insert(0, "thread_id".into(), json!(1));
            }
            return Ok(json!({"tick_rate": TICK_RATE, "ticks": ticks, "name": name,
                             "channels": [ch]}));
        }
        let bdevs: Vec<Value> = out.iter().map(|(n, s)| Self::iostat_json(n, s)).collect();
        Ok(json!({"tick_rate": TICK_RATE, "ticks": ticks, "bdevs": bdevs}))
    }

    /// The controllers of subsystem `nqn` (the discovery NQN: discovery controllers).
    fn sub_controllers(&self, p: Option<Value>) -> Result<Vec<ControllerInfo>, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        let nqn = p.str("nqn")?;
        let nqn = p.req(nqn)?;
        Self::check_tgt(&mut p, "")?;
        p.finish()?;
        let disc = nqn == DISCOVERY_NQN;
        if !disc {
            self.sub_index(&nqn)?;
        }
        let all = self
            .target()?
            .with_state(|st| st.controllers_info())
            .map_err(|_| RpcError::internal())?;
        Ok(all
            .into_iter()
            .filter(|c| c.discovery == disc && (disc || c.subnqn == nqn))
            .collect())
    }

    fn nvmf_subsystem_get_controllers(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let ctrls = self.sub_controllers(p)?;
        Ok(Value::Array(
            ctrls
                .iter()
                .map(|c| {
                    // SPDK counts every connected queue, the admin queue included
                    // (`spdk_bit_array_count_set(qpair_mask)`).
                    json!({"cntlid": c.cntlid,
                           "cntrltype": if c.discovery { "discovery" } else { "io" },
                           "hostnqn": c.hostnqn, "hostid": format_uuid(&c.hostid),
                           "num_io_qpairs": c.queues.len()})
                })
                .collect(),
        ))
    }

    fn addr_json(a: SocketAddr) -> Value {
        json!({"trtype": "TCP", "adrfam": if a.is_ipv4() { "IPv4" } else { "IPv6" },
               "traddr": a.ip().to_string(), "trsvcid": a.port().to_string()})
    }

    fn nvmf_subsystem_get_qpairs(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let ctrls = self.sub_controllers(p)?;
        let mut out = Vec::new();
        for c in &ctrls {
            for (qid, a) in &c.queues {
                let mut v = json!({"cntlid": c.cntlid, "qid": qid, "state": "enabled",
                                   "thread": poll_group_name(a.poll_group),
                                   "hostnqn": c.hostnqn});
                if let Some(l) = a.local {
                    v["listen_address"] = Self::addr_json(l);
                }
                if let Some(peer) = a.peer {
                    v["peer_address"] = Self::addr_json(peer);
                }
                out.push(v);
            }
        }
        Ok(Value::Array(out))
    }

    fn nvmf_get_stats(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, nvmf_decode())?;
        Self::check_tgt(&mut p, "Unable to find a target.")?;
        p.finish()?;
        let groups = self
            .target()?
            .with_state(|st| st.poll_group_stats())
            .map_err(|_| RpcError::internal())?;
        let transports = if self.transport.is_some() {
            json!([{"trtype": "TCP"}])
        } else {
            json!([])
        };
        let groups: Vec<Value> = groups
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "name": poll_group_name(i),
                    "admin_qpairs": s.admin_qpairs, "io_qpairs": s.io_qpairs,
                    "current_admin_qpairs": s.current_admin_qpairs,
                    "current_io_qpairs": s.current_io_qpairs,
                    "current_unassociated_qpairs": s.current_unassociated_qpairs,
                    // Bdev I/O is synchronous on the owner reactor: nothing waits for a
                    // bdev between polls.
                    "pending_bdev_io": 0,
                    "completed_nvme_io": s.completed_nvme_io,
                    "transports": transports,
                })
            })
            .collect();
        Ok(json!({"tick_rate": TICK_RATE, "poll_groups": groups}))
    }

    /// SPDK's `framework_get_reactors`: one entry per reactor (core of `-m`), with its
    /// busy and idle time in ticks (ns) and its lightweight threads (the app thread on the
    /// first, one poll group each).
    fn framework_get_reactors(&self, p: Option<Value>) -> Result<Value, RpcError> {
        if p.is_some() {
            return Err(RpcError::new(
                -32602,
                "`framework_get_reactors` requires no parameters",
            ));
        }
        let t = self.target()?;
        let interrupt = t.poll_mode() == crate::PollMode::Adaptive;
        let reactors: Vec<Value> = t
            .reactors()
            .iter()
            .map(|r| {
                let (usr, sys) = thread_cpu_ticks(r.tid).unwrap_or((0, 0));
                let cpumask = format!("{:x}", 1u128 << r.core.min(127));
                let mut threads = Vec::new();
                if r.index == 0 {
                    threads.push(json!({"name": "app_thread", "id": 1, "cpumask": cpumask,
                                        "elapsed": r.busy_ns + r.idle_ns}));
                }
                threads.push(json!({"name": poll_group_name(r.index), "id": r.index + 2,
                                    "cpumask": cpumask, "elapsed": r.busy_ns + r.idle_ns}));
                json!({"lcore": r.core, "tid": r.tid, "busy": r.busy_ns, "idle": r.idle_ns,
                       "in_interrupt": interrupt, "irq": 0, "sys": sys, "usr": usr,
                       "lw_threads": threads})
            })
            .collect();
        Ok(json!({"tick_rate": TICK_RATE, "pid": std::process::id(), "reactors": reactors}))
    }

    fn dispatch(&mut self, method: &str, p: Option<Value>) -> Result<Value, RpcError> {
        match method {
            "spdk_get_version" => self.spdk_get_version(p),
            "rpc_get_methods" => self.rpc_get_methods(p),
            "framework_wait_init" => Ok(json!(true)),
            "framework_get_reactors" => self.framework_get_reactors(p),
            "spdk_kill_instance" => self.spdk_kill_instance(p),
            "bdev_get_bdevs" => self.bdev_get_bdevs(p),
            "bdev_malloc_create" => self.bdev_malloc_create(p),
            "bdev_malloc_delete" => self.bdev_base_delete(p, true),
            "bdev_aio_create" => self.bdev_aio_create(p),
            "bdev_aio_delete" => self.bdev_base_delete(p, false),
            "bdev_lvol_create_lvstore" => self.bdev_lvol_create_lvstore(p),
            "bdev_lvol_get_lvstores" => self.bdev_lvol_get_lvstores(p),
            "bdev_lvol_delete_lvstore" => self.bdev_lvol_delete_lvstore(p),
            "bdev_lvol_create" => self.bdev_lvol_create(p),
            "bdev_lvol_snapshot" => self.bdev_lvol_snapshot(p),
            "bdev_lvol_clone" => self.bdev_lvol_clone(p),
            "bdev_lvol_set_read_only" => self.bdev_lvol_set_read_only(p),
            "bdev_lvol_resize" => self.bdev_lvol_resize(p),
            "bdev_lvol_delete" => self.bdev_lvol_delete(p),
            "bdev_lvol_get_lvols" => self.bdev_lvol_get_lvols(p),
            "nvmf_create_transport" => self.nvmf_create_transport(p),
            "nvmf_get_transports" => self.nvmf_get_transports(p),
            "nvmf_create_subsystem" => self.nvmf_create_subsystem(p),
            "nvmf_delete_subsystem" => self.nvmf_delete_subsystem(p),
            "nvmf_get_subsystems" => self.nvmf_get_subsystems(p),
            "nvmf_subsystem_add_listener" => self.nvmf_subsystem_add_listener(p),
            "nvmf_subsystem_add_ns" => self.nvmf_subsystem_add_ns(p),
            "nvmf_subsystem_remove_ns" => self.nvmf_subsystem_remove_ns(p),
            "nvmf_subsystem_add_host" => self.nvmf_subsystem_add_host(p),
            "nvmf_subsystem_remove_host" => self.nvmf_subsystem_remove_host(p),
            "nvmf_subsystem_allow_any_host" => self.nvmf_subsystem_allow_any_host(p),
            "bdev_lvol_rename" => self.bdev_lvol_rename(p),
            "bdev_lvol_rename_lvstore" => self.bdev_lvol_rename_lvstore(p),
            "bdev_lvol_grow_lvstore" => self.bdev_lvol_grow_lvstore(p),
            "bdev_lvol_inflate" => self.bdev_lvol_inflate(p),
            "bdev_lvol_decouple_parent" => self.bdev_lvol_decouple_parent(p),
            "nvmf_subsystem_remove_listener" => self.nvmf_subsystem_remove_listener(p),
            "nvmf_subsystem_get_listeners" => self.nvmf_subsystem_get_listeners(p),
            "framework_get_subsystems" => self.framework_get_subsystems(p),
            "framework_get_config" => self.framework_get_config(p),
            "bdev_get_iostat" => self.bdev_get_iostat(p),
            "nvmf_subsystem_get_controllers" => self.nvmf_subsystem_get_controllers(p),
            "nvmf_subsystem_get_qpairs" => self.nvmf_subsystem_get_qpairs(p),
            "nvmf_get_stats" => self.nvmf_get_stats(p),
            "bdev_wait_for_examine" => {
                if p.is_some() {
                    return Err(RpcError::invalid_params());
                }
                Ok(json!(true))
            }
            m if m.starts_with("thin_") => self.thin_dispatch(m, p),
            _ => Err(RpcError::method_not_found()),
        }
    }
}

fn mapped_blocks(s: &Lvstore, l: &Lvol) -> u64 {
    s.pool.mapped_blocks(l.dev_id).unwrap_or(0)
}

fn is_snapshot(s: &Lvstore, l: &Lvol) -> bool {
    l.snapshot || s.lvols.iter().any(|c| c.parent == Some(l.uuid))
}

impl Rpc {
    /// A registry managing the running target `target`, which already listens on `bound`.
    /// `stop` is set when a client calls `spdk_kill_instance`.
    pub fn new(target: TargetHandle, bound: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> Self {
        Self {
            state: Mutex::new(State {
                target: Some(target),
                bases: Vec::new(),
                lvstores: Vec::new(),
                next_malloc: 0,
                transport: None,
                subs: Vec::new(),
                bound,
                dropped: Vec::new(),
            }),
            stop,
            persist: Mutex::new(None),
            report: Mutex::new(config::Report::default()),
        }
    }

    /// Commits every pool and hands the target back (for a clean stop).
    pub fn shutdown(&self) -> Option<TargetHandle> {
        let mut st = self.state.lock().ok()?;
        for s in &st.lvstores {
            if let Err(e) = s.pool.commit() {
                warn!("lvstore {}: commit: {e}", s.name);
            }
        }
        st.target.take()
    }
}

impl Handler for Rpc {
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        self.call_inner(method, params, true)
    }

    fn after_response(&self, method: &str) {
        if method == "spdk_kill_instance" {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

// ----- configuration replay, persistence and reconcile (see `rpc::config`) -----

impl Rpc {
    /// Runs a method as a client call would; `persist`: rewrite the persisted configuration
    /// after a successful change (not while replaying one).
    fn call_inner(
        &self,
        method: &str,
        params: Option<Value>,
        persist: bool,
    ) -> Result<Value, RpcError> {
        if method == "framework_get_reconcile_report" {
            if params.is_some() {
                return Err(RpcError::new(
                    -32602,
                    "'framework_get_reconcile_report' requires no arguments",
                ));
            }
            let r = self.report.lock().map_err(|_| RpcError::internal())?;
            return Ok(r.to_json());
        }
        let mut st = self.state.lock().map_err(|_| RpcError::internal())?;
        let mut r = st.dispatch(method, params);
        let changed = r.is_ok();
        if changed && method.starts_with("bdev_lvol_") && !method.starts_with("bdev_lvol_get") {
            if let Err(e) = st.save_side_tables() {
                r = Err(e);
            }
        }
        if changed && persist && config::changes_state(method) {
            Self::persist_locked(&mut st, &self.persist);
        }
        r
    }

    fn persist_locked(st: &mut State, persist: &Mutex<Option<config::Persist>>) {
        let Ok(mut p) = persist.lock() else { return };
        if let Some(p) = p.as_mut() {
            Self::save_config(st, p);
        }
    }

    fn save_config(st: &mut State, p: &mut config::Persist) {
        match config::full_config(&mut |m, a| st.dispatch(m, a)) {
            Ok(v) => {
                if let Err(e) = p.save(&v) {
                    log::error!("saving the configuration to {}: {e}", p.path().display());
                }
            }
            Err(e) => log::error!("building the configuration: {}", e.message),
        }
    }

    /// Replays configuration `entries` through the dispatcher (nothing is persisted
    /// meanwhile).
    pub fn replay(
        &self,
        entries: &[config::Entry],
        opts: config::ReplayOptions,
    ) -> Result<config::Outcome, Box<config::Failure>> {
        config::replay(entries, &mut |m, p| self.call_inner(m, p, false), opts)
    }

    /// The current configuration document (what `save_config` prints).
    pub fn current_config(&self) -> Result<Value, RpcError> {
        config::full_config(&mut |m, p| self.call_inner(m, p, false))
    }

    /// Every lvstore's side-table rows against its pool's thin devices.
    pub fn inventory(&self) -> Vec<config::LvstoreInventory> {
        let Ok(st) = self.state.lock() else {
            return Vec::new();
        };
        let mut out: Vec<config::LvstoreInventory> = Vec::new();
        for s in &st.lvstores {
            let lvols = s
                .lvols
                .iter()
                .map(|l| {
                    let from = l.size_bytes.div_ceil(s.cluster_bytes);
                    let id = l.dev_id;
                    let beyond = s
                        .pool
                        .with_pool(|p| p.mappings(id, from, u64::MAX))
                        .ok()
                        .and_then(|m| m.last().map(|(vb, _)| (vb + 1) * s.cluster_bytes));
                    config::LvolRow {
                        name: l.name.clone(),
                        uuid: format_uuid(&l.uuid),
                        dev_id: l.dev_id,
                        size_bytes: l.size_bytes,
                        mapped_beyond_end: beyond,
                    }
                })
                .collect();
            let devices = match s.pool.with_pool(|p| p.devices()) {
                Ok(d) => d,
                Err(e) => {
                    warn!("lvstore {}: listing thin devices: {e}", s.name);
                    Vec::new()
                }
            };
            out.push(config::LvstoreInventory {
                name: s.name.clone(),
                lvols,
                dropped: Vec::new(),
                devices,
            });
        }
        for (lvs, row) in &st.dropped {
            match out.iter_mut().find(|s| s.name == *lvs) {
                Some(s) => s.dropped.push(row.clone()),
                None => out.push(config::LvstoreInventory {
                    name: lvs.clone(),
                    dropped: vec![row.clone()],
                    ..config::LvstoreInventory::default()
                }),
            }
        }
        out
    }

    /// Sets the report `framework_get_reconcile_report` serves.
    pub fn set_report(&self, r: config::Report) {
        if let Ok(mut g) = self.report.lock() {
            *g = r;
        }
    }

    /// From now on, every successful change rewrites `p`'s file; `write_now`: write the
    /// current configuration immediately (after loading a `--json` file).
    pub fn enable_persistence(&self, mut p: config::Persist, write_now: bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if write_now {
            Self::save_config(&mut st, &mut p);
        }
        if let Ok(mut g) = self.persist.lock() {
            *g = Some(p);
        }
    }
}

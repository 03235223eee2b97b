//! dm-thin extras as methods of our own (`thin_*`), reached through the `spdk-rpc --plugin`
//! module `scripts/spdk_rpc_thin.py`: a pool on separate metadata and data bdevs, pool
//! status, metadata snapshots, the transaction id, the low-water mark and the delta
//! between two thin devices.
//!
//! A two-device pool is an lvstore for the rest of the RPC surface (`bdev_lvol_create -l
//! POOL`, snapshots, clones, exports). Its bdevs stay byte-identical to what Linux dm-thin
//! expects (metadata device = the whole metadata bdev, data device = the whole data bdev),
//! so it carries no label: its side table (volume names, UUIDs, sizes) lives in the
//! daemon's config, emitted by `framework_get_config` as a `thin_pool_create` entry.
//!
//! Invariants:
//! * a read-only method (`thin_pool_status`, `thin_delta`) never commits the pool;
//! * `thin_pool_create` never formats over valid dm-thin metadata unless asked to with
//!   `force`, and never formats a bdev that is neither blank nor dm-thin unless asked to
//!   with `format`;
//! * every error is an SPDK-style `-errno` / strerror pair (decode failures are the bdev
//!   modules' `-32603 spdk_json_decode_object failed`).
//!
//! This module is a child of `methods` so that it extends the registry (`State`) without
//! widening its fields' visibility.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{info, warn};
use serde_json::{json, Value};
use thin_core::block::{Block, BlockDevice, BlockError, BLOCK_SIZE};
use thin_core::thin::superblock::{self, Superblock};
use thin_core::thin::{OpenOptions as PoolOpenOptions, Pool, PoolError};

use super::super::params::{format_uuid, parse_uuid, random_uuid, Params};
use super::super::{Errno, RpcError};
use super::{bdev_decode, lvstore_io, name_ok, BaseKind, Claim, Found, Lvol, Lvstore, State};
use crate::bdev::file::FileBdev;
use crate::bdev::lvs::Layout;
use crate::bdev::thin::{PoolDevices, Region, ThinPool, DEFAULT_CACHE_BLOCKS};
use crate::bdev::{Bdev, IoStat};

/// dm-thin's data block size limits, in 512-byte sectors.
const DATA_BLOCK_MIN_SECTORS: u32 = 128;
const DATA_BLOCK_MAX_SECTORS: u32 = 1 << 21;
/// Smallest metadata bdev we format (LVM's minimum for thin pool metadata is 2 MiB).
const MIN_META_BYTES: u64 = 2 << 20;
/// Cache of the read-only probe of existing metadata.
const PROBE_CACHE_BLOCKS: usize = 64;

/// What an lvstore that is a two-device pool carries besides the common fields.
pub(super) struct TwoDevice {
    /// The data bdev (the metadata bdev is `Lvstore::base`).
    pub(super) data_base: String,
}

/// A borrowed bdev as a read-only dm-thin metadata device (the probe before the bdev is
/// handed to the pool: a failed probe leaves the bdev where it was).
struct Probe<'a> {
    dev: &'a mut dyn Bdev,
    nr_blocks: u64,
}

impl<'a> Probe<'a> {
    fn new(dev: &'a mut dyn Bdev) -> Self {
        let nr_blocks = dev.num_blocks() * u64::from(dev.block_size()) / BLOCK_SIZE as u64;
        Self { dev, nr_blocks }
    }
}

impl BlockDevice for Probe<'_> {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        if block >= self.nr_blocks {
            return Err(BlockError::OutOfRange {
                block,
                nr_blocks: self.nr_blocks,
            });
        }
        let lba = block * BLOCK_SIZE as u64 / u64::from(self.dev.block_size());
        self.dev
            .read(lba, buf)
            .map_err(|_| BlockError::Read { block })
    }
    fn write_block(&mut self, block: u64, _buf: &Block) -> Result<(), BlockError> {
        Err(BlockError::Write { block })
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// What block 0 of a metadata bdev holds.
enum MetaState {
    Blank,
    /// A valid dm-thin superblock: data block size and data blocks of the pool.
    Valid {
        data_block_sectors: u32,
        nr_data_blocks: u64,
    },
    /// Neither: another format, or damaged metadata.
    Other(String),
}

fn probe(dev: &mut dyn Bdev) -> Result<MetaState, RpcError> {
    let mut buf: Box<Block> = Box::new([0u8; BLOCK_SIZE]);
    if dev.num_blocks() * u64::from(dev.block_size()) < BLOCK_SIZE as u64 {
        return Ok(MetaState::Other("smaller than one metadata block".into()));
    }
    dev.read(0, &mut buf[..])
        .map_err(|e| RpcError::new(-5, e.to_string()))?;
    if superblock::is_zeroed(&buf) {
        return Ok(MetaState::Blank);
    }
    let sb = match Superblock::parse(&buf, 0) {
        Ok(sb) => sb,
        Err(e) => return Ok(MetaState::Other(e.to_string())),
    };
    let opened = Pool::open(
        Probe::new(dev),
        PoolOpenOptions {
            cache_blocks: PROBE_CACHE_BLOCKS,
            read_only: true,
        },
    );
    match opened.and_then(|mut p| p.stats()) {
        Ok(st) => Ok(MetaState::Valid {
            data_block_sectors: sb.data_block_size,
            nr_data_blocks: st.nr_data_blocks,
        }),
        Err(e) => Ok(MetaState::Other(format!("dm-thin superblock, but {e}"))),
    }
}

/// A side-table row as JSON (the shape of the lvstore label's rows).
fn row_json(l: &Lvol) -> Value {
    json!({"uuid": format_uuid(&l.uuid), "name": l.name, "dev_id": l.dev_id,
           "size_bytes": l.size_bytes, "thin": l.thin,
           "read_only": l.read_only.load(Ordering::Relaxed),
           "parent": l.parent.map(|p| format_uuid(&p)), "snapshot": l.snapshot})
}

/// Parses the `volumes` member of `thin_pool_create` (rows as [`row_json`] writes them).
fn parse_rows(v: Option<Value>) -> Result<Vec<Lvol>, RpcError> {
    let rows = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bdev_decode()),
    };
    let uuid = |v: &Value| v.as_str().and_then(parse_uuid);
    let mut out: Vec<Lvol> = Vec::new();
    for r in rows {
        let (Some(u), Some(n), Some(id), Some(size)) = (
            uuid(&r["uuid"]),
            r["name"].as_str(),
            r["dev_id"].as_u64(),
            r["size_bytes"].as_u64(),
        ) else {
            return Err(bdev_decode());
        };
        let parent = match &r["parent"] {
            Value::Null => None,
            p => Some(uuid(p).ok_or_else(bdev_decode)?),
        };
        if !name_ok(n)
            || out
                .iter()
                .any(|l| l.name == n || l.uuid == u || l.dev_id == id)
        {
            return Err(RpcError::errno(Errno::Inval));
        }
        out.push(Lvol {
            uuid: u,
            name: n.to_owned(),
            dev_id: id,
            size_bytes: size,
            thin: r["thin"].as_bool().unwrap_or(true),
            read_only: Arc::new(AtomicBool::new(r["read_only"].as_bool().unwrap_or(false))),
            parent,
            snapshot: r["snapshot"].as_bool().unwrap_or(false),
            exported: false,
            stat: IoStat::default(),
        });
    }
    Ok(out)
}

/// Differences between two mapping lists (ascending virtual blocks), block by block, with
/// touching differences of one kind merged: thin_delta's plain output.
pub(super) fn delta(left: &[(u64, u64)], right: &[(u64, u64)]) -> Vec<(&'static str, u64, u64)> {
    let mut out: Vec<(&'static str, u64, u64)> = Vec::new();
    let mut emit = |kind: &'static str, v: u64| {
        if let Some(last) = out.last_mut() {
            if last.0 == kind && last.1.checked_add(last.2) == Some(v) {
                last.2 += 1;
                return;
            }
        }
        out.push((kind, v, 1));
    };
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        match (left.get(i), right.get(j)) {
            (Some(&(lv, lb)), Some(&(rv, rb))) => {
                if lv < rv {
                    emit("left_only", lv);
                    i += 1;
                } else if lv > rv {
                    emit("right_only", rv);
                    j += 1;
                } else {
                    if lb != rb {
                        emit("different", lv);
                    }
                    i += 1;
                    j += 1;
                }
            }
            (Some(&(lv, _)), None) => {
                emit("left_only", lv);
                i += 1;
            }
            (None, Some(&(rv, _))) => {
                emit("right_only", rv);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

fn reopen_aio(b: &mut super::Base) {
    if let BaseKind::Aio { filename, .. } = &b.kind {
        match FileBdev::open(
            &b.name,
            std::path::Path::new(filename),
            b.block_size,
            b.uuid,
        ) {
            Ok(f) => b.dev = Some(Box::new(f)),
            Err(e) => warn!("bdev {}: reopening {filename}: {e}", b.name),
        }
    } else {
        warn!(
            "bdev {}: a malloc bdev handed to a pool that failed to start is lost",
            b.name
        );
    }
}

impl State {
    pub(super) fn thin_dispatch(
        &mut self,
        method: &str,
        p: Option<Value>,
    ) -> Result<Value, RpcError> {
        match method {
            "thin_pool_create" => self.thin_pool_create(p),
            "thin_pool_status" => self.thin_pool_status(p),
            "thin_pool_reserve_metadata_snap" => self.thin_pool_metadata_snap(p, true),
            "thin_pool_release_metadata_snap" => self.thin_pool_metadata_snap(p, false),
            "thin_pool_set_transaction_id" => self.thin_pool_set_transaction_id(p),
            "thin_pool_set_low_water_mark" => self.thin_pool_set_low_water_mark(p),
            "thin_delta" => self.thin_delta(p),
            _ => Err(RpcError::method_not_found()),
        }
    }

    /// The pool named (or with the UUID) `pool`: -19 when there is none.
    fn thin_pool_index(&self, pool: &str) -> Result<usize, RpcError> {
        self.lvstores
            .iter()
            .position(|s| s.name == pool || format_uuid(&s.uuid) == pool.to_ascii_lowercase())
            .ok_or_else(|| RpcError::errno(Errno::NoDev))
    }

    /// A base bdev for a pool: unknown → -19, an lvol → -95, claimed → -1.
    fn thin_base(&self, name: &str) -> Result<usize, RpcError> {
        let i = match self.find(name) {
            Some(Found::Base(i)) => i,
            Some(Found::Lvol(..)) => return Err(RpcError::errno(Errno::NotSup)),
            None => return Err(RpcError::errno(Errno::NoDev)),
        };
        let b = &self.bases[i];
        if b.claim != Claim::None || b.dev.is_none() {
            return Err(RpcError::errno(Errno::Perm));
        }
        Ok(i)
    }

    fn thin_pool_create(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let name = p.str("name")?;
        let name = p.req(name)?;
        let meta = p.str("metadata_bdev")?;
        let meta = p.req(meta)?;
        let data = p.str("data_bdev")?;
        let data = p.req(data)?;
        let dbs = p.u32("data_block_size")?;
        let format = p.bool("format")?;
        let force = p.bool("force")?.unwrap_or(false);
        let lwm = p.u64("low_water_mark")?.unwrap_or(0);
        let uuid = p.uuid("uuid")?;
        let rows = p.value("volumes");
        p.finish()?;
        let mut lvols = parse_rows(rows)?;
        if !name_ok(&name) {
            return Err(RpcError::errno(Errno::Inval));
        }
        if let Some(d) = dbs {
            if d < DATA_BLOCK_MIN_SECTORS
                || !d.is_multiple_of(DATA_BLOCK_MIN_SECTORS)
                || d > DATA_BLOCK_MAX_SECTORS
            {
                return Err(RpcError::errno(Errno::Inval));
            }
        }
        if self
            .lvstores
            .iter()
            .any(|s| s.name == name || Some(s.uuid) == uuid)
        {
            return Err(RpcError::errno(Errno::Exist));
        }
        let im = self.thin_base(&meta)?;
        let id = self.thin_base(&data)?;
        if im == id {
            return Err(RpcError::errno(Errno::Inval));
        }
        let state = match self.bases[im].dev.as_mut() {
            Some(d) => probe(d.as_mut())?,
            None => return Err(RpcError::errno(Errno::Perm)),
        };
        let data_bytes = {
            let b = &self.bases[id];
            b.num_blocks * u64::from(b.block_size)
        };
        let meta_bytes = {
            let b = &self.bases[im];
            b.num_blocks * u64::from(b.block_size)
        };
        // Open what is there, format what is blank; anything else only when asked to.
        let open = match (format, &state) {
            (Some(true), MetaState::Valid { .. }) if !force => {
                warn!(
                    "thin_pool_create {name}: {meta} holds dm-thin metadata; not formatting \
                     without force"
                );
                return Err(RpcError::errno(Errno::Exist));
            }
            (Some(true), _) => false,
            (_, MetaState::Valid { .. }) => true,
            (Some(false), _) => {
                warn!("thin_pool_create {name}: {meta} holds no dm-thin metadata to open");
                return Err(RpcError::errno(Errno::Inval));
            }
            (None, MetaState::Blank) => false,
            (None, MetaState::Other(why)) => {
                warn!(
                    "thin_pool_create {name}: {meta} is neither blank nor dm-thin metadata \
                     ({why}); pass format to overwrite it"
                );
                return Err(RpcError::errno(Errno::Inval));
            }
        };
        let sectors = match (&state, open) {
            (
                MetaState::Valid {
                    data_block_sectors,
                    nr_data_blocks,
                },
                true,
            ) => {
                if dbs.is_some_and(|d| d != *data_block_sectors) {
                    return Err(RpcError::errno(Errno::Inval));
                }
                if data_bytes / (u64::from(*data_block_sectors) * 512) < *nr_data_blocks {
                    // The data bdev is smaller than the pool recorded in the metadata.
                    return Err(RpcError::params_errno(Errno::NoSpc));
                }
                *data_block_sectors
            }
            _ => {
                let d = dbs.unwrap_or(DATA_BLOCK_MIN_SECTORS);
                if !lvols.is_empty() {
                    // Rows name thin devices of existing metadata.
                    return Err(RpcError::errno(Errno::Inval));
                }
                if meta_bytes < MIN_META_BYTES || data_bytes < u64::from(d) * 512 {
                    return Err(RpcError::params_errno(Errno::NoSpc));
                }
                d
            }
        };
        let block_size = self.bases[id].block_size;
        let (Some(mdev), Some(ddev)) = (self.bases[im].dev.take(), self.bases[id].dev.take())
        else {
            return Err(RpcError::errno(Errno::Perm));
        };
        let devs = PoolDevices {
            meta: mdev,
            meta_region: Region::WHOLE,
            data: Some(ddev),
            data_region: Region::WHOLE,
        };
        let r = if open {
            ThinPool::open_on(devs, DEFAULT_CACHE_BLOCKS)
        } else {
            ThinPool::create_on(devs, sectors, DEFAULT_CACHE_BLOCKS)
        };
        let pool = match r {
            Ok(p) => p,
            Err(e) => {
                warn!("thin_pool_create {name} on {meta} + {data}: {e}");
                reopen_aio(&mut self.bases[im]);
                reopen_aio(&mut self.bases[id]);
                return Err(lvstore_io(&e));
            }
        };
        // Like lvstores: a write that finds no free block fails at once (ENOSPC).
        let _ = pool.set_no_space_timeout_ms(0);
        // Rows without a thin device are dropped, devices without a row reported (as when
        // an lvstore is loaded from its label).
        lvols.retain(|l| {
            let ok = pool.inspect(|p| p.device_exists(l.dev_id)).ok() == Some(Ok(true));
            if !ok {
                warn!(
                    "pool {name}: volume {} has no thin device {}; dropped",
                    l.name, l.dev_id
                );
            }
            ok
        });
        if let Ok(Ok(devs)) = pool.inspect(|p| p.devices()) {
            for d in devs {
                if !lvols.iter().any(|l| l.dev_id == d) {
                    warn!("pool {name}: thin device {d} has no volume row (kept, not shown)");
                }
            }
        }
        if let Err(e) = pool.set_low_water_mark(lwm) {
            warn!("pool {name}: low-water mark: {e}");
        }
        let cluster_bytes = u64::from(sectors) * 512;
        let uuid = uuid.unwrap_or_else(random_uuid);
        self.bases[im].claim = Claim::Lvstore;
        self.bases[id].claim = Claim::Lvstore;
        info!(
            "pool {name}: {} dm-thin metadata on {meta}, data on {data}, {cluster_bytes} B blocks, \
             {} volumes",
            if open { "opened" } else { "formatted" },
            lvols.len()
        );
        self.lvstores.push(Lvstore {
            uuid,
            name,
            base: meta,
            pool,
            cluster_bytes,
            block_size,
            lvols,
            // No label: the whole bdevs are dm-thin's (the layout only records that).
            layout: Layout {
                meta_offset: 0,
                meta_bytes,
                data_offset: 0,
                cluster_bytes,
            },
            label_seq: 0,
            label_table: Vec::new(),
            two_dev: Some(TwoDevice { data_base: data }),
        });
        Ok(json!(format_uuid(&uuid)))
    }

    /// The `pool` member, required, and a strict finish.
    fn thin_pool_param(&self, p: Option<Value>) -> Result<usize, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let pool = p.str("pool")?;
        let pool = p.req(pool)?;
        p.finish()?;
        self.thin_pool_index(&pool)
    }

    fn thin_pool_status(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let i = self.thin_pool_param(p)?;
        let s = &self.lvstores[i];
        let st = s.pool.status().map_err(|e| lvstore_io(&e))?;
        let x = &st.stats;
        let mode = if x.read_only || x.needs_check {
            "ro"
        } else if st.out_of_data_space {
            "out_of_data_space"
        } else {
            "rw"
        };
        let data_bdev = s.two_dev.as_ref().map_or(&s.base, |t| &t.data_base);
        let timeout_ms = s.pool.no_space_timeout_ms().map_err(|e| lvstore_io(&e))?;
        Ok(json!({
            "name": s.name, "uuid": format_uuid(&s.uuid),
            "metadata_bdev": s.base, "data_bdev": data_bdev,
            "transaction_id": x.transaction_id,
            "used_metadata_blocks": x.nr_metadata_blocks.saturating_sub(x.free_metadata_blocks),
            "total_metadata_blocks": x.nr_metadata_blocks,
            "used_data_blocks": x.nr_data_blocks.saturating_sub(x.free_data_blocks),
            "total_data_blocks": x.nr_data_blocks,
            "held_metadata_root": if x.held_root == 0 { Value::Null } else { json!(x.held_root) },
            "mode": mode,
            "discard_passdown": false,
            // dm-thin: `error_if_no_space`, or queue writes for `no_space_timeout`.
            "no_space_policy": if timeout_ms == 0 { "error" } else { "queue" },
            "no_space_timeout_s": timeout_ms / 1000,
            "needs_check": x.needs_check,
            "data_block_size": x.data_block_size,
            "low_water_mark": st.low_water_blocks,
            "low_water_mark_crossed": st.low_water_crossed,
            "thin_devices": x.nr_devices,
        }))
    }

    fn thin_pool_metadata_snap(
        &mut self,
        p: Option<Value>,
        reserve: bool,
    ) -> Result<Value, RpcError> {
        let i = self.thin_pool_param(p)?;
        let s = &self.lvstores[i];
        let r = s
            .pool
            .with_pool(|p| {
                let r = if reserve {
                    p.reserve_metadata_snap().map(|b| json!(b))
                } else {
                    p.release_metadata_snap().map(|()| json!(true))
                };
                // dm-thin: a second reserve is EBUSY, a release with none held EINVAL.
                match r {
                    Ok(v) => Ok(Ok(v)),
                    Err(PoolError::MetadataSnapExists) => Ok(Err(Errno::Busy)),
                    Err(PoolError::NoMetadataSnap) => Ok(Err(Errno::Inval)),
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| lvstore_io(&e))?;
        let v = r.map_err(RpcError::errno)?;
        info!(
            "pool {}: metadata snapshot {}",
            s.name,
            if reserve { "reserved" } else { "released" }
        );
        Ok(v)
    }

    fn thin_pool_set_transaction_id(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let pool = p.str("pool")?;
        let pool = p.req(pool)?;
        let old = p.u64("old")?;
        let old = p.req(old)?;
        let new = p.u64("new")?;
        let new = p.req(new)?;
        p.finish()?;
        let i = self.thin_pool_index(&pool)?;
        let s = &self.lvstores[i];
        s.pool
            .with_pool(|p| match p.set_transaction_id(old, new) {
                Ok(()) => Ok(Ok(())),
                // dm-thin's set_transaction_id message: EINVAL when `old` is not current.
                Err(PoolError::TransactionIdMismatch { actual, .. }) => Ok(Err(actual)),
                Err(e) => Err(e),
            })
            .map_err(|e| lvstore_io(&e))?
            .map_err(|actual| {
                warn!("pool {pool}: transaction id is {actual}, not {old}");
                RpcError::errno(Errno::Inval)
            })?;
        Ok(json!(true))
    }

    fn thin_pool_set_low_water_mark(&mut self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let pool = p.str("pool")?;
        let pool = p.req(pool)?;
        let blocks = p.u64("blocks")?;
        let blocks = p.req(blocks)?;
        p.finish()?;
        let i = self.thin_pool_index(&pool)?;
        self.lvstores[i]
            .pool
            .set_low_water_mark(blocks)
            .map_err(|e| lvstore_io(&e))?;
        Ok(json!(true))
    }

    /// A volume of pool `i` by lvol name (`name`, `pool/name` or UUID) or dm-thin device id.
    fn thin_dev(&self, i: usize, v: Option<Value>) -> Result<u64, RpcError> {
        let s = &self.lvstores[i];
        let id = match v {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(bdev_decode)?,
            Some(Value::String(n)) => {
                let row = s.lvols.iter().find(|l| {
                    l.name == n
                        || format_uuid(&l.uuid) == n.to_ascii_lowercase()
                        || n.strip_prefix(s.name.as_str())
                            .and_then(|r| r.strip_prefix('/'))
                            == Some(l.name.as_str())
                });
                match row {
                    Some(l) => l.dev_id,
                    None => n
                        .parse::<u64>()
                        .map_err(|_| RpcError::errno(Errno::NoDev))?,
                }
            }
            _ => return Err(bdev_decode()),
        };
        match s.pool.inspect(|p| p.device_exists(id)) {
            Ok(Ok(true)) => Ok(id),
            Ok(Ok(false)) | Ok(Err(PoolError::BadDeviceId(_))) => {
                Err(RpcError::errno(Errno::NoDev))
            }
            Ok(Err(e)) => Err(RpcError::new(-5, e.to_string())),
            Err(e) => Err(lvstore_io(&e)),
        }
    }

    fn thin_delta(&self, p: Option<Value>) -> Result<Value, RpcError> {
        let mut p = Params::new(p, bdev_decode())?;
        let pool = p.str("pool")?;
        let pool = p.req(pool)?;
        let a = p.value("thin1");
        let b = p.value("thin2");
        p.finish()?;
        if a.is_none() || b.is_none() {
            return Err(bdev_decode());
        }
        let i = self.thin_pool_index(&pool)?;
        let (a, b) = (self.thin_dev(i, a)?, self.thin_dev(i, b)?);
        let walk = |id: u64| -> Result<Vec<(u64, u64)>, RpcError> {
            let m = self.lvstores[i]
                .pool
                .inspect(|p| p.mappings(id, 0, u64::MAX))
                .map_err(|e| lvstore_io(&e))?
                .map_err(|e| RpcError::new(-5, e.to_string()))?;
            Ok(m.into_iter().map(|(v, bt)| (v, bt.block)).collect())
        };
        let (left, right) = (walk(a)?, walk(b)?);
        Ok(Value::Array(
            delta(&left, &right)
                .into_iter()
                .map(
                    |(kind, begin, length)| json!({"type": kind, "begin": begin, "length": length}),
                )
                .collect(),
        ))
    }

    /// Gives a two-device pool's bdevs back to the registry, unclaimed (after a final
    /// commit). The pool must have no other users.
    pub(super) fn thin_release(&mut self, s: Lvstore) {
        if let Err(e) = s.pool.commit() {
            warn!("pool {}: final commit: {e}", s.name);
        }
        let data_base = s.two_dev.map(|t| t.data_base);
        match s.pool.into_bdevs() {
            Ok((meta, data)) => {
                let mut give = |name: &str, dev: Box<dyn Bdev>| {
                    if let Some(b) = self.bases.iter_mut().find(|b| b.name == name) {
                        b.dev = Some(dev);
                        b.claim = Claim::None;
                    }
                };
                give(&s.base, meta);
                if let (Some(n), Some(d)) = (data_base, data) {
                    give(&n, d);
                }
            }
            Err(_) => warn!("pool {}: still referenced; its bdevs stay claimed", s.name),
        }
    }

    /// `bdev_lvol_delete_lvstore` on a two-device pool: deletes the thin devices of its
    /// volumes (as deleting an lvstore deletes its lvols) and gives both bdevs back; the
    /// metadata bdev keeps valid dm-thin metadata.
    pub(super) fn thin_pool_destroy(&mut self, i: usize) -> Result<Value, RpcError> {
        let s = self.lvstores.remove(i);
        let ids: Vec<u64> = s.lvols.iter().map(|l| l.dev_id).collect();
        if let Err(e) = s
            .pool
            .with_pool(|p| ids.iter().try_for_each(|&id| p.delete(id)))
        {
            warn!("pool {}: deleting its thin devices: {e}", s.name);
        }
        let name = s.name.clone();
        self.thin_release(s);
        info!("pool {name} deleted");
        Ok(json!(true))
    }

    /// `thin_pool_create` entries of the two-device pools (bdev subsystem config): opening
    /// the metadata again with the volume rows brings the pool back as it is.
    pub(super) fn thin_config(&self) -> Vec<Value> {
        self.lvstores
            .iter()
            .filter_map(|s| {
                let t = s.two_dev.as_ref()?;
                let lwm = s.pool.low_water_mark().unwrap_or(0);
                Some(json!({"method": "thin_pool_create", "params": {
                    "name": s.name, "uuid": format_uuid(&s.uuid),
                    "metadata_bdev": s.base, "data_bdev": t.data_base,
                    "data_block_size": s.cluster_bytes / 512,
                    "low_water_mark": lwm,
                    "volumes": s.lvols.iter().map(row_json).collect::<Vec<_>>()}}))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::delta;

    #[test]
    fn delta_merges_touching_differences_of_one_kind() {
        let left = [(0, 10), (1, 11), (2, 12), (5, 15), (7, 17)];
        let right = [(0, 10), (1, 21), (2, 22), (3, 23), (7, 17), (9, 19)];
        assert_eq!(
            delta(&left, &right),
            vec![
                ("different", 1, 2),
                ("right_only", 3, 1),
                ("left_only", 5, 1),
                ("right_only", 9, 1)
            ]
        );
        assert!(delta(&left, &left).is_empty());
        assert_eq!(delta(&[], &[(4, 1), (5, 2)]), vec![("right_only", 4, 2)]);
    }
}

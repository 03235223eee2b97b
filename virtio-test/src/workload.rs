//! The scripted workload: a list of operations, a model of what each device should hold, and
//! an executor that applies operations to the pool and the data disk and to the model alike.
//!
//! Invariants:
//! - the model is a pure function of the operations applied, so boot 2 rebuilds the committed
//!   state by replaying the committed script on the model alone;
//! - data moves in two phases, as the pool asks: copy (`BreakSharing` of a partial write) or
//!   zero (`Provision` of a partial write) the whole block, write the covered sectors, then
//!   `complete_write`;
//! - after the commit no write may go in place: in-place writes are not transactional, so the
//!   uncommitted work would otherwise change committed data.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use thin_core::thin::{Pool, PoolError, WritePlan};

use crate::disk::{DataDisk, MetaDisk, DATA_BLOCK_BYTES};
use crate::pattern::{fill_sector, fnv1a64, SECTORS, SECTOR_BYTES};
use crate::println;

/// Transaction id that marks "boot 1 committed the first phase".
pub const TRANS_COMMITTED: u64 = 1;
/// Transaction id set, never committed, by boot 1's uncommitted work.
pub const TRANS_UNCOMMITTED: u64 = 2;

/// Writes to device 9 in the bulk part (virtual blocks drawn from `1000..1000 + BULK_SPAN`).
const BULK_WRITES: u32 = 700;
const BULK_SPAN: u64 = 2000;

/// One step of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Thin(u64),
    Snap {
        id: u64,
        origin: u64,
    },
    /// Sectors `first..end` of virtual block `vblock`, written with pattern `tag`.
    Write {
        dev: u64,
        vblock: u64,
        first: u32,
        end: u32,
        tag: u32,
    },
    Discard {
        dev: u64,
        begin: u64,
        end: u64,
    },
    Delete(u64),
    SetTransaction {
        old: u64,
        new: u64,
    },
    Commit,
}

struct Script {
    ops: Vec<Op>,
    next_tag: u32,
}

impl Script {
    fn new(first_tag: u32) -> Self {
        Script {
            ops: Vec::new(),
            next_tag: first_tag,
        }
    }
    fn op(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }
    fn write(&mut self, dev: u64, vblock: u64, first: u32, end: u32) -> &mut Self {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.op(Op::Write {
            dev,
            vblock,
            first,
            end,
            tag,
        })
    }
    fn full(&mut self, dev: u64, vblock: u64) -> &mut Self {
        self.write(dev, vblock, 0, SECTORS as u32)
    }
}

/// Boot 1, first phase, ending in a commit with transaction id [`TRANS_COMMITTED`].
pub fn committed_script() -> Vec<Op> {
    let mut s = Script::new(1);
    s.op(Op::Thin(1));
    s.op(Op::Thin(9));
    for v in 0..24 {
        s.full(1, v); // provision, whole blocks
    }
    for v in 24..28 {
        s.write(1, v, 16, 48); // provision, partial: the rest is zeroed
    }
    s.op(Op::Snap { id: 2, origin: 1 });
    for v in (0..24).step_by(3) {
        s.full(1, v); // break sharing, whole block: no copy
    }
    for v in (1..28).step_by(4) {
        s.write(2, v, 100, 128); // break sharing, partial: copy first
    }
    s.op(Op::Snap { id: 3, origin: 2 }); // snapshot of a snapshot
    for v in (0..28).step_by(5) {
        s.write(3, v, 0, 8);
    }
    s.write(3, 0, 8, 16); // now exclusive: in place
    s.full(2, 2);
    s.op(Op::Snap { id: 4, origin: 3 }); // and of that one
    s.write(4, 3, 64, 72);
    s.write(3, 3, 1, 2);
    s.op(Op::Thin(5));
    for v in 0..8 {
        s.full(5, v * 7);
    }
    s.op(Op::Discard {
        dev: 5,
        begin: 7,
        end: 29,
    });
    s.op(Op::Discard {
        dev: 1,
        begin: 10,
        end: 14,
    });
    s.op(Op::Thin(6));
    for v in 0..6 {
        s.full(6, v);
    }
    s.op(Op::Delete(6));
    s.write(1, 12, 0, 64); // re-provision a discarded block, partially
                           // Bulk: enough mappings, inserted out of order, for multi-level mapping trees and for
                           // the metadata cache to evict; then a snapshot whose writes break sharing across them.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..BULK_WRITES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = 1000 + x % BULK_SPAN;
        s.full(9, v);
    }
    s.op(Op::Snap { id: 10, origin: 9 });
    for v in (1000..1000 + BULK_SPAN).step_by(7) {
        s.write(10, v, 0, 4);
    }
    s.op(Op::Discard {
        dev: 9,
        begin: 1000,
        end: 1000 + BULK_SPAN / 8,
    });
    s.op(Op::SetTransaction {
        old: 0,
        new: TRANS_COMMITTED,
    });
    s.op(Op::Commit);
    s.ops
}

/// Boot 1, second phase: work that is never committed (and must leave no trace).
pub fn uncommitted_script() -> Vec<Op> {
    let mut s = Script::new(1_000_000);
    s.op(Op::SetTransaction {
        old: TRANS_COMMITTED,
        new: TRANS_UNCOMMITTED,
    });
    s.op(Op::Thin(7));
    for v in 0..6 {
        s.full(7, v);
    }
    s.op(Op::Snap { id: 8, origin: 4 });
    s.write(4, 0, 0, 32); // shared with 8 now: break sharing, partial
    s.full(4, 5);
    for v in 40..44 {
        s.write(1, v, 8, 24);
    }
    s.op(Op::Discard {
        dev: 3,
        begin: 0,
        end: 10,
    });
    s.op(Op::Delete(5));
    s.op(Op::Delete(2));
    s.ops
}

/// Per device, per mapped virtual block, the write tag of each sector (0 = zero).
pub type Model = BTreeMap<u64, BTreeMap<u64, [u32; SECTORS]>>;

fn no_dev(dev: u64) -> String {
    format!("model: no device {dev}")
}

/// Applies `op` to the model; returns how many mappings a discard removed.
pub fn apply_model(model: &mut Model, op: &Op) -> Result<u64, String> {
    match *op {
        Op::Thin(id) => {
            if model.insert(id, BTreeMap::new()).is_some() {
                return Err(format!("model: device {id} exists"));
            }
        }
        Op::Snap { id, origin } => {
            let m = model.get(&origin).ok_or_else(|| no_dev(origin))?.clone();
            if model.insert(id, m).is_some() {
                return Err(format!("model: device {id} exists"));
            }
        }
        Op::Write {
            dev,
            vblock,
            first,
            end,
            tag,
        } => {
            let m = model.get_mut(&dev).ok_or_else(|| no_dev(dev))?;
            let tags = m.entry(vblock).or_insert([0; SECTORS]);
            for t in tags
                .get_mut(first as usize..end as usize)
                .ok_or("bad range")?
            {
                *t = tag;
            }
        }
        Op::Discard { dev, begin, end } => {
            let m = model.get_mut(&dev).ok_or_else(|| no_dev(dev))?;
            let before = m.len();
            m.retain(|&v, _| v < begin || v >= end);
            return Ok((before - m.len()) as u64);
        }
        Op::Delete(id) => {
            model.remove(&id).ok_or_else(|| no_dev(id))?;
        }
        Op::SetTransaction { .. } | Op::Commit => {}
    }
    Ok(0)
}

/// Replays `ops` on `model` alone.
pub fn replay(model: &mut Model, ops: &[Op]) -> Result<(), String> {
    for op in ops {
        apply_model(model, op)?;
    }
    Ok(())
}

/// How the pool asked writes to be done.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlanCounts {
    pub in_place: u32,
    pub provision_full: u32,
    pub provision_zeroed: u32,
    pub break_full: u32,
    pub break_copied: u32,
}

/// The pool, the data disk and the model, driven together.
pub struct Rig {
    pub pool: Pool<MetaDisk>,
    pub data: DataDisk,
    pub model: Model,
    pub allow_in_place: bool,
    pub counts: PlanCounts,
    buf: Vec<u8>,
    expect: Vec<u8>,
}

pub fn pool_err(what: &str, e: PoolError) -> String {
    format!("{what}: {e}")
}

/// Renders sectors `first..end` of a block with tags `tags` into `out` (from its start).
fn render(tags: &[u32], vblock: u64, first: usize, out: &mut [u8]) {
    for (i, (t, sector)) in tags
        .iter()
        .zip(out.chunks_exact_mut(SECTOR_BYTES))
        .enumerate()
    {
        fill_sector(*t, vblock, (first + i) as u32, sector);
    }
}

impl Rig {
    pub fn new(pool: Pool<MetaDisk>, data: DataDisk, model: Model) -> Self {
        Rig {
            pool,
            data,
            model,
            allow_in_place: true,
            counts: PlanCounts::default(),
            buf: vec![0; DATA_BLOCK_BYTES],
            expect: vec![0; DATA_BLOCK_BYTES],
        }
    }

    /// Runs `ops` in order.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op).map_err(|e| format!("op {i} {op:?}: {e}"))?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match self.try_apply(op)? {
            Ok(()) => Ok(()),
            Err((what, e)) => Err(pool_err(what, e)),
        }
    }

    /// Applies `op` to the pool, the data disk and the model. A refusal by the pool (from
    /// creating a device or preparing a write) is `Ok(Err((call, error)))` and leaves the
    /// model untouched; any other failure is `Err`.
    pub fn try_apply(&mut self, op: &Op) -> Result<Result<(), (&'static str, PoolError)>, String> {
        let p = &mut self.pool;
        let mut discarded = None;
        match *op {
            Op::Thin(id) => {
                if let Err(e) = p.create_thin(id) {
                    return Ok(Err(("create_thin", e)));
                }
            }
            Op::Snap { id, origin } => {
                if let Err(e) = p.create_snap(id, origin) {
                    return Ok(Err(("create_snap", e)));
                }
            }
            Op::Write {
                dev,
                vblock,
                first,
                end,
                tag,
            } => {
                if let Err(e) = self.write(dev, vblock, first as usize, end as usize, tag)? {
                    return Ok(Err(("prepare_write", e)));
                }
            }
            Op::Discard { dev, begin, end } => {
                discarded = Some(
                    p.discard(dev, begin, end)
                        .map_err(|e| pool_err("discard", e))?,
                )
            }
            Op::Delete(id) => p.delete(id).map_err(|e| pool_err("delete", e))?,
            Op::SetTransaction { old, new } => p
                .set_transaction_id(old, new)
                .map_err(|e| pool_err("set_transaction_id", e))?,
            Op::Commit => {
                // Data first: a committed mapping must never point at data still in flight.
                self.data.flush()?;
                self.pool.commit().map_err(|e| pool_err("commit", e))?;
            }
        }
        let removed = apply_model(&mut self.model, op)?;
        if let Some(n) = discarded {
            if n != removed {
                return Err(format!("pool discarded {n} mappings, model {removed}"));
            }
        }
        Ok(Ok(()))
    }

    fn write(
        &mut self,
        dev: u64,
        vblock: u64,
        first: usize,
        end: usize,
        tag: u32,
    ) -> Result<Result<(), PoolError>, String> {
        if first >= end || end > SECTORS {
            return Err(format!("bad sector range {first}..{end}"));
        }
        let plan = match self.pool.prepare_write(dev, vblock) {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        let whole = first == 0 && end == SECTORS;
        // Phase 1: make the target block hold what the write does not cover.
        match plan {
            WritePlan::InPlace { .. } if !self.allow_in_place => {
                return Err(format!(
                    "dev {dev} block {vblock}: in-place write after commit would change committed data"
                ));
            }
            WritePlan::InPlace { .. } => self.counts.in_place += 1,
            WritePlan::Provision { .. } if whole => self.counts.provision_full += 1,
            WritePlan::Provision { data_block } => {
                self.buf.fill(0);
                self.data.write(data_block, 0, &self.buf)?;
                self.counts.provision_zeroed += 1;
            }
            WritePlan::BreakSharing { .. } if whole => self.counts.break_full += 1,
            WritePlan::BreakSharing { from, to } => {
                self.data.read(from, 0, &mut self.buf)?;
                self.data.write(to, 0, &self.buf)?;
                self.counts.break_copied += 1;
            }
        }
        // Phase 2: the write itself, then the mapping.
        let n = (end - first) * SECTOR_BYTES;
        let tags = vec![tag; end - first];
        render(&tags, vblock, first, &mut self.buf[..n]);
        self.data.write(plan.target(), first, &self.buf[..n])?;
        self.pool
            .complete_write(dev, vblock, plan)
            .map_err(|e| pool_err("complete_write", e))?;
        Ok(Ok(()))
    }

    /// Checks that the pool and the data disk hold exactly the model: the same devices, the
    /// same mapped blocks, the expected bytes in each, and as many data blocks in use as are
    /// mapped. With `print`, lists `expect DEV VBLOCK DATA_BLOCK FNV` and `expect-dev DEV
    /// NR_MAPPED` lines for the host.
    pub fn verify(&mut self, print: bool) -> Result<Summary, String> {
        let mut devs = self.pool.devices().map_err(|e| pool_err("devices", e))?;
        devs.sort_unstable();
        let want: Vec<u64> = self.model.keys().copied().collect();
        if devs != want {
            return Err(format!("devices {devs:?}, expected {want:?}"));
        }
        let mut sum = Summary::default();
        let mut used = BTreeSet::new();
        for (&dev, blocks) in &self.model {
            let got = self
                .pool
                .mappings(dev, 0, u64::MAX)
                .map_err(|e| pool_err("mappings", e))?;
            let got_keys: Vec<u64> = got.iter().map(|(v, _)| *v).collect();
            let want_keys: Vec<u64> = blocks.keys().copied().collect();
            if got_keys != want_keys {
                return Err(format!(
                    "dev {dev}: mapped {got_keys:?}, expected {want_keys:?}"
                ));
            }
            let details = self
                .pool
                .device_details(dev)
                .map_err(|e| pool_err("device_details", e))?;
            if details.mapped_blocks != got.len() as u64 {
                return Err(format!(
                    "dev {dev}: details say {} mapped blocks, tree has {}",
                    details.mapped_blocks,
                    got.len()
                ));
            }
            for (vblock, bt) in got {
                let tags = blocks.get(&vblock).ok_or("model changed under us")?;
                render(tags, vblock, 0, &mut self.expect);
                self.data.read(bt.block, 0, &mut self.buf)?;
                if self.buf != self.expect {
                    let bad = self
                        .buf
                        .chunks_exact(SECTOR_BYTES)
                        .zip(self.expect.chunks_exact(SECTOR_BYTES))
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    return Err(format!(
                        "dev {dev} block {vblock} (data block {}): sector {bad} differs",
                        bt.block
                    ));
                }
                if print {
                    println!(
                        "expect {dev} {vblock} {} {:016x}",
                        bt.block,
                        fnv1a64(&self.expect)
                    );
                }
                used.insert(bt.block);
                sum.mappings += 1;
            }
            if print {
                println!("expect-dev {dev} {}", blocks.len());
            }
            sum.devices += 1;
        }
        let st = self.pool.stats().map_err(|e| pool_err("stats", e))?;
        let in_use = st.nr_data_blocks - st.free_data_blocks;
        if in_use != used.len() as u64 {
            return Err(format!(
                "{in_use} data blocks in use, {} distinct blocks mapped",
                used.len()
            ));
        }
        sum.data_blocks = in_use;
        sum.transaction_id = st.transaction_id;
        Ok(sum)
    }
}

/// What [`Rig::verify`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub devices: u64,
    pub mappings: u64,
    pub data_blocks: u64,
    pub transaction_id: u64,
}

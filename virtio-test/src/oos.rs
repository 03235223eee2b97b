//! The out-of-space phase (boot 2, on its own pair of disks `oos-meta`/`oos-data`): a pool
//! with too little data space and too little metadata space, driven until the pool refuses,
//! then grown.
//!
//! Invariants checked:
//! - data: `prepare_write` on a full pool answers exactly `NoDataSpace`, and the refused call
//!   leaves no trace (pool stats and every device's mappings as before); written blocks and
//!   snapshots still read back; commit works and the checker is clean; after `grow_data` the
//!   refused writes succeed, and a reopened pool holds the same data;
//! - metadata: the first refusal is `NoMetadataSpace` and leaves no trace; abort returns the
//!   pool to the last commit (transaction id, devices, mappings, bytes), the checker is clean
//!   and a reopened pool holds the committed state; after the metadata window grows and
//!   `grow_metadata`, the undone work and more succeeds.
//!
//! Serial lines the host checks: `oos: data full after …, ok` and `oos: metadata full after
//! …, ok`.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use thin_core::thin::{BlockTime, FormatOptions, OpenOptions, Pool, PoolError, PoolStats};

use crate::disk::{DataDisk, MetaDisk, DATA_BLOCK_SECTORS};
use crate::pattern::SECTORS;
use crate::workload::{pool_err, Model, Op, Rig};
use crate::{checker, config, println};

/// Metadata blocks the pool sees at format (grown to the whole disk in the metadata part).
const META_WINDOW: u64 = 96;
/// Data blocks the pool is formatted with (the disk holds more).
const DATA_LIMIT: u64 = 48;
/// Data blocks after `grow_data`.
const DATA_GROWN: u64 = 192;
/// Blocks of device 1 written before its snapshot.
const BEFORE_SNAP: u64 = 16;
/// The metadata part commits every this many snapshots.
const COMMIT_EVERY: u32 = 4;
/// Snapshots past the metadata refusal that must succeed once grown.
const MORE_SNAPS: u32 = 8;
/// Bound on the metadata part's snapshots (it must run out well before).
const MAX_SNAPS: u32 = 400;

/// Everything the pool shows of its state: stats and every device's mappings.
type Trace = (PoolStats, Vec<(u64, Vec<(u64, BlockTime)>)>);

/// Runs the phase; `Err` names the first broken expectation.
pub fn run(mut meta: MetaDisk, data: DataDisk) -> Result<(), String> {
    let capacity = meta.capacity();
    if capacity <= META_WINDOW || data.nr_blocks() < DATA_GROWN {
        return Err(format!(
            "oos disks too small: {capacity} metadata blocks (need > {META_WINDOW}), {} data \
             blocks (need {DATA_GROWN})",
            data.nr_blocks()
        ));
    }
    meta.set_window(META_WINDOW);
    let opts = FormatOptions {
        data_block_size: DATA_BLOCK_SECTORS,
        nr_data_blocks: DATA_LIMIT,
        cache_blocks: config::CACHE_BLOCKS,
    };
    let pool = Pool::format(meta, opts).map_err(|e| pool_err("oos format", e))?;
    let p = Phase {
        rig: Rig::new(pool, data, Model::new()),
        tag: 2_000_000,
        trans: 0,
    };
    p.data_part()?.metadata_part(capacity)
}

struct Phase {
    rig: Rig,
    tag: u32,
    /// Transaction id of the last commit.
    trans: u64,
}

impl Phase {
    fn full(&mut self, dev: u64, vblock: u64) -> Op {
        self.tag += 1;
        Op::Write {
            dev,
            vblock,
            first: 0,
            end: SECTORS as u32,
            tag: self.tag,
        }
    }

    fn partial(&mut self, dev: u64, vblock: u64) -> Op {
        self.tag += 1;
        Op::Write {
            dev,
            vblock,
            first: 8,
            end: 24,
            tag: self.tag,
        }
    }

    /// Applies `op`, which must succeed.
    fn must(&mut self, op: Op) -> Result<(), String> {
        self.rig.run(&[op])
    }

    /// Next transaction id, data flush, commit.
    fn commit(&mut self) -> Result<(), String> {
        let t = self.trans;
        self.rig
            .run(&[Op::SetTransaction { old: t, new: t + 1 }, Op::Commit])?;
        self.trans = t + 1;
        Ok(())
    }

    fn trace(&mut self) -> Result<Trace, String> {
        let pool = &mut self.rig.pool;
        let stats = pool.stats().map_err(|e| pool_err("stats", e))?;
        let mut maps = Vec::new();
        for dev in pool.devices().map_err(|e| pool_err("devices", e))? {
            let m = pool
                .mappings(dev, 0, u64::MAX)
                .map_err(|e| pool_err("mappings", e))?;
            maps.push((dev, m));
        }
        Ok((stats, maps))
    }

    /// Applies `op`, which the pool must refuse with `want`, leaving no trace.
    fn refused(&mut self, op: Op, want: &PoolError) -> Result<(), String> {
        let before = self.trace()?;
        match self.rig.try_apply(&op)? {
            Ok(()) => return Err(format!("{op:?} succeeded; expected {want}")),
            Err((_, e)) if e == *want => {}
            Err((what, e)) => return Err(format!("{op:?}: {what} said {e:?}, expected {want:?}")),
        }
        if self.trace()? != before {
            return Err(format!(
                "refused {op:?} changed the pool's stats or mappings"
            ));
        }
        Ok(())
    }

    /// Commits, runs the checker, reopens the pool from the disk and verifies it.
    fn commit_check_reopen(mut self) -> Result<Self, String> {
        self.commit()?;
        self.check_reopen()
    }

    /// Runs the checker on the committed state, reopens and verifies.
    fn check_reopen(mut self) -> Result<Self, String> {
        checker(self.rig.pool.tm().cache.dev_mut())?;
        let Rig {
            pool, data, model, ..
        } = self.rig;
        let meta = pool.into_device();
        let open = OpenOptions {
            cache_blocks: config::CACHE_BLOCKS,
            read_only: false,
        };
        let pool = Pool::open(meta, open).map_err(|e| pool_err("oos reopen", e))?;
        let mut rig = Rig::new(pool, data, model);
        let s = rig.verify(false)?;
        if s.transaction_id != self.trans {
            return Err(format!(
                "reopened at transaction {}, committed {}",
                s.transaction_id, self.trans
            ));
        }
        Ok(Phase { rig, ..self })
    }

    fn data_part(mut self) -> Result<Self, String> {
        let nodata = PoolError::NoDataSpace;
        self.must(Op::Thin(1))?;
        for v in 0..BEFORE_SNAP {
            let op = self.full(1, v);
            self.must(op)?;
        }
        self.must(Op::Snap { id: 2, origin: 1 })?;
        // Break sharing of the first half, then provision new blocks, until the pool says no.
        let mut written = BEFORE_SNAP;
        let mut v = 0;
        let refused_op = loop {
            let vblock = if v < BEFORE_SNAP / 2 {
                v
            } else {
                v + BEFORE_SNAP / 2
            };
            let op = self.full(1, vblock);
            match self.rig.try_apply(&op)? {
                Ok(()) => written += 1,
                Err((_, e)) if e == nodata => break op,
                Err((what, e)) => return Err(format!("{op:?}: {what}: {e:?} before data ran out")),
            }
            v += 1;
            if written > DATA_LIMIT {
                return Err(format!(
                    "{written} blocks written to a pool of {DATA_LIMIT}"
                ));
            }
        };
        let st = self.trace()?.0;
        if written != DATA_LIMIT || st.free_data_blocks != 0 {
            return Err(format!(
                "data ran out after {written} blocks, {} free; pool has {DATA_LIMIT}",
                st.free_data_blocks
            ));
        }
        // Refused: the provision that ran out, breaking sharing through each device.
        let mut refused = vec![refused_op];
        refused.push(self.partial(2, BEFORE_SNAP - 1));
        refused.push(self.partial(1, BEFORE_SNAP - 2));
        for op in &refused {
            self.refused(*op, &nodata)?;
        }
        // A block the device holds alone is still written in place.
        let op = self.partial(1, 0);
        self.must(op)?;
        self.rig.verify(false)?;
        self = self.commit_check_reopen()?;

        self.rig
            .pool
            .grow_data(DATA_GROWN)
            .map_err(|e| pool_err("grow_data", e))?;
        self.commit()?;
        for op in &refused {
            self.must(*op)?;
        }
        self.rig.verify(false)?;
        self = self.commit_check_reopen()?;
        let st = self.trace()?.0;
        println!(
            "oos: data full after {written} blocks, {} writes refused, grown to {}, {} in use, ok",
            refused.len(),
            st.nr_data_blocks,
            st.nr_data_blocks - st.free_data_blocks
        );
        Ok(self)
    }

    fn metadata_part(mut self, capacity: u64) -> Result<(), String> {
        let nometa = PoolError::NoMetadataSpace;
        let start_free = self.trace()?.0.free_metadata_blocks;
        let mut committed: (Model, u32, u32) = (self.rig.model.clone(), self.trans as u32, 0);
        let mut snaps = 0;
        // Snapshot device 1, then overwrite one of its blocks (breaking sharing: a data block
        // and new metadata for the shadowed path), until the pool refuses.
        let (refused_op, free_at_refusal) = 'fill: loop {
            if snaps >= MAX_SNAPS {
                return Err(format!("metadata never ran out in {MAX_SNAPS} snapshots"));
            }
            let id = 100 + u64::from(snaps);
            let write = self.full(1, u64::from(snaps) % BEFORE_SNAP);
            for op in [Op::Snap { id, origin: 1 }, write] {
                let free = self.trace()?.0.free_metadata_blocks;
                match self.rig.try_apply(&op)? {
                    Ok(()) => {}
                    Err((_, e)) if e == nometa => break 'fill (op, free),
                    Err((what, e)) => {
                        return Err(format!("{op:?}: {what}: {e:?} before metadata ran out"))
                    }
                }
            }
            snaps += 1;
            if snaps.is_multiple_of(COMMIT_EVERY) {
                self.commit()?;
                committed = (self.rig.model.clone(), self.trans as u32, snaps);
            }
        };
        // The refusal left no trace; a second try is refused the same way.
        self.refused(refused_op, &nometa)?;
        // Abort: back to the last commit.
        self.rig.pool.abort().map_err(|e| pool_err("abort", e))?;
        let (model, trans, snaps_committed) = committed;
        self.rig.model = model;
        let s = self.rig.verify(false)?;
        if s.transaction_id != u64::from(trans) {
            return Err(format!(
                "abort went to transaction {}, last commit {trans}",
                s.transaction_id
            ));
        }
        self = self.check_reopen()?;
        let undone = snaps - snaps_committed;

        // The metadata volume grows: the pool sees the whole disk, then grows its space map.
        let window = self.rig.pool.tm().cache.dev_mut().set_window(capacity);
        self.rig
            .pool
            .grow_metadata(window)
            .map_err(|e| pool_err("grow_metadata", e))?;
        self.commit()?;
        let grown = self.trace()?.0;
        if grown.nr_metadata_blocks != window {
            return Err(format!(
                "grow_metadata to {window}: pool has {} blocks",
                grown.nr_metadata_blocks
            ));
        }
        // Redo what the abort undid, the refused step, and more.
        let mut redone = 0;
        for i in snaps_committed..snaps + MORE_SNAPS {
            let id = 100 + u64::from(i);
            let write = self.full(1, u64::from(i) % BEFORE_SNAP);
            self.must(Op::Snap { id, origin: 1 })?;
            self.must(write)?;
            redone += 1;
        }
        self.rig.verify(false)?;
        self = self.commit_check_reopen()?;
        let st = self.trace()?.0;
        println!(
            "oos: metadata full after {snaps} snapshots ({start_free} free of {META_WINDOW} \
             blocks at start, {free_at_refusal} at the refusal), abort undid {undone} to \
             transaction {trans}, grown to {} blocks, {redone} snapshots redone or added, \
             {} devices, {} free, ok",
            st.nr_metadata_blocks, st.nr_devices, st.free_metadata_blocks
        );
        Ok(())
    }
}

//! Seeded generator of valid pool descriptions ([`Metadata`]) that follow dm-thin semantics.
//!
//! The generator simulates a pool's history rather than drawing mappings at random:
//! * one allocation cursor hands out data blocks in write order (with occasional seeded gaps,
//!   to spread data over several space-map bitmaps), so sequential writes become runs;
//! * `create_thin` gives `creation_time = snap_time = pool time`;
//! * `create_snap` increments the pool time, copies the origin's mappings (sharing its data
//!   blocks) and sets both devices' `snap_time` to the new time; snapshots of snapshots happen;
//! * a write to an unmapped block allocates a block stamped with the current time; a write to
//!   a shared block (`snap_time > mapping time`, spec §8.6) breaks sharing with a new block and
//!   the current time; a write to an exclusive block changes nothing;
//! * every operation bumps the pool transaction id; a device's `transaction` is the id at its
//!   creation.
//!
//! Invariants of the output, checked by [`validate`]: devices in ascending id order, mappings
//! ascending and non-overlapping and merged into maximal runs, `mapped_blocks` = number of
//! mappings, data blocks < `nr_data_blocks`, mapping times ≤ pool time, ids < 2^24, times
//! < 2^24, `data_block_size` 128.

use std::collections::BTreeMap;

use thin_tools::ir::{Device, DeviceMappings, Map, Metadata, RunMerger, Superblock};

/// xorshift64* seeded through splitmix64: small, deterministic, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed; never zero (xorshift's fixed point).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// What to generate. See the presets for typical sizes.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub seed: u64,
    /// Thin devices created and written before any snapshot.
    pub nr_thins: u32,
    /// Snapshots, each of a random non-empty existing device (thins and snapshots alike).
    pub nr_snapshots: u32,
    /// Thin devices created half-way through the snapshots (at a later pool time).
    pub nr_late_thins: u32,
    /// Devices created but never written.
    pub nr_empty: u32,
    /// Distinct blocks written to each early thin (late thins get half).
    pub mappings_per_thin: u64,
    /// After each snapshot, blocks written to the snapshot, in per mille of its mappings; the
    /// origin gets half as many. Writes land anywhere in the device's virtual size, so some
    /// break sharing, some provision new blocks and some hit already exclusive blocks.
    pub overwrite_permille: u64,
    /// Longest sequential write.
    pub max_run: u64,
    /// Every 16th allocation or so skips up to `2 * alloc_gap` data blocks.
    pub alloc_gap: u64,
    /// Lower bound for `nr_data_blocks`; it is raised above the last allocated block.
    pub min_data_blocks: u64,
}

impl GenConfig {
    /// A few devices with tens of mappings each: single-leaf trees.
    pub fn small(seed: u64) -> Self {
        GenConfig {
            seed,
            nr_thins: 3,
            nr_snapshots: 4,
            nr_late_thins: 1,
            nr_empty: 1,
            mappings_per_thin: 60,
            overwrite_permille: 250,
            max_run: 12,
            alloc_gap: 3,
            min_data_blocks: 1024,
        }
    }

    /// More than 252 mappings per device, so bottom-level trees have internal nodes.
    pub fn internal_nodes(seed: u64) -> Self {
        GenConfig {
            nr_thins: 2,
            nr_snapshots: 3,
            nr_late_thins: 1,
            nr_empty: 1,
            mappings_per_thin: 700,
            overwrite_permille: 200,
            max_run: 24,
            alloc_gap: 4,
            min_data_blocks: 4096,
            ..GenConfig::small(seed)
        }
    }

    /// Data blocks spread beyond 16320, so the data space map has several bitmaps.
    pub fn many_data_blocks(seed: u64) -> Self {
        GenConfig {
            nr_thins: 2,
            nr_snapshots: 2,
            nr_late_thins: 0,
            nr_empty: 0,
            mappings_per_thin: 1200,
            overwrite_permille: 300,
            max_run: 16,
            alloc_gap: 300,
            min_data_blocks: 40_000,
            ..GenConfig::small(seed)
        }
    }

    /// About a million mappings over ten devices, for benchmarks.
    pub fn large(seed: u64) -> Self {
        GenConfig {
            nr_thins: 4,
            nr_snapshots: 6,
            nr_late_thins: 0,
            nr_empty: 0,
            mappings_per_thin: 100_000,
            overwrite_permille: 100,
            max_run: 64,
            alloc_gap: 64,
            min_data_blocks: 1 << 20,
            ..GenConfig::small(seed)
        }
    }
}

struct SimDev {
    details: Device,
    /// virtual block -> (data block, time)
    map: BTreeMap<u64, (u64, u32)>,
    virt_size: u64,
}

struct Sim {
    rng: Rng,
    cfg: GenConfig,
    time: u32,
    trans: u64,
    next_block: u64,
    next_id: u32,
    devs: BTreeMap<u32, SimDev>,
}

impl Sim {
    fn alloc(&mut self) -> u64 {
        if self.cfg.alloc_gap > 0 && self.rng.chance(1, 16) {
            self.next_block += 1 + self.rng.below(2 * self.cfg.alloc_gap);
        }
        let b = self.next_block;
        self.next_block += 1;
        b
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1 + self.rng.below(3) as u32;
        id
    }

    fn create_thin(&mut self, virt_size: u64) -> u32 {
        self.trans += 1;
        let id = self.new_id();
        let details = Device {
            dev_id: id,
            mapped_blocks: 0,
            transaction: self.trans,
            creation_time: self.time,
            snap_time: self.time,
        };
        self.devs.insert(
            id,
            SimDev {
                details,
                map: BTreeMap::new(),
                virt_size,
            },
        );
        id
    }

    fn create_snap(&mut self, origin: u32) -> u32 {
        self.trans += 1;
        self.time += 1;
        let id = self.new_id();
        let time = self.time;
        let trans = self.trans;
        let o = self.devs.get_mut(&origin).expect("origin exists");
        o.details.snap_time = time;
        let snap = SimDev {
            details: Device {
                dev_id: id,
                mapped_blocks: o.details.mapped_blocks,
                transaction: trans,
                creation_time: time,
                snap_time: time,
            },
            map: o.map.clone(),
            virt_size: o.virt_size,
        };
        self.devs.insert(id, snap);
        id
    }

    /// Writes `len` blocks from `v` with dm-thin's provisioning / sharing rules.
    fn write(&mut self, id: u32, v: u64, len: u64) {
        for vb in v..v + len {
            let Some(d) = self.devs.get(&id) else { return };
            let needs_block = match d.map.get(&vb) {
                None => true,
                Some(&(_, t)) => d.details.snap_time > t,
            };
            if needs_block {
                let b = self.alloc();
                let time = self.time;
                let d = self.devs.get_mut(&id).expect("device exists");
                if d.map.insert(vb, (b, time)).is_none() {
                    d.details.mapped_blocks += 1;
                }
            }
        }
    }

    /// One sequential write of random length at a random place; returns its length.
    fn random_write(&mut self, id: u32) -> u64 {
        let virt = self.devs[&id].virt_size;
        let len = if self.rng.chance(1, 4) {
            1
        } else {
            1 + self.rng.below(self.cfg.max_run.min(virt))
        };
        let v = self.rng.below(virt - len + 1);
        self.write(id, v, len);
        len
    }

    /// Writes until the device maps `target` blocks.
    fn fill(&mut self, id: u32, target: u64) {
        while self.devs[&id].details.mapped_blocks < target {
            self.random_write(id);
        }
    }

    /// Writes about `blocks` blocks at random places.
    fn scribble(&mut self, id: u32, blocks: u64) {
        let mut written = 0;
        while written < blocks {
            written += self.random_write(id);
        }
    }
}

/// Generates a pool history from `cfg` and returns its final state.
pub fn generate(cfg: &GenConfig) -> Metadata {
    let mut sim = Sim {
        rng: Rng::new(cfg.seed),
        cfg: cfg.clone(),
        time: 0,
        trans: 0,
        next_block: 0,
        next_id: 0,
        devs: BTreeMap::new(),
    };
    let per_thin = cfg.mappings_per_thin;
    // Virtual sizes leave room so that random writes fill them without a long tail.
    let virt = (per_thin * 3 / 2).max(per_thin + 4);

    let mut thins = Vec::new();
    for _ in 0..cfg.nr_thins {
        thins.push(sim.create_thin(virt));
    }
    // Interleave writes between thins so their data blocks interleave too.
    let mut pending: Vec<u32> = thins.clone();
    while !pending.is_empty() {
        let i = sim.rng.below(pending.len() as u64) as usize;
        let id = pending[i];
        if sim.devs[&id].details.mapped_blocks >= per_thin {
            pending.swap_remove(i);
        } else {
            sim.random_write(id);
        }
    }

    let late_at = cfg.nr_snapshots / 2;
    let empty_at = cfg.nr_snapshots / 3;
    for s in 0..=cfg.nr_snapshots {
        if s == empty_at {
            for _ in 0..cfg.nr_empty {
                sim.create_thin(virt);
            }
        }
        if s == late_at {
            for _ in 0..cfg.nr_late_thins {
                let id = sim.create_thin(virt);
                sim.fill(id, per_thin / 2);
            }
        }
        if s == cfg.nr_snapshots {
            break;
        }
        let candidates: Vec<u32> = sim
            .devs
            .iter()
            .filter(|(_, d)| d.details.mapped_blocks > 0)
            .map(|(&id, _)| id)
            .collect();
        if candidates.is_empty() {
            break;
        }
        let origin = candidates[sim.rng.below(candidates.len() as u64) as usize];
        let snap = sim.create_snap(origin);
        let mapped = sim.devs[&snap].details.mapped_blocks;
        let n = mapped * cfg.overwrite_permille / 1000;
        sim.scribble(snap, n);
        sim.scribble(origin, n / 2);
        // Now and then an unrelated device is written at the new time too.
        if sim.rng.chance(1, 2) {
            let other = candidates[sim.rng.below(candidates.len() as u64) as usize];
            sim.scribble(other, n / 4 + 1);
        }
    }

    let nr_data_blocks = cfg
        .min_data_blocks
        .max(sim.next_block + 1 + sim.rng.below(64));
    let devices = sim
        .devs
        .values()
        .map(|d| {
            let mut merger = RunMerger::new();
            let mut mappings = Vec::new();
            for (&v, &(b, t)) in &d.map {
                mappings.extend(merger.push(&Map::single(v, b, t)));
            }
            mappings.extend(merger.finish());
            DeviceMappings {
                device: d.details.clone(),
                mappings,
            }
        })
        .collect();
    Metadata {
        superblock: Superblock {
            uuid: String::new(),
            time: sim.time,
            transaction: sim.trans + 1,
            flags: Some(0),
            version: Some(2),
            data_block_size: 128,
            nr_data_blocks,
            metadata_snap: None,
        },
        devices,
    }
}

/// Checks the invariants listed in the module documentation.
pub fn validate(md: &Metadata) -> Result<(), String> {
    let sb = &md.superblock;
    if md.canonical() != *md {
        return Err("mappings are not merged into maximal runs".into());
    }
    let mut prev_id: Option<u32> = None;
    for d in &md.devices {
        let dev = &d.device;
        if prev_id.is_some_and(|p| p >= dev.dev_id) || dev.dev_id >= 1 << 24 {
            return Err(format!("device {} out of order or too large", dev.dev_id));
        }
        prev_id = Some(dev.dev_id);
        if dev.mapped_blocks != d.nr_mappings() {
            return Err(format!("device {}: mapped_blocks mismatch", dev.dev_id));
        }
        if dev.creation_time > dev.snap_time || dev.snap_time > sb.time {
            return Err(format!("device {}: bad times", dev.dev_id));
        }
        let mut next_free = 0u64;
        for m in &d.mappings {
            if m.len == 0 || m.thin_begin < next_free {
                return Err(format!("device {}: overlapping mappings", dev.dev_id));
            }
            next_free = m.thin_begin + m.len;
            if m.data_begin + m.len > sb.nr_data_blocks {
                return Err(format!("device {}: data block beyond the pool", dev.dev_id));
            }
            if m.time > sb.time || m.time >= 1 << 24 {
                return Err(format!(
                    "device {}: mapping time {} too new",
                    dev.dev_id, m.time
                ));
            }
        }
    }
    Ok(())
}

/// A metadata device size (bytes) that comfortably holds `md` restored by 0.9, which builds
/// every device's tree separately with half-full nodes.
pub fn metadata_bytes_for(md: &Metadata) -> u64 {
    let leaves = md.nr_mappings() / 100 + md.devices.len() as u64;
    let bitmaps = md.superblock.nr_data_blocks / 16320 + 1;
    let blocks = 2048 + 4 * leaves + 4 * bitmaps;
    blocks * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_deterministic() {
        for seed in 0..4 {
            for cfg in [
                GenConfig::small(seed),
                GenConfig::internal_nodes(seed),
                GenConfig::many_data_blocks(seed),
            ] {
                let a = generate(&cfg);
                validate(&a).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                assert_eq!(a, generate(&cfg));
                let nr_devices = cfg.nr_thins + cfg.nr_snapshots + cfg.nr_late_thins + cfg.nr_empty;
                assert_eq!(a.devices.len() as u32, nr_devices);
            }
        }
        assert_ne!(
            generate(&GenConfig::small(1)),
            generate(&GenConfig::small(2))
        );
    }

    #[test]
    fn presets_have_the_promised_shape() {
        let md = generate(&GenConfig::internal_nodes(7));
        assert!(md.devices.iter().any(|d| d.nr_mappings() > 252 * 2));
        let md = generate(&GenConfig::many_data_blocks(7));
        assert!(md.superblock.nr_data_blocks > 16320);
        let max_data = md
            .devices
            .iter()
            .flat_map(|d| d.mappings.iter().map(|m| m.data_begin + m.len))
            .max()
            .unwrap_or(0);
        assert!(max_data > 16320, "data blocks only up to {max_data}");
    }

    #[test]
    fn snapshots_share_then_diverge() {
        let md = generate(&GenConfig::small(3));
        assert!(md.superblock.time >= 1);
        let snaps: Vec<_> = md
            .devices
            .iter()
            .filter(|d| d.device.creation_time > 0)
            .collect();
        assert!(!snaps.is_empty());
        // Some mappings are still shared between two devices, some carry a newer time.
        let mut owners: BTreeMap<u64, u32> = BTreeMap::new();
        for d in &md.devices {
            for m in &d.mappings {
                for k in 0..m.len {
                    *owners.entry(m.data_begin + k).or_default() += 1;
                }
            }
        }
        assert!(owners.values().any(|&n| n >= 2), "nothing shared");
        assert!(md
            .devices
            .iter()
            .flat_map(|d| &d.mappings)
            .any(|m| m.time > 0));
        assert!(md
            .devices
            .iter()
            .flat_map(|d| &d.mappings)
            .any(|m| m.len == 1));
        assert!(md
            .devices
            .iter()
            .flat_map(|d| &d.mappings)
            .any(|m| m.len > 1));
    }
}

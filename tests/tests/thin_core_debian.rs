//! thin-core against Debian's thin-provisioning-tools 0.9 (the real peer for the format).
//!
//! - Pools written by thin-core (snapshots of snapshots, overwrites of shared blocks,
//!   discards, deletes, a held metadata snapshot; trees with internal nodes; several bitmaps in
//!   both space maps) pass Debian's `thin_check`, and Debian's `thin_dump` shows exactly the
//!   devices and mappings of an independent model.
//! - Metadata made by Debian's `thin_restore` from generated XML opens in thin-core, every
//!   mapping and device detail matches the XML, our checker finds nothing fatal, and after we
//!   write to it (breaking sharing) Debian's `thin_check` still passes.
//!
//! Fails, never skips, when the tools are missing (`apt-get install thin-provisioning-tools`).

use std::collections::BTreeMap;
use std::path::Path;

use e2e_tests::debian;
use e2e_tests::xmlgen::{self, GenConfig};
use thin_core::file::FileDevice;
use thin_core::thin::check::{check, CheckOptions, Severity};
use thin_core::thin::{FormatOptions, OpenOptions, Pool, WritePlan};
use thin_tools::ir::Metadata;
use thin_tools::xml::{read_xml_str, to_xml_string};

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// dev → vblock → (data block, time)
type Model = BTreeMap<u64, BTreeMap<u64, (u64, u32)>>;

struct Rig {
    pool: Pool<FileDevice>,
    model: Model,
}

impl Rig {
    fn write(&mut self, id: u64, v: u64) {
        let plan = ok("prepare_write", self.pool.prepare_write(id, v));
        let time = self.pool.superblock().time;
        if let WritePlan::InPlace { data_block } = plan {
            // In place only when no other device maps that block.
            for (&other, maps) in &self.model {
                for (&ov, &(b, _)) in maps {
                    assert!(
                        !(b == data_block && (other, ov) != (id, v)),
                        "in-place write on a shared block"
                    );
                }
            }
            return;
        }
        ok("complete_write", self.pool.complete_write(id, v, plan));
        self.model
            .get_mut(&id)
            .expect("device in model")
            .insert(v, (plan.target(), time));
    }
    fn create(&mut self, id: u64) {
        ok("create_thin", self.pool.create_thin(id));
        self.model.insert(id, BTreeMap::new());
    }
    fn snap(&mut self, id: u64, origin: u64) {
        ok("create_snap", self.pool.create_snap(id, origin));
        let m = self.model[&origin].clone();
        self.model.insert(id, m);
    }
    fn discard(&mut self, id: u64, b: u64, e: u64) {
        ok("discard", self.pool.discard(id, b, e));
        self.model
            .get_mut(&id)
            .expect("device in model")
            .retain(|k, _| *k < b || *k >= e);
    }
    fn delete(&mut self, id: u64) {
        ok("delete", self.pool.delete(id));
        self.model.remove(&id);
    }
}

/// Expands the dump of a pool into the model's shape.
fn dump_to_model(md: &Metadata) -> Model {
    let mut m = Model::new();
    for d in &md.devices {
        let maps = m.entry(u64::from(d.device.dev_id)).or_default();
        for r in &d.mappings {
            for k in 0..r.len {
                maps.insert(r.thin_begin + k, (r.data_begin + k, r.time));
            }
        }
    }
    m
}

fn debian_check_passes(meta: &Path) {
    let out = ok("thin_check", debian::thin_check(meta));
    assert!(
        out.success(),
        "Debian thin_check failed on {}:\n{}\n{}",
        meta.display(),
        out.stdout,
        out.stderr
    );
}

fn our_check_clean(meta: &Path, allow_non_fatal: bool) {
    let mut dev = ok("open", FileDevice::open_read_only(meta));
    let report = check(&mut dev, &CheckOptions::default());
    let bad: Vec<_> = report
        .issues
        .iter()
        .filter(|i| !allow_non_fatal || i.severity == Severity::Fatal)
        .collect();
    assert!(
        bad.is_empty(),
        "our checker on {}: {bad:#?}",
        meta.display()
    );
}

fn build_pool(meta: &Path, meta_blocks: u64, data_blocks: u64) -> Rig {
    let dev = ok(
        "create metadata file",
        FileDevice::create(meta, meta_blocks),
    );
    let pool = ok(
        "format",
        Pool::format(
            dev,
            FormatOptions {
                data_block_size: 128,
                nr_data_blocks: data_blocks,
                cache_blocks: 256,
            },
        ),
    );
    Rig {
        pool,
        model: Model::new(),
    }
}

fn finish_and_compare(mut rig: Rig, meta: &Path) {
    ok("set_transaction_id", rig.pool.set_transaction_id(0, 42));
    let time = rig.pool.superblock().time;
    let details: BTreeMap<u64, _> = rig
        .model
        .keys()
        .map(|&id| (id, ok("details", rig.pool.device_details(id))))
        .collect();
    let nr_data = ok("stats", rig.pool.stats()).nr_data_blocks;
    drop(ok("close", rig.pool.close()));
    debian_check_passes(meta);
    our_check_clean(meta, false);
    let dump = ok(
        "read dump",
        read_xml_str(&ok("thin_dump", debian::thin_dump(meta))),
    );
    assert_eq!(dump.superblock.time, time);
    assert_eq!(dump.superblock.transaction, 42);
    assert_eq!(dump.superblock.data_block_size, 128);
    assert_eq!(dump.superblock.nr_data_blocks, nr_data);
    assert_eq!(
        dump_to_model(&dump),
        rig.model,
        "Debian's dump differs from the model"
    );
    for d in &dump.devices {
        let ours = details[&u64::from(d.device.dev_id)];
        assert_eq!(d.device.mapped_blocks, ours.mapped_blocks);
        assert_eq!(d.device.transaction, ours.transaction_id);
        assert_eq!(d.device.creation_time, ours.creation_time);
        assert_eq!(d.device.snap_time, ours.snapshotted_time);
    }
}

#[test]
fn small_pool_written_by_us_passes_debian_check_and_dump_matches() {
    let dir = ok("tempdir", debian::temp_dir());
    let meta = dir.path().join("meta");
    let mut rig = build_pool(&meta, 1024, 1024);
    rig.create(0);
    for v in [0, 1, 2, 10] {
        rig.write(0, v);
    }
    rig.snap(1, 0);
    rig.write(1, 10);
    rig.snap(2, 0);
    rig.write(0, 2);
    rig.write(2, 50);
    finish_and_compare(rig, &meta);
}

#[test]
fn large_pool_with_internal_nodes_snapshot_chains_and_several_bitmaps() {
    let dir = ok("tempdir", debian::temp_dir());
    let meta = dir.path().join("meta");
    // 20,000 metadata blocks (2 metadata bitmaps), 50,000 data blocks (4 data bitmaps).
    let mut rig = build_pool(&meta, 20_000, 50_000);
    rig.create(0);
    for v in 0..3000 {
        rig.write(0, v * 3);
    }
    // A chain of snapshots, each overwriting some blocks on both sides.
    for d in 1..8u64 {
        rig.snap(d, d - 1);
        for v in (0..9000).step_by(97 * d as usize) {
            rig.write(d, v);
            rig.write(d - 1, v + 1);
        }
        if d % 3 == 0 {
            ok("commit", rig.pool.commit());
        }
    }
    rig.create(100);
    for v in 0..20_000 {
        rig.write(100, v);
    }
    ok("reserve_metadata_snap", rig.pool.reserve_metadata_snap());
    rig.discard(100, 5000, 12_000);
    rig.discard(3, 0, 4000);
    rig.delete(5);
    rig.snap(200, 6);
    for v in 0..500 {
        rig.write(200, v * 5);
    }
    finish_and_compare(rig, &meta);
}

fn restore(md: &Metadata, dir: &Path) -> std::path::PathBuf {
    let xml = dir.join("in.xml");
    ok("write xml", std::fs::write(&xml, to_xml_string(md)));
    let bytes = xmlgen::metadata_bytes_for(md).max(8 << 20);
    let meta = ok(
        "metadata file",
        debian::zeroed_metadata_file(dir, "meta", bytes),
    );
    ok("thin_restore", debian::thin_restore(&xml, &meta));
    meta
}

fn open_debian_pool_and_compare(cfg: &GenConfig) {
    let md = xmlgen::generate(cfg);
    let dir = ok("tempdir", debian::temp_dir());
    let meta = restore(&md, dir.path());
    our_check_clean(&meta, true);
    let dev = ok("open file", FileDevice::open(&meta));
    let mut pool = ok("open pool", Pool::open(dev, OpenOptions::default()));
    let sb = pool.superblock().clone();
    assert_eq!(sb.time, md.superblock.time);
    assert_eq!(sb.trans_id, md.superblock.transaction);
    assert_eq!(
        ok("stats", pool.stats()).nr_data_blocks,
        md.superblock.nr_data_blocks
    );
    let want = dump_to_model(&md);
    assert_eq!(
        ok("devices", pool.devices()),
        want.keys().copied().collect::<Vec<_>>()
    );
    for d in &md.devices {
        let id = u64::from(d.device.dev_id);
        let det = ok("details", pool.device_details(id));
        assert_eq!(
            det.mapped_blocks,
            d.nr_mappings(),
            "device {id} mapped_blocks"
        );
        assert_eq!(det.creation_time, d.device.creation_time);
        assert_eq!(det.snapshotted_time, d.device.snap_time);
        assert_eq!(det.transaction_id, d.device.transaction);
        let got: BTreeMap<u64, (u64, u32)> = ok("mappings", pool.mappings(id, 0, u64::MAX))
            .into_iter()
            .map(|(v, bt)| (v, (bt.block, bt.time)))
            .collect();
        assert_eq!(&got, &want[&id], "device {id} mappings");
        for (&v, &(b, _)) in want[&id].iter().step_by(37) {
            let m = ok("lookup", pool.lookup(id, v)).expect("mapped");
            assert_eq!(m.data_block, b);
        }
    }
    // Write through every device (breaking sharing where there is any), commit: Debian's
    // checker must still accept the result and its dump must show the new mappings.
    let ids: Vec<u64> = want.keys().copied().collect();
    let mut expect = want.clone();
    for &id in &ids {
        let first: Vec<u64> = want[&id].keys().copied().take(40).collect();
        for v in first.into_iter().chain([1_000_000 + id]) {
            let plan = ok("prepare_write", pool.prepare_write(id, v));
            let time = pool.superblock().time;
            ok("complete_write", pool.complete_write(id, v, plan));
            if !matches!(plan, WritePlan::InPlace { .. }) {
                expect
                    .get_mut(&id)
                    .expect("dev")
                    .insert(v, (plan.target(), time));
            }
        }
    }
    drop(ok("close", pool.close()));
    debian_check_passes(&meta);
    our_check_clean(&meta, true);
    let dump = ok(
        "read dump",
        read_xml_str(&ok("thin_dump", debian::thin_dump(&meta))),
    );
    assert_eq!(dump_to_model(&dump), expect);
}

#[test]
fn debian_restored_small_pools_open_and_match() {
    for seed in 1..4 {
        open_debian_pool_and_compare(&GenConfig::small(seed));
    }
}

#[test]
fn debian_restored_pool_with_internal_nodes_opens_and_matches() {
    open_debian_pool_and_compare(&GenConfig::internal_nodes(7));
}

#[test]
fn debian_restored_pool_with_many_data_bitmaps_opens_and_matches() {
    open_debian_pool_and_compare(&GenConfig::many_data_blocks(11));
}

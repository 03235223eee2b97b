//! `thin_repair` against Debian's thin-provisioning-tools 0.9 on chosen damage.
//!
//! One pool is generated (several devices, snapshots, device trees three levels deep, several
//! data bitmaps), written as XML by our writer and restored by Debian's `thin_restore`. For
//! each damage — the superblock, the top-level mapping root, the details root, an internal
//! node and a leaf of a device tree, a data space-map bitmap, the metadata space-map index —
//! a copy of the image has that block zeroed, and:
//! * thin-core's checker reports the damage naming the block;
//! * our repair and Debian's `thin_repair` both run on it;
//! * our output passes Debian's `thin_check` and thin-core's checker;
//! * our output holds exactly the generated mappings minus those in leaves below the zeroed
//!   block (computed from the intact image), with the generated details where they survive;
//! * every mapping Debian's repair recovers, ours recovers too.
//!
//! Needs Debian's `thin_restore`, `thin_check`, `thin_dump`, `thin_repair`; fails without them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use e2e_tests::debian;
use e2e_tests::xmlgen::{self, GenConfig};
use thin_core::checksum::BlockKind;
use thin_core::file::FileDevice;
use thin_core::pdata::node;
use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::reader::{Reader, Source};
use thin_tools::ir::Metadata;
use thin_tools::xml::{read_xml_str, write_xml};

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// (device, virtual block) → (data block, time).
type Mappings = BTreeMap<(u32, u64), (u64, u32)>;

fn mappings_of(md: &Metadata) -> Mappings {
    let mut out = Mappings::new();
    for d in &md.devices {
        for m in &d.mappings {
            for k in 0..m.len {
                out.insert(
                    (d.device.dev_id, m.thin_begin + k),
                    (m.data_begin + k, m.time),
                );
            }
        }
    }
    out
}

/// Blocks worth damaging in the intact image, and what lies below each node.
struct Layout {
    top_root: u64,
    details_root: u64,
    metadata_index: u64,
    data_bitmap: u64,
    /// A device-tree internal node that is not a root.
    internal: u64,
    /// A device-tree leaf in the middle of a device.
    leaf: u64,
    /// Node → mappings (device, vblock) in the leaves below it.
    below: BTreeMap<u64, BTreeSet<(u32, u64)>>,
}

fn layout(meta: &Path) -> Layout {
    let dev = ok("open", FileDevice::open_read_only(meta));
    let mut rd = ok("reader", Reader::open(dev, 4096, Source::Live));
    let sb = rd.superblock().clone();
    let devices = ok("devices", rd.devices());
    let mut below: BTreeMap<u64, BTreeSet<(u32, u64)>> = BTreeMap::new();
    let (mut internal, mut leaf, mut most) = (None, None, 0usize);
    for (id, _) in &devices {
        let root = ok("device root", rd.device_root(*id));
        // (node, ancestors)
        let mut stack = vec![(root, Vec::<u64>::new())];
        let mut leaves = Vec::new();
        while let Some((b, path)) = stack.pop() {
            let (is_leaf, keys, vals) = ok(
                "read node",
                rd.cache().read(b, BlockKind::Node, |blk| {
                    let n = node::nr_entries(blk);
                    (
                        node::is_leaf(blk),
                        (0..n).map(|i| node::key(blk, i)).collect::<Vec<_>>(),
                        (0..n).map(|i| node::value_u64(blk, i)).collect::<Vec<_>>(),
                    )
                }),
            );
            let mut path = path;
            path.push(b);
            if is_leaf {
                leaves.push(b);
                for &a in &path {
                    below
                        .entry(a)
                        .or_default()
                        .extend(keys.iter().map(|&k| (*id as u32, k)));
                }
            } else {
                if path.len() > 1 && internal.is_none() {
                    internal = Some(b);
                }
                for &c in vals.iter().rev() {
                    stack.push((c, path.clone()));
                }
            }
        }
        if leaves.len() > most {
            most = leaves.len();
            leaf = Some(leaves[leaves.len() / 2]);
        }
    }
    let data_index_root = sb.data_sm_root.bitmap_root;
    let data_bitmap = ok(
        "data sm index",
        rd.cache().read(data_index_root, BlockKind::Node, |blk| {
            assert!(node::is_leaf(blk), "data sm index is one leaf here");
            let v = node::value(blk, 1);
            u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]])
        }),
    );
    Layout {
        top_root: sb.data_mapping_root,
        details_root: sb.device_details_root,
        metadata_index: sb.metadata_sm_root.bitmap_root,
        data_bitmap,
        internal: internal.expect("generated trees have non-root internal nodes"),
        leaf: leaf.expect("a leaf"),
        below,
    }
}

fn zero_block(path: &Path, b: u64) {
    use std::os::unix::fs::FileExt;
    let f = ok(
        "open rw",
        std::fs::OpenOptions::new().write(true).open(path),
    );
    ok("zero", f.write_all_at(&[0u8; 4096], b * 4096));
}

fn our_repair(input: &Path, output: &Path, extra: &[String]) -> bool {
    let mut args: Vec<OsString> = vec!["thin_repair".into(), "-i".into(), input.into()];
    args.extend(["-o".into(), output.into()]);
    args.extend(extra.iter().map(OsString::from));
    thin_tools::commands::repair::run(args) == std::process::ExitCode::SUCCESS
}

fn check_names_block(meta: &Path, block: u64, what: &str) {
    let mut dev = ok("open", FileDevice::open_read_only(meta));
    let report = check(&mut dev, &CheckOptions::default());
    assert!(report.has_fatal(), "{what}: damage not detected");
    let named = report
        .issues
        .iter()
        .any(|i| i.block == Some(block) || i.message.contains(&format!("block {block}")));
    assert!(
        named,
        "{what}: no issue names block {block}: {:#?}",
        &report.issues[..report.issues.len().min(10)]
    );
}

fn assert_clean_by_both(meta: &Path, what: &str) {
    let deb = ok("thin_check", debian::thin_check(meta));
    assert!(
        deb.success(),
        "{what}: Debian thin_check rejects our repair:\n{}",
        deb.stderr
    );
    let mut dev = ok("open", FileDevice::open_read_only(meta));
    let report = check(&mut dev, &CheckOptions::default());
    assert!(
        report.is_clean(),
        "{what}: thin-core check on our repair: {:#?}",
        &report.issues[..report.issues.len().min(10)]
    );
}

struct Fixture {
    _dir: debian::TempDir,
    dir: PathBuf,
    md: Metadata,
    good: PathBuf,
    layout: Layout,
}

fn fixture() -> Fixture {
    let cfg = GenConfig {
        nr_thins: 3,
        nr_snapshots: 3,
        nr_late_thins: 1,
        nr_empty: 1,
        mappings_per_thin: 40_000,
        overwrite_permille: 150,
        max_run: 32,
        alloc_gap: 40,
        min_data_blocks: 200_000,
        ..GenConfig::small(11)
    };
    let md = xmlgen::generate(&cfg).normalized_09();
    let dir = ok("tempdir", debian::temp_dir());
    let xml = dir.path().join("in.xml");
    let f = ok("create xml", std::fs::File::create(&xml));
    ok("write xml", write_xml(&md, std::io::BufWriter::new(f)));
    let good = ok(
        "meta",
        debian::zeroed_metadata_file(dir.path(), "good", xmlgen::metadata_bytes_for(&md)),
    );
    ok("thin_restore", debian::thin_restore(&xml, &good));
    ok("thin_check", debian::thin_check_ok(&good));
    let layout = layout(&good);
    Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        md,
        good,
        layout,
    }
}

fn run_case(fx: &Fixture, name: &str, block: u64, lost: &BTreeSet<(u32, u64)>, sb_lost: bool) {
    let t = Instant::now();
    let damaged = fx.dir.join(format!("{name}.damaged"));
    ok("copy", std::fs::copy(&fx.good, &damaged));
    zero_block(&damaged, block);
    check_names_block(&damaged, block, name);

    let size = ok("size", std::fs::metadata(&fx.good)).len();
    let ours = ok(
        "out",
        debian::zeroed_metadata_file(&fx.dir, &format!("{name}.ours"), size),
    );
    let theirs = ok(
        "out",
        debian::zeroed_metadata_file(&fx.dir, &format!("{name}.debian"), size),
    );
    let sb = &fx.md.superblock;
    let extra: Vec<String> = if sb_lost {
        vec![
            "--transaction-id".into(),
            sb.transaction.to_string(),
            "--data-block-size".into(),
            sb.data_block_size.to_string(),
            "--nr-data-blocks".into(),
            sb.nr_data_blocks.to_string(),
        ]
    } else {
        Vec::new()
    };
    assert!(
        our_repair(&damaged, &ours, &extra),
        "{name}: our repair failed"
    );
    assert_clean_by_both(&ours, name);

    let got = ok(
        "parse our dump",
        read_xml_str(&ok("thin_dump ours", debian::thin_dump(&ours))),
    );
    let got_maps = mappings_of(&got);
    let mut want = mappings_of(&fx.md);
    want.retain(|k, _| !lost.contains(k));
    if got_maps != want {
        let missing = want.keys().filter(|k| !got_maps.contains_key(k)).count();
        let extra = got_maps
            .iter()
            .filter(|(k, v)| want.get(k) != Some(v))
            .count();
        panic!(
            "{name}: repaired mappings differ: {missing} missing, {extra} extra or changed \
             (want {}, got {})",
            want.len(),
            got_maps.len()
        );
    }
    // Details survive unless their tree was destroyed.
    if block != fx.layout.details_root {
        for d in &got.devices {
            let orig = fx
                .md
                .devices
                .iter()
                .find(|o| o.device.dev_id == d.device.dev_id);
            let orig = orig.unwrap_or_else(|| panic!("{name}: invented device"));
            let mut w = orig.device.clone();
            w.mapped_blocks = d.nr_mappings();
            assert_eq!(d.device, w, "{name}: details");
        }
    }
    if !sb_lost {
        assert_eq!(got.superblock.transaction, sb.transaction, "{name}");
        assert_eq!(got.superblock.time, sb.time, "{name}");
    }

    // Debian's repair on the same damage: whatever it recovers, we recover too.
    let mut args: Vec<OsString> = vec![
        "-i".into(),
        damaged.clone().into(),
        "-o".into(),
        theirs.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let argrefs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let deb = ok("thin_repair", debian::run("thin_repair", &argrefs));
    let deb_count = if deb.success() {
        match debian::run("thin_dump", &[theirs.as_os_str()]) {
            Ok(out) if out.success() => {
                let theirs_md = ok("parse debian dump", read_xml_str(&out.stdout));
                let theirs_maps = mappings_of(&theirs_md);
                let not_ours = theirs_maps
                    .iter()
                    .filter(|(k, v)| got_maps.get(k) != Some(v))
                    .count();
                assert_eq!(not_ours, 0, "{name}: Debian recovers mappings we lose");
                assert!(
                    got.devices.len() >= theirs_md.devices.len(),
                    "{name}: devices"
                );
                theirs_maps.len().to_string()
            }
            _ => "dump failed".into(),
        }
    } else {
        format!("repair failed ({:?})", deb.status)
    };
    eprintln!(
        "{name:>16}: block {block:>6} zeroed; ours kept {} of {} mappings (lost {}), debian: {deb_count}; {:?}",
        got_maps.len(),
        mappings_of(&fx.md).len(),
        lost.len(),
        t.elapsed()
    );
}

#[test]
fn repair_recovers_at_least_what_debian_does() {
    let t = Instant::now();
    let fx = fixture();
    eprintln!(
        "fixture: {} devices, {} mappings, {:?}",
        fx.md.devices.len(),
        fx.md.nr_mappings(),
        t.elapsed()
    );
    let none = BTreeSet::new();
    let l = &fx.layout;
    let below = |b: u64| l.below.get(&b).cloned().unwrap_or_default();
    assert!(!below(l.internal).is_empty() && !below(l.leaf).is_empty());
    run_case(&fx, "superblock", 0, &none, true);
    run_case(&fx, "top_level_root", l.top_root, &none, false);
    run_case(&fx, "details_root", l.details_root, &none, false);
    run_case(&fx, "internal_node", l.internal, &below(l.internal), false);
    run_case(&fx, "leaf", l.leaf, &below(l.leaf), false);
    run_case(&fx, "data_bitmap", l.data_bitmap, &none, false);
    run_case(&fx, "metadata_index", l.metadata_index, &none, false);
}

#[test]
fn repair_cli_contract() {
    let dir = ok("tempdir", debian::temp_dir());
    let missing = dir.path().join("missing");
    let code = thin_tools::commands::repair::run(vec!["thin_repair".into()]);
    assert_ne!(code, std::process::ExitCode::SUCCESS);
    let input = ok(
        "in",
        debian::zeroed_metadata_file(dir.path(), "in", 1 << 20),
    );
    assert!(!our_repair(&input, &missing, &[]), "absent output accepted");
    assert!(!our_repair(&input, &input, &[]), "in == out accepted");
    let out = ok(
        "out",
        debian::zeroed_metadata_file(dir.path(), "out", 1 << 20),
    );
    // An all-zero input has no superblock: the three values are required.
    assert!(!our_repair(&input, &out, &[]));
    let deb = ok(
        "thin_repair",
        debian::run(
            "thin_repair",
            &[
                "-i".as_ref(),
                input.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
        ),
    );
    assert_eq!(deb.status, Some(1));
}

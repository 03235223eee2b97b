//! Our XML and human-readable formats against Debian's thin-provisioning-tools 0.9.
//!
//! For each generated pool: our XML writer → Debian `thin_restore` → Debian `thin_check`
//! passes → Debian `thin_dump`; our parser reads that dump back to the generated pool (after
//! the normalisation 0.9 applies, see `Metadata::normalized_09`), and our writers re-emit the
//! dump (XML and `-f human_readable`) byte for byte.
//!
//! Needs `thin_restore`, `thin_check` and `thin_dump` from Debian's thin-provisioning-tools;
//! fails (never skips) without them.

use std::path::Path;
use std::time::Instant;

use e2e_tests::debian;
use e2e_tests::xmlgen::{self, GenConfig};
use thin_tools::human_readable::to_human_readable_string;
use thin_tools::ir::{Map, Metadata};
use thin_tools::xml::{read_xml_str, to_xml_string, write_xml};

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Equal texts, or a panic showing the first differing line (the texts can be megabytes).
fn assert_same_text(what: &str, ours: &str, debian: &str) {
    if ours == debian {
        return;
    }
    let (mut o, mut d) = (ours.lines(), debian.lines());
    for n in 1.. {
        match (o.next(), d.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (a, b) => panic!(
                "{what}: first difference at line {n}\n  ours:   {a:?}\n  debian: {b:?}\n\
                 (ours {} bytes, debian {} bytes)",
                ours.len(),
                debian.len()
            ),
        }
    }
}

fn assert_same_pool(what: &str, got: &Metadata, want: &Metadata) {
    if got == want {
        return;
    }
    assert_eq!(got.superblock, want.superblock, "{what}: superblock");
    assert_eq!(
        got.devices.len(),
        want.devices.len(),
        "{what}: device count"
    );
    for (g, w) in got.devices.iter().zip(&want.devices) {
        assert_eq!(g.device, w.device, "{what}: device details");
        if g.mappings != w.mappings {
            let first = g.mappings.iter().zip(&w.mappings).position(|(a, b)| a != b);
            panic!(
                "{what}: device {} mappings differ (got {} runs, want {}), first at run {first:?}",
                w.device.dev_id,
                g.mappings.len(),
                w.mappings.len()
            );
        }
    }
    unreachable!("{what}: pools differ but no difference found");
}

/// Restores `xml` with Debian's tools into a fresh metadata file and checks it.
fn debian_restore_and_check(dir: &Path, xml: &str, meta_bytes: u64) -> std::path::PathBuf {
    let xml_path = dir.join("in.xml");
    ok("write xml", std::fs::write(&xml_path, xml));
    let meta = ok(
        "metadata file",
        debian::zeroed_metadata_file(dir, "meta", meta_bytes),
    );
    ok("thin_restore", debian::thin_restore(&xml_path, &meta));
    let check = ok("thin_check", debian::thin_check(&meta));
    assert!(
        check.success(),
        "thin_check failed ({:?}):\n{}\n{}",
        check.status,
        check.stdout,
        check.stderr
    );
    meta
}

/// The full round trip for one pool; returns the Debian dump.
fn round_trip(what: &str, md: &Metadata) -> String {
    let dir = ok("temp dir", debian::temp_dir());
    let ours = to_xml_string(md);
    let meta = debian_restore_and_check(dir.path(), &ours, xmlgen::metadata_bytes_for(md));
    let dump = ok("thin_dump", debian::thin_dump(&meta));

    let parsed = ok("parse Debian's dump", read_xml_str(&dump));
    let want = md.normalized_09();
    assert_same_pool(what, &parsed.canonical(), &want);
    assert_same_text(what, &to_xml_string(&parsed), &dump);
    assert_same_text(what, &to_xml_string(&want), &dump);

    let human = ok(
        "thin_dump -f human_readable",
        debian::thin_dump_human(&meta),
    );
    assert_same_text(what, &to_human_readable_string(&parsed), &human);
    assert_same_text(what, &to_human_readable_string(&want), &human);
    dump
}

fn generated(cfg: &GenConfig) -> Metadata {
    let md = xmlgen::generate(cfg);
    ok("generated pool is valid", xmlgen::validate(&md));
    md
}

#[test]
fn tools_are_debian_09() {
    let v = ok("thin_dump -V", debian::version());
    assert!(
        v.starts_with("0.9"),
        "expected thin-provisioning-tools 0.9, got {v}"
    );
}

#[test]
fn spec_worked_example() {
    let xml = r#"<superblock uuid="" time="2" transaction="7" flags="0" version="2" data_block_size="128" nr_data_blocks="1024">
  <device dev_id="0" mapped_blocks="4" transaction="0" creation_time="0" snap_time="2">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="7" time="0"/>
  </device>
  <device dev_id="1" mapped_blocks="4" transaction="3" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="8" time="1"/>
  </device>
  <device dev_id="2" mapped_blocks="4" transaction="5" creation_time="2" snap_time="2">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="7" time="0"/>
  </device>
  <device dev_id="9" mapped_blocks="0" transaction="6" creation_time="2" snap_time="2">
  </device>
</superblock>
"#;
    let md = ok("parse", read_xml_str(xml));
    let dump = round_trip("worked example", &md);
    assert_eq!(dump, xml);
}

#[test]
fn pool_without_devices_and_absent_optionals() {
    let xml = r#"<superblock uuid="" time="0" transaction="1" data_block_size="128" nr_data_blocks="100">
</superblock>
"#;
    let md = ok("parse", read_xml_str(xml));
    assert_eq!(md.superblock.version, None);
    let dump = round_trip("no devices", &md);
    // 0.9 restores an absent version as 1 and an absent flags as 0.
    assert!(dump.contains(r#"flags="0" version="1""#), "{dump}");
}

#[test]
fn small_pools() {
    for seed in 1..=4 {
        round_trip(
            &format!("small seed {seed}"),
            &generated(&GenConfig::small(seed)),
        );
    }
}

#[test]
fn pools_with_internal_nodes() {
    for seed in [11, 12] {
        let md = generated(&GenConfig::internal_nodes(seed));
        assert!(md.devices.iter().any(|d| d.nr_mappings() > 252));
        round_trip(&format!("internal nodes seed {seed}"), &md);
    }
}

#[test]
fn pool_with_several_data_bitmaps() {
    let md = generated(&GenConfig::many_data_blocks(21));
    assert!(md.superblock.nr_data_blocks > 16320);
    round_trip("many data blocks seed 21", &md);
}

/// The writer merges runs itself: a pool given as single mappings dumps as Debian does.
#[test]
fn writer_merges_mappings_fed_one_by_one() {
    let md = generated(&GenConfig::small(5));
    let mut singles = md.clone();
    for d in &mut singles.devices {
        d.mappings = d
            .mappings
            .iter()
            .flat_map(|m| {
                (0..m.len).map(move |k| Map::single(m.thin_begin + k, m.data_begin + k, m.time))
            })
            .collect();
    }
    assert!(
        singles
            .devices
            .iter()
            .map(|d| d.mappings.len())
            .sum::<usize>()
            > 100
    );
    let dump = round_trip("small seed 5, single mappings", &singles);
    assert_same_text("singles vs runs", &to_xml_string(&singles), &dump);
}

/// 1.x shared-subtree elements are expanded by our parser into XML 0.9 restores.
#[test]
fn expanded_1x_defs_restore_with_09() {
    let xml = r#"<superblock uuid="" time="1" transaction="3" version="2" data_block_size="128" nr_data_blocks="2048">
  <def name="17">
    <range_mapping origin_begin="0" data_begin="100" length="50" time="0"/>
    <single_mapping origin_block="60" data_block="7" time="0"/>
  </def>
  <device dev_id="1" mapped_blocks="52" transaction="1" creation_time="0" snap_time="1">
    <ref name="17"/>
    <single_mapping origin_block="61" data_block="8" time="0"/>
  </device>
  <device dev_id="2" mapped_blocks="52" transaction="2" creation_time="1" snap_time="1">
    <ref name="17"/>
    <single_mapping origin_block="61" data_block="9" time="1"/>
  </device>
</superblock>
"#;
    let md = ok("parse 1.x dump", read_xml_str(xml));
    assert_eq!(md.devices[1].nr_mappings(), 52);
    let dump = round_trip("1.x def/ref", &md);
    assert!(
        dump.contains(r#"<range_mapping origin_begin="0" data_begin="100" length="50" time="0"/>"#)
    );
}

/// Benchmark-sized round trip (about a million mappings over ten devices; a few seconds in
/// release). Timings: `cargo test --release -p e2e-tests --test xml_debian large -- --nocapture`.
#[test]
fn large_pool_round_trip() {
    let t = Instant::now();
    let md = generated(&GenConfig::large(1));
    eprintln!(
        "generated {} mappings in {} devices: {:?}",
        md.nr_mappings(),
        md.devices.len(),
        t.elapsed()
    );
    let dir = ok("temp dir", debian::temp_dir());
    let xml_path = dir.path().join("large.xml");
    let t = Instant::now();
    let f = std::io::BufWriter::new(ok("create", std::fs::File::create(&xml_path)));
    ok("write xml", write_xml(&md, f));
    eprintln!("our writer: {:?}", t.elapsed());
    let t = Instant::now();
    let meta = ok(
        "metadata file",
        debian::zeroed_metadata_file(dir.path(), "meta", xmlgen::metadata_bytes_for(&md)),
    );
    ok("thin_restore", debian::thin_restore(&xml_path, &meta));
    eprintln!("Debian thin_restore: {:?}", t.elapsed());
    let t = Instant::now();
    let dump = ok("thin_dump", debian::thin_dump(&meta));
    eprintln!("Debian thin_dump: {:?}", t.elapsed());
    let t = Instant::now();
    let parsed = ok("parse", read_xml_str(&dump));
    eprintln!("our parser: {:?} for {} bytes", t.elapsed(), dump.len());
    assert_same_pool("large", &parsed.canonical(), &md.normalized_09());
    assert_same_text("large", &to_xml_string(&parsed), &dump);
    let human = ok(
        "thin_dump -f human_readable",
        debian::thin_dump_human(&meta),
    );
    assert_same_text("large", &to_human_readable_string(&parsed), &human);
}

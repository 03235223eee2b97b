//! `thin_ls`, `thin_delta`, `thin_rmap`, `thin_metadata_size` and `thin_trim` against Debian's
//! thin-provisioning-tools 0.9: on metadata written by Debian's `thin_restore` from generated
//! pools (snapshots sharing blocks), our tools' stdout and exit codes equal Debian's, byte for
//! byte. Our tools run in-process through their `run_with` entry points (same argv handling
//! as the `thin` binary). Fails (never skips) without the Debian tools.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use e2e_tests::debian;
use e2e_tests::xmlgen::{self, GenConfig};
use thin_core::file::FileDevice;
use thin_core::thin::{FormatOptions, Pool, WritePlan};
use thin_tools::commands::{delta, ls, metadata_size, rmap, trim};
use thin_tools::xml::to_xml_string;

type RunWith = fn(&[OsString], &mut dyn std::io::Write, &mut dyn std::io::Write) -> u8;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// (exit code, stdout) of our tool.
fn ours(tool: &str, f: RunWith, args: &[&str]) -> (i32, String) {
    let argv: Vec<OsString> = std::iter::once(tool)
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = f(&argv, &mut out, &mut err);
    (
        i32::from(code),
        String::from_utf8(out).expect("our output is UTF-8"),
    )
}

/// (exit code, stdout) of Debian's tool.
fn debian_run(tool: &'static str, args: &[&str]) -> (i32, String) {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
    let o = ok(tool, debian::run(tool, &a));
    (o.status.unwrap_or(-1), o.stdout)
}

fn same(tool: &'static str, f: RunWith, args: &[&str]) {
    let d = debian_run(tool, args);
    let o = ours(tool, f, args);
    assert_eq!(o, d, "{tool} {args:?}: (exit code, stdout) ours vs debian");
}

/// Restores a generated pool with Debian's thin_restore; returns the metadata path.
fn restored(dir: &Path, name: &str, cfg: &GenConfig) -> (PathBuf, Vec<u32>) {
    let md = xmlgen::generate(cfg);
    let xml = dir.join(format!("{name}.xml"));
    ok("write xml", std::fs::write(&xml, to_xml_string(&md)));
    let meta = ok(
        "metadata file",
        debian::zeroed_metadata_file(dir, name, xmlgen::metadata_bytes_for(&md)),
    );
    ok("thin_restore", debian::thin_restore(&xml, &meta));
    let ids = md.devices.iter().map(|d| d.device.dev_id).collect();
    (meta, ids)
}

const ALL_FIELDS: &str = "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,MAPPED_SECTORS,\
EXCLUSIVE_SECTORS,SHARED_SECTORS,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES,MAPPED,EXCLUSIVE,\
SHARED,TRANSACTION,CREATE_TIME,SNAP_TIME";

#[test]
fn ls_delta_rmap_match_debian_on_generated_pools() {
    let t = Instant::now();
    let dir = ok("temp dir", debian::temp_dir());
    let configs = [
        ("small1", GenConfig::small(1)),
        ("small2", GenConfig::small(2)),
        ("small3", GenConfig::small(3)),
        ("internal", GenConfig::internal_nodes(4)),
        ("many", GenConfig::many_data_blocks(5)),
    ];
    for (name, cfg) in &configs {
        let (meta, ids) = restored(dir.path(), name, cfg);
        let m = meta.to_str().expect("utf-8 temp path");
        same("thin_ls", ls::run_with, &[m]);
        same("thin_ls", ls::run_with, &["-o", ALL_FIELDS, m]);
        same(
            "thin_ls",
            ls::run_with,
            &["--no-headers", "-o", ALL_FIELDS, m],
        );
        // Every ordered pair among the first devices (snapshots share with their origins).
        let firsts: Vec<String> = ids.iter().take(4).map(|i| i.to_string()).collect();
        for a in &firsts {
            for b in &firsts {
                same(
                    "thin_delta",
                    delta::run_with,
                    &["--snap1", a, "--snap2", b, m],
                );
                same(
                    "thin_delta",
                    delta::run_with,
                    &["--verbose", "--thin1", a, "--thin2", b, m],
                );
            }
        }
        for regions in [
            vec!["0..1000000"],
            vec!["0..10", "20..40"],
            vec!["5..6", "100..300", "3..50"],
        ] {
            let mut args = Vec::new();
            for r in &regions {
                args.extend(["--region", r]);
            }
            args.push(m);
            same("thin_rmap", rmap::run_with, &args);
        }
    }
    eprintln!("generated pools: {:?}", t.elapsed());
}

/// Our Pool: create a thin, write, snapshot, write some origin blocks; the delta between
/// the snapshot and its origin is exactly the blocks written since the snapshot.
#[test]
fn delta_between_snapshot_and_origin_lists_blocks_written_since() {
    let dir = ok("temp dir", debian::temp_dir());
    let meta = dir.path().join("meta");
    let dev = ok("create", FileDevice::create(&meta, 2048));
    let mut pool = ok(
        "format",
        Pool::format(
            dev,
            FormatOptions {
                data_block_size: 128,
                nr_data_blocks: 4096,
                cache_blocks: 256,
            },
        ),
    );
    let write = |pool: &mut Pool<FileDevice>, id: u64, v: u64| {
        let plan = ok("prepare_write", pool.prepare_write(id, v));
        if !matches!(plan, WritePlan::InPlace { .. }) {
            ok("complete_write", pool.complete_write(id, v, plan));
        }
    };
    ok("create_thin", pool.create_thin(1));
    for v in 0..300 {
        write(&mut pool, 1, v * 2);
    }
    ok("snap", pool.create_snap(2, 1));
    let mut changed = std::collections::BTreeSet::new();
    for v in (0..600).filter(|v| v % 7 == 0 || (200..230).contains(v)) {
        write(&mut pool, 1, v);
        changed.insert(v);
    }
    ok("commit", pool.commit());
    drop(pool);
    // Expected plain delta: left = snapshot (2), right = origin (1).
    let mut expect_different = Vec::new();
    let mut expect_right_only = Vec::new();
    for &v in &changed {
        if v < 600 && v % 2 == 0 {
            expect_different.push(v);
        } else {
            expect_right_only.push(v);
        }
    }
    let m = meta.to_str().expect("utf-8 path");
    let (code, out) = ours(
        "thin_delta",
        delta::run_with,
        &["--snap1", "2", "--snap2", "1", "--verbose", m],
    );
    assert_eq!(code, 0, "{out}");
    let mut got_diff = Vec::new();
    let mut got_right = Vec::new();
    let mut section = "";
    for line in out.lines() {
        let l = line.trim();
        for s in ["same", "different", "left_only", "right_only"] {
            if l == format!("<{s}>") {
                section = s;
            }
        }
        if let Some(rest) = l.strip_prefix("<range begin=\"") {
            let begin: u64 = ok("begin", rest[..rest.find('"').expect("quote")].parse());
            let len_at = rest.find("length=\"").expect("length") + 8;
            let len: u64 = ok(
                "len",
                rest[len_at..rest[len_at..].find('"').expect("q") + len_at].parse(),
            );
            let target = match section {
                "different" => &mut got_diff,
                "right_only" => &mut got_right,
                "left_only" => panic!("the snapshot has nothing the origin lacks"),
                _ => continue,
            };
            target.extend(begin..begin + len);
        }
    }
    assert_eq!(got_diff, expect_different);
    assert_eq!(got_right, expect_right_only);
    // Debian reads our pool the same way.
    for verbose in [false, true] {
        let mut args = vec!["--snap1", "2", "--snap2", "1", m];
        if verbose {
            args.insert(0, "--verbose");
        }
        same("thin_delta", delta::run_with, &args);
    }
    same("thin_ls", ls::run_with, &["-o", ALL_FIELDS, m]);
}

#[test]
fn metadata_size_matches_debian_on_a_grid() {
    let mut n = 0;
    for b in ["128", "64k", "1m", "2m", "512s", "8m", "1g", "63k", "100b"] {
        for s in ["1000000", "1g", "10g", "1t", "200T", "3p", "32k"] {
            for m in ["1", "100", "1k", "65536"] {
                for extra in [
                    &[][..],
                    &["-u", "m"],
                    &["-u", "G"],
                    &["-n"],
                    &["-u", "k", "--numeric-only=short"],
                    &["-nlong", "-u", "t"],
                    &["-u", "b"],
                ] {
                    let mut args = vec!["-b", b, "-s", s, "-m", m];
                    args.extend_from_slice(extra);
                    same("thin_metadata_size", metadata_size::run_with, &args);
                    n += 1;
                }
            }
        }
    }
    for bad in [
        &["-b", "64k", "-s", "1t"][..],
        &["-x"],
        &["-b", "64k", "-b", "1"],
        &["-b", "3x", "-s", "1t", "-m", "1"],
        &["-u", "q"],
        &["-n", "-n"],
        &["-nfoo"],
        &["-h"],
        &[],
    ] {
        same("thin_metadata_size", metadata_size::run_with, bad);
    }
    assert!(n > 1000);
}

#[test]
fn error_exit_codes_match_debian() {
    let dir = ok("temp dir", debian::temp_dir());
    let (meta, _) = restored(dir.path(), "p", &GenConfig::small(9));
    let corrupt = dir.path().join("corrupt");
    let mut bytes = ok("read", std::fs::read(&meta));
    bytes[100] ^= 0xff; // inside the superblock: bad checksum
    ok("write", std::fs::write(&corrupt, bytes));
    let zero = ok(
        "zero file",
        debian::zeroed_metadata_file(dir.path(), "z", 1 << 20),
    );
    let (m, c, z) = (
        meta.to_str().expect("utf-8"),
        corrupt.to_str().expect("utf-8"),
        zero.to_str().expect("utf-8"),
    );
    let missing = "/nonexistent/meta";
    for args in [
        &[][..],
        &[missing],
        &[c],
        &[z],
        &["--bogus", m],
        &["-o", "DEV,NOPE", m],
        &["-o", ",DEV", m],
        &["-o", "DEV,", m],
        &["-m", m],
        &["-V"],
        &["--help"],
    ] {
        same("thin_ls", ls::run_with, args);
    }
    for args in [
        &[][..],
        &[m],
        &["--snap1", "1", m],
        &["--snap1", "x", "--snap2", "1", m],
        &["--snap1", "1", "--snap2", "99999", m],
        &["--snap1", "1", "--snap2", "1", missing],
        &["--snap1", "1", "--snap2", "1", c],
        &["--snap1", "1", "--snap2", "1", "-m", m],
        &["--snap1", "1", "--snap2", "1", "--nope", m],
    ] {
        same("thin_delta", delta::run_with, args);
    }
    for args in [
        &[][..],
        &[m],
        &["--region", "5..5", m],
        &["--region", "5", m],
        &["--region", "5..x", m],
        &["--region", "0..9", missing],
        &["--region", "0..9", c],
        &["-m", "--region", "0..9", m],
    ] {
        same("thin_rmap", rmap::run_with, args);
    }
    for args in [
        &[][..],
        &["--metadata-dev", m],
        &["--metadata-dev", missing, "--data-dev", m],
        &["--metadata-dev", c, "--data-dev", m],
        &["--metadata-dev", m, "--data-dev", missing],
        &["-V"],
    ] {
        same("thin_trim", trim::run_with, args);
    }
}

/// After trim, free data blocks of a file read as zeroes and are holes; mapped blocks keep
/// their data.
#[test]
fn trim_punches_free_blocks_of_a_data_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = ok("temp dir", debian::temp_dir());
    let (meta, _) = restored(dir.path(), "t", &GenConfig::small(11));
    let m = meta.to_str().expect("utf-8");
    // Which data blocks are mapped, from thin_rmap over everything.
    let (_, rm) = ours(
        "thin_rmap",
        rmap::run_with,
        &["--region", "0..18446744073709551615", m],
    );
    let mut used = BTreeMap::new();
    for line in rm.lines() {
        let range = line
            .strip_prefix("data ")
            .and_then(|r| r.split(' ').next())
            .expect("rmap line");
        let (a, b) = range.split_once("..").expect("range");
        for x in ok("a", a.parse::<u64>())..ok("b", b.parse::<u64>()) {
            used.insert(x, ());
        }
    }
    let (_, sizes) = ours("thin_ls", ls::run_with, &["--no-headers", "-o", "DEV", m]);
    assert!(!sizes.is_empty());
    let r = ok(
        "reader",
        thin_core::thin::reader::Reader::open(
            ok("open", FileDevice::open_read_only(&meta)),
            64,
            thin_core::thin::reader::Source::Live,
        ),
    );
    let nr = r.superblock().data_sm_root.nr_blocks;
    let bs = u64::from(r.superblock().data_block_size) * 512;
    drop(r);
    let data = dir.path().join("data");
    let block: Vec<u8> = (0..bs).map(|i| (i % 251) as u8 + 1).collect();
    {
        use std::io::Write;
        let mut f = ok("create data", std::fs::File::create(&data));
        for _ in 0..nr {
            ok("fill", f.write_all(&block));
        }
    }
    let before = ok("stat", std::fs::metadata(&data)).blocks();
    let d = data.to_str().expect("utf-8");
    let (code, _) = ours(
        "thin_trim",
        trim::run_with,
        &["--metadata-dev", m, "--data-dev", d],
    );
    assert_eq!(code, 0);
    let st = ok("stat", std::fs::metadata(&data));
    assert_eq!(st.len(), nr * bs, "size kept");
    let content = ok("read data", std::fs::read(&data));
    for b in 0..nr {
        let chunk = &content[(b * bs) as usize..((b + 1) * bs) as usize];
        if used.contains_key(&b) {
            assert!(chunk == &block[..], "mapped data block {b} lost its data");
        } else {
            assert!(
                chunk.iter().all(|&x| x == 0),
                "free data block {b} not zero"
            );
        }
    }
    let free = nr - used.len() as u64;
    // st_blocks counts 512-byte units; every free block must have been deallocated.
    assert!(
        free == 0 || st.blocks() < before,
        "{free} free blocks, st_blocks {before} → {}",
        st.blocks()
    );
}

//! Our thin_check, thin_dump and thin_restore against Debian's 0.9 on the same files.
//!
//! - On metadata Debian's `thin_restore` made from generated XML (several sizes, snapshots
//!   sharing blocks, internal nodes, several bitmaps), our `thin_dump` (XML and
//!   human-readable) is byte-identical to Debian's, and our `thin_check` passes.
//! - Our `thin_restore` of the same XML makes metadata Debian's `thin_check` accepts and
//!   Debian's `thin_dump` dumps identically; our check passes on it too.
//! - Damage makes both checkers fail; error exits match.

use std::ffi::OsStr;
use std::path::Path;

use e2e_tests::xmlgen::{self, GenConfig};
use e2e_tests::{debian, ours};
use thin_tools::xml::to_xml_string;

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

fn same(what: &str, a: &str, b: &str) {
    if a != b {
        let line = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        panic!("{what}: outputs differ (first differing line {line:?}; ours {} bytes, Debian {} bytes)", a.len(), b.len());
    }
}

fn round_trip(cfg: &GenConfig) {
    let md = xmlgen::generate(cfg);
    let dir = debian::temp_dir().expect("temp dir");
    let xml = dir.path().join("in.xml");
    std::fs::write(&xml, to_xml_string(&md)).expect("write xml");
    let bytes = xmlgen::metadata_bytes_for(&md).max(8 << 20);
    let theirs = debian::zeroed_metadata_file(dir.path(), "theirs", bytes).expect("file");
    let mine = debian::zeroed_metadata_file(dir.path(), "mine", bytes).expect("file");
    debian::thin_restore(&xml, &theirs).expect("Debian thin_restore");

    // Dump of Debian-made metadata: identical.
    let their_dump = debian::thin_dump(&theirs).expect("Debian thin_dump");
    let our_dump = ours::run("thin_dump", &[os(&theirs)]);
    assert!(our_dump.success(), "our thin_dump: {}", our_dump.stderr);
    same("thin_dump XML", &our_dump.stdout, &their_dump);
    let their_hr = debian::thin_dump_human(&theirs).expect("Debian thin_dump -f human_readable");
    let our_hr = ours::run(
        "thin_dump",
        &["-f".as_ref(), "human_readable".as_ref(), os(&theirs)],
    );
    same("thin_dump -f human_readable", &our_hr.stdout, &their_hr);
    let c = ours::run("thin_check", &[os(&theirs)]);
    assert!(
        c.success(),
        "our thin_check on Debian's metadata: {}",
        c.stderr
    );

    // Our restore: Debian accepts it and dumps the same pool.
    let dump_xml = dir.path().join("dump.xml");
    std::fs::write(&dump_xml, &their_dump).expect("write dump");
    let r = ours::run(
        "thin_restore",
        &["-i".as_ref(), os(&dump_xml), "-o".as_ref(), os(&mine)],
    );
    assert!(r.success(), "our thin_restore: {}", r.stderr);
    let chk = debian::thin_check(&mine).expect("Debian thin_check");
    assert!(
        chk.success(),
        "Debian thin_check on our restore: {}{}",
        chk.stdout,
        chk.stderr
    );
    same(
        "Debian's dump of our restore",
        &debian::thin_dump(&mine).expect("dump"),
        &their_dump,
    );
    let c = ours::run("thin_check", &[os(&mine)]);
    assert!(c.success(), "our thin_check on our restore: {}", c.stderr);
    // Restoring over valid metadata needs --force.
    let again = ours::run(
        "thin_restore",
        &["-i".as_ref(), os(&dump_xml), "-o".as_ref(), os(&mine)],
    );
    assert_eq!(again.status, Some(1));
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}

#[test]
fn small_pools_round_trip() {
    for seed in 1..4 {
        round_trip(&GenConfig::small(seed));
    }
}

#[test]
fn pools_with_internal_nodes_round_trip() {
    round_trip(&GenConfig::internal_nodes(5));
}

#[test]
fn pool_with_several_data_bitmaps_round_trips() {
    round_trip(&GenConfig::many_data_blocks(9));
}

#[test]
fn dump_options_match_debian() {
    let md = xmlgen::generate(&GenConfig::small(21));
    let dir = debian::temp_dir().expect("temp dir");
    let xml = dir.path().join("in.xml");
    std::fs::write(&xml, to_xml_string(&md)).expect("write xml");
    let meta = debian::zeroed_metadata_file(dir.path(), "m", 8 << 20).expect("file");
    debian::thin_restore(&xml, &meta).expect("restore");
    let id = md.devices[1].device.dev_id.to_string();
    for args in [vec!["--skip-mappings"], vec!["--dev-id", id.as_str()]] {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(os(&meta));
        let theirs = debian::run_ok("thin_dump", &a).expect("Debian thin_dump");
        let mine = ours::run("thin_dump", &a);
        same(&format!("thin_dump {args:?}"), &mine.stdout, &theirs.stdout);
    }
    // -o writes the same file.
    let out = dir.path().join("o.xml");
    assert!(ours::run("thin_dump", &["-o".as_ref(), os(&out), os(&meta)]).success());
    same(
        "thin_dump -o",
        &std::fs::read_to_string(&out).expect("read"),
        &debian::thin_dump(&meta).expect("dump"),
    );
}

#[test]
fn metadata_snapshot_dump_matches_debian() {
    // Kernel-made metadata with a held metadata snapshot.
    let dir = debian::temp_dir().expect("temp dir");
    let gz = e2e_tests::kernel_fixtures::fixture_path("held-metadata-snap");
    let mut img = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(gz).expect("fixture")),
        &mut img,
    )
    .expect("gunzip");
    let meta = dir.path().join("m");
    std::fs::write(&meta, img).expect("write");
    let theirs = debian::thin_dump_metadata_snap(&meta).expect("Debian thin_dump -m");
    let mine = ours::run("thin_dump", &["-m".as_ref(), os(&meta)]);
    same("thin_dump -m", &mine.stdout, &theirs);
    let c = ours::run("thin_check", &["-m".as_ref(), os(&meta)]);
    assert!(c.success(), "{}", c.stderr);
}

#[test]
fn damage_fails_both_checkers_and_errors_exit_like_debian() {
    let md = xmlgen::generate(&GenConfig::internal_nodes(3));
    let dir = debian::temp_dir().expect("temp dir");
    let xml = dir.path().join("in.xml");
    std::fs::write(&xml, to_xml_string(&md)).expect("write xml");
    let meta = debian::zeroed_metadata_file(dir.path(), "m", 8 << 20).expect("file");
    debian::thin_restore(&xml, &meta).expect("restore");
    let mut img = std::fs::read(&meta).expect("read");
    // Flip a byte in every other non-zero block after the superblock, one at a time.
    let used: Vec<usize> = (1..img.len() / 4096)
        .filter(|&b| img[b * 4096..(b + 1) * 4096].iter().any(|&x| x != 0))
        .collect();
    assert!(used.len() > 10);
    let mut detected = 0;
    for &b in used.iter().step_by(3) {
        img[b * 4096 + 200] ^= 0x10;
        let bad = dir.path().join("bad");
        std::fs::write(&bad, &img).expect("write");
        img[b * 4096 + 200] ^= 0x10;
        let theirs = debian::thin_check(&bad).expect("Debian thin_check");
        let mine = ours::run("thin_check", &[os(&bad)]);
        if !theirs.success() {
            assert_eq!(
                mine.status,
                Some(1),
                "block {b}: Debian fails, we pass:\n{}",
                theirs.stderr
            );
            assert!(
                mine.stderr.contains(&format!("block {b}")),
                "block {b} not named: {}",
                mine.stderr
            );
            detected += 1;
        }
        // -q prints nothing either way.
        let q = ours::run("thin_check", &["-q".as_ref(), os(&bad)]);
        assert!(q.stdout.is_empty() && q.stderr.is_empty());
    }
    assert!(
        detected >= used.len() / 6,
        "only {detected} damaged blocks detected"
    );
    let missing = dir.path().join("missing");
    assert_eq!(
        ours::run("thin_check", &[os(&missing)]).status,
        debian::thin_check(&missing).expect("run").status
    );
    assert_eq!(ours::run("thin_dump", &[os(&missing)]).status, Some(1));
    assert_eq!(
        ours::run("thin_check", &["--bogus".as_ref()]).status,
        Some(1)
    );
}

/// Usage, `-V`, usage errors, missing/bad paths: our thin_check, thin_dump and thin_restore
/// print what Debian's print (stdout and stderr, with argv[0] as given) and exit the same.
#[test]
fn command_lines_and_errors_match_debian() {
    use std::ffi::OsString;
    use thin_tools::commands::{check, dump, restore};
    type RunWith = fn(&[OsString], &mut dyn std::io::Write, &mut dyn std::io::Write) -> u8;

    let md = xmlgen::generate(&GenConfig::small(31));
    let dir = debian::temp_dir().expect("temp dir");
    let xml = dir.path().join("in.xml");
    std::fs::write(&xml, to_xml_string(&md)).expect("write xml");
    let meta = debian::zeroed_metadata_file(dir.path(), "m", 8 << 20).expect("file");
    debian::thin_restore(&xml, &meta).expect("restore");
    let (x, m) = (xml.to_str().expect("utf-8"), meta.to_str().expect("utf-8"));
    let d = dir.path().to_str().expect("utf-8");
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("utf-8");

    let cmp = |tool: &'static str, f: RunWith, args: &[&str]| {
        let argv0 = debian::tool_path(tool).expect("Debian tool");
        let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let theirs = debian::run(tool, &a).expect("run Debian tool");
        // Same argv[0] as Debian's, so getopt's messages name the same program.
        let argv: Vec<OsString> = std::iter::once(argv0.into_os_string())
            .chain(args.iter().map(OsString::from))
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = f(&argv, &mut out, &mut err);
        let ours = (
            Some(i32::from(code)),
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        );
        // getopt prints the full argv[0]; our tools print its file name.
        let their_err = theirs.stderr.replace(
            &format!("{}: ", debian::tool_path(tool).unwrap().display()),
            &format!("{tool}: "),
        );
        assert_eq!(
            ours,
            (theirs.status, theirs.stdout, their_err),
            "{tool} {args:?}: (exit code, stdout, stderr) ours vs Debian"
        );
    };
    let common: &[&[&str]] = &[
        &["--help"],
        &["-h", "-x"],
        &["-V"],
        &["--version"],
        &["-x"],
        &["--bogus"],
        &["--help=1"],
        &[],
    ];
    for args in common {
        cmp("thin_check", check::run_with, args);
        cmp("thin_dump", dump::run_with, args);
        cmp("thin_restore", restore::run_with, args);
    }
    for args in [
        &[missing][..],
        &[d],
        &["-q", missing],
        &["-q"],
        &["--s", m],
        &["-m5", m],
        &["-m", m],
        &["-q", "-m", m],
        &["--override-mapping-root", "1x", m],
        &["--clear-needs-check-flag", "-m", m],
        &["--clear", "--super", m],
        &["--clear", "--override-mapping-root", "5", m],
    ] {
        cmp("thin_check", check::run_with, args);
    }
    for args in [
        &[missing][..],
        &[d],
        &["-m5", m],
        &["--metadata-snap=5", m],
        &["-m", m],
        &["-m0", m],
        &["-m", "5", m],
        &["-mx", m],
        &["--skip-m", m],
        &["--s", m],
        &["-f", "bad", m],
        &["-f", "bad"],
        &["--format=custom", missing],
        &["--dev-id", "x", m],
        &["-f"],
        &["--dev"],
        &["--re", "-f", "human_readable", m],
    ] {
        cmp("thin_dump", dump::run_with, args);
    }
    for args in [
        &["-i", x][..],
        &["-o", m],
        &["-i", missing, "-o", m],
        &["-i", x, "-o", missing],
        &["-i", missing, "-o", missing],
        &["-i", x, "-o", d],
        &["-i", d, "-o", m],
        &["-i", x, "-o", m, "--transaction-id", "1x"],
        &["-i", x, "-o", m, "--data-block-size", "x"],
        &["-i", x, "-o", m, "--nr-data-blocks", ""],
        &["-i", x, "-o", m, "extra"],
        &["--i"],
    ] {
        cmp("thin_restore", restore::run_with, args);
    }
    // Through the binary too (exit codes and the usage text).
    let ours_v = ours::run("thin_restore", &["-x".as_ref()]);
    let theirs_v = debian::run("thin_restore", &["-x".as_ref()]).expect("run");
    assert_eq!(ours_v.status, theirs_v.status);
    assert!(theirs_v
        .stderr
        .ends_with(&ours_v.stderr[ours_v.stderr.find('\n').unwrap()..]));
}

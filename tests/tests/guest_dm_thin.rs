//! The Linux kernel's dm-thin as a test peer: boots Debian's kernel under QEMU (TCG) and checks
//! metadata the kernel writes with Debian's thin_check/thin_dump, and metadata thin_restore
//! writes with the kernel. The image is built once into build/guest/ and reused.

use std::path::Path;
use std::time::Duration;

use e2e_tests::dm_tools;
use e2e_tests::guest_image::{self, GuestError};
use e2e_tests::kernel_fixtures::{self as kf, KernelFixture, FIXTURES};
use e2e_tests::qemu::Guest;
use e2e_tests::ScratchDir;

fn fixture(name: &str) -> &'static KernelFixture {
    FIXTURES
        .iter()
        .find(|f| f.name == name)
        .expect("fixture listed in kernel_fixtures::FIXTURES")
}

#[test]
fn guest_boots_runs_script_and_reports_its_exit_code() {
    let image = guest_image::ensure_default().expect("guest image builds");
    let run = Guest::new()
        .image(image.clone())
        .script("uname -r\necho to-stderr >&2\nprintf 'no newline'\nexit 3\n")
        .timeout(Duration::from_secs(90))
        .run()
        .expect("guest runs");
    assert_eq!(run.exit_code, 3, "{}", run.report());
    assert_eq!(
        run.stdout,
        format!("{}\nno newline", image.kernel_release),
        "{}",
        run.report()
    );
    assert!(run.stderr.contains("to-stderr"), "{}", run.report());
    eprintln!(
        "guest boot {:.1?}, whole run {:.1?}",
        run.boot_time, run.total_time
    );
}

#[test]
fn guest_is_killed_at_the_timeout() {
    let started = std::time::Instant::now();
    let err = Guest::new()
        .script("sleep 600")
        .timeout(Duration::from_secs(8))
        .run()
        .expect_err("a script that sleeps past the timeout is an error");
    assert!(
        matches!(err, GuestError::Timeout { .. }),
        "expected a timeout, got: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn missing_qemu_names_the_package_to_install() {
    let err = Guest::new()
        .qemu_binary("/nonexistent/qemu-system-x86_64")
        .script("true")
        .run()
        .expect_err("no QEMU, no run");
    let msg = err.to_string();
    assert!(msg.contains("apt-get install qemu-system-x86"), "{msg}");
}

#[test]
fn guest_tools_and_devices_are_present() {
    let dir = ScratchDir::new("guest-tools").expect("temp dir");
    let disk = dir.path().join("disk.bin");
    kf::zero_file(&disk, 1 << 20).expect("disk file");
    let run = Guest::new()
        .disk(&disk, "scratch")
        .network(true)
        .script(
            "set -e\n\
             dmsetup version\n\
             nvme version\n\
             test -b /dev/vda\n\
             readlink /dev/disk/by-serial/scratch\n\
             ip -4 addr show eth0 | grep -o 'inet [0-9./]*'\n\
             ip route | grep -c default || true\n\
             grep -c -E '^(dm_thin_pool|nvme_tcp|virtio_blk) ' /proc/modules\n",
        )
        .run()
        .expect("guest runs");
    run.assert_success();
    let out = &run.stdout;
    assert!(out.contains("Driver version:"), "{out}");
    assert!(out.contains("nvme version"), "{out}");
    assert!(out.contains("/dev/vda"), "{out}");
    assert!(out.contains("inet 10.0.2.15/24"), "{out}");
    // No default route: the guest can reach QEMU's 10.0.2.0/24 and nothing else.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[lines.len() - 2], "0", "{out}");
    assert_eq!(lines[lines.len() - 1], "3", "{out}");
}

/// Makes the fixture afresh with the kernel and checks it; the checked-in copy is checked by
/// `checked_in_kernel_fixtures_pass_thin_check`.
fn kernel_makes(name: &str) {
    let f = fixture(name);
    let dir = ScratchDir::new(name).expect("temp dir");
    let run = kf::make(f, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let report = kf::verify(f.name, &f.expected, &dir.path().join("meta.bin"))
        .unwrap_or_else(|e| panic!("{e}\nguest stdout:\n{}", run.stdout));
    eprintln!("{report} (guest {:.1?})", run.total_time);
}

#[test]
fn kernel_dm_thin_plain_thin() {
    kernel_makes("thin-plain");
}

#[test]
fn kernel_dm_thin_snapshot_chain_of_depth_3() {
    kernel_makes("snap-chain");
}

#[test]
fn kernel_dm_thin_held_metadata_snapshot() {
    kernel_makes("held-metadata-snap");
}

#[test]
fn kernel_dm_thin_mapping_tree_with_internal_nodes() {
    kernel_makes("internal-nodes");
}

/// Every data block a device maps holds 4096 copies of one 16-byte line (the fixture scripts
/// write whole blocks of `wr` patterns).
fn check_data_blocks(name: &str, meta: &Path, data: &[u8]) {
    let xml = e2e_tests::debian::thin_dump(meta).expect("thin_dump");
    let dump = dm_tools::summarize_dump(&xml).expect("thin_dump XML");
    let bs = kf::DATA_BLOCK_BYTES as usize;
    for (dev, d) in &dump.devices {
        for (virt, block) in &d.mappings {
            let at = *block as usize * bs;
            let bytes = &data[at..at + bs];
            let first = &bytes[..16];
            assert!(
                first.ends_with(b"\n") && bytes.chunks(16).all(|c| c == first),
                "{name}: dev {dev} block {virt} → data block {block} is not a whole pattern"
            );
        }
    }
}

#[test]
fn checked_in_kernel_fixtures_pass_thin_check() {
    let dir = ScratchDir::new("checked-in").expect("temp dir");
    for f in FIXTURES {
        let gz = kf::fixture_path(f.name);
        let bytes = kf::load_gz(&gz)
            .unwrap_or_else(|e| panic!("{e} (remake with `cargo xtask kernel-fixtures`)"));
        assert_eq!(bytes.len() as u64, kf::META_BYTES, "{}", gz.display());
        let meta = dir.path().join(format!("{}.meta", f.name));
        std::fs::write(&meta, &bytes).expect("write metadata");
        let report = kf::verify(f.name, &f.expected, &meta).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("checked in: {report}");
        let data_gz = kf::data_fixture_path(f.name);
        assert_eq!(data_gz.exists(), f.keep_data, "{}", data_gz.display());
        if f.keep_data {
            let data = kf::load_gz(&data_gz).expect("data fixture");
            assert_eq!(data.len() as u64, kf::DATA_BYTES);
            check_data_blocks(f.name, &meta, &data);
        }
    }
}

const RESTORE_XML: &str = r#"<superblock uuid="" time="1" transaction="3" flags="0" version="2" data_block_size="128" nr_data_blocks="1024">
  <device dev_id="0" mapped_blocks="4" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="2" time="0"/>
    <single_mapping origin_block="5" data_block="3" time="0"/>
    <single_mapping origin_block="200" data_block="700" time="1"/>
  </device>
  <device dev_id="7" mapped_blocks="2" transaction="0" creation_time="1" snap_time="1">
    <single_mapping origin_block="0" data_block="3" time="1"/>
    <single_mapping origin_block="1" data_block="12" time="1"/>
  </device>
</superblock>
"#;

/// Reads the thins back as the XML says, then writes: a new block in dev 7, and dev 0's
/// shared block 5 (breaking sharing with dev 7).
const RESTORE_SCRIPT: &str = r#"
pool_create
thin_activate t0 0 16
thin_activate t7 7 16
expect t0 0 data-block-0010
expect t0 1 data-block-0011
expect t0 2 zero
expect t0 5 data-block-0003
expect t0 200 data-block-0700
expect t7 0 data-block-0003
expect t7 1 data-block-0012
expect t7 2 zero
wr t7 2 1 written-by-t7
wr t0 5 1 written-by-t0
expect t7 0 data-block-0003
expect t0 5 written-by-t0
teardown t7 t0
"#;

#[test]
fn kernel_activates_metadata_from_thin_restore() {
    let dir = ScratchDir::new("restore").expect("temp dir");
    let xml = dir.path().join("in.xml");
    let meta = dir.path().join("meta.bin");
    let data = dir.path().join("data.bin");
    std::fs::write(&xml, RESTORE_XML).expect("write xml");
    kf::zero_file(&meta, kf::META_BYTES).expect("meta file");
    e2e_tests::debian::thin_restore(&xml, &meta).unwrap_or_else(|e| panic!("{e}"));
    e2e_tests::debian::thin_check_ok(&meta).unwrap_or_else(|e| panic!("restored metadata: {e}"));

    // Patterns at the data blocks the XML names, the same shape the guest's `wr` writes.
    let mut bytes = vec![0u8; kf::DATA_BYTES as usize];
    let bs = kf::DATA_BLOCK_BYTES as usize;
    for block in [3usize, 10, 11, 12, 700] {
        let line = format!("{:<15}\n", format!("data-block-{block:04}"));
        for chunk in bytes[block * bs..(block + 1) * bs].chunks_mut(16) {
            chunk.copy_from_slice(line.as_bytes());
        }
    }
    std::fs::write(&data, &bytes).expect("write data");

    let run = Guest::new()
        .disk(&meta, "meta")
        .disk(&data, "data")
        .script(format!("{}\n{RESTORE_SCRIPT}", kf::COMMON_SCRIPT))
        .run()
        .expect("guest runs");
    run.assert_success();

    // The kernel's changes on top of thin_restore's metadata check out too.
    e2e_tests::debian::thin_check_ok(&meta).unwrap_or_else(|e| panic!("after the kernel: {e}"));
    let dump = dm_tools::summarize_dump(&e2e_tests::debian::thin_dump(&meta).expect("dump"))
        .expect("dump XML");
    let mapped: Vec<(u64, usize)> = dump
        .devices
        .iter()
        .map(|(id, d)| (*id, d.mappings.len()))
        .collect();
    // dev 0 block 5 was already mapped (shared): rewriting it remaps, it does not add.
    assert_eq!(mapped, vec![(0, 4), (7, 3)], "{dump:?}");
    let t0 = &dump.devices[&0].mappings;
    let t7 = &dump.devices[&7].mappings;
    assert_eq!(t0[&0], 10);
    assert_eq!(t0[&200], 700);
    assert_eq!(t7[&0], 3, "dev 7 keeps the formerly shared block");
    assert_ne!(t0[&5], 3, "dev 0's write broke sharing");
    assert_eq!(dump.transaction, 3, "the kernel keeps the transaction id");
}

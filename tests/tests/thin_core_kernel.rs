//! thin-core against the Linux kernel's own dm-thin (the final word on the format):
//! - metadata the kernel wrote (checked-in fixtures made by `cargo xtask kernel-fixtures`)
//!   opens in thin-core, and every device and mapping matches Debian's `thin_dump` of it;
//! - a pool thin-core formatted and filled is activated by the kernel in a QEMU guest, the
//!   kernel reads exactly the data our mappings name, writes through it (provisioning and
//!   breaking sharing), and the result passes Debian's `thin_check`, our checker, and opens in
//!   thin-core with the kernel's new mappings pointing at the kernel's data.

use std::collections::BTreeMap;
use std::io::Read;

use e2e_tests::debian;
use e2e_tests::kernel_fixtures::{self as kf, FIXTURES};
use e2e_tests::qemu::Guest;
use e2e_tests::ScratchDir;
use thin_core::file::FileDevice;
use thin_core::thin::check::{check, CheckOptions, Severity};
use thin_core::thin::{FormatOptions, OpenOptions, Pool};
use thin_core::MemDevice;
use thin_tools::xml::read_xml_str;

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .expect("gunzip fixture");
    out
}

#[test]
fn kernel_made_metadata_opens_in_thin_core_and_matches_thin_dump() {
    assert!(!FIXTURES.is_empty());
    let dir = ScratchDir::new("kfix").expect("temp dir");
    for fx in FIXTURES {
        let image = gunzip(&kf::fixture_path(fx.name));
        let path = dir.path().join(fx.name);
        std::fs::write(&path, &image).expect("write image");
        let dump =
            read_xml_str(&debian::thin_dump(&path).expect("Debian thin_dump")).expect("dump XML");

        let mut dev = MemDevice::from_image(&image);
        let report = check(&mut dev, &CheckOptions::default());
        let fatal: Vec<_> = report
            .issues
            .iter()
            .filter(|i| i.severity == Severity::Fatal)
            .collect();
        assert!(fatal.is_empty(), "{}: our checker: {fatal:#?}", fx.name);

        let mut pool = Pool::open(
            dev,
            OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: open: {e}", fx.name));
        assert_eq!(pool.superblock().time, dump.superblock.time, "{}", fx.name);
        assert_eq!(
            pool.superblock().trans_id,
            dump.superblock.transaction,
            "{}",
            fx.name
        );
        let ids: Vec<u64> = dump
            .devices
            .iter()
            .map(|d| u64::from(d.device.dev_id))
            .collect();
        assert_eq!(pool.devices().expect("devices"), ids, "{}", fx.name);
        for d in &dump.devices {
            let id = u64::from(d.device.dev_id);
            let mut want = BTreeMap::new();
            for r in &d.mappings {
                for k in 0..r.len {
                    want.insert(r.thin_begin + k, (r.data_begin + k, r.time));
                }
            }
            let got: BTreeMap<u64, (u64, u32)> = pool
                .mappings(id, 0, u64::MAX)
                .expect("mappings")
                .into_iter()
                .map(|(v, bt)| (v, (bt.block, bt.time)))
                .collect();
            assert_eq!(got, want, "{}: device {id}", fx.name);
            let det = pool.device_details(id).expect("details");
            assert_eq!(
                det.mapped_blocks, d.device.mapped_blocks,
                "{}: device {id}",
                fx.name
            );
            assert_eq!(
                det.snapshotted_time, d.device.snap_time,
                "{}: device {id}",
                fx.name
            );
        }
        if pool.superblock().held_root != 0 {
            let dev = pool.into_device();
            let mut dev = dev;
            let snap = check(
                &mut dev,
                &CheckOptions {
                    metadata_snap: true,
                    ..CheckOptions::default()
                },
            );
            assert!(
                !snap.has_fatal(),
                "{}: metadata snap: {:#?}",
                fx.name,
                snap.issues
            );
            assert!(
                snap.nr_devices > 0,
                "{}: the held snapshot has devices",
                fx.name
            );
        }
    }
}

const BLOCK: usize = 65536;

/// A 64 KiB block of 16-byte lines "TAG...\n", the shape the guest's `wr`/`expect` use.
fn pattern(tag: &str) -> Vec<u8> {
    let line = format!("{:<15.15}\n", tag);
    line.as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(BLOCK)
        .collect()
}

#[test]
fn kernel_dm_thin_activates_a_pool_made_by_thin_core() {
    let dir = ScratchDir::new("ourpool").expect("temp dir");
    let meta = dir.path().join("meta.bin");
    let data = dir.path().join("data.bin");
    kf::zero_file(&data, kf::DATA_BYTES).expect("data file");
    let nr_data = kf::DATA_BYTES / kf::DATA_BLOCK_BYTES;
    let dev = FileDevice::create(&meta, kf::META_BYTES / 4096).expect("meta file");
    let mut pool = Pool::format(
        dev,
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: nr_data,
            cache_blocks: 256,
        },
    )
    .expect("format");
    let mut data_img = vec![0u8; kf::DATA_BYTES as usize];
    let mut write = |pool: &mut Pool<FileDevice>, id: u64, v: u64, tag: &str| {
        let plan = pool.prepare_write(id, v).expect("prepare");
        let b = plan.target() as usize;
        data_img[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(&pattern(tag));
        pool.complete_write(id, v, plan).expect("complete");
    };
    pool.create_thin(0).expect("create 0");
    for v in 0..300u64 {
        write(&mut pool, 0, v, &format!("d0-v{v}"));
    }
    pool.create_snap(1, 0).expect("snap 1");
    for v in (0..300u64).step_by(10) {
        write(&mut pool, 1, v, &format!("d1-v{v}"));
    }
    pool.create_snap(2, 1).expect("snap 2");
    write(&mut pool, 0, 5, "d0-new5");
    pool.discard(2, 100, 200).expect("discard");
    pool.close().expect("close");
    std::fs::write(&data, &data_img).expect("write data");

    let script = format!(
        "{common}\n\
         pool_create\n\
         thin_activate t0 0 64\n\
         thin_activate t1 1 64\n\
         thin_activate t2 2 64\n\
         expect t0 0 d0-v0\n\
         expect t0 5 d0-new5\n\
         expect t0 299 d0-v299\n\
         expect t1 5 d0-v5\n\
         expect t1 10 d1-v10\n\
         expect t1 11 d0-v11\n\
         expect t2 10 d1-v10\n\
         expect t2 150 zero\n\
         expect t2 250 d1-v250\n\
         expect t0 400 zero\n\
         wr t2 10 1 kernel-t2-10\n\
         wr t2 900 1 kernel-t2-900\n\
         wr t0 1 1 kernel-t0-1\n\
         expect t1 10 d1-v10\n\
         expect t2 10 kernel-t2-10\n\
         teardown t0 t1 t2\n",
        common = kf::COMMON_SCRIPT
    );
    let run = Guest::new()
        .disk(&meta, "meta")
        .disk(&data, "data")
        .script(script)
        .run()
        .expect("guest runs");
    run.assert_success();

    let out = debian::thin_check(&meta).expect("Debian thin_check");
    assert!(
        out.success(),
        "Debian thin_check after the kernel:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let mut dev = FileDevice::open(&meta).expect("open meta");
    let report = check(&mut dev, &CheckOptions::default());
    assert!(
        !report.has_fatal(),
        "our checker after the kernel: {:#?}",
        report.issues
    );
    let mut pool = Pool::open(dev, OpenOptions::default()).expect("open after the kernel");
    let data_img = std::fs::read(&data).expect("read data");
    let block_of = |pool: &mut Pool<FileDevice>, id, v| {
        pool.lookup(id, v)
            .expect("lookup")
            .expect("mapped")
            .data_block as usize
    };
    for (id, v, tag) in [
        (2u64, 10u64, "kernel-t2-10"),
        (2, 900, "kernel-t2-900"),
        (0, 1, "kernel-t0-1"),
        (1, 10, "d1-v10"),
    ] {
        let b = block_of(&mut pool, id, v);
        assert_eq!(
            &data_img[b * BLOCK..(b + 1) * BLOCK],
            &pattern(tag)[..],
            "device {id} block {v} (data block {b})"
        );
    }
    assert_eq!(
        pool.device_details(2).expect("details").mapped_blocks,
        300 - 100 + 1
    );
}

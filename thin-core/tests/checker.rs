//! The checker catches damage, including what Debian's 0.9 `thin_check` skips (data space map
//! counts, mapped_blocks, leaf depth): each case corrupts one structure of a good pool, fixes
//! up the checksum where the point is to get past it, and expects a specific report.

use thin_core::checksum::{prepare_for_write, BlockKind};
use thin_core::pdata::node;
use thin_core::pdata::sm;
use thin_core::thin::check::{check, CheckOptions, Severity};
use thin_core::thin::{FormatOptions, OpenOptions, Pool, PoolError};
use thin_core::{BlockDevice, MemDevice};

fn good_pool() -> (MemDevice, u64) {
    let mut pool = Pool::format(
        MemDevice::new(2048),
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: 20_000,
            cache_blocks: 64,
        },
    )
    .unwrap();
    pool.create_thin(1).unwrap();
    for v in 0..600 {
        let p = pool.prepare_write(1, v).unwrap();
        pool.complete_write(1, v, p).unwrap();
    }
    pool.create_snap(2, 1).unwrap();
    for v in 0..10 {
        let p = pool.prepare_write(2, v).unwrap();
        pool.complete_write(2, v, p).unwrap();
    }
    pool.commit().unwrap();
    let root = pool.superblock().data_mapping_root;
    let dev = pool.into_device();
    let mut d = dev.clone();
    let r = check(&mut d, &CheckOptions::default());
    assert!(r.is_clean(), "{:#?}", r.issues);
    (dev, root)
}

fn messages(dev: &mut MemDevice) -> Vec<String> {
    let r = check(dev, &CheckOptions::default());
    assert!(
        r.has_fatal() || !r.issues.is_empty(),
        "damage went unnoticed"
    );
    r.issues.iter().map(|i| i.message.clone()).collect()
}

fn read(dev: &mut MemDevice, b: u64) -> [u8; 4096] {
    let mut buf = [0u8; 4096];
    dev.read_block(b, &mut buf).unwrap();
    buf
}

fn sb(dev: &mut MemDevice) -> thin_core::thin::Superblock {
    thin_core::thin::Superblock::parse(&read(dev, 0), 0).unwrap()
}

/// The leaf of device 1 holding vblock 0.
fn first_leaf(dev: &mut MemDevice) -> u64 {
    let top = sb(dev).data_mapping_root;
    let t = read(dev, top);
    let mut b = node::value_u64(&t, node::find_exact(&t, 1).unwrap());
    loop {
        let n = read(dev, b);
        if node::is_leaf(&n) {
            return b;
        }
        b = node::value_u64(&n, 0);
    }
}

#[test]
fn flipped_byte_in_a_leaf_is_a_checksum_error_naming_the_block() {
    let (mut dev, _) = good_pool();
    let leaf = first_leaf(&mut dev);
    dev.block_mut(leaf).unwrap()[100] ^= 0x40;
    let m = messages(&mut dev);
    assert!(
        m.iter()
            .any(|s| s.contains("bad checksum") && s.contains(&format!("block {leaf}"))),
        "{m:?}"
    );
}

#[test]
fn keys_out_of_order_are_reported() {
    let (mut dev, _) = good_pool();
    let leaf = first_leaf(&mut dev);
    let b = dev.block_mut(leaf).unwrap();
    node::set_key(b, 3, 1);
    prepare_for_write(b, leaf, BlockKind::Node);
    let m = messages(&mut dev);
    assert!(
        m.iter().any(|s| s.contains("keys are out of order")),
        "{m:?}"
    );
}

#[test]
fn wrong_data_reference_count_is_caught() {
    // Debian 0.9 does not check data space map counts; we must.
    let (mut dev, _) = good_pool();
    let s = sb(&mut dev);
    let idx = read(&mut dev, s.data_sm_root.bitmap_root);
    let e = sm::IndexEntry::unpack(node::value(&idx, 0));
    let b = dev.block_mut(e.blocknr).unwrap();
    sm::bitmap_set(b, 5, 2); // block 5 is mapped once; claim two references
    prepare_for_write(b, e.blocknr, BlockKind::Bitmap);
    let m = messages(&mut dev);
    assert!(
        m.iter()
            .any(|s| s.contains("data reference counts differ for block 5, expected 1, but got 2")),
        "{m:?}"
    );
}

#[test]
fn leaked_data_block_is_non_fatal() {
    let (mut dev, _) = good_pool();
    let s = sb(&mut dev);
    let idx = read(&mut dev, s.data_sm_root.bitmap_root);
    let e = sm::IndexEntry::unpack(node::value(&idx, 0));
    let b = dev.block_mut(e.blocknr).unwrap();
    sm::bitmap_set(b, 19_000 % 16_320, 1);
    prepare_for_write(b, e.blocknr, BlockKind::Bitmap);
    let r = check(&mut dev, &CheckOptions::default());
    assert!(!r.has_fatal(), "{:#?}", r.issues);
    assert!(r
        .issues
        .iter()
        .any(|i| i.severity == Severity::NonFatal && i.message.contains("leaked")));
}

#[test]
fn wrong_mapped_blocks_is_caught() {
    // Debian 0.9 does not compare mapped_blocks with the tree; 1.x and we do.
    let (mut dev, _) = good_pool();
    let s = sb(&mut dev);
    let det = s.device_details_root;
    let b = dev.block_mut(det).unwrap();
    let i = node::find_exact(b, 1).unwrap();
    let mut v = node::value(b, i).to_vec();
    v[0] = v[0].wrapping_add(1);
    node::set_value(b, i, &v);
    prepare_for_write(b, det, BlockKind::Node);
    let m = messages(&mut dev);
    assert!(
        m.iter()
            .any(|s| s.contains("unexpected number of mappings")),
        "{m:?}"
    );
}

#[test]
fn corrupt_superblock_is_reported_and_refused() {
    let (mut dev, _) = good_pool();
    dev.block_mut(0).unwrap()[0x30] ^= 1;
    let m = messages(&mut dev);
    assert!(
        m.iter().any(|s| s.contains("superblock is corrupt")),
        "{m:?}"
    );
    match Pool::open(dev, OpenOptions::default()) {
        Err(PoolError::Superblock(_)) => {}
        other => panic!("expected a superblock error, got {other:?}"),
    }
}

#[test]
fn corrupt_metadata_index_is_reported() {
    let (mut dev, _) = good_pool();
    let s = sb(&mut dev);
    dev.block_mut(s.metadata_sm_root.bitmap_root).unwrap()[200] ^= 1;
    let m = messages(&mut dev);
    assert!(
        m.iter().any(|s| s.contains("metadata space map index")),
        "{m:?}"
    );
}

#[test]
fn out_of_data_space_is_a_clean_error_and_growing_recovers() {
    let mut pool = Pool::format(
        MemDevice::new(1024),
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: 100,
            cache_blocks: 32,
        },
    )
    .unwrap();
    pool.create_thin(0).unwrap();
    for v in 0..100 {
        let p = pool.prepare_write(0, v).unwrap();
        pool.complete_write(0, v, p).unwrap();
    }
    assert_eq!(pool.prepare_write(0, 100), Err(PoolError::NoDataSpace));
    assert_eq!(pool.lookup(0, 5).unwrap().map(|m| m.data_block), Some(5));
    pool.commit().unwrap();
    pool.grow_data(200).unwrap();
    let p = pool.prepare_write(0, 100).unwrap();
    pool.complete_write(0, 100, p).unwrap();
    pool.commit().unwrap();
    let mut dev = pool.into_device();
    assert!(check(&mut dev, &CheckOptions::default()).is_clean());
}

#[test]
fn out_of_metadata_space_is_a_clean_error_and_growing_recovers() {
    let mut dev = MemDevice::new(160);
    let mut pool = Pool::format(
        &mut dev,
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: 100_000,
            cache_blocks: 32,
        },
    )
    .unwrap();
    pool.create_thin(0).unwrap();
    let mut v = 0;
    let err = loop {
        match pool.prepare_write(0, v * 2) {
            Ok(p) => match pool.complete_write(0, v * 2, p) {
                Ok(()) => v += 1,
                Err(e) => break e,
            },
            Err(e) => break e,
        }
        if v % 500 == 0 {
            pool.commit().unwrap();
        }
    };
    assert_eq!(err, PoolError::NoMetadataSpace);
    // Reads still work; the committed state is intact.
    assert!(pool.lookup(0, 0).unwrap().is_some());
    pool.commit().unwrap();
    drop(pool);
    let written = v;
    dev.grow(4096);
    let mut pool = Pool::open(&mut dev, OpenOptions::default()).unwrap();
    pool.grow_metadata(4096).unwrap();
    for k in written..written + 2000 {
        let p = pool.prepare_write(0, k * 2).unwrap();
        pool.complete_write(0, k * 2, p).unwrap();
    }
    pool.commit().unwrap();
    assert_eq!(
        pool.device_details(0).unwrap().mapped_blocks,
        written + 2000
    );
    drop(pool);
    let r = check(&mut dev, &CheckOptions::default());
    assert!(r.is_clean(), "{:#?}", r.issues);
}

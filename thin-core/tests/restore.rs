//! Restore builds packed trees that read back exactly, pass the checker, and stay usable.

use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::reader::{Reader, Source};
use thin_core::thin::restore::{RestoreError, RestoreHeader, Restorer};
use thin_core::thin::{DeviceDetails, OpenOptions, Pool};
use thin_core::MemDevice;

fn header() -> RestoreHeader {
    RestoreHeader {
        time: 3,
        transaction_id: 9,
        data_block_size: 128,
        nr_data_blocks: 50_000,
        flags: 0,
    }
}

#[test]
fn restored_pool_reads_back_and_checks_clean() {
    let mut r = Restorer::new(MemDevice::new(4096), header(), 64).unwrap();
    let det = |c, s| DeviceDetails {
        mapped_blocks: 999,
        transaction_id: 4,
        creation_time: c,
        snapshotted_time: s,
    };
    // Device 1: 20,000 mappings (internal nodes); device 2 shares half its data blocks.
    r.begin_device(1, det(0, 2)).unwrap();
    for v in 0..20_000u64 {
        r.map(v, v, 0).unwrap();
    }
    r.end_device().unwrap();
    r.begin_device(2, det(2, 2)).unwrap();
    for v in 0..20_000u64 {
        let b = if v % 2 == 0 { v } else { 20_000 + v };
        r.map(v, b, if v % 2 == 0 { 0 } else { 2 }).unwrap();
    }
    r.end_device().unwrap();
    r.begin_device(3, det(3, 3)).unwrap();
    r.end_device().unwrap();
    let mut dev = r.finish().unwrap().close().unwrap();
    let rep = check(&mut dev, &CheckOptions::default());
    assert!(rep.is_clean(), "{:#?}", rep.issues);
    let mut rd = Reader::open(dev, 64, Source::Live).unwrap();
    let devs = rd.devices().unwrap();
    assert_eq!(
        devs.iter()
            .map(|(i, d)| (*i, d.mapped_blocks))
            .collect::<Vec<_>>(),
        vec![(1, 20_000), (2, 20_000), (3, 0)]
    );
    let mut n = 0u64;
    rd.walk_mappings(2, |v, bt| {
        assert_eq!(bt.block, if v % 2 == 0 { v } else { 20_000 + v });
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 20_000);
    // Shared blocks are seen as shared, and writing breaks sharing correctly.
    let mut pool = Pool::open(rd.into_device(), OpenOptions::default()).unwrap();
    assert!(pool.lookup(1, 4).unwrap().unwrap().shared);
    assert!(!pool.lookup(2, 5).unwrap().unwrap().shared);
    let p = pool.prepare_write(1, 4).unwrap();
    pool.complete_write(1, 4, p).unwrap();
    assert_ne!(pool.lookup(1, 4).unwrap().unwrap().data_block, 4);
    assert_eq!(pool.lookup(2, 4).unwrap().unwrap().data_block, 4);
    let mut dev = pool.close().unwrap();
    assert!(check(&mut dev, &CheckOptions::default()).is_clean());
}

#[test]
fn bad_input_is_refused() {
    let mut r = Restorer::new(MemDevice::new(1024), header(), 32).unwrap();
    assert!(matches!(r.map(0, 0, 0), Err(RestoreError::Sequence(_))));
    r.begin_device(1, DeviceDetails::default()).unwrap();
    r.map(5, 1, 0).unwrap();
    assert!(matches!(
        r.map(5, 2, 0),
        Err(RestoreError::NotAscending { .. })
    ));
    assert!(matches!(
        r.map(6, 50_000, 0),
        Err(RestoreError::DataBlockOutOfRange { .. })
    ));
    assert!(matches!(
        r.map(7, 3, 1 << 24),
        Err(RestoreError::BadTime(_))
    ));
    r.end_device().unwrap();
    assert!(matches!(
        r.begin_device(1, DeviceDetails::default()),
        Err(RestoreError::BadDevice(1))
    ));
    assert!(matches!(
        r.begin_device(1 << 24, DeviceDetails::default()),
        Err(RestoreError::BadDevice(_))
    ));
}

//! Out of space: the pool refuses what it cannot do, leaves no trace of the refused operation,
//! stays consistent (checker clean after commit or abort) and carries on once grown.
//!
//! Regression: the metadata reserve check used `nr_blocks - nr_allocated`, which counts blocks
//! freed in the running transaction as free although they cannot be reused before commit. A
//! long transaction of shadowing (each shadow frees the committed copy) then passed the check
//! and ran out half-way through an operation, failing the pool and losing the transaction.

use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::{FormatOptions, OpenOptions, Pool, PoolError};
use thin_core::{BlockDevice, BlockError, MemDevice};

/// A metadata device that shows only its first `nr_blocks` blocks (grown later).
#[derive(Clone)]
struct Window {
    inner: MemDevice,
    nr_blocks: u64,
}

impl BlockDevice for Window {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&mut self, block: u64, buf: &mut [u8; 4096]) -> Result<(), BlockError> {
        thin_core::block::check_range(block, self.nr_blocks)?;
        self.inner.read_block(block, buf)
    }
    fn write_block(&mut self, block: u64, buf: &[u8; 4096]) -> Result<(), BlockError> {
        thin_core::block::check_range(block, self.nr_blocks)?;
        self.inner.write_block(block, buf)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.inner.flush()
    }
}

fn assert_clean(dev: &Window) {
    let mut d = dev.inner.clone();
    let r = check(&mut d, &CheckOptions::default());
    assert!(r.is_clean(), "{:#?}", r.issues);
}

fn format(meta_blocks: u64, data_blocks: u64) -> Pool<Window> {
    let dev = Window {
        inner: MemDevice::new(4096),
        nr_blocks: meta_blocks,
    };
    Pool::format(
        dev,
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: data_blocks,
            cache_blocks: 16,
        },
    )
    .unwrap()
}

fn write(pool: &mut Pool<Window>, dev: u64, v: u64) -> Result<u64, PoolError> {
    let p = pool.prepare_write(dev, v)?;
    pool.complete_write(dev, v, p)?;
    Ok(p.target())
}

/// Fills device 1 with mappings (committing as it goes) until fewer than `left` metadata
/// blocks are free; returns the number of mappings.
fn fill_metadata(pool: &mut Pool<Window>, left: u64) -> u64 {
    pool.create_thin(1).unwrap();
    let mut v = 0;
    while pool.stats().unwrap().free_metadata_blocks >= left {
        write(pool, 1, v).unwrap();
        v += 1;
        if v % 2000 == 0 {
            pool.commit().unwrap();
        }
    }
    pool.commit().unwrap();
    v
}

#[test]
fn reserve_counts_blocks_freed_in_the_transaction() {
    let mut pool = format(256, 1 << 20);
    let n = fill_metadata(&mut pool, 80);
    let free_at_commit = pool.stats().unwrap().free_metadata_blocks;
    // One transaction of discards, each shadowing a committed leaf (freeing the old copy).
    let mut done = Vec::new();
    let refused = loop {
        let b = done.len() as u64 * 40;
        assert!(b < n, "the transaction never ran out of metadata");
        match pool.discard(1, b, b + 1) {
            Ok(1) => done.push(b),
            Ok(k) => panic!("discard removed {k} mappings"),
            Err(e) => break e,
        }
    };
    // Refused up front by the reserve, not half-way: the pool is usable and commits.
    assert_eq!(refused, PoolError::NoMetadataSpace);
    assert!(!done.is_empty());
    let st = pool.stats().unwrap();
    assert!(st.free_metadata_blocks < 64, "{st:?}");
    pool.commit().unwrap();
    // Freed blocks are usable again after the commit.
    assert!(pool.stats().unwrap().free_metadata_blocks >= free_at_commit - 2);
    for &b in &done {
        assert_eq!(pool.lookup_data(1, b).unwrap(), None);
        assert!(pool.lookup_data(1, b + 1).unwrap().is_some());
    }
    assert_eq!(
        pool.device_details(1).unwrap().mapped_blocks,
        n - done.len() as u64
    );
    let b = done.len() as u64 * 40;
    assert_eq!(pool.discard(1, b, b + 1).unwrap(), 1);
    pool.commit().unwrap();
    assert_clean(&pool.into_device());
}

#[test]
fn data_space_refusal_leaves_no_trace_and_grow_resumes() {
    let mut pool = format(1024, 40);
    pool.create_thin(1).unwrap();
    for v in 0..16 {
        write(&mut pool, 1, v).unwrap();
    }
    pool.create_snap(2, 1).unwrap();
    let mut v = 0;
    let mut written = 16;
    loop {
        // Overwrite shared blocks (break sharing) first, then provision new ones.
        let target = if v < 8 { v } else { v + 8 };
        match write(&mut pool, 1, target) {
            Ok(_) => written += 1,
            Err(e) => {
                assert_eq!(e, PoolError::NoDataSpace);
                break;
            }
        }
        v += 1;
    }
    assert_eq!(written, 40);
    let before = pool.stats().unwrap();
    let maps1 = pool.mappings(1, 0, u64::MAX).unwrap();
    let maps2 = pool.mappings(2, 0, u64::MAX).unwrap();
    assert_eq!(before.free_data_blocks, 0);
    // Provision, break sharing (through the snapshot): both refused; in place still works.
    assert_eq!(pool.prepare_write(1, 1000), Err(PoolError::NoDataSpace));
    assert_eq!(pool.prepare_write(2, 10), Err(PoolError::NoDataSpace));
    let p = pool.prepare_write(1, 0).unwrap();
    assert!(matches!(p, thin_core::thin::WritePlan::InPlace { .. }));
    pool.complete_write(1, 0, p).unwrap();
    assert_eq!(pool.stats().unwrap(), before);
    assert_eq!(pool.mappings(1, 0, u64::MAX).unwrap(), maps1);
    assert_eq!(pool.mappings(2, 0, u64::MAX).unwrap(), maps2);
    pool.commit().unwrap();
    let dev = pool.into_device();
    assert_clean(&dev);

    let mut pool = Pool::open(dev, OpenOptions::default()).unwrap();
    pool.grow_data(64).unwrap();
    pool.commit().unwrap();
    write(&mut pool, 1, 1000).unwrap();
    write(&mut pool, 2, 10).unwrap();
    assert_eq!(pool.stats().unwrap().free_data_blocks, 22);
    pool.commit().unwrap();
    assert_clean(&pool.into_device());
}

#[test]
fn metadata_exhaustion_mid_operation_aborts_to_the_commit_and_grow_resumes() {
    let mut pool = format(192, 1000);
    pool.create_thin(1).unwrap();
    for v in 0..100 {
        write(&mut pool, 1, v).unwrap();
    }
    pool.commit().unwrap();
    let committed = pool.mappings(1, 0, u64::MAX).unwrap();
    write(&mut pool, 1, 500).unwrap(); // uncommitted, lost by the abort
                                       // Growing the data device by 4M blocks needs 256 bitmap blocks: more than the reserve, so
                                       // it fails half-way and the pool refuses everything until abort.
    assert_eq!(pool.grow_data(4 << 20), Err(PoolError::NoMetadataSpace));
    assert_eq!(pool.commit(), Err(PoolError::Failed));
    assert_eq!(pool.create_thin(2), Err(PoolError::Failed));
    pool.abort().unwrap();
    assert_eq!(pool.mappings(1, 0, u64::MAX).unwrap(), committed);
    assert_eq!(pool.stats().unwrap().nr_data_blocks, 1000);
    pool.commit().unwrap();
    let mut dev = pool.into_device();
    assert_clean(&dev);

    // The device grows; so does the metadata space map, and the large growth fits.
    dev.nr_blocks = 1024;
    let mut pool = Pool::open(dev, OpenOptions::default()).unwrap();
    pool.grow_metadata(1024).unwrap();
    pool.commit().unwrap();
    assert_eq!(pool.stats().unwrap().nr_metadata_blocks, 1024);
    pool.grow_data(4 << 20).unwrap();
    write(&mut pool, 1, 500).unwrap();
    pool.commit().unwrap();
    assert_eq!(pool.mappings(1, 0, u64::MAX).unwrap().len(), 101);
    assert_clean(&pool.into_device());
}

/// A write admitted by `prepare_write` must be able to finish (or be given back) even if
/// preparing it took the pool below the reserve: otherwise its data block stays allocated
/// but unmapped, and the next commit makes the leak durable.
#[test]
fn an_admitted_write_completes_or_aborts_below_the_reserve() {
    for (meta_blocks, give_back) in [(96, false), (96, true), (100, false), (100, true)] {
        let mut pool = format(meta_blocks, 100_000);
        pool.create_thin(1).unwrap();
        let mut v = 0;
        loop {
            let p = match pool.prepare_write(1, v * 300) {
                Ok(p) => p,
                Err(e) => {
                    assert_eq!(e, PoolError::NoMetadataSpace);
                    break;
                }
            };
            pool.complete_write(1, v * 300, p).unwrap();
            pool.commit().unwrap();
            if give_back {
                match pool.prepare_write(1, v * 300 + 1) {
                    Ok(p) => pool.abort_write(p).unwrap(),
                    Err(e) => {
                        assert_eq!(e, PoolError::NoMetadataSpace);
                        break;
                    }
                }
                pool.commit().unwrap();
            }
            v += 1;
        }
        pool.commit().unwrap();
        let mapped = pool.device_details(1).unwrap().mapped_blocks;
        let st = pool.stats().unwrap();
        assert_eq!(st.nr_data_blocks - st.free_data_blocks, mapped);
        assert_clean(&pool.into_device());
    }
}

//! Damaged metadata never panics the engine: blocks of a good pool are mutated (and re-stamped
//! with a valid checksum, so the damage reaches the structure checks), then the checker, open,
//! lookups, a write and a commit run on the result. Errors are fine; panics are not.

use thin_core::checksum::{prepare_for_write, BlockKind};
use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::{FormatOptions, OpenOptions, Pool};
use thin_core::MemDevice;

fn good_image() -> Vec<u8> {
    let mut pool = Pool::format(
        MemDevice::new(512),
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: 40_000,
            cache_blocks: 32,
        },
    )
    .unwrap();
    pool.create_thin(1).unwrap();
    for v in 0..700 {
        let p = pool.prepare_write(1, v * 3).unwrap();
        pool.complete_write(1, v * 3, p).unwrap();
    }
    pool.create_snap(2, 1).unwrap();
    for v in 0..50 {
        let p = pool.prepare_write(2, v).unwrap();
        pool.complete_write(2, v, p).unwrap();
    }
    pool.reserve_metadata_snap().unwrap();
    pool.close().unwrap().to_image()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn exercise(image: &[u8]) {
    let mut dev = MemDevice::from_image(image);
    let _ = check(&mut dev, &CheckOptions::default());
    let _ = check(
        &mut dev,
        &CheckOptions {
            metadata_snap: true,
            ..CheckOptions::default()
        },
    );
    if let Ok(mut pool) = Pool::open(
        dev,
        OpenOptions {
            cache_blocks: 16,
            read_only: false,
        },
    ) {
        let _ = pool.devices();
        for id in [1, 2] {
            let _ = pool.mappings(id, 0, 5000);
            let _ = pool.lookup(id, 9);
            if let Ok(p) = pool.prepare_write(id, 9) {
                let _ = pool.complete_write(id, 9, p);
            }
            let _ = pool.discard(id, 0, 100);
        }
        let _ = pool.delete(2);
        let _ = pool.release_metadata_snap();
        let _ = pool.commit();
        let _ = pool.stats();
    }
}

#[test]
fn mutated_metadata_gives_errors_not_panics() {
    let good = good_image();
    let nr_blocks = good.len() / 4096;
    let used: Vec<usize> = (0..nr_blocks)
        .filter(|&b| good[b * 4096..(b + 1) * 4096].iter().any(|&x| x != 0))
        .collect();
    let mut rng = Rng(0xDEAD_BEEF_1234_5678);
    for round in 0..1500 {
        let mut img = good.clone();
        for _ in 0..1 + rng.next() % 3 {
            let b = used[(rng.next() % used.len() as u64) as usize];
            let blk: &mut [u8; 4096] = (&mut img[b * 4096..(b + 1) * 4096]).try_into().unwrap();
            let kind = BlockKind::identify(blk);
            // Favour the header and the first keys/values, where structure lives.
            let off = if rng.next().is_multiple_of(2) {
                4 + rng.next() % 60
            } else {
                4 + rng.next() % 4092
            } as usize;
            match rng.next() % 3 {
                0 => blk[off] ^= 1 << (rng.next() % 8),
                1 => blk[off] = rng.next() as u8,
                _ => blk[off] = 0xff,
            }
            if let Some(k) = kind {
                if b != 0 || rng.next().is_multiple_of(2) {
                    prepare_for_write(blk, b as u64, k);
                }
            }
        }
        if std::env::var("HOSTILE_TRACE").is_ok() {
            eprintln!("round {round}");
        }
        let r = std::panic::catch_unwind(|| exercise(&img));
        assert!(r.is_ok(), "panic in round {round}");
    }
}

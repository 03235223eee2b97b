//! Arbitrary metadata images: the checker, open, lookups, a write, a discard and a commit
//! must return errors, never panic or hang. Invariant: no panic; memory bounded by the image.
//! Checksums pass under `cfg(fuzzing)`, so the structure checks behind them are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::{OpenOptions, Pool};
use thin_core::MemDevice;

fuzz_target!(|data: &[u8]| {
    // At least a few blocks; inputs are spread over block headers and bodies.
    let blocks = (data.len() / 4096).clamp(4, 64);
    let mut img = vec![0u8; blocks * 4096];
    img[..data.len().min(blocks * 4096)].copy_from_slice(&data[..data.len().min(blocks * 4096)]);
    let mut dev = MemDevice::from_image(&img);
    let _ = check(&mut dev, &CheckOptions::default());
    if let Ok(mut pool) = Pool::open(dev, OpenOptions { cache_blocks: 16, read_only: false }) {
        if let Ok(ids) = pool.devices() {
            for id in ids.into_iter().take(4) {
                let _ = pool.mappings(id, 0, 1000);
                if let Ok(p) = pool.prepare_write(id, 3) {
                    let _ = pool.complete_write(id, 3, p);
                }
                let _ = pool.discard(id, 0, 50);
            }
        }
        let _ = pool.commit();
    }
});

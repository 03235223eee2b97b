//! Bdev-level benchmark, run by hand (not in CI): the cost of the thin layer without the
//! network. One thread, random 4 KiB reads and writes straight on the `Bdev` trait:
//!
//! ```text
//! cargo run --release -p nvmf-target --example bdev_bench -- [--ops N] [--gib N]
//! ```
//!
//! Cases: a malloc bdev; a thin volume (fully provisioned) in a pool on two malloc bdevs
//! (same backing: the difference is the thin layer); a thin volume in a pool on files.
//! Prints ns per operation and the ratio to malloc.
//!
//! Then the file bdev's engines in the same run: the data file alone and the thin volume on
//! files, reopened with positional I/O, io_uring and `Auto`, for random 4 KiB reads
//! and writes and random 128 KiB reads (4 KiB-aligned: each spans two or three 64 KiB data
//! blocks, which the thin volume hands to the data device in one `read_segments` call).
//! Buffered, the files are in the page cache (written just before): that measures the cost
//! of the engines, not of a disk. The `O_DIRECT` cases read the disk under /tmp. Prints ns
//! per operation for positional I/O, io_uring for everything, and `Auto` (io_uring for
//! `read_segments` batches with `O_DIRECT` only), and the ratios to positional I/O.

use std::time::Instant;

use nvmf_target::bdev::file::{FileBdev, IoEngine};
use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::bdev::thin::{PoolDevices, Region, ThinPool, DEFAULT_CACHE_BLOCKS};
use nvmf_target::bdev::Bdev;

type Error = Box<dyn std::error::Error>;

/// Rounds per engine comparison.
const ROUNDS: u64 = 3;

/// xorshift64*: a deterministic random LBA sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn fill(b: &mut dyn Bdev) -> Result<(), Error> {
    let chunk = vec![0x5au8; 1 << 20];
    let per = (chunk.len() / b.block_size() as usize) as u64;
    let mut lba = 0;
    while lba + per <= b.num_blocks() {
        b.write(lba, &chunk, false)?;
        lba += per;
    }
    b.flush()?;
    Ok(())
}

fn measure(b: &mut dyn Bdev, ops: u64, write: bool) -> Result<f64, Error> {
    measure_bytes(b, ops, write, 4096)
}

/// Random `bytes`-long I/Os at 4 KiB-aligned places; ns per operation.
fn measure_bytes(b: &mut dyn Bdev, ops: u64, write: bool, bytes: usize) -> Result<f64, Error> {
    let mut buf = vec![0u8; bytes];
    let per_4k = 4096 / u64::from(b.block_size());
    let len = (bytes as u64).div_ceil(u64::from(b.block_size()));
    let slots = (b.num_blocks() - len) / per_4k;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for _ in 0..ops {
        let lba = (rng.next() % slots) * per_4k;
        if write {
            b.write(lba, &buf, false)?;
        } else {
            b.read(lba, &mut buf)?;
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / ops as f64)
}

fn main() -> Result<(), Error> {
    let mut ops = 2_000_000u64;
    let mut gib = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ops" => ops = args.next().ok_or("--ops N")?.parse()?,
            "--gib" => gib = args.next().ok_or("--gib N")?.parse()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let bytes = gib << 30;
    let mut malloc = Malloc::new("m", bytes / 4096, 4096, [1; 16])?;
    fill(&mut malloc)?;
    let ram = ThinPool::create_on(
        PoolDevices {
            meta: Box::new(Malloc::new("meta", (64 << 20) / 4096, 4096, [2; 16])?),
            meta_region: Region::WHOLE,
            data: Some(Box::new(Malloc::new("data", bytes / 4096, 4096, [3; 16])?)),
            data_region: Region::WHOLE,
        },
        128,
        DEFAULT_CACHE_BLOCKS,
    )?;
    ram.with_pool(|p| p.create_thin(1))?;
    let mut thin_ram = ram.volume("thin_ram", 1, bytes, 4096, [4; 16])?;
    fill(&mut thin_ram)?;
    let dir = std::env::temp_dir().join(format!("bdev-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (m, d) = (dir.join("meta"), dir.join("data"));
    std::fs::File::create(&m)?.set_len(64 << 20)?;
    std::fs::File::create(&d)?.set_len(bytes)?;
    let file = ThinPool::create(&m, &d, 128, DEFAULT_CACHE_BLOCKS)?;
    file.with_pool(|p| p.create_thin(1))?;
    let mut thin_file = file.volume("thin_file", 1, bytes, 4096, [5; 16])?;
    fill(&mut thin_file)?;

    println!("bdev_bench: {ops} random 4 KiB ops per case on {gib} GiB, one thread");
    println!("{:<36} {:>10} {:>10}", "case", "ns/op", "vs malloc");
    for write in [false, true] {
        let kind = if write { "write" } else { "read" };
        let base = measure(&mut malloc, ops, write)?;
        println!(
            "{:<36} {:>10.0} {:>9.2}x",
            format!("malloc 4K rand{kind}"),
            base,
            1.0
        );
        for (name, b) in [
            ("thin on RAM", &mut thin_ram as &mut dyn Bdev),
            ("thin on files", &mut thin_file as &mut dyn Bdev),
        ] {
            let ns = measure(b, ops, write)?;
            println!(
                "{:<36} {:>10.0} {:>9.2}x",
                format!("{name} 4K rand{kind}"),
                ns,
                ns / base
            );
        }
    }
    drop((thin_file, file));

    // The engines, same files, same run.
    let engines = [IoEngine::Positional, IoEngine::Uring, IoEngine::Auto];
    let (n4, n128, nd) = (ops, (ops / 4).max(1), (ops / 20).max(1));
    // (name, write, bytes per op, ops, O_DIRECT)
    let cases: [(&str, bool, usize, u64, bool); 5] = [
        ("4K randread", false, 4096, n4, false),
        ("4K randwrite", true, 4096, n4, false),
        ("128K randread", false, 128 << 10, n128, false),
        ("4K randread O_DIRECT", false, 4096, nd, true),
        ("128K randread O_DIRECT", false, 128 << 10, nd, true),
    ];
    let mut rows: Vec<(String, [f64; 3])> = Vec::new();
    for (kind, write, io_bytes, n, direct) in cases {
        let mut raw = [f64::MAX; 3];
        let mut thin = [f64::MAX; 3];
        // Rounds in rotated engine order; the best round counts (the machine is shared,
        // and whoever runs later inherits the page cache and writeback of the others).
        let n = (n / ROUNDS).max(1);
        for (round, k) in (0..ROUNDS).flat_map(|r| (0..3).map(move |k| (r, k))) {
            let i = (k + round as usize) % 3;
            let engine = engines[i];
            let open = |p: &std::path::Path, bs| {
                FileBdev::open_with_engine("f", p, bs, [0; 16], direct, engine)
            };
            let mut f = open(&d, 4096)?;
            if engine != IoEngine::Auto && f.engine() != engine {
                return Err(format!("{engine:?} is not available here").into());
            }
            measure_bytes(&mut f, n / 10 + 1, write, io_bytes)?; // warm-up
            raw[i] = raw[i].min(measure_bytes(&mut f, n, write, io_bytes)?);
            f.flush()?;
            drop(f);
            let devs = PoolDevices {
                meta: Box::new(open(&m, 4096)?),
                meta_region: Region::WHOLE,
                data: Some(Box::new(open(&d, 512)?)),
                data_region: Region::WHOLE,
            };
            let pool = ThinPool::open_on(devs, DEFAULT_CACHE_BLOCKS)?;
            let mut v = pool.volume("thin_file", 1, bytes, 4096, [5; 16])?;
            measure_bytes(&mut v, n / 10 + 1, write, io_bytes)?; // warm-up
            thin[i] = thin[i].min(measure_bytes(&mut v, n, write, io_bytes)?);
            v.flush()?;
        }
        rows.push((format!("file {kind}"), raw));
        rows.push((format!("thin on files {kind}"), thin));
    }
    println!();
    println!(
        "engines, same files, this run ({n4} ops at 4K, {n128} at 128K, {nd} with O_DIRECT, \
         in {ROUNDS} rounds of rotated order, best round); auto = io_uring for read_segments \
         batches with O_DIRECT only"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "case (ns/op)", "positional", "io_uring", "auto", "uring/pos", "auto/pos"
    );
    for (name, [pos, uring, auto]) in rows {
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>10.0} {:>9.2}x {:>9.2}x",
            name,
            pos,
            uring,
            auto,
            uring / pos,
            auto / pos
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

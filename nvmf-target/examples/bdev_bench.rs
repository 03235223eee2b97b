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

use std::time::Instant;

use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::bdev::thin::{PoolDevices, Region, ThinPool, DEFAULT_CACHE_BLOCKS};
use nvmf_target::bdev::Bdev;

type Error = Box<dyn std::error::Error>;

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
    let mut buf = vec![0u8; 4096];
    let blocks = b.num_blocks() / 8;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for _ in 0..ops {
        let lba = (rng.next() % blocks) * 8;
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
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

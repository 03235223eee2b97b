//! thin-core benchmarks; prints a table. Run: `cargo run --release -p thin-core --features std --example bench [--quick]`
//!
//! - lookup cost vs snapshot depth (1M mappings, chains 1/10/100/1000 deep, each snapshot a
//!   snapshot of the previous with a few blocks of its own);
//! - snapshot creation time for origins of 1k and 1M mappings;
//! - provisioning rate with a commit every 1000 writes, and commit latency;
//! - peak heap with the metadata cache capped at 4 MiB (metadata on a file, so the device
//!   itself is not on the heap).
//!
//! Timings are medians over repeated batches; the machine is shared, so compare ratios
//! within one run rather than absolute numbers across runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use thin_core::file::FileDevice;
use thin_core::thin::{FormatOptions, Pool};

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let c = CUR.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(c, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn new_pool(
    dir: &std::path::Path,
    name: &str,
    meta_blocks: u64,
    data_blocks: u64,
) -> Pool<FileDevice> {
    let dev = FileDevice::create(&dir.join(name), meta_blocks).expect("metadata file");
    Pool::format(
        dev,
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: data_blocks,
            cache_blocks: 1024,
        },
    )
    .expect("format")
}

fn fill(
    pool: &mut Pool<FileDevice>,
    id: u64,
    n: u64,
    commit_every: u64,
    commits: &mut Vec<Duration>,
) -> Duration {
    let t = Instant::now();
    for v in 0..n {
        let plan = pool.prepare_write(id, v).expect("prepare");
        pool.complete_write(id, v, plan).expect("complete");
        if (v + 1).is_multiple_of(commit_every) {
            let c = Instant::now();
            pool.commit().expect("commit");
            commits.push(c.elapsed());
        }
    }
    pool.commit().expect("commit");
    t.elapsed()
}

fn lookup_median_ns(pool: &mut Pool<FileDevice>, id: u64, n: u64, rng: &mut Rng) -> f64 {
    let mut batches = Vec::new();
    for _ in 0..31 {
        let t = Instant::now();
        for _ in 0..1000 {
            let v = rng.next() % n;
            std::hint::black_box(pool.lookup(id, v).expect("lookup"));
        }
        batches.push(t.elapsed());
    }
    median(batches).as_nanos() as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let big: u64 = if quick { 100_000 } else { 1_000_000 };
    let dir = tempfile_dir();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    println!(
        "thin-core bench ({} mappings{})",
        big,
        if quick { ", --quick" } else { "" }
    );
    println!();

    // Provisioning and commit latency.
    let mut pool = new_pool(&dir, "prov", 400_000, big + 300_000);
    pool.create_thin(0).expect("create");
    let mut commits = Vec::new();
    let base_heap = CUR.load(Ordering::Relaxed);
    PEAK.store(base_heap, Ordering::Relaxed);
    let took = fill(&mut pool, 0, big, 1000, &mut commits);
    let peak = PEAK.load(Ordering::Relaxed);
    println!(
        "| provisioning (commit every 1000) | {:>10.0} mappings/s |",
        big as f64 / took.as_secs_f64()
    );
    println!(
        "| commit latency median / p99      | {:>8.2} ms / {:.2} ms |",
        median(commits.clone()).as_secs_f64() * 1e3,
        pct(commits, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| peak heap, 4 MiB cache, {:>7} map | {:>8.1} MiB |",
        big,
        peak as f64 / (1 << 20) as f64
    );

    // Snapshot creation: origins of 1k and `big` mappings.
    let mut small = new_pool(&dir, "snap", 16_384, 4096);
    small.create_thin(0).expect("create");
    fill(&mut small, 0, 1000, u64::MAX, &mut Vec::new());
    for (label, p, n) in [("1k", &mut small, 1000u64), ("big", &mut pool, big)] {
        let mut times = Vec::new();
        for i in 0..20u64 {
            let t = Instant::now();
            p.create_snap(1000 + i, 0).expect("snap");
            times.push(t.elapsed());
        }
        p.commit().expect("commit");
        println!(
            "| create_snap, origin {label:>3} ({n:>7} maps) | {:>8.1} us median |",
            median(times).as_secs_f64() * 1e6
        );
    }

    // Lookup vs depth: a chain of snapshots, each of the previous, each with a few own writes.
    let mut prev = 0u64;
    let mut depth = 0u64;
    let mut rows = Vec::new();
    let base = lookup_median_ns(&mut pool, 0, big, &mut rng);
    rows.push((0u64, base));
    for target in [1u64, 10, 100, 1000] {
        while depth < target {
            let id = 2000 + depth;
            pool.create_snap(id, prev).expect("snap");
            for _ in 0..4 {
                let v = rng.next() % big;
                let plan = pool.prepare_write(id, v).expect("prepare");
                pool.complete_write(id, v, plan).expect("complete");
            }
            prev = id;
            depth += 1;
            if depth.is_multiple_of(50) {
                pool.commit().expect("commit");
            }
        }
        pool.commit().expect("commit");
        rows.push((depth, lookup_median_ns(&mut pool, prev, big, &mut rng)));
    }
    println!();
    println!("| snapshot depth | median lookup | vs depth 1 |");
    let d1 = rows[1].1;
    for (d, ns) in rows {
        println!("| {d:>14} | {ns:>10.0} ns | {:>9.2}x |", ns / d1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("thin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

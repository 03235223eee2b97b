//! Target benchmark, run by hand (not in CI):
//!
//! ```text
//! cargo run --release -j1 -p nvmf-target --example target_bench -- [--time SECS] [--qd N] [--busy] [--dir PATH] [--only SUBSTRING]
//! ```
//!
//! In one run: starts the target in-process (one busy-polling reactor) with four
//! namespaces of one subsystem — 1: a malloc bdev, 2: a thin volume provisioned by writing
//! it once in full, 3: a fresh (unprovisioned) thin volume, both thin volumes in one pool on
//! temporary files (`--dir`, default the system temp dir, removed afterwards), 4: the same
//! thin volume on a pool in RAM (two malloc bdevs), provisioned — and drives it
//! with the `nvmf-perf` engine (the malloc bdev is written once in full first as well, so
//! that its lazily allocated memory is not faulted in during the measurement) on another thread over 127.0.0.1:
//! 4 KiB randread / randwrite at queue depth 32 on malloc and on the provisioned thin volume,
//! 4 KiB randwrite on the unprovisioned thin volume (first-write provisioning), 128 KiB
//! sequential reads on both; and the machine's loopback limit in the same run: the echo
//! baseline moving the same bytes per I/O at the same queue depth (4 KiB read, 4 KiB write,
//! 128 KiB read). Prints a table with the ratios thin vs malloc and NVMe/TCP vs loopback.
//!
//! `--busy` makes the initiator busy-poll too (two spinning threads on a 2-core machine);
//! by default it blocks in `read`. `--only` runs just the cases whose name contains the
//! substring (e.g. `--only randwrite`; the pre-write of the provisioned volume always runs).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::bdev::thin::{PoolDevices, Region, ThinPool, DEFAULT_CACHE_BLOCKS};
use nvmf_target::initiator::echo::{self, EchoConfig};
use nvmf_target::initiator::perf::{self, PerfConfig, PerfResult, Workload};
use nvmf_target::initiator::{HostConfig, DEFAULT_HOSTNQN};
use nvmf_target::wire::pdu::Digests;
use nvmf_target::{PollMode, SubsystemConfig, Target, TargetConfig};

const NQN: &str = "nqn.2016-06.io.spdk:bench";
const MALLOC_BYTES: u64 = 1 << 30;
const THIN_BYTES: u64 = 1 << 30;
const FRESH_BYTES: u64 = 64 << 30;
const META_BYTES: u64 = 256 << 20;
const RAM_META_BYTES: u64 = 32 << 20;

type Error = Box<dyn std::error::Error>;

struct Opts {
    time: Duration,
    qd: u32,
    busy: bool,
    dir: PathBuf,
    only: Option<String>,
    rounds: u32,
    cpumask: u64,
    adaptive: bool,
    connections: u16,
}

fn opts() -> Result<Opts, Error> {
    let mut o = Opts {
        time: Duration::from_secs(5),
        qd: 32,
        busy: false,
        dir: std::env::temp_dir(),
        only: None,
        rounds: 3,
        cpumask: 0x1,
        adaptive: false,
        connections: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--time" | "-t" => o.time = Duration::from_secs_f64(val()?.parse()?),
            "--qd" | "-q" => o.qd = val()?.parse()?,
            "--busy" => o.busy = true,
            "--dir" => o.dir = PathBuf::from(val()?),
            "--only" => o.only = Some(val()?),
            "--rounds" => o.rounds = val()?.parse::<u32>()?.max(1),
            "-m" | "--cpumask" => {
                let v = val()?;
                o.cpumask = u64::from_str_radix(v.trim_start_matches("0x"), 16)?;
            }
            "--adaptive" => o.adaptive = true,
            "--connections" | "-c" => o.connections = val()?.parse::<u16>()?.max(1),
            "-h" | "--help" => {
                println!(
                    "target_bench [--time SECS] [--qd N] [--busy] [--dir PATH] [--only SUBSTRING] [--rounds N] [-m MASK] [--adaptive] [--connections N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn sized_file(p: &Path, bytes: u64) -> Result<(), Error> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)?;
    f.set_len(bytes)?;
    Ok(())
}

struct Row {
    name: String,
    r: PerfResult,
}

fn print_row(name: &str, r: &PerfResult) {
    println!(
        "{name:<40} {:>10.0} {:>9.1} {:>9.1} {:>9.1}",
        r.iops(),
        r.mib_per_s(),
        r.mean_us(),
        r.p99_us()
    );
}

fn main() -> Result<(), Error> {
    let o = opts()?;
    let dir = o.dir.join(format!("nvmf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let res = run(&o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn run(o: &Opts, dir: &Path) -> Result<(), Error> {
    println!(
        "target_bench: {} {} reactor(s) (mask {:#x}), initiator {} with {} connection(s), qd {} each, {:.1} s per case, 127.0.0.1",
        o.cpumask.count_ones(),
        if o.adaptive { "adaptive" } else { "busy" },
        o.cpumask,
        if o.busy { "busy-polling" } else { "blocking" },
        o.connections,
        o.qd,
        o.time.as_secs_f64()
    );
    let echo_for = |read: bool, io: u32| -> Result<PerfResult, Error> {
        let (req, resp) = perf::wire_bytes(read, io, 8192);
        Ok(echo::run(&EchoConfig {
            queue_depth: o.qd,
            req_bytes: req,
            resp_bytes: resp,
            data_bytes: io,
            read,
            duration: o.time,
            busy_poll: o.busy,
        })?)
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut add =
        |name: &str, f: &mut dyn FnMut() -> Result<PerfResult, Error>| -> Result<(), Error> {
            if o.only.as_ref().is_some_and(|w| !name.contains(w.as_str())) {
                return Ok(());
            }
            let r = f()?;
            print_row(name, &r);
            rows.push(Row {
                name: name.into(),
                r,
            });
            Ok(())
        };
    let mut notes = Vec::new();

    println!();
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>9}",
        "case", "IOPS", "MiB/s", "mean us", "p99 us"
    );
    // The loopback limit, before the target (and its busy reactor) exists.
    add("loopback echo, 4K read bytes", &mut || echo_for(true, 4096))?;
    add("loopback echo, 4K write bytes", &mut || {
        echo_for(false, 4096)
    })?;
    add("loopback echo, 128K read bytes", &mut || {
        echo_for(true, 131072)
    })?;

    let (meta, data) = (dir.join("meta"), dir.join("data"));
    sized_file(&meta, META_BYTES)?;
    sized_file(&data, THIN_BYTES + FRESH_BYTES)?;
    let pool = ThinPool::create(&meta, &data, 128, DEFAULT_CACHE_BLOCKS)?;
    pool.with_pool(|p| p.create_thin(1))?;
    pool.with_pool(|p| p.create_thin(2))?;
    let thin = pool.volume("thin_prov", 1, THIN_BYTES, 4096, [2; 16])?;
    let fresh = pool.volume("thin_fresh", 2, FRESH_BYTES, 4096, [3; 16])?;

    // Reactors pinned to the cores of the mask, as `nvmf_tgt -m MASK` runs (default 0x1).
    let mut t = Target::new(TargetConfig {
        cpumask: o.cpumask,
        poll_mode: if o.adaptive {
            PollMode::Adaptive
        } else {
            PollMode::Busy
        },
        pin_reactors: true,
        ..TargetConfig::default()
    });
    t.add_subsystem(SubsystemConfig::new(NQN))?;
    t.add_namespace(
        NQN,
        1,
        Box::new(Malloc::new("malloc0", MALLOC_BYTES / 4096, 4096, [1; 16])?),
    )?;
    t.add_namespace(NQN, 2, Box::new(thin))?;
    t.add_namespace(NQN, 3, Box::new(fresh))?;
    // The same thin volume on a pool in RAM (two malloc bdevs): thin against malloc with
    // the same backing, so the ratio shows what the thin layer itself costs.
    let ram_pool = ThinPool::create_on(
        PoolDevices {
            meta: Box::new(Malloc::new(
                "ram-meta",
                RAM_META_BYTES / 4096,
                4096,
                [4; 16],
            )?),
            meta_region: Region::WHOLE,
            data: Some(Box::new(Malloc::new(
                "ram-data",
                THIN_BYTES / 4096,
                4096,
                [5; 16],
            )?)),
            data_region: Region::WHOLE,
        },
        128,
        DEFAULT_CACHE_BLOCKS,
    )?;
    ram_pool.with_pool(|p| p.create_thin(1))?;
    let thin_ram = ram_pool.volume("thin_ram", 1, THIN_BYTES, 4096, [6; 16])?;
    t.add_namespace(NQN, 4, Box::new(thin_ram))?;
    let addr = t.listen("127.0.0.1:0")?;
    let target = t.spawn()?;
    let host = HostConfig {
        addr,
        subnqn: NQN.into(),
        hostnqn: DEFAULT_HOSTNQN.into(),
        digests: Digests::NONE,
    };
    let base = |nsid: u32, w: Workload, io_size: u32| {
        let mut c = PerfConfig::new(host.clone());
        c.nsid = nsid;
        c.workload = w;
        c.io_size = io_size;
        c.queue_depth = o.qd;
        c.duration = o.time;
        c.busy_poll = o.busy;
        c.connections = o.connections;
        c
    };

    // Provision namespace 2 fully: one sequential pass of 128 KiB writes (through R2T).
    let mut pre = base(2, Workload::Write, 131072);
    pre.io_limit = Some(THIN_BYTES / 131072);
    pre.connections = 1;
    let r = perf::run(&pre)?;
    let st = pool.stats()?;
    notes.push(format!(
        "pre-wrote thin_prov: {} MiB in {:.2} s ({:.0} MiB/s); pool: {} of {} data blocks used",
        r.bytes >> 20,
        r.elapsed.as_secs_f64(),
        r.mib_per_s(),
        st.nr_data_blocks - st.free_data_blocks,
        st.nr_data_blocks
    ));
    pool.commit()?;
    let mut pre = base(4, Workload::Write, 131072);
    pre.io_limit = Some(THIN_BYTES / 131072);
    pre.connections = 1;
    let r = perf::run(&pre)?;
    notes.push(format!(
        "pre-wrote thin_ram: {} MiB in {:.2} s ({:.0} MiB/s)",
        r.bytes >> 20,
        r.elapsed.as_secs_f64(),
        r.mib_per_s()
    ));
    ram_pool.commit()?;
    // Touch the malloc bdev's memory once too (it is allocated lazily: first writes would
    // otherwise measure page faults), as SPDK's malloc bdev sits in pinned memory.
    let mut pre = base(1, Workload::Write, 131072);
    pre.io_limit = Some(MALLOC_BYTES / 131072);
    pre.connections = 1;
    let r = perf::run(&pre)?;
    notes.push(format!(
        "pre-wrote malloc0: {} MiB in {:.2} s ({:.0} MiB/s)",
        r.bytes >> 20,
        r.elapsed.as_secs_f64(),
        r.mib_per_s()
    ));

    // The target cases run `rounds` times, interleaved (malloc, thin, ... then again), and
    // the table keeps each case's best round: on a shared machine the noise is load from
    // elsewhere, which only ever makes a round slower.
    let cases: [(&str, u32, Workload, u32); 10] = [
        ("malloc 4K randread", 1, Workload::RandRead, 4096),
        (
            "thin (provisioned) 4K randread",
            2,
            Workload::RandRead,
            4096,
        ),
        (
            "thin on RAM (provisioned) 4K randread",
            4,
            Workload::RandRead,
            4096,
        ),
        ("malloc 4K randwrite", 1, Workload::RandWrite, 4096),
        (
            "thin (provisioned) 4K randwrite",
            2,
            Workload::RandWrite,
            4096,
        ),
        (
            "thin on RAM (provisioned) 4K randwrite",
            4,
            Workload::RandWrite,
            4096,
        ),
        (
            "thin (unprovisioned) 4K randwrite",
            3,
            Workload::RandWrite,
            4096,
        ),
        ("malloc 128K seq read", 1, Workload::Read, 131072),
        (
            "thin (provisioned) 128K seq read",
            2,
            Workload::Read,
            131072,
        ),
        (
            "thin on RAM (provisioned) 128K seq read",
            4,
            Workload::Read,
            131072,
        ),
    ];
    let mut best: Vec<Option<PerfResult>> = cases.iter().map(|_| None).collect();
    let before = pool.stats()?;
    let mut fresh_writes = 0;
    for round in 0..o.rounds {
        println!("-- round {} of {}", round + 1, o.rounds);
        for (k, (name, nsid, w, io)) in cases.iter().enumerate() {
            if o.only.as_ref().is_some_and(|x| !name.contains(x.as_str())) {
                continue;
            }
            let r = perf::run(&base(*nsid, *w, *io))?;
            print_row(name, &r);
            if *nsid == 3 {
                fresh_writes += r.writes;
            }
            if best[k].as_ref().is_none_or(|b| r.iops() > b.iops()) {
                best[k] = Some(r);
            }
        }
    }
    let after = pool.stats()?;
    println!("-- best of {} rounds", o.rounds);
    for ((name, ..), r) in cases.iter().zip(best) {
        if let Some(r) = r {
            add(name, &mut || Ok(r.clone()))?;
        }
    }
    target.stop()?;
    // The loopback limit again, after the target stopped: the ratios use the better one.
    add("loopback echo, 4K read bytes (again)", &mut || {
        echo_for(true, 4096)
    })?;
    add("loopback echo, 4K write bytes (again)", &mut || {
        echo_for(false, 4096)
    })?;
    add("loopback echo, 128K read bytes (again)", &mut || {
        echo_for(true, 131072)
    })?;
    println!();
    for n in &notes {
        println!("{n}");
    }

    // The best row whose name starts with `name` (the echo cases ran twice).
    let get = |name: &str| {
        rows.iter()
            .filter(|r| r.name.starts_with(name))
            .map(|r| &r.r)
            .max_by(|a, b| a.iops().total_cmp(&b.iops()))
    };
    let ratio = |a: &str, b: &str| match (get(a), get(b)) {
        (Some(x), Some(y)) if y.iops() > 0.0 => x.iops() / y.iops() * 100.0,
        _ => 0.0,
    };
    let provisioned = before.free_data_blocks - after.free_data_blocks;
    let writes = fresh_writes;
    println!(
        "unprovisioned randwrite: {provisioned} data blocks (64 KiB) provisioned by {writes} writes ({:.0} % first writes)",
        if writes > 0 {
            provisioned as f64 / writes as f64 * 100.0
        } else {
            0.0
        }
    );
    println!("ratios (IOPS; = MiB/s ratios; loopback = the better of its two runs):");
    for (label, a, b) in [
        (
            "thin/malloc 4K randread",
            "thin (provisioned) 4K randread",
            "malloc 4K randread",
        ),
        (
            "thin on RAM/malloc 4K randread",
            "thin on RAM (provisioned) 4K randread",
            "malloc 4K randread",
        ),
        (
            "thin on RAM/malloc 4K randwrite",
            "thin on RAM (provisioned) 4K randwrite",
            "malloc 4K randwrite",
        ),
        (
            "thin on RAM/malloc 128K read",
            "thin on RAM (provisioned) 128K seq read",
            "malloc 128K seq read",
        ),
        (
            "thin/malloc 4K randwrite",
            "thin (provisioned) 4K randwrite",
            "malloc 4K randwrite",
        ),
        (
            "unprovisioned/provisioned thin 4K randwrite",
            "thin (unprovisioned) 4K randwrite",
            "thin (provisioned) 4K randwrite",
        ),
        (
            "thin/malloc 128K read",
            "thin (provisioned) 128K seq read",
            "malloc 128K seq read",
        ),
        (
            "malloc 4K randread vs loopback",
            "malloc 4K randread",
            "loopback echo, 4K read bytes",
        ),
        (
            "malloc 4K randwrite vs loopback",
            "malloc 4K randwrite",
            "loopback echo, 4K write bytes",
        ),
        (
            "malloc 128K read vs loopback",
            "malloc 128K seq read",
            "loopback echo, 128K read bytes",
        ),
        (
            "thin 128K read vs loopback",
            "thin (provisioned) 128K seq read",
            "loopback echo, 128K read bytes",
        ),
    ] {
        println!("  {label:<44} {:>6.1} %", ratio(a, b));
    }
    Ok(())
}

//! virtio-test: thin-core on bare metal over two virtio-blk disks.
//!
//! Each boot reads the metadata disk's superblock to learn its phase:
//! - **unformatted → boot 1**: format, run the committed script (ending in a commit with
//!   transaction id 1), verify pool + data against the model, run thin-core's checker, reopen,
//!   run the uncommitted script (transaction id 2, never committed), verify that too, print
//!   `RESULT stopped …` and halt without committing: the host kills QEMU there, as if the power
//!   went (the machine stays halted and sets no exit code);
//! - **transaction id 1 → boot 2**: open the pool, rebuild the committed state by replaying the
//!   committed script on the model alone, verify it exactly (devices, mappings, bytes, space
//!   used), print `expect …` lines for the host, run the checker, exit 0.
//!
//! Serial lines the host reads: `RESULT pass|fail|stopped …` (the outcome),
//! `expect DEV VBLOCK DATA FNV`, `expect-dev DEV NR_MAPPED`, `heap-peak BYTES`.
//! Exit codes: 0 verified, 1 panic, 2 a check failed.
#![no_std]
#![no_main]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[cfg(target_arch = "riscv64")]
use board_riscv64 as board;
#[cfg(target_arch = "x86_64")]
use board_x86_64 as board;

mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}
mod console;
mod disk;
#[allow(unsafe_code)]
mod hal;
#[allow(unsafe_code)]
mod heap;
mod oos;
// `classify` is for the host's reading of the data image (xtask includes this file).
#[allow(dead_code)]
mod pattern;
mod workload;

use alloc::format;
use alloc::string::String;

use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::pool::read_superblock;
use thin_core::thin::{FormatOptions, OpenOptions, Pool, PoolError};

use disk::{DataDisk, MetaDisk, DATA_BLOCK_SECTORS};
use workload::{Model, Rig, TRANS_COMMITTED};

/// Boot 2 verified everything.
const EXIT_OK: u8 = 0;
/// A panic.
const EXIT_PANIC: u8 = 1;
/// A check failed.
const EXIT_FAILED: u8 = 2;

/// Entry point, called once by the board after boot.
#[no_mangle]
#[allow(unsafe_code)]
fn firmware_main() -> ! {
    heap::init();
    println!(
        "virtio-test on {}: heap {} KiB, metadata cache {} blocks",
        board::NAME,
        config::HEAP_BYTES / 1024,
        config::CACHE_BLOCKS
    );
    let outcome = run();
    println!("heap-peak {} (in use now {})", heap::peak(), heap::in_use());
    match outcome {
        Ok(Outcome::Verified) => board::exit(EXIT_OK),
        Ok(Outcome::Uncommitted) => {
            println!(
                "RESULT stopped: boot 1 committed transaction {TRANS_COMMITTED}, left work \
                 uncommitted; halted, waiting to be killed"
            );
            board::halt()
        }
        Err(e) => {
            println!("RESULT fail: {e}");
            board::exit(EXIT_FAILED)
        }
    }
}

/// How a boot ended.
enum Outcome {
    /// Boot 2: the committed state is exactly as expected.
    Verified,
    /// Boot 1: committed, then left work uncommitted.
    Uncommitted,
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {info}");
    println!("RESULT fail: panic");
    board::exit(EXIT_PANIC)
}

fn run() -> Result<Outcome, String> {
    let disks = disk::pick(hal::probe_block_devices())?;
    let (mut meta, data) = (disks.meta, disks.data);
    match read_superblock(&mut meta) {
        Err(PoolError::Unformatted) => boot1(meta, data),
        Ok(sb) if sb.trans_id == TRANS_COMMITTED => {
            let (oos_meta, oos_data) = disks.oos.ok_or_else(|| {
                format!(
                    "boot 2 needs the out-of-space disks ({} and {})",
                    disk::OOS_META_SERIAL,
                    disk::OOS_DATA_SERIAL
                )
            })?;
            boot2(meta, data, oos_meta, oos_data)
        }
        Ok(sb) => Err(format!(
            "metadata disk holds transaction {}; expected a blank disk or {TRANS_COMMITTED}",
            sb.trans_id
        )),
        Err(e) => Err(format!("reading the superblock: {e}")),
    }
}

pub(crate) fn checker(dev: &mut MetaDisk) -> Result<(), String> {
    let opts = CheckOptions {
        cache_blocks: config::CACHE_BLOCKS,
        ..CheckOptions::default()
    };
    let report = check(dev, &opts);
    for issue in &report.issues {
        println!("  check: {issue:?}");
    }
    if !report.is_clean() {
        return Err(format!("thin-core check: {} issues", report.issues.len()));
    }
    println!(
        "check: clean ({} devices, {} mappings, {} free metadata blocks)",
        report.nr_devices, report.nr_mappings, report.metadata_free_blocks
    );
    Ok(())
}

fn boot1(meta: MetaDisk, data: DataDisk) -> Result<Outcome, String> {
    println!("phase: boot 1 (blank metadata disk)");
    let opts = FormatOptions {
        data_block_size: DATA_BLOCK_SECTORS,
        nr_data_blocks: data.nr_blocks(),
        cache_blocks: config::CACHE_BLOCKS,
    };
    let pool = Pool::format(meta, opts).map_err(|e| format!("format: {e}"))?;
    let mut rig = Rig::new(pool, data, Model::new());
    rig.run(&workload::committed_script())?;
    let c = rig.counts;
    println!("committed: plans {c:?}");
    if c.in_place == 0
        || c.provision_full == 0
        || c.provision_zeroed == 0
        || c.break_full == 0
        || c.break_copied == 0
    {
        return Err(format!("the script missed a kind of write plan: {c:?}"));
    }
    let s = rig.verify(false)?;
    println!("committed: verified {s:?}");

    let Rig {
        pool, data, model, ..
    } = rig;
    let mut meta = pool.into_device();
    checker(&mut meta)?;
    let open = OpenOptions {
        cache_blocks: config::CACHE_BLOCKS,
        read_only: false,
    };
    let pool = Pool::open(meta, open).map_err(|e| format!("reopen: {e}"))?;
    let writes_at_commit = disk::meta_writes();
    let mut rig = Rig::new(pool, data, model);
    rig.allow_in_place = false;
    rig.run(&workload::uncommitted_script())?;
    let s = rig.verify(false)?;
    println!("uncommitted: verified {s:?}; plans {:?}", rig.counts);
    // The crash test means something only if uncommitted metadata reached the disk (the small
    // cache evicts dirty blocks): boot 2 must then ignore it.
    let uncommitted_writes = disk::meta_writes() - writes_at_commit;
    println!("uncommitted: {uncommitted_writes} metadata blocks written since the commit");
    if uncommitted_writes == 0 {
        return Err(
            "no uncommitted metadata reached the disk; the crash test would be vacuous".into(),
        );
    }
    Ok(Outcome::Uncommitted)
}

fn boot2(
    meta: MetaDisk,
    data: DataDisk,
    oos_meta: MetaDisk,
    oos_data: DataDisk,
) -> Result<Outcome, String> {
    println!("phase: boot 2 (after a stop without commit)");
    let open = OpenOptions {
        cache_blocks: config::CACHE_BLOCKS,
        read_only: true,
    };
    let pool = Pool::open(meta, open).map_err(|e| format!("open: {e}"))?;
    let mut model = Model::new();
    workload::replay(&mut model, &workload::committed_script())?;
    let mut rig = Rig::new(pool, data, model);
    let s = rig.verify(true)?;
    if s.transaction_id != TRANS_COMMITTED {
        return Err(format!("transaction id {}", s.transaction_id));
    }
    println!("committed state: verified {s:?}");
    let mut meta = rig.pool.into_device();
    checker(&mut meta)?;
    drop(rig.model);
    // On its own disks: the committed state above stays as the host will check it.
    oos::run(oos_meta, oos_data).map_err(|e| format!("oos: {e}"))?;
    println!(
        "RESULT pass: {} devices, {} mappings, {} data blocks as committed",
        s.devices, s.mappings, s.data_blocks
    );
    Ok(Outcome::Verified)
}

//! `nvmf-target`: the NVMe/TCP target daemon.
//!
//! With no arguments it serves an embedded default: a thin pool in files under `./nvmf-data`
//! (created on first start: 64 MiB metadata, 4 GiB sparse data, 64 KiB data blocks), one
//! 1 GiB thin volume as namespace 1 of `nqn.2026-11.io.thin:default`, listening on
//! 127.0.0.1:4420 (discovery on the same port). SIGINT/SIGTERM stop it cleanly: connections
//! close, every namespace is flushed, the pool commits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use nvmf_target::bdev::thin::{ThinPool, DEFAULT_CACHE_BLOCKS};
use nvmf_target::{PollMode, SubsystemConfig, Target, TargetConfig};

/// Default subsystem NQN.
const DEFAULT_NQN: &str = "nqn.2026-11.io.thin:default";
const META_BYTES: u64 = 64 << 20;
const DATA_BYTES: u64 = 4 << 30;
const VOLUME_BYTES: u64 = 1 << 30;
const VOLUME_ID: u64 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "nvmf-target",
    version,
    about = "NVMe/TCP target serving thin volumes"
)]
struct Args {
    /// Folder holding the default pool (created on first start).
    #[arg(long, default_value = "nvmf-data")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:4420")]
    listen: String,
    /// Subsystem NQN of the default volume.
    #[arg(long, default_value = DEFAULT_NQN)]
    nqn: String,
    /// Reactor core mask (SPDK's -m), e.g. 0x1.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1", value_parser = parse_mask)]
    cpumask: u64,
    /// Busy-poll instead of the adaptive default (for benchmarks).
    #[arg(long)]
    busy_poll: bool,
}

fn parse_mask(s: &str) -> Result<u64, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u64::from_str_radix(t, 16)
        .map_err(|e| format!("bad cpumask {s}: {e}"))
        .and_then(|m| {
            if m == 0 {
                Err("cpumask must name a core".into())
            } else {
                Ok(m)
            }
        })
}

fn sized_file(path: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    if f.metadata()?.len() < bytes {
        f.set_len(bytes)?;
    }
    Ok(())
}

/// Opens the default pool, creating it (and the volume) on first start.
fn default_pool(dir: &Path) -> Result<ThinPool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (meta, data) = (dir.join("pool.meta"), dir.join("pool.data"));
    let fresh = !meta.exists();
    sized_file(&meta, META_BYTES).map_err(|e| format!("{}: {e}", meta.display()))?;
    sized_file(&data, DATA_BYTES).map_err(|e| format!("{}: {e}", data.display()))?;
    if fresh {
        let pool =
            ThinPool::create(&meta, &data, 128, DEFAULT_CACHE_BLOCKS).map_err(|e| e.to_string())?;
        pool.with_pool(|p| p.create_thin(VOLUME_ID))
            .map_err(|e| e.to_string())?;
        log::info!(
            "created pool in {} with thin volume {VOLUME_ID}",
            dir.display()
        );
        Ok(pool)
    } else {
        ThinPool::open(&meta, &data, DEFAULT_CACHE_BLOCKS)
            .map_err(|e| format!("opening the pool in {}: {e}", dir.display()))
    }
}

fn serve(a: Args) -> Result<(), String> {
    let pool = default_pool(&a.data_dir)?;
    let uuid = {
        // Stable per data folder: derived from its canonical path.
        let p = a
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| a.data_dir.clone());
        let h = crc32c::crc32c(p.to_string_lossy().as_bytes());
        let mut u = [0u8; 16];
        u[..4].copy_from_slice(&h.to_be_bytes());
        u[4..8].copy_from_slice(&VOLUME_ID.to_be_bytes()[4..]);
        u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout
        u[8] = (u[8] & 0x3f) | 0x80;
        u
    };
    let vol = pool
        .volume("thin1", VOLUME_ID, VOLUME_BYTES, 4096, uuid)
        .map_err(|e| e.to_string())?;
    let cfg = TargetConfig {
        cpumask: a.cpumask,
        poll_mode: if a.busy_poll {
            PollMode::Busy
        } else {
            PollMode::Adaptive
        },
        ..TargetConfig::default()
    };
    let mut target = Target::new(cfg);
    target
        .add_subsystem(SubsystemConfig::new(&a.nqn).allow_any_host(true))
        .and_then(|t| t.add_namespace(&a.nqn, 1, Box::new(vol)))
        .map_err(|e| e.to_string())?;
    let addr = target
        .listen(a.listen.as_str())
        .map_err(|e| format!("listening on {}: {e}", a.listen))?;
    println!(
        "nvmf-target: serving {} (1 GiB thin volume, namespace 1) on {addr}",
        a.nqn
    );
    println!(
        "  connect:  nvme connect -t tcp -a {} -s {} -n {}",
        addr.ip(),
        addr.port(),
        a.nqn
    );
    println!(
        "  discover: nvme discover -t tcp -a {} -s {}",
        addr.ip(),
        addr.port()
    );
    println!("listening on {addr}");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed))
        .map_err(|e| format!("signal handler: {e}"))?;
    target.run_until(&stop).map_err(|e| e.to_string())?;
    pool.commit().map_err(|e| format!("final commit: {e}"))?;
    log::info!("stopped; pool committed");
    println!("nvmf-target: stopped, pool committed");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    match serve(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmf-target: {e}");
            ExitCode::from(1)
        }
    }
}

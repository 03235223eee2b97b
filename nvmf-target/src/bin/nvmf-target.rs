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
use nvmf_target::rpc::{Rpc, RpcServer, DEFAULT_SOCKET};
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
    /// JSON-RPC Unix socket (SPDK's `-r`); `spdk-rpc -s PATH` talks to it.
    #[arg(short = 'r', long = "rpc-socket")]
    rpc_socket: Option<PathBuf>,
    /// Do not serve JSON-RPC.
    #[arg(long)]
    no_rpc_server: bool,
    /// Start empty (no default pool, volume or subsystem), as SPDK's spdk_tgt does; build
    /// everything through JSON-RPC.
    #[arg(long)]
    no_default_pool: bool,
    /// When the default pool runs out of data space, hold writes that need a new block
    /// this many seconds waiting for it to grow, then fail them (dm-thin's
    /// no_space_timeout); 0 fails them at once (error_if_no_space).
    #[arg(long, default_value_t = 60)]
    no_space_timeout: u64,
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
    let pool = if a.no_default_pool {
        None
    } else {
        let pool = default_pool(&a.data_dir)?;
        pool.set_no_space_timeout_ms(a.no_space_timeout.saturating_mul(1000))
            .map_err(|e| e.to_string())?;
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
        target
            .add_subsystem(SubsystemConfig::new(&a.nqn).allow_any_host(true))
            .and_then(|t| t.add_namespace(&a.nqn, 1, Box::new(vol)))
            .map_err(|e| e.to_string())?;
        Some(pool)
    };
    let addr = target
        .listen(a.listen.as_str())
        .map_err(|e| format!("listening on {}: {e}", a.listen))?;
    if pool.is_some() {
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
    }
    println!(
        "  discover: nvme discover -t tcp -a {} -s {}",
        addr.ip(),
        addr.port()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed))
        .map_err(|e| format!("signal handler: {e}"))?;
    let handle = target.spawn().map_err(|e| e.to_string())?;
    let rpc = Arc::new(Rpc::new(handle, vec![addr], stop.clone()));
    let server = if a.no_rpc_server {
        None
    } else {
        let explicit = a.rpc_socket.is_some();
        let path = a
            .rpc_socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        match RpcServer::start(&path, rpc.clone()) {
            Ok(s) => {
                println!("rpc socket {}", path.display());
                Some(s)
            }
            // SPDK refuses to start; with the implicit default path we only warn, so that
            // several daemons (tests) can run side by side.
            Err(e) if !explicit => {
                log::warn!("JSON-RPC disabled: {e}");
                None
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    println!("listening on {addr}");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if let Some(s) = server {
        s.stop();
    }
    if let Some(h) = rpc.shutdown() {
        h.stop().map_err(|e| e.to_string())?;
    }
    if let Some(pool) = pool {
        pool.commit().map_err(|e| format!("final commit: {e}"))?;
        log::info!("stopped; pool committed");
    }
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

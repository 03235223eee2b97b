//! `nvmf-target`: the NVMe/TCP target daemon.
//!
//! With no arguments it serves an embedded default: a thin pool in files under `./nvmf-data`
//! (created on first start: 64 MiB metadata, 4 GiB sparse data, 64 KiB data blocks), one
//! 1 GiB thin volume as namespace 1 of `nqn.2026-11.io.thin:default`, listening on
//! 127.0.0.1:4420 (discovery on the same port). SIGINT/SIGTERM stop it cleanly: connections
//! close, every namespace is flushed, the pool commits.
//!
//! Configuration (issue 5): after every successful state-changing JSON-RPC call the daemon
//! writes its whole configuration (the `spdk-rpc save_config` document) to
//! `<data-dir>/config.json`; on the next start without `--json` it replays that file, so a
//! restart brings back every bdev, lvstore, lvol, subsystem, namespace, listener and host.
//! `-c/--json FILE` replays a user's file instead (SPDK's start-up config: the first failing
//! entry stops start-up unless `--json-ignore-init-errors`) and then serves only what it
//! describes (no embedded default unless `--default-pool`). The embedded default objects are
//! created from the flags on every start and are never part of `config.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use nvmf_target::bdev::thin::{PoolDevices, ThinPool, DEFAULT_CACHE_BLOCKS};
use nvmf_target::rpc::config::{self, Persist, ReplayOptions, Report};
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
    /// Folder holding the default pool (created on first start) and the persisted
    /// configuration `config.json`.
    #[arg(long, default_value = "nvmf-data")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:4420")]
    listen: String,
    /// Subsystem NQN of the default volume.
    #[arg(long, default_value = DEFAULT_NQN)]
    nqn: String,
    /// Reactor core mask (SPDK's -m), e.g. 0x3: one pinned reactor per core; the lowest
    /// core's reactor owns controllers and pools.
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
    /// Open the default pool's files with O_DIRECT (no page cache; the filesystem must
    /// support it).
    #[arg(long)]
    direct_io: bool,
    /// Load a JSON configuration at start-up (SPDK's `-c/--json`: the document
    /// `spdk-rpc save_config` writes) instead of `<data-dir>/config.json`. Only what it
    /// describes is served (add `--default-pool` for the embedded default too).
    #[arg(
        short = 'c',
        long = "json",
        visible_alias = "config",
        value_name = "FILE"
    )]
    json: Option<PathBuf>,
    /// With `--json`: log failing entries and go on instead of refusing to start.
    #[arg(long, requires = "json")]
    json_ignore_init_errors: bool,
    /// With `--json`: serve the embedded default pool, volume and subsystem as well.
    #[arg(long, requires = "json", conflicts_with = "no_default_pool")]
    default_pool: bool,
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
fn default_pool(dir: &Path, direct: bool) -> Result<ThinPool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (meta, data) = (dir.join("pool.meta"), dir.join("pool.data"));
    let fresh = !meta.exists();
    sized_file(&meta, META_BYTES).map_err(|e| format!("{}: {e}", meta.display()))?;
    sized_file(&data, DATA_BYTES).map_err(|e| format!("{}: {e}", data.display()))?;
    if fresh {
        let devs = PoolDevices::files_with(&meta, &data, direct).map_err(|e| e.to_string())?;
        let pool =
            ThinPool::create_on(devs, 128, DEFAULT_CACHE_BLOCKS).map_err(|e| e.to_string())?;
        pool.with_pool(|p| p.create_thin(VOLUME_ID))
            .map_err(|e| e.to_string())?;
        log::info!(
            "created pool in {} with thin volume {VOLUME_ID}",
            dir.display()
        );
        Ok(pool)
    } else {
        PoolDevices::files_with(&meta, &data, direct)
            .and_then(|devs| ThinPool::open_on(devs, DEFAULT_CACHE_BLOCKS))
            .map_err(|e| format!("opening the pool in {}: {e}", dir.display()))
    }
}

/// What to replay at start-up: the `--json` file, or the daemon's own `config.json`.
struct Plan {
    source: PathBuf,
    entries: Vec<config::Entry>,
    opts: ReplayOptions,
}

fn plan(a: &Args) -> Result<Option<Plan>, String> {
    if let Some(p) = &a.json {
        let entries = config::load(p).map_err(|e| format!("--json {e}"))?;
        return Ok(Some(Plan {
            source: p.clone(),
            entries,
            opts: ReplayOptions {
                stop_on_error: !a.json_ignore_init_errors,
                restart: false,
            },
        }));
    }
    let own = a.data_dir.join(config::CONFIG_FILE);
    if !own.exists() {
        return Ok(None);
    }
    let entries = config::load(&own).map_err(|e| {
        format!("{e} (the daemon's persisted configuration: repair it or move it away)")
    })?;
    Ok(Some(Plan {
        source: own,
        entries,
        // What could not be restored is reported, and the rest served.
        opts: ReplayOptions {
            stop_on_error: false,
            restart: true,
        },
    }))
}

/// Replays the start-up configuration and reconciles it with the pools. `Err`: a strict
/// replay failed.
fn load_config(a: &Args, rpc: &Rpc, plan: Option<Plan>) -> Result<(), String> {
    let mut report = Report::default();
    let own = a.data_dir.join(config::CONFIG_FILE);
    if let Some(plan) = plan {
        let src = plan.source.display().to_string();
        report.source = Some(src.clone());
        let out = rpc.replay(&plan.entries, plan.opts).map_err(|f| {
            format!("{src}: {f}; not starting (fix the entry, or pass --json-ignore-init-errors)")
        })?;
        report.applied = out.applied;
        report.skipped = out.skipped.len();
        report.failed = out.failures.len();
        report.findings = out.findings;
    }
    report.findings.extend(config::reconcile(&rpc.inventory()));
    for f in &report.findings {
        log::warn!("reconcile: {f}");
    }
    let keep_backup = if a.json.is_some() {
        // The --json file replaces the data folder's configuration: keep the old one.
        own.exists()
    } else {
        !report.findings.is_empty() && own.exists()
    };
    if keep_backup {
        let bak = a.data_dir.join(config::BACKUP_FILE);
        match std::fs::copy(&own, &bak) {
            Ok(_) => report.backup = Some(bak),
            Err(e) => log::error!("keeping {}: {e}", bak.display()),
        }
    }
    if report.source.is_some() || !report.findings.is_empty() {
        eprintln!("nvmf-target: {}", report.summary());
    }
    rpc.set_report(report);
    rpc.enable_persistence(Persist::new(&a.data_dir), a.json.is_some());
    Ok(())
}

fn serve(a: Args) -> Result<(), String> {
    // Read the configuration first: a malformed file stops us before anything starts.
    let plan = plan(&a)?;
    let serve_default = if a.json.is_some() {
        a.default_pool
    } else {
        !a.no_default_pool
    };
    let cfg = TargetConfig {
        cpumask: a.cpumask,
        pin_reactors: true,
        poll_mode: if a.busy_poll {
            PollMode::Busy
        } else {
            PollMode::Adaptive
        },
        ..TargetConfig::default()
    };
    cfg.check().map_err(|e| e.to_string())?;
    let mut target = Target::new(cfg);
    let pool = if !serve_default {
        None
    } else {
        let pool = default_pool(&a.data_dir, a.direct_io)?;
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
    if let Err(e) = load_config(&a, &rpc, plan) {
        if let Some(h) = rpc.shutdown() {
            let _ = h.stop();
        }
        if let Some(pool) = pool {
            let _ = pool.commit();
        }
        return Err(e);
    }
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

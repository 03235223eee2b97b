//! `nvmf-perf`: a userspace NVMe/TCP initiator benchmark in the manner of `spdk_nvme_perf`.
//!
//! ```text
//! nvmf-perf -a 127.0.0.1 -s 4420 -n nqn.2026-11.io.thin:default -q 32 -o 4096 -w randread -t 10
//! nvmf-perf ... -w rw -M 70 -c 2          # 70 % reads, two connections (one I/O queue each)
//! nvmf-perf ... -V -t 1                   # verify: write a pattern, check every byte read
//! nvmf-perf --echo -q 32 -o 131072 -w read -t 5   # the loopback limit for the same bytes
//! ```
//!
//! Connects the admin queue (ICReq/ICResp, fabrics Connect, CC.EN), identifies the namespace,
//! connects one I/O queue per connection and keeps `-q` commands outstanding on each; prints
//! IOPS, MiB/s, mean and p99 latency. `--echo` runs no NVMe at all: the same queue depth and
//! per-I/O byte counts against an in-process busy-polling sink server over loopback.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nvmf_target::initiator::echo::{self, EchoConfig};
use nvmf_target::initiator::perf::{self, PerfConfig, Workload};
use nvmf_target::initiator::{HostConfig, DEFAULT_HOSTNQN};
use nvmf_target::wire::pdu::Digests;

#[derive(Parser, Debug)]
#[command(name = "nvmf-perf", version, about = "NVMe/TCP initiator benchmark")]
struct Args {
    /// Target address.
    #[arg(short = 'a', long = "addr", default_value = "127.0.0.1")]
    addr: String,
    /// Target port.
    #[arg(short = 's', long = "port", default_value_t = 4420)]
    port: u16,
    /// Subsystem NQN.
    #[arg(
        short = 'n',
        long = "nqn",
        default_value = "nqn.2026-11.io.thin:default"
    )]
    nqn: String,
    /// Host NQN.
    #[arg(long, default_value = DEFAULT_HOSTNQN)]
    hostnqn: String,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// Queue depth per connection.
    #[arg(short = 'q', long = "queue-depth", default_value_t = 32)]
    queue_depth: u32,
    /// I/O size in bytes (a multiple of the LBA size).
    #[arg(short = 'o', long = "io-size", default_value_t = 4096)]
    io_size: u32,
    /// read, write, randread, randwrite, rw or randrw.
    #[arg(short = 'w', long = "workload", default_value = "randread")]
    workload: Workload,
    /// Read percentage of rw/randrw.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    read_pct: u8,
    /// Run time in seconds.
    #[arg(short = 't', long = "time", default_value_t = 10.0)]
    time: f64,
    /// Connections, each with its own I/O queue and thread.
    #[arg(short = 'c', long = "connections", default_value_t = 1)]
    connections: u16,
    /// Verify data: write a pattern first, check every byte read.
    #[arg(short = 'V', long)]
    verify: bool,
    /// Busy-poll non-blocking sockets instead of blocking reads.
    #[arg(long)]
    busy: bool,
    /// Header and data digests.
    #[arg(long)]
    digests: bool,
    /// Restrict I/O to the first BYTES of the namespace.
    #[arg(long, value_name = "BYTES")]
    range: Option<u64>,
    /// Measure the loopback limit instead: same queue depth and bytes per I/O against an
    /// in-process sink server (no NVMe).
    #[arg(long)]
    echo: bool,
    /// In-capsule data size assumed by --echo for writes.
    #[arg(long, default_value_t = 8192)]
    echo_icd: u32,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let duration = Duration::from_secs_f64(a.time.max(0.01));
    if a.echo {
        let read = a.workload.read_pct(a.read_pct) >= 50;
        let (req, resp) = perf::wire_bytes(read, a.io_size, a.echo_icd);
        let cfg = EchoConfig {
            queue_depth: a.queue_depth,
            req_bytes: req,
            resp_bytes: resp,
            data_bytes: a.io_size,
            read,
            duration,
            busy_poll: a.busy,
        };
        println!(
            "echo baseline: qd {}, {req} bytes out / {resp} bytes back per I/O, {:.1} s",
            a.queue_depth,
            duration.as_secs_f64()
        );
        return match echo::run(&cfg) {
            Ok(r) => {
                println!("{r}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nvmf-perf: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let addr: SocketAddr = match (a.addr.as_str(), a.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut i| i.next())
    {
        Some(x) => x,
        None => {
            eprintln!("nvmf-perf: cannot resolve {}:{}", a.addr, a.port);
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = PerfConfig::new(HostConfig {
        addr,
        subnqn: a.nqn.clone(),
        hostnqn: a.hostnqn.clone(),
        digests: if a.digests {
            Digests::BOTH
        } else {
            Digests::NONE
        },
    });
    cfg.nsid = a.nsid;
    cfg.queue_depth = a.queue_depth;
    cfg.io_size = a.io_size;
    cfg.workload = a.workload;
    cfg.read_pct = a.read_pct;
    cfg.duration = duration;
    cfg.connections = a.connections;
    cfg.verify = a.verify;
    cfg.busy_poll = a.busy;
    cfg.range_bytes = a.range;
    println!(
        "nvmf-perf: {addr} {} nsid {}: {} {} B qd {} x {} connection(s), {:.1} s{}",
        a.nqn,
        a.nsid,
        a.workload,
        a.io_size,
        a.queue_depth,
        a.connections,
        duration.as_secs_f64(),
        if a.verify { ", verify" } else { "" }
    );
    match perf::run(&cfg) {
        Ok(r) => {
            println!("{r}");
            if a.verify {
                println!("verified {} bytes", r.verified_bytes);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nvmf-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

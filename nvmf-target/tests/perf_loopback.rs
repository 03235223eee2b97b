//! `nvmf-perf`'s engine against an in-process target with a malloc namespace: about a
//! second of verified mixed I/O (in-capsule writes and writes through R2T), and the echo
//! baseline. CI-safe: small namespace, short runs.

use std::time::Duration;

use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::initiator::echo::{self, EchoConfig};
use nvmf_target::initiator::perf::{self, PerfConfig, Workload};
use nvmf_target::initiator::{HostConfig, DEFAULT_HOSTNQN};
use nvmf_target::wire::pdu::Digests;
use nvmf_target::{SubsystemConfig, Target, TargetHandle};

#[macro_use]
mod common;
use common::config;

const NQN: &str = "nqn.2016-06.io.spdk:perf";

fn start(mask: u64) -> (TargetHandle, HostConfig) {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut t = Target::new(config(mask));
    t.add_subsystem(SubsystemConfig::new(NQN)).unwrap();
    t.add_namespace(
        NQN,
        1,
        Box::new(Malloc::new("m0", 8192, 512, [3; 16]).unwrap()),
    )
    .unwrap();
    let addr = t.listen("127.0.0.1:0").unwrap();
    let host = HostConfig {
        addr,
        subnqn: NQN.into(),
        hostnqn: DEFAULT_HOSTNQN.into(),
        digests: Digests::NONE,
    };
    (t.spawn().unwrap(), host)
}

fn perf_verified_randrw_in_capsule_and_r2t(mask: u64) {
    let (target, host) = start(mask);
    for (io_size, digests, conns) in [(4096, Digests::NONE, 2), (65536, Digests::BOTH, 1)] {
        let mut cfg = PerfConfig::new(HostConfig {
            digests,
            ..host.clone()
        });
        cfg.workload = Workload::RandRw;
        cfg.read_pct = 50;
        cfg.io_size = io_size;
        cfg.queue_depth = 16;
        cfg.connections = conns;
        cfg.verify = true;
        cfg.duration = Duration::from_millis(600);
        let r = perf::run(&cfg).unwrap();
        println!("{io_size} B: {r}");
        assert!(r.iops() > 0.0);
        assert!(r.reads > 0 && r.writes > 0);
        assert!(r.verified_bytes >= r.reads * u64::from(io_size));
        assert_eq!(r.hist.count(), r.ios());
        if io_size <= 8192 {
            assert!(r.icd_writes > 0 && r.r2t_writes == 0);
        } else {
            assert!(r.r2t_writes > 0 && r.icd_writes == 0);
        }
    }
    target.stop().unwrap();
}

fn perf_sequential_read_and_busy_poll(mask: u64) {
    let (_target, host) = start(mask);
    let mut cfg = PerfConfig::new(host);
    cfg.workload = Workload::Read;
    cfg.io_size = 131072;
    cfg.queue_depth = 4;
    cfg.busy_poll = true;
    cfg.duration = Duration::from_millis(300);
    let r = perf::run(&cfg).unwrap();
    assert!(r.reads > 0 && r.writes == 0);
    assert_eq!(r.bytes, r.reads * 131072);
}

fn perf_reports_errors_not_panics(mask: u64) {
    let (_target, host) = start(mask);
    let mut cfg = PerfConfig::new(host.clone());
    cfg.nsid = 9;
    assert!(perf::run(&cfg).is_err(), "inactive namespace");
    let mut cfg = PerfConfig::new(host);
    cfg.io_size = 1000;
    assert!(
        perf::run(&cfg).is_err(),
        "I/O size not a multiple of the LBA size"
    );
}

#[test]
fn echo_baseline_runs() {
    let (req, resp) = perf::wire_bytes(true, 4096, 8192);
    let r = echo::run(&EchoConfig {
        queue_depth: 8,
        req_bytes: req,
        resp_bytes: resp,
        data_bytes: 4096,
        read: true,
        duration: Duration::from_millis(300),
        busy_poll: true,
    })
    .unwrap();
    assert!(r.reads > 0);
}

on_reactors!(
    perf_verified_randrw_in_capsule_and_r2t,
    perf_sequential_read_and_busy_poll,
    perf_reports_errors_not_panics
);

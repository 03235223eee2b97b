//! The dm-thin extras through SPDK's own client and our plugin module: `spdk-rpc --plugin
//! spdk_rpc_thin` (PYTHONPATH = the repository's `scripts/`) builds a pool on two aio bdevs
//! (separate metadata and data files), volumes and a snapshot in it through the lvol
//! methods, and writes known blocks through our in-tree NVMe/TCP initiator. Pool status,
//! metadata snapshots, transaction id, low-water mark and delta are checked number for
//! number; bad parameters get SPDK-style errors. After the daemon stops, Debian's
//! `thin_check` and `thin_dump` read the metadata file as they would a Linux dm-thin pool's;
//! a second daemon refuses to format over it and `load_config` brings the pool back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::spdk_rpc::{self, Daemon};
use e2e_tests::{debian, dm_tools, ScratchDir};
use nvmf_target::initiator::{Conn, Controller, HostConfig};
use nvmf_target::wire::io::{IoOpcode, RwCommand};
use nvmf_target::wire::pdu::Digests;
use nvmf_target::wire::sgl::SglDescriptor;
use nvmf_target::wire::sqe::Sqe;
use serde_json::{json, Value};

const NQN: &str = "nqn.2016-06.io.spdk:thin1";
const PLUGIN: &str = "spdk_rpc_thin";
/// Data block: 256 sectors = 128 KiB = 32 LBAs of 4 KiB.
const DBS_SECTORS: u64 = 256;
const LBAS_PER_BLOCK: u64 = DBS_SECTORS * 512 / 4096;
const DATA_BLOCKS: u64 = 64;
const META_BYTES: u64 = 8 << 20;

fn start(dir: &Path, sock: &str) -> Daemon {
    Daemon::start(dir, sock, &[])
}

fn rpc(d: &Daemon, args: &[&str]) -> String {
    spdk_rpc::ok(&d.sock, Some(PLUGIN), args)
}

fn rpc_json(d: &Daemon, args: &[&str]) -> Value {
    spdk_rpc::json(&d.sock, Some(PLUGIN), args)
}

fn rpc_err(d: &Daemon, args: &[&str]) -> (i64, String) {
    spdk_rpc::err(&d.sock, Some(PLUGIN), args)
}

fn status(d: &Daemon) -> Value {
    rpc_json(d, &["thin_pool_status", "pool0"])
}

fn kill(mut d: Daemon) {
    rpc(&d, &["spdk_kill_instance", "SIGINT"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = d.inner.child.try_wait().expect("wait") {
            assert!(st.success(), "daemon exit status {st}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One I/O queue to namespace 1 of [`NQN`].
struct Io {
    _ctrl: Controller,
    q: Conn,
    cid: u16,
}

impl Io {
    fn connect(port: u16) -> Io {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let ctrl = Controller::connect(
            HostConfig {
                addr,
                subnqn: NQN.into(),
                hostnqn: "nqn.2014-08.org.nvmexpress:uuid:plugin-test".into(),
                digests: Digests::default(),
            },
            1,
        )
        .expect("connect the controller");
        let q = ctrl.connect_io(1, 32).expect("I/O queue");
        Io {
            _ctrl: ctrl,
            q,
            cid: 1,
        }
    }

    fn next(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1).max(1);
        self.cid
    }

    /// Writes 4 KiB of `byte` at the start of virtual data block `vb`.
    fn write_block(&mut self, vb: u64, byte: u8) {
        let cid = self.next();
        let c = RwCommand::new(
            IoOpcode::Write,
            cid,
            1,
            vb * LBAS_PER_BLOCK,
            1,
            SglDescriptor::in_capsule(4096),
        );
        self.q
            .command_ok("Write", c.to_sqe(), &[byte; 4096])
            .expect("write");
    }

    /// Write Zeroes over whole data block `vb` (the thin volume unmaps it).
    fn zero_block(&mut self, vb: u64) {
        let cid = self.next();
        let c = RwCommand::new(
            IoOpcode::WriteZeroes,
            cid,
            1,
            vb * LBAS_PER_BLOCK,
            LBAS_PER_BLOCK as u32,
            SglDescriptor::transport(0),
        );
        self.q
            .command_ok("Write Zeroes", c.to_sqe(), &[])
            .expect("write zeroes");
    }

    fn flush(&mut self) {
        let cid = self.next();
        self.q
            .command_ok("Flush", Sqe::new(0x00, cid, 1), &[])
            .expect("flush");
    }
}

#[test]
fn plugin_drives_a_two_device_pool_that_debian_tools_read() {
    let dir = ScratchDir::new("spdk-rpc-plugin").expect("temp dir");
    let meta = dir.path().join("pool.meta");
    let data = dir.path().join("pool.data");
    let other = dir.path().join("other.img");
    for (p, len) in [
        (&meta, META_BYTES),
        (&data, DATA_BLOCKS * DBS_SECTORS * 512),
        (&other, 4 << 20),
    ] {
        std::fs::File::create(p)
            .and_then(|f| f.set_len(len))
            .expect("image file");
    }
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let d = start(dir.path(), "plugin.sock");
    rpc(&d, &["bdev_aio_create", &s(&meta), "Meta", "4096"]);
    rpc(&d, &["bdev_aio_create", &s(&data), "Data", "4096"]);
    rpc(&d, &["bdev_aio_create", &s(&other), "Other", "4096"]);
    let methods = rpc_json(&d, &["rpc_get_methods"]);
    assert!(methods
        .as_array()
        .expect("array")
        .contains(&json!("thin_delta")));

    // Bad parameters.
    let create = |name: &str, m: &str, dd: &str, extra: &[&str]| {
        let mut a = vec!["thin_pool_create", name, m, dd];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let inval = (-22, "Invalid argument".to_owned());
    let c = create("pool0", "Meta", "Data", &["-b", "100"]);
    assert_eq!(
        rpc_err(&d, &args(&c)),
        inval,
        "block size not a multiple of 128"
    );
    let c = create("pool0", "Meta", "Data", &["-b", "4194304"]);
    assert_eq!(
        rpc_err(&d, &args(&c)),
        inval,
        "block size above 2^21 sectors"
    );
    let c = create("pool0", "Meta", "Meta", &[]);
    assert_eq!(rpc_err(&d, &args(&c)), inval, "the same bdev twice");
    let c = create("pool0", "Meta", "Nope", &[]);
    assert_eq!(rpc_err(&d, &args(&c)), (-19, "No such device".into()));
    let c = create("pool0", "Meta", "Data", &["--no-format"]);
    assert_eq!(rpc_err(&d, &args(&c)), inval, "nothing to open");
    assert_eq!(
        rpc_err(&d, &["thin_pool_status", "nope"]),
        (-19, "No such device".into())
    );

    // The pool: 64 blocks of 128 KiB, metadata on its own 8 MiB bdev.
    let uuid = rpc(
        &d,
        &["thin_pool_create", "pool0", "Meta", "Data", "-b", "256"],
    );
    let c = create("pool1", "Other", "Data", &[]);
    assert_eq!(
        rpc_err(&d, &args(&c)),
        (-1, "Operation not permitted".into()),
        "the data bdev is claimed"
    );
    let c = create("pool1", "Other", "Meta", &[]);
    assert_eq!(
        rpc_err(&d, &args(&c)),
        (-1, "Operation not permitted".into())
    );
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "Data"]);
    assert_eq!(b[0]["claimed"], true);
    let st = status(&d);
    assert_eq!(st["uuid"], uuid.as_str());
    assert_eq!(st["metadata_bdev"], "Meta");
    assert_eq!(st["data_bdev"], "Data");
    assert_eq!(st["transaction_id"], 0);
    assert_eq!(st["total_data_blocks"], DATA_BLOCKS);
    assert_eq!(st["used_data_blocks"], 0);
    assert_eq!(st["total_metadata_blocks"], META_BYTES / 4096);
    let used_meta = st["used_metadata_blocks"].as_u64().expect("used metadata");
    assert!(used_meta > 0 && used_meta < 64, "used metadata {used_meta}");
    assert_eq!(st["held_metadata_root"], Value::Null);
    assert_eq!(st["mode"], "rw");
    assert_eq!(st["needs_check"], false);
    assert_eq!(st["data_block_size"], DBS_SECTORS);
    assert_eq!(st["low_water_mark"], 0);
    assert_eq!(st["low_water_mark_crossed"], false);

    // The pool is an lvstore for the lvol methods.
    let stores = rpc_json(&d, &["bdev_lvol_get_lvstores", "-l", "pool0"]);
    assert_eq!(stores[0]["uuid"], uuid.as_str());
    assert_eq!(stores[0]["total_data_clusters"], DATA_BLOCKS);
    assert_eq!(stores[0]["cluster_size"], DBS_SECTORS * 512);
    rpc(&d, &["bdev_lvol_create", "-l", "pool0", "-t", "vol0", "4"]);

    // Export vol0 and write blocks 0..4 through our initiator.
    rpc(&d, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(&d, &["nvmf_create_subsystem", NQN, "-a"]);
    let port = d.inner.port.to_string();
    rpc(
        &d,
        &[
            "nvmf_subsystem_add_listener",
            NQN,
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &port,
        ],
    );
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "pool0/vol0"]);
    let mut io = Io::connect(d.inner.port);
    for vb in 0..4 {
        io.write_block(vb, 0x10 + vb as u8);
    }
    io.flush();
    assert_eq!(status(&d)["used_data_blocks"], 4);

    // Snapshot, then overwrite blocks 1 and 2 (sharing broken) and write block 5 (new).
    rpc(&d, &["bdev_lvol_snapshot", "pool0/vol0", "snap0"]);
    io.write_block(1, 0xA1);
    io.write_block(2, 0xA2);
    io.write_block(5, 0xA5);
    io.flush();
    assert_eq!(status(&d)["used_data_blocks"], 7);
    let want = json!([
        {"type": "different", "begin": 1, "length": 2},
        {"type": "right_only", "begin": 5, "length": 1},
    ]);
    assert_eq!(
        rpc_json(&d, &["thin_delta", "pool0", "snap0", "pool0/vol0"]),
        want
    );
    // By dm-thin device id: vol0 is 1, snap0 is 2.
    assert_eq!(rpc_json(&d, &["thin_delta", "pool0", "2", "1"]), want);
    assert_eq!(
        rpc_json(&d, &["thin_delta", "pool0", "1", "snap0"]),
        json!([
            {"type": "different", "begin": 1, "length": 2},
            {"type": "left_only", "begin": 5, "length": 1},
        ])
    );
    assert_eq!(
        rpc_json(&d, &["thin_delta", "pool0", "vol0", "vol0"]),
        json!([])
    );
    assert_eq!(
        rpc_err(&d, &["thin_delta", "pool0", "vol0", "99"]),
        (-19, "No such device".into())
    );

    // Metadata snapshots: reserve, a second reserve is busy, release, a second release
    // has nothing to release; twice. The last one stays held.
    let mut held = 0;
    for round in 0..3 {
        let root = rpc(&d, &["thin_pool_reserve_metadata_snap", "pool0"]);
        held = root.parse::<u64>().expect("held root block");
        assert!(held > 0);
        assert_eq!(status(&d)["held_metadata_root"], held);
        assert_eq!(
            rpc_err(&d, &["thin_pool_reserve_metadata_snap", "pool0"]),
            (-16, "Device or resource busy".into())
        );
        if round == 2 {
            break;
        }
        rpc(&d, &["thin_pool_release_metadata_snap", "pool0"]);
        assert_eq!(status(&d)["held_metadata_root"], Value::Null);
        assert_eq!(
            rpc_err(&d, &["thin_pool_release_metadata_snap", "pool0"]),
            inval
        );
    }

    // Transaction id: dm-thin's compare-and-set.
    assert_eq!(
        rpc_err(&d, &["thin_pool_set_transaction_id", "pool0", "5", "6"]),
        inval
    );
    assert_eq!(status(&d)["transaction_id"], 0);
    rpc(&d, &["thin_pool_set_transaction_id", "pool0", "0", "7"]);
    assert_eq!(status(&d)["transaction_id"], 7);

    // Low-water mark: 57 free; at 55 the mark is crossed once two more blocks are written,
    // and re-armed when two blocks come back.
    rpc(&d, &["thin_pool_set_low_water_mark", "pool0", "55"]);
    let st = status(&d);
    assert_eq!(st["low_water_mark"], 55);
    assert_eq!(st["low_water_mark_crossed"], false);
    io.write_block(6, 0xB6);
    assert_eq!(status(&d)["low_water_mark_crossed"], false, "56 free");
    io.write_block(7, 0xB7);
    let st = status(&d);
    assert_eq!(st["used_data_blocks"], 9);
    assert_eq!(st["low_water_mark_crossed"], true, "55 free");
    assert_eq!(st["mode"], "rw");
    io.zero_block(7);
    io.flush();
    let st = status(&d);
    assert_eq!(st["used_data_blocks"], 8);
    assert_eq!(st["low_water_mark_crossed"], false, "re-armed at 56 free");
    io.write_block(7, 0xC7);
    io.flush();
    assert_eq!(status(&d)["low_water_mark_crossed"], true, "crossed again");
    drop(io);

    // The config carries the pool with its volumes.
    let cfg = rpc_json(&d, &["save_subsystem_config", "-n", "bdev"]);
    let entry = cfg["config"]
        .as_array()
        .expect("config")
        .iter()
        .find(|e| e["method"] == "thin_pool_create")
        .unwrap_or_else(|| panic!("no thin_pool_create in {cfg}"))
        .clone();
    assert_eq!(entry["params"]["metadata_bdev"], "Meta");
    assert_eq!(entry["params"]["data_bdev"], "Data");
    assert_eq!(entry["params"]["data_block_size"], DBS_SECTORS);
    assert_eq!(entry["params"]["low_water_mark"], 55);
    let vols = entry["params"]["volumes"].as_array().expect("volumes");
    assert_eq!(vols.len(), 2);
    let full = rpc(&d, &["save_config"]);
    let cfg_path = dir.path().join("config.json");
    std::fs::write(&cfg_path, &full).expect("save config");
    kill(d);

    // The metadata file is dm-thin's: Debian's tools read it.
    let out = debian::thin_check(&meta)
        .expect("Debian thin_check (apt-get install thin-provisioning-tools)");
    assert!(out.success(), "thin_check: {out:?}");
    let xml = debian::thin_dump(&meta).expect("thin_dump");
    let sum = dm_tools::summarize_dump(&xml).expect("dump");
    assert_eq!(sum.transaction, 7);
    assert_eq!(sum.data_block_size, DBS_SECTORS);
    assert_eq!(sum.nr_data_blocks, DATA_BLOCKS);
    let ids: Vec<u64> = sum.devices.keys().copied().collect();
    assert_eq!(ids, [1, 2]);
    let vol0 = &sum.devices[&1];
    let snap0 = &sum.devices[&2];
    assert_eq!(vol0.mapped_blocks_attr, 7);
    assert_eq!(
        vol0.mappings.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 5, 6, 7]
    );
    assert_eq!(snap0.mapped_blocks_attr, 4);
    assert_eq!(
        snap0.mappings.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(
        vol0.mappings[&0], snap0.mappings[&0],
        "block 0 still shared"
    );
    assert_ne!(vol0.mappings[&1], snap0.mappings[&1], "block 1 copied");
    assert_eq!(sum.distinct_data_blocks().len(), 9);
    let bytes = std::fs::read(&meta).expect("read metadata");
    assert_eq!(dm_tools::held_root(&bytes), Ok(held));
    let snap_xml = debian::thin_dump_metadata_snap(&meta).expect("thin_dump --metadata-snap");
    let snap_sum = dm_tools::summarize_dump(&snap_xml).expect("snap dump");
    assert_eq!(
        snap_sum.devices[&1].mapped_blocks_attr, 5,
        "held before blocks 6, 7"
    );
    // The data file holds the written bytes where the mappings say.
    let raw = std::fs::read(&data).expect("read data");
    let at = |b: u64| (b * DBS_SECTORS * 512) as usize;
    assert!(raw[at(vol0.mappings[&1])..at(vol0.mappings[&1]) + 4096]
        .iter()
        .all(|&x| x == 0xA1));
    assert!(raw[at(snap0.mappings[&1])..at(snap0.mappings[&1]) + 4096]
        .iter()
        .all(|&x| x == 0x11));

    // A new daemon: formatting over valid metadata needs force; load_config brings the
    // pool back with its volumes.
    let d = start(dir.path(), "plugin2.sock");
    rpc(&d, &["bdev_aio_create", &s(&meta), "Meta", "4096"]);
    rpc(&d, &["bdev_aio_create", &s(&data), "Data", "4096"]);
    let c = create("pool0", "Meta", "Data", &["--format"]);
    assert_eq!(rpc_err(&d, &args(&c)), (-17, "File exists".into()));
    let c = create("pool0", "Meta", "Data", &["-b", "128"]);
    assert_eq!(
        rpc_err(&d, &args(&c)),
        inval,
        "block size differs from the metadata's"
    );
    rpc(&d, &["bdev_aio_delete", "Meta"]);
    rpc(&d, &["bdev_aio_delete", "Data"]);
    rpc(&d, &["load_config", "-j", &s(&cfg_path)]);
    let st = status(&d);
    assert_eq!(st["uuid"], uuid.as_str());
    assert_eq!(st["transaction_id"], 7);
    assert_eq!(st["used_data_blocks"], 9);
    assert_eq!(st["held_metadata_root"], held);
    assert_eq!(st["low_water_mark"], 55);
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols", "-l", "pool0"]);
    assert_eq!(lvols.as_array().expect("lvols").len(), 2);
    assert_eq!(
        rpc_json(&d, &["thin_delta", "pool0", "snap0", "vol0"]),
        json!([
            {"type": "different", "begin": 1, "length": 2},
            {"type": "right_only", "begin": 5, "length": 3},
        ])
    );
    rpc(&d, &["thin_pool_release_metadata_snap", "pool0"]);
    // Deleting the pool deletes its volumes and gives both bdevs back.
    rpc(&d, &["bdev_lvol_delete_lvstore", "-l", "pool0"]);
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "Meta"]);
    assert_eq!(b[0]["claimed"], false);
    kill(d);
    let xml = debian::thin_dump(&meta).expect("thin_dump after delete");
    assert!(dm_tools::summarize_dump(&xml)
        .expect("dump")
        .devices
        .is_empty());
}

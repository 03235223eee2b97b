//! The daemon's configuration persistence (issue 5), driven by SPDK's own `spdk-rpc`:
//! a scenario built through RPC (aio bdev → lvstore → lvol, snapshot, clone → subsystem,
//! namespaces, listener, host) with data written through our NVMe/TCP initiator survives a
//! SIGTERM and a restart with the same flags (`<data-dir>/config.json` is replayed), and a
//! `save_config` file brings the same objects back in a fresh daemon through `--json`.
//! A bad `--json` entry or malformed JSON stops start-up with a message naming it; a
//! persisted lvol whose thin device vanished is reported and the rest is served.

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{ours, spdk_rpc, ScratchDir};
use nvmf_target::initiator::{Conn, Controller, HostConfig, DEFAULT_HOSTNQN};
use nvmf_target::wire::io::{FlushCommand, IoOpcode, RwCommand};
use nvmf_target::wire::pdu::Digests;
use nvmf_target::wire::sgl::SglDescriptor;
use serde_json::{json, Value};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const DEFAULT_NQN: &str = "nqn.2026-11.io.thin:default";

fn rpc(sock: &Path, args: &[&str]) -> String {
    spdk_rpc::ok(sock, None, args)
}

fn rpc_json(sock: &Path, args: &[&str]) -> Value {
    spdk_rpc::json(sock, None, args)
}

/// A method of ours `spdk-rpc` has no sub-command for, over the raw socket.
fn raw_call(sock: &Path, method: &str) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    s.write_all(req.to_string().as_bytes()).expect("write");
    let buf = spdk_rpc::read_line_bytes(&mut s);
    let v: Value = serde_json::from_slice(&buf).expect("JSON response");
    v["result"].clone()
}

/// Everything the objects look like through the standard getters.
fn snapshot(sock: &Path) -> Value {
    json!({
        "bdevs": rpc_json(sock, &["bdev_get_bdevs"]),
        "lvstores": rpc_json(sock, &["bdev_lvol_get_lvstores"]),
        "lvols": rpc_json(sock, &["bdev_lvol_get_lvols"]),
        "subsystems": rpc_json(sock, &["nvmf_get_subsystems"]),
    })
}

fn start(args: &[&std::ffi::OsStr]) -> ours::Daemon {
    ours::Daemon::start(args)
}

/// One 4 KiB block pattern.
fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// An I/O queue to `nqn` on `port` (the controller is kept alive alongside).
fn connect(port: u16, nqn: &str) -> Result<(Controller, Conn), String> {
    let cfg = HostConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        subnqn: nqn.to_owned(),
        hostnqn: DEFAULT_HOSTNQN.to_owned(),
        digests: Digests::NONE,
    };
    let ctrl = Controller::connect(cfg, 1).map_err(|e| e.to_string())?;
    let io = ctrl.connect_io(1, 32).map_err(|e| e.to_string())?;
    Ok((ctrl, io))
}

fn write_block(io: &mut Conn, nsid: u32, lba: u64, data: &[u8]) {
    let c = RwCommand::new(
        IoOpcode::Write,
        1,
        nsid,
        lba,
        1,
        SglDescriptor::in_capsule(4096),
    );
    io.command_ok("Write", c.to_sqe(), data).expect("write");
    let f = FlushCommand { cid: 2, nsid };
    io.command_ok("Flush", f.to_sqe(), &[]).expect("flush");
}

fn read_block(io: &mut Conn, nsid: u32, lba: u64) -> Vec<u8> {
    let c = RwCommand::new(
        IoOpcode::Read,
        3,
        nsid,
        lba,
        1,
        SglDescriptor::transport(4096),
    );
    io.command_ok("Read", c.to_sqe(), &[]).expect("read").1
}

fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let img = dir.join(name);
    File::create(&img)
        .and_then(|f| f.set_len(bytes))
        .expect("aio image");
    img
}

#[test]
fn restart_and_json_bring_back_every_object_and_the_data() {
    let dir = ScratchDir::new("daemon-config").expect("temp dir");
    let data = dir.path().join("data");
    let sock = dir.path().join("a.sock");
    let img = image(dir.path(), "pool.img", 64 << 20);
    let img_s = img.to_str().expect("utf-8 path");
    let args = [
        "--data-dir".as_ref(),
        data.as_os_str(),
        "-r".as_ref(),
        sock.as_os_str(),
    ];

    // The scenario, built through SPDK's client next to the embedded default pool.
    let d = start(&args);
    let port = d.port.to_string();
    rpc(&sock, &["bdev_aio_create", img_s, "Aio0", "4096"]);
    rpc(
        &sock,
        &["bdev_lvol_create_lvstore", "Aio0", "lvs0", "-c", "1048576"],
    );
    let vol = rpc(&sock, &["bdev_lvol_create", "-l", "lvs0", "-t", "vol", "8"]);
    rpc(&sock, &["bdev_lvol_snapshot", "lvs0/vol", "snap"]);
    let clone = rpc(&sock, &["bdev_lvol_clone", "lvs0/snap", "clone"]);
    rpc(&sock, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(
        &sock,
        &["nvmf_create_subsystem", NQN, "-s", "SPDK00000000000001"],
    );
    rpc(
        &sock,
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
    rpc(&sock, &["nvmf_subsystem_add_ns", NQN, "lvs0/vol"]);
    rpc(&sock, &["nvmf_subsystem_add_ns", NQN, "lvs0/clone"]);
    rpc(&sock, &["nvmf_subsystem_add_host", NQN, DEFAULT_HOSTNQN]);
    let listen_port = d.port;
    {
        let (_c, mut io) = connect(listen_port, NQN).expect("connect to the export");
        write_block(&mut io, 1, 5, &pattern(1));
        write_block(&mut io, 2, 7, &pattern(2));
        assert_eq!(read_block(&mut io, 1, 5), pattern(1));
    }
    let before = snapshot(&sock);
    assert_eq!(before["lvols"].as_array().expect("lvols").len(), 3);
    let cfg_path = data.join("config.json");
    let persisted = std::fs::read_to_string(&cfg_path).expect("config.json written");
    assert!(
        persisted.contains(&clone),
        "the clone's namespace is persisted"
    );
    assert!(
        !persisted.contains(DEFAULT_NQN),
        "the embedded default is not part of config.json"
    );
    d.terminate(20);

    // Restart with the same flags: config.json is replayed.
    let d = start(&args);
    assert_ne!(d.port, listen_port);
    assert_eq!(snapshot(&sock), before, "same objects after a restart");
    {
        let (_c, mut io) = connect(listen_port, NQN).expect("listener restored");
        assert_eq!(read_block(&mut io, 1, 5), pattern(1), "vol data");
        assert_eq!(read_block(&mut io, 2, 7), pattern(2), "clone data");
    }
    {
        // The embedded default still serves its volume, once.
        let (mut c, _io) = connect(d.port, DEFAULT_NQN).expect("default subsystem");
        c.identify_namespace(1).expect("default namespace 1");
    }
    let report = raw_call(&sock, "framework_get_reconcile_report");
    assert_eq!(report["findings"], json!([]), "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("config.json")),
        "{report}"
    );
    let saved = rpc(&sock, &["save_config"]);
    let f_json = dir.path().join("f.json");
    std::fs::write(&f_json, &saved).expect("write f.json");
    d.terminate(20);

    // A fresh daemon on a fresh data folder, from the save_config file.
    let data2 = dir.path().join("data2");
    let sock2 = dir.path().join("b.sock");
    let d = start(&[
        "--data-dir".as_ref(),
        data2.as_os_str(),
        "-r".as_ref(),
        sock2.as_os_str(),
        "--json".as_ref(),
        f_json.as_os_str(),
    ]);
    assert_eq!(snapshot(&sock2), before, "same objects through --json");
    {
        let (_c, mut io) = connect(listen_port, NQN).expect("listener from --json");
        assert_eq!(read_block(&mut io, 1, 5), pattern(1));
        assert_eq!(read_block(&mut io, 2, 7), pattern(2));
    }
    assert!(
        connect(d.port, DEFAULT_NQN).is_err(),
        "--json serves only what the file describes"
    );
    let seeded: Value = serde_json::from_slice(
        &std::fs::read(data2.join("config.json")).expect("config.json seeded"),
    )
    .expect("JSON");
    let saved: Value = serde_json::from_str(&saved).expect("JSON");
    assert_eq!(seeded, saved, "the data folder mirrors what is served");
    // A later change is persisted.
    rpc(&sock2, &["bdev_lvol_rename", "lvs0/clone", "clone2"]);
    rpc(
        &sock2,
        &["nvmf_subsystem_remove_host", NQN, DEFAULT_HOSTNQN],
    );
    let now = std::fs::read_to_string(data2.join("config.json")).expect("read");
    assert!(!now.contains("nvmf_subsystem_add_host"), "{now}");
    assert!(now.contains(&vol), "the vol namespace stays");
    d.terminate(20);
}

/// Runs the daemon to completion (it must fail to start); returns (status, stderr).
fn run_failing(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut child = Command::new(ours::target_bin())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nvmf-target");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let st = child.wait().expect("wait");
    (st.code(), err)
}

#[test]
fn bad_json_entries_and_malformed_files_stop_start_up() {
    let dir = ScratchDir::new("daemon-config-bad").expect("temp dir");
    let data = dir.path().join("data");
    let sock = dir.path().join("s.sock");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        json!({"subsystems": [
            {"subsystem": "nvmf", "config": [
                {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}}]},
            {"subsystem": "bdev", "config": [
                {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535}},
                {"method": "bdev_malloc_create",
                 "params": {"name": "M0", "num_blocks": 16, "block_size": 4096}},
                {"method": "bdev_malloc_create",
                 "params": {"name": "M1", "num_blocks": 16, "block_size": 999}}]}]})
        .to_string(),
    )
    .expect("write");
    let base = [
        "--data-dir".as_ref(),
        data.as_os_str(),
        "-r".as_ref(),
        sock.as_os_str(),
    ];
    let with = |extra: &[&std::ffi::OsStr]| -> Vec<std::ffi::OsString> {
        base.iter().chain(extra).map(|s| s.to_os_string()).collect()
    };
    let args = with(&["-c".as_ref(), bad.as_os_str()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    let (code, err) = run_failing(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bdev[2] bdev_malloc_create") && err.contains("\"M1\""),
        "stderr names the entry:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!data.join("config.json").exists(), "nothing persisted");

    // --json-ignore-init-errors: logged, counted, the rest served.
    let args = with(&[
        "--json".as_ref(),
        bad.as_os_str(),
        "--json-ignore-init-errors".as_ref(),
    ]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    let d = start(&args);
    let report = raw_call(&sock, "framework_get_reconcile_report");
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(
        report["skipped"], 1,
        "bdev_set_options is ignored: {report}"
    );
    assert_eq!(report["findings"][0]["kind"], "entry_failed", "{report}");
    let b = rpc_json(&sock, &["bdev_get_bdevs"]);
    assert_eq!(b.as_array().expect("bdevs").len(), 1, "{b}");
    assert_eq!(b[0]["name"], "M0");
    d.terminate(20);

    // Malformed JSON, and a JSON document of the wrong shape.
    for (text, needle) in [
        ("{\"subsystems\": [", "not valid JSON"),
        ("{\"subsystems\": 5}", "\"subsystems\" is not an array"),
    ] {
        let f = dir.path().join("malformed.json");
        std::fs::write(&f, text).expect("write");
        let args = with(&["--json".as_ref(), f.as_os_str()]);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        let (code, err) = run_failing(&args);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(needle) && err.contains("malformed.json"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // A damaged persisted configuration is not silently ignored either.
    std::fs::write(data.join("config.json"), "{\"subsystems\": [").expect("write");
    let (code, err) = run_failing(&base);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("config.json") && err.contains("move it away"),
        "{err}"
    );
}

#[test]
fn lvol_without_thin_device_is_reported_and_the_rest_served() {
    let dir = ScratchDir::new("daemon-config-missing").expect("temp dir");
    let data = dir.path().join("data");
    let sock = dir.path().join("s.sock");
    let img = image(dir.path(), "pool.img", 32 << 20);
    let img_s = img.to_str().expect("utf-8 path");
    let args = [
        "--data-dir".as_ref(),
        data.as_os_str(),
        "-r".as_ref(),
        sock.as_os_str(),
        "--no-default-pool".as_ref(),
    ];
    let d = start(&args);
    rpc(&sock, &["bdev_aio_create", img_s, "Aio0", "4096"]);
    rpc(
        &sock,
        &["bdev_lvol_create_lvstore", "Aio0", "lvs0", "-c", "1048576"],
    );
    let a = rpc(&sock, &["bdev_lvol_create", "-l", "lvs0", "-t", "a", "4"]);
    let b = rpc(&sock, &["bdev_lvol_create", "-l", "lvs0", "-t", "b", "4"]);
    rpc(&sock, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(&sock, &["nvmf_create_subsystem", NQN, "-a"]);
    rpc(&sock, &["nvmf_subsystem_add_ns", NQN, "lvs0/a"]);
    rpc(&sock, &["nvmf_subsystem_add_ns", NQN, "lvs0/b"]);
    d.terminate(20);

    // The pool loses lvol b's thin device behind the daemon's back: read the lvstore's
    // label on the image, open its dm-thin metadata region and delete the device.
    {
        use nvmf_target::bdev::file::FileBdev;
        use nvmf_target::bdev::lvs;
        use nvmf_target::bdev::thin::{PoolDevices, ThinPool};
        let mut base = FileBdev::open("img", Path::new(img_s), 4096, [0; 16]).expect("image");
        let label = lvs::read(&mut base).expect("lvstore label");
        let side: Value = serde_json::from_slice(&label.table).expect("side table JSON");
        let dev_b = side["lvols"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["uuid"] == b.as_str())
            .and_then(|r| r["dev_id"].as_u64())
            .expect("b's row");
        let pool = ThinPool::open_on(
            PoolDevices {
                meta: Box::new(base),
                meta_region: label.layout.meta_region(),
                data: None,
                data_region: label.layout.data_region(),
            },
            64,
        )
        .expect("open pool");
        pool.with_pool(|p| p.delete(dev_b))
            .expect("delete b's thin device");
    }
    let cfg_before = std::fs::read(data.join("config.json")).expect("config.json");

    let log = dir.path().join("stderr.log");
    let d = ours::Daemon::start_with(&args, Stdio::from(File::create(&log).expect("log")));
    let err = std::fs::read_to_string(&log).expect("read log");
    assert!(
        err.contains("lvol_missing_in_pool lvs0/b"),
        "warning names the lvol:\n{err}"
    );
    assert!(
        err.contains(&format!("namespace_bdev_missing {NQN} nsid 2")),
        "warning names the namespace:\n{err}"
    );
    assert!(err.contains("2 disagreement(s)"), "summary line:\n{err}");
    let report = raw_call(&sock, "framework_get_reconcile_report");
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["namespace_bdev_missing", "lvol_missing_in_pool"],
        "{report}"
    );
    // The rest is served.
    let lvols = rpc_json(&sock, &["bdev_lvol_get_lvols"]);
    assert_eq!(lvols.as_array().expect("lvols").len(), 1);
    assert_eq!(lvols[0]["uuid"], a.as_str());
    let subs = rpc_json(&sock, &["nvmf_get_subsystems", NQN]);
    assert_eq!(
        subs[0]["namespaces"].as_array().expect("namespaces").len(),
        1
    );
    assert_eq!(subs[0]["namespaces"][0]["bdev_name"], a.as_str());
    // Not silently dropped: the file is untouched and a copy kept, until a change.
    assert_eq!(
        std::fs::read(data.join("config.json")).expect("read"),
        cfg_before
    );
    assert_eq!(
        std::fs::read(data.join("config.json.bak")).expect("backup"),
        cfg_before
    );
    rpc(&sock, &["bdev_malloc_create", "-b", "M9", "8", "4096"]);
    let now = std::fs::read_to_string(data.join("config.json")).expect("read");
    assert!(now.contains("M9") && !now.contains(&b), "{now}");
    assert_eq!(
        std::fs::read(data.join("config.json.bak")).expect("backup"),
        cfg_before
    );
    d.terminate(20);
}

/// A cpumask naming a core this process may not run on stops start-up before anything is
/// created, as SPDK refuses such a mask; an empty or malformed mask too.
#[test]
fn cpumask_of_unusable_cores_is_refused() {
    let dir = ScratchDir::new("daemon-cpumask").expect("temp dir");
    let data = dir.path().join("data");
    for (mask, expect) in [
        ("0x8000000000000000", "names cores [63]"),
        ("0", "cpumask must name a core"),
        ("0xzz", "bad cpumask"),
    ] {
        let (code, err) = run_failing(&[
            "--data-dir".as_ref(),
            data.as_os_str(),
            "-m".as_ref(),
            mask.as_ref(),
        ]);
        assert_ne!(code, Some(0), "{mask}: {err}");
        assert!(err.contains(expect), "{mask}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!data.exists(), "{mask}: the data folder was created");
    }
}

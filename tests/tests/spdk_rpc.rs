//! Management through SPDK's own client: the daemon starts empty with `-r <socket>`, and
//! the real `spdk-rpc` CLI (PyPI `spdk`, installed by scripts/setup.sh) builds malloc and aio
//! bdevs, lvstores (thin pools), a thin lvol, a snapshot and a clone, a TCP subsystem with a
//! listener and the clone as namespace; the JSON it prints is parsed and checked; bad
//! parameters get SPDK's error codes and messages (exit status 1); everything is deleted;
//! `spdk_kill_instance` stops the daemon. A raw socket then checks framing: split and
//! concatenated requests, batches, unknown methods, malformed JSON. A third scenario drives
//! real NVMe/TCP I/O with the in-tree initiator and checks `bdev_get_iostat`,
//! `nvmf_subsystem_get_controllers`/`_qpairs` and `nvmf_get_stats` against exact counts.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::spdk_rpc::{self, Daemon};
use e2e_tests::ScratchDir;
use serde_json::{json, Value};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

fn start(dir: &Path) -> Daemon {
    start_at(dir, "spdk.sock")
}

fn start_at(dir: &Path, sock_name: &str) -> Daemon {
    Daemon::start(dir, sock_name, &[])
}

fn rpc(d: &Daemon, args: &[&str]) -> String {
    spdk_rpc::ok(&d.sock, None, args)
}

fn rpc_json(d: &Daemon, args: &[&str]) -> Value {
    spdk_rpc::json(&d.sock, None, args)
}

fn rpc_err(d: &Daemon, args: &[&str]) -> (i64, String) {
    spdk_rpc::err(&d.sock, None, args)
}

fn lvol<'a>(lvols: &'a Value, name: &str) -> &'a Value {
    lvols
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no lvol {name} in {lvols}"))
}

#[test]
fn spdk_rpc_builds_pools_volumes_snapshots_and_exports() {
    let t0 = Instant::now();
    let dir = ScratchDir::new("spdk-rpc").expect("temp dir");
    let d = start(dir.path());
    let mode = std::fs::metadata(&d.sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");

    // App methods.
    let v = rpc_json(&d, &["spdk_get_version"]);
    assert!(v["version"]
        .as_str()
        .expect("version")
        .contains("rust-thin-nvmf"));
    assert!(v["fields"]["major"].is_u64());
    rpc(&d, &["framework_wait_init"]);
    let methods = rpc_json(&d, &["rpc_get_methods"]);
    for m in [
        "bdev_lvol_snapshot",
        "nvmf_subsystem_add_ns",
        "bdev_get_bdevs",
    ] {
        assert!(
            methods.as_array().expect("array").contains(&json!(m)),
            "{m}"
        );
    }

    // Base bdevs.
    assert_eq!(rpc(&d, &["bdev_malloc_create", "64", "4096"]), "Malloc0");
    let img = dir.path().join("aio.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(256 << 20))
        .expect("aio image");
    let img_s = img.to_str().expect("utf-8 path");
    assert_eq!(rpc(&d, &["bdev_aio_create", img_s, "Aio0", "4096"]), "Aio0");
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "Aio0"]);
    assert_eq!(b[0]["product_name"], "AIO disk");
    assert_eq!(b[0]["num_blocks"], 65536);
    assert_eq!(b[0]["driver_specific"]["aio"]["filename"], img_s);

    // Lvstores: SPDK's default 4 MiB clusters on the malloc bdev, 64 KiB on the aio one.
    let lvs0 = rpc(&d, &["bdev_lvol_create_lvstore", "Malloc0", "lvs0"]);
    let lvs1 = rpc(
        &d,
        &["bdev_lvol_create_lvstore", "Aio0", "lvs1", "-c", "65536"],
    );
    let stores = rpc_json(&d, &["bdev_lvol_get_lvstores"]);
    assert_eq!(stores[0]["uuid"], lvs0.as_str());
    assert_eq!(stores[0]["cluster_size"], 4 << 20);
    // 64 MiB less two label copies (2 MiB) and the dm-thin metadata region (8 MiB).
    assert_eq!(stores[0]["total_data_clusters"], 13);
    assert_eq!(stores[1]["uuid"], lvs1.as_str());
    assert_eq!(stores[1]["base_bdev"], "Aio0");
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(b[0]["claimed"], true);
    assert_eq!(b[0]["claim_type"], "exclusive_write");

    // Thin lvol, thick lvol, snapshot, clone.
    let lvol0 = rpc(&d, &["bdev_lvol_create", "-l", "lvs0", "-t", "lvol0", "32"]);
    let thick = rpc(&d, &["bdev_lvol_create", "-l", "lvs1", "thick0", "1"]);
    let s1 = rpc_json(&d, &["bdev_lvol_get_lvstores", "-l", "lvs1"]);
    // 256 MiB less 2 MiB of labels and 8.07 MiB of metadata, rounded up to 11 MiB.
    assert_eq!(s1[0]["total_data_clusters"], (256 - 11) * 16);
    assert_eq!(
        s1[0]["free_clusters"],
        (256 - 11) * 16 - 16,
        "a thick lvol takes its clusters"
    );
    let snap0 = rpc(&d, &["bdev_lvol_snapshot", "lvs0/lvol0", "snap0"]);
    let clone0 = rpc(&d, &["bdev_lvol_clone", "lvs0/snap0", "clone0"]);
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols", "-l", "lvs0"]);
    assert_eq!(lvols.as_array().expect("array").len(), 3);
    let l = lvol(&lvols, "lvol0");
    assert_eq!(l["uuid"], lvol0.as_str());
    assert_eq!(l["alias"], "lvs0/lvol0");
    assert_eq!(l["is_clone"], true);
    assert_eq!(l["is_thin_provisioned"], true);
    let s = lvol(&lvols, "snap0");
    assert_eq!(s["uuid"], snap0.as_str());
    assert_eq!(s["is_snapshot"], true);
    let c = lvol(&lvols, "clone0");
    assert_eq!(c["uuid"], clone0.as_str());
    assert_eq!(c["is_clone"], true);
    assert_eq!(c["lvs"]["name"], "lvs0");
    let thick_l = rpc_json(&d, &["bdev_lvol_get_lvols", "-l", "lvs1"]);
    assert_eq!(lvol(&thick_l, "thick0")["uuid"], thick.as_str());
    assert_eq!(lvol(&thick_l, "thick0")["is_thin_provisioned"], false);
    assert_eq!(lvol(&thick_l, "thick0")["num_allocated_clusters"], 16);
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "lvs0/snap0"]);
    assert_eq!(b[0]["name"], snap0.as_str());
    assert_eq!(b[0]["product_name"], "Logical Volume");
    assert_eq!(b[0]["num_blocks"], 8192);
    assert_eq!(
        b[0]["supported_io_types"]["write"], false,
        "snapshots are read-only"
    );
    let lv = &b[0]["driver_specific"]["lvol"];
    assert_eq!(lv["snapshot"], true);
    assert_eq!(lv["base_bdev"], "Malloc0");
    let clones: Vec<&str> = lv["clones"]
        .as_array()
        .expect("clones")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(clones, ["lvol0", "clone0"]);
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", &clone0]);
    assert_eq!(b[0]["aliases"], json!(["lvs0/clone0"]));
    assert_eq!(b[0]["driver_specific"]["lvol"]["base_snapshot"], "snap0");

    // Export the clone over NVMe/TCP.
    rpc(&d, &["nvmf_create_transport", "-t", "TCP"]);
    let tr = rpc_json(&d, &["nvmf_get_transports"]);
    assert_eq!(tr[0]["trtype"], "TCP");
    rpc(
        &d,
        &[
            "nvmf_create_subsystem",
            NQN,
            "-a",
            "-s",
            "SPDK00000000000001",
            "-d",
            "Thin",
        ],
    );
    let port = d.port.to_string();
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
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "lvs0/clone0"]);
    rpc(
        &d,
        &[
            "nvmf_subsystem_add_host",
            NQN,
            "nqn.2014-08.org.nvmexpress:uuid:host1",
        ],
    );
    let subs = rpc_json(&d, &["nvmf_get_subsystems"]);
    assert_eq!(subs[0]["subtype"], "Discovery");
    let sub = &subs[1];
    assert_eq!(sub["nqn"], NQN);
    assert_eq!(sub["serial_number"], "SPDK00000000000001");
    assert_eq!(
        sub["listen_addresses"],
        json!([{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}])
    );
    assert_eq!(sub["namespaces"][0]["nsid"], 1);
    assert_eq!(sub["namespaces"][0]["bdev_name"], clone0.as_str());
    assert_eq!(sub["namespaces"][0]["uuid"], clone0.as_str());
    assert_eq!(
        sub["hosts"][0]["nqn"],
        "nqn.2014-08.org.nvmexpress:uuid:host1"
    );
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "lvs0/clone0"]);
    assert_eq!(b[0]["claimed"], true);

    // Bad input gets SPDK's codes and messages.
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_snapshot", "lvs0/snap0", "snap1"]),
        (-32602, "Invalid argument".into()),
        "a snapshot cannot be snapshotted"
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_snapshot", "lvs0/nope", "snap1"]),
        (-19, "No such device".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_create", "-l", "lvs0", "-t", "lvol0", "4"]),
        (-17, "File exists".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_clone", "lvs0/snap0", "lvol0"]),
        (-32602, "File exists".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_get_lvstores", "-l", "nope"]),
        (-19, "No such device".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_create_lvstore", "Malloc0", "again"]),
        (-1, "Operation not permitted".into()),
        "the base bdev is claimed"
    );
    assert_eq!(
        rpc_err(&d, &["bdev_malloc_create", "-b", "Malloc0", "8", "4096"]),
        (-17, "File exists".into())
    );
    assert_eq!(
        rpc_err(&d, &["nvmf_subsystem_add_ns", NQN, "Malloc0"]),
        (-32602, "Invalid parameters".into()),
        "an lvstore's base bdev cannot be exported"
    );
    assert_eq!(
        rpc_err(&d, &["nvmf_get_subsystems", "nqn.2016-06.io.spdk:none"]),
        (
            -32602,
            "Subsystem with NQN 'nqn.2016-06.io.spdk:none' not found".into()
        )
    );
    assert_eq!(
        rpc_err(&d, &["nvmf_create_transport", "-t", "TCP"]),
        (-32603, "Transport type 'TCP' already exists".into())
    );
    assert_eq!(
        rpc_err(&d, &["nvmf_create_transport", "-t", "RDMA"]),
        (-32602, "Invalid transport type 'RDMA'".into())
    );
    assert_eq!(
        rpc_err(&d, &["nvmf_create_subsystem", NQN]),
        (-32603, format!("Unable to create subsystem {NQN}"))
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_resize", "lvs0/snap0", "64"]),
        (-32602, "Operation not permitted".into())
    );

    // Resize the exported clone (the namespace follows), then take everything down.
    rpc(&d, &["bdev_lvol_resize", "lvs0/clone0", "48"]);
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "lvs0/clone0"]);
    assert_eq!(b[0]["num_blocks"], 12288);
    rpc(
        &d,
        &[
            "nvmf_subsystem_remove_host",
            NQN,
            "nqn.2014-08.org.nvmexpress:uuid:host1",
        ],
    );
    rpc(&d, &["nvmf_subsystem_remove_ns", NQN, "1"]);
    let subs = rpc_json(&d, &["nvmf_get_subsystems", NQN]);
    assert_eq!(subs[0]["namespaces"], json!([]));
    rpc(&d, &["nvmf_delete_subsystem", NQN]);
    rpc(&d, &["bdev_lvol_delete", "lvs0/snap0"]);
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols", "-l", "lvs0"]);
    assert_eq!(lvol(&lvols, "clone0")["is_clone"], false, "parent deleted");
    rpc(&d, &["bdev_lvol_delete", &clone0]);
    rpc(&d, &["bdev_lvol_delete", "lvs0/lvol0"]);
    let s0 = rpc_json(&d, &["bdev_lvol_get_lvstores", "-l", "lvs0"]);
    assert_eq!(s0[0]["free_clusters"], 13);
    rpc(&d, &["bdev_lvol_delete_lvstore", "-l", "lvs0"]);
    rpc(&d, &["bdev_malloc_delete", "Malloc0"]);
    rpc(&d, &["bdev_aio_delete", "Aio0"]);
    assert_eq!(
        rpc_err(&d, &["bdev_malloc_delete", "Malloc0"]),
        (-19, "No such device".into())
    );
    assert_eq!(rpc_json(&d, &["bdev_get_bdevs"]), json!([]));

    raw_socket_framing(&d.sock);

    rpc(&d, &["spdk_kill_instance", "SIGTERM"]);
    let mut d = d;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = d.inner.child.try_wait().expect("wait") {
            assert!(st.success(), "daemon exit status {st}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.sock.exists(), "socket removed at shutdown");
    eprintln!("spdk_rpc scenario: {:?}", t0.elapsed());
}

/// Reads one response line.
fn read_line(s: &mut UnixStream) -> Value {
    let buf = spdk_rpc::read_line_bytes(s);
    assert!(buf.is_ascii(), "responses are ASCII");
    serde_json::from_slice(&buf).expect("JSON response")
}

fn raw_socket_framing(sock: &Path) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // One request split over several writes, then two requests in one write.
    let req = br#"{"jsonrpc": "2.0", "method": "framework_wait_init", "id": 1}"#;
    s.write_all(&req[..10]).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&req[10..]).expect("write");
    assert_eq!(
        read_line(&mut s),
        json!({"jsonrpc": "2.0", "id": 1, "result": true})
    );
    s.write_all(
        br#"{"jsonrpc":"2.0","method":"nope","id":2}{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":3,"params":{"nam":1}}"#,
    )
    .expect("write");
    assert_eq!(
        read_line(&mut s)["error"],
        json!({"code": -32601, "message": "Method not found"})
    );
    assert_eq!(
        read_line(&mut s)["error"],
        json!({"code": -32603, "message": "spdk_json_decode_object failed"})
    );
    // A batch; a non-ASCII name comes back escaped.
    s.write_all(
        r#"[{"jsonrpc":"2.0","method":"framework_wait_init","id":4},
            {"jsonrpc":"2.0","method":"bdev_get_bdevs","id":5,"params":{"name":"é"}}]"#
            .as_bytes(),
    )
    .expect("write");
    let v = read_line(&mut s);
    assert_eq!(v[0]["result"], true);
    assert_eq!(v[1]["error"]["code"], -19);
    // Malformed JSON: parse error, then the connection closes.
    s.write_all(b"{\"jsonrpc\" 2.0}").expect("write");
    assert_eq!(
        read_line(&mut s),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty());
}

/// Checks an lvstore image: label copies at 0 and 1 MiB (one valid at least), no sibling
/// files, and the metadata region (at 2 MiB, length from the label) passes Debian's
/// `thin_check`.
fn check_lvstore_image(img: &Path, scratch: &Path) {
    let bytes = std::fs::read(img).expect("read image");
    let slot = |i: usize| &bytes[i << 20..(i << 20) + 64];
    let labels: Vec<&[u8]> = (0..2)
        .map(slot)
        .filter(|h| &h[..8] == b"RTNLVS01")
        .collect();
    assert!(!labels.is_empty(), "no lvstore label in {}", img.display());
    let le = |h: &[u8], at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let h = labels[0];
    let (meta_off, meta_len) = (le(h, 24) as usize, le(h, 32) as usize);
    assert_eq!(meta_off, 2 << 20);
    let region = scratch.join("carved.meta");
    std::fs::write(&region, &bytes[meta_off..meta_off + meta_len]).expect("carve");
    let out = e2e_tests::debian::thin_check(&region)
        .expect("Debian thin_check (apt-get install thin-provisioning-tools)");
    assert!(
        out.success(),
        "thin_check on the lvstore's metadata region: {out:?}"
    );
    std::fs::remove_file(&region).expect("remove carved metadata");
    let siblings: Vec<_> = std::fs::read_dir(img.parent().expect("parent"))
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pool.img") && n != "pool.img")
        .collect();
    assert!(siblings.is_empty(), "files beside the image: {siblings:?}");
}

/// Stops the daemon through `spdk_kill_instance` and waits for a clean exit.
fn kill(mut d: Daemon) {
    rpc(&d, &["spdk_kill_instance", "SIGINT"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.inner.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn save_config_and_restart_bring_back_lvstore_lvols_and_exports() {
    let dir = ScratchDir::new("spdk-rpc-restart").expect("temp dir");
    let img = dir.path().join("pool.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(128 << 20))
        .expect("aio image");
    let img_s = img.to_str().expect("utf-8 path");

    let d = start_at(dir.path(), "a.sock");
    rpc(&d, &["bdev_aio_create", img_s, "Aio0", "4096"]);
    let lvs = rpc(
        &d,
        &["bdev_lvol_create_lvstore", "Aio0", "lvs0", "-c", "1048576"],
    );
    let base = rpc(&d, &["bdev_lvol_create", "-l", "lvs0", "-t", "base", "16"]);
    let snap = rpc(&d, &["bdev_lvol_snapshot", "lvs0/base", "snap"]);
    let clone = rpc(&d, &["bdev_lvol_clone", "lvs0/snap", "c0"]);
    rpc(&d, &["bdev_lvol_rename", "lvs0/c0", "clone"]);
    rpc(&d, &["bdev_lvol_rename_lvstore", "lvs0", "pool"]);
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_rename_lvstore", "lvs0", "x"]),
        (-2, "Lvol store lvs0 not found".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_lvol_decouple_parent", "pool/snap"]),
        (-32602, "Invalid argument".into())
    );
    let thick = rpc(&d, &["bdev_lvol_create", "-l", "pool", "-t", "solo", "4"]);
    rpc(&d, &["bdev_lvol_inflate", "pool/solo"]);
    rpc(&d, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(&d, &["nvmf_create_subsystem", NQN, "-a"]);
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "pool/clone"]);
    let cfg = rpc_json(&d, &["save_config"]);
    let bdev_cfg = &cfg["subsystems"][0];
    assert_eq!(bdev_cfg["subsystem"], "bdev");
    assert_eq!(bdev_cfg["config"][0]["method"], "bdev_aio_create");
    assert_eq!(bdev_cfg["config"][0]["params"]["filename"], img_s);
    assert_eq!(bdev_cfg["config"][1]["method"], "bdev_wait_for_examine");
    let nv = cfg["subsystems"][1]["config"]
        .as_array()
        .expect("nvmf config");
    let ns = nv
        .iter()
        .find(|e| e["method"] == "nvmf_subsystem_add_ns")
        .expect("add_ns entry");
    assert_eq!(ns["params"]["namespace"]["bdev_name"], clone.as_str());
    let cfg_path = dir.path().join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
    kill(d);

    // The lvstore is self-describing: two labels, then dm-thin metadata Debian accepts, in
    // the one file; nothing beside it.
    check_lvstore_image(&img, dir.path());

    // A new daemon: load_config replays the config; the aio bdev brings the lvstore back.
    let d = start_at(dir.path(), "b.sock");
    rpc(
        &d,
        &["load_config", "-j", cfg_path.to_str().expect("utf-8")],
    );
    let stores = rpc_json(&d, &["bdev_lvol_get_lvstores"]);
    assert_eq!(stores[0]["uuid"], lvs.as_str());
    assert_eq!(stores[0]["name"], "pool");
    assert_eq!(stores[0]["cluster_size"], 1048576);
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols"]);
    assert_eq!(lvol(&lvols, "base")["uuid"], base.as_str());
    assert_eq!(lvol(&lvols, "base")["is_clone"], true);
    assert_eq!(lvol(&lvols, "snap")["uuid"], snap.as_str());
    assert_eq!(lvol(&lvols, "snap")["is_snapshot"], true);
    assert_eq!(lvol(&lvols, "clone")["uuid"], clone.as_str());
    assert_eq!(lvol(&lvols, "clone")["alias"], "pool/clone");
    let solo = lvol(&lvols, "solo");
    assert_eq!(solo["uuid"], thick.as_str());
    assert_eq!(solo["is_thin_provisioned"], false, "inflated");
    assert_eq!(solo["num_allocated_clusters"], 4);
    let b = rpc_json(&d, &["bdev_get_bdevs", "-b", "pool/snap"]);
    assert_eq!(
        b[0]["supported_io_types"]["write"], false,
        "still read-only"
    );
    let subs = rpc_json(&d, &["nvmf_get_subsystems", NQN]);
    assert_eq!(subs[0]["namespaces"][0]["bdev_name"], clone.as_str());
    // Decouple the clone (metadata only in dm-thin), then it is no clone any more.
    rpc(&d, &["bdev_lvol_decouple_parent", "pool/clone"]);
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols", "-l", "pool"]);
    assert_eq!(lvol(&lvols, "clone")["is_clone"], false);
    kill(d);
}

// ----- statistics: bdev_get_iostat, nvmf_subsystem_get_controllers/_qpairs, nvmf_get_stats -----

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:stats-host";

/// One raw request on a fresh connection; its response.
fn raw_call(sock: &Path, req: &str) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    read_line(&mut s)
}

fn ok_cmd(
    c: &mut nvmf_target::initiator::Conn,
    sqe: nvmf_target::wire::sqe::Sqe,
    data: &[u8],
) -> Vec<u8> {
    let (cqe, out) = c.command(sqe, data).expect("command");
    assert!(cqe.status.is_success(), "{cqe}");
    out
}

fn write_sqe(cid: u16, nsid: u32, slba: u64, blocks: u32, len: u32) -> nvmf_target::wire::sqe::Sqe {
    use nvmf_target::wire::io::{IoOpcode, RwCommand};
    use nvmf_target::wire::sgl::SglDescriptor;
    RwCommand::new(
        IoOpcode::Write,
        cid,
        nsid,
        slba,
        blocks,
        SglDescriptor::in_capsule(len),
    )
    .to_sqe()
}

fn read_sqe(cid: u16, nsid: u32, slba: u64, blocks: u32, len: u32) -> nvmf_target::wire::sqe::Sqe {
    use nvmf_target::wire::io::{IoOpcode, RwCommand};
    use nvmf_target::wire::sgl::SglDescriptor;
    RwCommand::new(
        IoOpcode::Read,
        cid,
        nsid,
        slba,
        blocks,
        SglDescriptor::transport(len),
    )
    .to_sqe()
}

/// Dataset Management (deallocate) of `ranges` (slba, blocks).
fn dsm(c: &mut nvmf_target::initiator::Conn, cid: u16, nsid: u32, ranges: &[(u64, u32)]) {
    use nvmf_target::wire::sgl::SglDescriptor;
    let mut sqe = nvmf_target::wire::sqe::Sqe::new(0x09, cid, nsid);
    sqe.cdw10 = ranges.len() as u32 - 1;
    sqe.cdw11 = 4; // AD
    let mut data = Vec::new();
    for (slba, nlb) in ranges {
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&nlb.to_le_bytes());
        data.extend_from_slice(&slba.to_le_bytes());
    }
    sqe.sgl = SglDescriptor::in_capsule(data.len() as u32);
    ok_cmd(c, sqe, &data);
}

fn iostat_of<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["bdevs"]
        .as_array()
        .expect("bdevs")
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

fn counts(b: &Value) -> [u64; 8] {
    [
        "bytes_read",
        "num_read_ops",
        "bytes_written",
        "num_write_ops",
        "bytes_unmapped",
        "num_unmap_ops",
        "bytes_copied",
        "num_copy_ops",
    ]
    .map(|k| b[k].as_u64().unwrap_or_else(|| panic!("{k} in {b}")))
}

#[test]
fn spdk_rpc_statistics_follow_real_io_and_connections() {
    use nvmf_target::initiator::{Controller, HostConfig};
    let dir = ScratchDir::new("spdk-rpc-stats").expect("temp dir");
    // Two reactors: connections alternate between them (admin → 000, I/O queue 1 → 001,
    // I/O queue 2 → 000), and the statistics say so per poll group.
    let d = Daemon::start(dir.path(), "spdk.sock", &["-m".as_ref(), "0x3".as_ref()]);
    let port = d.port.to_string();

    // Stat0: 16 MiB of 512-byte blocks, exported as NSID 1; an lvol as NSID 2.
    assert_eq!(
        rpc(&d, &["bdev_malloc_create", "-b", "Stat0", "16", "512"]),
        "Stat0"
    );
    rpc(&d, &["bdev_malloc_create", "-b", "Base1", "32", "4096"]);
    rpc(&d, &["bdev_lvol_create_lvstore", "Base1", "lvs0"]);
    let lvol = rpc(&d, &["bdev_lvol_create", "-l", "lvs0", "-t", "vol0", "8"]);
    let s = rpc_json(&d, &["bdev_get_iostat", "--names", "Stat0"]);
    assert_eq!(s["tick_rate"], 1_000_000_000u64);
    assert!(s["ticks"].as_u64().expect("ticks") > 0);
    let b = iostat_of(&s, "Stat0");
    assert_eq!(counts(b), [0; 8]);
    for k in ["read", "write", "unmap", "copy"] {
        for m in ["", "max_", "min_"] {
            assert_eq!(b[format!("{m}{k}_latency_ticks")], 0, "{m}{k} in {b}");
        }
    }
    let all = rpc_json(&d, &["bdev_get_iostat"]);
    let names: Vec<&str> = all["bdevs"]
        .as_array()
        .expect("bdevs")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, ["Stat0", "Base1", lvol.as_str()]);

    rpc(&d, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(&d, &["nvmf_create_subsystem", NQN, "-a"]);
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
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "Stat0"]);
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "lvs0/vol0"]);
    assert_eq!(
        rpc_json(&d, &["nvmf_subsystem_get_controllers", NQN]),
        json!([])
    );
    assert_eq!(rpc_json(&d, &["nvmf_subsystem_get_qpairs", NQN]), json!([]));
    let st = rpc_json(&d, &["nvmf_get_stats"]);
    assert_eq!(st["tick_rate"], 1_000_000_000u64);
    let pgs = st["poll_groups"].as_array().expect("poll groups");
    assert_eq!(pgs.len(), 2, "one poll group per reactor: {st}");
    for (i, pg) in pgs.iter().enumerate() {
        assert_eq!(pg["name"], format!("nvmf_tgt_poll_group_00{i}"));
        assert_eq!(
            [
                &pg["admin_qpairs"],
                &pg["io_qpairs"],
                &pg["completed_nvme_io"]
            ],
            [0, 0, 0]
        );
        assert_eq!(pg["transports"], json!([{"trtype": "TCP"}]));
    }

    // A host: admin queue + 2 I/O queues.
    let cfg = HostConfig {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        subnqn: NQN.into(),
        hostnqn: HOST.into(),
        digests: Default::default(),
    };
    let ctrl = Controller::connect(cfg, 2).expect("connect admin");
    let mut q1 = ctrl.connect_io(1, 32).expect("I/O queue 1");
    let mut q2 = ctrl.connect_io(2, 32).expect("I/O queue 2");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    // 5 writes of 4 KiB on queue 1, 2 writes of 2 KiB on queue 2.
    for i in 0..5u16 {
        ok_cmd(
            &mut q1,
            write_sqe(i, 1, u64::from(i) * 8, 8, 4096),
            &pattern,
        );
    }
    for i in 0..2u16 {
        ok_cmd(
            &mut q2,
            write_sqe(i, 1, 100 + u64::from(i) * 4, 4, 2048),
            &pattern[..2048],
        );
    }
    // 3 reads of 1 KiB and 1 of 4 KiB (the data comes back).
    for i in 0..3u16 {
        let back = ok_cmd(&mut q1, read_sqe(10 + i, 1, 8, 2, 1024), &[]);
        assert_eq!(back, pattern[..1024]);
    }
    assert_eq!(ok_cmd(&mut q2, read_sqe(10, 1, 0, 8, 4096), &[]), pattern);
    // Deallocate two ranges (8 + 16 blocks): two unmaps.
    dsm(&mut q1, 20, 1, &[(0, 8), (200, 16)]);
    // A read beyond the end fails: not counted as I/O, but a completed command.
    let (cqe, _) = q1
        .command(read_sqe(21, 1, 32767, 2, 1024), &[])
        .expect("command");
    assert!(!cqe.status.is_success());
    // One 4 KiB write to the lvol.
    ok_cmd(&mut q2, write_sqe(30, 2, 0, 1, 4096), &pattern);
    // Queue 1 (poll group 001): 5 writes, 3 reads, 1 deallocate, 1 failed read; queue 2
    // (poll group 000): 2 writes, 1 read, 1 write to the lvol.
    let (on_q1, on_q2) = (5 + 3 + 1 + 1, 2 + 1 + 1);

    let s = rpc_json(&d, &["bdev_get_iostat", "--names", "Stat0"]);
    let b = iostat_of(&s, "Stat0");
    let expect = [
        3 * 1024 + 4096,
        4,
        5 * 4096 + 2 * 2048,
        7,
        24 * 512,
        2,
        0,
        0,
    ];
    assert_eq!(counts(b), expect, "{b}");
    for k in ["read", "write", "unmap"] {
        let (sum, max, min) = (
            b[format!("{k}_latency_ticks")].as_u64().expect("sum"),
            b[format!("max_{k}_latency_ticks")].as_u64().expect("max"),
            b[format!("min_{k}_latency_ticks")].as_u64().expect("min"),
        );
        assert!(max > 0 && min <= max && max <= sum, "{k}: {b}");
    }
    let v = rpc_json(
        &d,
        &["bdev_get_iostat", "--names", &format!("Stat0,{lvol}")],
    );
    assert_eq!(counts(iostat_of(&v, &lvol)), [0, 0, 4096, 1, 0, 0, 0, 0]);
    // The lvstore's base bdev counts what its pool did through it: the lvol's first
    // write provisioned a cluster (written whole), plus metadata and label writes.
    let v = rpc_json(&d, &["bdev_get_iostat", "--names", "Base1"]);
    let base = iostat_of(&v, "Base1");
    assert!(
        base["bytes_written"].as_u64().expect("bytes") >= 4 << 20,
        "base counters miss the pool's I/O: {base}"
    );
    let pc = rpc_json(&d, &["bdev_get_iostat", "-c", "--names", "Stat0"]);
    assert_eq!(pc["name"], "Stat0");
    assert_eq!(pc["channels"][0]["thread_id"], 1);
    assert_eq!(counts(&pc["channels"][0]), expect);

    let c = rpc_json(&d, &["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(
        c,
        json!([{"cntlid": ctrl.cntlid, "cntrltype": "io", "hostnqn": HOST,
                "hostid": "6e766d66-2d70-6572-662d-686f73742d30", "num_io_qpairs": 3}]),
        "SPDK counts the admin queue in num_io_qpairs"
    );
    let qp = rpc_json(&d, &["nvmf_subsystem_get_qpairs", NQN]);
    let qp = qp.as_array().expect("qpairs");
    assert_eq!(qp.len(), 3, "1 admin + 2 I/O: {qp:?}");
    for (i, q) in qp.iter().enumerate() {
        assert_eq!(q["cntlid"], ctrl.cntlid);
        assert_eq!(q["qid"], i);
        assert_eq!(q["state"], "enabled");
        let group = if i == 1 { 1 } else { 0 };
        assert_eq!(q["thread"], format!("nvmf_tgt_poll_group_00{group}"));
        assert_eq!(q["hostnqn"], HOST);
        assert_eq!(
            q["listen_address"],
            json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port})
        );
        assert_eq!(q["peer_address"]["traddr"], "127.0.0.1");
        assert_ne!(q["peer_address"]["trsvcid"], port.as_str());
    }
    let st = rpc_json(&d, &["nvmf_get_stats"]);
    let pg = |i: usize| {
        let pg = &st["poll_groups"][i];
        [
            &pg["admin_qpairs"],
            &pg["io_qpairs"],
            &pg["current_admin_qpairs"],
            &pg["current_io_qpairs"],
            &pg["pending_bdev_io"],
            &pg["completed_nvme_io"],
        ]
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("counter in {st}")))
    };
    assert_eq!(pg(0), [1, 1, 1, 1, 0, on_q2], "{st}");
    assert_eq!(pg(1), [0, 1, 0, 1, 0, on_q1], "{st}");

    // Both reactors, as SPDK lists them; each did work (its queues' commands).
    let r = rpc_json(&d, &["framework_get_reactors"]);
    assert_eq!(r["tick_rate"], 1_000_000_000u64);
    let rs = r["reactors"].as_array().expect("reactors");
    assert_eq!(rs.len(), 2, "{r}");
    for (i, x) in rs.iter().enumerate() {
        assert_eq!(x["lcore"], i, "{r}");
        assert!(x["tid"].as_u64().expect("tid") > 0, "{r}");
        assert!(x["busy"].as_u64().expect("busy") > 0, "{r}");
        assert_eq!(x["in_interrupt"], true, "adaptive by default: {r}");
        let names: Vec<&str> = x["lw_threads"]
            .as_array()
            .expect("threads")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        let group = format!("nvmf_tgt_poll_group_00{i}");
        if i == 0 {
            assert_eq!(names, ["app_thread", group.as_str()], "{r}");
        } else {
            assert_eq!(names, [group.as_str()], "{r}");
        }
    }

    // Disconnect: the controller and its queues go away, the totals stay.
    drop((q1, q2, ctrl));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rpc_json(&d, &["nvmf_subsystem_get_controllers", NQN]) != json!([]) {
        assert!(Instant::now() < deadline, "controller still listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rpc_json(&d, &["nvmf_subsystem_get_qpairs", NQN]), json!([]));
    let st = rpc_json(&d, &["nvmf_get_stats"]);
    let pg = |i: usize| {
        let pg = &st["poll_groups"][i];
        [
            &pg["admin_qpairs"],
            &pg["io_qpairs"],
            &pg["current_admin_qpairs"],
            &pg["current_io_qpairs"],
        ]
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("counter in {st}")))
    };
    assert_eq!(pg(0), [1, 1, 0, 0], "{st}");
    assert_eq!(pg(1), [0, 1, 0, 0], "{st}");

    // The counters stay with the bdevs when the namespaces go; reset-mode clears them.
    rpc(&d, &["nvmf_subsystem_remove_ns", NQN, "1"]);
    rpc(&d, &["nvmf_subsystem_remove_ns", NQN, "2"]);
    let s = rpc_json(
        &d,
        &["bdev_get_iostat", "--names", "Stat0", "--reset-mode", "all"],
    );
    assert_eq!(counts(iostat_of(&s, "Stat0")), expect);
    let s = rpc_json(&d, &["bdev_get_iostat", "--names", "Stat0,lvs0/vol0"]);
    assert_eq!(counts(iostat_of(&s, "Stat0")), [0; 8], "reset");
    assert_eq!(counts(iostat_of(&s, &lvol)), [0, 0, 4096, 1, 0, 0, 0, 0]);

    // Errors, with SPDK's codes.
    assert_eq!(
        rpc_err(&d, &["bdev_get_iostat", "--names", "nope"]),
        (-19, "No such device".into())
    );
    assert_eq!(
        rpc_err(&d, &["bdev_get_iostat", "-c"]),
        (-22, "Invalid argument".into()),
        "per channel needs exactly one bdev"
    );
    let none = "nqn.2016-06.io.spdk:none";
    for m in [
        "nvmf_subsystem_get_controllers",
        "nvmf_subsystem_get_qpairs",
    ] {
        assert_eq!(
            rpc_err(&d, &[m, none]),
            (-32602, format!("Subsystem with NQN '{none}' not found"))
        );
    }
    assert_eq!(
        rpc_err(&d, &["nvmf_get_stats", "-t", "other"]),
        (-32603, "Unable to find a target.".into())
    );
    let err = |req: &str| raw_call(&d.sock, req)["error"].clone();
    assert_eq!(
        err(r#"{"jsonrpc":"2.0","method":"bdev_get_iostat","id":1,"params":{"names":"Stat0"}}"#),
        json!({"code": -32603, "message": "spdk_json_decode_object failed"})
    );
    assert_eq!(
        err(r#"{"jsonrpc":"2.0","method":"bdev_get_iostat","id":1,"params":{"per_channel":1}}"#),
        json!({"code": -32603, "message": "spdk_json_decode_object failed"})
    );
    assert_eq!(
        err(r#"{"jsonrpc":"2.0","method":"nvmf_subsystem_get_qpairs","id":1,"params":{"nqn":5}}"#),
        json!({"code": -32602, "message": "Invalid parameters"})
    );
    assert_eq!(
        err(r#"{"jsonrpc":"2.0","method":"nvmf_subsystem_get_controllers","id":1}"#),
        json!({"code": -32602, "message": "Invalid parameters"})
    );
    assert_eq!(
        err(r#"{"jsonrpc":"2.0","method":"nvmf_get_stats","id":1,"params":{"bogus":true}}"#),
        json!({"code": -32602, "message": "Invalid parameters"})
    );
    let methods = rpc_json(&d, &["rpc_get_methods"]);
    for m in [
        "bdev_get_iostat",
        "nvmf_subsystem_get_controllers",
        "nvmf_subsystem_get_qpairs",
        "nvmf_get_stats",
    ] {
        assert!(
            methods.as_array().expect("array").contains(&json!(m)),
            "{m}"
        );
    }
    kill(d);
}

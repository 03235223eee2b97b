//! An export built entirely through SPDK's `spdk-rpc` serves the Linux NVMe/TCP host: an aio
//! bdev → lvstore → thin lvol exported as namespace 1; the guest writes a pattern; a
//! snapshot and a writable clone of it are made through RPC and the clone is added as
//! namespace 2; a second guest reads the pattern from both, overwrites the clone, and the
//! origin keeps its data (copy-on-write through dm-thin block sharing). Then the daemon
//! stops (SIGTERM) and starts again on the same data folder with no other configuration: its
//! persisted config and the lvstore label bring back the bdev, lvstore, lvols, subsystem,
//! namespaces and listener, and a third guest reads both volumes' data back.

use std::path::Path;
use std::time::Duration;

use e2e_tests::qemu::Guest;
use e2e_tests::spdk_rpc::{self, Daemon};
use e2e_tests::ScratchDir;
use serde_json::Value;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

/// The daemon keeps its configuration in `dir/data`, so a restart finds it.
fn start_at(dir: &Path, sock_name: &str) -> Daemon {
    let data = dir.join("data");
    Daemon::start(dir, sock_name, &["--data-dir".as_ref(), data.as_os_str()])
}

fn rpc(d: &Daemon, args: &[&str]) -> String {
    spdk_rpc::ok(&d.sock, None, args)
}

fn rpc_json(d: &Daemon, args: &[&str]) -> Value {
    spdk_rpc::json(&d.sock, None, args)
}

fn connect(port: u16) -> String {
    format!(
        "set -e\nnvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}\n\
         i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 2; sleep 0.1; done\n\
         awk 'BEGIN {{ for (i = 0; i < 32768; i++) printf \"%063d\\n\", i }}' > pat\n\
         tr 0 7 < pat > pat2\n"
    )
}

#[test]
fn linux_host_reads_and_writes_volumes_exported_through_spdk_rpc() {
    let dir = ScratchDir::new("spdk-rpc-linux").expect("temp dir");
    let img = dir.path().join("pool.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(256 << 20))
        .expect("aio image");
    let d = start_at(dir.path(), "t.sock");
    rpc(
        &d,
        &[
            "bdev_aio_create",
            img.to_str().expect("utf-8"),
            "Aio0",
            "4096",
        ],
    );
    rpc(
        &d,
        &["bdev_lvol_create_lvstore", "Aio0", "lvs0", "-c", "65536"],
    );
    rpc(&d, &["bdev_lvol_create", "-l", "lvs0", "-t", "vol", "64"]);
    rpc(&d, &["nvmf_create_transport", "-t", "TCP"]);
    rpc(&d, &["nvmf_create_subsystem", NQN, "-a", "-s", "THIN0001"]);
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
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "lvs0/vol"]);

    let first = format!(
        "{}\
         dd if=pat of=/dev/nvme0n1 bs=1M count=2 oflag=direct 2>/dev/null\n\
         nvme flush /dev/nvme0n1 -n 1\n\
         nvme disconnect -n {NQN}\n\
         echo first-done\n",
        connect(d.port)
    );
    let run = Guest::new()
        .network(true)
        .script(first)
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    run.assert_success();
    assert!(run.stdout.contains("first-done"), "{}", run.report());
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols"]);
    assert_eq!(
        lvols[0]["num_allocated_clusters"], 32,
        "2 MiB in 64 KiB clusters"
    );

    rpc(&d, &["bdev_lvol_snapshot", "lvs0/vol", "snap"]);
    rpc(&d, &["bdev_lvol_clone", "lvs0/snap", "clone"]);
    rpc(&d, &["nvmf_subsystem_add_ns", NQN, "lvs0/clone"]);

    let second = format!(
        "{}\
         i=0; while [ ! -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1; done\n\
         dd if=/dev/nvme0n1 of=a bs=1M count=2 iflag=direct 2>/dev/null; cmp pat a\n\
         dd if=/dev/nvme0n2 of=b bs=1M count=2 iflag=direct 2>/dev/null; cmp pat b\n\
         dd if=pat2 of=/dev/nvme0n2 bs=4k seek=3 count=100 oflag=direct 2>/dev/null\n\
         nvme flush /dev/nvme0n2 -n 2\n\
         dd if=/dev/nvme0n1 of=a bs=1M count=2 iflag=direct 2>/dev/null; cmp pat a\n\
         dd if=/dev/nvme0n2 of=c bs=4k skip=3 count=100 iflag=direct 2>/dev/null\n\
         head -c 409600 pat2 | cmp - c\n\
         nvme disconnect -n {NQN}\n\
         echo second-done\n",
        connect(d.port)
    );
    let run = Guest::new()
        .network(true)
        .script(second)
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    run.assert_success();
    assert!(run.stdout.contains("second-done"), "{}", run.report());
    let lvols = rpc_json(&d, &["bdev_lvol_get_lvols"]);
    let clone = lvols
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["name"] == "clone")
        .expect("clone");
    assert!(clone["num_allocated_clusters"].as_u64().expect("count") >= 7);
    let before = rpc_json(&d, &["bdev_lvol_get_lvols"]);
    d.inner.terminate(30);

    // Restart on the same data folder: everything comes back by itself, on the old port.
    let d2 = start_at(dir.path(), "t2.sock");
    let after = rpc_json(&d2, &["bdev_lvol_get_lvols"]);
    assert_eq!(after, before, "lvols after the restart");
    let subs = rpc_json(&d2, &["nvmf_get_subsystems", NQN]);
    assert_eq!(subs[0]["namespaces"].as_array().map(Vec::len), Some(2));
    assert_eq!(subs[0]["listen_addresses"][0]["trsvcid"], port.as_str());
    let third = format!(
        "{}\
         i=0; while [ ! -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1; done\n\
         dd if=/dev/nvme0n1 of=a bs=1M count=2 iflag=direct 2>/dev/null; cmp pat a\n\
         dd if=/dev/nvme0n2 of=c bs=4k skip=3 count=100 iflag=direct 2>/dev/null\n\
         head -c 409600 pat2 | cmp - c\n\
         dd if=/dev/nvme0n2 of=b bs=4k count=3 iflag=direct 2>/dev/null\n\
         head -c 12288 pat | cmp - b\n\
         nvme disconnect -n {NQN}\n\
         echo third-done\n",
        connect(d.port)
    );
    let run = Guest::new()
        .network(true)
        .script(third)
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    run.assert_success();
    assert!(run.stdout.contains("third-done"), "{}", run.report());
    rpc(&d2, &["spdk_kill_instance", "SIGTERM"]);
}

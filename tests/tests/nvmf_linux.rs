//! The Linux kernel's NVMe/TCP host against our target: the target runs in this process on
//! 127.0.0.1 with a malloc namespace, the guest (QEMU, user networking) reaches it as
//! 10.0.2.2 and runs nvme-cli discover/connect/list/id-ctrl/id-ns, O_DIRECT dd writes (large
//! enough for R2T + H2CData) and reads, blkdiscard, flush and disconnect. Then the test reads
//! what the target holds and compares it with what the guest wrote. The target runs two
//! reactors, so the guest's queues are spread over both.

use std::time::Duration;

use e2e_tests::qemu::Guest;
use nvmf_target::bdev::malloc::Malloc;
use nvmf_target::{SubsystemConfig, Target, TargetConfig};

const NQN: &str = "nqn.2016-06.io.spdk:e2e-malloc";
const DENIED_NQN: &str = "nqn.2016-06.io.spdk:e2e-denied";
/// The guest image's fixed host NQN (tests/src/guest_image.rs).
const GUEST_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c3e0a-5b7d-4c2e-9a41-0e2e7e570001";
const BLOCK: u32 = 512;
const SIZE: u64 = 64 << 20;
/// The pattern: 64-byte lines "%063d\n", 4 MiB, written at 1 MiB.
const PATTERN_OFF: u64 = 1 << 20;
const PATTERN_LEN: usize = 4 << 20;
/// A 1 MiB range inside the pattern that the guest discards.
const DISCARD_OFF: u64 = 2 << 20;
const DISCARD_LEN: usize = 1 << 20;

fn pattern() -> Vec<u8> {
    let mut v = Vec::with_capacity(PATTERN_LEN);
    for i in 0..PATTERN_LEN / 64 {
        v.extend_from_slice(format!("{i:063}\n").as_bytes());
    }
    v
}

fn script(port: u16) -> String {
    format!(
        r#"
set -e
A=10.0.2.2; P={port}; NQN={NQN}
echo "== discover"
nvme discover -t tcp -a $A -s $P
echo "== denied"
if nvme connect -t tcp -a $A -s $P -n {DENIED_NQN} 2>/dev/null; then echo "denied host connected"; exit 1; fi
echo "== connect"
nvme connect -t tcp -a $A -s $P -n $NQN
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 2; sleep 0.1; done
D=/dev/nvme0n1
echo "== list"; nvme list
echo "== id-ctrl"; nvme id-ctrl /dev/nvme0 | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|oncs|vwc|sgls|subnqn|ioccsz|kas|nn) '
echo "== id-ns"; nvme id-ns $D | grep -E '^(nsze|ncap|nuse|nsfeat|dlfeat|lbaf  0) '
echo "== size $(cat /sys/block/nvme0n1/size)"
awk 'BEGIN {{ for (i = 0; i < 65536; i++) printf "%063d\n", i }}' > pat
echo "== write"
dd if=pat of=$D bs=1M seek=1 count=4 oflag=direct 2>&1
echo "== read"
dd if=$D of=back bs=1M skip=1 count=4 iflag=direct 2>&1
cmp pat back
echo "== read-back ok"
echo "== unaligned small writes (in-capsule)"
dd if=pat of=$D bs=4k count=16 seek=4096 oflag=direct 2>&1
dd if=$D of=back2 bs=4k count=16 skip=4096 iflag=direct 2>&1
head -c 65536 pat | cmp - back2
echo "== discard"
blkdiscard -o {DISCARD_OFF} -l {DISCARD_LEN} $D
n=$(dd if=$D bs=1M skip=2 count=1 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
echo "nonzero bytes after discard: $n"; [ "$n" -eq 0 ]
echo "== flush"; nvme flush $D -n 1
echo "== smart-log"; nvme smart-log /dev/nvme0 | grep -E '^(temperature|host_write_commands|host_read_commands)'
echo "== throughput (1 MiB O_DIRECT dd, guest under TCG)"
up() {{ cut -d' ' -f1 /proc/uptime; }}
t0=$(up); dd if=/dev/zero of=$D bs=1M count=32 seek=32 oflag=direct 2>/dev/null; t1=$(up)
awk -v a=$t0 -v b=$t1 'BEGIN {{ printf "write 32 MiB: %.2f s, %.0f MiB/s\n", b - a, 32 / (b - a + 0.005) }}'
t0=$(up); dd if=$D of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null; t1=$(up)
awk -v a=$t0 -v b=$t1 'BEGIN {{ printf "read 64 MiB: %.2f s, %.0f MiB/s\n", b - a, 64 / (b - a + 0.005) }}'
echo "== disconnect"; nvme disconnect -n $NQN
echo "== digests"
nvme connect -t tcp -a $A -s $P -n $NQN -g -G
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1; done
dd if=/dev/nvme0n1 of=back3 bs=1M skip=1 count=1 iflag=direct 2>&1 | tail -1
head -c 1048576 pat | cmp - back3
dd if=pat of=/dev/nvme0n1 bs=1M count=1 seek=8 oflag=direct 2>&1 | tail -1
nvme disconnect -n $NQN
echo "== done"
"#
    )
}

#[test]
fn linux_initiator_against_our_target() {
    // Two reactors: the guest's connections (discovery, admin, I/O queues) alternate
    // between them, so its commands are served both on the owner reactor and forwarded
    // from the other one.
    let mut target = Target::new(TargetConfig {
        cpumask: 0x3,
        ..TargetConfig::default()
    });
    target
        .add_subsystem(
            SubsystemConfig::new(NQN)
                .serial("E2E0001")
                .allow_any_host(false)
                .host(GUEST_HOSTNQN),
        )
        .expect("subsystem");
    target
        .add_subsystem(
            SubsystemConfig::new(DENIED_NQN)
                .allow_any_host(false)
                .host("nqn.2014-08.org.nvmexpress:uuid:someone-else"),
        )
        .expect("subsystem");
    let bdev = Malloc::new("malloc0", SIZE / u64::from(BLOCK), BLOCK, [0x5a; 16]).expect("malloc");
    target
        .add_namespace(NQN, 1, Box::new(bdev))
        .expect("namespace");
    let addr = target.listen("127.0.0.1:0").expect("listen");
    let handle = target.spawn().expect("target runs");

    let run = Guest::new()
        .network(true)
        .script(script(addr.port()))
        .timeout(Duration::from_secs(150))
        .run()
        .expect("guest runs");
    eprintln!("{}", run.stdout);
    eprintln!(
        "guest boot {:.1?}, whole run {:.1?}",
        run.boot_time, run.total_time
    );
    run.assert_success();
    for needle in [
        "subtype: nvme subsystem",
        NQN,
        "== read-back ok",
        "nonzero bytes after discard: 0",
        "== done",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?}\n{}",
            run.report()
        );
    }

    // What the target holds: the pattern, with the discarded MiB reading as zeroes.
    let mut held = vec![0u8; PATTERN_LEN];
    let mut held_buf = std::mem::take(&mut held);
    held = handle
        .with_state(move |s| {
            let b = s.namespace_bdev_mut(NQN, 1).expect("namespace 1");
            b.read(PATTERN_OFF / u64::from(BLOCK), &mut held_buf)
                .expect("read");
            held_buf
        })
        .expect("reactor answers");
    let mut expected = pattern();
    let d = (DISCARD_OFF - PATTERN_OFF) as usize;
    // The guest rewrote the first MiB of the pattern's start at 8 MiB only; the 1 MiB at
    // 2 MiB was discarded.
    expected[d..d + DISCARD_LEN].fill(0);
    assert!(
        held == expected,
        "target data differs from what the guest wrote"
    );
    let state = handle.stop().expect("target stops");
    assert_eq!(
        state.controller_count(),
        0,
        "controllers left after disconnect"
    );
    // Both reactors served queues of the guest.
    let groups = state.poll_group_stats();
    eprintln!("poll groups: {groups:?}");
    assert_eq!(groups.len(), 2);
    for (i, g) in groups.iter().enumerate() {
        assert!(
            g.admin_qpairs + g.io_qpairs > 0,
            "reactor {i} served no queue: {groups:?}"
        );
    }
    assert!(
        groups.iter().map(|g| g.completed_nvme_io).sum::<u64>() > 0,
        "{groups:?}"
    );
}

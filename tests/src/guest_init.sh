#!/bin/busybox sh
# /init of the e2e-tests guest (built by tests/src/guest_image.rs; edits here change the recipe
# hash, so the next test run rebuilds the image).
#
# Contract with tests/src/qemu.rs:
#   * the test script arrives as fw_cfg file opt/e2e/script;
#   * its stdout goes to the console (ttyS0) between the BEGIN and END markers, the END marker
#     carries the exit code; its stderr goes to the second serial port (ttyS1);
#   * kernel messages are kept off the console while the script runs; on a non-zero exit the
#     tail of dmesg follows the END marker;
#   * disks are also reachable as /dev/disk/by-serial/<serial>;
#   * eth0 is 10.0.2.15/24 with no default route: the guest reaches only QEMU's user network
#     (10.0.2.2 is the host's 127.0.0.1), nothing beyond it.
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
export DM_DISABLE_UDEV=1
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/disk/by-serial /tmp /run /root /var/tmp

release=$(uname -r)
while read -r mod; do
    insmod "/lib/modules/$release/$mod" || echo "guest-init: insmod $mod failed"
done < /etc/e2e/modules

ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
fi

for d in /sys/block/vd*; do
    [ -e "$d/serial" ] || continue
    serial=$(cat "$d/serial")
    [ -n "$serial" ] && ln -sf "/dev/${d##*/}" "/dev/disk/by-serial/$serial"
done

err=/dev/console
[ -c /dev/ttyS1 ] && err=/dev/ttyS1

script=/sys/firmware/qemu_fw_cfg/by_name/opt/e2e/script/raw
echo 1 > /proc/sys/kernel/printk
echo "===E2E-SCRIPT-BEGIN==="
if [ -r "$script" ]; then
    cat "$script" > /script
    cd /tmp
    sh /script < /dev/null 2> "$err"
    rc=$?
    cd /
else
    echo "guest-init: no script at $script" > "$err"
    rc=127
fi
sync
printf '\n===E2E-SCRIPT-END rc=%d===\n' "$rc"
if [ "$rc" -ne 0 ]; then
    echo "===E2E-DMESG-TAIL==="
    dmesg | tail -n 40
fi
echo "===E2E-POWEROFF==="
poweroff -f

#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root, or with sudo
# available). Idempotent: packages and targets already present are skipped.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: not root and no sudo; install by hand: apt-get install $*" >&2
  fi
fi

# qemu-system-x86: the guest tests boot Linux under TCG, and the x86_64 firmware board (microvm);
# qemu-system-misc: the riscv64 firmware board (virt); xz-utils: unpacks the guest kernel;
# gcc-s390x-linux-gnu, libc6-dev-s390x-cross, qemu-user: thin-core's big-endian test run.
APT_PACKAGES=(thin-provisioning-tools qemu-system-x86 qemu-system-misc xz-utils gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-user)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Bare-metal targets: thin-core's no_std build and the firmware boards (boards/); s390x:
# thin-core's tests on a big-endian machine (under qemu-user).
RUST_TARGETS=(x86_64-unknown-none riscv64gc-unknown-none-elf s390x-unknown-linux-gnu)
installed=$(rustup target list --installed)
for t in "${RUST_TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# cargo-fuzz for the fuzz smoke runs (fuzz/); it builds with the stable toolchain.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

# SPDK's JSON-RPC client (`spdk-rpc`), the real peer of the management tests (tests/tests/spdk_rpc.rs).
if ! command -v spdk-rpc >/dev/null 2>&1; then
  echo "setup: python3 -m pip install spdk"
  python3 -m pip install --quiet spdk
fi

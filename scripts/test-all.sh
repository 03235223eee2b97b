#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every check and test
# (format, lint, no_std build, unit/property/compatibility tests, QEMU end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "set-up (apt, rustup targets)"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "thin-core builds for bare metal (no_std)"
cargo build -p thin-core --target x86_64-unknown-none

step "firmware: cargo fmt + clippy -D warnings (bare-metal targets, own workspace)"
(
  cd virtio-test
  cargo fmt --all -- --check
  cargo clippy --release -j1 --target-dir ../target/firmware --target x86_64-unknown-none \
    -p virtio-test -p board-x86_64 -- -D warnings
  cargo clippy --release -j1 --target-dir ../target/firmware --target riscv64gc-unknown-none-elf \
    -p virtio-test -p board-riscv64 -- -D warnings
)

step "cargo test (unit, property, compatibility with Debian thin-provisioning-tools)"
cargo test --workspace --release

step "firmware under QEMU (x86_64 microvm, riscv64 virt): two boots each, host-side checks"
cargo xtask firmware --board all --timeout 60

step "thin-core tests on a big-endian target (s390x under qemu-user)"
cargo test -p thin-core --release --target s390x-unknown-linux-gnu

step "fuzz smoke: every fuzz target for a bounded time"
cargo xtask fuzz-smoke --seconds 20

echo; echo "all tests passed"

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

step "cargo test (unit, property, compatibility with Debian thin-provisioning-tools)"
cargo test --workspace --release

step "thin-core tests on a big-endian target (s390x under qemu-user)"
cargo test -p thin-core --release --target s390x-unknown-linux-gnu

step "fuzz smoke: every fuzz target for a bounded time"
cargo xtask fuzz-smoke --seconds 20

echo; echo "all tests passed"

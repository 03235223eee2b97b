//! Shared helpers for the end-to-end tests (real peers: Debian's thin-provisioning-tools,
//! the Linux kernel in QEMU, spdk-rpc).

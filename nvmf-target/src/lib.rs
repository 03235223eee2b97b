//! NVMe/TCP target serving thin volumes.
//!
//! Modules: [`wire`] (NVMe, NVMe-oF and NVMe/TCP structures, no I/O), [`ctrlr`] (controller
//! logic, sans I/O), [`transport`] (NVMe/TCP connections and the poll-mode reactor),
//! [`bdev`] (block devices behind namespaces), [`target`] (the [`Target`] the daemon runs),
//! [`rpc`] (SPDK-compatible JSON-RPC management), [`initiator`] (a userspace NVMe/TCP host
//! for `nvmf-perf` and tests).

pub mod bdev;
pub mod ctrlr;
pub mod initiator;
pub mod rpc;
pub mod target;
pub mod transport;
pub mod wire;

pub use ctrlr::{CtrlrConfig, SubsystemConfig, TargetState};
pub use target::{Target, TargetConfig, TargetError, TargetHandle};
pub use transport::PollMode;

//! NVMe/TCP target serving thin volumes.
//!
//! Modules: [`wire`] (NVMe, NVMe-oF and NVMe/TCP structures, no I/O), [`bdev`] (block
//! devices behind namespaces). Controller logic and the transport follow in their own modules.

pub mod bdev;
pub mod wire;

//! NVMe/TCP target serving thin volumes.
//!
//! Modules: [`wire`] (NVMe, NVMe-oF and NVMe/TCP structures, no I/O), [`ctrlr`] (controller
//! logic, sans I/O), [`bdev`] (block devices behind namespaces).

pub mod bdev;
pub mod ctrlr;
pub mod wire;

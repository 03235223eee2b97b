//! NVMe/TCP target serving thin volumes.
//!
//! Modules: [`wire`] (NVMe, NVMe-oF and NVMe/TCP structures, no I/O). Controller logic,
//! transport and block devices follow in their own modules.

pub mod wire;

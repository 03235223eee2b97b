//! The dm-thin domain on top of persistent data: superblock, device details, the two-level
//! mapping tree, pool operations and the checker.

pub mod check;
pub mod details;
pub mod pool;
pub mod reader;
pub mod repair;
pub mod restore;
pub mod superblock;

pub use details::{BlockTime, DeviceDetails};
pub use pool::{FormatOptions, Mapping, OpenOptions, Pool, PoolError, PoolStats, WritePlan};
pub use superblock::Superblock;

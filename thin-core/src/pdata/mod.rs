//! Persistent data: the generic machinery under dm-thin metadata. Nothing here knows what a
//! thin device is.
//!
//! - [`cache`]: a bounded write-back block cache that validates blocks as they are read;
//! - [`node`]: the B-tree node format;
//! - [`tm`]: the transaction manager — shadowing (copy-on-write), the metadata and data space
//!   maps, commit;
//! - [`btree`]: copy-on-write B-trees (lookup, insert, remove with rebalancing, walk, delete).

pub mod btree;
pub mod builder;
pub mod cache;
pub mod error;
pub mod node;
pub mod sm;
pub mod tm;

pub use error::PdError;

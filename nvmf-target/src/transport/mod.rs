//! Transports: NVMe/TCP connections ([`tcp`]) driven by poll-mode reactors ([`reactor`]).

pub(crate) mod mesh;
pub mod reactor;
pub mod tcp;

pub use reactor::{PollMode, ReactorInfo};
